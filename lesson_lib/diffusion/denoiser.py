"""The denoiser: any network, whatever it predicts, as one prediction of (x_0, eps).

A network can be trained to predict the noise eps (Ho et al., 2020), the data x_0, or the
velocity v = sqrt(alpha-bar_t) eps - sqrt(1 - alpha-bar_t) x_0 (Salimans & Ho, 2022). Given
x_t, each determines the other two (Eq. 4 of Ho et al.), so every sampler and every loss that
needs the network's opinion asks a :class:`Denoiser` and gets a :class:`Prediction` back:

    denoise = Denoiser(model, schedule, clip_x0=True)
    pred = denoise(x_t, t, y=labels)          # pred.x0, pred.eps

This is the only place that runs the network for sampling, so it is the only place that
handles mixed precision, checks the output's shape, converts eps/x0/v and clips x0_hat.
Guidance and conditioning wrap a denoiser in another callable with the same signature
(``(x_t, t, **cond) -> Prediction``); the sampling loop never changes.

A model with a *learned variance* (Nichol & Dhariwal, 2021; ``model.learn_sigma = True``)
returns 2C channels: the first C are its eps/x0/v prediction, the last C are v, and the
denoiser reports frac = (v + 1) / 2 in ``pred.frac``. It also reports ``pred.log_variance`` =
frac log beta_t + (1 - frac) log beta-tilde_t for the step t -> t - 1 of the original chain
(beta-tilde clipped at t = 0 to beta-tilde of t = 1, as improved-diffusion does). Why frac and
not only log Sigma: a respaced step t -> s has its own beta_{t->s} and beta-tilde_{t->s}, which
only the step knows, so :func:`~lesson_lib.diffusion.steps.ddpm_step` interpolates with frac.
"""

from typing import NamedTuple, Optional

import torch

from ..arguments import number
from ..models.base import check_prediction
from .forward import eps_from_x0, to_x0_eps
from .schedules import extract
from .steps import learned_range


