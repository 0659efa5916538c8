"""One step of the reverse process, from timestep t to an earlier timestep s.

Each step is a pure function ``step(schedule, x_t, t, s, pred, noise) -> x_s``: ``t`` and ``s``
are long tensors of shape (B,) (code indices; ``s = -1`` means the data x_0), ``pred`` is the
denoiser's :class:`~lesson_lib.diffusion.denoiser.Prediction` at (x_t, t), and ``noise`` is a
standard normal tensor (None where the step is deterministic). The sampling loop
(:mod:`lesson_lib.diffusion.sampling`) calls them; so can a loss (progressive distillation
takes two DDIM steps of a teacher inside its target).

Everything is computed from alpha-bar at the two ends, alpha-bar_t and alpha-bar_s (the
schedule's ``alpha_bars_with_0``, where s = -1 gives alpha-bar = 1), in float64, and cast to
the dtype of x_t at the end. So the same functions take one step of the original chain
(s = t - 1) or one step of a respaced chain (any s < t).
"""

import torch

VARIANCES = ("beta", "beta_tilde")


def learned_range(frac, log_beta, log_beta_tilde):
    """The learned variance of Nichol & Dhariwal (2021), Eq. 15: the network outputs v per
    dimension, frac = (v + 1) / 2, and

        log Sigma = frac * log beta + (1 - frac) * log beta-tilde,

    an interpolation (in log space) between the two fixed choices of Ho et al.: frac = 1 is
    sigma^2 = beta, frac = 0 is sigma^2 = beta-tilde. ``log_beta`` and ``log_beta_tilde`` must
    broadcast against ``frac`` (e.g. shape (B, 1, ..., 1)); they are those of the step being
    taken, so on a respaced chain they are beta_{t->s} and beta-tilde_{t->s}."""
    return frac * log_beta + (1 - frac) * log_beta_tilde


def _levels(schedule, t, s):
    """alpha-bar_t and alpha-bar_s as float64 tensors of shape (B,)."""
    alpha_bars = schedule.alpha_bars_with_0
    return alpha_bars[t + 1], alpha_bars[s + 1]


