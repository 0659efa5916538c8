"""Checks for lesson 1, the forward process (solutions/01_forward_process.ipynb).

Each check draws its inputs in the grader (``case``), calls the student's function on them in
the worker (``probe``) and compares the answers with lesson_lib's reference implementation in
the grader (the judge). Sizes and timesteps are partly random, drawn from the run's seed, and
always include the edge cases (T = 1, the first and last timestep). Total: 12 points.
"""

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import (call_described, call_each, expect_close, expect_number,
                                              expect_tensor, field, pairs)
from lesson_lib.course.protocol import type_name

INDEX_HINT = "Code index t is the paper's t+1: alpha_bars[t] is alpha-bar_{t+1}."


def _random_T():
    return int(torch.randint(2, 1500, ()))


def _linear_case():
    return {"calls": [[[1000], {}], [[10], {}], [[1], {}], [[50, 1e-3, 0.05], {}], [[_random_T()], {}]]}


@check(points=1, uses=["linear_betas"], case=_linear_case, probe=call_each("linear_betas"))
def linear_betas_matches_reference(case, answer):
    """linear_betas matches the linear schedule of Ho et al. (T = 1000, 10, 1, other ranges)."""
    from lesson_lib.diffusion.schedules import linear_beta_schedule
    for (args, kwargs), got in pairs(case["calls"], answer):
        expect_close(got, linear_beta_schedule(*args), f"linear_betas({call_described(args)})",
                     hint="beta_1 must be beta_start and beta_T beta_end, spaced evenly, in float64.")


def _cosine_case():
    return {"calls": [[[1000], {}], [[10], {}], [[100], {"s": 0.02}], [[_random_T()], {}]]}


def _unclipped(args, kwargs):
    """The entries of cosine_beta_schedule(*args, **kwargs) that clipping leaves alone."""
    from lesson_lib.diffusion.schedules import cosine_beta_schedule
    betas = cosine_beta_schedule(*args, **kwargs)
    return betas, betas < kwargs.get("max_beta", 0.999)


@check(points=1, uses=["cosine_betas"], case=_cosine_case, probe=call_each("cosine_betas"))
def cosine_betas_matches_reference(case, answer):
    """cosine_betas matches Nichol & Dhariwal's Eq. 17 (T = 1000, 10; another offset s), where it is not clipped."""
    hint = ("Eq. 17: alpha_bar(t) = f(t) / f(0) with f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2) for "
            "t = 0..T, then beta_t = 1 - alpha_bar(t) / alpha_bar(t-1); compute in float64.")
    for (args, kwargs), got in pairs(case["calls"], answer):
        expected, free = _unclipped(args, kwargs)
        what = f"cosine_betas({call_described(args, kwargs)})"
        expect_tensor(got, what, shape=expected.shape, dtype=expected.dtype)
        expect_close(got[free], expected[free], f"{what} (the entries below max_beta)", rtol=1e-6, atol=1e-10,
                     hint=hint)


def _clip_case():
    return {"calls": [[[1000], {}], [[1], {}], [[100], {"max_beta": 0.5}], [[_random_T()], {"max_beta": 0.9}]]}


@check(points=1, uses=["cosine_betas"], case=_clip_case, probe=call_each("cosine_betas"))
def cosine_betas_clips_at_max_beta(case, answer):
    """cosine_betas clips beta_t at max_beta (0.999 by default; T = 1; a lower max_beta): the betas Eq. 17 puts above it are max_beta."""
    hint = ("alpha_bar reaches 0 at t = T, so the last beta is 1 before clipping: clip every beta to at most "
            "max_beta (and leave the others as they are).")
    for (args, kwargs), got in pairs(case["calls"], answer):
        expected, free = _unclipped(args, kwargs)
        what = f"cosine_betas({call_described(args, kwargs)})"
        expect_tensor(got, what, shape=expected.shape, dtype=expected.dtype)
        max_beta = kwargs.get("max_beta", 0.999)
        if not torch.isfinite(got).all() or got.max() > max_beta + 1e-12:
            raise AssertionError(f"{what} has a beta of {got.max().item():.6g} > max_beta = {max_beta}. {hint}")
        expect_close(got[~free], expected[~free], f"{what} where Eq. 17 exceeds max_beta", rtol=1e-9, atol=1e-12,
                     hint=hint)


def _alpha_bars_case():
    from lesson_lib.diffusion.schedules import linear_beta_schedule
    return {"betas": [0.05 * torch.rand(int(torch.randint(20, 60, ())), dtype=torch.float64) + 1e-4,
                      linear_beta_schedule(1000), torch.tensor([0.3], dtype=torch.float64)]}


def _alpha_bars_probe(ns, case):
    answers = []
    for betas in case["betas"]:
        given = betas.clone()
        answers.append({"out": ns["alpha_bars_from_betas"](given), "given_after": given})
    return answers


