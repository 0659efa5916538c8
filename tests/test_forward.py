"""The forward process: statistics of q(x_t | x_0), the chain, the posterior, conversions.

Statistical checks draw from fixed seeds and allow about 4-5 standard errors, so they pass
for the right formula and fail for any wrong coefficient larger than a fraction of a percent.
"""

import math

import numpy as np
import pytest
import torch

from lesson_lib.diffusion.forward import (eps_from_v, eps_from_x0, q_posterior, q_sample, q_sample_chain, q_step,
                                          to_x0_eps, v_from_x0_eps, x0_from_eps, x0_from_v)
from lesson_lib.diffusion.schedules import NoiseSchedule


@pytest.fixture(scope="module")
def linear():
    return NoiseSchedule.linear(1000)


def full(n, t):
    return torch.full((n,), t, dtype=torch.long)


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between empirical CDFs."""
    a, b = a.flatten().double().sort().values, b.flatten().double().sort().values
    grid = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, grid, right=True).double() / len(a)
    cdf_b = torch.searchsorted(b, grid, right=True).double() / len(b)
    return (cdf_a - cdf_b).abs().max().item()


# --- q(x_t | x_0) ------------------------------------------------------------------------

def test_q_sample_mean_and_variance(linear):
    """Each row has its own t; the n entries of a row are independent draws of x_t."""
    torch.manual_seed(0)
    ts = [0, 10, 500, 999]
    n = 50_000
    x0 = torch.full((len(ts), n), 0.8, dtype=torch.float64)
    x_t = q_sample(linear, x0, torch.tensor(ts))
    for row, t in enumerate(ts):
        ab = linear.alpha_bars[t].item()
        mean, var = math.sqrt(ab) * 0.8, 1 - ab
        assert abs(x_t[row].mean().item() - mean) < 4.5 * math.sqrt(var / n), t
        assert abs(x_t[row].var().item() - var) < 4.5 * var * math.sqrt(2 / n), t


def test_q_sample_with_given_eps_is_the_formula(linear):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    t = torch.tensor([0, 1, 100, 998, 999])
    expected = torch.stack([math.sqrt(linear.alpha_bars[ti]) * x0[i] + math.sqrt(1 - linear.alpha_bars[ti]) * eps[i]
                            for i, ti in enumerate(t.tolist())])
    torch.testing.assert_close(q_sample(linear, x0, t, eps), expected)
    assert q_sample(linear, x0, t, eps).dtype == torch.float32


def test_q_step_is_eq_2(linear):
    g = torch.Generator().manual_seed(2)
    x_prev, eps = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    t = torch.tensor([0, 7, 999])
    beta = linear.betas[t].float()[:, None]
    torch.testing.assert_close(q_step(linear, x_prev, t, eps), (1 - beta).sqrt() * x_prev + beta.sqrt() * eps)


# --- the chain agrees with the closed form -------------------------------------------------------

def test_chain_and_closed_form_agree_in_distribution():
    torch.manual_seed(3)
    schedule = NoiseSchedule.from_name("linear", 200)
    n = 20_000
    x0 = torch.where(torch.rand(n, 1) < 0.5, -1.0, 1.0) + 0.1 * torch.randn(n, 1)   # bimodal, not Gaussian
    chain = q_sample_chain(schedule, x0, generator=torch.Generator().manual_seed(4))
    assert chain.shape == (200, n, 1)
    critical = 1.95 * math.sqrt(2 / n)                       # KS test at the 0.1% level
    for t in [0, 4, 30, 199]:
        direct = q_sample(schedule, x0, full(n, t))
        a, b = chain[t], direct
        se_mean = math.sqrt(b.var().item() / n)
        assert abs(a.mean().item() - b.mean().item()) < 4 * math.sqrt(2) * se_mean, t
        assert abs(a.std().item() - b.std().item()) < 4 * b.std().item() / math.sqrt(n), t
        assert ks_statistic(a, b) < critical, t
    # the closed form's mean and variance, for the same x0
    ab = schedule.alpha_bars[30].item()
    assert abs(chain[30].mean().item() - math.sqrt(ab) * x0.mean().item()) < 4 * math.sqrt(1 / n)


def test_chain_would_detect_a_wrong_step():
    """The KS check above is sharp enough to tell x_t from x_{t+1} apart."""
    torch.manual_seed(5)
    schedule = NoiseSchedule.from_name("linear", 200)
    n = 20_000
    x0 = torch.ones(n, 1)
    chain = q_sample_chain(schedule, x0, t_max=30)
    assert ks_statistic(chain[30], q_sample(schedule, x0, full(n, 34))) > 1.95 * math.sqrt(2 / n)


def test_chain_shape_seed_and_errors(linear):
    x0 = torch.randn(4, 2)
    a = q_sample_chain(linear, x0, t_max=9, generator=torch.Generator().manual_seed(0))
    b = q_sample_chain(linear, x0, t_max=9, generator=torch.Generator().manual_seed(0))
    assert a.shape == (10, 4, 2) and torch.equal(a, b)
    # entry 0 is x_1 = q_step(x_0, 0) with the first noise draw
    eps0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a[0], q_step(linear, x0, full(4, 0), eps0))
    assert q_sample_chain(NoiseSchedule.linear(6), x0).shape == (6, 4, 2)
    for bad in (1000, -1):
        with pytest.raises(ValueError, match="t_max"):
            q_sample_chain(linear, x0, t_max=bad)


# --- the posterior q(x_{t-1} | x_t, x_0) ---------------------------------------------------------

@pytest.mark.parametrize("t", [1, 5, 100, 999])
def test_posterior_of_the_chain(linear, t):
    """The key identity (Ho et al., Eqs. 6-7), checked against the chain itself.

    For a fixed x_0, draw x_{t-1} ~ q(x_{t-1} | x_0) and x_t = q_step(x_{t-1}). The pair is
    jointly Gaussian, so E[x_{t-1} | x_t] is linear in x_t: its slope (from the sample
    covariance) must be coef_xt, its intercept coef_x0 * x_0, and the residual variance
    beta-tilde_t.
    """
    torch.manual_seed(10 + t)
    n, x0_value = 400_000, 0.7
    x0 = torch.full((n,), x0_value, dtype=torch.float64)
    x_prev = q_sample(linear, x0, full(n, t - 1))
    x_t = q_step(linear, x_prev, full(n, t))
    cov = torch.cov(torch.stack([x_prev, x_t]))
    slope = (cov[0, 1] / cov[1, 1]).item()
    intercept = x_prev.mean().item() - slope * x_t.mean().item()
    resid_var = (cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]).item()

    coef_xt = linear.posterior_mean_coef_xt[t].item()
    coef_x0 = linear.posterior_mean_coef_x0[t].item()
    beta_tilde = linear.posterior_variance[t].item()
    se_slope = math.sqrt(beta_tilde / (n * cov[1, 1].item()))
    se_intercept = math.sqrt(beta_tilde / n * (1 + x_t.mean().item() ** 2 / cov[1, 1].item()))
    assert abs(slope - coef_xt) < 4.5 * se_slope
    assert abs(intercept - coef_x0 * x0_value) < 4.5 * se_intercept
    assert abs(resid_var - beta_tilde) < 4.5 * beta_tilde * math.sqrt(2 / n)

    # and q_posterior evaluated on the samples leaves residuals of mean 0, uncorrelated with x_t
    mean, var, log_var = q_posterior(linear, x0, x_t, full(n, t))
    r = x_prev - mean
    assert abs(r.mean().item()) < 4.5 * math.sqrt(beta_tilde / n)
    assert abs(torch.corrcoef(torch.stack([r, x_t]))[0, 1].item()) < 4.5 / math.sqrt(n)
    assert torch.allclose(var.flatten(), torch.full((n,), beta_tilde, dtype=torch.float64))
    assert torch.allclose(log_var.flatten(), torch.full((n,), math.log(beta_tilde), dtype=torch.float64))


def test_posterior_at_t0_returns_x0(linear):
    """At the paper's t = 1, x_0 is known: mean x_0, variance 0 (log variance still finite)."""
    x0, x_t = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    mean, var, log_var = q_posterior(linear, x0, x_t, full(3, 0))
    torch.testing.assert_close(mean, x0)
    assert (var == 0).all() and torch.isfinite(log_var).all()


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_is_the_product_of_gaussians(name):
    """Bayes: q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0), independently in numpy float64."""
    schedule = NoiseSchedule.from_name(name, 1000)
    betas = schedule.betas.numpy()
    alpha_bars = np.cumprod(1 - betas)
    rng = np.random.default_rng(0)
    t = np.array([1, 2, 50, 500, 997, 998])                  # cosine's clipped last step is excluded
    x0, x_t = rng.normal(size=(len(t), 3)), rng.normal(size=(len(t), 3))
    prior_var = 1 - alpha_bars[t - 1]                         # q(x_{t-1} | x_0)
    prior_mean = np.sqrt(alpha_bars[t - 1])[:, None] * x0
    lik_scale, lik_var = np.sqrt(1 - betas[t]), betas[t]      # q(x_t | x_{t-1}) = N(scale x_{t-1}, var)
    precision = 1 / prior_var + lik_scale ** 2 / lik_var
    var = 1 / precision
    mean = var[:, None] * (prior_mean / prior_var[:, None] + (lik_scale / lik_var)[:, None] * x_t)

    got_mean, got_var, got_log_var = q_posterior(schedule, torch.from_numpy(x0), torch.from_numpy(x_t),
                                                 torch.from_numpy(t))
    np.testing.assert_allclose(got_mean.numpy(), mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_var.numpy().ravel(), var, rtol=1e-9)
    np.testing.assert_allclose(got_log_var.numpy().ravel(), np.log(var), rtol=1e-9)


