"""Checks for lesson 11, the Diffusion Transformer (solutions/11_dit.ipynb).

Why one module: these are the checks of one exercise notebook; the grader loads a lesson's checks from
one module, and its parts share the drawn images, the drawn blocks and the descriptions of their mistakes.

``patchify(x, p)`` cuts images (B, C, I, I) into (B, (I/p)^2, p^2 C) tokens in the library's order (Peebles &
Xie 2023, Sec. 3.2, "Patchify"): token k is the patch at row k // (I/p) and column k % (I/p); within a token,
entry (i p + j) C + c is pixel (i, j) of the patch in channel c. It is compared bit for bit with
:func:`lesson_lib.models.dit.patchify` on drawn images of several shapes: channels 1 to 5 (with C > 1 a
channel-first flattening shows), sizes that are not square-free (28 in patches of 7, 32 in patches of 8, 12 in
patches of 2) and one image that is a single patch. A wrong answer is named when it is a usual mistake (the
grid transposed, channel-first or column-first entries within a token, a plain reshape). A second check holds
the answer to the definition itself, on images whose pixels are the numbers 0, 1, 2, ... shuffled: token k must
be x[:, :, r p:(r+1) p, c p:(c+1) p] flattened in the stated order, and a wrong entry is named by the pixel it
came from. ``unpatchify(tokens, p, channels, size)`` is compared bit for bit with
:func:`~lesson_lib.models.dit.unpatchify` on drawn tokens (a wrong one is named when it undoes one of the
wrong patchify orders), and a fourth check demands of the student's own pair what every patchify and its
inverse obey: patchify only moves pixels (each image's tokens hold exactly its pixels) and
unpatchify(patchify(x)) is x, bit for bit.

``modulate(x, shift, scale)`` is adaLN's x * (1 + scale) + shift with shift and scale (B, D) the same for the
N tokens of x (B, N, D). It is compared with :func:`lesson_lib.models.dit.modulate` on drawn inputs (B, N and
D all different, float32 and float64, and DiT-T/4's 49 tokens of width 128); the usual wrong formulas are
named. A second check, the properties: exactly x at zero shift and scale, and, on a batch with B = N (so that
a broadcast over the wrong axis runs instead of raising), changing shift[b] and scale[b] changes every token
of example b and nothing else.

``dit_block_forward(block, x, c)`` is one adaLN-Zero block's forward pass written from the block's parts
(Sec. 3.2, "DiT block design"). It is compared with the block's own forward, ``block(x, c)`` in the grader,
on two drawn :class:`~lesson_lib.models.dit.DiTBlock` s whose modulation Linear has drawn non-zero weights
(at its zero initialisation every gate is 0 and any answer that returns x would pass), with x far from
zero mean and unit variance (so that a skipped LayerNorm shows); the usual mistakes are named (the gates
left out, the six chunks in another order, the second sub-layer reading the block's input, no residual,
no LayerNorm). A second check, the "Zero" of adaLN-Zero: at a zero-initialised modulation the answer is x
exactly, and once the modulation is non-zero it moves every token (so returning x does not pass).

Why the student cannot pass by calling the block itself: block(x, c) is the reference, so a probe that
returned it would be an echo. The probes hand the student a :class:`GradedBlock`, a DiTBlock whose own
``forward`` raises, so ``block(x, c)`` and ``block.forward(x, c)`` fail with a hint. What is left, the
parent's forward called explicitly (``DiTBlock.forward(block, x, c)``, ``super()``, or a second DiTBlock
loaded with these weights), reads the library's ``modulate``, which the grader takes away in the worker
(``HIDDEN``): it raises there too. (In the notebook's own feedback, which shares the student's process,
the explicit parent call is not stopped; feedback is not grading.) The simpler alternative, a counter of
calls, would be evidence the worker sends and could forge.
Total: 10 points.
"""

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import call_each, expect_close, expect_tensor, field, naming, pairs
from lesson_lib.models.dit import DiTBlock

