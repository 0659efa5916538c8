"""The checks of lesson 12 (cascaded diffusion: area downsampling, conditioning augmentation, the SR network's input),
run in this process as tests/test_grader_lesson13.py runs those of lesson 13: the solution earns every point on any
seed, typical wrong answers are rejected, each by the check of the property it gets wrong while the properties it gets
right still score, other right answers earn every point, and hostile answers (NaN, empty, the inputs echoed, constants)
earn nothing. Answers that call the library's own downsample, augment and upsample pass in this process (as in the
notebook's feedback) and earn nothing when graded, with the sandbox or without. The facts about resampling that the
checks rely on (bilinear = area at factor 2 only; bilinear upsampling keeps the mean and is not undone by area
downsampling) are tested here against the library. (The untouched exercise reaching its stub, the end-to-end grading
of solution and exercise, and forged answers sent to every judge are tested for every lesson in tests/test_grader.py
and tests/test_grader_judges.py.)"""

import math
import textwrap

import nbformat
import pytest
import torch
import torch.nn.functional as F

from grading_helpers import passes_on_seeds, rejected_on_seeds, solution_with
from lesson_lib.course import grader
from lesson_lib.course.checks import load_checks
from lesson_lib.course.checks import lesson12
from lesson_lib.diffusion.cascade import downsample, upsample

SEEDS = (0, 1, 2)
CHECKS = {check.name: check for check in load_checks("12")}


def rejected(check_name, source, seeds=SEEDS, error=AssertionError):
    return rejected_on_seeds("12", check_name, source, seeds, error)


def passes(check_name, source="", seeds=SEEDS):
    passes_on_seeds("12", check_name, source, seeds)


def test_the_checks_total_10_points_and_the_solution_earns_them_on_any_seed():
    assert sum(check.points for check in CHECKS.values()) == 10
    for name in CHECKS:
        passes(name, seeds=range(8))


def test_the_worker_loads_nothing_of_the_diffusion_library():
    """The probes need no reference: every module an answer could be compared with stays out of the worker."""
    from lesson_lib.course.sandbox import worker_files
    assert lesson12.WORKER_MODULES == () and not any("/diffusion/" in path for path in worker_files("12"))


# --- the facts the checks rely on ------------------------------------------------------------------

