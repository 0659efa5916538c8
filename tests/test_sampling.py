"""The reverse process, tested end to end with an exact denoiser.

For data x_0 ~ N(mu, s^2), x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps is Gaussian too, and the
best eps-prediction is the conditional mean

    E[eps | x_t] = Cov(eps, x_t) / Var(x_t) * (x_t - E x_t)
                 = sqrt(1 - ab) / (ab s^2 + 1 - ab) * (x_t - sqrt(ab) mu).

Likewise E[x_0 | x_t] = mu + sqrt(ab) s^2 / (ab s^2 + 1 - ab) * (x_t - sqrt(ab) mu), and
v = sqrt(ab) eps - sqrt(1 - ab) x_0 is linear, so E[v | x_t] follows. A correct sampler fed
this oracle must turn N(0, 1) noise into N(mu, s^2) samples.
"""

import math

import pytest
import torch

from lesson_lib.diffusion.forward import q_posterior
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.sampling import ddim_sample, ddim_timesteps, ddpm_sample, p_mean_variance, p_sample_step
from lesson_lib.diffusion.schedules import NoiseSchedule

MU, S = 1.5, 0.5


class GaussianOracle(GaussianData):
    """The exact eps / x0 / v prediction for 1-D data N(MU, S^2) (lesson_lib.diffusion.oracles),
    recording ``model.training`` at each call."""

    def __init__(self, schedule, prediction="eps", s=S):
        super().__init__(schedule, mean=MU, std=s, prediction=prediction)
        self.modes = []

    def forward(self, x_t, t, **cond):
        self.modes.append(self.training)
        return super().forward(x_t, t)


def algorithm2_moments(schedule, variance):
    """Mean and std of the samples of Algorithm 2 with the oracle, propagated exactly.

    Each step is x_{t-1} = (x_t - k eps*(x_t)) / sqrt(alpha_t) + sigma z with eps* affine in
    x_t, so the mean and variance of x_{t-1} follow in closed form from those of x_t."""
    m, v = 0.0, 1.0
    for t in range(schedule.T - 1, -1, -1):
        ab, beta = schedule.alpha_bars[t].item(), schedule.betas[t].item()
        a = math.sqrt(1 - ab) / (ab * S ** 2 + 1 - ab)
        k = beta / math.sqrt(1 - ab)
        m = (m - k * a * (m - math.sqrt(ab) * MU)) / math.sqrt(1 - beta)
        v = (1 - k * a) ** 2 / (1 - beta) * v
        if t > 0:
            v += beta if variance == "beta" else schedule.posterior_variance[t].item()
    return m, math.sqrt(v)


@pytest.fixture(scope="module")
def linear():
    return NoiseSchedule.linear(1000)


# --- DDPM, Algorithm 2 ----------------------------------------------------------------------

@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_reproduces_a_gaussian(linear, variance):
    n = 20_000
    x = ddpm_sample(GaussianOracle(linear), linear, (n, 1), variance=variance,
                    generator=torch.Generator().manual_seed(0), progress=False)
    assert x.shape == (n, 1) and x.dtype == torch.float32
    mean, std = algorithm2_moments(linear, variance)
    # the exact moments of the sampler are those of the data, up to 1% (finite T) ...
    assert abs(mean - MU) < 1e-3 and abs(std - S) < 0.01 * S
    # ... and the samples have those moments, within 4.5 standard errors
    assert abs(x.mean().item() - mean) < 4.5 * std / math.sqrt(n)
    assert abs(x.std().item() - std) < 4.5 * std / math.sqrt(2 * n)


