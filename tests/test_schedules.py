"""Noise schedules: reference values, the identities between derived quantities, errors."""

import math

import numpy as np
import pytest
import torch

from lesson_lib.diffusion.forward import q_posterior, q_sample, q_step
from lesson_lib.diffusion.losses import l_simple
from lesson_lib.diffusion.sampling import sample
from lesson_lib.diffusion.schedules import (NoiseSchedule, check_timesteps, cosine_beta_schedule, extract,
                                            linear_beta_schedule)
from lesson_lib.diffusion.steps import ddim_step

TENSORS = ("betas", "alphas", "alpha_bars", "alpha_bars_prev", "sqrt_alpha_bars",
           "sqrt_one_minus_alpha_bars", "snr", "posterior_variance", "posterior_log_variance",
           "posterior_mean_coef_x0", "posterior_mean_coef_xt")


@pytest.fixture(params=["linear", "cosine"])
def schedule(request):
    return getattr(NoiseSchedule, request.param)(1000)


# --- reference values ------------------------------------------------------------------

def test_linear_reference_values():
    s = NoiseSchedule.linear(1000)
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    assert torch.allclose(s.betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))
    assert s.alpha_bars[999].item() == pytest.approx(4.0358e-05, rel=1e-4)


def test_cosine_reference_values():
    s = NoiseSchedule.cosine(1000)
    assert s.betas[999].item() == 0.999                       # clipped at max_beta
    assert s.alpha_bars[499].item() == pytest.approx(0.49384, abs=1e-5)


@pytest.mark.parametrize("T", [10, 1000])
def test_cosine_alpha_bar_is_f_over_f0_before_clipping(T):
    """Nichol & Dhariwal, Eq. 17, computed independently with numpy."""
    s_off = 0.008
    steps = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((steps + s_off) / (1 + s_off) * np.pi / 2) ** 2
    reference = f[1:] / f[0]
    betas = cosine_beta_schedule(T, s=s_off)
    alpha_bars = NoiseSchedule(betas).alpha_bars.numpy()
    unclipped = int(np.argmax(betas.numpy() >= 0.999)) if (betas >= 0.999).any() else T
    assert unclipped >= T - 1                                 # only the very last step is clipped
    np.testing.assert_allclose(alpha_bars[:unclipped], reference[:unclipped], rtol=1e-10)
    assert betas.max().item() <= 0.999


def test_schedules_are_float64_of_length_T(schedule):
    assert schedule.T == 1000
    for name in TENSORS:
        value = getattr(schedule, name)
        assert value.dtype == torch.float64, name
        assert value.shape == (1000,), name
        assert torch.isfinite(value).all(), name
    assert linear_beta_schedule(7).dtype == torch.float64
    assert cosine_beta_schedule(7).dtype == torch.float64


# --- identities --------------------------------------------------------------------------

def test_derived_quantities(schedule):
    s = schedule
    b = s.betas
    assert torch.allclose(s.alphas, 1 - b, rtol=0, atol=0)
    assert torch.allclose(s.alpha_bars, torch.cumprod(1 - b, 0), rtol=1e-12, atol=0)
    assert s.alpha_bars_prev[0].item() == 1.0
    assert torch.equal(s.alpha_bars_prev[1:], s.alpha_bars[:-1])
    assert torch.allclose(s.sqrt_alpha_bars ** 2, s.alpha_bars, rtol=1e-12, atol=0)
    assert torch.allclose(s.sqrt_one_minus_alpha_bars ** 2, 1 - s.alpha_bars, rtol=1e-12, atol=0)
    assert torch.allclose(s.snr, s.alpha_bars / (1 - s.alpha_bars), rtol=1e-12, atol=0)
    assert (s.snr.diff() < 0).all()                           # signal-to-noise falls monotonically


def test_posterior_quantities(schedule):
    """Ho et al., Eq. 7, entry by entry in plain Python."""
    s = schedule
    for t in [0, 1, 2, 500, 998, 999]:
        beta = s.betas[t].item()
        ab = math.prod(1 - b for b in s.betas[: t + 1].tolist())
        ab_prev = math.prod(1 - b for b in s.betas[:t].tolist())
        assert s.posterior_variance[t].item() == pytest.approx((1 - ab_prev) / (1 - ab) * beta, rel=1e-9, abs=1e-300)
        assert s.posterior_mean_coef_x0[t].item() == pytest.approx(math.sqrt(ab_prev) * beta / (1 - ab), rel=1e-9)
        assert s.posterior_mean_coef_xt[t].item() == pytest.approx(
            math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab), rel=1e-9, abs=1e-300)
    assert s.posterior_variance[0].item() == 0.0              # x_0 is known exactly given x_1 and x_0
    assert s.posterior_mean_coef_x0[0].item() == pytest.approx(1.0, rel=1e-12)
    assert s.posterior_mean_coef_xt[0].item() == 0.0


