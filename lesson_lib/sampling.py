"""The reverse process: turning noise into data with a trained network.

DDPM ancestral sampling, Algorithm 2 of Ho et al. (2020): start from x_T ~ N(0, I) and for
t = T, ..., 1 draw

    x_{t-1} = mu_theta(x_t, t) + sigma_t z,   z ~ N(0, I) (z = 0 at the last step),

where mu_theta is the posterior mean mu-tilde_t(x_t, x0_hat) with the network's estimate
x0_hat of x_0 (Eqs. 7 and 11), and sigma_t^2 is either beta_t or beta-tilde_t. Ho et al.
found both give similar sample quality: beta_t is the right choice when x_0 ~ N(0, I),
beta-tilde_t when x_0 is a single point (Sec. 3.2).

DDIM, Song et al. (2021), Eq. 12, samples on a sub-sequence of S timesteps with a
deterministic (eta = 0) or stochastic (eta = 1 recovers DDPM's variance) update.

Every sampler accepts any callable ``model(x_t, t, **model_kwargs)`` that returns an eps, x0
or v prediction (``prediction=``); guidance wraps a model in such a callable.
"""

import contextlib

import torch
from tqdm.auto import tqdm

from .forward import check_prediction, q_posterior, to_x0_eps
from .schedules import extract

VARIANCES = ("beta", "beta_tilde")


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


def _model_device(model):
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return None


def _check_model_device(model, x):
    device = _model_device(model)
    if device is not None and device != x.device:
        raise ValueError(f"the model is on {device} but x is on {x.device}; pass device={str(device)!r} "
                         f"to the sampler or move the model with model.to(...)")


