"""The reverse process: one loop that turns noise into data, whatever the step.

    x = x_T
    for t, s in consecutive pairs of the timestep list (s = -1 after the last):
        pred = denoise(x, t)                        # x0_hat and eps_hat  (denoiser.py)
        x = step(schedule, x, t, s, pred, noise)    # DDPM, DDIM, ...     (steps.py)

:func:`sample` is that loop. The two samplers of the course are presets of it:

* :func:`ddpm_sample`, Algorithm 2 of Ho et al. (2020): every timestep, ancestral steps with
  sigma_t^2 = beta_t or beta-tilde_t. Ho et al. found both give similar sample quality: beta_t
  is the right choice when x_0 ~ N(0, I), beta-tilde_t when x_0 is a single point (Sec. 3.2).
* :func:`ddim_sample`, Song et al. (2021), Eq. 12: ``steps`` timesteps, deterministic for
  eta = 0; eta = 1 on every step is DDPM with beta-tilde.

Every sampler accepts any callable ``model(x_t, t, **model_kwargs)`` that returns an eps, x0 or
v prediction; what it predicts is read from ``model.prediction`` (or given as ``prediction=``).
A ``callback`` sees every step (x_t, x0_hat and x_s), so a lesson can draw x0_hat along the
chain without a second loop. Guidance wraps the denoiser (or, the mean form of classifier
guidance, is the step); fewer steps change the timestep list (:mod:`lesson_lib.diffusion.timesteps`);
none of them touches the loop. Multistep consistency sampling (lesson 9) is a third preset,
:func:`consistency_sample`: the same loop with another step. The probability-flow ODE's solvers
(Euler, Heun, DPM-Solver++(2M); :mod:`lesson_lib.diffusion.ode`) are a fourth, :func:`ode_sample`.

A step with state. Heun needs a second network call inside its step and DPM-Solver++(2M) the
previous step's x0_hat; a step of the chain needs neither. Rather than give these solvers a loop of
their own (as k-diffusion does), the loop threads a small dict through any step marked
``step.stateful = True``: it calls ``step(schedule, x_t, t, s, pred, noise, state)`` and expects
``(x_s, state)`` back. The loop starts the dict as ``{"denoise": d}``, d(x, t) the run's denoiser
(guidance, clipping and ``cond`` included), so a second call sees exactly what the first saw; a
step adds what it needs to carry (DPM-Solver++: ``x0`` and ``lam``). Unmarked steps are called as
before, so DDPM, DDIM, consistency and guided steps are untouched.

Why one module of about 350 lines: the loop, its presets (DDPM, DDIM, consistency, ODE) and the two
single-step helpers of lessons 1b and 2 share one set of argument checks and one set-up (``_run``);
split apart, a reader would have to follow that set-up across files to see what a preset adds.
"""

import contextlib
import functools
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from ..arguments import choice, float_tensor, integer, labels, number
from .denoiser import ClipX0, Denoiser, Prediction, bf16_supported, check_denoiser, check_returned
from .forward import check_inputs
from .ode import SOLVERS as ODE_SOLVERS
from .schedules import check_timesteps, extract
from .steps import VARIANCES, consistency_step, ddim_step, ddpm_step
from .timesteps import all_steps, check_timestep_list, spaced


class StepRecord(NamedTuple):
    """What a ``callback`` receives at each step: the step's index ``i``, the timesteps ``t``
    and ``s`` (ints; s = -1 is the data), the state x_t, the denoiser's ``pred`` at x_t, and
    the new state x_s."""

    i: int
    t: int
    s: int
    x_t: torch.Tensor
    pred: Prediction
    x_s: torch.Tensor


@contextlib.contextmanager
def evaluating(model):
    """Put an ``nn.Module`` in eval mode (no dropout) for the block, then restore its mode."""
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def _check_model_device(model, x):
    try:
        device = next(model.parameters()).device
    except (AttributeError, StopIteration):
        return
    if device != x.device:
        raise ValueError(f"the model is on {device} but x is on {x.device}; pass device={str(device)!r} "
                         f"to the sampler or move the model with model.to(...)")


