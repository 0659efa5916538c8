"""The oracles against what they claim: the exact denoiser is the score of the noisy marginal
(Tweedie), the regression of eps on x_t, and its probability-flow map carries one marginal onto
the next; the mixture's classifier is Bayes' rule and its unconditional eps the average of the
classes'."""


import pytest
import torch

from lesson_lib.diffusion.denoiser import Denoiser
from lesson_lib.diffusion.forward import q_sample
from lesson_lib.diffusion.oracles import GaussianData, GaussianMixture
from lesson_lib.diffusion.sampling import ddim_sample
from lesson_lib.diffusion.schedules import NoiseSchedule

SCHEDULE = NoiseSchedule.linear(1000)
MU, S = 0.7, 0.4


def full(t, n):
    return torch.full((n,), t, dtype=torch.long)


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_the_exact_eps_is_the_score_of_the_noisy_marginal(t):
    """eps*(x_t) = -sqrt(1 - a_t) grad log q_t(x_t), with q_t = N(sqrt(a_t) mu, v_t) (Tweedie)."""
    oracle = GaussianData(SCHEDULE, MU, S)
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)[:, None].requires_grad_()
    a = SCHEDULE.alpha_bars[t]
    v = a * S ** 2 + 1 - a
    log_q = -((x - a.sqrt() * MU) ** 2 / (2 * v)).sum()
    score, = torch.autograd.grad(log_q, x)
    torch.testing.assert_close(oracle(x.detach(), full(t, 13)), -(1 - a).sqrt() * score, rtol=1e-12, atol=1e-12)


def test_the_exact_eps_is_the_regression_of_eps_on_x_t():
    oracle, g, t = GaussianData(SCHEDULE, MU, S), torch.Generator().manual_seed(0), 300
    x0 = oracle.sample(400_000, generator=g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = q_sample(SCHEDULE, x0, full(t, len(x0)), eps)
    design = torch.cat([x_t, torch.ones_like(x_t)], 1)
    slope, intercept = torch.linalg.lstsq(design, eps).solution[:, 0].tolist()
    exact = oracle(torch.tensor([[0.0], [1.0]], dtype=torch.float64), full(t, 2))[:, 0].tolist()
    assert intercept == pytest.approx(exact[0], abs=3e-3) and slope == pytest.approx(exact[1] - exact[0], abs=3e-3)


def test_the_flow_maps_each_marginal_onto_the_next_and_ddim_converges_to_it():
    oracle = GaussianData(SCHEDULE, MU, S)
    x_T = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    exact = oracle.flow(x_T, full(999, 9), full(-1, 9))
    std_T, std_0 = oracle.variance(full(999, 1), x_T[:1]).sqrt(), S
    torch.testing.assert_close(exact, MU + std_0 / std_T * (x_T - SCHEDULE.alpha_bars[999].sqrt() * MU))
    errors = [(ddim_sample(oracle, SCHEDULE, x_T=x_T, steps=steps, progress=False) - exact).abs().max().item()
              for steps in (25, 50, 100, 200)]
    assert errors[-1] < 0.02 and all(b < a / 1.7 for a, b in zip(errors, errors[1:])), errors   # first order


def test_the_three_predictions_agree_through_the_denoiser():
    x, t = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 100, 500, 900, 999])
    preds = [Denoiser(GaussianData(SCHEDULE, MU, S, prediction=p, dim=3), SCHEDULE)(x, t) for p in ("eps", "x0", "v")]
    for other in preds[1:]:
        torch.testing.assert_close(other.x0, preds[0].x0, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(other.eps, preds[0].eps, rtol=1e-9, atol=1e-9)


MEANS = [[1.0, 0.0], [-0.5, 0.866], [-0.5, -0.866]]


def test_the_mixture_classifier_is_bayes_rule_and_the_unconditional_eps_its_average():
    mixture = GaussianMixture(SCHEDULE, MEANS, 0.6, weights=[0.5, 0.3, 0.2])
    g = torch.Generator().manual_seed(1)
    x, t = 2 * torch.randn(32, 2, generator=g, dtype=torch.float64), torch.randint(0, 1000, (32,), generator=g)
    log_p = mixture.log_posterior(x, t)
    torch.testing.assert_close(log_p.exp().sum(1), torch.ones(32, dtype=torch.float64))
    a = SCHEDULE.alpha_bars[t][:, None, None]
    v = a * 0.36 + 1 - a
    density = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64) * torch.exp(
        -((x[:, None] - a.sqrt() * torch.tensor(MEANS, dtype=torch.float64)) ** 2).sum(-1) / (2 * v[..., 0]))
    torch.testing.assert_close(log_p, (density / density.sum(1, keepdim=True)).log(), rtol=1e-9, atol=1e-9)
    per_class = torch.stack([mixture(x, t, torch.full((32,), k)) for k in range(3)], 1)
    torch.testing.assert_close(mixture(x, t), (log_p.exp()[..., None] * per_class).sum(1))
    torch.testing.assert_close(mixture(x, t, torch.full((32,), 3)), mixture(x, t))          # the null class
    y = torch.tensor([0, 1, 2] * 20000)
    samples = mixture.sample(y, generator=g)
    for k in range(3):
        assert torch.allclose(samples[y == k].mean(0), torch.tensor(MEANS[k], dtype=torch.float64), atol=0.02)
    assert torch.allclose(samples[y == 0].std(0), torch.full((2,), 0.6, dtype=torch.float64), rtol=0.02)