@check(points=1, uses=["alpha_bars_from_betas"], case=_alpha_bars_case, probe=_alpha_bars_probe)
def alpha_bars_are_cumulative_product(case, answer):
    """alpha_bars_from_betas returns prod_{s<=t} (1 - beta_s) without modifying betas."""
    from lesson_lib.diffusion.schedules import NoiseSchedule
    hint = "alpha-bar_t = prod_{s<=t} alpha_s with alpha_s = 1 - beta_s (Ho et al., Eq. 4)."
    for betas, got in pairs(case["betas"], answer):
        what = f"alpha_bars_from_betas(betas) for {betas.numel()} betas"
        expect_close(field(got, "out"), NoiseSchedule(betas).alpha_bars, what, rtol=1e-10, hint=hint)
        given = field(got, "given_after")
        expect_tensor(given, "the betas after the call", shape=betas.shape)
        if not torch.equal(given, betas):
            raise AssertionError("alpha_bars_from_betas changed its input betas in place; "
                                 "compute a new tensor instead (avoid in-place ops like betas.mul_).")


# --- q_sample -----------------------------------------------------------------------------

def _q_sample_case(shapes_and_ts):
    from lesson_lib.diffusion.schedules import NoiseSchedule
    schedule = NoiseSchedule.linear(1000)
    examples = []
    for shape, t in shapes_and_ts:
        x0 = torch.randn(shape)
        examples.append({"x0": x0, "t": t, "eps": torch.randn_like(x0)})
    return {"alpha_bars": schedule.alpha_bars, "examples": examples}


def _q_sample_probe(ns, case):
    return [ns["q_sample"](e["x0"].clone(), e["t"].clone(), case["alpha_bars"].clone(), e["eps"].clone())
            for e in case["examples"]]


def _q_sample_judge(case, answer, hint):
    from lesson_lib.diffusion import forward
    from lesson_lib.diffusion.schedules import NoiseSchedule
    schedule = NoiseSchedule.linear(1000)
    for example, got in pairs(case["examples"], answer):
        x0, t, eps = example["x0"], example["t"], example["eps"]
        expected = forward.q_sample(schedule, x0, t, eps)
        what = f"q_sample for x0 of shape {tuple(x0.shape)} and t = {t.tolist()}"
        expect_tensor(got, what, shape=x0.shape)
        if got.dtype != x0.dtype:
            raise AssertionError(f"{what} has dtype {got.dtype}, but x0 is {x0.dtype}: cast the "
                                 f"coefficients to x0's dtype (alpha_bars is float64)")
        shifted = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bars[:-1]])
        shape = (-1,) + (1,) * (x0.ndim - 1)
        off_by_one = shifted.sqrt()[t].to(x0.dtype).view(shape) * x0 + \
            (1 - shifted).sqrt()[t].to(x0.dtype).view(shape) * eps
        if torch.allclose(got, off_by_one, atol=1e-5) and not torch.allclose(got, expected, atol=1e-5):
            raise AssertionError(f"{what} uses alpha-bar of the previous step. {INDEX_HINT}")
        expect_close(got, expected, what, rtol=1e-4, atol=1e-5, hint=hint)  # float32 arithmetic is fine


Q_SAMPLE_HINT = f"x_t = sqrt(alpha_bars[t]) * x0 + sqrt(1 - alpha_bars[t]) * eps, one t per example. {INDEX_HINT}"


@check(points=2, uses=["q_sample"], probe=_q_sample_probe,
       case=lambda: _q_sample_case([((6, 2), torch.tensor([0, 999, 1, 500, 250, 998])),
                                    ((5, 2), torch.randint(0, 1000, (5,)))]))
def q_sample_matches_equation_4(case, answer):
    """q_sample computes sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps (Ho Eq. 4), t = 0..T-1."""
    _q_sample_judge(case, answer, Q_SAMPLE_HINT)


@check(points=1, uses=["q_sample"], probe=_q_sample_probe,
       case=lambda: _q_sample_case([((5, 3, 8, 8), torch.tensor([0, 999, 3, 700, 42])),
                                    ((1, 1, 4, 4), torch.randint(0, 1000, (1,)))]))
def q_sample_broadcasts_over_images(case, answer):
    """q_sample works for image-shaped x0 (B, C, H, W): one coefficient per example."""
    _q_sample_judge(case, answer, "Reshape alpha_bars[t] to (B, 1, 1, 1) (one value per example, e.g. "
                    ".view(-1, *[1] * (x0.ndim - 1))) so that it broadcasts over every other dimension.")


# --- the posterior ------------------------------------------------------------------------

def _posterior_case(shapes_and_ts):
    from lesson_lib.diffusion.schedules import NoiseSchedule
    schedule = NoiseSchedule.linear(1000)
    examples = [{"x0": torch.randn(shape), "x_t": torch.randn(shape), "t": t} for shape, t in shapes_and_ts]
    return {"betas": schedule.betas, "alpha_bars": schedule.alpha_bars, "examples": examples}


def _posterior_probe(ns, case):
    return [ns["posterior_mean_variance"](e["x0"].clone(), e["x_t"].clone(), e["t"].clone(),
                                          case["betas"].clone(), case["alpha_bars"].clone())
            for e in case["examples"]]


