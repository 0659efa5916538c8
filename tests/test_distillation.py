"""Progressive distillation (Salimans & Ho, 2022, Algorithm 2), tested against exact answers.

* One student DDIM step from the target x~ lands on the teacher's two DDIM steps, to float64
  precision, on every step of the grid (a t'/t'' swap or a wrong sigma ratio breaks it).
* At the last step (t'' = -1, the data) x~ is the teacher's mid-point x_hat.
* For Gaussian data x ~ N(0, c^2 I) the optimal denoiser is linear, x_hat = a_t z with
  a_t = alpha_t c^2 / (alpha_t^2 c^2 + sigma_t^2), so the teacher's two DDIM steps are linear and
  x~ = k_t z with k_t in closed form. A linear student (one weight per timestep) trained with the
  Trainer and the Distillation objective must converge to k_t.
"""

import dataclasses

import pytest
import torch

from lesson_lib.diffusion.denoiser import Denoiser, Prediction
from lesson_lib.diffusion.distillation import (Distillation, distillation_target, distillation_timesteps,
                                               eps_error_gain, loss_weights, sampler_timesteps, snr,
                                               teacher_target)
from lesson_lib.diffusion.forward import eps_from_x0
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.models.base import Model
from lesson_lib.training.distill import halving_config, progressive_distillation, student_from
from lesson_lib.training.trainer import TrainConfig, Trainer, learning_rate_factor

C = 0.5          # standard deviation of the Gaussian data
T = 100


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.from_name("linear", T)


class DistilTestNet(Model):
    """A tiny conditional network for the identity tests: nonlinear in x_t, depends on t and y."""

    def __init__(self, dim=3, num_classes=2, prediction="v"):
        super().__init__()
        self.config = {"dim": dim, "num_classes": num_classes, "prediction": prediction}
        self.prediction, self.num_classes, self.in_channels = prediction, num_classes, dim
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(dim + 1, dim)
        self.emb = torch.nn.Embedding(num_classes + 1, dim)

    def forward(self, x, t, y=None):
        h = torch.cat([x, (t.to(x.dtype) / T)[:, None]], 1)
        out = torch.tanh(self.lin(h)) + x
        return out if y is None else out + self.emb(y)


class OracleX0(GaussianData):
    """The optimal denoiser of N(0, C^2 I): x_hat = a_t z (prediction 'x0'), in float64
    (lesson_lib.diffusion.oracles; a float64 parameter tells the objective its precision)."""

    def __init__(self, dim=2):
        super().__init__(NoiseSchedule.from_name("linear", T), std=C, prediction="x0", dim=dim)
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64), requires_grad=False)


class LinearX0Student(Model):
    """x_hat = w_t z: one weight per timestep, starting at 0."""

    prediction = "x0"

    def __init__(self, dim=2):
        super().__init__()
        self.config, self.in_channels = {"dim": dim}, dim
        self.w = torch.nn.Parameter(torch.zeros(T))

    def forward(self, x, t):
        return self.w[t][:, None] * x


def closed_form_k(schedule, t, t_mid, s):
    """x~ = k z for the Gaussian oracle: the DDIM step t -> s of x_hat = a_t z multiplies z by
    m(t, s) = alpha_s a_t + (sigma_s / sigma_t)(1 - alpha_t a_t)."""
    ab = schedule.alpha_bars_with_0
    alpha = lambda u: ab[u + 1].sqrt()          # noqa: E731
    sigma = lambda u: (1 - ab[u + 1]).sqrt()    # noqa: E731
    a = lambda u: alpha(u) * C ** 2 / (alpha(u) ** 2 * C ** 2 + sigma(u) ** 2)   # noqa: E731
    m = lambda u, v: alpha(v) * a(u) + sigma(v) / sigma(u) * (1 - alpha(u) * a(u))   # noqa: E731
    ratio = sigma(s) / sigma(t)
    return (m(t_mid, s) * m(t, t_mid) - ratio) / (alpha(s) - ratio * alpha(t))


def test_grid_is_nested_and_spans_the_chain():
    for n in (1, 2, 4, 8, 64, 128):
        fine, coarse = distillation_timesteps(1000, 2 * n), distillation_timesteps(1000, n)
        assert fine[::2] == coarse
        assert coarse[0] == -1 and coarse[-1] == 999 and len(coarse) == n + 1
        assert all(a < b for a, b in zip(coarse, coarse[1:]))
    assert distillation_timesteps(1000, 10)[1:] == list(range(99, 1000, 100))
    assert sampler_timesteps(1000, 4) == [999, 749, 499, 249]
    with pytest.raises(ValueError, match="steps"):
        distillation_timesteps(10, 11)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_one_student_step_from_the_target_is_two_teacher_steps(schedule, prediction):
    teacher = DistilTestNet(prediction=prediction).double()
    grid = distillation_timesteps(T, 8)
    B = 8
    torch.manual_seed(1)
    y = torch.randint(0, 2, (B,))
    for i in range(4):
        t, t_mid, s = (torch.full((B,), grid[j], dtype=torch.long) for j in (2 * i + 2, 2 * i + 1, 2 * i))
        z_t = torch.randn(B, 3, dtype=torch.float64)
        x_tilde = teacher_target(teacher, schedule, z_t, t, t_mid, s, y=y)
        denoise = Denoiser(teacher, schedule)
        z_mid = ddim_step(schedule, z_t, t, t_mid, denoise(z_t, t, y=y))
        z_pp = ddim_step(schedule, z_mid, t_mid, s, denoise(z_mid, t_mid, y=y))
        student = Prediction(x_tilde, eps_from_x0(schedule, z_t, t, x_tilde))
        assert torch.allclose(ddim_step(schedule, z_t, t, s, student), z_pp, rtol=0, atol=1e-12)
        if i == 0:    # the last step: x~ is the teacher's mid-point x_hat
            assert torch.allclose(x_tilde, denoise(z_mid, t_mid, y=y).x0, rtol=0, atol=1e-12)