# What the worker loads besides this module (see lesson_lib/course/box.py): the DiT module, for the blocks the
# probes build from drawn weights. The answers are compared with its patchify, unpatchify and modulate, which
# the worker takes away there; without modulate the block's own forward cannot run in the worker either.
WORKER_MODULES = ("lesson_lib.models.dit",)
HIDDEN = ("lesson_lib.models.dit.patchify", "lesson_lib.models.dit.unpatchify", "lesson_lib.models.dit.modulate")

PATCHIFY_HINT = ("Token k is the patch at row k // (I/p), column k % (I/p) (rows first); within a token, entry "
                 "(i p + j) C + c is pixel (i, j) of the patch in channel c (channels vary fastest). Reshape x to "
                 "(B, C, I/p, p, I/p, p), move the axes into that order, then reshape to (B, (I/p)^2, p^2 C).")
ORIGIN_HINT = ("Token k must be x[:, :, r p:(r+1) p, c p:(c+1) p] with r = k // (I/p), c = k % (I/p), flattened "
               "with the channel varying fastest, then the column j in the patch, then the row i.")
UNPATCHIFY_HINT = ("unpatchify must put every number back where patchify took it from: undo the final reshape, "
                   "move the axes back to (B, C, I/p, p, I/p, p) (the inverse of patchify's permutation, which "
                   "is not the same permutation) and reshape to (B, C, I, I).")
ROUND_TRIP_HINT = ("patchify only moves pixels (no arithmetic; each image's tokens hold exactly its pixels, in "
                   "shape (B, (I/p)^2, p^2 C)), and unpatchify must move each one back: permute the axes back with "
                   "the inverse permutation before the last reshape.")
MODULATE_HINT = ("adaLN scales and shifts the normalised features: x * (1 + scale) + shift, the scale first; shift "
                 "and scale are (B, D), one vector per example, broadcast over the N tokens of x (B, N, D) by "
                 "giving them a token axis of length 1 in the middle.")
MODULATE_PROPERTY_HINT = ("At shift = scale = 0 the answer must be x itself (hence the 1 + scale); and example b "
                          "must read only shift[b] and scale[b]: give them a token axis in the middle, (B, 1, D), "
                          "not in front.")
BLOCK_HINT = ("Split block.modulation(c) into six (B, D) vectors in the order shift1, scale1, gate1, shift2, scale2, "
              "gate2; each sub-layer (attention, then MLP) reads modulate(its LayerNorm of x, its shift, its scale) "
              "and is added to x times its gate (B, 1, D); the MLP's sub-layer reads the x the attention's produced.")
ZERO_HINT = ("adaLN-Zero: at a zero-initialised modulation every gate is 0, so each sub-layer adds exactly 0 and "
             "the block is the identity: keep the residual (x + ...) and let the gate multiply the sub-layer's "
             "output, not x. Once the modulation is not zero, the block must change the tokens.")
CALLED_ITSELF = ("dit_block_forward called the block's own forward pass (block(x, c) or block.forward(x, c)), which "
                 "is what it is compared with: compute it from block.modulation, block.norm1, block.attention, "
                 "block.norm2 and block.mlp instead.")

PATCH_CONFIGS = ((2, 3, 32, 8), (3, 1, 28, 7), (2, 4, 12, 2), (1, 2, 4, 4))   # (B, C, I, p): fixed shapes,
CHANNEL_CHOICES, PATCH_CHOICES, GRID_CHOICES = (2, 3, 5), (2, 3, 4), (3, 4, 5)  # and the drawn one's choices
BLOCK_RTOL, BLOCK_ATOL = 1e-4, 1e-5      # float32 through a LayerNorm, attention and an MLP, in another order
MOVED = 1e-3                             # how far every token must move once the modulation is not zero


def _pick(choices):
    return choices[int(torch.randint(0, len(choices), ()))]


def _drawn_config():
    """(B, C, I, p) with C in 2, 3, 5, p in 2, 3, 4 and I / p in 3, 4, 5."""
    p, g = _pick(PATCH_CHOICES), _pick(GRID_CHOICES)
    return int(torch.randint(1, 4, ())), _pick(CHANNEL_CHOICES), g * p, p


