"""What the Trainer minimises: the objective protocol, its one draw of (t, eps, x_t), and L_simple.

L_simple (Ho et al. 2020, Eq. 14) = E_{t, x_0, eps} || eps - eps_theta( sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps, t ) ||^2

with t uniform over the T steps. Predicting x_0 or v instead of eps (Salimans & Ho, 2022)
only changes the regression target; the sampler converts back (see :mod:`lesson_lib.diffusion.forward`).

A *training objective* is what :class:`~lesson_lib.training.trainer.Trainer` minimises: an
:class:`Objective`, an ``nn.Module`` so that what it holds moves with ``.to(device)`` and is saved
with every checkpoint (its ``state_dict``: a teacher's weights, an EMA target network, the loss
history of an importance sampler), with

* ``forward(net, model, x0, cond, generator) -> loss`` (a scalar tensor). ``net`` is the callable
  to run (the model, or its DistributedDataParallel or compiled wrapper); ``model`` is the bare
  network, whose attributes (``prediction``, ``num_classes``) it reads. ``cond`` is the batch's
  conditioning dict (``{"y": labels}``, ``{"low_res": images}`` or ``{}``). Every random number
  comes from ``generator``, whose state the checkpoints save, so a resumed run continues exactly;
* ``after_step(trainer)``: called after each optimiser step (an EMA target, a curriculum);
* ``config()`` -> a dict, recorded in checkpoints and checked on resume.

:class:`DiffusionObjective` is the base of every objective with a noise schedule: it owns the
schedule, and its :meth:`~DiffusionObjective.draw` is the one place where label dropout, t, eps and
x_t = Eq. 4 are drawn for training, in that order. :class:`LSimple` is the objective of lessons 2-4;
:class:`NoisyCrossEntropy` trains lesson 5's noisy classifier; :class:`WeightedEps` puts back the
weight lambda_t (:func:`vlb_weights`) that L_simple drops from the variational bound (lesson 1b).
Later lessons add others (L_hybrid, distillation, consistency) as subclasses.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..arguments import choice, number
from .forward import check_prediction, q_sample, to_x0_eps, v_from_x0_eps
from .schedules import NoiseSchedule

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


class Objective(torch.nn.Module):
    """The protocol of every training objective (see the module docstring). Subclasses write
    ``forward`` and ``config``; ``after_step`` does nothing unless overridden."""

    def forward(self, net, model, x0, cond, generator):
        raise NotImplementedError

    def after_step(self, trainer):
        """Called after each optimiser step, with the trainer (its ``model``, ``step``, ``distributed``)."""

    def config(self):
        raise NotImplementedError


class Draw(NamedTuple):
    """One training example per row: the (possibly label-dropped) conditioning, t, eps and
    x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps (Eq. 4)."""

    cond: dict
    t: torch.Tensor
    eps: torch.Tensor
    x_t: torch.Tensor


class DiffusionObjective(Objective):
    """An objective on a noise schedule, which it owns (it moves with ``.to(device)``), with
    label dropout for classifier-free guidance (Ho & Salimans, 2022): with probability
    ``class_dropout`` a label ``cond["y"]`` becomes the model's null class ``num_classes``."""

    def __init__(self, schedule, class_dropout=0.0):
        super().__init__()
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}; "
                            f"e.g. NoiseSchedule.from_name('linear', 1000)")
        self.schedule = schedule
        self.class_dropout = number(class_dropout, "class_dropout", minimum=0, maximum=1, strict_maximum=True)

    def _apply(self, fn, *args, **kwargs):
        """``.to(device)`` moves the schedule too (float64 kept: only the device follows)."""
        module = super()._apply(fn, *args, **kwargs)
        self.schedule = self.schedule.to(fn(torch.zeros(())).device)
        return module

    def drop_labels(self, model, cond, generator):
        """``cond`` with each label replaced by the null class with probability ``class_dropout``
        (one uniform draw per example, only when there are labels to drop)."""
        y = cond.get("y")
        if y is None or self.class_dropout == 0:
            return cond
        drop = torch.rand(y.shape[0], generator=generator, device=y.device) < self.class_dropout
        return {**cond, "y": torch.where(drop, torch.full_like(y, model.num_classes), y)}

    def sample_t(self, batch, generator, device):
        """t uniform over 0..T-1 (Algorithm 1); an importance sampler overrides this."""
        return torch.randint(0, self.schedule.T, (batch,), generator=generator, device=device)

    def draw(self, model, x0, cond, generator):
        """Label dropout, t, eps and x_t, drawn in this order from ``generator``: the same seed
        gives every objective built on it the same t and eps. No value is read on the host."""
        cond = self.drop_labels(model, cond, generator)
        t = self.sample_t(x0.shape[0], generator, x0.device)
        eps = torch.empty_like(x0).normal_(generator=generator)
        return Draw(cond, t, eps, q_sample(self.schedule, x0, t, eps, check=False))