def test_target_is_float64_and_a_swap_of_the_grid_is_caught(schedule):
    z_t, z_pp = torch.randn(4, 2, dtype=torch.float32), torch.randn(4, 2, dtype=torch.float32)
    t, s = torch.full((4,), 60), torch.full((4,), 20)
    x_tilde = distillation_target(schedule, z_t, t, z_pp, s)
    assert x_tilde.dtype == torch.float64
    swapped = distillation_target(schedule, z_t, t, z_pp, torch.full((4,), 40))
    assert not torch.allclose(x_tilde, swapped)


def test_gaussian_target_matches_the_closed_form(schedule):
    teacher = OracleX0()
    grid = distillation_timesteps(T, 4)
    z_t = torch.randn(5, 2, dtype=torch.float64)
    for i in range(2):
        t, t_mid, s = (grid[j] for j in (2 * i + 2, 2 * i + 1, 2 * i))
        full = lambda u: torch.full((5,), u, dtype=torch.long)   # noqa: E731
        x_tilde = teacher_target(teacher, schedule, z_t, full(t), full(t_mid), full(s))
        k = closed_form_k(schedule, t, t_mid, s)
        assert torch.allclose(x_tilde, k * z_t, rtol=0, atol=1e-12)


def test_linear_student_converges_to_the_optimal_student(schedule):
    torch.manual_seed(0)
    data = C * torch.randn(4096, 2)
    config = TrainConfig(batch_size=256, lr=0.05, lr_decay_steps=600, ema_decay=0.0, seed=3, log_every=100)
    student = LinearX0Student()
    trainer = Trainer(student, data, Distillation(schedule, OracleX0(), 2), config, device="cpu")
    trainer.run(600, progress=False)
    grid = distillation_timesteps(T, 4)
    for i in range(2):
        t, t_mid, s = grid[2 * i + 2], grid[2 * i + 1], grid[2 * i]
        k = float(closed_form_k(schedule, t, t_mid, s))
        assert abs(float(student.w.detach()[t]) - k) < 1e-3, (t, float(student.w.detach()[t]), k)
    untouched = [u for u in range(T) if u not in (grid[2], grid[4])]
    assert torch.all(student.w.detach()[untouched] == 0)   # only the student's grid is trained


def test_loss_weights_and_the_eps_gain():
    schedule = NoiseSchedule.from_name("linear", 1000)
    t = torch.tensor([0, 500, 999])
    ratio = snr(schedule, t)
    assert torch.allclose(loss_weights(schedule, t, "snr_trunc"), ratio.clamp(min=1))
    assert torch.allclose(loss_weights(schedule, t, "snr_plus_one"), ratio + 1)
    assert torch.equal(loss_weights(schedule, t, "constant"), torch.ones(3, dtype=torch.float64))
    assert float(loss_weights(schedule, t, "snr_trunc")[2]) == 1.0 and float(ratio[0]) > 1
    gain = eps_error_gain(schedule, torch.tensor([999]))
    assert 150 < float(gain) < 160          # sigma / alpha at t = T - 1 of the linear schedule
    with pytest.raises(ValueError, match="weighting"):
        loss_weights(schedule, t, "snr")


def test_v_loss_is_snr_plus_one_weighted_x_loss(schedule):
    """||v_hat - v||^2 = (SNR + 1) ||x_hat - x||^2 at fixed z_t: the 'snr_plus_one' weighting."""
    from lesson_lib.diffusion.forward import x0_from_v
    t = torch.tensor([10, 50, 90])
    z = torch.randn(3, 2, dtype=torch.float64)
    v1, v2 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    dx = x0_from_v(schedule, z, t, v1) - x0_from_v(schedule, z, t, v2)
    w = loss_weights(schedule, t, "snr_plus_one")[:, None]
    assert torch.allclose((v1 - v2) ** 2, w * dx ** 2, rtol=1e-10)


