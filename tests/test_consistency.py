"""Consistency models (Song et al., 2023), tested against exact answers.

* The boundary condition f(x, t_min) = x holds exactly for any network, and x0_hat of every
  parameterisation is c_skip x + c_out F with (c_skip, c_out) = (1, 0) at the data.
* The paper's own constants: the EDM scalings at sigma_min, the Karras grid on N = 11 and the CT
  schedules N(k), mu(k) at the start and end of CIFAR-10's run (values computed from the formulas
  by hand, not by the code under test).
* For Gaussian data x ~ N(0, C^2 I) the consistency function is the probability-flow map in closed
  form (``GaussianData.flow``): its CD loss against a DDIM teacher is the solver's error, which
  shrinks as the grid gets finer, and grows for a perturbed f. A linear student trained by CD with
  the Trainer converges to the fixed point of the DDIM steps, a product of per-step factors.
* Multistep consistency sampling with the exact f reproduces N(0, C^2) after one call and after two.
* The target network is an EMA of the student that no gradient reaches, shares the student's
  dropout mask, and is what a checkpoint saves (not the teacher).
"""

import math

import pytest
import torch

from lesson_lib.diffusion.consistency import (ConsistencyDistillation, boundary_scalings, consistency_function,
                                              ct_schedule, edm_scalings, karras_sigmas, pseudo_huber, vp_sigma)
from lesson_lib.diffusion.denoiser import Denoiser
from lesson_lib.diffusion.distillation import distillation_timesteps
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.sampling import consistency_sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import consistency_step
from lesson_lib.models.base import Model
from lesson_lib.training.trainer import TrainConfig, Trainer
from test_distillation import LinearX0Student      # f = w_t x_t, one weight per timestep, starting at 0

C = 0.5
T = 100


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.from_name("linear", T)


class TinyNet(Model):
    """Nonlinear in x, depends on t and y, with dropout (for the shared-mask test)."""

    def __init__(self, dim=3, prediction="v", dropout=0.0):
        super().__init__()
        self.config = {"dim": dim, "prediction": prediction, "dropout": dropout}
        self.prediction, self.num_classes, self.in_channels = prediction, 2, dim
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(dim + 1, dim)
        self.emb = torch.nn.Embedding(3, dim)
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, x, t, y=None):
        out = self.drop(torch.tanh(self.lin(torch.cat([x, (t.to(x.dtype) / T)[:, None]], 1)))) + x
        return out if y is None else out + self.emb(y)


class ExactF(GaussianData):
    """The exact consistency function of N(0, C^2 I) as an x0-predicting model: f(x_t, t) =
    the probability-flow map from t to the data, times 1 + tilt (t + 1) / T (tilt = 0: exact; else
    f is no longer the same along a trajectory)."""

    def __init__(self, schedule, dim=2, tilt=0.0):
        super().__init__(schedule, std=C, prediction="x0", dim=dim)
        self.tilt = tilt

    def forward(self, x_t, t, **cond):
        gain = 1 + self.tilt * (t.to(x_t.dtype)[:, None] + 1) / T
        return gain * self.flow(x_t, t, torch.full_like(t, -1))


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_the_boundary_is_exact_for_any_network(schedule, prediction):
    net = TinyNet(prediction=prediction)
    denoise = Denoiser(net, schedule)
    x = torch.randn(6, 3) * 3
    at_data = consistency_function(denoise, x, torch.full((6,), -1))
    assert torch.equal(at_data, x)
    t = torch.tensor([-1, 0, 5, 50, 99, -1])
    f = consistency_function(denoise, x, t)
    assert torch.equal(f[[0, 5]], x[[0, 5]])
    c_skip, c_out = boundary_scalings(schedule, t, prediction)
    x0_hat = denoise(x, t.clamp(min=0)).x0
    expected = c_skip[:, None].float() * x + c_out[:, None].float() * net(x, t.clamp(min=0))
    assert torch.allclose(f[1:5], x0_hat[1:5]) and torch.allclose(f[1:5], expected[1:5], atol=1e-5)
    assert c_skip[0] == 1 and c_out[0] == 0


def test_v_scalings_are_edm_with_unit_sigma_data_in_vp_variables(schedule):
    """A v-network's x0_hat is the paper's f with sigma_d = 1, sigma_min = 0, on x / sqrt(alpha-bar):
    c_skip^VP = c_skip^EDM / sqrt(alpha-bar) = sqrt(alpha-bar), c_out^VP = -c_out^EDM."""
    t = torch.arange(-1, T)
    sigma = vp_sigma(schedule, t)
    assert sigma[0] == 0 and torch.all(sigma[1:] > 0)
    c_skip, c_out = boundary_scalings(schedule, t, "v")
    e_skip, e_out = edm_scalings(sigma, sigma_min=0.0, sigma_data=1.0)
    alpha_bar = schedule.alpha_bars_with_0[t + 1]
    assert torch.allclose(c_skip, e_skip / alpha_bar.sqrt(), rtol=1e-12)
    assert torch.allclose(c_out, -e_out, rtol=1e-12, atol=1e-15)