def test_bilinear_halving_is_the_area_mean_at_factor_2_only():
    """At factor 2 (align_corners=False, no antialiasing) each output pixel is read at the centre of its 2 x 2 block:
    exactly the block mean. At factors 3 and 4 it is not, so only those tell bilinear from area."""
    x = torch.randn(3, 2, 12, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for f in (2, 3, 4):
        bilinear = F.interpolate(x, size=(12 // f, 24 // f), mode="bilinear", align_corners=False)
        assert torch.allclose(bilinear, downsample(x, f), rtol=0, atol=1e-14) == (f == 2), f


def test_bilinear_upsampling_keeps_the_mean_but_area_downsampling_does_not_undo_it():
    z = torch.randn(3, 2, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for f in (2, 3, 4):
        up = upsample(z, (7 * f, 9 * f))
        assert torch.allclose(up.mean((2, 3)), z.mean((2, 3)), rtol=0, atol=1e-14)
        assert (downsample(up, f) - z).abs().max() > 0.3                    # not the identity
        corners = F.interpolate(z, size=(7 * f, 9 * f), mode="bilinear", align_corners=True)
        assert (corners.mean((2, 3)) - z.mean((2, 3))).abs().max() > 1e-3   # align_corners=True moves the mean


def test_the_drawn_levels_avoid_ties_and_mostly_round_up():
    """Round and floor differ where the fraction of s T is above one half: every drawn level's fraction lies in
    [0.1, 0.4] or [0.6, 0.9] (no tie), most above, and k >= 1 except the sample put at s = 0; in each (B,) level
    one sample's k changes when T is taken to be len(alpha_bars)."""
    for seed in range(6):
        for c in CHECKS["augment_matches_the_library"].make_case(seed)["calls"]:
            _, level, alpha_bars, _ = c["args"]
            T = len(alpha_bars) - 1
            sT = torch.as_tensor(level, dtype=torch.float64).reshape(-1) * T
            sT = sT[sT > 0]
            frac = sT - sT.floor()
            assert bool((((frac >= 0.1) & (frac <= 0.4)) | ((frac >= 0.6) & (frac <= 0.9))).all())
            assert int((frac >= 0.6).sum()) >= len(frac) - 1 and bool((sT >= 1).all() and (sT < T - 1).all())
            if torch.as_tensor(level).ndim:                  # round(s (T + 1)) is a step higher for one sample
                s = torch.as_tensor(level, dtype=torch.float64)
                assert bool((torch.round(s * (T + 1)) != torch.round(s * T)).any())


def test_the_case_noise_is_the_librarys_draw():
    """The judge reruns the library's augment with a generator seeded as the case's e was drawn: the same e."""
    from lesson_lib.diffusion.cascade import augment
    from lesson_lib.diffusion.schedules import NoiseSchedule
    for c in CHECKS["augment_matches_the_library"].make_case(4)["calls"]:
        x, level, alpha_bars, e = c["args"]
        schedule = NoiseSchedule.from_name(*c["schedule"])
        assert torch.equal(schedule.alpha_bars_with_0, alpha_bars)
        z = augment(x, level, schedule, torch.Generator().manual_seed(c["seed"]))[0]
        k = torch.round(torch.as_tensor(level, dtype=torch.float64) * (len(alpha_bars) - 1)).long()
        a = alpha_bars[k].reshape(-1, 1, 1, 1)
        assert torch.allclose(z.double(), a.sqrt() * x.double() + (1 - a).sqrt() * e.double(), rtol=1e-6, atol=1e-6)


# --- 1 · area downsampling --------------------------------------------------------------------------

DOWN_CHECKS = ("area_downsample_matches_the_library", "area_downsample_is_a_block_mean")


def down_source(body):
    return f"def area_downsample(x, factor=2):\n    B, C, H, W = x.shape\n    f = factor\n    return {body}\n"


@pytest.mark.parametrize("body, named, properties", [
    ("x[..., ::f, ::f]", "strided subsampling", "the mean of each image"),
    ("x.reshape(B, C, H // f, f, W // f, f).sum(dim=(3, 5))", "the block sum", "a constant image"),
    ("x.reshape(B, C, f, H // f, f, W // f).mean(dim=(2, 4))", "pixels H / f and W / f apart", "repeated over each"),
    ("x.reshape(B, C, H // f, W // f, f, f).mean(dim=(4, 5))", "mixes rows and columns", "repeated over each"),
])
def test_a_wrong_block_mean_loses_both_checks_and_is_named(body, named, properties):
    source = down_source(body)
    assert all(named in m for m in rejected("area_downsample_matches_the_library", source))
    assert all(properties in m for m in rejected("area_downsample_is_a_block_mean", source))


def test_bilinear_interpolation_loses_the_library_check_and_is_named():
    """Right at factor 2 only: the factors 3 and 4 of the library check reject it."""
    source = down_source("F.interpolate(x, size=(H // f, W // f), mode='bilinear', align_corners=False)")
    assert all("bilinear interpolation" in m and "factor=" in m
               for m in rejected("area_downsample_matches_the_library", source, seeds=range(6)))


def test_the_transposed_blocks_lose_the_library_check():
    source = down_source("F.avg_pool2d(x, f).transpose(2, 3)")
    assert all("transposed" in m for m in rejected("area_downsample_matches_the_library", source))


@pytest.mark.parametrize("source", [
    down_source("F.avg_pool2d(x, f)"),
    down_source("F.adaptive_avg_pool2d(x, (H // f, W // f))"),
    down_source("F.interpolate(x, scale_factor=1 / f, mode='area')"),
    down_source("x.unfold(2, f, f).unfold(3, f, f).mean(dim=(-1, -2))"),
    down_source("sum(x[..., i::f, j::f] for i in range(f) for j in range(f)) / f ** 2"),
])
def test_other_right_block_means_earn_every_point(source):
    for name in DOWN_CHECKS:
        passes(name, source, seeds=range(5))


# --- 2 · conditioning augmentation ------------------------------------------------------------------

AUGMENT = '''
def augment(x_low, level, alpha_bars, e):
    T = {T}
    k = {k}
    a = {a}
    return ({z}).to(x_low.dtype)
'''
RIGHT_AUGMENT = {"T": "len(alpha_bars) - 1", "k": "torch.round(torch.as_tensor(level, dtype=torch.float64) * T).long()",
                 "a": "alpha_bars[k].reshape(-1, *[1] * (x_low.ndim - 1))", "z": "a.sqrt() * x_low + (1 - a).sqrt() * e"}
AUGMENT_CHECKS = ("augment_matches_the_library", "augment_is_the_identity_at_0_and_preserves_variance",
                  "augment_reads_one_level_per_sample")


def augment_source(**change):
    return AUGMENT.format(**dict(RIGHT_AUGMENT, **change))


def test_the_augment_template_is_right():
    for name in AUGMENT_CHECKS:
        passes(name, augment_source())


def test_the_variance_exploding_form_loses_the_library_and_variance_checks_and_is_named():
    source = augment_source(z="x_low + (1 - a).sqrt() * e")
    assert all("variance-exploding" in m for m in rejected("augment_matches_the_library", source))
    messages = rejected("augment_is_the_identity_at_0_and_preserves_variance", source, seeds=range(5))
    assert all("the variance of z" in m and "variance-exploding" in m for m in messages)
    passes("augment_reads_one_level_per_sample", source)


def test_alpha_bar_one_step_further_is_not_the_identity_at_0_and_is_named():
    source = augment_source(a="alpha_bars[k + 1].reshape(-1, *[1] * (x_low.ndim - 1))")
    assert all("one step too far" in m for m in rejected("augment_matches_the_library", source))
    assert all("one step too far" in m and "bit for bit" in m
               for m in rejected("augment_is_the_identity_at_0_and_preserves_variance", source))
    assert all("level 0.0" in m for m in rejected("augment_reads_one_level_per_sample", source))


@pytest.mark.parametrize("k", ["torch.floor(torch.as_tensor(level, dtype=torch.float64) * T).long()",
                               "(torch.as_tensor(level, dtype=torch.float64) * T).long()"])
def test_floor_loses_only_the_library_check_and_is_named(k):
    """int() and floor differ from round at the drawn levels; at s = 0 and in the variance they agree."""
    source = augment_source(k=k)
    assert all("floor" in m for m in rejected("augment_matches_the_library", source, seeds=range(6)))
    for name in AUGMENT_CHECKS[1:]:
        passes(name, source)


def test_swapped_coefficients_lose_the_library_and_identity_checks_and_are_named():
    source = augment_source(z="(1 - a).sqrt() * x_low + a.sqrt() * e")
    assert all("swapped" in m for m in rejected("augment_matches_the_library", source))
    assert all("swapped" in m for m in rejected("augment_is_the_identity_at_0_and_preserves_variance", source))


def test_no_square_roots_lose_the_library_and_variance_checks_and_are_named():
    source = augment_source(z="a * x_low + (1 - a) * e")
    assert all("without the square roots" in m for m in rejected("augment_matches_the_library", source))
    assert all("the variance of z" in m for m in rejected("augment_is_the_identity_at_0_and_preserves_variance",
                                                           source, seeds=range(5)))


def test_t_as_the_length_of_alpha_bars_loses_the_library_check_and_is_named():
    source = augment_source(T="len(alpha_bars)", a="alpha_bars[k.clamp(max=T - 1)].reshape(-1, *[1] * (x_low.ndim - 1))")
    assert all("len(alpha_bars)" in m for m in rejected("augment_matches_the_library", source))


def test_a_level_that_is_not_reshaped_raises_in_the_library_check_and_is_named_in_the_per_sample_one():
    source = augment_source(a="alpha_bars[k]")
    rejected("augment_matches_the_library", source, error=RuntimeError)
    assert all("along the last axis" in m for m in rejected("augment_reads_one_level_per_sample", source))
    passes("augment_is_the_identity_at_0_and_preserves_variance", source)


def test_one_level_for_the_whole_batch_loses_the_per_sample_check():
    source = augment_source(k="torch.round(torch.as_tensor(level, dtype=torch.float64).reshape(-1)[0] * T).long()")
    assert all("alone at its level" in m for m in rejected("augment_reads_one_level_per_sample", source))


def test_an_answer_left_in_float64_loses_the_library_check_on_float32():
    source = AUGMENT.format(**RIGHT_AUGMENT).replace(").to(x_low.dtype)", ")")
    assert all("dtype torch.float64, expected torch.float32" in m
               for m in rejected("augment_matches_the_library", source))


def test_the_variance_check_separates_the_right_form_from_the_variance_exploding_one():
    """The tolerance is five standard errors; the variance-exploding form is more than 40 % off, dozens of them."""
    n = math.prod(lesson12.N_VARIANCE)
    assert 5 * math.sqrt(2 / (n - 1)) < 0.04
    for seed in range(6):
        case = CHECKS["augment_is_the_identity_at_0_and_preserves_variance"].make_case(seed)
        a = float(case["alpha_bars"][round(case["s"] * 1000)])
        assert (case["v"] + 1 - a) / (a * case["v"] + 1 - a) > 1.4


@pytest.mark.parametrize("source", [
    '''
    def augment(x_low, level, alpha_bars, e):             # a number by Python's round, a tensor by torch's
        T = len(alpha_bars) - 1
        if isinstance(level, torch.Tensor):
            a = alpha_bars[torch.round(level.double() * T).long()].view(-1, 1, 1, 1)
        else:
            a = alpha_bars[round(level * T)]
        return (a.sqrt() * x_low.double() + (1 - a).sqrt() * e.double()).to(x_low.dtype)
    ''',
    '''
    def augment(x_low, level, alpha_bars, e):             # always one level per sample, gathered; addcmul
        s = torch.as_tensor(level, dtype=torch.float64).expand(x_low.shape[0])
        ab = alpha_bars.gather(0, torch.round(s * (alpha_bars.numel() - 1)).long())[:, None, None, None]
        return torch.addcmul((1 - ab).sqrt() * e, ab.sqrt(), x_low).to(x_low.dtype)
    ''',
])
def test_other_right_augmentations_earn_every_point(source):
    for name in AUGMENT_CHECKS:
        passes(name, source, seeds=range(5))


# --- 3 · the SR network's input ---------------------------------------------------------------------

SR_CHECKS = ("sr_model_input_matches_the_library", "sr_model_input_is_x_t_then_the_upsampled_image")


def sr_source(body):
    return f"def sr_model_input(x_t, z_low):\n    size = tuple(x_t.shape[2:])\n    return {body}\n"


def test_the_sr_template_is_right():
    for name in SR_CHECKS:
        passes(name, sr_source("torch.cat([x_t, F.interpolate(z_low, size=size, mode='bilinear')], dim=1)"))


@pytest.mark.parametrize("body", [
    "torch.cat([x_t, F.interpolate(z_low, size=size, mode='nearest')], dim=1)",
    "torch.cat([x_t, z_low.repeat_interleave(size[0] // z_low.shape[2], 2)"
    ".repeat_interleave(size[1] // z_low.shape[3], 3)], dim=1)",
])
def test_nearest_neighbours_lose_only_the_library_check_and_are_named(body):
    source = sr_source(body)
    assert all("nearest-neighbour" in m for m in rejected("sr_model_input_matches_the_library", source))
    passes("sr_model_input_is_x_t_then_the_upsampled_image", source)


@pytest.mark.filterwarnings("ignore:`nn.functional.upsample_bilinear` is deprecated")
@pytest.mark.parametrize("body", [
    "torch.cat([x_t, F.interpolate(z_low, size=size, mode='bilinear', align_corners=True)], dim=1)",
    "torch.cat([x_t, F.upsample_bilinear(z_low, size=size)], dim=1)",            # align_corners=True inside
])
def test_align_corners_true_loses_both_checks_and_is_named(body):
    source = sr_source(body)
    assert all("align_corners=True" in m for m in rejected("sr_model_input_matches_the_library", source))
    assert all("mean of each channel" in m for m in rejected("sr_model_input_is_x_t_then_the_upsampled_image", source))


def test_the_order_swapped_loses_both_checks_and_is_named():
    source = sr_source("torch.cat([F.interpolate(z_low, size=size, mode='bilinear'), x_t], dim=1)")
    assert all("other order" in m for m in rejected("sr_model_input_matches_the_library", source))
    assert all("against x_t" in m for m in rejected("sr_model_input_is_x_t_then_the_upsampled_image", source))


@pytest.mark.parametrize("dim", [0, 2, -1])
def test_the_wrong_dimension_loses_both_checks(dim):
    source = sr_source(f"torch.cat([x_t, F.interpolate(z_low, size=size, mode='bilinear')], dim={dim})")
    """Along dim 0 the library check's equal channel counts let it run (a shape the judge names); with C_x != C_low
    the concatenation itself raises."""
    assert all("dim 1" in m for m in rejected("sr_model_input_matches_the_library", source))
    rejected("sr_model_input_is_x_t_then_the_upsampled_image", source, error=RuntimeError)


@pytest.mark.parametrize("body", [
    "torch.cat([x_t, F.interpolate(z_low, scale_factor=(size[0] // z_low.shape[2], size[1] // z_low.shape[3]), "
    "mode='bilinear')], dim=1)",
    "torch.cat([x_t, F.interpolate(z_low, size=size, mode='bilinear', align_corners=False, antialias=True)], 1)",
    "torch.concat((x_t, torch.nn.Upsample(size=size, mode='bilinear')(z_low)), dim=-3)",
])
def test_other_right_inputs_earn_every_point(body):
    for name in SR_CHECKS:
        passes(name, sr_source(body), seeds=range(5))


# --- hostile answers earn nothing -------------------------------------------------------------------

HOSTILE = {
    "NaN": '''
        def area_downsample(x, factor=2):
            return torch.full_like(x[..., ::factor, ::factor], float("nan"))
        def augment(x_low, level, alpha_bars, e):
            return torch.full_like(x_low, float("nan"))
        def sr_model_input(x_t, z_low):
            return torch.full_like(torch.cat([x_t, x_t], 1), float("nan"))
    ''',
    "empty": '''
        def area_downsample(x, factor=2):
            return torch.empty(0, dtype=x.dtype)
        def augment(x_low, level, alpha_bars, e):
            return torch.empty(0, dtype=x_low.dtype)
        def sr_model_input(x_t, z_low):
            return torch.empty(0, dtype=x_t.dtype)
    ''',
    "echo": '''
        def area_downsample(x, factor=2):
            return x
        def augment(x_low, level, alpha_bars, e):
            return x_low
        def sr_model_input(x_t, z_low):
            return x_t
    ''',
    "other inputs": '''
        def area_downsample(x, factor=2):
            return x[..., ::factor, ::factor]
        def augment(x_low, level, alpha_bars, e):
            return e
        def sr_model_input(x_t, z_low):
            return torch.cat([x_t, x_t], 1)[:, :x_t.shape[1] + z_low.shape[1]]
    ''',
    "constants": '''
        def area_downsample(x, factor=2):
            return torch.zeros_like(x[..., ::factor, ::factor])
        def augment(x_low, level, alpha_bars, e):
            return torch.ones_like(x_low)
        def sr_model_input(x_t, z_low):
            return torch.zeros(x_t.shape[0], x_t.shape[1] + z_low.shape[1], *x_t.shape[2:], dtype=x_t.dtype)
    ''',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_answers_earn_nothing(name):
    namespace = solution_with("12", HOSTILE[name])
    for check in CHECKS.values():
        with pytest.raises(AssertionError, match="."):
            check.fn(namespace, seed=0)


CHEAT = '''
import torch
from lesson_lib.diffusion.cascade import aug_steps, downsample, upsample

def area_downsample(x, factor=2):                 # the library's block mean
    return downsample(x, factor)

def augment(x_low, level, alpha_bars, e):         # the library's k = round(s T)
    a = alpha_bars[aug_steps(level, len(alpha_bars) - 1)].reshape(-1, *[1] * (x_low.ndim - 1))
    return (a.sqrt() * x_low + (1 - a).sqrt() * e).to(x_low.dtype)

def sr_model_input(x_t, z_low):                   # the library's upsampling
    return torch.cat([x_t, upsample(z_low, tuple(x_t.shape[2:]))], dim=1)
'''


def test_the_library_called_would_pass_without_the_fence():
    """In this process (as in the notebook's own feedback) the library is there and the cheat passes: only the
    worker's fence stops it below (else that test could not fail)."""
    for name in CHECKS:
        passes(name, CHEAT, seeds=(3,))


@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_in_the_grader_the_library_cannot_be_called(tmp_path, sandbox):
    """The worker loads no module of lesson_lib.diffusion: the library's downsample, augment and upsample import as
    stand-ins that raise, so the cheat earns nothing when graded, with bubblewrap or without."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["lesson_lib"] = {"lesson": "12"}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(CHEAT).strip("\n"))]
    path = tmp_path / "12_cheat.ipynb"
    nbformat.write(nb, str(path))
    report = grader.grade(path, seed=3, sandbox=sandbox)
    results = {result["name"]: result for result in report["checks"]}
    assert set(results) == set(CHECKS)
    for name in CHECKS:
        assert results[name]["points"] == 0, grader.format_report(report)
        assert "not available while grading" in results[name]["reason"], results[name]["reason"]
