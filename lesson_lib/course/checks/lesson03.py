"""Checks for lesson 3, the U-Net's building blocks (solutions/03_unet.ipynb).

The student writes the sinusoidal time embedding, the forward pass of a ResBlock and of a
self-attention block, and scaled dot-product attention itself. The two blocks come with their
``__init__`` given, with the same submodule names as :class:`lesson_lib.models.layers.ResBlock` and
:class:`lesson_lib.models.layers.AttentionBlock`, so each check copies the weights of a reference block
into the student's block and compares the outputs. The reference blocks start with some layers
at zero (zero initialisation), so the weights are perturbed first: otherwise a forward pass that
forgets those layers would pass. ``resblock_parameter_count`` asks for the size of a block
(an exact integer, for sizes drawn at random). ``ConditionalEmbedding`` (its ``__init__`` too) is
the class-conditional part of :meth:`lesson_lib.models.unet.UNet.embed`: the time embedding plus
the label's row of a table with one more row, the null class, used when no label is given (Ho &
Salimans, 2022); the check loads a U-Net's table into it and compares with ``UNet.embed``.
Total: 12 points.

Why one module: these are the checks of one exercise notebook; the grader loads a lesson's checks
from one module, and its parts share the perturbed reference blocks and the probes.
"""

import math

import torch

from lesson_lib.models import layers
from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import call_each, expect_close, expect_tensor, field, pairs
from lesson_lib.models.embeddings import sinusoidal_embedding

# The exercise's given __init__ builds its layers with layers.group_norm and layers.zero_init, so
# the worker loads the layers module (see lesson_lib/course/box.py) and takes away, there, the
# blocks and the embedding the answers are compared with (in every loaded module that holds them,
# the U-Net's namespace included).
WORKER_MODULES = ("lesson_lib.models.layers",)
HIDDEN = ("lesson_lib.models.layers.ResBlock", "lesson_lib.models.layers.AttentionBlock",
          "lesson_lib.models.layers.ClassEmbedding", "lesson_lib.models.embeddings.sinusoidal_embedding")

EMBEDDING_HINT = ("omega_i = max_period^(-i / (dim/2)) for i = 0..dim/2-1; the embedding is "
                  "[sin(t omega_0), ..., sin(t omega_{dim/2-1}), cos(t omega_0), ..., cos(t omega_{dim/2-1})], "
                  "sines first, in float32.")
RESBLOCK_HINT = ("h = conv1(SiLU(norm1(x))); h = h + time_proj(SiLU(emb)) broadcast over H and W "
                 "([:, :, None, None]); h = conv2(dropout(SiLU(norm2(h)))); return skip(x) + h.")
ATTENTION_HINT = "out = softmax(q k^T / sqrt(d)) v, the softmax over the last dimension (the keys)."
BLOCK_HINT = ("q, k, v = qkv(norm(x)) split into three groups of C channels (chunk(3, dim=1)), each "
              "reshaped to (B, H*W, C) with .flatten(2).transpose(1, 2); attend over the H*W positions; "
              "reshape back to (B, C, H, W) and return x + proj(out).")


def _perturbed(module, scale=0.2):
    """``module`` with noise added to every weight, so that no layer is exactly zero."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape))
    return module.eval()


def _student_copy(ns, name, weights, *args):
    """The student's class ``name`` built with ``args``, holding the reference ``weights``
    (in the worker)."""
    block = ns[name](*args)
    try:
        block.load_state_dict(weights)
    except RuntimeError as error:
        raise AssertionError(f"could not load the reference weights into {name}{tuple(args)}: keep the "
                             f"__init__ you were given (same submodule names). PyTorch said: "
                             f"{str(error).splitlines()[0]}") from None
    return block.eval()


def _reference(cls, case):
    """The reference block of ``case``, rebuilt in the grader from the weights it drew."""
    block = cls(*case["args"])
    block.load_state_dict(case["weights"])
    return block.eval()


# --- the sinusoidal time embedding --------------------------------------------------------

def _embedding_case():
    t = torch.cat([torch.tensor([0, 1, 999]), torch.randint(0, 1000, (4,))])
    return {"calls": [[[t, dim], {}] for dim in (128, 8, 2)]}


@check(points=1, uses=["sinusoidal_embedding"], case=_embedding_case, probe=call_each("sinusoidal_embedding"))
def embedding_matches_reference(case, answer):
    """sinusoidal_embedding matches the Transformer's positional encoding (dims 2, 8, 128)."""
    for ((t, dim), _), got in pairs(case["calls"], answer):
        expected = sinusoidal_embedding(t, dim)
        what = f"sinusoidal_embedding(t, dim={dim}) for t = {t.tolist()}"
        expect_tensor(got, what, shape=expected.shape, dtype=torch.float32)
        expect_close(got, expected, what, rtol=1e-4, atol=1e-4, hint=EMBEDDING_HINT)