def test_ddpm_detects_a_wrong_denoiser(linear):
    """The Gaussian check is sharp: an oracle for N(MU, (1.05 S)^2) fails it."""
    n = 20_000
    x = ddpm_sample(GaussianOracle(linear, s=1.05 * S), linear, (n, 1), generator=torch.Generator().manual_seed(0),
                    progress=False)
    assert abs(x.std().item() - S) > 4.5 * S / math.sqrt(2 * n) + 0.01 * S


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_p_sample_step_is_algorithm_2(linear, variance):
    """x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - ab_t) eps) + sigma_t z."""
    def model(x_t, t):
        return 0.3 * x_t + 0.01 * t[:, None].float().sin()   # any eps prediction will do
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(8, 2, generator=g)
    for t in [999, 500, 1, 0]:
        out = p_sample_step(model, linear, x_t, t, variance=variance, generator=torch.Generator().manual_seed(2))
        z = torch.randn(8, 2, generator=torch.Generator().manual_seed(2))
        alpha, beta, ab = 1 - linear.betas[t].item(), linear.betas[t].item(), linear.alpha_bars[t].item()
        eps = model(x_t, torch.full((8,), t))
        sigma2 = beta if variance == "beta" else linear.posterior_variance[t].item()
        expected = (x_t - beta / math.sqrt(1 - ab) * eps) / math.sqrt(alpha)
        if t > 0:
            expected = expected + math.sqrt(sigma2) * z
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_p_mean_variance_clips_x0(linear):
    def model(x_t, t):
        return -5 * torch.ones_like(x_t)                      # claims a lot of negative noise: x0_hat is large
    x_t = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    t = torch.full((4,), 400)
    for clip, bound in ((True, 1.0), (2.5, 2.5)):
        mean, var, x0_hat = p_mean_variance(model, linear, x_t, t, clip_x0=clip)
        assert x0_hat.abs().max().item() == pytest.approx(bound)
        torch.testing.assert_close(mean, q_posterior(linear, x0_hat, x_t, t)[0])
        torch.testing.assert_close(var, linear.betas[t].float()[:, None])
    _, _, unclipped = p_mean_variance(model, linear, x_t, t)
    assert unclipped.abs().max().item() > 2.5


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_x0_and_v_oracles_give_the_same_samples(linear, prediction):
    def sample(pred):
        return ddpm_sample(GaussianOracle(linear, pred), linear, (256, 1), prediction=pred,
                           generator=torch.Generator().manual_seed(4), progress=False)
    torch.testing.assert_close(sample(prediction), sample("eps"), rtol=1e-4, atol=1e-4)


def test_return_trajectory():
    schedule = NoiseSchedule.linear(20)
    x_T = torch.randn(5, 1)
    model = GaussianOracle(schedule)
    x, traj = ddpm_sample(model, schedule, x_T=x_T, return_trajectory=True, progress=False,
                          generator=torch.Generator().manual_seed(0))
    assert traj.shape == (21, 5, 1)
    assert torch.equal(traj[0], x_T) and torch.equal(traj[-1], x)
    x3, traj3 = ddpm_sample(model, schedule, x_T=x_T, return_trajectory=True, trajectory_stride=3,
                            progress=False, generator=torch.Generator().manual_seed(0))
    assert traj3.shape == (1 + 7, 5, 1)                       # x_T and t = 18, 15, ..., 0
    assert torch.equal(traj3[0], x_T) and torch.equal(traj3[-1], x3) and torch.equal(x3, x)
    torch.testing.assert_close(traj3[1:], traj[1:][torch.arange(20 - 1, -1, -1) % 3 == 0])


def test_seeded_sampling_reproduces():
    schedule = NoiseSchedule.linear(30)
    model = GaussianOracle(schedule)
    a = ddpm_sample(model, schedule, (4, 1), generator=torch.Generator().manual_seed(5), progress=False)
    b = ddpm_sample(model, schedule, (4, 1), generator=torch.Generator().manual_seed(5), progress=False)
    c = ddpm_sample(model, schedule, (4, 1), generator=torch.Generator().manual_seed(6), progress=False)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_model_mode_is_restored():
    schedule = NoiseSchedule.linear(10)
    for sampler in (ddpm_sample, ddim_sample):
        model = GaussianOracle(schedule).train()
        sampler(model, schedule, (2, 1), progress=False, **({"steps": 5} if sampler is ddim_sample else {}))
        assert model.training                                   # restored ...
        assert model.modes and not any(model.modes)             # ... after running in eval mode
        model = GaussianOracle(schedule).eval()
        sampler(model, schedule, (2, 1), progress=False, **({"steps": 5} if sampler is ddim_sample else {}))
        assert not model.training


