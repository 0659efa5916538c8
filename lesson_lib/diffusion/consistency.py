"""Consistency models (Song, Dhariwal, Chen & Sutskever, 2023): one network call from noise to data.

The probability-flow ODE (DDIM with eta = 0 and ever more steps) carries every x_t along a
trajectory that ends at one point of the data. The *consistency function* f(x_t, t) maps every
point of a trajectory to that end, so it takes the same value all along the trajectory
(self-consistency, Sec. 3 of the paper) and it is the identity at the smallest time (the
boundary condition). A network f_theta trained to have both properties generates in one call:
x_0 = f_theta(x_T, T).

**The boundary, made exact.** The paper (Sec. 3 and App. C) writes, on its VE/EDM time sigma in
[sigma_min, sigma_max] = [0.002, 80], with a free network F,

    f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(x, sigma),
    c_skip = sigma_d^2 / ((sigma - sigma_min)^2 + sigma_d^2),
    c_out  = sigma_d (sigma - sigma_min) / sqrt(sigma^2 + sigma_d^2)        (:func:`edm_scalings`)

so that c_skip = 1 and c_out = 0 at sigma_min, and f(x, sigma_min) = x holds for *any* network.
On the course's VP grid the smallest time is the data itself (code timestep -1, where DDIM's last
step lands; alpha-bar = 1, the VE noise level sigma_t = sqrt((1 - alpha-bar_t) / alpha-bar_t) is 0),
and every parameterisation of Eq. 4 already has this form, with F the network's raw output
(:func:`boundary_scalings`): for a v-prediction network

    x0_hat = sqrt(alpha-bar_t) x_t - sqrt(1 - alpha-bar_t) v_theta(x_t, t):
    c_skip(t) = sqrt(alpha-bar_t), c_out(t) = -sqrt(1 - alpha-bar_t),   both -> 1 and 0 at the data.

That is EDM's preconditioning with sigma_d = 1 and sigma_min = 0 written in VP variables. So a
consistency model here is a network read through the :class:`~lesson_lib.diffusion.denoiser.Denoiser`,
f_theta(x_t, t) = x0_hat, with f(x, -1) = x (:func:`consistency_function`), and a v teacher is
already a (poor) consistency model: DDIM on one step.

**Consistency distillation (CD, Algorithm 2).** On the nested grid of N intervals
(:func:`~lesson_lib.diffusion.distillation.distillation_timesteps`), n ~ U{0..N-1}, t = grid[n+1],
s = grid[n]:

    x_t   = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps                     (Eq. 4)
    x^_s  = DDIM_teacher(x_t, t -> s)                   one ODE step of the teacher (eta = 0, unclipped)
    loss  = d( f_theta(x_t, t), f_target(x^_s, s) )     f_target: no gradient, the same dropout mask

The target network theta^- is an exponential moving average of the student with rate mu
(theta^- <- mu theta^- + (1 - mu) theta after each step); mu = 0 is the student itself under
stop-gradient (improved CT, Song & Dhariwal 2023). At s = -1 the target is x^_s (the boundary).
d is the pseudo-Huber distance sqrt(||Delta||^2 + c^2) - c with c = 0.00054 sqrt(d) (improved CT;
LPIPS needs downloaded weights), or the squared error.

**Consistency training (CT, Algorithm 3)** needs no teacher: the ODE step is taken with the true
x_0, x^_s = sqrt(alpha-bar_s) x_0 + sqrt(1 - alpha-bar_s) eps with the *same* eps (the one-sample
estimate of the score; ``teacher=None`` here). Its target is noisy, which is why CT from scratch
needs hundreds of thousands of steps; started from a trained diffusion model (easy consistency
tuning, Geng et al. 2024) it is cheap.

**Sampling (Algorithm 1).** x^_0 = f(x_T, T); for each further time s: x_s = sqrt(alpha-bar_s)
x^_0 + sqrt(1 - alpha-bar_s) z, a fresh z (:func:`~lesson_lib.diffusion.steps.consistency_step`),
then x^_0 = f(x_s, s). It is a step of the one sampling loop
(:func:`~lesson_lib.diffusion.sampling.consistency_sample`).
"""

import copy
import math

import torch

from ..arguments import choice, integer, number
from ..models.base import check_prediction
from .denoiser import Denoiser
from .distillation import distillation_timesteps
from .forward import q_sample, to_x0_eps
from .losses import DiffusionObjective
from .steps import ddim_step

DISTANCES = ("pseudo_huber", "l2")


# --- the parameterisation ---------------------------------------------------------------------

