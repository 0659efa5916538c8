"""Progressive distillation (Salimans & Ho, 2022, Algorithm 2): a student learns to take in one
DDIM step what its teacher takes in two, so each halving divides the number of network calls by 2.

For a student on N steps, with the nested grid of :func:`distillation_timesteps` (the student's
steps are every other step of the teacher's 2N), one training example is

    i ~ U{0..N-1},  t = grid_{2N}[2i + 2],  t' = grid_{2N}[2i + 1],  t'' = grid_{2N}[2i]
    z_t = alpha_t x + sigma_t eps                         (alpha = sqrt(alpha-bar), sigma = sqrt(1 - alpha-bar))
    z'  = DDIM_teacher(z_t,  t  -> t')                    two unclipped DDIM steps (Song et al., Eq. 12)
    z'' = DDIM_teacher(z',   t' -> t'')
    x~  = (z'' - (sigma''/sigma_t) z_t) / (alpha'' - (sigma''/sigma_t) alpha_t)        (Algorithm 2)
    loss = w(lambda_t) || x~ - x_hat_student(z_t, t) ||^2

x~ is the x_hat for which one DDIM step t -> t'' of the student lands exactly on z''. At the last
step (t'' = -1, the data: alpha'' = 1, sigma'' = 0) the formula gives x~ = z'', the teacher's x_hat of
its second (mid-point) evaluation, as the paper's code does. The target is a difference of nearly
equal numbers on fine grids, so it is computed in float64 (the networks run in float32).

The weight w of an x-space error (Salimans & Ho, Sec. 4): "snr_trunc" = max(SNR, 1) (truncated SNR),
"snr_plus_one" = SNR + 1 (the same as an MSE on v), "constant" = 1 (an MSE on x), with
SNR_t = alpha-bar_t / (1 - alpha-bar_t). An eps-prediction student is a poor choice at few steps:
x_hat = (z_t - sigma_t eps_hat) / alpha_t multiplies eps_hat's error by sigma_t / alpha_t, which is
about 156 at t = T - 1 of the linear schedule (:func:`eps_error_gain`); v and x0 have no such gain.
"""

import torch

from ..arguments import choice, integer
from ..models.base import check_prediction
from .denoiser import Denoiser
from .forward import q_sample, to_x0_eps
from .losses import DiffusionObjective
from .steps import ddim_step

WEIGHTINGS = ("snr_trunc", "snr_plus_one", "constant")