def bf16_supported(device):
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU of the Ampere generation or
    newer (A100, H100, ...). Recent PyTorch also answers True for older GPUs such as Colab's T4,
    where bfloat16 is emulated and slower than float32; ``including_emulation=False`` asks for
    native support only (older PyTorch has no such argument and answers natively already)."""
    if torch.device(device).type != "cuda":
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:
        return bool(torch.cuda.is_bf16_supported())


class Prediction(NamedTuple):
    """What a denoiser says about x_t: its estimates of x_0 and of eps (consistent with each
    other through Eq. 4), and, for a model with a learned variance, log Sigma of the step
    t -> t - 1 and the interpolation weight frac = (v + 1) / 2 it came from (else None).
    A wrapper that changes x0/eps keeps the rest with ``pred._replace(x0=..., eps=...)``."""

    x0: torch.Tensor
    eps: torch.Tensor
    log_variance: Optional[torch.Tensor] = None
    frac: Optional[torch.Tensor] = None


def model_prediction(model, prediction=None):
    """What ``model`` predicts: ``prediction`` when given, else the model's own ``prediction``
    attribute (set when it was built and stored in its checkpoint), else "eps" for a plain
    function. A ``prediction`` that contradicts the model's is an error: sampling an x0 or v
    model as an eps model gives noise, not images."""
    own = getattr(model, "prediction", None)
    if prediction is not None:
        check_prediction(prediction)
    if prediction is None:
        prediction = own or "eps"
    elif own is not None and own != prediction:
        raise ValueError(f"prediction={prediction!r} contradicts the model, which was built with "
                         f"prediction={own!r}; leave prediction= out to use the model's own")
    check_prediction(prediction)
    return prediction


def check_clip(clip_x0):
    """``clip_x0`` as :func:`clip` reads it: True (clip to [-1, 1]), False or None (no clipping), or
    a positive finite number c (clip to [-c, c]). A negative or zero c would clip everything to a
    point or, worse, look like False; it is refused."""
    if clip_x0 is False or clip_x0 is True or clip_x0 is None:
        return bool(clip_x0)
    return number(clip_x0, "clip_x0", minimum=0, strict_minimum=True,
                  hint="True clips x0_hat to [-1, 1], a number c to [-c, c], False does not clip")


def check_denoiser(denoise, name="denoise"):
    """A denoiser is a callable ``(x_t, t, **cond) -> Prediction``: a :class:`Denoiser`, a
    :class:`ClipX0` or a guidance wrapper. A network (an ``nn.Module``) is not one: what its output
    means (eps, x0 or v) is what the Denoiser around it knows."""
    if isinstance(denoise, torch.nn.Module) or not callable(denoise):
        raise TypeError(f"{name} must be a denoiser (x_t, t, **cond) -> Prediction, got {name}="
                        f"{type(denoise).__name__}; wrap a network: Denoiser(model, schedule)")
    return denoise


def check_returned(pred, name="denoise"):
    """What a denoiser returned, which must be a :class:`Prediction` (free: reads no values)."""
    if not isinstance(pred, Prediction):
        raise TypeError(f"{name} must return a Prediction (x0, eps), got {type(pred).__name__}; a function "
                        f"that returns the network's output is not a denoiser: wrap the network: "
                        f"Denoiser(model, schedule)")
    return pred


def clip(x0_hat, clip_x0):
    """Clip to [-1, 1] for ``clip_x0=True`` (images in [-1, 1]), to [-c, c] for a number c."""
    bound = 1.0 if clip_x0 is True else float(clip_x0)
    return x0_hat.clamp(-bound, bound)


class Denoiser:
    """``Denoiser(model, schedule)(x_t, t, **cond) -> Prediction``.

    Args:
        model: a callable ``model(x_t, t, **cond)`` returning an eps, x0 or v prediction of the
            shape of ``x_t``.
        schedule: the :class:`~lesson_lib.diffusion.schedules.NoiseSchedule` it was trained with.
        prediction: what the output means; read from ``model.prediction`` when left out.
        clip_x0: clip x0_hat to [-1, 1] (True) or [-c, c] (a number); eps_hat is then derived
            again from the clipped x0_hat, so the pair stays consistent (as DDIM needs).
        autocast: run the network under bfloat16 autocast (outputs come back in the dtype of x_t).

    A model with ``learn_sigma = True`` must return 2C channels (see the module's docstring);
    ``pred.frac`` and ``pred.log_variance`` then come with every prediction.
    """

    def __init__(self, model, schedule, prediction=None, clip_x0=False, autocast=False):
        wrapped = getattr(model, "denoise", None)             # a guidance wrapper holds the Denoiser it wraps
        if isinstance(model, (Denoiser, ClipX0)) or isinstance(wrapped, (Denoiser, ClipX0)) or not callable(model):
            raise TypeError(f"model must be a network model(x_t, t, **cond), got model={type(model).__name__}; "
                            f"a denoiser needs no second Denoiser around it: pass it on as it is")
        self.model = model
        self.schedule = schedule
        self.prediction = model_prediction(model, prediction)
        self.clip_x0 = check_clip(clip_x0)
        self.autocast = autocast
        self.learn_sigma = bool(getattr(model, "learn_sigma", False))

    def __call__(self, x_t, t, **cond):
        with torch.autocast(x_t.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            output = self.model(x_t, t, **cond)
        expected = x_t.shape
        if self.learn_sigma:
            expected = (x_t.shape[0], 2 * x_t.shape[1]) + tuple(x_t.shape[2:])
        if output.shape != expected:
            what = ("twice the channels of x_t (the prediction, then v of the learned variance)"
                    if self.learn_sigma else "a tensor of the same shape")
            raise ValueError(f"the model returned shape {tuple(output.shape)} for x_t of shape "
                             f"{tuple(x_t.shape)}; it must predict {what}")
        output = output.to(x_t.dtype)
        frac = log_variance = None
        if self.learn_sigma:
            output, v = output.chunk(2, dim=1)
            frac = (v + 1) / 2
            log_variance = learned_range(frac, extract(self.schedule.betas.log(), t, x_t),
                                         extract(self.schedule.posterior_log_variance, t, x_t))
        x0_hat, eps_hat = to_x0_eps(self.schedule, x_t, t, output, self.prediction)
        if self.clip_x0:
            x0_hat = clip(x0_hat, self.clip_x0)
            eps_hat = eps_from_x0(self.schedule, x_t, t, x0_hat)
        return Prediction(x0_hat, eps_hat, log_variance, frac)


class ClipX0:
    """``ClipX0(denoise, schedule, clip_x0)``: any denoiser (or guidance wrapper) with x0_hat
    clipped afterwards and eps_hat derived again, exactly as :class:`Denoiser` clips its own
    output. Guidance combines predictions linearly, which can move x0_hat outside [-1, 1] again,
    so a guided sampler clips after the guidance, not before."""

    def __init__(self, denoise, schedule, clip_x0):
        self.denoise, self.schedule, self.clip_x0 = check_denoiser(denoise), schedule, check_clip(clip_x0)

    def __call__(self, x_t, t, **cond):
        pred = check_returned(self.denoise(x_t, t, **cond))
        if not self.clip_x0:
            return pred
        x0_hat = clip(pred.x0, self.clip_x0)
        return pred._replace(x0=x0_hat, eps=eps_from_x0(self.schedule, x_t, t, x0_hat))