def _what(name, shape, p):
    return f"{name}(x of shape {tuple(shape)}, p={p})"


# --- 1 · patchify and unpatchify ------------------------------------------------------------------

# The usual wrong orders: name -> the axes of x.reshape(B, C, g, p, g, p) (0 B, 1 C, 2 row, 3 i, 4 column,
# 5 j) in the order a wrong patchify reads them (the right one is 0, 2, 4, 3, 5, 1).
WRONG_ORDERS = {
    "the grid transposed: token k is the patch at column k // (I/p), row k % (I/p)": (0, 4, 2, 3, 5, 1),
    "channel-first within a token: entry c p^2 + i p + j instead of (i p + j) C + c": (0, 2, 4, 1, 3, 5),
    "the patch read column by column: entry (j p + i) C + c instead of (i p + j) C + c": (0, 2, 4, 5, 3, 1),
}


def _wrong_patchify(x, p, axes):
    B, C, size, _ = x.shape
    g = size // p
    return x.reshape(B, C, g, p, g, p).permute(*axes).reshape(B, g * g, p * p * C)


def _mistake(got, x, p):
    """The usual mistake that ``got`` (a patchify of ``x``) is, or None."""
    for name, axes in WRONG_ORDERS.items():
        if torch.equal(got, _wrong_patchify(x, p, axes)):
            return name
    if torch.equal(got, x.reshape(x.shape[0], -1, p * p * x.shape[1])):
        return "a plain reshape of x, which cuts rows of pixels, not p x p patches"
    return None


def _patchify_case():
    calls = []
    for index, (B, C, size, p) in enumerate(PATCH_CONFIGS + (_drawn_config(),)):
        dtype = torch.float64 if index == 1 else torch.float32
        calls.append([[torch.randn(B, C, size, size, dtype=dtype), p], {}])
    return {"calls": calls}


@check(points=1, uses=["patchify"], case=_patchify_case, probe=call_each("patchify"))
def patchify_matches_the_library(case, answer):
    """patchify is the library's, bit for bit, for 1 to 5 channels, I = 28 with p = 7, I = 32 with p = 8."""
    from lesson_lib.models.dit import patchify
    for ((x, p), _), got in pairs(case["calls"], answer):
        expected = patchify(x, p)
        what = _what("patchify", x.shape, p)
        expect_tensor(got, what, shape=expected.shape, dtype=expected.dtype)
        if not torch.equal(got, expected):
            expect_close(got, expected, what, rtol=0, atol=0, hint=naming(_mistake(got, x, p), PATCHIFY_HINT))


def _origin_case():
    images = []
    for B, C, size, p in ((2, 3, 12, 3), _drawn_config()):
        values = torch.randperm(B * C * size * size).to(torch.float32)      # every pixel a different number
        images.append({"x": values.reshape(B, C, size, size), "p": p})
    return {"images": images}


def _origin_probe(ns, case):
    return [ns["patchify"](image["x"].clone(), image["p"]) for image in case["images"]]


def _pixel(x, value, p):
    """Where ``value`` lies in ``x``, in words: the pixel, and the patch and place in it."""
    found = (x == value).nonzero()
    if len(found) != 1:
        return f"{value:g}, which is not a pixel of the images"
    b, channel, row, column = found[0].tolist()
    return (f"pixel ({row % p}, {column % p}) of channel {channel} in the patch at row {row // p}, column "
            f"{column // p} of image {b}")


