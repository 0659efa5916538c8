"""The checks of lesson 11 (the Diffusion Transformer), run in this process as tests/test_grader_lesson10.py runs
those of lesson 10: the solution earns every point on any seed, typical wrong answers are rejected, each by the
check of the property it gets wrong while the properties it gets right still score, other right answers earn every
point, and hostile answers (NaN, empty, the inputs echoed, constants, the block's own forward called) earn nothing.
One end-to-end grading shows that in the grader's worker the block's forward cannot be reached another way either.
(The untouched exercise reaching its stub, the end-to-end grading of solution and exercise, and forged answers sent
to every judge are tested for every lesson in tests/test_grader.py and tests/test_grader_judges.py.)"""

import textwrap

import nbformat
import pytest

from grading_helpers import passes_on_seeds, rejected_on_seeds, solution_with
from lesson_lib.course import grader
from lesson_lib.course.checks import load_checks

SEEDS = (0, 1, 2)
CHECKS = {check.name: check for check in load_checks("11")}


def rejected(check_name, source, seeds=SEEDS, error=AssertionError):
    return rejected_on_seeds("11", check_name, source, seeds, error)


def passes(check_name, source="", seeds=SEEDS):
    passes_on_seeds("11", check_name, source, seeds)


def test_the_checks_total_10_points_and_the_solution_earns_them_on_any_seed():
    assert sum(check.points for check in CHECKS.values()) == 10
    for name in CHECKS:
        passes(name, seeds=range(8))


# --- 1 · patchify and unpatchify ------------------------------------------------------------------

PATCHIFY = '''
def patchify(x, p):
    B, C, size, _ = x.shape
    g = size // p
    return x.reshape(B, C, g, p, g, p).permute({axes}).reshape(B, g * g, p * p * C)
'''
UNPATCHIFY = '''
def unpatchify(tokens, p, channels, size):
    B, g = tokens.shape[0], size // p
    return tokens.reshape(B, {shape}).permute({axes}).reshape(B, channels, size, size)
'''
PATCHIFY_CHECKS = ("patchify_matches_the_library", "patchify_token_k_is_the_kth_patch_row_by_row")
RIGHT_PATCHIFY = "0, 2, 4, 3, 5, 1"
RIGHT_UNPATCHIFY = {"shape": "g, g, p, p, channels", "axes": "0, 5, 1, 3, 2, 4"}


def test_the_templates_are_right():
    source = PATCHIFY.format(axes=RIGHT_PATCHIFY) + UNPATCHIFY.format(**RIGHT_UNPATCHIFY)
    for name in PATCHIFY_CHECKS + ("unpatchify_matches_the_library", "unpatchify_inverts_patchify_exactly"):
        passes(name, source)


# A wrong patchify, and the unpatchify that undoes exactly it (the pair is consistent, the order is not the course's).
WRONG_PAIRS = {
    "grid transposed": ("0, 4, 2, 3, 5, 1", {"shape": "g, g, p, p, channels", "axes": "0, 5, 2, 3, 1, 4"}),
    "channel-first": ("0, 2, 4, 1, 3, 5", {"shape": "g, g, channels, p, p", "axes": "0, 3, 1, 4, 2, 5"}),
    "column by column": ("0, 2, 4, 5, 3, 1", {"shape": "g, g, p, p, channels", "axes": "0, 5, 1, 4, 2, 3"}),
}
NAMED = {"grid transposed": "the grid transposed", "channel-first": "channel-first within a token",
         "column by column": "the patch read column by column"}


@pytest.mark.parametrize("mistake", sorted(WRONG_PAIRS))
def test_a_wrong_order_loses_both_patchify_checks_and_is_named_but_its_own_inverse_round_trips(mistake):
    patchify_axes, unpatchify_args = WRONG_PAIRS[mistake]
    source = PATCHIFY.format(axes=patchify_axes)
    messages = rejected("patchify_matches_the_library", source)
    assert all(NAMED[mistake] in m for m in messages)
    assert all("token" in m and "holds pixel" in m for m in rejected("patchify_token_k_is_the_kth_patch_row_by_row",
                                                                     source))
    rejected("unpatchify_inverts_patchify_exactly", source)                 # with the course's unpatchify
    pair = source + UNPATCHIFY.format(**unpatchify_args)
    passes("unpatchify_inverts_patchify_exactly", pair)                     # a consistent pair is an inverse
    assert all(f"undoes a patchify with {NAMED[mistake]}" in m
               for m in rejected("unpatchify_matches_the_library", pair))