def _predict(model, x_t, t, model_kwargs, autocast):
    with torch.autocast(x_t.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = model(x_t, t, **model_kwargs)
    if out.shape != x_t.shape:
        raise ValueError(f"the model returned shape {tuple(out.shape)} for x_t of shape "
                         f"{tuple(x_t.shape)}; it must predict a tensor of the same shape")
    return out.float()


def p_mean_variance(model, schedule, x_t, t, prediction="eps", variance="beta",
                    clip_x0=False, model_kwargs=None, autocast=False):
    """The reverse-step distribution p_theta(x_{t-1} | x_t) = N(mean, variance I).

    The network's output is turned into an estimate x0_hat of x_0 (optionally clipped to
    [-1, 1] as for images, or to [-c, c] for ``clip_x0=c``) and plugged into the posterior mean mu-tilde_t(x_t, x0_hat)
    (Ho et al., Eqs. 7 and 11). ``variance`` picks sigma_t^2 = beta_t ("beta") or
    beta-tilde_t ("beta_tilde"). Returns ``(mean, variance, x0_hat)``.
    """
    check_prediction(prediction)
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got variance={variance!r}")
    output = _predict(model, x_t, t, model_kwargs or {}, autocast)
    x0_hat, _ = to_x0_eps(schedule, x_t, t, output, prediction)
    if clip_x0:
        x0_hat = _clip(x0_hat, clip_x0)
    mean, posterior_variance, _ = q_posterior(schedule, x0_hat, x_t, t)
    var = extract(schedule.betas, t, x_t) if variance == "beta" else posterior_variance
    return mean, var, x0_hat


def p_sample_step(model, schedule, x_t, t, prediction="eps", variance="beta", clip_x0=False,
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


def _clip(x0_hat, clip_x0):
    """Clip to [-1, 1] for ``clip_x0=True``, to [-c, c] for a number c."""
    bound = 1.0 if clip_x0 is True else float(clip_x0)
    return x0_hat.clamp(-bound, bound)


def _start(shape, x_T, device, generator):
    if x_T is not None:
        return x_T
    if shape is None:
        raise ValueError("give either shape=(batch, ...) or a starting noise tensor x_T")
    return torch.randn(tuple(shape), generator=generator, device=device)


def _default_autocast(autocast, x):
    return x.device.type == "cuda" if autocast is None else autocast


@torch.no_grad()
def ddpm_sample(model, schedule, shape=None, *, x_T=None, prediction="eps", variance="beta",
                clip_x0=False, model_kwargs=None, device="cpu", generator=None,
                return_trajectory=False, trajectory_stride=1, progress=True, autocast=None):
    """Algorithm 2 of Ho et al. (2020): ancestral sampling from x_T ~ N(0, I) to x_0.

    Args:
        model: a callable ``model(x_t, t, **model_kwargs)``; an ``nn.Module`` is put in eval
            mode while sampling.
        schedule: the :class:`~lesson_lib.schedules.NoiseSchedule` the model was trained with.
        shape: the batch shape, e.g. ``(16, 1, 28, 28)``; or pass ``x_T`` yourself.
        variance: sigma_t^2 = beta_t ("beta") or beta-tilde_t ("beta_tilde").
        clip_x0: clip the x_0 estimate to [-1, 1] at each step (True, for images in
            [-1, 1]) or to [-c, c] for a number c (e.g. the range of 2-D data).
        return_trajectory: also return the states x_T, ..., x_0 (every
            ``trajectory_stride``-th step, always including both ends), stacked on dim 0.
        autocast: run the network in bfloat16 autocast; defaults to True on CUDA.

    Returns x_0, or ``(x_0, trajectory)``.
    """
    x = _start(shape, x_T, device, generator)
    _check_model_device(model, x)
    schedule = schedule.to(x.device)
    autocast = _default_autocast(autocast, x)
    trajectory = [x]
    with evaluating(model):
        for t in tqdm(range(schedule.T - 1, -1, -1), desc="DDPM sampling", disable=not progress):
            x = p_sample_step(model, schedule, x, t, prediction, variance, clip_x0,
                              model_kwargs, generator, autocast)
            if return_trajectory and (t % trajectory_stride == 0):
                trajectory.append(x)
    if return_trajectory:
        return x, torch.stack(trajectory)
    return x


def ddim_timesteps(T, steps):
    """``steps`` code timesteps spread evenly over 0..T-1, in descending order."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in 1..T={T}, got steps={steps}")
    return torch.linspace(T - 1, 0, steps).round().long().unique_consecutive()


@torch.no_grad()
def ddim_sample(model, schedule, shape=None, *, steps=50, eta=0.0, x_T=None, prediction="eps",
                clip_x0=False, model_kwargs=None, device="cpu", generator=None,
                return_trajectory=False, progress=True, autocast=None):
    """DDIM sampling (Song et al., 2021, Eq. 12) on ``steps`` evenly spaced timesteps.

    From x_t to the previous chosen timestep s:

        x_s = sqrt(alpha-bar_s) x0_hat + sqrt(1 - alpha-bar_s - sigma^2) eps_hat + sigma z,
        sigma = eta * sqrt((1 - alpha-bar_s) / (1 - alpha-bar_t)) * sqrt(1 - alpha-bar_t / alpha-bar_s).

    ``eta = 0`` is deterministic; ``eta = 1`` with ``steps = T`` is DDPM with sigma^2 = beta-tilde.
    """
    if eta < 0:
        raise ValueError(f"eta must be non-negative (0 = deterministic, 1 = DDPM-like), got eta={eta}")
    x = _start(shape, x_T, device, generator)
    _check_model_device(model, x)
    schedule = schedule.to(x.device)
    autocast = _default_autocast(autocast, x)
    ts = ddim_timesteps(schedule.T, steps).tolist()
    trajectory = [x]
    with evaluating(model):
        for i, t in enumerate(tqdm(ts, desc="DDIM sampling", disable=not progress)):
            t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            output = _predict(model, x, t_batch, model_kwargs or {}, autocast)
            x0_hat, eps_hat = to_x0_eps(schedule, x, t_batch, output, prediction)
            if clip_x0:
                x0_hat = _clip(x0_hat, clip_x0)
                eps_hat = (x - extract(schedule.sqrt_alpha_bars, t_batch, x) * x0_hat) / \
                    extract(schedule.sqrt_one_minus_alpha_bars, t_batch, x)
            a_t = schedule.alpha_bars[t]
            a_s = schedule.alpha_bars[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(a_t)
            sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).sqrt()
            x = a_s.sqrt().float() * x0_hat + (1 - a_s - sigma ** 2).clamp(min=0).sqrt().float() * eps_hat
            if eta > 0 and i + 1 < len(ts):
                x = x + sigma.float() * torch.randn(x.shape, generator=generator, device=x.device)
            if return_trajectory:
                trajectory.append(x)
    if return_trajectory:
        return x, torch.stack(trajectory)
    return x