def test_sampler_errors(linear):
    class OnMeta(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1, device="meta"))

        def forward(self, x, t):
            return x
    with pytest.raises(ValueError, match="the model is on meta but x is on cpu"):
        ddpm_sample(OnMeta(), linear, (2, 1), progress=False)
    with pytest.raises(ValueError, match="the model is on meta"):
        ddim_sample(OnMeta(), linear, (2, 1), progress=False)
    oracle = GaussianOracle(linear)
    with pytest.raises(ValueError, match="variance must be one of"):
        ddpm_sample(oracle, linear, (2, 1), variance="learned", progress=False)
    with pytest.raises(ValueError, match="prediction must be one of"):
        ddpm_sample(oracle, linear, (2, 1), prediction="score", progress=False)
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(oracle, linear, progress=False)
    with pytest.raises(ValueError, match="it must predict a tensor of the same shape"):
        ddpm_sample(lambda x, t: x[:, :1], linear, (2, 3), progress=False)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(oracle, linear, (2, 1), eta=-0.5, progress=False)


# --- DDIM ------------------------------------------------------------------------------------

def test_ddim_timesteps():
    for T, steps in [(1000, 50), (1000, 1000), (1000, 1), (10, 3), (7, 7), (1000, 999)]:
        ts = ddim_timesteps(T, steps)
        assert ts.dtype == torch.long and len(ts) == steps
        assert ts[0].item() == T - 1
        if steps > 1:
            gaps = -ts.diff()
            assert ts[-1].item() == 0
            assert (gaps > 0).all()                                # strictly descending
            assert gaps.max() - gaps.min() <= 1                    # evenly spread
    assert torch.equal(ddim_timesteps(5, 5), torch.tensor([4, 3, 2, 1, 0]))
    for bad in (0, 11):
        with pytest.raises(ValueError, match="steps"):
            ddim_timesteps(10, bad)


def test_ddim_eta0_is_deterministic():
    schedule = NoiseSchedule.cosine(200)
    x_T = torch.randn(16, 1, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    state = g.get_state()
    a = ddim_sample(GaussianOracle(schedule), schedule, x_T=x_T, steps=20, generator=g, progress=False)
    assert torch.equal(g.get_state(), state)                     # no noise was drawn
    b = ddim_sample(GaussianOracle(schedule), schedule, x_T=x_T, steps=20,
                    generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.equal(a, b)
    c = ddim_sample(GaussianOracle(schedule), schedule, x_T=x_T, steps=20, eta=0.5,
                    generator=torch.Generator().manual_seed(2), progress=False)
    assert not torch.equal(a, c)


def test_ddim_reproduces_a_gaussian():
    """With eta = 0 and the oracle, DDIM is an affine map x_T -> A x_T + B that should be
    close to the ODE's exact map x_T -> S x_T + MU (the cosine schedule ends at pure noise)."""
    schedule = NoiseSchedule.cosine(1000)
    x_T = torch.tensor([[0.0], [1.0], [-2.0]], dtype=torch.float64)
    ends = ddim_sample(GaussianOracle(schedule), schedule, x_T=x_T, steps=100, progress=False)
    B, A = ends[0].item(), ends[1].item() - ends[0].item()
    assert B == pytest.approx(MU, abs=1e-3)
    assert A == pytest.approx(S, rel=0.03)                       # 1.5% discretization error at 100 steps
    assert ends[2].item() == pytest.approx(B - 2 * A, abs=1e-5)  # affine
    n = 20_000
    x = ddim_sample(GaussianOracle(schedule), schedule, (n, 1), steps=100,
                    generator=torch.Generator().manual_seed(3), progress=False)
    assert abs(x.mean().item() - MU) < 4.5 * S / math.sqrt(n) + 1e-3
    assert abs(x.std().item() - S) < 4.5 * S / math.sqrt(2 * n) + 0.03 * S
    x, traj = ddim_sample(GaussianOracle(schedule), schedule, (3, 1), steps=10, return_trajectory=True,
                          progress=False)
    assert traj.shape == (11, 3, 1) and torch.equal(traj[-1], x)


def test_ddim_eta1_with_all_steps_is_ddpm_beta_tilde():
    """Song et al.: eta = 1 on every timestep has sigma^2 = beta-tilde, the DDPM posterior; with
    the same noise draws the two samplers give the same samples."""
    schedule = NoiseSchedule.linear(100)
    x_T = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    model = GaussianOracle(schedule)
    ddim = ddim_sample(model, schedule, x_T=x_T, steps=100, eta=1.0,
                       generator=torch.Generator().manual_seed(1), progress=False)
    ddpm = ddpm_sample(model, schedule, x_T=x_T, variance="beta_tilde",
                       generator=torch.Generator().manual_seed(1), progress=False)
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)