def test_a_plain_reshape_is_rejected_by_both_patchify_checks_and_named():
    source = "def patchify(x, p):\n    return x.reshape(x.shape[0], -1, p * p * x.shape[1])\n"
    assert all("a plain reshape" in m for m in rejected("patchify_matches_the_library", source))
    rejected("patchify_token_k_is_the_kth_patch_row_by_row", source)


@pytest.mark.parametrize("axes", ["0, 5, 1, 2, 3, 4", "0, 5, 1, 4, 2, 3", "0, 5, 2, 3, 1, 4"])
def test_an_unpatchify_that_is_not_the_inverse_loses_both_unpatchify_checks_only(axes):
    source = UNPATCHIFY.format(shape=RIGHT_UNPATCHIFY["shape"], axes=axes)
    for name in ("unpatchify_matches_the_library", "unpatchify_inverts_patchify_exactly"):
        rejected(name, source)
    for name in PATCHIFY_CHECKS:
        passes(name, source)


def test_a_patchify_that_computes_instead_of_moving_pixels_loses_the_round_trip():
    source = PATCHIFY.format(axes=RIGHT_PATCHIFY).replace("return x.", "return (2 * x).") + \
        UNPATCHIFY.format(**RIGHT_UNPATCHIFY).replace("return tokens.", "return (tokens / 2).")
    assert all("only move" in m for m in rejected("unpatchify_inverts_patchify_exactly", source))


OTHER_RIGHT_PATCHIFY = [
    '''
    import torch.nn.functional as F

    def patchify(x, p):                        # unfold gives (B, C p^2, N), channel first: reorder the entries
        B, C = x.shape[:2]
        columns = F.unfold(x, kernel_size=p, stride=p)
        return columns.view(B, C, p * p, -1).permute(0, 3, 2, 1).reshape(B, -1, p * p * C)

    def unpatchify(tokens, p, channels, size):
        B, N, _ = tokens.shape
        columns = tokens.view(B, N, p * p, channels).permute(0, 3, 2, 1).reshape(B, channels * p * p, N)
        return F.fold(columns, output_size=(size, size), kernel_size=p, stride=p)
    ''',
    '''
    def patchify(x, p):                        # patch by patch, in a loop
        g = x.shape[-1] // p
        patches = [x[:, :, r * p:(r + 1) * p, c * p:(c + 1) * p].permute(0, 2, 3, 1).flatten(1)
                   for r in range(g) for c in range(g)]
        return torch.stack(patches, dim=1)

    def unpatchify(tokens, p, channels, size):
        g = size // p
        x = tokens.new_empty(tokens.shape[0], channels, size, size)
        for k in range(g * g):
            r, c = divmod(k, g)
            x[:, :, r * p:(r + 1) * p, c * p:(c + 1) * p] = tokens[:, k].view(-1, p, p, channels).permute(0, 3, 1, 2)
        return x
    ''',
    '''
    def patchify(x, p):                        # einsum as a permutation of the six axes
        B, C, size, _ = x.shape
        g = size // p
        return torch.einsum("bkrisj->brsijk", x.reshape(B, C, g, p, g, p)).reshape(B, g * g, -1)

    def unpatchify(tokens, p, channels, size):
        B, g = tokens.shape[0], size // p
        return torch.einsum("brsijk->bkrisj", tokens.reshape(B, g, g, p, p, channels)).reshape(B, channels, size, size)
    ''',
]


@pytest.mark.parametrize("source", OTHER_RIGHT_PATCHIFY)
def test_other_right_patchifies_earn_every_point(source):
    for name in PATCHIFY_CHECKS + ("unpatchify_matches_the_library", "unpatchify_inverts_patchify_exactly"):
        passes(name, source, seeds=range(6))


# --- 2 · modulate ----------------------------------------------------------------------------------

MODULATE_CHECKS = ("modulate_matches_the_library", "modulate_is_the_identity_at_zero_and_per_example")


def modulate_source(body):
    return f"def modulate(x, shift, scale):\n    return {body}\n"


def test_modulate_without_the_one_loses_both_checks_and_is_named():
    source = modulate_source("x * scale[:, None] + shift[:, None]")
    assert all("the 1 + is missing" in m for m in rejected("modulate_matches_the_library", source))
    assert all("must be x itself" in m for m in rejected("modulate_is_the_identity_at_zero_and_per_example", source))


def test_modulate_with_the_shift_first_loses_the_value_check_only_and_is_named():
    source = modulate_source("(x + shift[:, None]) * (1 + scale[:, None])")
    assert all("the shift added before the scaling" in m for m in rejected("modulate_matches_the_library", source))
    passes("modulate_is_the_identity_at_zero_and_per_example", source)


