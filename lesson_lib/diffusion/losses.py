"""The training objective of Ho et al. (2020), and the objective interface of the Trainer.

L_simple (Eq. 14) = E_{t, x_0, eps} || eps - eps_theta( sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps, t ) ||^2

with t uniform over the T steps. Predicting x_0 or v instead of eps (Salimans & Ho, 2022)
only changes the regression target; the sampler converts back (see :mod:`lesson_lib.diffusion.forward`).

A *training objective* is what :class:`~lesson_lib.training.trainer.Trainer` minimises: an
object with

* ``objective(model, schedule, x0, y, generator) -> loss`` (a scalar tensor): it draws its own
  randomness (timesteps, noise, label dropout) from ``generator``, whose state the trainer's
  checkpoints save, so a resumed run continues exactly;
* ``objective.config()`` -> a dict, recorded in checkpoints (and checked on resume).

:class:`LSimple` is the one of lessons 2-4; :class:`NoisyCrossEntropy` trains lesson 5's noisy
classifier; :class:`WeightedEps` puts back the weight lambda_t (:func:`vlb_weights`) that
L_simple drops from the variational bound (lesson 1b). Later lessons plug in others (a
distillation target, L_hybrid with a learned variance) without touching the loop.
"""

import torch
import torch.nn.functional as F

from .forward import check_prediction, q_sample, to_x0_eps, v_from_x0_eps
from .schedules import NoiseSchedule, extract

VARIANCES = ("beta", "beta_tilde")   # the two fixed choices of sigma_t^2 (Ho et al., Sec. 3.2)


def _target(schedule, x0, eps, t, prediction):
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    return v_from_x0_eps(schedule, x0, eps, t)


def _mse(output, target, prediction):
    if output.shape != target.shape:
        raise ValueError(f"the model returned shape {tuple(output.shape)} but the {prediction} "
                         f"target has shape {tuple(target.shape)}; the model must map x_t to "
                         f"a tensor of the same shape")
    return F.mse_loss(output.float(), target.float())


def l_simple(model, schedule, x0, t=None, eps=None, prediction="eps", **model_kwargs):
    """The mean squared error between the network's prediction and its target (Eq. 14).

    ``t`` (shape ``(B,)``) and ``eps`` are drawn when not given: t uniformly from 0..T-1,
    eps from N(0, I). Extra keyword arguments (e.g. class labels ``y``) go to the model.
    Returns a scalar tensor, averaged over the batch and every dimension.
    """
    check_prediction(prediction)
    if t is None:
        t = torch.randint(0, schedule.T, (x0.shape[0],), device=x0.device)
    if eps is None:
        eps = torch.randn_like(x0)
    x_t = q_sample(schedule, x0, t, eps)                      # checks t once
    output = model(x_t, t, **model_kwargs)
    return _mse(output, _target(schedule, x0, eps, t, prediction), prediction)


class LSimple:
    """L_simple as a training objective, with label dropout for classifier-free guidance.

    Each call draws, from the trainer's generator and in this order: which labels to drop
    (with probability ``class_dropout`` a label becomes the model's null class ``num_classes``;
    Ho & Salimans, 2022), t uniform over 0..T-1, and eps ~ N(0, I). The target follows
    ``model.prediction``. The timesteps are drawn here, so they need no check (which would make
    the host wait for the GPU at every step).
    """

    def __init__(self, class_dropout=0.0):
        if not 0 <= class_dropout < 1:
            raise ValueError(f"class_dropout must lie in [0, 1), got class_dropout={class_dropout}")
        self.class_dropout = class_dropout

    def config(self):
        return {"name": "l_simple", "class_dropout": self.class_dropout}

    def __call__(self, model, schedule, x0, y, generator):
        B, device = x0.shape[0], x0.device
        if y is not None and self.class_dropout > 0:
            drop = torch.rand(B, generator=generator, device=device) < self.class_dropout
            y = torch.where(drop, torch.full_like(y, model.num_classes), y)
        t = torch.randint(0, schedule.T, (B,), generator=generator, device=device)
        eps = torch.empty_like(x0).normal_(generator=generator)
        x_t = extract(schedule.sqrt_alpha_bars, t, x0) * x0 + extract(schedule.sqrt_one_minus_alpha_bars, t, x0) * eps
        output = model(x_t, t) if y is None else model(x_t, t, y=y)
        return _mse(output, _target(schedule, x0, eps, t, model.prediction), model.prediction)


class NoisyCrossEntropy:
    """The training objective of a noisy classifier f_phi(y | x_t, t) (Dhariwal & Nichol, 2021,
    Sec. 4; guided-diffusion trains its classifier the same way):

        L = E_{t, x_0, y, eps} [ -log f_phi(y | x_t, t) ],   x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps

    with t uniform over 0..T-1, so the classifier learns every noise level the sampler will
    show it. Each call draws t, then eps, from the trainer's generator. The model is called as
    ``model(x_t, t)`` and returns logits (B, num_classes); the labels ``y`` must be given.
    """

    def config(self):
        return {"name": "noisy_cross_entropy"}

    def __call__(self, model, schedule, x0, y, generator):
        if y is None:
            raise ValueError("a noisy classifier needs class labels: pass labels=... to the Trainer")
        B, device = x0.shape[0], x0.device
        t = torch.randint(0, schedule.T, (B,), generator=generator, device=device)
        eps = torch.empty_like(x0).normal_(generator=generator)
        x_t = extract(schedule.sqrt_alpha_bars, t, x0) * x0 + extract(schedule.sqrt_one_minus_alpha_bars, t, x0) * eps
        logits = model(x_t, t)
        return F.cross_entropy(logits.float(), y.long())


