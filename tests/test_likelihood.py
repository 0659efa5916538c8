"""The bound in bits per dimension: pinned values of its terms (improved-diffusion) and the learned range."""

import math

import pytest
import torch

from lesson_lib.diffusion.likelihood import bits_per_dim, discretized_gaussian_log_likelihood, normal_kl
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import learned_range


def z():
    return torch.zeros(1, dtype=torch.float64)


def test_normal_kl_pinned_and_closed_form():
    assert normal_kl(z() + 1, z(), z(), z()).item() == pytest.approx(0.5, abs=1e-12)
    p = torch.distributions.Normal(torch.tensor(0.3, dtype=torch.float64), 0.7)
    q = torch.distributions.Normal(torch.tensor(-0.2, dtype=torch.float64), 1.3)
    got = normal_kl(p.mean, 2 * math.log(0.7) + z(), q.mean, 2 * math.log(1.3) + z())
    assert got.item() == pytest.approx(torch.distributions.kl_divergence(p, q).item(), rel=1e-10)


def test_discretized_log_likelihood_pinned_and_sums_to_one():
    assert discretized_gaussian_log_likelihood(z(), z(), z()).item() == pytest.approx(-5.767057, abs=1e-5)
    # improved-diffusion's -1.187371 uses a tanh approximation of Phi; the exact CDF gives -1.187254
    assert discretized_gaussian_log_likelihood(z(), z(), 2 * math.log(0.01) + z()).item() == \
        pytest.approx(-1.187254, abs=2e-6)
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, log_var in ((0.3, math.log(0.05)), (-0.99, math.log(1e-4)), (1.4, 0.0)):
        p = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), torch.full_like(levels, log_var))
        assert p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_learned_range_pinned_at_t10():
    s = NoiseSchedule.linear(1000)
    for v, want in ((-1.0, 2.584636e-4), (0.0, 2.780865e-4), (1.0, 2.991992e-4)):
        frac = torch.tensor((v + 1) / 2, dtype=torch.float64)
        got = learned_range(frac, s.betas.log()[10], s.posterior_log_variance[10]).exp().item()
        assert got == pytest.approx(want, rel=1e-6)


def test_bits_per_dim_is_the_sum_of_its_terms_and_refuses_non_8bit_data():
    from lesson_lib.diffusion.denoiser import Prediction
    s = NoiseSchedule.linear(100, 1e-3, 0.2)
    x0 = torch.randint(0, 256, (8, 16)).double() / 127.5 - 1
    r = bits_per_dim(lambda x_t, t: Prediction(0 * x_t, x_t), s, x0, 8, generator=torch.Generator().manual_seed(0))
    for v in r.values():
        assert v.total == pytest.approx(v.prior + v.decoder + v.diffusion, rel=1e-9)
    with pytest.raises(ValueError, match="8-bit"):
        bits_per_dim(lambda x_t, t: Prediction(0 * x_t, x_t), s, x0 * 0.5 + 0.001, 8)
