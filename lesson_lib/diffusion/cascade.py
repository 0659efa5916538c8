"""Cascaded diffusion (Ho et al. 2021, Cascaded Diffusion Models, CDM): a base model samples a small
image, a super-resolution (SR) model samples the large image conditioned on it.

    x_low  = base sample at low resolution                              (the one sampling loop)
    z_low  = sqrt(alpha-bar_s) x_low + sqrt(1 - alpha-bar_s) e,  e ~ N(0, I)   (CDM Sec. 4.1)
    x_high = SR sample, the network seeing concat(x_t, upsample(z_low)) and s   (the same loop)

*Conditioning augmentation* (CDM Sec. 4.1, "Gaussian conditioning augmentation"): the SR model is
trained on low-resolution images made from real ones, but at sampling time it sees the base
model's samples, which differ from real ones. Noising the low-resolution image with the forward
process (Ho et al. 2020, Eq. 4) at a level s, in training and in sampling, hides the fine detail
where the two differ; the network is told s, embedded like the timestep.

**What the level s means here.** s in [0, 1] is a fraction of the SR model's schedule: the image is
noised with k = round(s T) forward steps (the paper's timestep k; alpha-bar_0 = 1), so on the
course's linear schedule with T = 1000, s = 0.2 means alpha-bar_200 (:func:`aug_steps`). s = 0 is
exactly the identity (alpha-bar_0 = 1, no noise added). The network receives k, an integer
timestep, as ``aug_level``.

**Noise once per sample.** e is drawn once for each sample, before the SR chain starts, and the
same z_low conditions every step of that chain (:class:`LowResCondition`).

* :func:`downsample` (area: exact average pooling) and :func:`upsample` (bilinear,
  ``align_corners=False``) make and enlarge low-resolution images;
* :func:`augment` is the conditioning augmentation, :class:`LowResCondition` turns low-resolution
  images into the SR model's ``cond`` dict (``{"low_res": ..., "aug_level": ...}``);
* :class:`AugmentedLSimple` is L_simple for the SR model with the augmentation drawn afresh at
  every training step (the Trainer is given the clean low-resolution images as ``cond``);
* :func:`cascade_sample` is the two stages: two calls of one sampler preset of
  :mod:`lesson_lib.diffusion.sampling`.

The SR network is :class:`lesson_lib.models.unet.SuperResUNet`.
"""

import torch
import torch.nn.functional as F

from ..arguments import float_tensor, integer, number
from .losses import LSimple
from .sampling import ddim_sample
from .schedules import NoiseSchedule


def _images(x, name):
    float_tensor(x, name, finite=False)
    if x.ndim != 4:
        raise ValueError(f"{name} must be a batch of images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    return x


def downsample(x, factor=2):
    """Area downsampling: each ``factor`` x ``factor`` block of ``x`` (B, C, H, W) becomes its mean
    (exact average pooling, the low-resolution training images of CDM and of guided-diffusion's
    super-resolution model). H and W must be divisible by ``factor``."""
    _images(x, "x")
    factor = integer(factor, "factor", minimum=1, hint="the ratio of the two resolutions, e.g. 2 for 28 -> 14")
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"the image size {tuple(x.shape[2:])} must be divisible by factor={factor}; crop or pad "
                         f"the images, or pick a factor that divides it")
    return F.avg_pool2d(x, factor)