def distillation_timesteps(T, steps):
    """The grid of a sampler on ``steps`` steps, as a list of ``steps + 1`` code timesteps from the
    data up: ``grid[0] = -1`` (the data), ``grid[k] = round(k T / steps) - 1``, so ``grid[steps] = T - 1``.

    Grids are nested: the grid on N steps is every other entry of the grid on 2N steps, so a
    student's step is exactly two of its teacher's. Sampling visits ``grid[steps], ..., grid[1]``
    and steps to -1 after the last (the course's "trailing" spacing when ``steps`` divides T)."""
    T = integer(T, "T", minimum=1)
    steps = integer(steps, "steps", minimum=1, maximum=T, hint="a sampler has between 1 and T steps")
    return [(2 * k * T + steps) // (2 * steps) - 1 for k in range(steps + 1)]


def sampler_timesteps(T, steps):
    """The timesteps a DDIM sampler on ``steps`` steps visits (largest first) on the nested grid;
    pass them to :func:`~lesson_lib.diffusion.sampling.sample` to sample a student (or the
    teacher at the same number of steps)."""
    return distillation_timesteps(T, steps)[:0:-1]


def snr(schedule, t):
    """SNR_t = alpha-bar_t / (1 - alpha-bar_t) (Kingma et al., 2021) in float64, shape of ``t``;
    t = -1 (the data) gives inf."""
    alpha_bars = schedule.alpha_bars_with_0[t + 1]
    return alpha_bars / (1 - alpha_bars)


def loss_weights(schedule, t, weighting="snr_trunc"):
    """The weight w of the squared x-space error at timesteps ``t`` (Salimans & Ho, 2022, Sec. 4):
    max(SNR, 1) ("snr_trunc"), SNR + 1 ("snr_plus_one") or 1 ("constant"); float64, shape of ``t``."""
    choice(weighting, "weighting", WEIGHTINGS)
    ratio = snr(schedule, t)
    if weighting == "snr_trunc":
        return ratio.clamp(min=1.0)
    if weighting == "snr_plus_one":
        return ratio + 1
    return torch.ones_like(ratio)


def eps_error_gain(schedule, t):
    """How much an error in eps_hat is multiplied in x_hat = (z_t - sigma_t eps_hat) / alpha_t:
    sigma_t / alpha_t = 1 / sqrt(SNR_t) (float64). v-prediction's x_hat = alpha_t z_t - sigma_t v_hat
    multiplies v_hat's error by sigma_t <= 1."""
    return snr(schedule, t).rsqrt()


def distillation_target(schedule, z_t, t, z_pp, s):
    """x~ = (z'' - (sigma''/sigma_t) z_t) / (alpha'' - (sigma''/sigma_t) alpha_t) (Algorithm 2):
    the x_hat whose DDIM step from (z_t, t) to s = t'' gives z''. Computed in float64 and returned
    in float64; ``t`` and ``s`` are long tensors (B,), s = -1 is the data (then x~ = z'')."""
    levels = schedule.alpha_bars_with_0.to(z_t.device)
    a_t, a_s = levels[t + 1], levels[s + 1]
    ratio = ((1 - a_s) / (1 - a_t)).sqrt()                        # sigma'' / sigma_t
    shape = (-1,) + (1,) * (z_t.ndim - 1)
    ratio, alpha_t, alpha_s = (v.reshape(shape) for v in (ratio, a_t.sqrt(), a_s.sqrt()))
    return (z_pp.double() - ratio * z_t.double()) / (alpha_s - ratio * alpha_t)


class _Float64Out(torch.nn.Module):
    """A network run in its own dtype on float64 inputs, its output returned in float64, so the
    teacher's DDIM steps and the target are computed in float64."""

    def __init__(self, net, dtype):
        super().__init__()
        self.net, self.dtype = net, dtype
        self.prediction = net.prediction

    def forward(self, x, t, **cond):
        return self.net(x.to(self.dtype), t, **cond).double()


@torch.no_grad()
def teacher_target(teacher, schedule, z_t, t, t_mid, s, **cond):
    """Two unclipped DDIM steps of ``teacher`` (eta = 0), z_t -> z' (at ``t_mid``) -> z'' (at ``s``),
    and the target x~ of :func:`distillation_target`, all in float64. ``t_mid = None`` takes one
    step instead (then x~ is the teacher's own x_hat: a change of parameterisation at the same
    number of steps). Returns x~ (float64)."""
    dtype = next(teacher.parameters()).dtype
    denoise = Denoiser(_Float64Out(teacher, dtype), schedule, clip_x0=False)
    z = z_t.double()
    if t_mid is not None:
        z = ddim_step(schedule, z, t, t_mid, denoise(z, t, **cond))
        z_pp = ddim_step(schedule, z, t_mid, s, denoise(z, t_mid, **cond))
    else:
        z_pp = ddim_step(schedule, z, t, s, denoise(z, t, **cond))
    return distillation_target(schedule, z_t, t, z_pp, s)


class Distillation(DiffusionObjective):
    """The distillation objective for :class:`~lesson_lib.training.trainer.Trainer`.

    Args:
        schedule: the noise schedule of teacher and student.
        teacher: the frozen teacher network (any prediction; put in eval mode, no gradients). It
            is a submodule: it moves with the objective, and its weights are *not* saved in the
            student's checkpoints (a run records the teacher's hash instead).
        student_steps: N, the student's number of DDIM steps; the teacher takes 2N.
        weighting: "snr_trunc" (default, max(SNR, 1)), "snr_plus_one" or "constant".
        teacher_steps: 2 (Algorithm 2) or 1: the target is then the teacher's own x_hat on the
            student's grid, which re-parameterises a teacher (e.g. eps -> v) without halving.

    Each call draws, from the trainer's generator, i ~ U{0..N-1} then eps ~ N(0, I): its own draw,
    on the nested grid (not :meth:`DiffusionObjective.draw`'s uniform t). The student is called
    with the batch's conditioning and its output is read as x_hat through its own ``prediction``.
    """

    def __init__(self, schedule, teacher, student_steps, weighting="snr_trunc", teacher_steps=2):
        super().__init__(schedule)
        if not isinstance(teacher, torch.nn.Module):
            raise TypeError(f"teacher must be a network (torch.nn.Module), got {type(teacher).__name__}")
        check_prediction(getattr(teacher, "prediction", "eps"))
        self.weighting = choice(weighting, "weighting", WEIGHTINGS)
        self.teacher_steps = choice(teacher_steps, "teacher_steps", (1, 2),
                                    hint="2 halves the steps (Algorithm 2), 1 keeps them")
        self.student_steps = integer(student_steps, "student_steps", minimum=1)
        self.teacher = teacher.eval().requires_grad_(False)
        fine = distillation_timesteps(schedule.T, self.teacher_steps * self.student_steps)
        self.register_buffer("grid", torch.tensor(fine, dtype=torch.long), persistent=False)

    def state_dict(self, *args, **kwargs):
        """The student's checkpoint holds no copy of the teacher (its hash is recorded instead)."""
        return {}

    def load_state_dict(self, state, strict=True):
        """Nothing to restore: the teacher is given anew when a run resumes."""

    def config(self):
        return {"name": "distillation", "student_steps": self.student_steps,
                "teacher_steps": self.teacher_steps, "weighting": self.weighting}

    def forward(self, net, model, x0, cond, generator):
        B, device, k = x0.shape[0], x0.device, self.teacher_steps
        i = torch.randint(0, self.student_steps, (B,), generator=generator, device=device)
        t, s = self.grid[k * (i + 1)], self.grid[k * i]
        t_mid = self.grid[2 * i + 1] if k == 2 else None
        eps = torch.empty_like(x0).normal_(generator=generator)
        z_t = q_sample(self.schedule, x0, t, eps, check=False)
        with torch.autocast(device.type, enabled=False):
            x_tilde = teacher_target(self.teacher, self.schedule, z_t.float(), t, t_mid, s, **cond)
        output = net(z_t, t, **cond)
        if output.shape != x0.shape:
            raise ValueError(f"the student returned shape {tuple(output.shape)} but x0 has shape "
                             f"{tuple(x0.shape)}; it must map z_t to a tensor of the same shape")
        x_hat = to_x0_eps(self.schedule, z_t.float(), t, output.float(), model.prediction)[0]
        per_example = ((x_hat - x_tilde.float()) ** 2).flatten(1).mean(1)
        return (loss_weights(self.schedule, t, self.weighting).to(device).float() * per_example).mean()