def test_posterior_log_variance_is_finite_at_t0(schedule):
    s = schedule
    assert torch.isfinite(s.posterior_log_variance).all()
    assert torch.allclose(s.posterior_log_variance[1:], s.posterior_variance[1:].log(), rtol=1e-12, atol=0)
    assert s.posterior_log_variance[0].item() == s.posterior_log_variance[1].item()


def test_single_step_schedule_is_finite():
    s = NoiseSchedule(torch.tensor([0.5]))
    assert s.T == 1
    for name in TENSORS:
        assert torch.isfinite(getattr(s, name)).all(), name


def test_from_name_scales_linear_for_other_T():
    for T in (50, 100, 250):
        s = NoiseSchedule.from_name("linear", T)
        assert s.T == T
        assert s.betas[0].item() == pytest.approx(1e-4 * 1000 / T, rel=1e-12)
        assert s.betas[-1].item() == pytest.approx(0.02 * 1000 / T, rel=1e-12)
        # ends about as close to pure noise as the paper's T = 1000 (alpha-bar_T = 4.0e-5)
        assert 1e-6 < s.alpha_bars[-1].item() < 1e-4
    assert torch.equal(NoiseSchedule.from_name("linear", 1000).betas, NoiseSchedule.linear(1000).betas)
    assert torch.equal(NoiseSchedule.from_name("cosine", 37).betas, cosine_beta_schedule(37))
    assert NoiseSchedule.from_name("linear", 10).betas[-1].item() == 0.999   # 0.02 * 100 clipped


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [0, -3, 10.5, "10", True, None])
def test_bad_T(T):
    for make in (linear_beta_schedule, cosine_beta_schedule, NoiseSchedule.linear, NoiseSchedule.cosine):
        with pytest.raises(ValueError, match="T"):
            make(T)
    with pytest.raises(ValueError, match="T must be a positive integer"):
        NoiseSchedule.from_name("linear", T)


@pytest.mark.parametrize("kwargs, name", [({"beta_start": 0.0}, "beta_start"), ({"beta_start": -1e-4}, "beta_start"),
                                          ({"beta_end": 1.0}, "beta_end"), ({"beta_end": 1.5}, "beta_end")])
def test_linear_betas_outside_unit_interval(kwargs, name):
    with pytest.raises(ValueError, match=name):
        linear_beta_schedule(10, **kwargs)


@pytest.mark.parametrize("max_beta", [0.0, 1.0, 1.2, -0.5])
def test_bad_max_beta(max_beta):
    with pytest.raises(ValueError, match="max_beta"):
        cosine_beta_schedule(10, max_beta=max_beta)


@pytest.mark.parametrize("betas", [[0.1, 1.0], [0.0, 0.1], [0.1, -0.2], [0.1, float("nan")]])
def test_noise_schedule_rejects_bad_betas(betas):
    with pytest.raises(ValueError, match="betas"):
        NoiseSchedule(torch.tensor(betas))


def test_noise_schedule_rejects_bad_shape_and_name():
    with pytest.raises(ValueError, match="1-D"):
        NoiseSchedule(torch.full((2, 3), 0.1))
    with pytest.raises(ValueError, match="1-D"):
        NoiseSchedule(torch.tensor([]))
    with pytest.raises(ValueError, match="'linear' or 'cosine'"):
        NoiseSchedule.from_name("quadratic", 100)


# --- extract and check_timesteps ---------------------------------------------------------------

def test_extract_shapes_dtype_values():
    s = NoiseSchedule.linear(10)
    t = torch.tensor([0, 9, 4])
    for x in (torch.zeros(3, 2), torch.zeros(3, 1, 4, 4), torch.zeros(3)):
        out = extract(s.alpha_bars, t, x)
        assert out.shape == (3,) + (1,) * (x.ndim - 1)
        assert out.dtype == torch.float32
        assert torch.equal(out.flatten(), s.alpha_bars[t].float())
    out64 = extract(s.alpha_bars, t, torch.zeros(3, 2, dtype=torch.float64))
    assert out64.dtype == torch.float64 and torch.equal(out64.flatten(), s.alpha_bars[t])
    assert extract(s.alpha_bars, t, torch.zeros(3, 2, dtype=torch.float16)).dtype == torch.float16