@check(points=1, uses=["patchify"], case=_origin_case, probe=_origin_probe)
def patchify_token_k_is_the_kth_patch_row_by_row(case, answer):
    """patchify's token k is x[:, :, r p:(r+1) p, c p:(c+1) p] (r, c = divmod(k, I/p)) flattened as stated."""
    for image, got in pairs(case["images"], answer):
        x, p = image["x"], image["p"]
        B, C, size, _ = x.shape
        g = size // p
        what = _what("patchify", x.shape, p)
        expect_tensor(got, what, shape=(B, g * g, p * p * C), dtype=x.dtype)
        for k in range(g * g):
            r, c = divmod(k, g)
            expected = x[:, :, r * p:(r + 1) * p, c * p:(c + 1) * p].permute(0, 2, 3, 1).reshape(B, -1)
            wrong = (got[:, k] != expected).nonzero()
            if len(wrong):
                b, entry = wrong[0].tolist()
                raise AssertionError(
                    f"{what}: entry {entry} of token {k} of image {b} holds "
                    f"{_pixel(x, got[b, k, entry].item(), p)}; expected {_pixel(x, expected[b, entry].item(), p)} "
                    f"(token {k} is the patch at row {r}, column {c}; entry {entry} is pixel "
                    f"({entry // C // p}, {entry // C % p}) in channel {entry % C}). {ORIGIN_HINT}")


def _unpatchify_case():
    calls = []
    for index, (B, C, size, p) in enumerate(PATCH_CONFIGS + (_drawn_config(),)):
        dtype = torch.float64 if index == 1 else torch.float32
        g = size // p
        calls.append([[torch.randn(B, g * g, p * p * C, dtype=dtype), p, C, size], {}])
    return {"calls": calls}


@check(points=1, uses=["unpatchify"], case=_unpatchify_case, probe=call_each("unpatchify"))
def unpatchify_matches_the_library(case, answer):
    """unpatchify is the library's, bit for bit, for the same shapes as patchify's check."""
    from lesson_lib.models.dit import unpatchify
    for ((tokens, p, C, size), _), got in pairs(case["calls"], answer):
        expected = unpatchify(tokens, p, C, size)
        what = f"unpatchify(tokens of shape {tuple(tokens.shape)}, p={p}, channels={C}, size={size})"
        expect_tensor(got, what, shape=expected.shape, dtype=expected.dtype)
        if not torch.equal(got, expected):
            undone = next((name for name, axes in WRONG_ORDERS.items()
                           if torch.equal(_wrong_patchify(got, p, axes), tokens)), None)
            named = f"It undoes a patchify with {undone}. " if undone else ""
            expect_close(got, expected, what, rtol=0, atol=0, hint=named + UNPATCHIFY_HINT)


def _round_trip_case():
    images = []
    for B, C, size, p in ((2, 4, 32, 8), _drawn_config()):
        images.append({"x": torch.randn(B, C, size, size), "p": p})
    return {"images": images}


def _round_trip_probe(ns, case):
    answers = []
    for image in case["images"]:
        x, p = image["x"], image["p"]
        tokens = ns["patchify"](x.clone(), p)
        answers.append({"tokens": tokens, "back": ns["unpatchify"](tokens, p, x.shape[1], x.shape[2])})
    return answers


@check(points=1, uses=["patchify", "unpatchify"], case=_round_trip_case, probe=_round_trip_probe)
def unpatchify_inverts_patchify_exactly(case, answer):
    """patchify only moves pixels, and unpatchify(patchify(x)) is x bit for bit (the student's own pair)."""
    for image, got in pairs(case["images"], answer):
        x, p = image["x"], image["p"]
        B, C, size, _ = x.shape
        g = size // p
        what = _what("patchify", x.shape, p)
        tokens = field(got, "tokens")
        expect_tensor(tokens, what, shape=(B, g * g, p * p * C), dtype=x.dtype)
        if not torch.equal(tokens.flatten(1).sort(1).values, x.flatten(1).sort(1).values):
            raise AssertionError(f"{what} does not hold exactly the pixels of each image: patchify must only move "
                                 f"them. {ROUND_TRIP_HINT}")
        back = field(got, "back")
        what = f"unpatchify(patchify(x, {p}), {p}, {C}, {size}) for x of shape {tuple(x.shape)}"
        expect_tensor(back, what, shape=x.shape, dtype=x.dtype)
        if not torch.equal(back, x):
            expect_close(back, x, what + ", against x", rtol=0, atol=0, hint=ROUND_TRIP_HINT)


