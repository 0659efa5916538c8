"""The forward (noising) process q and the conversions between what a network can predict.

Equations from Ho et al. (2020), "Denoising Diffusion Probabilistic Models":

* one step of the chain, Eq. 2:  q(x_t | x_{t-1}) = N( sqrt(1 - beta_t) x_{t-1}, beta_t I )
* the closed form, Eq. 4:        q(x_t | x_0) = N( sqrt(alpha-bar_t) x_0, (1 - alpha-bar_t) I ),
  so x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps with eps ~ N(0, I)
* the posterior, Eqs. 6-7:       q(x_{t-1} | x_t, x_0) = N( mu-tilde_t, beta-tilde_t I ) with
  mu-tilde_t = coef_x0 * x_0 + coef_xt * x_t

and the v-parameterization of Salimans & Ho (2022), Sec. 4:
  v = sqrt(alpha-bar_t) eps - sqrt(1 - alpha-bar_t) x_0.

Code timestep ``t`` in ``{0, ..., T-1}`` is the paper's ``t + 1`` (see :mod:`lesson_lib.diffusion.schedules`).
Every function takes the :class:`~lesson_lib.diffusion.schedules.NoiseSchedule` first.
"""

import torch

from ..models.base import PREDICTIONS, check_prediction  # noqa: F401  (re-exported: one vocabulary, in one place)
from .schedules import NoiseSchedule, check_timesteps, extract


def check_inputs(schedule, x, name="x0"):
    """A NoiseSchedule and a float tensor: dtype and type only (free, reads no values)."""
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__} {schedule!r:.40}; "
                        f"e.g. NoiseSchedule.from_name('linear', 1000)")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        fix = ": images in 0..255 become x.float() / 127.5 - 1" if x.dtype == torch.uint8 else ""
        raise TypeError(f"{name} must be a float tensor, got dtype {x.dtype}; convert it{fix}")


def _check_same_shape(a, b, name_a, name_b):
    if a.shape != b.shape:
        raise ValueError(f"{name_b} must have the same shape as {name_a}: "
                         f"{name_a} is {tuple(a.shape)}, {name_b} is {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"{name_b} is on {b.device} but {name_a} is on {a.device}; "
                         f"move both to one device with .to(device)")


def q_sample(schedule, x0, t, eps=None, generator=None, check=True):
    """Sample x_t ~ q(x_t | x_0) in one shot (Ho et al., Eq. 4):

        x_t = sqrt(alpha-bar_t) * x_0 + sqrt(1 - alpha-bar_t) * eps.

    ``t`` is a long tensor of shape ``(B,)``, one timestep per example. Pass ``eps`` to
    fix the noise (as training does, to use it as the regression target), else it is drawn
    from ``generator``. ``check=False`` skips reading t's values (a host sync on a GPU): for
    the training objectives, which draw t themselves, at every step.
    """
    if check:
        check_inputs(schedule, x0, "x0")
        check_timesteps(t, schedule.T)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    if check:
        _check_same_shape(x0, eps, "x0", "eps")
    return extract(schedule.sqrt_alpha_bars, t, x0) * x0 + \
        extract(schedule.sqrt_one_minus_alpha_bars, t, x0) * eps


def q_step(schedule, x_prev, t, eps=None):
    """One step of the forward chain (Ho et al., Eq. 2): x_t from x_{t-1},

        x_t = sqrt(1 - beta_t) * x_{t-1} + sqrt(beta_t) * eps.
    """
    check_inputs(schedule, x_prev, "x_prev")
    check_timesteps(t, schedule.T)
    if eps is None:
        eps = torch.randn_like(x_prev)
    _check_same_shape(x_prev, eps, "x_prev", "eps")
    return extract(schedule.alphas.sqrt(), t, x_prev) * x_prev + \
        extract(schedule.betas.sqrt(), t, x_prev) * eps


def q_sample_chain(schedule, x0, t_max=None, generator=None):
    """Run the chain step by step from x_0 and return every state.

    Returns a tensor of shape ``(t_max + 1, *x0.shape)`` holding x_1, ..., x_{t_max+1} in
    the paper's numbering, i.e. entry ``t`` is the code-index-``t`` state, the one that
    :func:`q_sample` draws in one shot. ``t_max`` defaults to T - 1 (the whole chain).
    Lesson 1 compares the two to show they agree in distribution.
    """
    t_max = schedule.T - 1 if t_max is None else t_max
    check_timesteps(torch.tensor([t_max]), schedule.T, "t_max")
    states, x = [], x0
    for t in range(t_max + 1):
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x = q_step(schedule, x, torch.full((x0.shape[0],), t, device=x0.device), eps)
        states.append(x)
    return torch.stack(states)


