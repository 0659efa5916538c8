"""Checks for lesson 1, the forward process (solutions/01_forward_process.ipynb).

Each check calls the student's function on fixed random inputs and edge cases and compares
the result with lesson_lib's reference implementation. The grader seeds torch before each
check, so the inputs are the same for every submission. Total: 10 points.
"""

import torch

from lesson_lib.diffusion import forward
from lesson_lib.course.checks import check, expect_close, expect_tensor
from lesson_lib.diffusion.schedules import NoiseSchedule, cosine_beta_schedule, linear_beta_schedule

INDEX_HINT = "Code index t is the paper's t+1: alpha_bars[t] is alpha-bar_{t+1}."


def _call(args, kwargs=None):
    """``(1000, s=0.02)`` -> ``"1000, s=0.02"``, to name a call in a message."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
    return ", ".join(parts)


@check(points=1, uses=["linear_betas"])
def linear_betas_matches_reference(ns):
    """linear_betas matches the linear schedule of Ho et al. (T = 1000, 10, 1, other ranges)."""
    linear_betas = ns["linear_betas"]
    for args in [(1000,), (10,), (1,), (50, 1e-3, 0.05)]:
        expect_close(linear_betas(*args), linear_beta_schedule(*args), f"linear_betas({_call(args)})",
                     hint="beta_1 must be beta_start and beta_T beta_end, spaced evenly, in float64.")


@check(points=1, uses=["cosine_betas"])
def cosine_betas_matches_reference(ns):
    """cosine_betas matches Nichol & Dhariwal's Eq. 17 (T = 1000, 10; another offset s)."""
    cosine_betas = ns["cosine_betas"]
    hint = ("Eq. 17: alpha_bar(t) = f(t) / f(0) with f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2) for "
            "t = 0..T, then beta_t = 1 - alpha_bar(t) / alpha_bar(t-1); compute in float64.")
    for args, kwargs in [((1000,), {}), ((10,), {}), ((100,), {"s": 0.02})]:
        expect_close(cosine_betas(*args, **kwargs), cosine_beta_schedule(*args, **kwargs),
                     f"cosine_betas({_call(args, kwargs)})", rtol=1e-6, atol=1e-10, hint=hint)


@check(points=1, uses=["cosine_betas"])
def cosine_betas_clips_at_max_beta(ns):
    """cosine_betas clips beta_t at max_beta (0.999 by default; T = 1; a lower max_beta)."""
    cosine_betas = ns["cosine_betas"]
    hint = ("alpha_bar reaches 0 at t = T, so the last beta is 1 before clipping: "
            "clip every beta to at most max_beta.")
    betas = cosine_betas(1000)
    expect_tensor(betas, "cosine_betas(1000)", shape=(1000,))
    if not torch.isfinite(betas).all():
        raise AssertionError(f"cosine_betas(1000) contains NaN or inf. {hint}")
    if betas.max() > 0.999 + 1e-12:
        raise AssertionError(f"cosine_betas(1000) has a beta of {betas.max().item():.6g} > max_beta = 0.999. "
                             f"{hint}")
    for args, kwargs in [((1,), {}), ((1000,), {}), ((100,), {"max_beta": 0.5})]:
        expect_close(cosine_betas(*args, **kwargs), cosine_beta_schedule(*args, **kwargs),
                     f"cosine_betas({_call(args, kwargs)})", rtol=1e-6, atol=1e-10, hint=hint)


@check(points=1, uses=["alpha_bars_from_betas"])
def alpha_bars_are_cumulative_product(ns):
    """alpha_bars_from_betas returns prod_{s<=t} (1 - beta_s) without modifying betas."""
    alpha_bars_from_betas = ns["alpha_bars_from_betas"]
    hint = "alpha-bar_t = prod_{s<=t} alpha_s with alpha_s = 1 - beta_s (Ho et al., Eq. 4)."
    for betas in [0.05 * torch.rand(37, dtype=torch.float64) + 1e-4,
                  linear_beta_schedule(1000), torch.tensor([0.3], dtype=torch.float64)]:
        given = betas.clone()
        what = f"alpha_bars_from_betas(betas) for {betas.numel()} betas"
        expect_close(alpha_bars_from_betas(given), NoiseSchedule(betas).alpha_bars, what,
                     rtol=1e-10, hint=hint)
        if not torch.equal(given, betas):
            raise AssertionError("alpha_bars_from_betas changed its input betas in place; "
                                 "compute a new tensor instead (avoid in-place ops like betas.mul_).")


