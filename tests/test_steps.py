"""The sampler's parts: the denoiser, the step functions, timestep lists and the one loop.

Oracles: for data x_0 ~ N(0, s^2 I) the optimal denoiser is linear in x_t,

    E[x_0 | x_t] = sqrt(ab_t) s^2 / (ab_t s^2 + 1 - ab_t) x_t,
    E[eps | x_t] = sqrt(1 - ab_t) / (ab_t s^2 + 1 - ab_t) x_t,

and the probability-flow ODE, which DDIM with eta = 0 discretises, maps x_t to
x_s = x_t * std_s / std_t with std_t^2 = ab_t s^2 + 1 - ab_t (the marginals are isotropic
Gaussians and the flow is linear). So one DDIM step, and the whole deterministic sampler's
error against the exact map, are known in closed form.
"""

import math
import os
import sys

import pytest
import torch

from lesson_lib.diffusion.denoiser import Denoiser, Prediction, model_prediction
from lesson_lib.diffusion.forward import q_posterior
from lesson_lib.diffusion.sampling import StepRecord, ddim_sample, ddpm_sample, sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.steps import ddim_sigma, ddim_step, ddpm_mean_variance, ddpm_step
from lesson_lib.diffusion.timesteps import all_steps, spaced
from lesson_lib.models.mlp import MLPDenoiser

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from loop_overhead import CountSyncs  # noqa: E402  (the benchmark's counter of host syncs)

S = 0.5


def GaussianDenoiser(schedule, s=S):  # noqa: N802  (the oracle's exact denoiser, as a callable)
    """The exact E[x_0 | x_t], E[eps | x_t] for x_0 ~ N(0, S^2 I) (lesson_lib.diffusion.oracles)."""
    return GaussianData(schedule, std=s).denoise


def std_at(schedule, t, s=S):
    return GaussianData(schedule, std=s).variance(torch.tensor([t]), torch.zeros(1, 1)).sqrt().item()


def full(t, n):
    return torch.full((n,), t, dtype=torch.long)


# --- the behaviour before the refactor, pinned -----------------------------------------------

# ddpm (beta), ddpm (beta-tilde, clip 2), ddim-7, ddim-7 (eta 0.5, clip) of an untrained MLP,
# recorded from the two hand-written loops the samplers replaced.
PINNED = {"eps": [[-25.935945510864258, 5.855310440063477, 26.267526626586914, -2.090186357498169, -11.432493209838867, -18.47475814819336], [-2.0, 0.333863228559494, 2.0, -2.0, 2.0, -2.0], [17.92334747314453, 7.216713905334473, -0.7399622201919556, 16.54047393798828, -11.854968070983887, -4.870970249176025], [-1.0, 1.0, 1.0, 0.8810105323791504, -0.9425744414329529, -1.0]], "x0": [[-0.2467195987701416, 0.008955150842666626, -0.02124118059873581, -0.036558836698532104, -0.11829006671905518, 0.1401093304157257], [-0.16523152589797974, -0.02170810103416443, -0.04394657909870148, -0.03854222595691681, -0.09042015671730042, 0.052931398153305054], [-0.08284834027290344, -0.05348949134349823, -0.0800265222787857, -0.020892053842544556, -0.1201477199792862, -0.04665859043598175], [-0.318869948387146, -0.07706981897354126, 0.25534316897392273, -0.06448104232549667, 0.02896907925605774, -0.10675140470266342]], "v": [[-1.588210105895996, 1.1497031450271606, 2.0238561630249023, -1.287087321281433, 1.4749324321746826, -0.561089038848877], [-1.5423929691314697, 1.1693847179412842, 1.890552043914795, -1.1881163120269775, 1.3921829462051392, -0.3987371027469635], [1.297881007194519, 0.6430558562278748, -0.08647578954696655, 1.2402926683425903, -0.7181214690208435, -0.34934505820274353], [-0.9480263590812683, -0.07316740602254868, 1.0, 0.2884698510169983, -0.084580197930336, -1.0]]}


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_samplers_reproduce_the_pinned_tensors(prediction):
    torch.manual_seed(0)
    model = MLPDenoiser(hidden=32, num_blocks=1, prediction=prediction)
    s = NoiseSchedule.linear(50, 1e-3, 0.2)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    runs = [ddpm_sample(model, s, (3, 2), generator=g(), progress=False),
            ddpm_sample(model, s, (3, 2), generator=g(), progress=False, variance="beta_tilde", clip_x0=2.0),
            ddim_sample(model, s, (3, 2), steps=7, generator=g(), progress=False),
            ddim_sample(model, s, (3, 2), steps=7, eta=0.5, clip_x0=True, generator=g(), progress=False)]
    for out, pinned in zip(runs, PINNED[prediction]):
        torch.testing.assert_close(out.flatten(), torch.tensor(pinned), rtol=1e-5, atol=1e-5)