def _float_t_case():
    t = torch.cat([torch.tensor([0.0, 0.5, 12.25]), 100 * torch.rand(2)])
    return {"calls": [[[t, 16], {"max_period": 100}]]}


@check(points=1, uses=["sinusoidal_embedding"], case=_float_t_case, probe=call_each("sinusoidal_embedding"))
def embedding_takes_max_period_and_float_t(case, answer):
    """sinusoidal_embedding honours max_period and accepts float timesteps."""
    for ((t, dim), kwargs), got in pairs(case["calls"], answer):
        expect_close(got, sinusoidal_embedding(t, dim, **kwargs),
                     "sinusoidal_embedding(t, 16, max_period=100) for float t", rtol=1e-4, atol=1e-4,
                     hint=f"Use max_period instead of a hard-coded 10000, and do not round t. {EMBEDDING_HINT}")


# --- the ResBlock -------------------------------------------------------------------------

def _resblock_case(in_ch, out_ch, time_dim, batch=3, size=(5, 6)):
    reference = _perturbed(layers.ResBlock(in_ch, out_ch, time_dim))
    return {"args": [in_ch, out_ch, time_dim], "weights": dict(reference.state_dict()),
            "x": torch.randn(batch, in_ch, *size), "emb": torch.randn(batch, time_dim)}


def _resblock_probe(ns, case):
    student = _student_copy(ns, "ResBlock", case["weights"], *case["args"])
    with torch.no_grad():
        answer = {"out": student(case["x"].clone(), case["emb"].clone())}
        if "other" in case:  # the same block, on the same x, for two different embeddings
            x, other = case["other"]["x"], case["other"]["emb"]
            answer["zeros"] = student(x.clone(), torch.zeros_like(other))
            answer["ones"] = student(x.clone(), torch.ones_like(other))
    return answer


def _resblock_judge(case, answer, hint):
    reference = _reference(layers.ResBlock, case)
    with torch.no_grad():
        expected = reference(case["x"], case["emb"])
    in_ch, out_ch, time_dim = case["args"]
    what = f"ResBlock({in_ch}, {out_ch}, time_dim={time_dim}) on x of shape {tuple(case['x'].shape)}"
    got = field(answer, "out")
    expect_tensor(got, what, shape=expected.shape)
    expect_close(got, expected, what, rtol=1e-4, atol=1e-4, hint=hint)


@check(points=2, uses=["ResBlock"], case=lambda: _resblock_case(8, 12, 20), probe=_resblock_probe)
def resblock_matches_reference(case, answer):
    """ResBlock.forward matches lesson_lib's ResBlock (with a 1x1-conv skip: 8 -> 12 channels)."""
    _resblock_judge(case, answer, f"{RESBLOCK_HINT} When the widths differ, skip is a 1x1 convolution.")


def _identity_case():
    case = _resblock_case(8, 8, 16)
    case["other"] = {"x": torch.randn(2, 8, 3, 3), "emb": torch.zeros(2, 16)}
    return case


@check(points=1, uses=["ResBlock"], case=_identity_case, probe=_resblock_probe)
def resblock_identity_skip_and_time(case, answer):
    """With equal widths the skip is the identity; the output depends on the time embedding."""
    _resblock_judge(case, answer, RESBLOCK_HINT)
    same, other = field(answer, "zeros"), field(answer, "ones")
    expect_tensor(same, "ResBlock on a second x", shape=case["other"]["x"].shape)
    expect_tensor(other, "ResBlock on a second x", shape=case["other"]["x"].shape)
    if torch.allclose(same, other):
        raise AssertionError("ResBlock ignores the time embedding: its output is the same for two "
                             "different emb. " + RESBLOCK_HINT)


# --- attention ------------------------------------------------------------------------------

def _reference_attention(q, k, v):
    weights = torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (weights @ v.double()).to(q.dtype)


def _attention_case():
    calls = []
    for shape_q, shape_kv in [((2, 5, 8), (2, 7, 8)), ((3, 2, 9, 4), (3, 2, 9, 4))]:
        q, k = 2 * torch.randn(shape_q), 2 * torch.randn(shape_kv)
        calls.append([[q, k, torch.randn(shape_kv[:-1] + (6,))], {}])
    return {"calls": calls}


@check(points=1, uses=["attention"], case=_attention_case, probe=call_each("attention"))
def attention_matches_formula(case, answer):
    """attention(q, k, v) = softmax(q k^T / sqrt(d)) v, for (B, N, d) and (B, heads, N, d) inputs."""
    for ((q, k, v), _), got in pairs(case["calls"], answer):
        what = f"attention(q, k, v) for q of shape {tuple(q.shape)} and k of shape {tuple(k.shape)}"
        expect_close(got, _reference_attention(q, k, v), what, rtol=1e-4, atol=1e-5,
                     hint=f"{ATTENTION_HINT} d is q's last dimension; work on the last two dimensions "
                          f"so that leading (batch, head) dimensions pass through.")


