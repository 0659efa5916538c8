"""Checks for lesson 12, cascaded diffusion (solutions/12_cascades.ipynb): the base model's images made small, the
conditioning augmentation of the low-resolution image, and the super-resolution (SR) network's input.

Why one module: these are the checks of one exercise notebook; the grader loads a lesson's checks from one module,
and its parts share the course's conventions for the cascade (:mod:`lesson_lib.diffusion.cascade`): area
downsampling, bilinear upsampling with ``align_corners=False``, the level s as a fraction of the SR schedule's T,
and the low-resolution image concatenated after x_t.

``area_downsample(x, factor=2)`` is the mean of each factor x factor block of x (B, C, H, W). It is compared with
:func:`lesson_lib.diffusion.cascade.downsample` on drawn images, float32 and float64, square and not, at factor 2
(the default) and at factors 3 and 4: at factor 2, bilinear interpolation to half size (``align_corners=False``, no
antialiasing) reads each output pixel at the centre of its 2 x 2 block, the mean of the four, and is exactly the area
mean, so only the other factors tell the two apart. The usual mistakes are named (strided subsampling, the block
sum, bilinear interpolation, reshapes that average pixels that are not neighbours). A second check holds the
student's own function to the properties of a block mean, float64: a constant image stays that constant, each
image's mean is kept, the map is linear, a value added to a whole block moves only its own output pixel, and changing a pixel by d moves only its own
block's output, by d / f^2.

``augment(x_low, level, alpha_bars, e)`` is Gaussian conditioning augmentation (Ho et al., 2021, Sec. 4.1) with the
noise e given: z = sqrt(alpha-bar_k) x_low + sqrt(1 - alpha-bar_k) e, k = round(s T). ``alpha_bars`` is the
schedule's ``alpha_bars_with_0``: T + 1 levels, entry k the paper's alpha-bar_k and entry 0 = 1 the clean image, so
T = len(alpha_bars) - 1. ``level`` is a number or a (B,) tensor. It is compared with
:func:`lesson_lib.diffusion.cascade.augment` driven by a generator seeded as the case's e was drawn (so its e is the
student's), on ``NoiseSchedule.linear(1000)`` and a cosine schedule of drawn T, at levels whose s T lies away from
a half-integer and, for most, has a fraction above one half (where round and floor differ; one level per batch has
a fraction below one half and s >= 0.6, where round(s (T + 1)) is one step higher); float32 and float64, a
batch size that equals no other dimension (a (B,) level that is not reshaped raises). The usual mistakes are named
(the variance-exploding form x_low + sqrt(1 - ab) e, alpha-bar one step further, floor, the coefficients swapped, no
square roots, T = len(alpha_bars)). A second check: s = 0 (a number) returns x_low bit for bit, and for x_low of
variance v and fresh standard normal e, the variance of z over 49,152 entries is ab_k v + 1 - ab_k within five
standard errors (sqrt(2 / (n - 1)) times it), at s in [0.2, 0.6] and v in [3, 6], where the variance-exploding form
gives v + 1 - ab_k, more than 40 % above it. A third, one level per sample: on images whose width equals the batch
size (so that a level multiplied along the last axis runs and is named), with one sample at s = 0, the batch's z of
each sample is the student's own z of that sample alone at its level (a number), the s = 0 sample is x_low and the
others are not.

``sr_model_input(x_t, z_low)`` is what :class:`~lesson_lib.models.unet.SuperResUNet` feeds its first convolution,
``torch.cat([x_t, upsample(z_low, x_t's size)], dim=1)``: x_t first. It is compared with
:func:`~lesson_lib.diffusion.cascade.upsample` and that concatenation at 14 -> 28 (C = 1), 8 -> 32 (C = 3) and a
non-square pair of drawn integer factors, float32 and float64; the usual mistakes are named (nearest neighbours,
i.e. ``repeat_interleave``; ``align_corners=True``; the order swapped; the wrong dimension). A second check, with
C_x != C_low: the answer has C_x + C_low channels, the first C_x are x_t bit for bit, the others do not depend on
x_t, a constant z_low gives that constant, and each channel keeps its mean (bilinear upsampling with
``align_corners=False`` by an integer factor does; ``align_corners=True`` does not). Area downsampling the upsampled
image does *not* give z_low back (bilinear interpolation mixes neighbouring pixels), so that is not checked.

Why the student cannot pass by calling the library: the probes need nothing from lesson_lib (the cases hand them
tensors and numbers drawn and computed in the grader), so the worker loads no module of lesson_lib.diffusion
(``WORKER_MODULES`` is empty): importing ``cascade`` or ``schedules`` there gives stand-ins that raise. (In the
notebook's own feedback, which shares the student's process, the library is there; feedback is not grading.)
Total: 10 points.
"""

