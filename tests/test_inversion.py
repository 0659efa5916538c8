"""DDIM inversion and slerp (lesson_lib.diffusion.inversion).

Oracle: for x_0 ~ N(0, S^2 I) the optimal denoiser is linear and the probability-flow ODE maps the
state at level t to the state at level u by the factor std_u / std_t, std_t^2 = ab_t S^2 + 1 - ab_t
(see tests/test_steps.py). So the exact encoding of x0 (taken at level 0) is x0 * std_999 / std_0.
"""

import math

import pytest
import torch

from lesson_lib.diffusion.inversion import ddim_invert, lerp, slerp
from lesson_lib.diffusion.sampling import sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.diffusion.timesteps import spaced
from test_steps import S, GaussianDenoiser, std_at


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 3, 4, dtype=torch.float64, generator=g), torch.randn(5, 3, 4, dtype=torch.float64, generator=g)
    torch.testing.assert_close(slerp(z1, z2, 0.0), z1, rtol=0, atol=1e-12)
    torch.testing.assert_close(slerp(z1, z2, 1.0), z2, rtol=0, atol=1e-12)
    # equal norms stay equal along the great circle, for every alpha
    z2 = z2 / z2.flatten(1).norm(dim=1).reshape(-1, 1, 1) * z1.flatten(1).norm(dim=1).reshape(-1, 1, 1)
    for a in (0.1, 0.5, 0.77):
        torch.testing.assert_close(slerp(z1, z2, a).flatten(1).norm(dim=1), z1.flatten(1).norm(dim=1),
                                   rtol=1e-12, atol=0)
    # orthogonal unit vectors: the midpoint is (e1 + e2) / sqrt 2; lerp's has norm 1 / sqrt 2
    e1, e2 = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(slerp(e1, e2, 0.5), (e1 + e2) / math.sqrt(2), rtol=0, atol=1e-12)
    assert abs(lerp(e1, e2, 0.5).norm().item() - 1 / math.sqrt(2)) < 1e-12
    # per-sample alphas, and parallel vectors fall back to the line
    torch.testing.assert_close(slerp(z1[:2], z2[:2], torch.tensor([0.0, 1.0])), torch.stack([z1[0], z2[1]]))
    torch.testing.assert_close(slerp(e1, 2 * e1, 0.5), 1.5 * e1)
    with pytest.raises(ValueError, match="same shape"):
        slerp(e1, z1, 0.5)


def test_gaussian_midpoints_norm_sqrt_d_over_2_for_lerp_and_sqrt_d_for_slerp():
    d, g = 784, torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(200, d, generator=g), torch.randn(200, d, generator=g)
    ratio_lerp = (lerp(z1, z2, 0.5).norm(dim=1) / z1.norm(dim=1)).mean().item()
    assert abs(ratio_lerp - 1 / math.sqrt(2)) < 0.01
    for a in torch.linspace(0, 1, 11):
        r = slerp(z1, z2, float(a)).norm(dim=1) / z1.norm(dim=1)
        assert r.min() > 0.9 and r.max() < 1.1


def test_inversion_follows_the_exact_flow_with_an_error_that_shrinks_with_S():
    s = NoiseSchedule.linear(1000)
    x0 = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * S
    exact_T = x0 * std_at(s, 999) / std_at(s, 0)
    enc, rec = [], []
    for steps in (10, 20, 40, 80):
        ts = spaced(1000, steps, "linspace")
        x_T = ddim_invert(GaussianDenoiser(s), s, x0, ts)
        back = sample(GaussianDenoiser(s), s, x_T, ts, ddim_step, stochastic=False, progress=False)
        enc.append(((x_T - exact_T).abs().max() / exact_T.abs().max()).item())
        rec.append(((back - x0).abs().max() / x0.abs().max()).item())
    assert enc[-1] < 0.05 and rec[-1] < 0.1                       # a few % at 80 steps, both ways
    assert all(b < a / 1.6 for a, b in zip(enc, enc[1:])), enc      # first order: about halves
    assert all(b < a / 1.6 for a, b in zip(rec, rec[1:])), rec


def test_inversion_visits_the_list_upwards_and_checks_it():
    s = NoiseSchedule.linear(1000)
    seen = []

    exact = GaussianDenoiser(s)

    def spy(x_t, t):
        seen.append(int(t[0]))
        return exact(x_t, t)

    ts = spaced(1000, 5)
    ddim_invert(spy, s, torch.zeros(1, 2, dtype=torch.float64), ts)
    assert seen == ts[::-1][:-1]                  # 0, 250, 500, 749: the top entry is only reached
    with pytest.raises(ValueError, match="descending"):
        ddim_invert(spy, s, torch.zeros(1, 2), ts[::-1])