def q_posterior(schedule, x0, x_t, t):
    """The posterior q(x_{t-1} | x_t, x_0) = N(mean, variance I) (Ho et al., Eqs. 6-7).

    Returns ``(mean, variance, log_variance)``; ``variance`` is beta-tilde_t and
    ``log_variance`` its log, clipped at t = 0 where beta-tilde is exactly 0.
    """
    check_timesteps(t, schedule.T)
    _check_same_shape(x0, x_t, "x0", "x_t")
    mean = extract(schedule.posterior_mean_coef_x0, t, x_t) * x0 + \
        extract(schedule.posterior_mean_coef_xt, t, x_t) * x_t
    return (mean, extract(schedule.posterior_variance, t, x_t),
            extract(schedule.posterior_log_variance, t, x_t))


# --- conversions between the three things a network can predict -----------------------

def x0_from_eps(schedule, x_t, t, eps):
    """Invert Eq. 4: x_0 = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t)."""
    _check_same_shape(x_t, eps, "x_t", "eps")
    return (x_t - extract(schedule.sqrt_one_minus_alpha_bars, t, x_t) * eps) / \
        extract(schedule.sqrt_alpha_bars, t, x_t)


def eps_from_x0(schedule, x_t, t, x0):
    """Invert Eq. 4 for the noise: eps = (x_t - sqrt(alpha-bar_t) x_0) / sqrt(1 - alpha-bar_t)."""
    _check_same_shape(x_t, x0, "x_t", "x0")
    return (x_t - extract(schedule.sqrt_alpha_bars, t, x_t) * x0) / \
        extract(schedule.sqrt_one_minus_alpha_bars, t, x_t)


def v_from_x0_eps(schedule, x0, eps, t):
    """The velocity target of Salimans & Ho (2022): v = sqrt(alpha-bar_t) eps - sqrt(1 - alpha-bar_t) x_0."""
    _check_same_shape(x0, eps, "x0", "eps")
    return extract(schedule.sqrt_alpha_bars, t, x0) * eps - \
        extract(schedule.sqrt_one_minus_alpha_bars, t, x0) * x0


def x0_from_v(schedule, x_t, t, v):
    """x_0 = sqrt(alpha-bar_t) x_t - sqrt(1 - alpha-bar_t) v."""
    _check_same_shape(x_t, v, "x_t", "v")
    return extract(schedule.sqrt_alpha_bars, t, x_t) * x_t - \
        extract(schedule.sqrt_one_minus_alpha_bars, t, x_t) * v


def eps_from_v(schedule, x_t, t, v):
    """eps = sqrt(1 - alpha-bar_t) x_t + sqrt(alpha-bar_t) v."""
    _check_same_shape(x_t, v, "x_t", "v")
    return extract(schedule.sqrt_one_minus_alpha_bars, t, x_t) * x_t + \
        extract(schedule.sqrt_alpha_bars, t, x_t) * v


def to_x0_eps(schedule, x_t, t, output, prediction="eps"):
    """Turn a network's ``output`` (an eps, x0 or v prediction) into the pair (x0, eps)."""
    check_prediction(prediction)
    if prediction == "eps":
        return x0_from_eps(schedule, x_t, t, output), output
    if prediction == "x0":
        return output, eps_from_x0(schedule, x_t, t, output)
    return x0_from_v(schedule, x_t, t, output), eps_from_v(schedule, x_t, t, output)


def empirical_posterior(x_prev, x_t, edges):
    """The mean and variance of x_{t-1} among the samples whose x_t falls in each bin, for 1-D samples
    of the chain (pairs x_{t-1}, x_t): an estimate of q(x_{t-1} | x_t) to hold against the posterior
    of Eqs. 6-7 (when every pair starts from one x_0) or against another model of the reverse step.

    ``x_prev`` and ``x_t`` have shape ``(N,)`` or ``(N, 1)``; ``edges`` (``(K + 1,)``, increasing)
    bound K bins. Returns ``(centres, mean, variance, count)``, each of shape ``(K,)``; a bin with
    fewer than 2 samples gets NaN mean and variance.
    """
    x_prev, x_t = x_prev.reshape(-1).double(), x_t.reshape(-1).double()
    if x_prev.shape != x_t.shape:
        raise ValueError(f"x_prev and x_t must hold the same number of samples, got {x_prev.numel()} and {x_t.numel()}")
    edges = torch.as_tensor(edges, dtype=torch.float64)
    if edges.ndim != 1 or edges.numel() < 2 or not bool((edges[1:] > edges[:-1]).all()):
        raise ValueError("edges must be an increasing 1-D tensor of at least 2 bin edges, e.g. torch.linspace(-1, 1, 11)")
    K = edges.numel() - 1
    inside = (x_t >= edges[0]) & (x_t < edges[-1])
    index = (torch.bucketize(x_t[inside], edges, right=True) - 1).clamp(0, K - 1)
    x = x_prev[inside]
    count = torch.bincount(index, minlength=K).double()
    total = torch.zeros(K, dtype=torch.float64).index_add_(0, index, x)
    squares = torch.zeros(K, dtype=torch.float64).index_add_(0, index, x ** 2)
    mean = torch.where(count > 1, total / count.clamp(min=1), torch.nan)
    variance = torch.where(count > 1, (squares - count * mean ** 2) / (count - 1).clamp(min=1), torch.nan)
    return (edges[1:] + edges[:-1]) / 2, mean, variance, count.long()