def _bcast(values, x):
    """(B,) float64 -> (B, 1, ..., 1) in the dtype and on the device of ``x``."""
    return values.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def ddpm_mean_variance(schedule, x_t, t, s, pred, variance="beta"):
    """The ancestral step's Gaussian from t to any s < t, N(mean, sigma^2 I): returns
    ``(mean, sigma2)``, sigma2 of shape (B, 1, ..., 1) (or of x_t's shape for a learned variance).

    It is the posterior q(x_s | x_t, x0_hat) of the chain that jumps from s to t in one step,
    whose variance is beta_{t->s} = 1 - alpha-bar_t / alpha-bar_s (Nichol & Dhariwal 2021,
    Sec. 4; for s = t - 1 it is beta_t itself):

        mean     = sqrt(alpha-bar_s) beta_{t->s} / (1 - alpha-bar_t) * x0_hat
                   + sqrt(alpha-bar_t / alpha-bar_s) (1 - alpha-bar_s) / (1 - alpha-bar_t) * x_t
        sigma^2  = beta_{t->s}                                            (variance="beta")
                or beta-tilde_{t->s} = (1 - alpha-bar_s) / (1 - alpha-bar_t) beta_{t->s}
                                                                          ("beta_tilde")

    (Ho et al., Eqs. 6-7 and 11). At s = -1 the mean is x0_hat itself.

    A model with a learned variance (Nichol & Dhariwal 2021) replaces sigma^2: when
    ``pred.frac`` is given, sigma^2 = :func:`learned_range` of this step's own beta_{t->s} and
    beta-tilde_{t->s} (so a respaced chain interpolates between *its* beta and beta-tilde, as
    improved-diffusion's SpacedDiffusion does by recomputing the betas); otherwise
    ``pred.log_variance``, when given, is used as it is (it belongs to the step t -> t - 1 of
    the original chain). ``variance`` is then ignored. The zero beta-tilde_{t->-1} is clamped
    to 1e-20 to keep its log finite.

    :func:`ddpm_step` draws from this Gaussian; the mean form of classifier guidance
    (:class:`~lesson_lib.diffusion.guidance.ClassifierGuidedStep`) shifts its mean by
    s sigma^2 grad log f first.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got variance={variance!r}")
    a_t, a_s = _levels(schedule, t, s)
    beta = 1 - a_t / a_s
    coef_x0 = a_s.sqrt() * beta / (1 - a_t)
    coef_xt = (a_t / a_s).sqrt() * (1 - a_s) / (1 - a_t)
    mean = _bcast(coef_x0, x_t) * pred.x0 + _bcast(coef_xt, x_t) * x_t
    if getattr(pred, "frac", None) is not None:
        beta_tilde = ((1 - a_s) / (1 - a_t) * beta).clamp(min=1e-20)
        sigma2 = learned_range(pred.frac, _bcast(beta.log(), x_t), _bcast(beta_tilde.log(), x_t)).exp()
    elif pred.log_variance is not None:
        sigma2 = pred.log_variance.exp()
    else:
        sigma2 = _bcast(beta if variance == "beta" else (1 - a_s) / (1 - a_t) * beta, x_t)
    return mean, sigma2


def ddpm_step(schedule, x_t, t, s, pred, noise=None, variance="beta"):
    """Ancestral sampling, Algorithm 2 of Ho et al. (2020), line 4, from t to any s < t:

        x_s = mean + sigma * noise

    with (mean, sigma^2) of :func:`ddpm_mean_variance` (the posterior of the step t -> s, with
    sigma^2 = beta_{t->s}, beta-tilde_{t->s} or the model's learned variance). At the last
    step (s = -1) no noise is added: x_s is the mean, x0_hat itself.
    """
    mean, sigma2 = ddpm_mean_variance(schedule, x_t, t, s, pred, variance)
    if noise is None:
        return mean
    return mean + sigma2.sqrt() * noise


def ddim_sigma(schedule, t, s, eta):
    """The noise scale of a DDIM step (Song et al., 2021, Eq. 16):

        sigma = eta * sqrt((1 - alpha-bar_s) / (1 - alpha-bar_t)) * sqrt(1 - alpha-bar_t / alpha-bar_s).

    eta = 1 gives sigma^2 = beta-tilde_{t->s}, DDPM's posterior variance; eta = 0 gives 0."""
    a_t, a_s = _levels(schedule, t, s)
    return eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).sqrt()


def ddim_step(schedule, x_t, t, s, pred, noise=None, eta=0.0):
    """A DDIM step (Song et al., 2021, Eq. 12) from t to s:

        x_s = sqrt(alpha-bar_s) x0_hat + sqrt(1 - alpha-bar_s - sigma^2) eps_hat + sigma noise

    with sigma from :func:`ddim_sigma`. eta = 0 is deterministic; with s > t (and eta = 0) the
    same formula runs the deterministic map backwards: DDIM inversion. The last step (s = -1)
    returns x0_hat."""
    a_t, a_s = _levels(schedule, t, s)
    sigma = ddim_sigma(schedule, t, s, eta) if eta else torch.zeros_like(a_t)
    x_s = _bcast(a_s.sqrt(), x_t) * pred.x0 + _bcast((1 - a_s - sigma ** 2).clamp(min=0).sqrt(), x_t) * pred.eps
    if noise is not None and eta:
        x_s = x_s + _bcast(sigma, x_t) * noise
    return x_s


def consistency_step(schedule, x_t, t, s, pred, noise=None):
    """Multistep consistency sampling (Song et al., 2023, Algorithm 1), from t to s: take the
    consistency model's x0_hat = f(x_t, t) and noise it afresh to level s,

        x_s = sqrt(alpha-bar_s) x0_hat + sqrt(1 - alpha-bar_s) noise,

    a draw of q(x_s | x0_hat) (Eq. 4; the paper's x0_hat + sqrt(tau^2 - eps^2) z in VE variables).
    Nothing of x_t survives but through x0_hat: unlike DDIM, no eps_hat is kept. The last step
    (s = -1) returns x0_hat."""
    a_t, a_s = _levels(schedule, t, s)
    if noise is None:
        return _bcast(a_s.sqrt(), x_t) * pred.x0
    return _bcast(a_s.sqrt(), x_t) * pred.x0 + _bcast((1 - a_s).sqrt(), x_t) * noise
