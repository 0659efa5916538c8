"""Flow matching (Lipman et al., 2023; Liu et al., 2023, "rectified flow"): the straight path, its
velocity, logit-normal t, the objective, and its sampler as a preset of the one loop.

Why one module of about 300 lines: the path, the objective trained on it and the sampler that
integrates it share one convention (t = 1 noise, v = eps - x_0) and its grid; split apart, a
reader would meet that convention in three files.

The convention, stated once and kept: t = 1 is the noise, t = 0 the data (the direction of the
course's timesteps, and of minRF and Stable Diffusion 3), on the straight path

    x_t = (1 - t) x_0 + t eps,        dx_t / dt = v = eps - x_0,

so sampling integrates dx/dt = v_theta(x, t) from t = 1 (x_1 = eps ~ N(0, I)) down to t = 0.
Lipman et al. and torchcfm write the other direction, x_t = t x_1 + (1 - t) x_0 with x_0 the noise
and x_1 the data; their time is 1 - t, their target x_1 - x_0 is -v, and they integrate upwards.
Target, time and direction flip together: flipping only one of them is the classic bug.

A velocity is a denoiser. From (x_t, v) both ends of the path follow exactly,

    x0_hat = x_t - t v,        eps_hat = x_t + (1 - t) v,                       (:func:`to_x0_eps`)

so a velocity network is read as a :class:`~lesson_lib.diffusion.denoiser.Prediction` and the loop
runs unchanged. The Euler step
x_s = x_t + (s - t) v equals (1 - s) x0_hat + s eps_hat: DDIM's Eq. 12 (eta = 0) on the path.

The link to the VP schedules: x_t / c_t with c_t = sqrt((1 - t)^2 + t^2) is a VP state
sqrt(alpha-bar) x_0 + sqrt(1 - alpha-bar) eps with

    alpha-bar(t) = (1 - t)^2 / ((1 - t)^2 + t^2),   t(alpha-bar) = sqrt(1 - alpha-bar) / (sqrt(alpha-bar) + sqrt(1 - alpha-bar))

(:func:`vp_level`, :func:`flow_time`): the same signal-to-noise ratio, another scale. Since DDIM
needs only (x0_hat, eps_hat) and is scale-equivariant, one Euler step of the flow from t to s is
one DDIM step between the matching VP levels, exactly (the tests check it to 1e-10 in float64).

Choices, and why:

* The time grid. The loop visits integer code indices; here code index k is flow time
  t_k = (k + 1) / T (k = T - 1 is t = 1, the noise; s = -1 is t = 0, the data), the course's own
  indexing (code index is the paper's t + 1). :class:`FlowGrid` holds these times, and the
  matching VP levels as ``alpha_bars_with_0`` so that the steps of :mod:`.steps` and the oracles of
  :mod:`.oracles` read it as they read a noise schedule. It is not a chain: a flow has no betas or
  posterior, and its last level alpha-bar = 0 (t = 1) is one a NoiseSchedule refuses (beta = 1).
  "trailing" spacing gives the uniform grid t = 1, 1 - 1/N, ..., 1/N when N divides T.
* The network's time input. The course's networks take integer timesteps (their input check
  refuses floats), so a network sees n(t) = round(T t) - 1 clamped to 0..T-1 (:func:`network_time`):
  on the grid that is the code index k itself, so a flow network sees the same integers a DDPM does;
  off the grid (training draws a continuous t) it is the nearest one, 1/(2T) away at most.
* The steps. Euler and Heun move x on the flow's own time, in the flow's own variable
  (:func:`flow_euler_step`, :func:`flow_heun_step`). The probability-flow solvers of :mod:`.ode`
  are not reused: they work in EDM's sigma = t / (1 - t), which is infinite at t = 1, where a
  flow starts; and Heun in sigma is another method than Heun in t (the trapezoid of another
  variable). Euler is the same in both (it is DDIM), which the tests check instead.
  Heun corrects every step, the last included (the velocity at t = 0 is finite): N steps cost
  2N network calls.
* The loss weighting. ||v_theta - v||^2 = ||eps_hat - eps||^2 / (1 - t)^2 = ||x0_hat - x_0||^2 / t^2
  on this path: plain flow matching is an eps-loss weighted up near the data; logit-normal t
  (Esser et al., 2024, "SD3", Sec. 3.1) puts 60.3% of the draws in [0.3, 0.7] (40% for uniform).
"""

