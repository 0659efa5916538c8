"""The bound in bits per dimension: pinned values of its terms (improved-diffusion) and the learned range."""

import math
import os

import pytest
import torch

from lesson_lib.diffusion.likelihood import (bits_per_dim, decoder_floor_bpd, discretized_gaussian_log_likelihood,
                                             mean_by_timestep, normal_kl, timestep_bins)
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


# --- the importance sampler of t -----------------------------------------------------------------

def test_loss_second_moment_sampler_is_unbiased_and_mixes_in_the_uniform():
    from lesson_lib.diffusion.likelihood import LossSecondMomentSampler
    T, u = 20, 0.1
    L = 0.01 + torch.linspace(0, 1, T, dtype=torch.float64) ** 4            # a skewed L_t, as the bound's is
    sampler = LossSecondMomentSampler(T, history=4, uniform_prob=u)
    assert torch.allclose(sampler.probabilities(), torch.full((T,), 1 / T, dtype=torch.float64))  # not warmed up
    for _ in range(4):
        sampler.update(torch.arange(T), L)
    p = sampler.probabilities()
    assert torch.allclose(p, (1 - u) * L / L.sum() + u / T, rtol=1e-12)
    assert p.min() >= u / T - 1e-15 and p.sum().item() == pytest.approx(1.0, abs=1e-12)
    g = torch.Generator().manual_seed(0)
    t, w = sampler.sample(200_000, generator=g)
    assert torch.allclose(w, 1 / (T * p[t]))
    estimates = T * w * L[t]                                                  # each draw estimates sum_t L_t
    mean, se = estimates.mean().item(), estimates.std().item() / math.sqrt(len(estimates))
    assert abs(mean - L.sum().item()) < 4 * se
    unweighted = T * L[t]                                                     # without w the estimate is biased
    assert abs(unweighted.mean().item() - L.sum().item()) > 20 * se
    # importance sampling lowers the variance of the estimate against uniform draws
    uniform = T * L[torch.randint(0, T, (200_000,), generator=g)]
    assert estimates.std() < 0.5 * uniform.std()


# --- Gaussian data: the bound is tight when the reverse process is exact --------------------------

def _gaussian_posterior(s, T=1000):
    """For x0 ~ N(0, s^2 I): the exact x0_hat(x_t, t) and the exact variance of q(x_{t-1} | x_t)."""
    schedule = NoiseSchedule.linear(T)
    ab = schedule.alpha_bars
    denom = ab * s ** 2 + 1 - ab
    x0_var = s ** 2 * (1 - ab) / denom                                        # Var(x0 | x_t)
    reverse_var = schedule.posterior_variance + schedule.posterior_mean_coef_x0 ** 2 * x0_var
    gain = ab.sqrt() * s ** 2 / denom                                         # x0_hat = gain_t x_t
    return schedule, gain, reverse_var


def _kl_sum(schedule, gain, log_var_of, s, d=128, n=128, seed=0):
    """L_t (bits/dim) of n draws of x0 ~ N(0, s^2 I_d) at every t = 1..T-1, with x0_hat = gain_t x_t."""
    from lesson_lib.diffusion.likelihood import vlb_terms
    g = torch.Generator().manual_seed(seed)
    rows = []
    for chunk in torch.arange(1, schedule.T).split(100):
        t = chunk.repeat_interleave(n)
        x0 = s * torch.randn(len(t), d, generator=g, dtype=torch.float64)
        ab = schedule.alpha_bars[t][:, None]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(len(t), d, generator=g, dtype=torch.float64)
        rows.append(vlb_terms(schedule, x0, x_t, t, gain[t][:, None] * x_t, log_var_of(t)[:, None]))
    return torch.cat(rows).reshape(schedule.T - 1, n)                        # (t, sample)


def _sum_and_se(per_t):
    return per_t.mean(1).sum().item(), (per_t.var(1) / per_t.shape[1]).sum().sqrt().item()


def test_gaussian_data_the_kl_terms_are_the_mutual_information_with_the_exact_reverse_variance():
    """With the true reverse kernels the bound equals the NLL (up to KL(q(x_T) || N(0, I))), so
    E[sum_{t>=1} L_t] = I(x0; x_1) - I(x0; x_T) = 0.5 log2((1 + SNR_1 s^2) / (1 + SNR_T s^2)) bits/dim."""
    s = 0.5
    schedule, gain, reverse_var = _gaussian_posterior(s)
    snr = schedule.alpha_bars / (1 - schedule.alpha_bars)
    exact = 0.5 * math.log2((1 + snr[0] * s ** 2) / (1 + snr[-1] * s ** 2))
    best = _kl_sum(schedule, gain, lambda t: reverse_var[t].log(), s)
    got, se = _sum_and_se(best)
    assert abs(got - exact) < 4 * se + 1e-3, (got, exact, se)
    # the fixed variances are not the exact ones for N(0, s^2): on the same draws their bound is looser
    for log_var in (schedule.posterior_log_variance, schedule.betas.log()):
        gap, gap_se = _sum_and_se(_kl_sum(schedule, gain, lambda t: log_var[t], s) - best)
        assert gap > 4 * gap_se + 1e-4, (gap, gap_se)


