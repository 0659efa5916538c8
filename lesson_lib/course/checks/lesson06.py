"""Checks for lesson 6, fewer steps without retraining (solutions/06_fast_sampling.ipynb).

``ddim_update`` is compared with :func:`lesson_lib.diffusion.steps.ddim_step` (Song et al., 2021,
Eq. 12) for eta = 0, 0.5 and 1, on images and 2-D points, including the last step to alpha-bar = 1.
``respaced_betas`` must give the betas of the respaced chain, beta_{tau_i} = 1 - alpha-bar_{tau_i} /
alpha-bar_{tau_{i-1}} (Nichol & Dhariwal 2021, Sec. 4), whose cumulative product returns the
original alpha-bars on the sub-sequence. ``slerp`` is compared with
:func:`lesson_lib.diffusion.inversion.slerp`. ``lerp_midpoint_norm`` must predict the norm of the
midpoint of two independent N(0, I) vectors in d dimensions, sqrt(d / 2). Total: 10 points.
"""

import math

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import as_number, expect_close, pairs

DDIM_HINT = ("x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t); sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) "
             "sqrt(1 - ab_t / ab_s); x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps + sigma noise, with "
             "each (B,) alpha-bar reshaped to (B, 1, ..., 1).")
RESPACE_HINT = ("beta of the step into tau_i is 1 - alpha_bar[tau_i] / alpha_bar[tau_(i-1)], and 1 - alpha_bar[tau_1] "
                "for the first one: the new chain must reach the same alpha-bar at every kept timestep.")
SLERP_HINT = ("theta = arccos(<z1, z2> / (|z1| |z2|)) per example over all dimensions but the first; "
              "z = sin((1 - alpha) theta) / sin(theta) z1 + sin(alpha theta) / sin(theta) z2.")


# --- one DDIM step ------------------------------------------------------------------------

def _ddim_case():
    from lesson_lib.diffusion.schedules import NoiseSchedule
    schedule = NoiseSchedule.linear(1000)
    ab = schedule.alpha_bars_with_0
    examples = []
    for shape, dtype, eta, t, s in [((4, 1, 5, 5), torch.float32, 0.0, 999, 899), ((6, 2), torch.float64, 1.0, 500, 250),
                                    ((3, 3, 4, 4), torch.float32, 0.5, 300, 0), ((5, 2), torch.float64, 0.0, 111, -1)]:
        B = shape[0]
        ts = torch.randint(max(s + 1, 1), 1000, (B,))
        ts[0] = t
        ss = torch.full((B,), s)
        examples.append({"x_t": torch.randn(shape, dtype=dtype), "eps": torch.randn(shape, dtype=dtype),
                         "noise": torch.randn(shape, dtype=dtype), "eta": eta, "t": ts, "s": ss,
                         "alpha_bar_t": ab[ts + 1], "alpha_bar_s": ab[ss + 1]})
    return {"examples": examples}


def _ddim_probe(ns, case):
    return [ns["ddim_update"](e["x_t"].clone(), e["eps"].clone(), e["alpha_bar_t"].clone(), e["alpha_bar_s"].clone(),
                              e["eta"], e["noise"].clone()) for e in case["examples"]]


@check(points=3, uses=["ddim_update"], case=_ddim_case, probe=_ddim_probe)
def ddim_update_is_eq_12(case, answer):
    """ddim_update is Song et al.'s Eq. 12 for eta = 0, 0.5, 1, on images and points, also to alpha-bar = 1."""
    from lesson_lib.diffusion.denoiser import Prediction
    from lesson_lib.diffusion.schedules import NoiseSchedule
    from lesson_lib.diffusion.steps import ddim_step
    schedule = NoiseSchedule.linear(1000)
    for e, got in pairs(case["examples"], answer):
        shape = (-1,) + (1,) * (e["x_t"].ndim - 1)
        ab = e["alpha_bar_t"].reshape(shape).to(e["x_t"].dtype)
        x0 = (e["x_t"] - (1 - ab).sqrt() * e["eps"]) / ab.sqrt()
        expected = ddim_step(schedule, e["x_t"], e["t"], e["s"], Prediction(x0, e["eps"]), e["noise"], eta=e["eta"])
        expect_close(got, expected, f"ddim_update for x_t of shape {tuple(e['x_t'].shape)}, eta = {e['eta']}, "
                     f"alpha-bar_s = {float(e['alpha_bar_s'][0]):.4g}", rtol=1e-4, atol=1e-5, hint=DDIM_HINT)