import torch

from ..arguments import choice, integer, number
from .denoiser import Prediction
from .losses import DiffusionObjective, Objective, _mse
from .schedules import NoiseSchedule
from .ode import stateful
from .sampling import _run
from .steps import _bcast
from .timesteps import spaced

T_SAMPLINGS = ("logit_normal", "uniform")


# --- the path, its velocity, and the VP levels of the same signal-to-noise ratio ----------

def _col(t, x):
    """t (a number or a (B,) tensor) as a column that broadcasts against x, in x's dtype."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim else t


def path(x0, eps, t):
    """x_t = (1 - t) x_0 + t eps, the straight path from the data (t = 0) to the noise (t = 1)."""
    t = _col(t, x0)
    return (1 - t) * x0 + t * eps


def velocity_target(x0, eps):
    """v = dx_t / dt = eps - x_0, the regression target (constant along each straight path)."""
    return eps - x0


def to_x0_eps(x_t, t, v):
    """Both ends of the path from (x_t, v): x0_hat = x_t - t v, eps_hat = x_t + (1 - t) v."""
    t = _col(t, x_t)
    return x_t - t * v, x_t + (1 - t) * v


def vp_level(t):
    """alpha-bar(t) = (1 - t)^2 / ((1 - t)^2 + t^2): the VP level with the path's signal-to-noise
    ratio ((1 - t) / t)^2; x_t / :func:`vp_scale` is that VP state. 1 at t = 0, 0 at t = 1."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (1 - t) ** 2 / ((1 - t) ** 2 + t ** 2)


def vp_scale(t):
    """c_t = sqrt((1 - t)^2 + t^2): x_VP = x_t / c_t. 1 at both ends, 1/sqrt(2) at t = 1/2."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return ((1 - t) ** 2 + t ** 2).sqrt()


def flow_time(alpha_bar):
    """The inverse of :func:`vp_level`: t = sqrt(1 - alpha-bar) / (sqrt(alpha-bar) + sqrt(1 - alpha-bar)).
    For the course's linear schedule (T = 1000) the last level gives t = 0.99369, not 1."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return (1 - a).sqrt() / (a.sqrt() + (1 - a).sqrt())


def logit_normal(n, m=0.0, s=1.0, generator=None, device=None, dtype=torch.float32):
    """``n`` draws of t = sigmoid(u), u ~ N(m, s^2) (Esser et al., 2024, Eq. 19): the logit-normal
    law on (0, 1). With m = 0, s = 1, P(0.3 <= t <= 0.7) = 2 Phi(logit 0.7) - 1 = 0.6032."""
    n = integer(n, "n", minimum=1)
    m = number(m, "m", hint="the mean of logit t; 0 centres t on 1/2")
    s = number(s, "s", minimum=0, strict_minimum=True, hint="the spread of logit t; 1 is SD3's choice")
    u = torch.empty(n, device=device, dtype=dtype).normal_(generator=generator)
    return torch.sigmoid(m + s * u)


def network_time(t, T):
    """The integer time a course network sees for flow time t: round(T t) - 1, clamped to 0..T-1
    (on the grid t = (k + 1) / T this is k). Long tensor of t's shape."""
    return (torch.as_tensor(t) * T).round().long().sub(1).clamp(0, T - 1)


# --- the objective --------------------------------------------------------------------------