def _posterior_judge(case, answer, hint):
    from lesson_lib.diffusion import forward
    from lesson_lib.diffusion.schedules import NoiseSchedule
    schedule = NoiseSchedule.linear(1000)
    for example, out in pairs(case["examples"], answer):
        x0, x_t, t = example["x0"], example["x_t"], example["t"]
        mean, variance, _ = forward.q_posterior(schedule, x0, x_t, t)
        what = f"posterior_mean_variance for t = {t.tolist()}"
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise AssertionError(f"{what} must return a pair (mean, variance), got {type(out).__name__}")
        got_mean, got_variance = out
        expect_close(got_mean, mean, f"the mean from {what}", rtol=1e-4, atol=1e-5, hint=hint)
        expect_tensor(got_variance, f"the variance from {what}")
        try:
            got_variance = torch.broadcast_to(got_variance, x0.shape)
        except RuntimeError:
            raise AssertionError(f"the variance from {what} has shape {tuple(got_variance.shape)}, which "
                                 f"does not broadcast against x0 of shape {tuple(x0.shape)}; return one "
                                 f"value per example shaped (B, 1, ...)") from None
        expect_close(got_variance, torch.broadcast_to(variance, x0.shape), f"the variance from {what}",
                     rtol=1e-5, atol=1e-10, hint=hint, check_dtype=False)


@check(points=2, uses=["posterior_mean_variance"], probe=_posterior_probe,
       case=lambda: _posterior_case([((6, 2), torch.tensor([1, 2, 500, 999, 998, 10])),
                                     ((3, 2, 4, 4), torch.cat([torch.tensor([999, 1]),
                                                               torch.randint(1, 1000, (1,))]))]))
def posterior_matches_equations_6_7(case, answer):
    """posterior_mean_variance returns mu-tilde_t and beta-tilde_t of Ho Eqs. 6-7 (t >= 1)."""
    _posterior_judge(case, answer, (
        "Eq. 7: mu-tilde = sqrt(alpha-bar_{t-1}) beta_t / (1 - alpha-bar_t) x0 + "
        "sqrt(alpha_t) (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) x_t and beta-tilde = "
        f"(1 - alpha-bar_{{t-1}}) / (1 - alpha-bar_t) beta_t. {INDEX_HINT}"))


@check(points=1, uses=["posterior_mean_variance"], probe=_posterior_probe,
       case=lambda: _posterior_case([((4, 1, 5, 5), torch.zeros(4, dtype=torch.long)),
                                     ((4, 1, 5, 5), torch.tensor([0, 999, 0, 3]))]))
def posterior_at_first_step(case, answer):
    """At code t = 0 (paper's t = 1) the posterior mean is x0 and the variance is 0."""
    _posterior_judge(case, answer, (
        "At code t = 0 the previous alpha-bar is alpha-bar_0 = 1, not alpha_bars[-1] (Python "
        "wraps index -1 around to the last entry): prepend a 1 to alpha_bars."))


# --- a question: which schedule keeps more of the signal ------------------------------------

def _signal_case():
    """t = 500 (the notebook's question), a t near the end (where the linear schedule keeps
    more) and one anywhere else: a fixed answer cannot fit all three."""
    return {"ts": [500, int(torch.randint(995, 1000, ())), int(torch.randint(1, 995, ()))]}


def _signal_probe(ns, case):
    return [ns["signal_left"](t) for t in case["ts"]]


@check(points=2, uses=["signal_left"], case=_signal_case, probe=_signal_probe)
def signal_left_measures_both_schedules(case, answer):
    """signal_left(t) measures alpha-bar_t of both schedules (T = 1000) and names the one that keeps more."""
    from lesson_lib.diffusion.schedules import NoiseSchedule
    linear, cosine = NoiseSchedule.linear(1000).alpha_bars, NoiseSchedule.cosine(1000).alpha_bars
    for t, got in pairs(case["ts"], answer):
        what = f"signal_left({t})"
        if not isinstance(got, dict):
            raise AssertionError(f"{what} returned {type_name(got)}, expected a dict with the keys "
                                 f"'linear', 'cosine' and 'more'")
        for name, reference in (("linear", linear), ("cosine", cosine)):
            expected = reference[t].item()
            expect_number(field(got, name), expected, f"{what}[{name!r}]", rtol=1e-6, atol=1e-12,
                          hint=f"It must be alpha-bar_t of the {name} schedule at code t = {t}. {INDEX_HINT}")
        more = "linear" if linear[t] > cosine[t] else "cosine"
        if field(got, "more") != more:
            raise AssertionError(f"{what}['more'] = {_shown(field(got, 'more'))}, but at t = {t} the "
                                 f"{more} schedule keeps more signal: compare the two numbers you measured")


def _shown(value):
    """A short printable form of a student's answer for a message."""
    return repr(value)[:40] if isinstance(value, str) else f"a {type_name(value)}"