def upsample(x, size):
    """Bilinear upsampling of ``x`` (B, C, h, w) to ``size`` (an int for size x size, or (H, W)),
    ``align_corners=False``: how the SR model sees its low-resolution input (CDM Sec. 3)."""
    _images(x, "x")
    size = (size, size) if isinstance(size, int) and not isinstance(size, bool) else tuple(size)
    if len(size) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in size):
        raise ValueError(f"size must be a positive int or a pair (H, W) of them, got size={size!r}")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def aug_steps(level, T):
    """The number of forward steps k = round(s T) of augmentation level s in [0, 1] (s = 0: k = 0,
    the clean image; s = 1: k = T). ``level`` is a number, or a float tensor of one level per sample;
    the result is a long tensor (0-d for a number)."""
    if isinstance(level, torch.Tensor):
        if not level.is_floating_point():
            raise TypeError(f"level must be a float in [0, 1] or a float tensor of them, got dtype {level.dtype}")
        if level.numel() and (float(level.min()) < 0 or float(level.max()) > 1):
            raise ValueError(f"every level must lie in [0, 1] (a fraction of the schedule's T), got values in "
                             f"[{float(level.min()):g}, {float(level.max()):g}]")
        return torch.round(level.double() * T).long()
    level = number(level, "level", minimum=0, maximum=1, hint="a fraction of the schedule: 0 = no augmentation")
    return torch.tensor(round(level * T), dtype=torch.long)


