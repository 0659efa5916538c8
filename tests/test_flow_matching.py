"""Flow matching (lesson_lib.diffusion.flow_matching): the path, its target, logit-normal t, the
objective, and sampling a velocity through the one loop.

Evidence: closed forms (the path's ends, the logit-normal law), a hand computation of the loss,
the exact velocity of Gaussian data (its loss is the irreducible variance; Heun at 20 steps
reproduces the data law), the exact identity Euler-on-the-flow = DDIM between matching VP levels,
and a tiny U-Net trained through the Trainer.
"""

import math

import pytest
import torch

from lesson_lib.diffusion.denoiser import Prediction
from lesson_lib.diffusion.flow_matching import (FlowGrid, FlowMatching, VelocityDenoiser, flow_euler_step,
                                                flow_heun_step, flow_sample, flow_time, logit_normal,
                                                network_time, path, to_x0_eps, velocity_target, vp_level,
                                                vp_scale)
from lesson_lib.diffusion.guidance import ClassifierFreeGuidance
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.models.unet import UNet
from lesson_lib.training.trainer import TrainConfig, Trainer

MEAN, STD = 0.7, 0.4


class ExactVelocity(torch.nn.Module):
    """The exact velocity E[eps - x_0 | x_t] of data N(MEAN, STD^2) on the path, as a network:
    called with the network time k = round(T t) - 1 it reads t = (k + 1) / T. It goes through the
    VP oracle at the matching level: x_t / c_t is the VP state (scale-invariance)."""

    prediction, num_classes, image_size, in_channels = "v", None, None, 1

    def __init__(self, T=1000):
        super().__init__()
        self.grid = FlowGrid(T)
        self.oracle = GaussianData(self.grid, MEAN, STD)

    def forward(self, x_t, k, **cond):
        c = vp_scale(self.grid.times[k]).to(x_t.dtype).reshape(-1, 1)
        x0, eps = self.oracle.denoise(x_t / c, k)[:2]
        return eps - x0


def test_path_ends_and_target():
    x0, eps = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(path(x0, eps, 0.0), x0)
    assert torch.equal(path(x0, eps, 1.0), eps)
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    assert torch.allclose(path(x0, eps, t), (1 - t[:, None]) * x0 + t[:, None] * eps, atol=0, rtol=1e-15)
    h = 1e-6                                   # the target is the path's derivative in t
    slope = (path(x0, eps, t.clamp(h, 1 - h) + h) - path(x0, eps, t.clamp(h, 1 - h) - h)) / (2 * h)
    assert torch.allclose(slope, velocity_target(x0, eps), atol=1e-8)
    x0_hat, eps_hat = to_x0_eps(path(x0, eps, t), t, velocity_target(x0, eps))
    assert torch.allclose(x0_hat, x0, atol=1e-14) and torch.allclose(eps_hat, eps, atol=1e-14)