# --- 2 · modulate ----------------------------------------------------------------------------------

def _modulation_inputs(B, N, D, dtype=torch.float32):
    return [torch.randn(B, N, D, dtype=dtype), torch.randn(B, D, dtype=dtype), 0.5 * torch.randn(B, D, dtype=dtype)]


def _modulate_case():
    N = int(torch.randint(6, 12, ()))
    return {"calls": [[_modulation_inputs(3, N, 16), {}], [_modulation_inputs(4, 5, 8, torch.float64), {}],
                      [_modulation_inputs(2, 49, 128), {}]]}


def _modulate_mistake(got, x, shift, scale):
    """The usual wrong formula that ``got`` is, or None."""
    s, m = shift[:, None], scale[:, None]
    for name, value in [("x * scale + shift: the 1 + is missing", x * m + s),
                        ("(x + shift) * (1 + scale): the shift added before the scaling", (x + s) * (1 + m)),
                        ("x * (1 + shift) + scale: shift and scale swapped", x * (1 + s) + m)]:
        if torch.allclose(got.double(), value.double(), rtol=1e-5, atol=1e-6):
            return name
    return None


@check(points=1, uses=["modulate"], case=_modulate_case, probe=call_each("modulate"))
def modulate_matches_the_library(case, answer):
    """modulate is the library's x * (1 + scale) + shift, for B, N and D all different, float32 and float64."""
    from lesson_lib.models.dit import modulate
    for ((x, shift, scale), _), got in pairs(case["calls"], answer):
        expected = modulate(x, shift, scale)
        what = f"modulate(x of shape {tuple(x.shape)}, shift and scale of shape {tuple(shift.shape)}, {x.dtype})"
        expect_tensor(got, what, shape=expected.shape, dtype=expected.dtype)
        rtol, atol = (1e-5, 1e-6) if x.dtype == torch.float32 else (1e-12, 1e-12)
        mistake = _modulate_mistake(got, x, shift, scale) if torch.isfinite(got).all() else None
        expect_close(got, expected, what, rtol=rtol, atol=atol, hint=naming(mistake, MODULATE_HINT))


def _modulate_property_case():
    B = int(torch.randint(3, 7, ()))
    D = B + int(torch.randint(2, 9, ()))
    x, shift, scale = _modulation_inputs(B, B, D)                     # as many tokens as examples
    b = int(torch.randint(0, B, ()))
    other_shift, other_scale = shift.clone(), scale.clone()
    other_shift[b], other_scale[b] = torch.randn(D), 0.5 * torch.randn(D) + 1.0
    return {"x": x, "shift": shift, "scale": scale, "b": b, "other_shift": other_shift, "other_scale": other_scale}


def _modulate_property_probe(ns, case):
    x = case["x"]
    zeros = torch.zeros(x.shape[0], x.shape[2])
    return {"zero": ns["modulate"](x.clone(), zeros.clone(), zeros.clone()),
            "first": ns["modulate"](x.clone(), case["shift"].clone(), case["scale"].clone()),
            "second": ns["modulate"](x.clone(), case["other_shift"].clone(), case["other_scale"].clone())}