# --- conversions between eps, x0 and v -----------------------------------------------------------

@pytest.fixture
def triple(linear):
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(6, 3, dtype=torch.float64, generator=g)
    eps = torch.randn(6, 3, dtype=torch.float64, generator=g)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    return x0, eps, t, q_sample(linear, x0, t, eps)


def test_round_trips(linear, triple):
    x0, eps, t, x_t = triple
    torch.testing.assert_close(x0_from_eps(linear, x_t, t, eps), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_from_x0(linear, x_t, t, x0), eps, rtol=1e-9, atol=1e-9)
    v = v_from_x0_eps(linear, x0, eps, t)
    torch.testing.assert_close(x0_from_v(linear, x_t, t, v), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_from_v(linear, x_t, t, v), eps, rtol=1e-9, atol=1e-9)


def test_v_is_the_velocity_of_salimans_and_ho(linear, triple):
    """With x_t = cos(phi) x0 + sin(phi) eps, v = d x_t / d phi = cos(phi) eps - sin(phi) x0."""
    x0, eps, t, x_t = triple
    phi = torch.atan2(linear.sqrt_one_minus_alpha_bars[t], linear.sqrt_alpha_bars[t])[:, None]
    torch.testing.assert_close(x_t, phi.cos() * x0 + phi.sin() * eps)
    torch.testing.assert_close(v_from_x0_eps(linear, x0, eps, t), phi.cos() * eps - phi.sin() * x0)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_to_x0_eps(linear, triple, prediction):
    x0, eps, t, x_t = triple
    output = {"eps": eps, "x0": x0, "v": v_from_x0_eps(linear, x0, eps, t)}[prediction]
    got_x0, got_eps = to_x0_eps(linear, x_t, t, output, prediction)
    torch.testing.assert_close(got_x0, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_eps, eps, rtol=1e-9, atol=1e-9)


def test_to_x0_eps_rejects_unknown_prediction(linear, triple):
    x0, eps, t, x_t = triple
    with pytest.raises(ValueError, match="prediction"):
        to_x0_eps(linear, x_t, t, eps, "score")


# --- errors -------------------------------------------------------------------------------------

def test_shape_and_device_mismatch(linear):
    x0, t = torch.zeros(4, 2), full(4, 3)
    with pytest.raises(ValueError, match="eps must have the same shape as x0"):
        q_sample(linear, x0, t, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="eps must have the same shape as x_prev"):
        q_step(linear, x0, t, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="x_t must have the same shape as x0"):
        q_posterior(linear, x0, torch.zeros(4, 1), t)
    with pytest.raises(ValueError, match="device"):
        q_sample(linear, x0, t, torch.zeros(4, 2, device="meta"))
    with pytest.raises(ValueError, match=r"t must lie in 0\.\.999"):
        q_sample(linear, x0, full(4, 1000))
    with pytest.raises(ValueError, match=r"t must have shape"):
        q_sample(linear, x0, full(3, 1))