def test_extract_follows_device_of_x():
    s = NoiseSchedule.linear(10)
    out = extract(s.betas, torch.tensor([1, 2]), torch.zeros(2, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 1)


@pytest.mark.parametrize("bad", [[0, 10], [-1, 3], [11]])
def test_t_out_of_range_is_caught_where_it_enters(bad):
    # Checked once by the public entry points, not by extract (which every step calls: reading
    # t's values there made the host wait for the GPU several times per sampling step).
    s = NoiseSchedule.linear(10)
    t = torch.tensor(bad)
    x = torch.zeros(len(bad), 2)
    for call in (lambda: q_sample(s, x, t), lambda: q_step(s, x, t), lambda: q_posterior(s, x, x, t),
                 lambda: l_simple(lambda x_t, t: x_t, s, x, t)):
        with pytest.raises(ValueError, match=r"t must lie in 0\.\.9"):
            call()
    with pytest.raises(ValueError, match=r"timesteps must lie in 0\.\.9"):
        sample(lambda x_t, t: None, s, x, bad, ddim_step)
    with pytest.raises(ValueError, match=r"t must lie in 0\.\.9"):
        check_timesteps(t, 10)


def test_extract_t_type_and_shape_errors():
    s = NoiseSchedule.linear(10)
    with pytest.raises(TypeError, match="integer"):
        extract(s.betas, torch.tensor([1.0, 2.0]), torch.zeros(2, 2))
    with pytest.raises(TypeError, match="tensor"):
        extract(s.betas, 3, torch.zeros(1, 2))
    with pytest.raises(TypeError):
        extract(s.betas, torch.tensor([True, False]), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        extract(s.betas, torch.tensor([1, 2, 3]), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        extract(s.betas, torch.tensor([[1], [2]]), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        extract(s.betas, torch.tensor(1), torch.zeros(1, 2))


def test_check_timesteps_names_the_argument():
    with pytest.raises(ValueError, match=r"t_max must lie in 0\.\.4"):
        check_timesteps(torch.tensor([5]), 5, "t_max")
    check_timesteps(torch.tensor([0, 4]), 5)                 # valid: no error
    check_timesteps(torch.tensor([], dtype=torch.long), 5)   # empty: nothing to check


# --- helpers ---------------------------------------------------------------------------------

def test_steps_until(schedule):
    s = schedule
    for fraction in (0.9, 0.5, 0.1):
        t = s.steps_until(fraction)
        assert 0 < t < s.T
        assert s.sqrt_alpha_bars[t].item() < fraction <= s.sqrt_alpha_bars[t - 1].item()
    assert s.steps_until(1.01) == 0
    assert s.steps_until(0.0) == s.T


def test_to_keeps_values(schedule):
    moved = schedule.to("cpu")
    assert moved is not schedule and moved.T == schedule.T
    for name in TENSORS:
        assert torch.equal(getattr(moved, name), getattr(schedule, name)), name
        assert getattr(moved, name).dtype == torch.float64
    assert moved.device == torch.device("cpu")
    meta = schedule.to("meta")
    assert meta.betas.device.type == "meta" and meta.betas.dtype == torch.float64
    assert schedule.betas.device.type == "cpu"               # the original is untouched
    assert "T=1000" in repr(schedule)


def test_alpha_bar_matched_linear_stays_below_one_and_matches_reference():
    from lesson_lib.diffusion.schedules import alpha_bar_matched_linear_schedule
    ref = torch.cumprod(1 - linear_beta_schedule(1000), dim=0)
    for T in (1, 10, 50, 1000):
        betas = alpha_bar_matched_linear_schedule(T)
        assert betas.shape == (T,) and betas.dtype == torch.float64
        assert torch.all((betas > 0) & (betas < 1))
        ab = torch.cumprod(1 - betas, dim=0)
        taus = [round(i * 1000 / T) - 1 for i in range(1, T + 1)]
        assert torch.allclose(ab, ref[taus], rtol=1e-12)
    # at T = 1000 it is the paper's schedule itself
    assert torch.allclose(alpha_bar_matched_linear_schedule(1000), linear_beta_schedule(1000), rtol=1e-9)
    # unlike the T-scaled linear schedule, whose last beta is clipped to 0.999 at T = 10
    assert alpha_bar_matched_linear_schedule(10)[-1].item() < 0.9
    with pytest.raises(ValueError, match="reference_T"):
        alpha_bar_matched_linear_schedule(2000)