@check(points=1, uses=["modulate"], case=_modulate_property_case, probe=_modulate_property_probe)
def modulate_is_the_identity_at_zero_and_per_example(case, answer):
    """modulate is exactly x at shift = scale = 0, and example b reads only shift[b] and scale[b] (B = N)."""
    x, b = case["x"], case["b"]
    B, N, D = x.shape
    what = f"modulate(x of shape {tuple(x.shape)}, shift, scale of shape ({B}, {D}))"
    zero = field(answer, "zero")
    expect_tensor(zero, what + " at shift = scale = 0", shape=x.shape, dtype=x.dtype)
    if not torch.equal(zero, x):
        expect_close(zero, x, what + " at shift = scale = 0, against x", rtol=0, atol=0, hint=MODULATE_PROPERTY_HINT)
    first, second = field(answer, "first"), field(answer, "second")
    for value in (first, second):
        expect_tensor(value, what, shape=x.shape, dtype=x.dtype)
        if not bool(torch.isfinite(value).all()):
            raise AssertionError(f"{what} contains NaN or inf. {MODULATE_PROPERTY_HINT}")
    others = [i for i in range(B) if i != b]
    if not torch.allclose(first[others], second[others], rtol=1e-6, atol=1e-7):
        raise AssertionError(f"{what}: changing shift[{b}] and scale[{b}] (example {b}'s) changed the output of other "
                             f"examples too. {MODULATE_PROPERTY_HINT}")
    moved = (first[b] - second[b]).abs().amax(dim=-1)
    if not bool((moved > MOVED).all()):
        n = int(moved.argmin())
        raise AssertionError(f"{what}: changing shift[{b}] and scale[{b}] left token {n} of example {b} as it was; "
                             f"the same shift and scale apply to every token of an example. {MODULATE_PROPERTY_HINT}")


# --- 3 · one adaLN-Zero block -----------------------------------------------------------------------

class GradedBlock(DiTBlock):
    """A :class:`~lesson_lib.models.dit.DiTBlock` whose own forward pass refuses to run: what the student's
    ``dit_block_forward`` gets, so that it cannot return ``block(x, c)`` (see the module docstring)."""

    def forward(self, x, c):
        raise AssertionError(CALLED_ITSELF)


def _block_weights(block, live):
    """The block's weights as plain data; with ``live`` its modulation Linear drawn non-zero: gates, shifts and
    scales of order 1 (weights N(0, 1/D), biases N(0, 0.5^2))."""
    weights = dict(block.state_dict())
    if live:
        weight = weights["modulation.1.weight"]
        weights["modulation.1.weight"] = torch.randn(weight.shape) / weight.shape[1] ** 0.5
        weights["modulation.1.bias"] = 0.5 * torch.randn(weight.shape[0])
    return weights


def _draw_block(D, heads, mlp_ratio, B, N, live=True):
    """A drawn DiTBlock (its other layers at their ViT initialisation, drawn), x far from zero mean and unit
    variance, c."""
    block = DiTBlock(D, heads, mlp_ratio)
    return {"args": [D, heads, mlp_ratio], "weights": _block_weights(block, live),
            "x": 2.0 * torch.randn(B, N, D) + 0.5, "c": torch.randn(B, D)}


def _build(cls, case, weights="weights"):
    block = cls(*case["args"])
    block.load_state_dict(case[weights])
    return block.eval()


def _student_block(ns, case, weights="weights"):
    with torch.no_grad():
        return ns["dit_block_forward"](_build(GradedBlock, case, weights), case["x"].clone(), case["c"].clone())


def _block_case():
    first = _draw_block(24, 3, 4.0, B=3, N=7)
    D = _pick((16, 32))
    second = _draw_block(D, _pick((2, 4)), 2.0, B=2, N=int(torch.randint(5, 12, ())))
    return {"blocks": [first, second]}


ORDERS = {"shift, scale, gate": (0, 1, 2, 3, 4, 5),
          "the six chunks read as scale, shift, gate": (1, 0, 2, 4, 3, 5),
          "the six chunks read as gate, shift, scale": (1, 2, 0, 4, 5, 3),
          "the six chunks read as the two shifts, then the scales, then the gates": (0, 2, 4, 1, 3, 5)}


def _block_variant(block, x, c, order="shift, scale, gate", gates=True, norm=True, updated=True, residual=True):
    """The block's forward pass with one usual mistake (the defaults: the right one), from its parts."""
    from lesson_lib.models.dit import modulate
    chunks = block.modulation(c).chunk(6, dim=1)
    shift1, scale1, gate1, shift2, scale2, gate2 = (chunks[i] for i in ORDERS[order])
    gate = (lambda g, h: g[:, None, :] * h) if gates else (lambda g, h: h)
    keep = (lambda h: h) if residual else (lambda h: 0)
    n1, n2 = (block.norm1, block.norm2) if norm else (lambda h: h, lambda h: h)
    h = keep(x) + gate(gate1, block.attention(modulate(n1(x), shift1, scale1)))
    read = h if updated else x
    return keep(h) + gate(gate2, block.mlp(modulate(n2(read), shift2, scale2)))