# --- the denoiser ----------------------------------------------------------------------------

def test_prediction_comes_from_the_model():
    v_model = MLPDenoiser(hidden=8, num_blocks=1, prediction="v")
    assert model_prediction(v_model) == "v"
    assert model_prediction(lambda x, t: x) == "eps"                  # a plain function
    assert model_prediction(lambda x, t: x, "x0") == "x0"
    with pytest.raises(ValueError, match="contradicts the model"):
        model_prediction(v_model, "eps")
    with pytest.raises(ValueError, match="prediction must be one of"):
        model_prediction(v_model, "score")


def test_a_v_model_is_sampled_as_a_v_model():
    """Before the fix, samplers defaulted to eps whatever the model predicted."""
    torch.manual_seed(0)
    model = MLPDenoiser(hidden=16, num_blocks=1, prediction="v")
    s = NoiseSchedule.linear(20)
    x_T = torch.randn(4, 2)
    as_v = ddim_sample(model, s, x_T=x_T, steps=5, progress=False)
    model.prediction = "eps"
    as_eps = ddim_sample(model, s, x_T=x_T, steps=5, progress=False)
    model.prediction = "v"
    explicit = ddim_sample(model, s, x_T=x_T, steps=5, prediction="v", progress=False)
    assert torch.equal(as_v, explicit) and not torch.allclose(as_v, as_eps)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_denoiser_converts_every_parameterisation(prediction):
    s = NoiseSchedule.linear(100)
    exact = GaussianDenoiser(s)
    x_t, t = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 5, 20, 50, 80, 99])
    truth = exact(x_t, t)
    ab = s.alpha_bars[t][:, None]
    v = ab.sqrt() * truth.eps - (1 - ab).sqrt() * truth.x0
    output = {"eps": truth.eps, "x0": truth.x0, "v": v}[prediction]
    pred = Denoiser(lambda x, t: output, s, prediction)(x_t, t)
    torch.testing.assert_close(pred.x0, truth.x0)
    torch.testing.assert_close(pred.eps, truth.eps)


def test_clipping_rederives_eps():
    s = NoiseSchedule.linear(10)
    x_t, t = torch.full((2, 1), 3.0, dtype=torch.float64), torch.tensor([0, 9])
    pred = Denoiser(lambda x, t: torch.zeros_like(x), s, "eps", clip_x0=True)(x_t, t)
    assert pred.x0.abs().max() <= 1.0
    ab = s.alpha_bars[t][:, None]
    torch.testing.assert_close(ab.sqrt() * pred.x0 + (1 - ab).sqrt() * pred.eps, x_t)   # Eq. 4 holds


# --- steps against closed forms ---------------------------------------------------------------