# --- the learned variance on a respaced chain --------------------------------------------------------

def test_learned_frac_on_a_respaced_step_uses_that_steps_beta_and_beta_tilde():
    from lesson_lib.diffusion.denoiser import Prediction
    from lesson_lib.diffusion.steps import ddpm_step
    schedule = NoiseSchedule.linear(1000)
    ab = schedule.alpha_bars
    t, s = torch.tensor([600, 600]), torch.tensor([450, 450])
    x_t = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    x0 = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    noise = torch.ones_like(x_t)
    beta_ts = 1 - ab[600] / ab[450]
    beta_tilde_ts = (1 - ab[450]) / (1 - ab[600]) * beta_ts
    assert not math.isclose(beta_ts, schedule.betas[600].item(), rel_tol=0.1)   # the original step's beta differs
    for frac, var in ((1.0, beta_ts), (0.0, beta_tilde_ts), (0.5, (beta_ts * beta_tilde_ts).sqrt())):
        pred = Prediction(x0, 0 * x0, frac=torch.full_like(x_t, frac))
        mean = ddpm_step(schedule, x_t, t, s, pred)
        std = ddpm_step(schedule, x_t, t, s, pred, noise) - mean
        assert torch.allclose(std ** 2, torch.full_like(std, float(var)), rtol=1e-10), frac


# --- L_hybrid: the bound trains the variance only -------------------------------------------------------

class _TwoHeads(torch.nn.Module):
    """eps_hat = a x_t + b, v = tanh(c x_t + e): separate parameters for the mean and the variance heads."""

    prediction = "eps"

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.tensor(0.3)), torch.nn.Parameter(torch.tensor(0.1))
        self.c, self.e = torch.nn.Parameter(torch.tensor(0.2)), torch.nn.Parameter(torch.tensor(-0.1))

    def forward(self, x, t):
        return torch.cat([self.a * x + self.b, torch.tanh(self.c * x + self.e)], dim=1)


def _hybrid_grads(lambda_vlb, seed=0):
    from lesson_lib.diffusion.likelihood import Hybrid
    torch.manual_seed(1)
    model = _TwoHeads()
    x0 = torch.randint(0, 256, (16, 1, 4, 4)).float() / 127.5 - 1
    loss = Hybrid(NoiseSchedule.linear(1000), lambda_vlb)(model, model, x0, {}, torch.Generator().manual_seed(seed))
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_hybrid_vlb_part_reaches_the_variance_head_only():
    plain, hybrid = _hybrid_grads(0.0), _hybrid_grads(1000.0)
    for name in ("a", "b"):                                  # the mean head: L_simple's gradient alone
        assert torch.allclose(hybrid[name], plain[name], rtol=1e-6, atol=1e-10), name
    for name in ("c", "e"):                                  # the variance head: L_simple gives none, L_vlb does
        assert plain[name].abs().item() == 0
        assert hybrid[name].abs().item() > 1e-6, name


def test_decoder_floor_is_the_bin_mass_of_the_best_mean():
    """At sigma = 0.01 an interior pixel's bin holds at most Phi(h / sigma) - Phi(-h / sigma), h = 1/255
    (mean on the level); an open edge bin holds Phi(h / sigma) with the mean on the edge (x0_hat
    clipped) and all the mass in the limit of a mean beyond it (not clipped). The floor falls as
    sigma shrinks and vanishes when sigma is far below a bin."""
    h, sigma = 1 / 255, 0.01
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    log_var = 2 * math.log(sigma)
    black = torch.full((4,), -1.0, dtype=torch.float64)
    white = torch.full((4,), 1.0, dtype=torch.float64)
    interior = torch.full((4,), 128 / 127.5 - 1, dtype=torch.float64)
    interior_bits = -math.log2(phi(h / sigma) - phi(-h / sigma))
    assert decoder_floor_bpd(black, log_var, clip_x0=True) == pytest.approx(-math.log2(phi(h / sigma)), rel=1e-9)
    assert decoder_floor_bpd(white, log_var, clip_x0=True) == pytest.approx(-math.log2(phi(h / sigma)), rel=1e-9)
    assert decoder_floor_bpd(black, log_var) == 0 and decoder_floor_bpd(white, log_var) == 0
    for clip in (False, True):
        assert decoder_floor_bpd(interior, log_var, clip_x0=clip) == pytest.approx(interior_bits, rel=1e-9)
    mixed = torch.cat([black, interior])
    assert decoder_floor_bpd(mixed, log_var) == pytest.approx(interior_bits / 2, rel=1e-12)
    assert decoder_floor_bpd(mixed, log_var, clip_x0=True) == pytest.approx(
        (decoder_floor_bpd(black, log_var, clip_x0=True) + interior_bits) / 2, rel=1e-12)
    for clip in (False, True):
        floors = [decoder_floor_bpd(mixed, 2 * math.log(s), clip_x0=clip) for s in (0.02, 0.01, 0.005, 0.002)]
        assert floors == sorted(floors, reverse=True) and decoder_floor_bpd(mixed, 2 * math.log(1e-4), clip_x0=clip) < 1e-9