def _check_cond(cond, name):
    """Keyword arguments for the network, e.g. ``{"y": labels}``: a dict or None."""
    if cond is not None and not isinstance(cond, dict):
        raise TypeError(f"{name} must be a dict of keyword arguments for the model, e.g. {name}={{'y': labels}}, "
                        f"got {name}={type(cond).__name__}")
    return cond or {}


@torch.no_grad()
def sample(denoise, schedule, x_T, timesteps, step, *, end=-1, stochastic=True, cond=None, generator=None,
           callback=None, progress=True, desc="sampling"):
    """Run ``step`` along ``timesteps`` from ``x_T``; returns the final state.

    Args:
        denoise: ``denoise(x_t, t, **cond) -> Prediction``, e.g. a :class:`Denoiser` (or a
            guidance wrapper around one).
        schedule: the noise schedule, on the device of ``x_T``.
        timesteps: the code timesteps to visit, in order (see :mod:`.timesteps`); the step from
            the last one goes to ``end``.
        end: where the last step goes: -1, the data (sampling), or a timestep above the last
            entry (DDIM inversion climbs an ascending list, e.g. ``[0, 99, ..., 899]`` with
            ``end=999``, encoding x_0 into the x_T that decodes back to it).
        step: ``step(schedule, x_t, t, s, pred, noise) -> x_s`` (see :mod:`.steps`); a step with
            ``step.stateful = True`` is called with the state as a seventh argument and returns
            ``(x_s, state)`` (see the module's docstring and :mod:`.ode`).
        stochastic: draw fresh N(0, I) noise (from ``generator``) for every step but the last;
            False passes ``noise=None`` (deterministic steps such as DDIM with eta = 0).
        callback: called with a :class:`StepRecord` after every step.

    The arguments are checked once, here, before the first step: ``denoise`` must not be a bare
    network, x_T a finite float tensor, the list and ``end`` as
    :func:`~lesson_lib.diffusion.timesteps.check_timestep_list` says.
    """
    check_denoiser(denoise)
    check_inputs(schedule, x_T, "x_T")
    float_tensor(x_T, "x_T")
    ts = check_timestep_list(timesteps, schedule.T, end)
    end = int(end)
    x, B, cond = x_T, x_T.shape[0], _check_cond(cond, "cond")
    state = {"denoise": lambda x_, t_: denoise(x_, t_, **cond)} if getattr(step, "stateful", False) else None
    for i, t in enumerate(tqdm(ts, desc=desc, disable=not progress)):
        s = ts[i + 1] if i + 1 < len(ts) else end
        t_batch = torch.full((B,), t, device=x.device, dtype=torch.long)
        s_batch = torch.full((B,), s, device=x.device, dtype=torch.long)
        pred = check_returned(denoise(x, t_batch, **cond))
        noise = None
        if stochastic and s >= 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if state is None:
            x_s = step(schedule, x, t_batch, s_batch, pred, noise)
        else:
            x_s, state = step(schedule, x, t_batch, s_batch, pred, noise, state)
        if callback is not None:
            callback(StepRecord(i, t, s, x, pred, x_s))
        x = x_s
    return x


def _start(model, shape, x_T, device, generator):
    """x_T as given (a float tensor of the model's dtype and data shape; :func:`sample` checks that
    it is finite) or drawn."""
    if x_T is None:
        if shape is None:
            raise ValueError("give either shape=(batch, ...) or a starting noise tensor x_T")
        if isinstance(shape, (int, torch.Size)) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in tuple(shape)):
            raise TypeError(f"shape must be a tuple of positive ints such as (16, 1, 28, 28), got shape={shape!r}")
        x_T = torch.randn(tuple(shape), generator=generator, device=device)
    else:
        float_tensor(x_T, "x_T", finite=False)
    params = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    if params is not None and x_T.dtype != params.dtype:
        raise TypeError(f"x_T is {str(x_T.dtype).removeprefix('torch.')} but the model's weights are "
                        f"{str(params.dtype).removeprefix('torch.')}; pass x_T.to({params.dtype})")
    channels, size = getattr(model, "in_channels", None), getattr(model, "image_size", None)
    expected = None
    if size is not None and channels is not None:
        expected = (channels, size, size)
    elif channels is not None and x_T.ndim == 2:
        expected = (channels,)
    if expected is not None and tuple(x_T.shape[1:]) != expected:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but the model was built for data of shape "
                         f"(batch, {', '.join(map(str, expected))})")
    return x_T