# --- the weight that L_simple drops --------------------------------------------------------

def vlb_weights(schedule, variance="beta"):
    """The weight lambda_t of each term of the variational bound in eps form (Ho et al., Eq. 12):

        L_{t-1} = KL( q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t) )
                = lambda_t * || eps - eps_theta(x_t, t) ||^2 + C_t,
        lambda_t = beta_t^2 / ( 2 sigma_t^2 alpha_t (1 - alpha-bar_t) ),

    because p_theta's mean mu_theta = (x_t - beta_t / sqrt(1 - alpha-bar_t) eps_theta) / sqrt(alpha_t)
    (Eq. 11) differs from mu-tilde_t by beta_t / (sqrt(alpha_t) sqrt(1 - alpha-bar_t)) (eps_theta - eps),
    and the KL between two Gaussians of equal variance sigma_t^2 is ||mean difference||^2 / (2 sigma_t^2)
    (Eq. 8). C_t does not depend on theta (it is 0 for sigma_t^2 = beta-tilde_t). L_simple (Eq. 14)
    sets every lambda_t to 1.

    ``variance`` is sigma_t^2: "beta" (sigma_t^2 = beta_t) or "beta_tilde" (sigma_t^2 = beta-tilde_t,
    Eq. 7). For sigma_t^2 = beta_t this simplifies to beta_t / (2 alpha_t (1 - alpha-bar_t)); for
    beta-tilde_t to beta_t / (2 alpha_t (1 - alpha-bar_{t-1})).

    Entry 0 (the paper's t = 1) weighs L_0 = -log p_theta(x_0 | x_1) for a Gaussian decoder of
    variance sigma_1^2: there mu-tilde_1 = x_0 exactly, so the same formula holds, and with
    sigma_1^2 = beta_1 it is 1 / (2 alpha_1). beta-tilde_1 is 0, so for "beta_tilde" entry 0
    uses beta-tilde_2 instead, the clipped variance of Ho et al.'s code
    (``schedule.posterior_log_variance``). Returns a float64 tensor of shape ``(T,)``; a
    single-step schedule (T = 1) has only the decoder term.
    """
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}; "
                        f"e.g. NoiseSchedule.from_name('linear', 1000)")
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got variance={variance!r}")
    sigma2 = schedule.betas if variance == "beta" else schedule.posterior_log_variance.exp()
    return schedule.betas ** 2 / (2 * sigma2 * schedule.alphas * (1 - schedule.alpha_bars))


class WeightedEps:
    """The eps regression with the variational bound's weight put back: each example's
    mean squared error ||eps - eps_theta(x_t, t)||^2 / D is multiplied by lambda_t
    (:func:`vlb_weights`, ``variance`` choosing sigma_t^2), t uniform over 0..T-1.

    With ``normalize=True`` (the default) the weights are divided by their mean over t, so that
    they average to 1 as L_simple's do: the two objectives then differ only in *how* they
    spread the effort over t, not in the overall step size, and compare fairly at the same
    learning rate. With ``normalize=False`` the loss is the bound's sum_{t} L_{t-1} (up to C_t)
    divided by T * D, in nats per dimension.

    Each call draws, from the trainer's generator, t and then eps, as :class:`LSimple` does
    (without labels), so that the same seed shows both objectives the same t and eps. The
    model's output is converted to eps when ``model.prediction`` is "x0" or "v".
    """

    def __init__(self, variance="beta", normalize=True):
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got variance={variance!r}")
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got normalize={normalize!r}")
        self.variance, self.normalize = variance, normalize

    def config(self):
        return {"name": "weighted_eps", "variance": self.variance, "normalize": self.normalize}

    def weights(self, schedule):
        """lambda_t for every t, divided by their mean when ``normalize``; float64, shape (T,)."""
        weights = vlb_weights(schedule, self.variance)
        return weights / weights.mean() if self.normalize else weights

    def __call__(self, model, schedule, x0, y, generator):
        if y is not None:
            raise ValueError("WeightedEps trains an unconditional model: pass no labels to the Trainer")
        B, device = x0.shape[0], x0.device
        t = torch.randint(0, schedule.T, (B,), generator=generator, device=device)
        eps = torch.empty_like(x0).normal_(generator=generator)
        x_t = extract(schedule.sqrt_alpha_bars, t, x0) * x0 + extract(schedule.sqrt_one_minus_alpha_bars, t, x0) * eps
        output = model(x_t, t)
        if output.shape != x0.shape:
            raise ValueError(f"the model returned shape {tuple(output.shape)} but x0 has shape "
                             f"{tuple(x0.shape)}; the model must map x_t to a tensor of the same shape")
        eps_hat = to_x0_eps(schedule, x_t, t, output, model.prediction)[1]
        per_example = ((eps_hat.float() - eps.float()) ** 2).flatten(1).mean(1)
        weights = self.weights(schedule).to(device)[t].float()
        return (weights * per_example).mean()