def test_paper_constants():
    c_skip, c_out = edm_scalings(torch.tensor([0.002, 80.0], dtype=torch.float64))
    assert c_skip[0] == 1 and c_out[0] == 0
    assert c_skip[1].item() == pytest.approx(0.25 / (79.998 ** 2 + 0.25), rel=1e-12)
    assert c_out[1].item() == pytest.approx(0.5 * 79.998 / math.sqrt(6400.25), rel=1e-12)
    # the N = 11 grid of sigma_min 0.002, sigma_max 80, rho 7 (Karras et al. 2022, Eq. 5)
    pinned = [0.002, 0.0167, 0.0851, 0.3183, 0.9654, 2.5152, 5.8389, 12.3816, 24.4083, 45.3137, 80.0]
    assert karras_sigmas(11).tolist() == pytest.approx(pinned, abs=6e-5)
    # CT on CIFAR-10: s0 = 2, s1 = 150, mu0 = 0.9, K = 800k
    assert ct_schedule(0, 800_000) == (2, pytest.approx(0.81, abs=1e-12))
    N, mu = ct_schedule(800_000, 800_000)
    assert N == 151 and mu == pytest.approx(0.998596, abs=1e-6)       # 0.9 ** (2 / 150)
    assert ct_schedule(200_000, 800_000)[0] == 76          # ceil(sqrt(0.25 * 22797 + 4) - 1) + 1 = ceil(74.52) + 1


def test_gaussian_consistency_function_is_the_closed_form(schedule):
    """f(x_t, t) = C / sqrt(C^2 + sigma_t^2) * x_t / sqrt(alpha-bar_t), on the course's grid and at the VE levels
    sigma = 0.1, 1 and 80 of a schedule built to have them, where the paper's factors for sigma_d = C = 0.5 are
    0.98058, 0.44722 and 0.0062499."""
    t = torch.arange(T)
    x = torch.randn(T, 2, dtype=torch.float64)
    f = ExactF(schedule).forward(x, t)
    sigma, alpha_bar = vp_sigma(schedule, t), schedule.alpha_bars_with_0[t + 1]
    factor = C / (C ** 2 + sigma ** 2).sqrt()
    assert torch.allclose(f, (factor / alpha_bar.sqrt())[:, None] * x, rtol=1e-12)
    levels = torch.tensor([0.1, 1.0, 80.0], dtype=torch.float64)
    alpha_bars = 1 / (1 + levels ** 2)                          # sigma^2 = (1 - alpha-bar) / alpha-bar
    betas = 1 - alpha_bars / torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
    ve = NoiseSchedule(betas)
    assert torch.allclose(vp_sigma(ve, torch.arange(3)), levels, rtol=1e-12)
    x_ve_one = alpha_bars.sqrt()[:, None].expand(3, 2)          # x_t of the VE point x_0 + sigma eps = 1
    f = ExactF(ve).forward(x_ve_one, torch.arange(3))[:, 0]
    assert f.tolist() == pytest.approx([0.98058, 0.44722, 0.0062499], abs=1e-5)


def cd_loss(schedule, student, intervals, n=4096, seed=0):
    objective = ConsistencyDistillation(schedule, student, GaussianData(schedule, std=C, prediction="eps", dim=2),
                                        intervals=intervals, mu=0.0, distance="l2")
    x0 = GaussianData(schedule, std=C, dim=2).sample(n, torch.Generator().manual_seed(seed))
    return objective(student, student, x0, {}, torch.Generator().manual_seed(seed + 1)).item()


def test_cd_loss_is_the_solver_error_at_the_oracle(schedule):
    """At the exact consistency function the CD loss is only DDIM's error on one interval, which
    shrinks as the grid gets finer; f tilted by up to 10% along the trajectory costs far more."""
    exact = [cd_loss(schedule, ExactF(schedule), n) for n in (4, 10, 25, 100)]
    assert exact[0] > exact[1] > exact[2] > exact[3] >= 0
    assert exact[2] / exact[3] > 100          # DDIM's local error is O(h^2), so its square shrinks as h^4 (256x)
    assert exact[3] < 1e-6
    for n, at_oracle in zip((4, 10, 25, 100), exact):
        assert cd_loss(schedule, ExactF(schedule, tilt=0.1), n) > 1.1 * at_oracle
    assert cd_loss(schedule, ExactF(schedule, tilt=0.1), 100) > 4 * exact[3]