def _check_labels(model, model_kwargs, batch):
    """Class labels, checked once per call (the U-Net checks them on the CPU only, to spare the GPU a
    wait at every step)."""
    y = _check_cond(model_kwargs, "model_kwargs").get("y")
    k = getattr(model, "num_classes", None)
    if y is not None and k is not None:
        labels(y, k, "y", allow_null=True, batch=batch, hint="the class of each image, model_kwargs={'y': labels}")


def _guided(guidance, denoiser):
    """The denoiser wrapped by ``guidance``, a function of the denoiser (not a wrapper already made)."""
    if not callable(guidance) or hasattr(guidance, "denoise"):
        raise TypeError(f"guidance must be a function that wraps the sampler's denoiser, e.g. "
                        f"guidance=lambda d: ClassifierFreeGuidance(d, w=1.0), got guidance={type(guidance).__name__}")
    return guidance(denoiser)


def _run(model, schedule, shape, x_T, device, generator, prediction, clip_x0, autocast,
         model_kwargs, timesteps, step, stochastic, keep, return_trajectory, progress, desc,
         guidance=None, denoiser=None):
    """The shared set-up of the presets: start, checks, denoiser (guided, then clipped, when
    ``guidance`` is given; ``denoiser(model, schedule, autocast)`` builds another kind, e.g. a flow's
    :class:`~lesson_lib.diffusion.flow_matching.VelocityDenoiser`), eval mode, trajectory."""
    x = _start(model, shape, x_T, device, generator)
    _check_model_device(model, x)
    _check_labels(model, model_kwargs, x.shape[0])
    schedule = schedule.to(x.device)
    if autocast is None:              # bfloat16 where the GPU supports it (not on Colab's T4), else float32
        autocast = bf16_supported(x.device)
    if denoiser is not None:          # it reads the network as it is (no clipping), so guidance wraps it directly
        denoise = denoiser(model, schedule, autocast)
        denoise = denoise if guidance is None else _guided(guidance, denoise)
    elif guidance is None:
        denoise = Denoiser(model, schedule, prediction, clip_x0, autocast)
    else:
        denoise = ClipX0(_guided(guidance, Denoiser(model, schedule, prediction, False, autocast)), schedule, clip_x0)
    trajectory = [x]
    record = (lambda r: trajectory.append(r.x_s) if keep(r) else None) if return_trajectory else None
    with evaluating(model):
        x = sample(denoise, schedule, x, timesteps, step, stochastic=stochastic, cond=model_kwargs,
                   generator=generator, callback=record, progress=progress, desc=desc)
    return (x, torch.stack(trajectory)) if return_trajectory else x


