"""The checks of lesson 6 (fast sampling), run in this process as tests/test_grader_lesson05.py
runs those of lesson 5: the solution passes every check, the untouched exercise reaches the
student's ``NotImplementedError`` in every check, and typical wrong answers are rejected."""

import pytest

from grading_helpers import expect_rejected


DDIM_PRELUDE = """def ddim_update(x_t, eps, alpha_bar_t, alpha_bar_s, eta, noise):
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    a_t = alpha_bar_t.reshape(shape).to(x_t.dtype)
    a_s = alpha_bar_s.reshape(shape).to(x_t.dtype)
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).sqrt()
"""


@pytest.mark.parametrize("last", [
    "return a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps + sigma * noise",               # forgets sigma^2 in the eps term
    "return a_s.sqrt() * x0 + (1 - a_s - sigma ** 2).sqrt() * eps",                  # never adds the noise
    "return a_s.sqrt() * x0 + (1 - a_s - sigma ** 2).sqrt() * eps + sigma ** 2 * noise",  # variance for std
])
def test_a_wrong_ddim_update_is_rejected(last):
    expect_rejected("06", "ddim_update_is_eq_12", DDIM_PRELUDE + f"    {last}\n")


@pytest.mark.parametrize("body", [
    "return 1 - alpha_bars[list(timesteps)]",                                         # betas of the jump from 0
    "import torch\n    return (1 - alpha_bars)[list(timesteps)]",                    # the original betas, subsampled
    "ab = alpha_bars[list(timesteps)]\n    return 1 - ab[1:] / ab[:-1]",              # drops the first step
])
def test_a_wrong_respacing_is_rejected(body):
    expect_rejected("06", "respaced_betas_keep_the_alpha_bars",
                    f"def respaced_betas(alpha_bars, timesteps):\n    {body}\n")


@pytest.mark.parametrize("body", [
    "return (1 - alpha) * z1 + alpha * z2",                                           # the straight line
    "import torch\n    t = torch.acos((z1 * z2).sum() / (z1.norm() * z2.norm()))\n"
    "    return ((1 - alpha) * t).sin() / t.sin() * z1 + (alpha * t).sin() / t.sin() * z2",  # one angle for the batch
])
def test_a_wrong_slerp_is_rejected(body):
    expect_rejected("06", "slerp_follows_the_great_circle", f"def slerp(z1, z2, alpha):\n    {body}\n")


@pytest.mark.parametrize("body", ["return d ** 0.5", "return d / 2", "return (d / 4) ** 0.5", "return 'sqrt(d/2)'"])
def test_a_wrong_prediction_is_rejected(body):
    expect_rejected("06", "lerp_midpoint_norm_is_sqrt_d_over_2", f"def lerp_midpoint_norm(d):\n    {body}\n")