def test_modulate_broadcast_over_the_wrong_axis_raises_or_mixes_the_examples():
    source = modulate_source("x * (1 + scale[None]) + shift[None]")
    rejected("modulate_matches_the_library", source, error=RuntimeError)          # B != N: the shapes clash
    messages = rejected("modulate_is_the_identity_at_zero_and_per_example", source)   # B == N: it runs
    assert all("changed the output of other examples" in m for m in messages)


def test_modulate_with_shift_and_scale_swapped_is_named():
    source = modulate_source("x * (1 + shift[:, None]) + scale[:, None]")
    assert all("swapped" in m for m in rejected("modulate_matches_the_library", source))


@pytest.mark.parametrize("body", [
    "torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))",
    "x + x * scale[:, None, :] + shift[:, None, :]",
    "torch.einsum('bnd,bd->bnd', x, 1 + scale) + shift.unsqueeze(-2)",
])
def test_other_right_modulates_earn_every_point(body):
    for name in MODULATE_CHECKS:
        passes(name, modulate_source(body), seeds=range(6))


# --- 3 · one adaLN-Zero block -----------------------------------------------------------------------

BLOCK = '''
def dit_block_forward(block, x, c):
    shift1, scale1, gate1, shift2, scale2, gate2 = {chunks}
    h = {residual}{gate1} * block.attention(modulate({norm1}, shift1, scale1))
    return {residual2}{gate2} * block.mlp(modulate({norm2}, shift2, scale2))
'''
RIGHT_BLOCK = {"chunks": "block.modulation(c).chunk(6, dim=1)", "residual": "x + ", "residual2": "h + ",
               "gate1": "gate1[:, None, :]", "gate2": "gate2[:, None, :]", "norm1": "block.norm1(x)",
               "norm2": "block.norm2(h)"}
BLOCK_CHECKS = ("dit_block_forward_is_the_blocks_forward_pass",
                "dit_block_forward_is_the_identity_at_a_zero_modulation")


def block_source(**change):
    return BLOCK.format(**dict(RIGHT_BLOCK, **change))


def test_the_block_template_is_right():
    for name in BLOCK_CHECKS:
        passes(name, block_source())


@pytest.mark.parametrize("change, named, zero", [
    ({"gate1": "1", "gate2": "1"}, "the gates left out", False),
    ({"residual": "", "residual2": ""}, "no residual", False),
    ({"norm2": "block.norm2(x)"}, "reading the block's input x", True),
    ({"norm1": "x", "norm2": "h"}, "the LayerNorms skipped", True),
    ({"chunks": "(lambda m: (m[1], m[0], m[2], m[4], m[3], m[5]))(block.modulation(c).chunk(6, dim=1))"},
     "read as scale, shift, gate", True),
    ({"chunks": "(lambda m: (m[1], m[2], m[0], m[4], m[5], m[3]))(block.modulation(c).chunk(6, dim=1))"},
     "read as gate, shift, scale", True),
])
def test_a_wrong_block_loses_the_value_check_and_is_named(change, named, zero):
    """A mistake that keeps the block the identity at a zero modulation keeps the zero check's point."""
    source = block_source(**change)
    assert all(named in m for m in rejected("dit_block_forward_is_the_blocks_forward_pass", source))
    if zero:
        passes("dit_block_forward_is_the_identity_at_a_zero_modulation", source)
    else:
        rejected("dit_block_forward_is_the_identity_at_a_zero_modulation", source)


def test_a_block_in_another_chunk_order_is_rejected_even_when_not_named():
    source = block_source(chunks="(lambda m: (m[2], m[1], m[0], m[5], m[4], m[3]))(block.modulation(c).chunk(6, 1))")
    rejected("dit_block_forward_is_the_blocks_forward_pass", source)


def test_gates_without_a_token_axis_are_an_error_that_names_the_shapes():
    source = block_source(gate1="gate1", gate2="gate2")
    rejected("dit_block_forward_is_the_blocks_forward_pass", source, error=RuntimeError)


@pytest.mark.parametrize("call", ["block(x, c)", "block.forward(x, c)", "block.__call__(x, c)"])
def test_calling_the_block_itself_earns_nothing_and_says_why(call):
    source = f"def dit_block_forward(block, x, c):\n    return {call}\n"
    for name in BLOCK_CHECKS:
        assert all("called the block's own forward pass" in m for m in rejected(name, source))