def test_learning_rate_anneals_linearly_to_zero_and_old_configs_resume(tmp_path, schedule):
    config = TrainConfig(lr=1.0, lr_decay_steps=10)
    assert [learning_rate_factor(config, s) for s in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    warm = TrainConfig(lr=1.0, warmup_steps=4, lr_decay_steps=8)
    assert learning_rate_factor(warm, 1) == pytest.approx(0.5 * (1 - 1 / 8))
    assert learning_rate_factor(TrainConfig(), 100) == 1.0
    with pytest.raises(ValueError, match="lr_decay_steps"):
        TrainConfig(lr_decay_steps=-1)
    data = torch.randn(64, 2)
    trainer = Trainer(LinearX0Student(), data, Distillation(schedule, OracleX0(), 2),
                      TrainConfig(batch_size=8, lr=0.1, lr_decay_steps=4), device="cpu",
                      checkpoint_path=tmp_path / "a.pt")
    trainer.run(2, progress=False, checkpoint_every=2)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.75)   # set for step 1
    # a checkpoint written before lr_decay_steps existed resumes under the default (0)
    state = torch.load(tmp_path / "a.pt", weights_only=False)
    state["train_config"].pop("lr_decay_steps")
    fresh = Trainer(LinearX0Student(), data, Distillation(schedule, OracleX0(), 2),
                    TrainConfig(batch_size=8, lr=0.1), device="cpu")
    fresh.load_state_dict(state)
    assert fresh.step == 2


def test_progressive_distillation_halves_and_resumes(tmp_path, schedule):
    data, labels = torch.randn(64, 3), torch.randint(0, 2, (64,))
    teacher = DistilTestNet(prediction="v")
    config = TrainConfig(batch_size=16, lr=1e-3, seed=0, log_every=2)
    run = lambda: progressive_distillation(teacher, schedule, data, {"y": labels}, start_steps=8, end_steps=2,  # noqa: E731
                                           train_steps=4, config=config, checkpoint_dir=tmp_path)
    first = run()
    assert [n for n, _ in first] == [4, 2]
    for n, trainer in first:
        assert trainer.config.ema_decay == 0 and trainer.config.lr_decay_steps == 4
        assert trainer.objective.config()["student_steps"] == n
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25)   # annealed
    again = run()     # resumes: the finished halvings are reloaded, not retrained
    for (_, a), (_, b) in zip(first, again):
        assert b.step == 4
        for pa, pb in zip(a.model.parameters(), b.model.parameters()):
            assert torch.equal(pa, pb)
    assert not torch.equal(first[0][1].model.lin.weight, teacher.lin.weight)   # the student moved
    with pytest.raises(ValueError, match="power of 2"):
        progressive_distillation(teacher, schedule, data, start_steps=12, end_steps=2)


def test_student_starts_from_the_teacher_without_dropout():
    from lesson_lib.models.unet import UNet
    teacher = UNet(in_channels=1, base_channels=8, channel_mults=[1, 2], num_res_blocks=1,
                   attention_resolutions=[], dropout=0.1, image_size=8, prediction="v")
    student = student_from(teacher)
    assert student.config["dropout"] == 0.0 and teacher.config["dropout"] == 0.1
    for a, b in zip(teacher.state_dict().values(), student.state_dict().values()):
        assert torch.equal(a, b)
    assert halving_config(TrainConfig(ema_decay=0.99, warmup_steps=5, seed=1), 40, 8) == \
        dataclasses.replace(TrainConfig(), ema_decay=0.0, warmup_steps=0, lr_decay_steps=40, seed=9)


def test_bad_arguments_name_the_fix(schedule):
    with pytest.raises(ValueError, match="teacher_steps"):
        Distillation(schedule, OracleX0(), 2, teacher_steps=3)
    with pytest.raises(TypeError, match="teacher"):
        Distillation(schedule, lambda x, t: x, 2)
    with pytest.raises(ValueError, match="weighting"):
        Distillation(schedule, OracleX0(), 2, weighting="snr")
    with pytest.raises(TypeError, match="schedule"):
        Distillation("linear", OracleX0(), 2)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_shipped_students_load_and_draw_their_class_in_their_steps(steps):
    """Each shipped student loads against its card's hash and, on its own number of DDIM steps,
    draws digits that the course classifier (which took no part in its training) recognises:
    the card records >= 96% at n = 500; 50 samples must give >= 80%."""
    from lesson_lib.evaluation.judges import class_accuracy
    from lesson_lib.pretrained import load_pretrained, model_card
    from lesson_lib.training.distill import sample_student
    name = f"mnist_distilled_{steps}"
    card = model_card(name)
    assert card["sampling"]["steps"] == steps and card["prediction"] == "v"
    assert card["evaluation"]["student"]["steps"] == steps
    model, schedule = load_pretrained(name)
    labels = torch.arange(50) % 10
    images = sample_student(model, schedule, steps, (50, 1, 28, 28), labels, torch.Generator().manual_seed(0))
    assert images.shape == (50, 1, 28, 28) and images.abs().max() <= 1
    assert class_accuracy(images, labels)["accuracy"] >= 0.8