def _block_case(ch, shape):
    reference = _perturbed(layers.AttentionBlock(ch))
    return {"args": [ch], "weights": dict(reference.state_dict()), "x": torch.randn(shape)}


def _block_probe(ns, case):
    student = _student_copy(ns, "AttentionBlock", case["weights"], *case["args"])
    with torch.no_grad():
        answer = {"out": student(case["x"].clone())}
        if "perm" in case:
            x, perm = case["x"], case["perm"]
            answer["of_shuffled"] = student(x.flatten(2)[:, :, perm].reshape(x.shape))
    return answer


@check(points=1, uses=["AttentionBlock"], probe=lambda ns, case: [_block_probe(ns, c) for c in case["blocks"]],
       case=lambda: {"blocks": [_block_case(8, (3, 8, 4, 5)), _block_case(12, (2, 12, 3, 3))]})
def attention_block_matches_reference(case, answer):
    """AttentionBlock.forward matches lesson_lib's AttentionBlock (one head, H != W)."""
    for block, got in pairs(case["blocks"], answer):
        reference = _reference(layers.AttentionBlock, block)
        with torch.no_grad():
            expected = reference(block["x"])
        expect_close(field(got, "out"), expected,
                     f"AttentionBlock({block['args'][0]}) on x of shape {tuple(block['x'].shape)}",
                     rtol=1e-4, atol=1e-4, hint=BLOCK_HINT)


@check(points=1, uses=["AttentionBlock"], probe=_block_probe,
       case=lambda: {**_block_case(8, (2, 8, 4, 6)), "perm": torch.randperm(24)})
def attention_block_is_permutation_equivariant(case, answer):
    """Shuffling the pixels of the input shuffles the output the same way (attention sees a set)."""
    x, perm = case["x"], case["perm"]
    shuffle = lambda z: z.flatten(2)[:, :, perm].reshape(z.shape)  # noqa: E731
    with torch.no_grad():   # the block's own output must be right, or any constant map would pass
        expected = _reference(layers.AttentionBlock, case)(x)
    expect_close(field(answer, "out"), expected, "AttentionBlock(8) on x of shape (2, 8, 4, 6)",
                 rtol=1e-4, atol=1e-4, hint=BLOCK_HINT)
    expect_close(field(answer, "of_shuffled"), shuffle(expected), "AttentionBlock(8) applied to shuffled pixels",
                 rtol=1e-4, atol=1e-4, hint="Self-attention treats the H*W positions as a set, so permuting "
                 "them must permute the output. A reshape straight from (B, C, H, W) to (B, H*W, C) mixes "
                 "channels and positions; use x.flatten(2).transpose(1, 2). " + BLOCK_HINT)


# --- a question: how many parameters in a ResBlock ---------------------------------------------

def _count_case():
    draw = lambda: 8 * int(torch.randint(1, 17, ()))  # noqa: E731  (8 to 128 channels)
    same = draw()
    return {"calls": [[[128, 256, 512], {}], [[same, same, int(torch.randint(4, 600, ()))], {}],
                      [[draw(), draw(), int(torch.randint(4, 600, ()))], {}]]}


@check(points=1, uses=["resblock_parameter_count"], case=_count_case, probe=call_each("resblock_parameter_count"))
def resblock_parameter_count_is_exact(case, answer):
    """resblock_parameter_count(in_ch, out_ch, time_dim) is the number of parameters of lesson_lib's ResBlock."""
    for (args, _), got in pairs(case["calls"], answer):
        in_ch, out_ch, time_dim = args
        expected = sum(p.numel() for p in layers.ResBlock(in_ch, out_ch, time_dim).parameters())
        what = f"resblock_parameter_count({in_ch}, {out_ch}, {time_dim})"
        if type(got) is not int:
            raise AssertionError(f"{what} returned {type(got).__name__}, expected an int")
        if got != expected:
            raise AssertionError(
                f"{what} = {got}, expected {expected}. Count weights and biases: two GroupNorms (a scale and "
                f"a shift per channel), two 3x3 convolutions (k*k*c_in*c_out + c_out), the time projection "
                f"(time_dim*out_ch + out_ch) and, only when in_ch != out_ch, the 1x1 skip convolution.")


# --- the class-conditional embedding ----------------------------------------------------------

CONDITIONAL_HINT = ("__init__: self.num_classes = num_classes and self.class_embedding = nn.Embedding(num_classes + 1, "
                    "dim), one row per class and one for the null class; forward: return time_emb + "
                    "self.class_embedding(y), with y = num_classes for every example when y is None.")