def _block_mistake(got, block, x, c):
    variants = {"the gates left out": dict(gates=False),
                "the second sub-layer reading the block's input x instead of the x updated by the first":
                    dict(updated=False),
                "no residual (x + ...) around the sub-layers": dict(residual=False),
                "the LayerNorms skipped": dict(norm=False)}
    variants.update({order: dict(order=order) for order in list(ORDERS)[1:]})
    with torch.no_grad():
        for name, change in variants.items():
            if torch.allclose(got, _block_variant(block, x, c, **change), rtol=BLOCK_RTOL, atol=BLOCK_ATOL):
                return name
    return None


def _block_what(case):
    D, heads, ratio = case["args"]
    return (f"dit_block_forward(a DiTBlock of width {D}, {heads} heads and MLP ratio {ratio:g} with a non-zero "
            f"modulation, x of shape {tuple(case['x'].shape)}, c of shape {tuple(case['c'].shape)})")


@check(points=3, uses=["dit_block_forward"], case=_block_case,
       probe=lambda ns, case: [_student_block(ns, block) for block in case["blocks"]])
def dit_block_forward_is_the_blocks_forward_pass(case, answer):
    """dit_block_forward is block(x, c) for two drawn DiTBlocks whose modulation is not zero."""
    for block_case, got in pairs(case["blocks"], answer):
        block, x, c = _build(DiTBlock, block_case), block_case["x"], block_case["c"]
        with torch.no_grad():
            expected = block(x, c)
        what = _block_what(block_case)
        expect_tensor(got, what, shape=expected.shape, dtype=expected.dtype)
        mistake = _block_mistake(got, block, x, c) if torch.isfinite(got).all() else None
        expect_close(got, expected, what, rtol=BLOCK_RTOL, atol=BLOCK_ATOL, hint=naming(mistake, BLOCK_HINT))


def _zero_case():
    D = _pick((16, 24))
    case = _draw_block(D, _pick((2, 4)), 4.0, B=3, N=int(torch.randint(5, 10, ())), live=False)
    block = _build(DiTBlock, case)
    case["live_weights"] = _block_weights(block, live=True)
    return case


@check(points=1, uses=["dit_block_forward"], case=_zero_case,
       probe=lambda ns, case: {"zero": _student_block(ns, case), "live": _student_block(ns, case, "live_weights")})
def dit_block_forward_is_the_identity_at_a_zero_modulation(case, answer):
    """dit_block_forward is exactly x when the modulation is zero (adaLN-Zero), and moves every token when it is not."""
    x = case["x"]
    what = _block_what(case).replace("with a non-zero modulation", "with its modulation at zero")
    zero = field(answer, "zero")
    expect_tensor(zero, what, shape=x.shape, dtype=x.dtype)
    if not torch.equal(zero, x):
        expect_close(zero, x, what + ", against x", rtol=0, atol=0, hint=ZERO_HINT)
    live = field(answer, "live")
    what = _block_what(case)
    expect_tensor(live, what, shape=x.shape, dtype=x.dtype)
    if not bool(torch.isfinite(live).all()):
        raise AssertionError(f"{what} contains NaN or inf. {ZERO_HINT}")
    moved = (live - x).abs().amax(dim=-1)
    if not bool((moved > MOVED).all()):
        b, n = divmod(int(moved.argmin()), x.shape[1])
        raise AssertionError(f"{what} left token {n} of example {b} as it was (it moved by {moved[b, n].item():.2g}): "
                             f"once the modulation is not zero the gates are not, and the block changes the tokens. "
                             f"{ZERO_HINT}")
