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
classifier. Later lessons plug in others (a distillation target, L_hybrid with a learned
variance) without touching the loop.
"""

import torch
import torch.nn.functional as F

from .forward import check_prediction, q_sample, v_from_x0_eps
from .schedules import extract


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