def edm_scalings(sigma, sigma_min=0.002, sigma_data=0.5):
    """c_skip and c_out of the paper's boundary condition on its VE time sigma (Song et al. 2023,
    App. C; ``get_scalings_for_boundary_condition`` of the reference code):
    c_skip = sigma_d^2 / ((sigma - sigma_min)^2 + sigma_d^2), c_out = sigma_d (sigma - sigma_min) /
    sqrt(sigma^2 + sigma_d^2). At sigma = sigma_min they are exactly 1 and 0. Float64 tensors."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    c_skip = sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)
    c_out = sigma_data * (sigma - sigma_min) / (sigma ** 2 + sigma_data ** 2).sqrt()
    return c_skip, c_out


def vp_sigma(schedule, t):
    """The VE noise level of the VP timestep t, sigma_t = sqrt((1 - alpha-bar_t) / alpha-bar_t):
    x_t / sqrt(alpha-bar_t) = x_0 + sigma_t eps. t = -1 (the data) gives 0. Float64, shape of ``t``."""
    alpha_bar = schedule.alpha_bars_with_0.to(t.device)[t + 1]
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def boundary_scalings(schedule, t, prediction="v"):
    """(c_skip, c_out) with x0_hat = c_skip x_t + c_out F(x_t, t) for a network F that predicts
    ``prediction`` (Eq. 4 read as the paper's f), float64 of the shape of ``t``:

        eps: c_skip = 1 / sqrt(alpha-bar_t),  c_out = -sqrt(1 - alpha-bar_t) / sqrt(alpha-bar_t)
        v:   c_skip = sqrt(alpha-bar_t),      c_out = -sqrt(1 - alpha-bar_t)
        x0:  c_skip = 0,                      c_out = 1

    and (1, 0) at the data, t = -1 (for eps and v the formulas give it; x0 needs it said)."""
    check_prediction(prediction)
    alpha_bar = schedule.alpha_bars_with_0.to(t.device)[t + 1]
    a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction == "eps":
        c_skip, c_out = 1 / a, -b / a
    elif prediction == "v":
        c_skip, c_out = a, -b
    else:
        c_skip, c_out = torch.zeros_like(a), torch.ones_like(a)
    data = t == -1
    return torch.where(data, torch.ones_like(a), c_skip), torch.where(data, torch.zeros_like(a), c_out)


def consistency_function(denoise, x_t, t, **cond):
    """f(x_t, t): the denoiser's x0_hat for t >= 0 and x_t itself at the data (t = -1), the boundary
    condition f(x, t_min) = x, exact for any network. ``t`` is a long tensor (B,)."""
    data = (t == -1).reshape(-1, *([1] * (x_t.ndim - 1)))
    if bool(data.all()):
        return x_t
    x0_hat = denoise(x_t, t.clamp(min=0), **cond).x0
    return torch.where(data, x_t, x0_hat)


# --- the schedules of the paper (for the lesson's comparison; the course uses the nested grid) ----

def karras_sigmas(N, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """The paper's N boundaries on its VE time (Karras et al. 2022, Eq. 5), smallest first:
    sigma_i = (sigma_min^(1/rho) + (i - 1)/(N - 1) (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho."""
    N = integer(N, "N", minimum=2)
    i = torch.arange(N, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (lo + i / (N - 1) * (hi - lo)) ** rho


def ct_schedule(k, K, s0=2, s1=150, mu0=0.9):
    """The number of boundaries N(k) and the target EMA rate mu(k) at training step k of K for
    consistency training (Song et al. 2023, App. C; CIFAR-10: s0 = 2, s1 = 150, mu0 = 0.9):
    N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1,  mu(k) = exp(s0 log(mu0) / (N(k) - 1))."""
    k, K = integer(k, "k", minimum=0), integer(K, "K", minimum=1)
    N = math.ceil(math.sqrt(k / K * ((s1 + 1) ** 2 - s0 ** 2) + s0 ** 2) - 1) + 1
    return N, math.exp(s0 * math.log(mu0) / (N - 1))


# --- the objective ----------------------------------------------------------------------------

def pseudo_huber(delta, c):
    """sqrt(||delta||^2 + c^2) - c per example (improved CT, Song & Dhariwal 2023): ~||delta||^2 / (2c)
    near 0, ~||delta|| far away, so a few large errors do not dominate. Shape (B,)."""
    return ((delta.flatten(1) ** 2).sum(1) + c ** 2).sqrt() - c


class ConsistencyDistillation(DiffusionObjective):
    """Consistency distillation (``teacher`` given) or consistency training (``teacher=None``) for
    :class:`~lesson_lib.training.trainer.Trainer`; see the module docstring.

    Args:
        schedule: the noise schedule of teacher and student.
        student: the network being trained (its initial weights start the target network).
        teacher: the frozen teacher network, or None for consistency training. It is not saved in
            checkpoints (the target network is).
        intervals: N, the intervals of the nested grid (:func:`distillation_timesteps`); the student
            learns f at the N grid times t >= 0.
        mu: the target network's EMA rate (0: the student itself under stop-gradient).
        distance: "pseudo_huber" (c = 0.00054 sqrt(d)) or "l2" (mean squared error).

    Each call draws, from the trainer's generator, n ~ U{0..N-1} then eps ~ N(0, I). The student and
    the target run under the same random state, so they share a dropout mask.
    """

    def __init__(self, schedule, student, teacher=None, intervals=32, mu=0.95, distance="pseudo_huber"):
        super().__init__(schedule)
        for name, net in (("student", student), ("teacher", teacher)):
            if net is not None and not isinstance(net, torch.nn.Module):
                raise TypeError(f"{name} must be a network (torch.nn.Module), got {name}={type(net).__name__}")
        self.intervals = integer(intervals, "intervals", minimum=1, maximum=schedule.T)
        self.mu = number(mu, "mu", minimum=0, maximum=1, strict_maximum=True,
                         hint="the target's EMA rate: 0 is the student under stop-gradient, 0.95 the paper's CD")
        self.distance = choice(distance, "distance", DISTANCES)
        self.teacher = None if teacher is None else teacher.eval().requires_grad_(False)
        self.target = copy.deepcopy(student).requires_grad_(False)
        grid = distillation_timesteps(schedule.T, self.intervals)
        self.register_buffer("grid", torch.tensor(grid, dtype=torch.long), persistent=False)

    def state_dict(self, *args, **kwargs):
        """The target network only (the teacher is given anew when a run resumes)."""
        return {f"target.{k}": v for k, v in self.target.state_dict().items()}

    def load_state_dict(self, state, strict=True):
        self.target.load_state_dict({k.removeprefix("target."): v for k, v in state.items()}, strict=strict)

    def config(self):
        return {"name": "consistency_distillation" if self.teacher is not None else "consistency_training",
                "intervals": self.intervals, "mu": self.mu, "distance": self.distance}

    def pairs(self, x0, generator):
        """One draw of (t, s, eps, x_t) on the grid: n ~ U{0..N-1}, t = grid[n+1], s = grid[n]."""
        n = torch.randint(0, self.intervals, (x0.shape[0],), generator=generator, device=x0.device)
        eps = torch.empty_like(x0).normal_(generator=generator)
        t, s = self.grid[n + 1], self.grid[n]
        return t, s, eps, q_sample(self.schedule, x0, t, eps, check=False)

    @torch.no_grad()
    def ode_step(self, x0, x_t, t, s, eps, cond):
        """x^_s: one DDIM step t -> s of the teacher (CD), or, without one, with the true x_0 and eps (CT)."""
        if self.teacher is None:
            return q_sample(self.schedule, x0, s.clamp(min=0), eps, check=False).where(
                (s >= 0).reshape(-1, *([1] * (x0.ndim - 1))), x0)
        pred = Denoiser(self.teacher, self.schedule)(x_t, t, **cond)
        return ddim_step(self.schedule, x_t, t, s, pred)

    def forward(self, net, model, x0, cond, generator):
        t, s, eps, x_t = self.pairs(x0, generator)
        x_s = self.ode_step(x0, x_t, t, s, eps, cond)
        state = torch.get_rng_state()                       # dropout draws from the global generator:
        output = net(x_t, t, **cond)                        # the target replays the student's mask
        if output.shape != x0.shape:
            raise ValueError(f"the student returned shape {tuple(output.shape)} but x0 has shape "
                             f"{tuple(x0.shape)}; it must map x_t to a tensor of the same shape")
        f_student = to_x0_eps(self.schedule, x_t, t, output.float(), model.prediction)[0]
        torch.set_rng_state(state)
        self.target.train(model.training)
        with torch.no_grad():
            f_target = consistency_function(Denoiser(self.target, self.schedule), x_s, s, **cond).float()
        delta = f_student - f_target
        if self.distance == "l2":
            return (delta ** 2).mean()
        return pseudo_huber(delta, 0.00054 * math.sqrt(x0[0].numel())).mean()

    @torch.no_grad()
    def after_step(self, trainer):
        """theta^- <- mu theta^- + (1 - mu) theta (the target network; the trainer's own EMA, which is
        sampled, is another average)."""
        torch._foreach_lerp_(list(self.target.parameters()),
                             [p.detach() for p in trainer.model.parameters()], 1.0 - self.mu)
        for b_target, b in zip(self.target.buffers(), trainer.model.buffers()):
            b_target.copy_(b)