def augment(x_low, level, schedule, generator=None):
    """Gaussian conditioning augmentation (Ho et al. 2021, Sec. 4.1):

        z = sqrt(alpha-bar_k) x_low + sqrt(1 - alpha-bar_k) e,   k = round(s T),  e ~ N(0, I)

    the forward process q(x_k | x_0) of Ho et al. 2020, Eq. 4, applied to the low-resolution image.
    One e is drawn per sample (shaped like ``x_low``, from ``generator``), whatever the level, so a
    sweep over s with the same generator seed noises with the same e. s = 0 returns ``x_low``
    unchanged (alpha-bar_0 = 1). ``level`` is a number, or a float tensor (B,) of one level per
    sample. Returns ``(z, k)``: the augmented images and the steps k as a long tensor (B,)."""
    float_tensor(x_low, "x_low", finite=False)
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule (the SR model's), got {type(schedule).__name__}")
    k = aug_steps(level, schedule.T).to(x_low.device)
    k = k.expand(x_low.shape[0]) if k.ndim == 0 else k
    if k.shape != (x_low.shape[0],):
        raise ValueError(f"level must be one number or one level per sample ({x_low.shape[0]},), got shape "
                         f"{tuple(k.shape)}")
    e = torch.randn(x_low.shape, generator=generator, device=x_low.device, dtype=x_low.dtype)
    a = schedule.alpha_bars_with_0.to(x_low.device)[k].view(-1, *[1] * (x_low.ndim - 1))
    return (a.sqrt() * x_low + (1 - a).sqrt() * e).to(x_low.dtype), k


class LowResCondition:
    """Low-resolution images -> the ``cond`` dict of a :class:`~lesson_lib.models.unet.SuperResUNet`:
    ``{"low_res": upsample(augment(x_low, s), size), "aug_level": k}``, drawn once per sample.

    Args:
        schedule: the SR model's noise schedule (k counts its forward steps).
        level: the augmentation level s in [0, 1] (0: none); see the module docstring.
        embed_level: whether the SR model takes ``aug_level`` (its ``embed_aug_level``).

    ``cond = LowResCondition(schedule, 0.2)(x_low, 28, generator)`` is made once, before the SR
    chain starts, and passed to the sampler as ``model_kwargs``: every step sees the same z.
    """

    def __init__(self, schedule, level=0.0, embed_level=True):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule (the SR model's), got {type(schedule).__name__}")
        self.schedule, self.level = schedule, number(level, "level", minimum=0, maximum=1)
        self.embed_level = bool(embed_level)

    def __call__(self, x_low, size, generator=None, level=None):
        """The cond dict for ``x_low`` (B, C, h, w) and an SR model of image ``size``; ``level``
        (a number or a tensor (B,)) overrides the level given at construction."""
        _images(x_low, "x_low")
        z, k = augment(x_low, self.level if level is None else level, self.schedule, generator)
        cond = {"low_res": upsample(z, size)}
        if self.embed_level:
            cond["aug_level"] = k
        return cond


class AugmentedLSimple(LSimple):
    """L_simple (Ho et al. 2020, Eq. 14) of a super-resolution model with conditioning augmentation
    (Ho et al. 2021, Sec. 4.1), for the one Trainer: ``Trainer(sr, images, AugmentedLSimple(schedule,
    0.2), cond={"low_res": downsample(images)})``.

    At every step the batch's clean low-resolution images are augmented afresh (a new e per example)
    at level ``level``, or, with ``random_level``, at a level drawn per example uniformly from
    [0, level] (CDM trains with a random level and fixes it at sampling time); then upsampled to
    x_0's size. Then the draw of :class:`~lesson_lib.diffusion.losses.LSimple` (label dropout, t, eps).
    """

    def __init__(self, schedule, level=0.0, random_level=False, embed_level=True, class_dropout=0.0):
        super().__init__(schedule, class_dropout)
        self.condition = LowResCondition(schedule, level, embed_level)
        self.random_level = bool(random_level)

    def _apply(self, fn, *args, **kwargs):
        module = super()._apply(fn, *args, **kwargs)
        self.condition.schedule = self.schedule
        return module

    def config(self):
        return {"name": "l_simple_augmented", "class_dropout": self.class_dropout, "level": self.condition.level,
                "random_level": self.random_level, "embed_level": self.condition.embed_level}

    def forward(self, net, model, x0, cond, generator):
        if cond.get("low_res") is None:
            raise ValueError("AugmentedLSimple needs the clean low-resolution images: pass "
                             "cond={'low_res': downsample(images)} to the Trainer")
        level = None
        if self.random_level:
            level = self.condition.level * torch.rand(x0.shape[0], generator=generator, device=x0.device,
                                                      dtype=torch.float64)
        low = self.condition(cond["low_res"].to(x0.dtype), tuple(x0.shape[2:]), generator, level)
        return super().forward(net, model, x0, {**cond, **low}, generator)


def cascade_sample(base, sr, schedule, n, *, labels=None, level=0.0, sr_schedule=None, sampler=ddim_sample,
                   seed=0, device="cpu", return_stages=False, **sampler_kwargs):
    """``n`` samples of a two-stage cascade (Ho et al. 2021, Sec. 3): the base model samples low-
    resolution images, :class:`LowResCondition` augments them at ``level`` (s; once per sample) and
    upsamples them, and the SR model samples the high-resolution images conditioned on them.

    Args:
        base, sr: the base network and the :class:`~lesson_lib.models.unet.SuperResUNet` (any
            models with their attributes: ``data_shape``, and for ``sr`` ``embed_aug_level``).
        schedule: the base model's noise schedule; ``sr_schedule`` the SR model's (default: the same).
        labels: class labels (n,), given to each stage that is class-conditional.
        level: the augmentation level s in [0, 1] (see the module docstring).
        sampler: one preset of :mod:`lesson_lib.diffusion.sampling` (``ddim_sample`` or
            ``ddpm_sample``), run once per stage with ``sampler_kwargs`` (e.g. ``steps=100``,
            ``clip_x0=True``, ``progress=False``).
        seed: one generator, seeded once, draws the base's x_T and noise, then e, then the SR stage's.

    Returns the high-resolution samples, or with ``return_stages`` ``(x_high, x_low, cond)``: the
    base samples and the SR model's cond dict (``cond["low_res"]`` is the upsampled z).
    """
    n = integer(n, "n", minimum=1)
    sr_schedule = schedule if sr_schedule is None else sr_schedule
    generator = torch.Generator(device).manual_seed(integer(seed, "seed", minimum=0))
    if labels is not None:
        labels = labels.to(device)

    def given_labels(model):
        return {"y": labels} if labels is not None and getattr(model, "num_classes", None) is not None else {}

    x_low = sampler(base, schedule, (n, *base.data_shape), model_kwargs=given_labels(base), generator=generator,
                    device=device, **sampler_kwargs)
    cond = LowResCondition(sr_schedule, level, getattr(sr, "embed_aug_level", False))(x_low, sr.image_size, generator)
    cond.update(given_labels(sr))
    x_high = sampler(sr, sr_schedule, (n, *sr.data_shape), model_kwargs=cond, generator=generator, device=device,
                     **sampler_kwargs)
    return (x_high, x_low, cond) if return_stages else x_high