import math

import torch
import torch.nn.functional as F

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import (call_each, expect_close, expect_tensor, field, naming,
                                              pairs, shape_of, tolerance)

# The probes call only the student's functions, on tensors and numbers the cases drew and computed in the grader;
# the references (diffusion/cascade.py, schedules.py) are imported inside cases and judges.
WORKER_MODULES = ()
HIDDEN = ()

DOWN_HINT = ("Output pixel (i, j) is the mean of its own f x f block, rows f i to f i + f - 1 and columns f j to "
             "f j + f - 1 of the same channel: every one of the f^2 pixels, divided by f^2.")
CONSTANT_HINT = "A constant image is its own block mean: average the f^2 pixels of a block, do not add them up."
MEAN_HINT = "Every pixel belongs to exactly one block, and every block counts the same: the image's mean is kept."
LOCAL_HINT = ("A pixel belongs only to its own block, a block is f neighbouring rows and f neighbouring columns: a "
              "value added to a whole block adds to that block's output only, and changing one pixel by d moves its "
              "block's output by d / f^2 and nothing else.")
AUG_HINT = ("z = sqrt(ab_k) x_low + sqrt(1 - ab_k) e with k = round(s T), rounded to the nearest step: alpha_bars "
            "starts at alpha-bar_0 = 1 (the clean image) and holds the T + 1 levels alpha-bar_0 to alpha-bar_T. "
            "Compute in float64 and return x_low's dtype.")
IDENTITY_HINT = ("At s = 0, k = 0 and alpha_bars[0] = 1: z must be x_low exactly, no noise added (index the levels so "
                 "that k = 0 reads alpha_bars[0]; sqrt(ab_k) scales x_low, sqrt(1 - ab_k) scales e).")
VARIANCE_HINT = ("The augmentation is variance preserving: with Var(x_low) = v and e standard normal, Var(z) = ab_k v "
                 "+ 1 - ab_k, because x_low is scaled by sqrt(ab_k) and e by sqrt(1 - ab_k).")
PER_SAMPLE_HINT = ("A (B,) level is one level per sample: sample b is augmented at level[b] over all its channels and "
                   "pixels, exactly as if it were alone, so its ab_k must broadcast over (C, H, W), not along the "
                   "width.")
SR_HINT = ("The SR network reads torch.cat([x_t, low], dim=1): x_t first, then z_low upsampled to x_t's height and "
           "width by bilinear interpolation with align_corners=False (pixel centres at half-integers, the course's "
           "upsample).")
SR_PARTS_HINT = ("The input is x_t's channels, unchanged, followed by the upsampled z_low's: C_x + C_low channels "
                 "along dim 1, the second part made from z_low alone.")
SR_MEAN_HINT = ("Bilinear upsampling with align_corners=False by an integer factor keeps a constant and each "
                "channel's mean; with align_corners=True the edge pixels weigh less and the mean moves.")

N_VARIANCE = (16, 3, 32, 32)          # 49,152 entries: the standard error of the variance is 0.64 % of it
N_BUMPS = 4                           # pixels changed at once in the locality check (one could land by chance)


def _pick(choices):
    return choices[int(torch.randint(0, len(choices), ()))]


def _named(mistakes, got):
    """The names in ``mistakes`` (name -> value) that ``got`` equals (to float32 rounding), joined by "; or ", or
    None (two mistakes can agree on one input: at some levels alpha-bar one step further is T = len(alpha_bars))."""
    if type(got) is not torch.Tensor or not got.is_floating_point() or not bool(torch.isfinite(got).all()):
        return None
    rtol, atol = (1e-4, 1e-5) if got.dtype == torch.float32 else (1e-9, 1e-11)
    names = [name for name, value in mistakes.items() if value is not None and value.shape == got.shape
             and torch.allclose(got.double(), value.double(), rtol=rtol, atol=atol)]
    return "; or ".join(names) or None