def test_decoder_floor_is_the_least_cost_over_means():
    """The floor is a minimum: no mean on a fine grid does better than it (in [-1, 1] for the clipped
    floor, anywhere for the other), the best grid mean comes within the grid's resolution of it, and an
    edge pixel's cost with the mean k sigma beyond the edge falls to 0 as k grows."""
    sigma = 0.0074
    log_var = torch.tensor(2 * math.log(sigma), dtype=torch.float64)
    for level in (0, 1, 37, 128, 254, 255):
        x = torch.tensor([level / 127.5 - 1], dtype=torch.float64)
        for clip, (low, high) in ((True, (-1.0, 1.0)), (False, (-1.2, 1.2))):
            means = torch.linspace(low, high, 200_001, dtype=torch.float64)
            bits = -discretized_gaussian_log_likelihood(x.expand_as(means), means, log_var.expand_as(means)) / math.log(2)
            floor = decoder_floor_bpd(x, log_var.item(), clip_x0=clip)
            assert bits.min().item() >= floor - 1e-9, (level, clip)
            assert bits.min().item() <= floor + 1e-4 or (not clip and level in (0, 255)
                                                         and bits.min().item() < 1e-20), (level, clip)
    black = torch.tensor([-1.0], dtype=torch.float64)
    beyond = [-discretized_gaussian_log_likelihood(black, black - k * sigma, log_var).item() for k in (0, 1, 2, 3, 5)]
    assert beyond == sorted(beyond, reverse=True) and beyond[0] > 0.3 and beyond[-1] < 1e-6


def test_timestep_bins_read_a_binned_curve_back_at_every_t():
    """mean_by_timestep averages over 20 equal ranges of 1..999 (edges 1, 50.95, 100.9, ...): the range
    of t changes between t = 50 and 51, 100 and 101, ..., not at the centres (26, 76, ...), and a
    curve read back with timestep_bins sums to the sum of the terms it averaged."""
    t = torch.arange(1000)
    which, edges = timestep_bins(t, bins=20, T=1000)
    assert which[[0, 1, 50, 51, 100, 101, 950, 951, 999]].tolist() == [0, 0, 0, 1, 1, 2, 18, 19, 19]
    assert torch.bincount(which[1:]).tolist() == [50] * 19 + [49] and edges[1].item() == pytest.approx(50.95)
    terms = 1.0 / (1.0 + t[1:].double())
    centres, means, counts = mean_by_timestep(t[1:], terms, bins=20, T=1000)
    assert (means * counts).sum().item() == pytest.approx(terms.sum().item(), rel=1e-12)
    assert centres[0].item() == pytest.approx(25.975)
    read_back = means[timestep_bins(t[1:])[0]]
    assert read_back.sum().item() == pytest.approx(terms.sum().item(), rel=1e-12)
    wrong = means[torch.bucketize(t[1:].double(), centres, right=True).clamp(max=19)]    # by the centres
    assert abs(wrong.sum().item() - terms.sum().item()) > 0.1 * terms.sum().item()


@pytest.mark.skipif(not os.environ.get("DDPM_DATA_DIR"), reason="set DDPM_DATA_DIR to the prepared datasets")
def test_the_shipped_vlb_fine_tune_has_the_sharper_decoder():
    """``mnist_vlb`` is ``mnist_learned_variance`` trained further on the bound alone, x0_hat not clipped:
    its decoder term L_0 (exact per image) must be clearly lower on the same test images with the same
    noise, and clipping its x0_hat to [-1, 1] must undo most of that, since it learned to put the mean of
    the black pixels' open edge bin below -1 (measured on these 64 images: L_0 0.39 unclipped and
    0.75 clipped, against 0.85 unclipped for mnist_learned_variance)."""
    from lesson_lib.data.images import load_mnist
    from lesson_lib.diffusion.denoiser import Denoiser
    from lesson_lib.pretrained import load_pretrained
    x = load_mnist("test")[0][:64]
    L_0 = {}
    for name in ("mnist_learned_variance", "mnist_vlb"):
        model, schedule = load_pretrained(name)
        for clip in (False, True):
            result = bits_per_dim(Denoiser(model, schedule, clip_x0=clip), schedule, x, 1, variances=["learned"],
                                  generator=torch.Generator().manual_seed(0))["learned"]
            L_0[name, clip] = result.decoder
    assert L_0["mnist_vlb", False] < L_0["mnist_learned_variance", False] - 0.2, L_0
    assert L_0["mnist_vlb", False] < L_0["mnist_vlb", True] - 0.2, L_0
    assert L_0["mnist_learned_variance", False] <= L_0["mnist_learned_variance", True], L_0