def ddim_fixed_point(schedule, grid):
    """The consistency function of the DDIM teacher on ``grid`` for N(0, C^2): f(x_{grid[k]}) =
    w_k x with w_k = w_{k-1} m_k, m_k the linear DDIM step grid[k] -> grid[k-1], w_0 = 1 (the data)."""
    ab = schedule.alpha_bars_with_0
    alpha, sigma = (lambda u: ab[u + 1].sqrt()), (lambda u: (1 - ab[u + 1]).sqrt())
    a = lambda u: alpha(u) * C ** 2 / (alpha(u) ** 2 * C ** 2 + sigma(u) ** 2)   # noqa: E731  x0_hat = a z
    w = {grid[0]: torch.tensor(1.0, dtype=torch.float64)}
    for k in range(1, len(grid)):
        t, s = grid[k], grid[k - 1]
        w[t] = w[s] * (alpha(s) * a(t) + sigma(s) / sigma(t) * (1 - alpha(t) * a(t)))
    return w


def test_linear_student_converges_to_the_teachers_consistency_function(schedule):
    intervals = 5
    grid = distillation_timesteps(T, intervals)
    data = GaussianData(schedule, std=C, dim=2).sample(4096, torch.Generator().manual_seed(0)).float()
    objective = ConsistencyDistillation(schedule, LinearX0Student(), GaussianData(schedule, std=C, prediction="eps", dim=2),
                                        intervals=intervals, mu=0.0, distance="l2")
    trainer = Trainer(LinearX0Student(), data, objective, TrainConfig(batch_size=256, lr=0.05, ema_decay=0.0, seed=0,
                                                              warmup_steps=0, lr_decay_steps=600), device="cpu")
    trainer.run(600, progress=False)
    expected = ddim_fixed_point(schedule, grid)
    learned = trainer.model.w.detach().double()
    for t in grid[1:]:
        assert learned[t].item() == pytest.approx(expected[t].item(), abs=0.01), t
    # the teacher's fixed point approaches the exact flow map as the grid gets finer (DDIM shrinks on few steps)
    exact = ExactF(schedule).forward(torch.ones(1, 2, dtype=torch.float64), torch.tensor([T - 1]))[0, 0].item()
    gaps = [abs(ddim_fixed_point(schedule, distillation_timesteps(T, n))[T - 1].item() - exact) for n in (5, 25, 100)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.03 * exact
    assert 3 < gaps[1] / gaps[2] < 5          # first order: 4 times the steps, a quarter of the error


def test_consistency_sampling_of_the_exact_f_gives_the_data(schedule):
    n = 20000
    g = torch.Generator().manual_seed(0)
    exact = ExactF(schedule, dim=1)
    one = consistency_sample(exact, schedule, x_T=torch.randn(n, 1, generator=g, dtype=torch.float64),
                             timesteps=[T - 1], progress=False, generator=g)
    two = consistency_sample(exact, schedule, x_T=torch.randn(n, 1, generator=g, dtype=torch.float64),
                             timesteps=[T - 1, T // 2], progress=False, generator=g)
    for x in (one, two):
        assert x.mean().item() == pytest.approx(0.0, abs=0.02)
        assert x.std().item() == pytest.approx(C, rel=0.02)


def test_consistency_step(schedule):
    x0, noise = torch.randn(4, 3), torch.randn(4, 3)
    pred = Denoiser(TinyNet(), schedule)(torch.randn(4, 3), torch.full((4,), 50))._replace(x0=x0)
    t, s = torch.full((4,), 50), torch.full((4,), 20)
    a_s = schedule.alpha_bars_with_0[21].float()
    assert torch.allclose(consistency_step(schedule, x0, t, s, pred, noise), a_s.sqrt() * x0 + (1 - a_s).sqrt() * noise)
    assert torch.equal(consistency_step(schedule, x0, t, torch.full((4,), -1), pred), x0)


def test_target_is_an_ema_that_no_gradient_reaches(schedule, tmp_path):
    data, labels = torch.randn(64, 3), torch.randint(0, 2, (64,))
    student = TinyNet()
    objective = ConsistencyDistillation(schedule, student, TinyNet(prediction="v"), intervals=4, mu=0.9)
    assert all(not p.requires_grad for p in objective.target.parameters())
    assert not any(k.startswith("teacher") for k in objective.state_dict())
    trainer = Trainer(student, data, objective, TrainConfig(batch_size=16, lr=1e-2, ema_decay=0.0, seed=0),
                      cond={"y": labels}, device="cpu", checkpoint_path=tmp_path / "cm.pt")
    before = [p.clone() for p in objective.target.parameters()]
    trainer.run(1, progress=False)
    for p_target, p_before, p in zip(objective.target.parameters(), before, trainer.model.parameters()):
        assert p_target.grad is None
        assert torch.allclose(p_target, 0.9 * p_before + 0.1 * p.detach(), atol=1e-7)
    trainer.run(3, progress=False)
    trainer.save()
    again = Trainer(TinyNet(), data, ConsistencyDistillation(schedule, TinyNet(), TinyNet(prediction="v"), 4, 0.9),
                    TrainConfig(batch_size=16, lr=1e-2, ema_decay=0.0, seed=0), cond={"y": labels}, device="cpu",
                    checkpoint_path=tmp_path / "cm.pt")
    assert again.resume() and again.step == 3
    for a, b in zip(again.objective.target.parameters(), objective.target.parameters()):
        assert torch.equal(a, b)


def test_student_and_target_share_the_dropout_mask(schedule):
    """With the target equal to the student and x^_s = x_t at s = t, the only difference left is the
    dropout mask: the loss is exactly 0 when the target replays the student's mask."""

    class SameTime(ConsistencyDistillation):
        def pairs(self, x0, generator):
            t = torch.full((x0.shape[0],), 40)
            return t, t, torch.zeros_like(x0), x0

        def ode_step(self, x0, x_t, t, s, eps, cond):
            return x_t

    student = TinyNet(dropout=0.5).train()
    objective = SameTime(schedule, student, teacher=None, intervals=4, mu=0.0)
    x0 = torch.randn(32, 3)
    assert objective(student, student, x0, {}, torch.Generator()).item() == 0.0
    state = torch.get_rng_state()
    a = student(x0, torch.full((32,), 40))
    assert not torch.equal(a, student(x0, torch.full((32,), 40)))        # the masks do differ between calls
    torch.set_rng_state(state)


def test_consistency_training_steps_with_the_true_x0(schedule):
    objective = ConsistencyDistillation(schedule, TinyNet(), teacher=None, intervals=4)
    x0, eps = torch.randn(4, 3), torch.randn(4, 3)
    t, s = torch.tensor([99, 99, 49, 24]), torch.tensor([74, 74, 24, -1])
    x_s = objective.ode_step(x0, None, t, s, eps, {})
    a = schedule.alpha_bars_with_0[s + 1].float()[:, None]
    assert torch.allclose(x_s[:3], (a.sqrt() * x0 + (1 - a).sqrt() * eps)[:3])
    assert torch.equal(x_s[3], x0[3])
    assert objective.config()["name"] == "consistency_training"


def test_pseudo_huber():
    delta = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(pseudo_huber(delta, 0.1), torch.tensor([math.sqrt(25.01) - 0.1, 0.0]))


def test_bad_arguments_name_the_fix(schedule):
    with pytest.raises(ValueError, match="mu"):
        ConsistencyDistillation(schedule, TinyNet(), mu=1.0)
    with pytest.raises(ValueError, match="distance"):
        ConsistencyDistillation(schedule, TinyNet(), distance="lpips")
    with pytest.raises(TypeError, match="teacher"):
        ConsistencyDistillation(schedule, TinyNet(), teacher=lambda x, t: x)
    with pytest.raises(ValueError, match="intervals"):
        ConsistencyDistillation(schedule, TinyNet(), intervals=0)


def test_shipped_consistency_model_draws_its_class_in_one_call():
    """mnist_consistency loads against its card's hash and, on one call (its card's default in the command
    lines' ``generate``), draws digits the course classifier (which took no part) recognises: the card records
    its accuracy at n = 500; 50 samples must give >= 80%. ``generate`` is the one loop's consistency_sample."""
    from lesson_lib.evaluation.judges import class_accuracy
    from lesson_lib.pretrained import load_pretrained, model_card
    from lesson_lib.sample import generate, timesteps_for
    card = model_card("mnist_consistency")
    assert card["sampling"] == {"sampler": "consistency", "steps": 1, "grid": "distillation"}
    model, schedule = load_pretrained("mnist_consistency")
    labels = torch.arange(50) % 10
    images = generate(model, schedule, 50, "consistency", None, {"y": labels}, seed=0, progress=False)
    again = consistency_sample(model, schedule, (50, 1, 28, 28), timesteps=[999], clip_x0=True,
                               model_kwargs={"y": labels}, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(images, again) and images.abs().max() <= 1
    assert class_accuracy(images, labels)["accuracy"] >= 0.8
    assert timesteps_for(schedule, "consistency", 4) == [999, 749, 499, 249]
    with pytest.raises(ValueError, match="guidance"):
        generate(model, schedule, 2, "consistency", 1, {"y": labels[:2]}, guidance=lambda d: d, progress=False)