def test_ddpm_step_to_the_previous_timestep_is_the_posterior():
    s = NoiseSchedule.cosine(200)
    x0, x_t = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor([1, 10, 100, 150, 199])
    mean, var, _ = q_posterior(s, x0, x_t, t)
    pred = Prediction(x0, torch.zeros_like(x0))
    torch.testing.assert_close(ddpm_step(s, x_t, t, t - 1, pred), mean)
    z = torch.randn_like(x0)
    torch.testing.assert_close(ddpm_step(s, x_t, t, t - 1, pred, z, "beta_tilde"), mean + var.sqrt() * z)
    beta = s.betas[t][:, None]
    torch.testing.assert_close(ddpm_step(s, x_t, t, t - 1, pred, z, "beta"), mean + beta.sqrt() * z)


def test_respaced_ddpm_step_uses_the_jump_beta():
    """For s < t - 1, beta_{t->s} = 1 - ab_t / ab_s and the posterior of the two-level chain."""
    s = NoiseSchedule.linear(1000)
    t, to = torch.tensor([999, 500]), torch.tensor([899, 100])
    x0, x_t = torch.randn(2, 1, dtype=torch.float64), torch.randn(2, 1, dtype=torch.float64)
    a_t, a_s = s.alpha_bars[t][:, None], s.alpha_bars[to][:, None]
    beta = 1 - a_t / a_s
    mean = a_s.sqrt() * beta / (1 - a_t) * x0 + (1 - beta).sqrt() * (1 - a_s) / (1 - a_t) * x_t
    z = torch.randn_like(x0)
    got = ddpm_step(s, x_t, t, to, Prediction(x0, torch.zeros_like(x0)), z, "beta_tilde")
    torch.testing.assert_close(got, mean + ((1 - a_s) / (1 - a_t) * beta).sqrt() * z)


def test_ddpm_step_draws_from_the_gaussian_of_ddpm_mean_variance():
    """The step's N(mean, sigma^2) is one function, shared by ddpm_step and the mean form of classifier
    guidance: sigma^2 = beta_{t->s} or beta-tilde_{t->s} of the jump, or the learned interpolation."""
    s = NoiseSchedule.linear(1000)
    t, to = torch.tensor([999, 500, 1, 0]), torch.tensor([899, 100, 0, -1])
    x_t = torch.randn(4, 2, dtype=torch.float64)
    pred = GaussianDenoiser(s)(x_t, t)
    z = torch.randn_like(x_t)
    a_t, a_s = s.alpha_bars_with_0[t + 1], s.alpha_bars_with_0[to + 1]
    beta = 1 - a_t / a_s
    beta_tilde = (1 - a_s) / (1 - a_t) * beta
    for variance, var in (("beta", beta), ("beta_tilde", beta_tilde)):
        mean, sigma2 = ddpm_mean_variance(s, x_t, t, to, pred, variance)
        torch.testing.assert_close(sigma2, var[:, None])
        torch.testing.assert_close(mean, ddpm_step(s, x_t, t, to, pred))
        torch.testing.assert_close(mean + sigma2.sqrt() * z, ddpm_step(s, x_t, t, to, pred, z, variance))
    torch.testing.assert_close(sigma2[2, 0], s.posterior_variance[1])      # one step of the chain: beta-tilde_t
    torch.testing.assert_close(mean[3], pred.x0[3])                        # s = -1: the mean is x0_hat
    frac = torch.rand(x_t.shape, generator=torch.Generator().manual_seed(0), dtype=x_t.dtype)
    learned = pred._replace(frac=frac)
    mean, sigma2 = ddpm_mean_variance(s, x_t, t, to, learned)
    expected = (frac * beta.log()[:, None] + (1 - frac) * beta_tilde.clamp(min=1e-20).log()[:, None]).exp()
    torch.testing.assert_close(sigma2, expected)
    torch.testing.assert_close(mean + sigma2.sqrt() * z, ddpm_step(s, x_t, t, to, learned, z))


