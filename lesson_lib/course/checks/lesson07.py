"""Checks for lesson 7, progressive distillation (solutions/07_distillation.ipynb).

``distillation_target`` is compared with :func:`lesson_lib.diffusion.distillation.distillation_target`
(Salimans & Ho, 2022, Algorithm 2) on random inputs, including the last step (t'' = -1, the data:
alpha'' = 1, sigma'' = 0); a second check demands the property that defines it: one DDIM step
of the student from its answer lands on the teacher's two. ``distillation_step`` takes two
optimisation steps of a tiny student with the learner's function; its losses and the student's
weights afterwards are compared with those of the library's objective (two unclipped teacher
DDIM steps, the target in float64, the truncated-SNR weight max(SNR, 1)) and plain SGD.
Total: 10 points.
"""

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import expect_close, expect_number, expect_tensor, field, pairs
from lesson_lib.course.protocol import type_name
from lesson_lib.diffusion.denoiser import Denoiser, Prediction
from lesson_lib.diffusion.forward import eps_from_x0
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import ddim_step

# What the worker loads besides this module (see lesson_lib/course/box.py): the exercise builds on
# the denoiser and ddim_step; the references (diffusion/distillation.py) are imported inside the
# judges only, so the worker never holds them.
WORKER_MODULES = ("lesson_lib.diffusion.denoiser", "lesson_lib.diffusion.steps")

T = 1000
TARGET_HINT = ("x~ = (z'' - (sigma''/sigma_t) z_t) / (alpha'' - (sigma''/sigma_t) alpha_t), with each (B,) "
               "coefficient reshaped to (B, 1, ..., 1) and everything in float64 (z_t.double()).")
STEP_HINT = ("two DDIM steps of the teacher without clipping (t -> t_mid -> s) under torch.no_grad(), "
             "the target x~ from them, the student's x0_hat at (z_t, t), the loss mean over the batch of "
             "max(SNR_t, 1) * mean over dimensions of (x0_hat - x~)^2, then zero_grad, backward, step.")


def _levels(t):
    ab = NoiseSchedule.linear(T).alpha_bars_with_0[t + 1]
    return ab.sqrt(), (1 - ab).sqrt()


# --- distillation_target --------------------------------------------------------------------

def _target_case():
    from lesson_lib.diffusion.distillation import distillation_timesteps
    grid = torch.tensor(distillation_timesteps(T, 16))
    examples = []
    for shape, dtype in [((6, 2), torch.float64), ((4, 1, 5, 5), torch.float32), ((5, 3), torch.float32)]:
        i = torch.randint(0, 8, (shape[0],))
        i[0] = 0                                   # the last step: s = -1, the data
        t, s = grid[2 * i + 2], grid[2 * i]
        (alpha_t, sigma_t), (alpha_s, sigma_s) = _levels(t), _levels(s)
        examples.append({"z_t": torch.randn(shape, dtype=dtype), "z_pp": torch.randn(shape, dtype=dtype),
                         "t": t, "s": s, "alpha_t": alpha_t, "sigma_t": sigma_t,
                         "alpha_pp": alpha_s, "sigma_pp": sigma_s})
    return {"examples": examples}


def _target_probe(ns, case):
    return [ns["distillation_target"](e["z_t"].clone(), e["z_pp"].clone(), e["alpha_t"].clone(),
                                      e["sigma_t"].clone(), e["alpha_pp"].clone(), e["sigma_pp"].clone())
            for e in case["examples"]]


def _as_tensor(got, what):
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what} returned {type_name(got)}, expected a tensor")
    return got


@check(points=3, uses=["distillation_target"], case=_target_case, probe=_target_probe)
def distillation_target_is_algorithm_2(case, answer):
    """distillation_target is Algorithm 2's x~, in float64, at every step including the last."""
    from lesson_lib.diffusion.distillation import distillation_target
    schedule = NoiseSchedule.linear(T)
    for e, got in pairs(case["examples"], answer):
        what = f"distillation_target for z_t of shape {tuple(e['z_t'].shape)}"
        _as_tensor(got, what)
        if got.dtype != torch.float64:
            raise AssertionError(f"{what} has dtype {got.dtype}: compute the target in float64 (it is a "
                                 f"difference of nearly equal numbers on fine grids). " + TARGET_HINT)
        expected = distillation_target(schedule, e["z_t"], e["t"], e["z_pp"], e["s"])
        expect_close(got, expected, what, rtol=1e-9, atol=1e-9, hint=TARGET_HINT)