def ddpm_sample(model, schedule, shape=None, *, x_T=None, prediction=None, variance="beta",
                clip_x0=False, model_kwargs=None, device="cpu", generator=None,
                return_trajectory=False, trajectory_stride=1, progress=True, autocast=None,
                timesteps=None, guidance=None, step=ddpm_step):
    """Algorithm 2 of Ho et al. (2020): ancestral sampling from x_T ~ N(0, I) to x_0.

    Args:
        model: a callable ``model(x_t, t, **model_kwargs)``; an ``nn.Module`` is put in eval
            mode while sampling.
        schedule: the :class:`~lesson_lib.diffusion.schedules.NoiseSchedule` the model was trained with.
        shape: the batch shape, e.g. ``(16, 1, 28, 28)``; or pass ``x_T`` yourself.
        prediction: what the model predicts; read from ``model.prediction`` when left out.
        variance: sigma_t^2 = beta_t ("beta") or beta-tilde_t ("beta_tilde").
        clip_x0: clip the x_0 estimate to [-1, 1] at each step (True, for images in
            [-1, 1]) or to [-c, c] for a number c (e.g. the range of 2-D data).
        return_trajectory: also return the states x_T, ..., x_0 (every
            ``trajectory_stride``-th step, always including both ends), stacked on dim 0.
        autocast: run the network in bfloat16 autocast; defaults to True on a CUDA GPU that
            supports bfloat16.
        timesteps: every step by default; a shorter list (see :mod:`.timesteps`) gives strided
            DDPM, each step using the respaced chain's beta_{t->s}.
        guidance: a callable that receives the :class:`Denoiser` and returns a wrapper with its
            signature (:mod:`lesson_lib.diffusion.guidance`), e.g.
            ``guidance=lambda d: ClassifierFreeGuidance(d, w=1.0)``; x0 is then clipped after it.
        step: the ancestral step, ``step(schedule, x_t, t, s, pred, noise, variance=...)``;
            :func:`~lesson_lib.diffusion.steps.ddpm_step` by default. The mean form of
            classifier guidance is such a step (it moves the step's mean by s Sigma_{t->s} g):
            ``step=ClassifierGuidedStep(classifier, scale, y=labels)``
            (:mod:`lesson_lib.diffusion.guidance`). It receives ``variance`` from here.

    Returns x_0, or ``(x_0, trajectory)``.
    """
    choice(variance, "variance", VARIANCES)
    if not callable(step):
        raise TypeError(f"step must be an ancestral step with ddpm_step's signature, e.g. step=ClassifierGuidedStep"
                        f"(classifier, scale, y=labels), got step={type(step).__name__}")
    trajectory_stride = integer(trajectory_stride, "trajectory_stride", minimum=1,
                                hint="1 keeps every state, k every k-th")
    timesteps = all_steps(schedule.T) if timesteps is None else timesteps      # checked by sample()
    step = functools.partial(step, variance=variance)
    return _run(model, schedule, shape, x_T, device, generator, prediction, clip_x0, autocast,
                model_kwargs, timesteps, step, True, lambda r: r.t % trajectory_stride == 0,
                return_trajectory, progress, "DDPM sampling", guidance)


def ddim_timesteps(T, steps, spacing="linspace"):
    """``steps`` code timesteps spread over 0..T-1, in descending order, as a long tensor
    (see :func:`lesson_lib.diffusion.timesteps.spaced`)."""
    return torch.tensor(spaced(T, steps, spacing), dtype=torch.long)


def ddim_sample(model, schedule, shape=None, *, steps=50, eta=0.0, x_T=None, prediction=None,
                clip_x0=False, model_kwargs=None, device="cpu", generator=None,
                return_trajectory=False, progress=True, autocast=None, spacing="linspace", guidance=None,
                timesteps=None):
    """DDIM sampling (Song et al., 2021, Eq. 12) on ``steps`` timesteps (``spacing`` as in
    :mod:`lesson_lib.diffusion.timesteps`), or on the list ``timesteps`` when it is given (e.g. a
    distilled student's own grid); see :func:`~lesson_lib.diffusion.steps.ddim_step`.

    From x_t to the previous chosen timestep s:

        x_s = sqrt(alpha-bar_s) x0_hat + sqrt(1 - alpha-bar_s - sigma^2) eps_hat + sigma z,
        sigma = eta * sqrt((1 - alpha-bar_s) / (1 - alpha-bar_t)) * sqrt(1 - alpha-bar_t / alpha-bar_s).

    ``eta = 0`` is deterministic; ``eta = 1`` with ``steps = T`` is DDPM with sigma^2 = beta-tilde.
    ``return_trajectory`` returns every state x_T, ..., x_0 as well. ``guidance`` wraps the
    denoiser as in :func:`ddpm_sample`.
    """
    eta = number(eta, "eta", minimum=0, hint="0 = deterministic, 1 = DDPM-like")
    timesteps = spaced(schedule.T, steps, spacing) if timesteps is None else [int(t) for t in timesteps]
    step = functools.partial(ddim_step, eta=eta)
    return _run(model, schedule, shape, x_T, device, generator, prediction, clip_x0, autocast,
                model_kwargs, timesteps, step, eta > 0, lambda r: True, return_trajectory,
                progress, "DDIM sampling", guidance)