def _unet_embedding(num_classes, base=8):
    """A class-conditional U-Net, of which only the embeddings of t and y matter here."""
    from lesson_lib.models.unet import UNet

    return UNet(in_channels=1, image_size=4, base_channels=base, channel_mults=(1,), num_res_blocks=1,
                attention_resolutions=(), dropout=0.0, num_classes=num_classes)


def _conditional_case(with_labels):
    """A U-Net's embedding tables and the time embedding of drawn t; with labels of every class, some
    given explicitly as the null class, or without labels. The batch (13) differs from
    num_classes + 1 and from dim."""
    num_classes = int(torch.randint(3, 11, ()))
    model = _unet_embedding(num_classes)
    with torch.no_grad():
        model.class_embedding.weight.normal_()
        t = torch.randint(0, 1000, (13,))
        y = torch.cat([torch.arange(num_classes + 1), torch.randint(0, num_classes + 1, (12 - num_classes,))])
        time_emb = model.time_embedding(t)
    return {"num_classes": num_classes, "dim": model.class_embedding.embedding_dim, "t": t,
            "y": y[torch.randperm(13)] if with_labels else None, "time_emb": time_emb,
            "weights": {"time": dict(model.time_embedding.state_dict()),
                        "table": model.class_embedding.weight.detach().clone()}}


def _conditional_probe(ns, case):
    """The student's ConditionalEmbedding(num_classes, dim) holding the U-Net's table, called once
    (with the case's labels, or without); and what became of the inputs it was given."""
    module = ns["ConditionalEmbedding"](case["num_classes"], case["dim"])
    try:
        module.load_state_dict({"class_embedding.weight": case["weights"]["table"]})
    except (RuntimeError, KeyError) as error:
        raise AssertionError(f"could not load the U-Net's table of {case['num_classes']} classes + the null class "
                             f"into ConditionalEmbedding({case['num_classes']}, {case['dim']}): "
                             f"{str(error).splitlines()[0]}. {CONDITIONAL_HINT}") from None
    time_emb = case["time_emb"].clone()
    y = case["y"].clone() if case["y"] is not None else None
    with torch.no_grad():
        out = module(time_emb, y) if y is not None else module(time_emb)
    answer = {"out": out.clone() if isinstance(out, torch.Tensor) else out, "time_emb_after": time_emb}
    if y is not None:
        answer["y_after"] = y
    return answer


def _reference_embed(case):
    model = _unet_embedding(case["num_classes"])
    model.time_embedding.load_state_dict(case["weights"]["time"])
    with torch.no_grad():
        model.class_embedding.weight.copy_(case["weights"]["table"])
        return model.embed(case["t"], case["y"])


def _judge_conditional(case, answer, what, hint):
    for key, name in (("time_emb_after", "time_emb"), ("y_after", "y")):
        if case[name] is None:
            continue
        after = field(answer, key)
        expect_tensor(after, f"the {name} given to ConditionalEmbedding", shape=case[name].shape)
        if not torch.equal(after, case[name]):
            raise AssertionError(f"ConditionalEmbedding changed the {name} it was given (in place); return a new "
                                 f"tensor (time_emb + ...): the caller still needs its own")
    expected = _reference_embed(case)
    got = field(answer, "out")
    expect_tensor(got, what, shape=expected.shape, dtype=torch.float32)
    expect_close(got, expected, what, rtol=1e-5, atol=1e-5, hint=hint)


@check(points=2, uses=["ConditionalEmbedding"], case=lambda: _conditional_case(True), probe=_conditional_probe)
def conditional_embedding_matches_unet(case, answer):
    """ConditionalEmbedding(time_emb, y) is UNet.embed(t, y): the time embedding plus the label's row, null class included."""
    _judge_conditional(case, answer, f"ConditionalEmbedding({case['num_classes']}, {case['dim']}) on 13 labels "
                                     f"(the null class {case['num_classes']} among them)", CONDITIONAL_HINT)


@check(points=1, uses=["ConditionalEmbedding"], case=lambda: _conditional_case(False), probe=_conditional_probe)
def conditional_embedding_null_class_without_labels(case, answer):
    """Called without y, ConditionalEmbedding adds the null class's row to every example, as UNet.embed(t) does."""
    _judge_conditional(case, answer, f"ConditionalEmbedding({case['num_classes']}, {case['dim']}) called without y",
                       f"Without labels every example gets the null class, index num_classes = {case['num_classes']} "
                       f"(the last row of the table): y = torch.full((B,), self.num_classes), a long tensor on "
                       f"time_emb's device. Not zeros, not row 0. {CONDITIONAL_HINT}")