class FlowMatching(Objective):
    """The flow-matching loss (Lipman et al., 2023, Eq. 23 with the straight path; Liu et al., 2023,
    Eq. 1), with the course's direction (t = 1 noise):

        L = E_{t, x_0, eps} || v_theta(x_t, n(t)) - (eps - x_0) ||^2,   x_t = (1 - t) x_0 + t eps,

    averaged over the batch and every dimension; n(t) = :func:`network_time`. ``t_sampling`` is
    "logit_normal" (t = sigmoid(N(m, s^2)), :func:`logit_normal`) or "uniform" (U(0, 1)).
    ``class_dropout`` replaces labels by the null class as :class:`~lesson_lib.diffusion.losses.LSimple`
    does. The draws come from ``generator`` in LSimple's order: label dropout, t, eps.

    The network must be built with ``prediction="v"``: its output is read as the flow's velocity
    eps - x_0 (not Salimans & Ho's sqrt(alpha-bar) eps - sqrt(1 - alpha-bar) x_0; sample it with
    :func:`flow_sample`, not with a VP sampler). There is no noise schedule (checkpoints record
    none); ``T`` sets the network's time range 0..T-1.
    """

    def __init__(self, t_sampling="logit_normal", m=0.0, s=1.0, class_dropout=0.0, T=1000):
        super().__init__()
        self.t_sampling = choice(t_sampling, "t_sampling", T_SAMPLINGS)
        self.m = number(m, "m", hint="the mean of logit t; 0 centres t on 1/2")
        self.s = number(s, "s", minimum=0, strict_minimum=True, hint="the spread of logit t; 1 is SD3's choice")
        self.class_dropout = number(class_dropout, "class_dropout", minimum=0, maximum=1, strict_maximum=True)
        self.T = integer(T, "T", minimum=1, hint="the network's time range 0..T-1, e.g. 1000")

    def config(self):
        return {"name": "flow_matching", "t_sampling": self.t_sampling, "m": self.m, "s": self.s,
                "class_dropout": self.class_dropout, "T": self.T}

    # label dropout is LSimple's (it reads only self.class_dropout)
    drop_labels = DiffusionObjective.drop_labels

    def sample_t(self, batch, generator, device):
        """t ~ logit-normal(m, s) or U(0, 1), float32 (B,)."""
        if self.t_sampling == "uniform":
            return torch.rand(batch, generator=generator, device=device)
        return logit_normal(batch, self.m, self.s, generator=generator, device=device)

    def forward(self, net, model, x0, cond, generator):
        if getattr(model, "prediction", "v") != "v":
            raise ValueError(f"a flow-matching network predicts a velocity: build it with prediction='v', "
                             f"got prediction={model.prediction!r}")
        cond = self.drop_labels(model, cond, generator)
        t = self.sample_t(x0.shape[0], generator, x0.device)
        eps = torch.empty_like(x0).normal_(generator=generator)
        output = net(path(x0, eps, t), network_time(t, self.T), **cond)
        return _mse(output, velocity_target(x0, eps), "velocity")


# --- sampling through the one loop ------------------------------------------------------------

class FlowGrid(NoiseSchedule):
    """The flow's time grid as the loop's schedule: code index k is flow time t_k = (k + 1) / T.

    ``times_with_0`` holds 0 followed by t_0..t_{T-1} (entry s + 1 is the time of code index s; s = -1
    is the data, t = 0), ``alpha_bars_with_0`` the matching VP levels :func:`vp_level` (1, then
    down to 0 at t = 1), so that DDIM's step (:func:`~lesson_lib.diffusion.steps.ddim_step`) and
    the oracles read it as a schedule. Only these are defined: a flow has no chain (no betas, no
    posterior), and its level alpha-bar = 0 at t = 1 is one no NoiseSchedule admits.
    """

    def __init__(self, T=1000):
        self.T = integer(T, "T", minimum=1, hint="the number of grid times, e.g. 1000")
        self.times = torch.arange(1, T + 1, dtype=torch.float64) / T
        self.times_with_0 = torch.cat([torch.zeros(1, dtype=torch.float64), self.times])
        self.alpha_bars = vp_level(self.times)
        self.alpha_bars_with_0 = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars])

    def to(self, device):
        moved = object.__new__(FlowGrid)
        for name, value in vars(self).items():
            setattr(moved, name, value.to(device) if torch.is_tensor(value) else value)
        return moved

    @property
    def device(self):
        return self.times.device

    def __repr__(self):
        return f"FlowGrid(T={self.T})"


def _check_grid(schedule):
    if not isinstance(schedule, FlowGrid):
        raise TypeError(f"a flow step needs the flow's time grid, got {type(schedule).__name__}; "
                        f"sample with flow_sample(...) or pass FlowGrid(T) to sample()")
    return schedule


def _time(grid, t, x):
    """The flow time of code indices t (s = -1: 0) as a column in x's dtype."""
    return _bcast(grid.times_with_0.to(t.device)[t + 1], x)