def _batch_size(*others):
    """A batch size from 2 to 6 that equals none of ``others``."""
    return _pick([b for b in range(2, 7) if b not in others])


# --- 1 · area downsampling ---------------------------------------------------------------------------

def _down_case():
    calls = []
    for factor, channels, dtype, square in ((2, 1, torch.float32, True), (2, 3, torch.float32, False),
                                            (3, _pick([1, 3]), torch.float64, False), (4, 3, torch.float32, False)):
        h = int(torch.randint(3, 8, ()))
        w = h if square else _pick([v for v in range(3, 9) if v != h])
        B = _batch_size(channels, factor * h, factor * w)
        x = torch.randn(B, channels, factor * h, factor * w, dtype=dtype)
        calls.append([[x], {}] if factor == 2 and square else [[x], {"factor": factor}])
    return {"calls": calls}


def _down_mistakes(x, f):
    B, C, H, W = x.shape
    x = x.double()
    return {"strided subsampling x[..., ::f, ::f] (one pixel of each block, not their mean)": x[..., ::f, ::f],
            "the block sum (the mean times f^2)": F.avg_pool2d(x, f) * f * f,
            "bilinear interpolation to (H / f, W / f): at factor 2 it is the block mean, at other factors it reads "
            "one or two pixels near each block's centre": F.interpolate(x, size=(H // f, W // f), mode="bilinear",
                                                                          align_corners=False),
            "a reshape to (B, C, f, H / f, f, W / f): the mean of pixels H / f and W / f apart, not of a block":
                x.reshape(B, C, f, H // f, f, W // f).mean((2, 4)),
            "a reshape to (B, C, H / f, W / f, f, f), which mixes rows and columns":
                x.reshape(B, C, H // f, W // f, f, f).mean((4, 5)),
            "the blocks' means with rows and columns transposed": F.avg_pool2d(x, f).transpose(2, 3)
            if H == W else None}


@check(points=2, uses=["area_downsample"], case=_down_case, probe=call_each("area_downsample"))
def area_downsample_matches_the_library(case, answer):
    """area_downsample is the library's block mean at factor 2 (the default), 3 and 4, square and not."""
    from lesson_lib.diffusion.cascade import downsample
    for (args, kwargs), got in pairs(case["calls"], answer):
        x, f = args[0], kwargs.get("factor", 2)
        what = f"area_downsample(x of {shape_of(x)}{', factor=' + str(f) if kwargs else ''})"
        rtol, atol = tolerance(x)
        expect_close(got, downsample(x, f), what, rtol=rtol, atol=atol,
                     hint=naming(_named(_down_mistakes(x, f), got), DOWN_HINT))


def _down_properties_case():
    f = _pick([2, 3, 4])
    C = _pick([1, 3])
    h, w = int(torch.randint(3, 7, ())), int(torch.randint(3, 7, ()))
    B = _batch_size(C, f * h, f * w)
    shape = (B, C, f * h, f * w)
    return {"factor": f, "x": torch.randn(shape, dtype=torch.float64), "y": torch.randn(shape, dtype=torch.float64),
            "c": float(torch.empty(()).uniform_(-2, 2)), "a": float(torch.empty(()).uniform_(0.5, 2)),
            "blocks": torch.randn(B, C, h, w, dtype=torch.float64),
            "pixels": [[int(torch.randint(0, n, ())) for n in shape] for _ in range(N_BUMPS)],
            "d": [float(v) for v in torch.empty(N_BUMPS).uniform_(1, 3)]}


def _down_properties_probe(ns, case):
    f, x, y, c, a, d = (case[k] for k in ("factor", "x", "y", "c", "a", "d"))
    down = ns["area_downsample"]
    blocks = case["blocks"]
    bumped = x + blocks.repeat_interleave(f, 2).repeat_interleave(f, 3)     # constant on each f x f block
    for pixel, change in zip(case["pixels"], d):
        bumped[tuple(pixel)] += change
    return {"constant": down(torch.full_like(x, c), f), "x": down(x.clone(), f), "y": down(y.clone(), f),
            "mix": down(x + a * y, f), "bumped": down(bumped, f)}


@check(points=1, uses=["area_downsample"], case=_down_properties_case, probe=_down_properties_probe)
def area_downsample_is_a_block_mean(case, answer):
    """The student's own area_downsample keeps constants and each image's mean, is linear and local to each block."""
    f, x, c, a, d = (case[k] for k in ("factor", "x", "c", "a", "d"))
    B, C, H, W = x.shape
    low = (B, C, H // f, W // f)
    what = f"area_downsample(x of {shape_of(x)}, factor={f})"
    parts = {}
    for key in ("constant", "x", "y", "mix", "bumped"):
        parts[key] = field(answer, key)
        expect_tensor(parts[key], what, shape=low, dtype=x.dtype)
        if not bool(torch.isfinite(parts[key]).all()):
            raise AssertionError(f"{what} contains NaN or inf. {DOWN_HINT}")
    expect_close(parts["constant"], torch.full(low, c, dtype=x.dtype), f"area_downsample of a constant image {c:.4f}",
                 rtol=1e-10, atol=1e-12, hint=CONSTANT_HINT)
    expect_close(parts["x"].mean((2, 3)), x.mean((2, 3)), what + ": the mean of each image and channel", rtol=1e-10,
                 atol=1e-12, hint=MEAN_HINT)
    expect_close(parts["mix"], parts["x"] + a * parts["y"], f"area_downsample(x + {a:.3f} y) against "
                 f"area_downsample(x) + {a:.3f} area_downsample(y)", rtol=1e-10, atol=1e-12,
                 hint="A mean is linear: average the pixels, nothing else (no clamping, no rounding, no abs).")
    expected = parts["x"] + case["blocks"]
    for (b, ch, i, j), change in zip(case["pixels"], d):
        expected[b, ch, i // f, j // f] += change / f ** 2
    changes = ", ".join(f"x[{b}, {ch}, {i}, {j}] += {change:.3f}" for (b, ch, i, j), change in zip(case["pixels"], d))
    expect_close(parts["bumped"], expected, f"area_downsample after adding P (h, w) repeated over each block and "
                 f"{changes}, against area_downsample(x) + P + each change / f^2 at its block", rtol=1e-10,
                 atol=1e-12, hint=LOCAL_HINT)


# --- 2 · conditioning augmentation ---------------------------------------------------------------------

def _schedule(spec):
    from lesson_lib.diffusion.schedules import NoiseSchedule
    return NoiseSchedule.from_name(*spec)


def _level(T, above_half=True, high=False):
    """A level s = (k0 + u) / T with k0 in 1..T - 2 (so 1 <= k <= T - 1: some noise, and k + 1 is a level too) and
    the fraction u in [0.6, 0.9] (round and floor differ) or in [0.1, 0.4] (they agree): never near a half-integer,
    where ways to round a tie differ. With ``high``, k0 >= 0.6 T: then s (T + 1), the level read with
    T = len(alpha_bars), rounds one step higher."""
    k0 = int(torch.randint(math.ceil(0.6 * T) if high else 1, T - 1, ()))
    u = float(torch.empty(()).uniform_(0.6, 0.9) if above_half else torch.empty(()).uniform_(0.1, 0.4))
    return (k0 + u) / T


def _levels(B, T, zero=False):
    """(B,) float64 levels: sample 1 with s T's fraction below one half and s >= 0.6, the others above one half,
    and with ``zero`` one of them other than sample 1, drawn, at s = 0."""
    levels = torch.tensor([_level(T, above_half=b != 1, high=b == 1) for b in range(B)], dtype=torch.float64)
    if zero:
        levels[_pick([b for b in range(B) if b != 1])] = 0.0
    return levels


def _augment_call(spec, shape, dtype, per_sample):
    alpha_bars = _schedule(spec).alpha_bars_with_0
    T = len(alpha_bars) - 1
    seed = int(torch.randint(0, 2 ** 31 - 1, ()))
    e = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    level = _levels(shape[0], T, zero=True) if per_sample else _level(T)
    return {"args": [torch.randn(shape, dtype=dtype), level, alpha_bars, e], "schedule": list(spec), "seed": seed}


def _augment_case():
    calls = []
    T_cosine = int(torch.randint(100, 400, ()))
    for spec, C, dtype, per_sample in ((("linear", 1000), 1, torch.float32, False),
                                       (("linear", 1000), 3, torch.float32, True),
                                       (("cosine", T_cosine), _pick([1, 3]), torch.float64, True)):
        h, w = int(torch.randint(7, 15, ())), int(torch.randint(7, 15, ()))
        calls.append(_augment_call(spec, (_batch_size(C, h, w), C, h, w), dtype, per_sample))
    return {"calls": calls}


def _augment_probe(ns, case):
    return [ns["augment"](*[a.clone() if hasattr(a, "clone") else a for a in c["args"]]) for c in case["calls"]]


def _col(values, x):
    return values.reshape(-1, *([1] * (x.ndim - 1)))


def _augment_mistakes(x, level, alpha_bars, e):
    """The usual wrong z's, float64, for x (B, ...), a level (number or (B,)) and the levels with alpha-bar_0."""
    T = len(alpha_bars) - 1
    s = torch.as_tensor(level, dtype=torch.float64).expand(x.shape[0])
    x, e = x.double(), e.double()
    k = torch.round(s * T).long()

    def z(index, form=lambda a: (a.sqrt(), (1 - a).sqrt())):
        scale, noise = form(_col(alpha_bars[index], x))
        return scale * x + noise * e
    return {"the variance-exploding form x_low + sqrt(1 - ab_k) e (x_low must be scaled by sqrt(ab_k))":
                z(k, lambda a: (torch.ones_like(a), (1 - a).sqrt())),
            "alpha_bars[k + 1], one step too far (alpha_bars[0] = 1 is the clean image, the level of k = 0)":
                z((k + 1).clamp(max=T)),
            "k = floor(s T) (int() and floor truncate; k is s T rounded to the nearest step)":
                z(torch.floor(s * T).long()),
            "sqrt(1 - ab_k) x_low + sqrt(ab_k) e, the two coefficients swapped":
                z(k, lambda a: ((1 - a).sqrt(), a.sqrt())),
            "ab_k x_low + (1 - ab_k) e, without the square roots": z(k, lambda a: (a, 1 - a)),
            "k = round(s len(alpha_bars)): alpha_bars holds T + 1 levels, alpha-bar_0 to alpha-bar_T":
                z(torch.round(s * (T + 1)).long().clamp(max=T))}


def _level_described(level):
    return f"{level:.5f}" if isinstance(level, float) else f"({len(level)},) tensor"


@check(points=2, uses=["augment"], case=_augment_case, probe=_augment_probe)
def augment_matches_the_library(case, answer):
    """augment is the library's sqrt(ab_k) x_low + sqrt(1 - ab_k) e, k = round(s T), for a number and a (B,) level."""
    from lesson_lib.diffusion.cascade import augment
    for c, got in pairs(case["calls"], answer):
        x, level, alpha_bars, e = c["args"]
        schedule = _schedule(c["schedule"])
        expected = augment(x, level, schedule, torch.Generator().manual_seed(c["seed"]))[0]
        what = (f"augment(x_low of {shape_of(x)}, level {_level_described(level)}, alpha_bars of the "
                f"{c['schedule'][0]} schedule with T = {len(alpha_bars) - 1}, e)")
        rtol, atol = (1e-5, 1e-5) if x.dtype == torch.float32 else (1e-10, 1e-12)
        expect_close(got, expected, what, rtol=rtol, atol=atol,
                     hint=naming(_named(_augment_mistakes(x, level, alpha_bars, e), got), AUG_HINT))


def _augment_properties_case():
    alpha_bars = _schedule(("linear", 1000)).alpha_bars_with_0
    C, h, w = _pick([1, 3]), int(torch.randint(7, 15, ())), int(torch.randint(7, 15, ()))
    B = _batch_size(C, h, w)
    v = float(torch.empty(()).uniform_(3, 6))
    return {"x": torch.randn(B, C, h, w), "e": torch.randn(B, C, h, w), "alpha_bars": alpha_bars,
            "v": v, "x_wide": math.sqrt(v) * torch.randn(N_VARIANCE), "e_fresh": torch.randn(N_VARIANCE),
            "s": round(float(torch.empty(()).uniform_(0.2, 0.6)), 3)}


def _augment_properties_probe(ns, case):
    f, ab = ns["augment"], case["alpha_bars"]
    return {"at_0": f(case["x"].clone(), 0.0, ab.clone(), case["e"].clone()),
            "wide": f(case["x_wide"].clone(), case["s"], ab.clone(), case["e_fresh"].clone())}


@check(points=1, uses=["augment"], case=_augment_properties_case, probe=_augment_properties_probe)
def augment_is_the_identity_at_0_and_preserves_variance(case, answer):
    """At s = 0 the student's z is x_low bit for bit; for Var(x_low) = v, Var(z) = ab_k v + 1 - ab_k (n = 49,152)."""
    x, alpha_bars, v, s = case["x"], case["alpha_bars"], case["v"], case["s"]
    got = field(answer, "at_0")
    what = f"augment(x_low of {shape_of(x)}, level 0.0, alpha_bars, e)"
    expect_tensor(got, what, shape=x.shape, dtype=x.dtype)
    if not torch.equal(got, x):
        expect_close(got, x, what + ", against x_low (bit for bit)", rtol=0, atol=0,
                     hint=naming(_named(_augment_mistakes(x, 0.0, alpha_bars, case["e"]), got), IDENTITY_HINT))
    got = field(answer, "wide")
    what = f"augment(x_low of {shape_of(case['x_wide'])} with variance {v:.3f}, level {s}, alpha_bars, fresh e)"
    expect_tensor(got, what, shape=case["x_wide"].shape, dtype=case["x_wide"].dtype)
    if not bool(torch.isfinite(got).all()):
        raise AssertionError(f"{what} contains NaN or inf. {VARIANCE_HINT}")
    a = float(alpha_bars[round(s * (len(alpha_bars) - 1))])
    want, n = a * v + 1 - a, got.numel()
    variance = float(got.double().var())
    tolerance = 5 * math.sqrt(2 / (n - 1)) * want
    if not abs(variance - want) <= tolerance:
        mistake = _named(_augment_mistakes(case["x_wide"], s, alpha_bars, case["e_fresh"]), got)
        raise AssertionError(f"{what}: the variance of z is {variance:.4f}, expected ab_k v + 1 - ab_k = {a:.4f} x "
                             f"{v:.3f} + {1 - a:.4f} = {want:.4f} within {tolerance:.4f} (five standard errors at "
                             f"n = {n}). {naming(mistake, VARIANCE_HINT)}")


def _per_sample_case():
    alpha_bars = _schedule(("linear", 1000)).alpha_bars_with_0
    B = int(torch.randint(3, 7, ()))
    C, h = _pick([1, 3]), int(torch.randint(7, 12, ()))
    shape = (B, C, h, B)                                   # the width equals the batch size: see the docstring
    levels = _levels(B, 1000, zero=True)
    return {"x": torch.randn(shape), "e": torch.randn(shape), "levels": levels, "alpha_bars": alpha_bars}


def _per_sample_probe(ns, case):
    f, x, e, levels, ab = ns["augment"], case["x"], case["e"], case["levels"], case["alpha_bars"]
    return {"batch": f(x.clone(), levels.clone(), ab.clone(), e.clone()),
            "each": [f(x[b:b + 1].clone(), float(levels[b]), ab.clone(), e[b:b + 1].clone()) for b in range(len(x))]}


@check(points=1, uses=["augment"], case=_per_sample_case, probe=_per_sample_probe)
def augment_reads_one_level_per_sample(case, answer):
    """With a (B,) level each sample of the student's z is its own z alone at its level; the s = 0 one is x_low."""
    x, e, levels, alpha_bars = case["x"], case["e"], case["levels"], case["alpha_bars"]
    B = x.shape[0]
    what = (f"augment(x_low of {shape_of(x)}, level = {[round(v, 4) for v in levels.tolist()]}, alpha_bars, e)")
    batch = field(answer, "batch")
    expect_tensor(batch, what, shape=x.shape, dtype=x.dtype)
    each = field(answer, "each")
    alone = []
    for b, got in pairs(list(range(B)), each):
        expect_tensor(got, f"augment(x_low[{b}:{b + 1}], level {float(levels[b]):.4f}, alpha_bars, e[{b}:{b + 1}])",
                      shape=(1, *x.shape[1:]), dtype=x.dtype)
        if not bool(torch.isfinite(got).all()):
            raise AssertionError(f"augment(x_low[{b}:{b + 1}], ...) contains NaN or inf. {AUG_HINT}")
        alone.append(got)
    zero = int((levels == 0).nonzero()[0])
    if not torch.equal(alone[zero], x[zero:zero + 1]):
        raise AssertionError(f"augment(x_low[{zero}:{zero + 1}], level 0.0, alpha_bars, e) is not x_low[{zero}:"
                             f"{zero + 1}]. {IDENTITY_HINT}")
    for b in range(B):
        if b != zero and torch.allclose(alone[b], x[b:b + 1]):
            raise AssertionError(f"augment(x_low[{b}:{b + 1}], level {float(levels[b]):.4f}, alpha_bars, e) returned "
                                 f"x_low unchanged: at s > 0 the noise e must be mixed in. {AUG_HINT}")
    along = None
    ab = alpha_bars[torch.round(levels * 1000).long()]       # (B,) against the last axis, whose size is B
    if torch.allclose(batch.double(), ab.sqrt() * x.double() + (1 - ab).sqrt() * e.double(), rtol=1e-4, atol=1e-5):
        along = "the levels multiplied along the last axis of x_low (a (B,) level broadcast against the width)"
    expect_close(batch, torch.cat(alone), what + ", against each sample augmented alone at its level", rtol=1e-5,
                 atol=1e-6, hint=naming(along, PER_SAMPLE_HINT))


# --- 3 · the SR network's input --------------------------------------------------------------------

def _sr_case():
    calls = []
    for (h, w), (fh, fw), C, dtype in (((14, 14), (2, 2), 1, torch.float32), ((8, 8), (4, 4), 3, torch.float32),
                                       ((int(torch.randint(4, 9, ())), int(torch.randint(4, 9, ()))),
                                        (_pick([2, 3]), _pick([2, 4])), _pick([1, 3]), torch.float64)):
        H, W = fh * h, fw * w
        B = _batch_size(C, h, w, H, W)
        calls.append([[torch.randn(B, C, H, W, dtype=dtype), torch.randn(B, C, h, w, dtype=dtype)], {}])
    return {"calls": calls}


def _sr_mistakes(x_t, z):
    size = tuple(x_t.shape[2:])
    x_t, z = x_t.double(), z.double()
    bilinear = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
    return {"nearest-neighbour upsampling (or repeat_interleave): blocks of equal pixels, not bilinear":
                torch.cat([x_t, F.interpolate(z, size=size, mode="nearest")], 1),
            "bilinear with align_corners=True (the corner pixels' centres aligned, not the half-pixel convention)":
                torch.cat([x_t, F.interpolate(z, size=size, mode="bilinear", align_corners=True)], 1),
            "the two parts in the other order: the upsampled z_low first, then x_t": torch.cat([bilinear, x_t], 1),
            "bicubic upsampling": torch.cat([x_t, F.interpolate(z, size=size, mode="bicubic", align_corners=False)], 1)}


def _sr_reference(x_t, z):
    from lesson_lib.diffusion.cascade import upsample
    return torch.cat([x_t, upsample(z, tuple(x_t.shape[2:]))], dim=1)


@check(points=2, uses=["sr_model_input"], case=_sr_case, probe=call_each("sr_model_input"))
def sr_model_input_matches_the_library(case, answer):
    """sr_model_input is torch.cat([x_t, upsample(z_low)], dim=1), the SR U-Net's input: 14 -> 28, 8 -> 32, others."""
    for (args, _), got in pairs(case["calls"], answer):
        x_t, z = args
        what = f"sr_model_input(x_t of {shape_of(x_t)}, z_low of shape {tuple(z.shape)})"
        expected = _sr_reference(x_t, z)
        if type(got) is torch.Tensor and got.ndim == 4 and got.shape[1] == x_t.shape[1] and \
                got.shape != expected.shape:
            raise AssertionError(f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}: the two "
                                 f"parts are stacked along the channels, dim 1. {SR_HINT}")
        rtol, atol = tolerance(x_t)
        expect_close(got, expected, what, rtol=rtol, atol=atol, hint=naming(_named(_sr_mistakes(x_t, z), got), SR_HINT))


def _sr_properties_case():
    C_x, C_low = _pick([(1, 3), (3, 1), (2, 3)])
    h, w, f = int(torch.randint(4, 9, ())), int(torch.randint(4, 9, ())), _pick([2, 3, 4])
    B = _batch_size(C_x, C_low, h, w, f * h, f * w)
    return {"x_t": torch.randn(B, C_x, f * h, f * w, dtype=torch.float64),
            "x_t2": torch.randn(B, C_x, f * h, f * w, dtype=torch.float64),
            "z": 0.5 + torch.randn(B, C_low, h, w, dtype=torch.float64),
            "c": float(torch.empty(()).uniform_(-2, 2))}


def _sr_properties_probe(ns, case):
    f, x_t, x_t2, z = ns["sr_model_input"], case["x_t"], case["x_t2"], case["z"]
    return {"input": f(x_t.clone(), z.clone()), "other_x_t": f(x_t2.clone(), z.clone()),
            "constant": f(x_t.clone(), torch.full_like(z, case["c"]))}


@check(points=1, uses=["sr_model_input"], case=_sr_properties_case, probe=_sr_properties_probe)
def sr_model_input_is_x_t_then_the_upsampled_image(case, answer):
    """C_x + C_low channels: x_t's bit for bit, then z_low's upsampled alone, keeping constants and channel means."""
    x_t, z, c = case["x_t"], case["z"], case["c"]
    B, C_x, H, W = x_t.shape
    C_low = z.shape[1]
    what = f"sr_model_input(x_t of {shape_of(x_t)}, z_low of shape {tuple(z.shape)})"
    parts = {}
    for key in ("input", "other_x_t", "constant"):
        parts[key] = field(answer, key)
        expect_tensor(parts[key], what, dtype=x_t.dtype)
        if tuple(parts[key].shape) != (B, C_x + C_low, H, W):
            raise AssertionError(f"{what} has shape {tuple(parts[key].shape)}, expected {(B, C_x + C_low, H, W)}: "
                                 f"C_x + C_low = {C_x} + {C_low} channels. {SR_PARTS_HINT}")
        if not bool(torch.isfinite(parts[key]).all()):
            raise AssertionError(f"{what} contains NaN or inf. {SR_HINT}")
    got = parts["input"]
    if not torch.equal(got[:, :C_x], x_t):
        mistake = "the upsampled z_low first" if torch.equal(got[:, C_low:], x_t) else None
        expect_close(got[:, :C_x], x_t, what + f"[:, :{C_x}], against x_t (bit for bit)", rtol=0, atol=0,
                     hint=naming(mistake, SR_PARTS_HINT))
    if not torch.equal(got[:, C_x:], parts["other_x_t"][:, C_x:]):
        raise AssertionError(f"{what}[:, {C_x}:] changed when only x_t changed: the upsampled part must be made from "
                             f"z_low alone. {SR_PARTS_HINT}")
    expect_close(parts["constant"][:, C_x:], torch.full((B, C_low, H, W), c, dtype=x_t.dtype),
                 f"sr_model_input(x_t, a constant z_low {c:.4f})[:, {C_x}:]", rtol=1e-10, atol=1e-12,
                 hint=SR_MEAN_HINT)
    expect_close(got[:, C_x:].mean((2, 3)), z.mean((2, 3)), what + f"[:, {C_x}:], the mean of each channel, against "
                 f"z_low's", rtol=1e-10, atol=1e-12, hint=SR_MEAN_HINT)