OTHER_RIGHT_BLOCK = [
    '''
    def dit_block_forward(block, x, c):            # the chunks on the last axis, a token axis kept from the start
        shift1, scale1, gate1, shift2, scale2, gate2 = block.modulation(c)[:, None, :].chunk(6, dim=-1)
        x = x + gate1 * block.attention(block.norm1(x) * (1 + scale1) + shift1)
        x = x + gate2 * block.mlp(block.norm2(x) * (1 + scale2) + shift2)
        return x
    ''',
    '''
    def dit_block_forward(block, x, c):            # the six vectors by slicing, the gates applied with unsqueeze
        D = x.shape[-1]
        m = block.modulation(c)
        shift1, scale1, gate1, shift2, scale2, gate2 = (m[:, i * D:(i + 1) * D] for i in range(6))
        h = block.attention(modulate(block.norm1(x), shift1, scale1))
        x = x + gate1.unsqueeze(1) * h
        h = block.mlp(modulate(block.norm2(x), shift2, scale2))
        return torch.addcmul(x, gate2.unsqueeze(1), h)
    ''',
]


@pytest.mark.parametrize("source", OTHER_RIGHT_BLOCK)
def test_other_right_blocks_earn_every_point(source):
    for name in BLOCK_CHECKS:
        passes(name, source, seeds=range(6))


# --- hostile answers earn nothing -----------------------------------------------------------------

HOSTILE = {
    "NaN": '''
        def patchify(x, p):
            return torch.full((x.shape[0], (x.shape[-1] // p) ** 2, p * p * x.shape[1]), float("nan"), dtype=x.dtype)
        def unpatchify(tokens, p, channels, size):
            return torch.full((tokens.shape[0], channels, size, size), float("nan"), dtype=tokens.dtype)
        def modulate(x, shift, scale):
            return torch.full_like(x, float("nan"))
        def dit_block_forward(block, x, c):
            return torch.full_like(x, float("nan"))
    ''',
    "empty": '''
        def patchify(x, p):
            return torch.empty(0, dtype=x.dtype)
        def unpatchify(tokens, p, channels, size):
            return torch.empty(0, dtype=tokens.dtype)
        def modulate(x, shift, scale):
            return torch.empty(0, dtype=x.dtype)
        def dit_block_forward(block, x, c):
            return torch.empty(0, dtype=x.dtype)
    ''',
    "echo": '''
        def patchify(x, p):
            return x
        def unpatchify(tokens, p, channels, size):
            return tokens
        def modulate(x, shift, scale):
            return x
        def dit_block_forward(block, x, c):
            return x
    ''',
    "constants": '''
        def patchify(x, p):
            return torch.zeros(x.shape[0], (x.shape[-1] // p) ** 2, p * p * x.shape[1], dtype=x.dtype)
        def unpatchify(tokens, p, channels, size):
            return torch.zeros(tokens.shape[0], channels, size, size, dtype=tokens.dtype)
        def modulate(x, shift, scale):
            return torch.ones_like(x)
        def dit_block_forward(block, x, c):
            return x + 1
    ''',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_answers_earn_nothing(name):
    namespace = solution_with("11", HOSTILE[name])
    for check in CHECKS.values():
        with pytest.raises(AssertionError, match="."):
            check.fn(namespace, seed=0)


CHEAT = '''
import torch
from lesson_lib.models.dit import DiTBlock

def dit_block_forward(block, x, c):            # the parent's forward, called past the block's own
    return DiTBlock.forward(block, x, c)

def modulate(x, shift, scale):                 # the library's, relabelled
    from lesson_lib.models.dit import modulate as theirs
    return theirs(x, shift, scale)
'''


def test_the_parent_forward_would_pass_without_the_fence():
    """In this process (as in the notebook's own feedback) the explicit parent call runs and passes: only the
    worker's fence stops it below (else that test could not fail)."""
    for name in BLOCK_CHECKS + MODULATE_CHECKS:
        passes(name, CHEAT, seeds=(3,))


@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_in_the_grader_the_block_cannot_be_reached_past_its_own_forward(tmp_path, sandbox):
    """In the worker the library's modulate is taken away, and with it DiTBlock.forward: the explicit parent
    call that the notebook's own feedback cannot stop earns nothing when graded, with bubblewrap or without."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["lesson_lib"] = {"lesson": "11"}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(CHEAT).strip("\n"))]
    path = tmp_path / "11_cheat.ipynb"
    nbformat.write(nb, str(path))
    report = grader.grade(path, seed=3, sandbox=sandbox)
    results = {result["name"]: result for result in report["checks"]}
    for name in BLOCK_CHECKS + MODULATE_CHECKS:
        assert results[name]["points"] == 0, grader.format_report(report)
        assert "not available while grading" in results[name]["reason"], results[name]["reason"]