def _q_sample_case(ns, x0, t, hint):
    schedule = NoiseSchedule.linear(1000)
    eps = torch.randn_like(x0)
    expected = forward.q_sample(schedule, x0, t, eps)
    what = f"q_sample for x0 of shape {tuple(x0.shape)} and t = {t.tolist()}"
    got = ns["q_sample"](x0.clone(), t.clone(), schedule.alpha_bars.clone(), eps.clone())
    expect_tensor(got, what, shape=x0.shape)
    if got.dtype != x0.dtype:
        raise AssertionError(f"{what} has dtype {got.dtype}, but x0 is {x0.dtype}: cast the "
                             f"coefficients to x0's dtype (alpha_bars is float64)")
    shifted = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bars[:-1]])
    shape = (-1,) + (1,) * (x0.ndim - 1)
    off_by_one = shifted.sqrt()[t].to(x0.dtype).view(shape) * x0 + \
        (1 - shifted).sqrt()[t].to(x0.dtype).view(shape) * eps
    if torch.allclose(got, off_by_one, atol=1e-6) and not torch.allclose(got, expected, atol=1e-6):
        raise AssertionError(f"{what} uses alpha-bar of the previous step. {INDEX_HINT}")
    expect_close(got, expected, what, rtol=1e-5, atol=1e-6, hint=hint)


@check(points=2, uses=["q_sample"])
def q_sample_matches_equation_4(ns):
    """q_sample computes sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps (Ho Eq. 4), t = 0..T-1."""
    hint = f"x_t = sqrt(alpha_bars[t]) * x0 + sqrt(1 - alpha_bars[t]) * eps, one t per example. {INDEX_HINT}"
    t = torch.tensor([0, 999, 1, 500, 250, 998])
    _q_sample_case(ns, torch.randn(6, 2), t, hint)
    _q_sample_case(ns, torch.randn(5, 2), torch.randint(0, 1000, (5,)), hint)


@check(points=1, uses=["q_sample"])
def q_sample_broadcasts_over_images(ns):
    """q_sample works for image-shaped x0 (B, C, H, W): one coefficient per example."""
    hint = ("Reshape alpha_bars[t] to (B, 1, 1, 1) (one value per example, e.g. "
            ".view(-1, *[1] * (x0.ndim - 1))) so that it broadcasts over every other dimension.")
    _q_sample_case(ns, torch.randn(5, 3, 8, 8), torch.tensor([0, 999, 3, 700, 42]), hint)
    _q_sample_case(ns, torch.randn(1, 1, 4, 4), torch.tensor([10]), hint)


def _posterior_case(ns, x0, x_t, t, hint):
    schedule = NoiseSchedule.linear(1000)
    mean, variance, _ = forward.q_posterior(schedule, x0, x_t, t)
    what = f"posterior_mean_variance for t = {t.tolist()}"
    out = ns["posterior_mean_variance"](x0.clone(), x_t.clone(), t.clone(),
                                        schedule.betas.clone(), schedule.alpha_bars.clone())
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise AssertionError(f"{what} must return a pair (mean, variance), got {type(out).__name__}")
    got_mean, got_variance = out
    expect_close(got_mean, mean, f"the mean from {what}", rtol=1e-5, atol=1e-6, hint=hint)
    expect_tensor(got_variance, f"the variance from {what}")
    try:
        got_variance = torch.broadcast_to(got_variance, x0.shape)
    except RuntimeError:
        raise AssertionError(f"the variance from {what} has shape {tuple(got_variance.shape)}, which "
                             f"does not broadcast against x0 of shape {tuple(x0.shape)}; return one "
                             f"value per example shaped (B, 1, ...)") from None
    expect_close(got_variance, torch.broadcast_to(variance, x0.shape), f"the variance from {what}",
                 rtol=1e-5, atol=1e-10, hint=hint, check_dtype=False)


@check(points=2, uses=["posterior_mean_variance"])
def posterior_matches_equations_6_7(ns):
    """posterior_mean_variance returns mu-tilde_t and beta-tilde_t of Ho Eqs. 6-7 (t >= 1)."""
    hint = ("Eq. 7: mu-tilde = sqrt(alpha-bar_{t-1}) beta_t / (1 - alpha-bar_t) x0 + "
            "sqrt(alpha_t) (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) x_t and beta-tilde = "
            f"(1 - alpha-bar_{{t-1}}) / (1 - alpha-bar_t) beta_t. {INDEX_HINT}")
    t = torch.tensor([1, 2, 500, 999, 998, 10])
    _posterior_case(ns, torch.randn(6, 2), torch.randn(6, 2), t, hint)
    _posterior_case(ns, torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.tensor([7, 999, 1]), hint)


@check(points=1, uses=["posterior_mean_variance"])
def posterior_at_first_step(ns):
    """At code t = 0 (paper's t = 1) the posterior mean is x0 and the variance is 0."""
    hint = ("At code t = 0 the previous alpha-bar is alpha-bar_0 = 1, not alpha_bars[-1] (Python "
            "wraps index -1 around to the last entry): prepend a 1 to alpha_bars.")
    x0, x_t = torch.randn(4, 1, 5, 5), torch.randn(4, 1, 5, 5)
    _posterior_case(ns, x0, x_t, torch.zeros(4, dtype=torch.long), hint)
    _posterior_case(ns, x0, x_t, torch.tensor([0, 999, 0, 3]), hint)
