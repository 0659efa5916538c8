"""forward.empirical_posterior: binned moments of x_{t-1} given x_t, against closed forms."""
import pytest
import torch

from lesson_lib.diffusion.forward import empirical_posterior, q_posterior, q_sample, q_step
from lesson_lib.diffusion.schedules import NoiseSchedule


def test_moments_in_each_bin_are_exact_sample_moments():
    x_t = torch.tensor([0.1, 0.2, 0.6, 0.7, 0.9, 1.5, -3.0])
    x_prev = torch.tensor([1.0, 3.0, 2.0, 4.0, 6.0, 9.0, 9.0])
    centres, mean, var, count = empirical_posterior(x_prev, x_t, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(centres, torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert count.tolist() == [2, 3]                                   # 1.5 and -3.0 fall outside
    torch.testing.assert_close(mean, torch.tensor([2.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(var, torch.tensor([2.0, 4.0], dtype=torch.float64))   # unbiased


def test_chain_from_one_point_matches_the_posterior():
    """x_0 fixed, x_{t-1} ~ q(x_{t-1} | x_0), x_t by one step of the chain: the binned moments are Eqs. 6-7."""
    s, t = NoiseSchedule.from_name("linear", 50), 5
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n, 1), 0.8, dtype=torch.float64)
    x_prev = q_sample(s, x0, torch.full((n,), t - 1), torch.randn(n, 1, generator=g, dtype=torch.float64))
    x_t = q_step(s, x_prev, torch.full((n,), t), torch.randn(n, 1, generator=g, dtype=torch.float64))
    centres, mean, var, count = empirical_posterior(x_prev, x_t, torch.linspace(0.45, 1.05, 13))
    assert (count > 2000).all()
    mu, beta_tilde, _ = q_posterior(s, x0[:12], centres[:, None], torch.full((12,), t))
    spread = 0.05 * s.posterior_mean_coef_xt[t]                        # mu-tilde varies across a bin
    assert (mean - mu[:, 0]).abs().max() < 0.01 * spread + 5 * (beta_tilde[0, 0] / count.min()) ** 0.5
    expected = beta_tilde[0, 0] + spread ** 2 / 12                    # plus the spread of mu-tilde in a bin
    assert (var / expected - 1).abs().max() < 0.06
    assert (var / s.betas[t] - 1).abs().min() > 0.2                 # and it is not beta_t


def test_bad_edges():
    with pytest.raises(ValueError, match="increasing"):
        empirical_posterior(torch.zeros(3), torch.zeros(3), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="same number"):
        empirical_posterior(torch.zeros(3), torch.zeros(4), torch.tensor([0.0, 1.0]))