# --- respacing ----------------------------------------------------------------------------

def _respace_case():
    from lesson_lib.diffusion.schedules import NoiseSchedule
    calls = []
    for schedule, taus in [(NoiseSchedule.linear(1000), [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]),
                           (NoiseSchedule.cosine(1000), [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]),
                           (NoiseSchedule.linear(50), sorted(torch.randperm(50)[:7].tolist()))]:
        calls.append({"alpha_bars": schedule.alpha_bars.clone(), "timesteps": taus})
    return {"calls": calls}


def _respace_probe(ns, case):
    return [ns["respaced_betas"](c["alpha_bars"].clone(), list(c["timesteps"])) for c in case["calls"]]


@check(points=3, uses=["respaced_betas"], case=_respace_case, probe=_respace_probe)
def respaced_betas_keep_the_alpha_bars(case, answer):
    """respaced_betas gives 1 - ab[tau_i] / ab[tau_(i-1)]: its chain has the same alpha-bars on the kept steps."""
    for c, got in pairs(case["calls"], answer):
        ab = c["alpha_bars"][c["timesteps"]]
        previous = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
        expect_close(got, 1 - ab / previous, f"respaced_betas for the timesteps {c['timesteps'][:4]}...",
                     rtol=1e-6, atol=1e-9, hint=RESPACE_HINT, check_dtype=False)


# --- slerp --------------------------------------------------------------------------------

def _slerp_case():
    examples = []
    for shape, alpha in [((4, 1, 6, 6), 0.0), ((4, 1, 6, 6), 1.0), ((3, 784), 0.5), ((5, 3, 4, 4), 0.3),
                         ((2, 2), float(torch.rand(())))]:
        examples.append({"z1": torch.randn(shape, dtype=torch.float64), "z2": torch.randn(shape, dtype=torch.float64),
                         "alpha": alpha})
    return {"examples": examples}


def _slerp_probe(ns, case):
    return [ns["slerp"](e["z1"].clone(), e["z2"].clone(), e["alpha"]) for e in case["examples"]]


@check(points=2, uses=["slerp"], case=_slerp_case, probe=_slerp_probe)
def slerp_follows_the_great_circle(case, answer):
    """slerp is the spherical interpolation of DDIM's code, per example, endpoints included."""
    from lesson_lib.diffusion.inversion import slerp
    for e, got in pairs(case["examples"], answer):
        expect_close(got, slerp(e["z1"], e["z2"], e["alpha"]), f"slerp of shape {tuple(e['z1'].shape)} at "
                     f"alpha = {e['alpha']:.3g}", rtol=1e-6, atol=1e-8, hint=SLERP_HINT, check_dtype=False)


# --- a prediction -------------------------------------------------------------------------

def _norm_case():
    """MNIST's and CIFAR-10's sizes, and two drawn ones (a table of answers cannot fit them)."""
    return {"dims": [784, 3072, int(torch.randint(2, 100, ())), int(torch.randint(1000, 50_000, ()))]}


def _norm_probe(ns, case):
    return [ns["lerp_midpoint_norm"](d) for d in case["dims"]]


@check(points=2, uses=["lerp_midpoint_norm"], case=_norm_case, probe=_norm_probe)
def lerp_midpoint_norm_is_sqrt_d_over_2(case, answer):
    """lerp_midpoint_norm(d) predicts the norm of (z1 + z2) / 2 for z1, z2 ~ N(0, I_d): about sqrt(d / 2)."""
    for d, got in pairs(case["dims"], answer):
        got = as_number(got, f"lerp_midpoint_norm({d})")
        if not abs(got - math.sqrt(d / 2)) <= 0.02 * math.sqrt(d / 2) + 1e-9:
            raise AssertionError(f"lerp_midpoint_norm({d}) = {got!r} is not right: (z1 + z2) / 2 is Gaussian; "
                                 f"what is its variance per dimension, and what is the norm of a d-dimensional "
                                 f"Gaussian vector with that variance?")