def test_ddim_eta1_step_is_the_respaced_ddpm_beta_tilde_step():
    s = NoiseSchedule.linear(1000)
    t, to = torch.tensor([999, 640, 40]), torch.tensor([899, 320, 0])
    x_t = torch.randn(3, 2, dtype=torch.float64)
    pred = GaussianDenoiser(s)(x_t, t)
    z = torch.randn_like(x_t)
    torch.testing.assert_close(ddim_step(s, x_t, t, to, pred, z, eta=1.0),
                               ddpm_step(s, x_t, t, to, pred, z, "beta_tilde"))
    assert torch.all(ddim_sigma(s, t, to, 0.0) == 0)


def test_one_ddim_step_on_gaussian_data_is_exact():
    s = NoiseSchedule.linear(1000)
    x_t = torch.randn(4, 3, dtype=torch.float64)
    t, to = full(600, 4), full(300, 4)
    x_s = ddim_step(s, x_t, t, to, GaussianDenoiser(s)(x_t, t))
    a_t, a_s = s.alpha_bars[600].item(), s.alpha_bars[300].item()
    factor = (math.sqrt(a_s * a_t) * S ** 2 + math.sqrt((1 - a_s) * (1 - a_t))) / (a_t * S ** 2 + 1 - a_t)
    torch.testing.assert_close(x_s, factor * x_t)
    # and the last step returns x0_hat itself
    pred = GaussianDenoiser(s)(x_t, t)
    torch.testing.assert_close(ddim_step(s, x_t, t, full(-1, 4), pred), pred.x0)


def test_deterministic_sampler_converges_to_the_probability_flow_map():
    """DDIM (eta = 0) is a first-order solver of the probability-flow ODE: doubling the number
    of steps about halves its error against the exact map x_T -> x_T * std_0 / std_T."""
    s = NoiseSchedule.linear(1000)
    x_T = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = x_T * S / std_at(s, 999)
    errors = []
    for steps in (10, 20, 40, 80):
        x0 = sample(GaussianDenoiser(s), s, x_T, spaced(1000, steps, "trailing"), ddim_step,
                    stochastic=False, progress=False)
        errors.append((x0 - exact).abs().max().item())
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert errors[-1] < errors[0] / 6
    assert all(1.6 < r < 2.6 for r in ratios), (errors, ratios)


def test_ddim_inversion_runs_the_same_map_backwards():
    """ddim_step with s > t encodes: from x at the first level (exact) up to x_999, close to the
    exact flow; decoding returns to the data, with an error that shrinks as the steps grow."""
    s = NoiseSchedule.linear(1000)
    x0 = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * S

    def round_trip(steps):
        up = list(reversed(spaced(1000, steps, "trailing")))     # e.g. 9, 19, ..., 999
        x = sample(GaussianDenoiser(s), s, x0 * std_at(s, up[0]) / S, up[:-1], ddim_step, end=up[-1],
                   stochastic=False, progress=False)                 # the same loop, climbing
        exact_T = x0 * std_at(s, 999) / S
        back = sample(GaussianDenoiser(s), s, x, spaced(1000, steps, "trailing"), ddim_step,
                      stochastic=False, progress=False)
        return (x - exact_T).abs().max() / exact_T.abs().max(), (back - x0).abs().max() / x0.abs().max()

    (enc_100, dec_100), (enc_400, dec_400) = round_trip(100), round_trip(400)
    assert enc_100 < 0.05 and dec_100 < 0.1                       # first order: a few % at 100 steps
    assert enc_400 < enc_100 / 2.5 and dec_400 < dec_100 / 2.5


# --- timestep lists -----------------------------------------------------------------------------

def test_spacings_are_pinned():
    assert spaced(1000, 10, "linspace") == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert spaced(1000, 10, "leading") == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert spaced(1000, 10, "trailing") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert spaced(1000, 10, "quadratic") == [800, 632, 483, 355, 246, 158, 88, 39, 9, 0]
    assert all_steps(5) == [4, 3, 2, 1, 0] and spaced(5, 5) == [4, 3, 2, 1, 0]
    for spacing in ("linspace", "leading", "trailing", "quadratic"):
        ts = spaced(1000, 37, spacing)
        assert ts == sorted(set(ts), reverse=True) and 0 <= ts[-1] and ts[0] <= 999
    with pytest.raises(ValueError, match="spacing must be one of"):
        spaced(1000, 10, "cubic")
    with pytest.raises(ValueError, match="steps must lie in 1..T"):
        spaced(10, 11)
    with pytest.raises(TypeError, match="steps must be an int"):
        spaced(10, 2.5)