class VelocityDenoiser:
    """``VelocityDenoiser(model, grid)(x_t, k, **cond) -> Prediction``: a velocity network on the
    flow grid ``grid`` (kept as ``.schedule``, where guidance reads it) read as x0_hat = x_t - t v,
    eps_hat = x_t + (1 - t) v (:func:`to_x0_eps`), t = t_k. The network is called as ``model(x_t, network_time(t_k, T), **cond)``; ``autocast``
    runs it under bfloat16 autocast as :class:`~lesson_lib.diffusion.denoiser.Denoiser` does."""

    def __init__(self, model, grid, autocast=False):
        if isinstance(model, VelocityDenoiser) or not callable(model) or hasattr(model, "denoise"):
            raise TypeError(f"model must be a velocity network model(x_t, t, **cond), got {type(model).__name__}")
        self.model, self.schedule, self.autocast = model, _check_grid(grid), autocast

    def __call__(self, x_t, t, **cond):
        tau = self.schedule.times_with_0.to(t.device)[t + 1]
        with torch.autocast(x_t.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            v = self.model(x_t, network_time(tau, self.schedule.T), **cond)
        if v.shape != x_t.shape:
            raise ValueError(f"the model returned shape {tuple(v.shape)} for x_t of shape {tuple(x_t.shape)}; "
                             f"a velocity has the shape of x_t")
        return Prediction(*to_x0_eps(x_t, _bcast(tau, x_t), v.to(x_t.dtype)))


def _velocity(pred):
    """v = eps_hat - x0_hat, the velocity a Prediction on the path stands for."""
    return pred.eps - pred.x0


@stateful
def flow_euler_step(schedule, x_t, t, s, pred, noise=None, state=None):
    """An Euler step of dx/dt = v on the flow grid ``schedule`` from t to s:
    x_s = x_t + (s - t) v, v = eps_hat - x0_hat; equal to (1 - s) x0_hat + s eps_hat, DDIM (eta = 0)
    on the path. ``noise`` is ignored."""
    grid = _check_grid(schedule)
    return x_t + (_time(grid, s, x_t) - _time(grid, t, x_t)) * _velocity(pred), state



@stateful
def flow_heun_step(schedule, x_t, t, s, pred, noise=None, state=None):
    """Heun's step (the explicit trapezoid) of dx/dt = v from t to s: the Euler step to x'_s, a
    second call of the denoiser there (``state["denoise"]``, the loop's own), and

        x_s = x_t + (s - t) (v(x_t, t) + v(x'_s, s)) / 2.

    Every step is corrected, the last (to t = 0) included: 2 network calls a step."""
    grid = _check_grid(schedule)
    x_euler, state = flow_euler_step(grid, x_t, t, s, pred, state=state)
    pred_s = state["denoise"](x_euler, s)
    return x_t + (_time(grid, s, x_t) - _time(grid, t, x_t)) * (_velocity(pred) + _velocity(pred_s)) / 2, state


FLOW_SOLVERS = {"euler": flow_euler_step, "heun": flow_heun_step}


def flow_sample(model, shape=None, *, steps=50, solver="euler", T=1000, x_T=None, model_kwargs=None,
                device="cpu", generator=None, return_trajectory=False, progress=True, autocast=None,
                timesteps=None, guidance=None):
    """Sample a velocity network by integrating dx/dt = v_theta from t = 1 (x_1 ~ N(0, I)) to t = 0.

    ``steps`` uniform flow times t = 1, 1 - 1/steps, ..., 1/steps (code indices ``spaced(T, steps,
    "trailing")`` on :class:`FlowGrid` (T); exact when steps divides T), or the code indices
    ``timesteps``. ``solver`` is "euler" (``steps`` network calls) or "heun" (2 ``steps`` calls).
    ``guidance`` wraps the :class:`VelocityDenoiser` as it wraps a diffusion model's denoiser, e.g.
    ``guidance=lambda d: ClassifierFreeGuidance(d, w=2)``: on the path x0_hat and eps_hat are both
    affine in v, so guiding them guides the velocity, v' = (1 + w) v(x_t, y) - w v(x_t, null). It runs
    the one loop (:func:`~lesson_lib.diffusion.sampling.sample`) with the presets' set-up, a
    :class:`VelocityDenoiser` and a flow step; returns x_0, or ``(x_0, trajectory)`` with every
    state stacked on dim 0."""
    step = FLOW_SOLVERS[choice(solver, "solver", tuple(FLOW_SOLVERS))]
    timesteps = spaced(T, steps, "trailing") if timesteps is None else [int(k) for k in timesteps]
    return _run(model, FlowGrid(T), shape, x_T, device, generator, None, False, autocast, model_kwargs, timesteps,
                step, False, lambda r: True, return_trajectory, progress, f"flow sampling ({solver})",
                guidance=guidance, denoiser=VelocityDenoiser)