def consistency_sample(model, schedule, shape=None, *, timesteps, x_T=None, prediction=None, clip_x0=False,
                       model_kwargs=None, device="cpu", generator=None, return_trajectory=False, progress=True,
                       autocast=None):
    """Multistep consistency sampling (Song et al., 2023, Algorithm 1) of a consistency model (a
    network whose x0_hat is f(x_t, t), :mod:`lesson_lib.diffusion.consistency`) on ``timesteps``:
    one network call per entry, ``[T - 1]`` for one call, e.g. ``[999, 499]`` for two. Between calls,
    :func:`~lesson_lib.diffusion.steps.consistency_step` noises x0_hat afresh to the next time."""
    timesteps = [int(t) for t in timesteps]
    return _run(model, schedule, shape, x_T, device, generator, prediction, clip_x0, autocast,
                model_kwargs, timesteps, consistency_step, True, lambda r: True, return_trajectory,
                progress, "consistency sampling")


def ode_sample(model, schedule, shape=None, *, steps=50, solver="heun", x_T=None, prediction=None,
               clip_x0=False, model_kwargs=None, device="cpu", generator=None, return_trajectory=False,
               progress=True, autocast=None, spacing="linspace", guidance=None, timesteps=None):
    """Deterministic sampling by a solver of the probability-flow ODE (:mod:`lesson_lib.diffusion.ode`)
    on ``steps`` timesteps (``spacing`` as in :mod:`lesson_lib.diffusion.timesteps`) or on the list
    ``timesteps``: ``solver`` is "euler" (= DDIM with eta = 0; N network calls), "heun" (EDM's
    Algorithm 2; 2N - 1 calls) or "dpmpp2m" (DPM-Solver++(2M); N calls). ``guidance`` wraps the
    denoiser as in :func:`ddpm_sample`; Heun's second call goes through the same wrapper."""
    step = ODE_SOLVERS[choice(solver, "solver", tuple(ODE_SOLVERS))]
    timesteps = spaced(schedule.T, steps, spacing) if timesteps is None else [int(t) for t in timesteps]
    return _run(model, schedule, shape, x_T, device, generator, prediction, clip_x0, autocast,
                model_kwargs, timesteps, step, False, lambda r: True, return_trajectory,
                progress, f"ODE sampling ({solver})", guidance)


# --- single steps, for lessons and exercises that take one step by hand -------------------

def p_mean_variance(model, schedule, x_t, t, prediction=None, variance="beta",
                    clip_x0=False, model_kwargs=None, autocast=False):
    """The reverse-step distribution p_theta(x_{t-1} | x_t) = N(mean, variance I).

    The network's output is turned into an estimate x0_hat of x_0 (optionally clipped to
    [-1, 1] as for images, or to [-c, c] for ``clip_x0=c``) and plugged into the posterior mean
    mu-tilde_t(x_t, x0_hat) (Ho et al., Eqs. 7 and 11). ``variance`` picks sigma_t^2 = beta_t
    ("beta") or beta-tilde_t ("beta_tilde"). Returns ``(mean, variance, x0_hat)``.
    """
    choice(variance, "variance", VARIANCES)
    check_timesteps(t, schedule.T)
    pred = Denoiser(model, schedule, prediction, clip_x0, autocast)(x_t, t, **(model_kwargs or {}))
    mean = ddpm_step(schedule, x_t, t, t - 1, pred)
    var = extract(schedule.betas if variance == "beta" else schedule.posterior_variance, t, x_t)
    return mean, var, pred.x0


def p_sample_step(model, schedule, x_t, t, prediction=None, variance="beta", clip_x0=False,
                  model_kwargs=None, generator=None, autocast=False):
    """One ancestral step x_t -> x_{t-1} (Algorithm 2, line 4). ``t`` is a Python int;
    at t = 0 (the paper's t = 1) no noise is added and the mean is returned."""
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    mean, var, _ = p_mean_variance(model, schedule, x_t, t_batch, prediction, variance,
                                   clip_x0, model_kwargs, autocast)
    if t == 0:
        return mean
    z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return mean + var.sqrt() * z