class LSimple(DiffusionObjective):
    """L_simple (Eq. 14) on ``schedule``, with label dropout (``class_dropout``) for
    classifier-free guidance. The target follows ``model.prediction`` (eps, x0 or v)."""

    def config(self):
        return {"name": "l_simple", "class_dropout": self.class_dropout}

    def forward(self, net, model, x0, cond, generator):
        d = self.draw(model, x0, cond, generator)
        return _mse(net(d.x_t, d.t, **d.cond), _target(self.schedule, x0, d.eps, d.t, model.prediction),
                    model.prediction)


class NoisyCrossEntropy(DiffusionObjective):
    """The training objective of a noisy classifier f_phi(y | x_t, t) (Dhariwal & Nichol, 2021,
    Sec. 4; guided-diffusion trains its classifier the same way):

        L = E_{t, x_0, y, eps} [ -log f_phi(y | x_t, t) ],   x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps

    with t uniform over 0..T-1, so the classifier learns every noise level the sampler will
    show it. The model is called as ``model(x_t, t)`` (the labels are the target, not an input)
    and returns logits (B, num_classes); ``cond["y"]`` must be given.
    """

    def config(self):
        return {"name": "noisy_cross_entropy"}

    def forward(self, net, model, x0, cond, generator):
        if cond.get("y") is None:
            raise ValueError("a noisy classifier needs class labels: pass cond={'y': labels} to the Trainer")
        d = self.draw(model, x0, {}, generator)
        return F.cross_entropy(net(d.x_t, d.t).float(), cond["y"].long())


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
    choice(variance, "variance", VARIANCES)
    sigma2 = schedule.betas if variance == "beta" else schedule.posterior_log_variance.exp()
    return schedule.betas ** 2 / (2 * sigma2 * schedule.alphas * (1 - schedule.alpha_bars))


class WeightedEps(DiffusionObjective):
    """The eps regression with the variational bound's weight put back: each example's
    mean squared error ||eps - eps_theta(x_t, t)||^2 / D is multiplied by lambda_t
    (:func:`vlb_weights`, ``variance`` choosing sigma_t^2), t uniform over 0..T-1.

    With ``normalize=True`` (the default) the weights are divided by their mean over t, so that
    they average to 1 as L_simple's do: the two objectives then differ only in *how* they
    spread the effort over t, not in the overall step size, and compare fairly at the same
    learning rate. With ``normalize=False`` the loss is the bound's sum_{t} L_{t-1} (up to C_t)
    divided by T * D, in nats per dimension.

    The draw is :class:`LSimple`'s (without labels), so the same seed shows both objectives the
    same t and eps. The model's output is converted to eps when ``model.prediction`` is "x0" or "v".
    """

    def __init__(self, schedule, variance="beta", normalize=True):
        super().__init__(schedule)
        self.variance = choice(variance, "variance", VARIANCES)
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got normalize={normalize!r}")
        self.normalize = normalize

    def config(self):
        return {"name": "weighted_eps", "variance": self.variance, "normalize": self.normalize}

    def weights(self):
        """lambda_t for every t, divided by their mean when ``normalize``; float64, shape (T,)."""
        weights = vlb_weights(self.schedule, self.variance)
        return weights / weights.mean() if self.normalize else weights

    def forward(self, net, model, x0, cond, generator):
        if cond.get("y") is not None:
            raise ValueError("WeightedEps trains an unconditional model: pass no labels to the Trainer")
        d = self.draw(model, x0, cond, generator)
        output = net(d.x_t, d.t)
        if output.shape != x0.shape:
            raise ValueError(f"the model returned shape {tuple(output.shape)} but x0 has shape "
                             f"{tuple(x0.shape)}; the model must map x_t to a tensor of the same shape")
        eps_hat = to_x0_eps(self.schedule, d.x_t, d.t, output, model.prediction)[1]
        per_example = ((eps_hat.float() - d.eps.float()) ** 2).flatten(1).mean(1)
        return (self.weights().to(x0.device)[d.t].float() * per_example).mean()