def test_each_step_goes_to_the_next_entry_of_the_list():
    """Never to t - T // S (a bug several libraries had for non-leading spacings)."""
    seen = []
    s = NoiseSchedule.linear(1000)
    for spacing in ("linspace", "trailing", "quadratic"):
        ts = spaced(1000, 10, spacing)
        seen.clear()
        sample(GaussianDenoiser(s), s, torch.zeros(1, 1, dtype=torch.float64), ts,
               lambda sch, x, t, to, pred, noise: (seen.append((int(t[0]), int(to[0]))), x)[1],
               stochastic=False, progress=False)
        assert seen == list(zip(ts, ts[1:] + [-1]))


# --- the loop ------------------------------------------------------------------------------------

def test_callback_sees_x_t_and_x0_hat_for_both_samplers():
    s = NoiseSchedule.linear(30)
    model = MLPDenoiser(hidden=8, num_blocks=1)
    for sampler, kwargs, n in ((ddpm_sample, {}, 30), (ddim_sample, {"steps": 6}, 6)):
        records = []
        x_T = torch.randn(3, 2)
        x, traj = sampler(model, s, x_T=x_T, progress=False, return_trajectory=True, **kwargs,
                          generator=torch.Generator().manual_seed(0))
        s_ = s.to("cpu")
        denoise = Denoiser(model, s_)
        ts = all_steps(30) if sampler is ddpm_sample else spaced(30, 6)
        from lesson_lib.diffusion.steps import ddim_step as dstep, ddpm_step as pstep
        step = pstep if sampler is ddpm_sample else dstep
        again = sample(denoise, s_, x_T, ts, step, stochastic=sampler is ddpm_sample,
                       generator=torch.Generator().manual_seed(0), callback=records.append, progress=False)
        assert torch.equal(again, x) and len(records) == n and isinstance(records[0], StepRecord)
        assert torch.equal(records[0].x_t, x_T) and records[-1].s == -1
        assert torch.equal(torch.stack([x_T] + [r.x_s for r in records]), traj)
        for r in records:
            with torch.no_grad():
                assert torch.equal(r.pred.x0, denoise(r.x_t, full(r.t, 3)).x0)


def test_guidance_plugs_in_by_wrapping_the_denoiser():
    """A wrapper with the denoiser's signature changes the samples; the loop is untouched."""
    s = NoiseSchedule.linear(1000)
    exact = GaussianDenoiser(s)

    def shifted(x_t, t, shift):                    # condition on a target mean, as guidance would
        pred = exact(x_t - shift * s.sqrt_alpha_bars[t][:, None], t)
        return Prediction(pred.x0 + shift, pred.eps)

    x_T = torch.randn(2000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x0 = sample(shifted, s, x_T, spaced(1000, 50), ddim_step, stochastic=False, cond={"shift": 3.0},
                progress=False)
    assert abs(x0.mean().item() - 3.0) < 0.05 and abs(x0.std().item() - S) < 0.05


def test_timesteps_are_checked_once_per_call_not_per_step():
    """extract no longer reads t's values, which on CUDA made the host wait several times per step."""
    s = NoiseSchedule.linear(200)
    model = MLPDenoiser(hidden=8, num_blocks=1)
    counts = []
    for steps in (5, 40):
        with CountSyncs() as mode:
            ddim_sample(model, s, (4, 2), steps=steps, eta=0.5, progress=False)
            ddpm_sample(model, s, (4, 2), progress=False, timesteps=spaced(200, steps))
        counts.append(mode.syncs)
    assert counts[0] == counts[1], counts