def test_vp_levels():
    t = torch.tensor([0.0, 0.3, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(vp_level(t), torch.tensor([1.0, 0.49 / 0.58, 0.5, 0.0], dtype=torch.float64))
    assert torch.allclose(flow_time(vp_level(t)), t, atol=1e-15)
    # the course's linear schedule never reaches t = 1: its last level is t = 0.99369
    last = flow_time(NoiseSchedule.linear(1000).alpha_bars[-1])
    assert round(float(last), 5) == 0.99369
    assert torch.equal(network_time(torch.tensor([0.0, 0.001, 0.5, 1.0]), 1000), torch.tensor([0, 0, 499, 999]))


def test_logit_normal_law():
    n = 200_000
    t = logit_normal(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = math.erf(math.log(0.7 / 0.3) / math.sqrt(2))            # 2 Phi(logit 0.7) - 1
    assert round(p, 4) == 0.6032
    frac = float(((t >= 0.3) & (t <= 0.7)).double().mean())
    assert abs(frac - p) < 3 * math.sqrt(p * (1 - p) / n)
    # Kolmogorov-Smirnov against F(t) = Phi(logit t): sup |F_n - F| below the 1% critical value
    ts = t.sort().values
    cdf = 0.5 * (1 + torch.erf(torch.logit(ts) / math.sqrt(2)))
    i = torch.arange(1, n + 1, dtype=torch.float64)
    d = torch.maximum(i / n - cdf, cdf - (i - 1) / n).max()
    assert d < 1.628 / math.sqrt(n)
    # m shifts the median to sigmoid(m); a uniform draw would fail the same statistic
    shifted = logit_normal(n, m=1.2, s=1.2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(float(shifted.median()) - 1 / (1 + math.exp(-1.2))) < 0.005
    u = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).sort().values
    cdf_u = 0.5 * (1 + torch.erf(torch.logit(u) / math.sqrt(2)))
    assert torch.maximum(i / n - cdf_u, cdf_u - (i - 1) / n).max() > 1.628 / math.sqrt(n)


def test_loss_is_the_hand_computation():
    """Replay the generator: labels, then t, then eps, as the objective draws them."""
    torch.manual_seed(0)
    net = lambda x, k, y=None: torch.tanh(x) * (k.to(x.dtype) / 999).reshape(-1, 1)   # noqa: E731
    net.prediction = "v"
    x0 = torch.randn(16, 3)
    for t_sampling in ("uniform", "logit_normal"):
        objective = FlowMatching(t_sampling, m=0.5, s=0.8)
        loss = objective(net, net, x0, {}, torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)
        t = torch.rand(16, generator=g) if t_sampling == "uniform" else torch.sigmoid(0.5 + 0.8 * torch.randn(16, generator=g))
        eps = torch.randn(16, 3, generator=g)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
        k = (t * 1000).round().long() - 1
        expected = ((net(x_t, k.clamp(0, 999)) - (eps - x0)) ** 2).mean()
        assert torch.allclose(loss, expected, rtol=1e-6), t_sampling
    assert FlowMatching().config() == {"name": "flow_matching", "t_sampling": "logit_normal", "m": 0.0,
                                       "s": 1.0, "class_dropout": 0.0, "T": 1000}


def test_the_exact_velocity_has_only_the_irreducible_loss():
    """On Gaussian data the exact velocity's loss is E Var[eps - x_0 | x_t] = E[(1 - t)^2 ... ]:
    per t, Var(eps - x_0) - Var(E[eps - x_0 | x_t]) = (1 + s^2) - (t - (1 - t) s^2)^2 / v_t with
    v_t = (1 - t)^2 s^2 + t^2, which the Monte Carlo loss matches; a velocity off by 0.2 adds 0.2^2."""
    exact = ExactVelocity().double()
    n = 400_000
    x0 = (MEAN + STD * torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    g = torch.Generator().manual_seed(1)
    loss = float(FlowMatching("uniform")(exact, exact, x0, {}, g))
    t = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    v_t = (1 - t) ** 2 * STD ** 2 + t ** 2
    expected = float((1 + STD ** 2 - (t - (1 - t) * STD ** 2) ** 2 / v_t).mean())
    assert abs(loss - expected) < 0.01 * expected, (loss, expected)
    off = lambda x, k: exact(x, k) + 0.2                                   # noqa: E731
    off.prediction = "v"
    worse = float(FlowMatching("uniform")(off, off, x0, {}, torch.Generator().manual_seed(1)))
    assert abs(worse - loss - 0.2 ** 2) < 0.003          # the residual is orthogonal to a constant


def test_euler_on_the_flow_is_ddim_exactly():
    """One Euler step x_s = x_t + (s - t) v is one DDIM step (eta = 0) between the matching VP
    levels, x_VP = x_t / c_t, for any velocity (here a random one) and for the exact one."""
    grid, T = FlowGrid(1000), 1000
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t_idx, s_idx in [(999, 899), (999, -1), (499, 249), (249, -1), (10, 3)]:
        t = torch.full((6,), t_idx)
        s = torch.full((6,), s_idx)
        tau, sig = grid.times_with_0[t_idx + 1], grid.times_with_0[s_idx + 1]
        for v in (torch.randn(6, 4, dtype=torch.float64), ExactVelocity(T)(x, t)):
            pred = Prediction(*to_x0_eps(x, tau, v))
            x_s = flow_euler_step(grid, x, t, s, pred)[0]
            assert torch.allclose(x_s, x + (sig - tau) * v, atol=1e-14)
            x_vp = ddim_step(grid, x / vp_scale(tau), t, s, pred)
            assert (x_s / vp_scale(sig) - x_vp).abs().max() < 1e-10


def test_one_euler_step_from_noise_returns_the_data_mean():
    """At t = 1, x0_hat = E[x_0] whatever x is: one Euler step to t = 0 lands on the mean."""
    exact = ExactVelocity().double()
    x1 = torch.randn(8, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = flow_sample(exact, x_T=x1, steps=1, progress=False)
    assert torch.allclose(out, torch.full_like(out, MEAN), atol=1e-12)


def test_heun_at_20_steps_reproduces_the_data_law():
    exact = ExactVelocity().double()
    x1 = torch.randn(100_000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = flow_sample(exact, x_T=x1, steps=20, solver="heun", progress=False)
    # the exact flow map is affine: x_0 = MEAN + STD * x_1; Heun at 20 steps is within 5e-3 of it
    assert (out - (MEAN + STD * x1)).abs().max() < 5e-3
    assert abs(float(out.mean()) - MEAN) < 3 * STD / math.sqrt(1e5) + 1e-3
    assert abs(float(out.std()) - STD) < 0.005
    # Euler at 20 steps is first order: further off than Heun (2 calls a step)
    euler = flow_sample(exact, x_T=x1, steps=20, solver="euler", progress=False)
    assert (euler - (MEAN + STD * x1)).abs().max() > 10 * (out - (MEAN + STD * x1)).abs().max()


def test_heun_calls_the_network_twice_a_step_and_the_loop_rejects_other_schedules():
    calls = []

    def net(x, k, **cond):
        calls.append(k[0].item())
        return -x
    net.prediction = "v"
    flow_sample(net, shape=(2, 3), steps=4, solver="heun", progress=False)
    assert calls == [999, 749, 749, 499, 499, 249, 249, 0]
    with pytest.raises(TypeError, match="flow's time grid"):
        flow_heun_step(NoiseSchedule.linear(10), torch.zeros(1, 1), torch.tensor([5]), torch.tensor([2]),
                       Prediction(torch.zeros(1, 1), torch.zeros(1, 1)), state={})
    with pytest.raises(ValueError, match="solver"):
        flow_sample(net, shape=(2, 3), solver="rk4", progress=False)
    with pytest.raises(TypeError, match="velocity network"):
        VelocityDenoiser(VelocityDenoiser(net, FlowGrid(10)), FlowGrid(10))


def test_bad_arguments():
    with pytest.raises(ValueError, match="t_sampling"):
        FlowMatching("lognormal")
    with pytest.raises(ValueError, match="s must"):
        logit_normal(10, s=0)
    with pytest.raises(ValueError, match="prediction='v'"):
        net = lambda x, k: x                                               # noqa: E731
        net.prediction = "eps"
        FlowMatching()(net, net, torch.zeros(2, 1), {}, torch.Generator())


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    return UNet(in_channels=1, image_size=8, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                attention_resolutions=(), dropout=0.0, prediction="v", num_classes=2)


def test_a_tiny_unet_learns_the_flow_through_the_trainer_and_resumes(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (256,), generator=g)
    templates = (torch.rand(2, 1, 8, 8, generator=g) < 0.5).float() * 1.6 - 0.8      # one image per class
    images = templates[labels] + 0.05 * torch.randn(256, 1, 8, 8, generator=g)
    objective = FlowMatching(class_dropout=0.1)
    cfg = TrainConfig(batch_size=32, lr=3e-3, log_every=5, ema_decay=0.9)

    def held_out(model):
        with torch.no_grad():
            return float(objective(model, model, images[:128], {"y": labels[:128]}, torch.Generator().manual_seed(9)))

    trainer = Trainer(tiny_unet(), images, objective, cfg, cond={"y": labels}, device="cpu",
                      checkpoint_path=tmp_path / "fm.pt")
    before = held_out(trainer.model)
    trainer.run(40, progress=False)
    after = held_out(trainer.model)
    assert after < 0.9 * before, (before, after)
    trainer.save()
    resumed = Trainer(tiny_unet(seed=5), images, FlowMatching(class_dropout=0.1), cfg, cond={"y": labels},
                      device="cpu", checkpoint_path=tmp_path / "fm.pt")
    assert resumed.resume() is True and resumed.step == 40
    assert held_out(resumed.model) == after
    other = Trainer(tiny_unet(), images, FlowMatching("uniform", class_dropout=0.1), cfg, cond={"y": labels},
                    device="cpu", checkpoint_path=tmp_path / "fm.pt")
    with pytest.raises(ValueError):
        other.resume()
    out = flow_sample(trainer.model, shape=(4, 1, 8, 8), steps=2, solver="heun", model_kwargs={"y": labels[:4]},
                      progress=False)
    assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all()


def test_a_shipped_flow_model_loads_with_its_grid_and_generate_integrates_it():
    """The payload of a flow-matching run rebuilds the flow's grid (not a noise schedule), and generate
    dispatches on it: Euler and Heun through flow_sample, guided or not; a VP sampler or a VP model refused."""
    from lesson_lib.pretrained import model_from_state, model_payload
    from lesson_lib.sample import generate
    images, labels = torch.randn(64, 1, 8, 8), torch.randint(0, 2, (64,))
    trainer = Trainer(tiny_unet(), images, FlowMatching(class_dropout=0.1, T=100), TrainConfig(batch_size=16),
                      cond={"y": labels}, device="cpu")
    trainer.run(2, progress=False)
    model, grid = model_from_state(model_payload(trainer))
    assert isinstance(grid, FlowGrid) and grid.T == 100
    y = torch.tensor([0, 1, 1])
    for solver in ("euler", "heun"):
        x = generate(model, grid, 3, solver, 5, {"y": y}, seed=3, progress=False)
        direct = flow_sample(model, (3, 1, 8, 8), steps=5, solver=solver, T=100, model_kwargs={"y": y},
                             generator=torch.Generator().manual_seed(3), progress=False)
        assert torch.equal(x, direct)
    with pytest.raises(ValueError, match="sampler must be one of"):
        generate(model, grid, 3, "ddim", 5, {"y": y}, progress=False)
    guided = generate(model, grid, 3, "euler", 5, {"y": y}, seed=3, progress=False,
                      guidance=lambda d: ClassifierFreeGuidance(d, w=2.0))
    assert guided.shape == x.shape and not torch.equal(guided, generate(model, grid, 3, "euler", 5, {"y": y}, seed=3,
                                                                         progress=False))
    with pytest.raises(ValueError, match="trained as a diffusion model"):
        generate(model, NoiseSchedule.linear(100), 3, "euler", 5, {"y": y}, progress=False)


class LabelledVelocity(torch.nn.Module):
    """A velocity that depends on x, t and the label (null class 2): enough to tell the mixes apart."""

    prediction, num_classes, image_size, in_channels = "v", 2, None, 3

    def forward(self, x_t, k, y=None):
        return torch.sin(x_t + 0.01 * k[:, None]) + torch.tensor([0.5, -0.3, 0.0], dtype=x_t.dtype)[y][:, None]


def test_classifier_free_guidance_of_a_flow_mixes_the_velocity():
    """On the flow's grid CFG gives v' = (1 + w) v(x_t, y) - w v(x_t, null), read as both ends of the path,
    at t = 1 too (where x0_hat cannot be recovered from eps_hat); guided Euler sampling takes that velocity."""
    net, grid, w = LabelledVelocity().double(), FlowGrid(10), 1.5
    guided = ClassifierFreeGuidance(VelocityDenoiser(net, grid), w=w)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1])
    for k in (9, 4, 0):                                       # t = 1, 0.5, 0.1
        t = torch.full((4,), k)
        tau = (k + 1) / 10
        v = (1 + w) * net(x, t, y=y) - w * net(x, t, y=torch.full_like(y, 2))
        pred = guided(x, t, y=y)
        assert torch.allclose(pred.x0, x - tau * v, atol=1e-13) and torch.allclose(pred.eps, x + (1 - tau) * v, atol=1e-13)
    one = flow_sample(net, x_T=x, steps=1, T=10, model_kwargs={"y": y}, progress=False,
                      guidance=lambda d: ClassifierFreeGuidance(d, w=w))
    assert torch.allclose(one, guided(x, torch.full((4,), 9), y=y).x0, atol=1e-13)     # one Euler step from t = 1
    with pytest.raises(ValueError, match="rescale"):
        ClassifierFreeGuidance(VelocityDenoiser(net, grid), w=w, rescale=0.5)