@check(points=2, uses=["distillation_target"], case=_target_case, probe=_target_probe)
def one_student_step_from_the_target_is_two_teacher_steps(case, answer):
    """One DDIM step of the student from x~ (t -> t'') lands on the teacher's z''."""
    schedule = NoiseSchedule.linear(T)
    for e, got in pairs(case["examples"], answer):
        got = _as_tensor(got, "distillation_target").double()
        z_t = e["z_t"].double()
        expect_tensor(got, "distillation_target", shape=z_t.shape)
        student = Prediction(got, eps_from_x0(schedule, z_t, e["t"], got))
        expect_close(ddim_step(schedule, z_t, e["t"], e["s"], student), e["z_pp"].double(),
                     f"the DDIM step t -> t'' from your x~ (z_t of shape {tuple(z_t.shape)})",
                     rtol=1e-6, atol=1e-6, hint="x~ is defined by this property: solve "
                     "z'' = alpha'' x~ + sigma'' (z_t - alpha_t x~) / sigma_t for x~. " + TARGET_HINT)


# --- one distillation training step -----------------------------------------------------------

class TinyNet(torch.nn.Module):
    """A small conditional v-prediction network on 4-D points (float64), built from given weights."""

    prediction = "v"

    def __init__(self, weights):
        super().__init__()
        self.W = torch.nn.Parameter(weights["W"].clone())
        self.u = torch.nn.Parameter(weights["u"].clone())
        self.E = torch.nn.Parameter(weights["E"].clone())

    def forward(self, x, t, y=None):
        h = x @ self.W + (t.to(x.dtype) / T)[:, None] * self.u
        if y is not None:
            h = h + self.E[y]
        return torch.tanh(h) + 0.5 * x


def _weights(scale):
    return {"W": scale * torch.randn(4, 4, dtype=torch.float64), "u": torch.randn(4, dtype=torch.float64),
            "E": torch.randn(3, 4, dtype=torch.float64)}


def _step_case():
    from lesson_lib.diffusion.distillation import distillation_timesteps
    grid = torch.tensor(distillation_timesteps(T, 8))
    batches = []
    for _ in range(2):
        i = torch.randint(0, 4, (8,))
        i[0] = 0
        batches.append({"z_t": 2 * torch.randn(8, 4, dtype=torch.float64), "t": grid[2 * i + 2],
                        "t_mid": grid[2 * i + 1], "s": grid[2 * i], "y": torch.randint(0, 3, (8,))})
    return {"teacher": _weights(1.0), "student": _weights(1.0), "lr": 0.05, "batches": batches}


def _step_probe(ns, case):
    schedule = NoiseSchedule.linear(T)
    teacher, student = TinyNet(case["teacher"]), TinyNet(case["student"])
    optimizer = torch.optim.SGD(student.parameters(), lr=case["lr"])
    losses = [ns["distillation_step"](student, teacher, schedule, b["z_t"].clone(), b["t"], b["t_mid"],
                                      b["s"], b["y"], optimizer) for b in case["batches"]]
    losses = [float(loss) if isinstance(loss, (int, float, torch.Tensor)) and not isinstance(loss, bool)
              and (not isinstance(loss, torch.Tensor) or loss.numel() == 1) else loss for loss in losses]
    return {"losses": losses, "weights": {k: v.detach() for k, v in student.state_dict().items()}}


def _reference_step(case):
    from lesson_lib.diffusion.distillation import loss_weights, teacher_target
    schedule = NoiseSchedule.linear(T)
    teacher, student = TinyNet(case["teacher"]), TinyNet(case["student"])
    teacher.requires_grad_(False)
    optimizer = torch.optim.SGD(student.parameters(), lr=case["lr"])
    losses = []
    for b in case["batches"]:
        x_tilde = teacher_target(teacher, schedule, b["z_t"], b["t"], b["t_mid"], b["s"], y=b["y"])
        x_hat = Denoiser(student, schedule)(b["z_t"], b["t"], y=b["y"]).x0
        per_example = ((x_hat - x_tilde) ** 2).flatten(1).mean(1)
        loss = (loss_weights(schedule, b["t"], "snr_trunc") * per_example).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, {k: v.detach() for k, v in student.state_dict().items()}


@check(points=2, uses=["distillation_step"], case=_step_case, probe=_step_probe)
def distillation_step_returns_the_weighted_loss(case, answer):
    """distillation_step returns the truncated-SNR weighted x-error of the library, at both steps."""
    losses, _ = _reference_step(case)
    for k, (expected, got) in enumerate(pairs(losses, field(answer, "losses"))):
        expect_number(got, expected, f"the loss of step {k + 1}", rtol=1e-6, atol=1e-6,
                      hint="Return the loss as a number (loss.item()). " + STEP_HINT)


@check(points=3, uses=["distillation_step"], case=_step_case, probe=_step_probe)
def distillation_step_updates_the_student(case, answer):
    """After two calls of distillation_step the student's weights are the library's (SGD)."""
    _, weights = _reference_step(case)
    got_weights = field(answer, "weights")
    for name, expected in weights.items():
        expect_close(field(got_weights, name), expected,
                     f"the student's parameter {name} after two calls of distillation_step",
                     rtol=1e-6, atol=1e-8, hint=STEP_HINT)
