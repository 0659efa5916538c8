"""Latents: a dataset encoded once by an autoencoder, scaled to unit variance, as a Trainer's data.

Latent diffusion (Rombach et al., 2022) trains its diffusion model on z = E(x) instead of x. The
autoencoder is frozen by then, so every image's latent can be computed once and kept
(:func:`encode_dataset`, with a cache file), and the diffusion model trains on that tensor exactly
as it would on images: ``Trainer(unet, latents.data, LSimple(schedule), cond=latents.cond)``.

What is encoded: the posterior mean of q(z | x), not a sample of it. A cache holds one fixed
tensor, so a sample drawn once would be one fixed perturbation of the mean, not the fresh draw per
epoch that the reference takes (its ``get_first_stage_encoding`` samples at every step), and with
the small KL weight of :mod:`lesson_lib.diffusion.latent` the posterior's sigma is a small fraction
of the latents' spread (the recipes of :mod:`lesson_lib.recipes.autoencoder` measure it). The
mean is also what the decoder reconstructs from when the reconstruction quality is measured, so
the diffusion model learns the distribution whose decodings were measured.

The scale. The KL term is too weak to fix the latent's scale, and the diffusion model's forward
process assumes data of about unit variance (its x_T ~ N(0, I) must drown the signal). So the
latents are multiplied by

    scale_factor = 1 / std(z)     over every element of every training image's latent

(the reference's ``scale_by_std``, whose factor 0.18215 Stable Diffusion hard-codes). The std is
that of the whole training set, computed in float64 in one pass (:func:`scale_factor`): the
reference takes it from the first batch only, whose std differs from the set's by the batch's
sampling error and by whatever that batch happens to hold. Held-out latents are multiplied by the
training set's factor, so their std is near 1 but not exactly 1. A sample of the diffusion model is
divided by the factor before decoding (:func:`latent_decoder`), and its x0_hat is never clipped
(``generate(..., clip_x0=False, decode=...)``): latents are not confined to [-1, 1].

No flips: a flipped latent is not the latent of the flipped image (the encoder's kernels are not
symmetric), so augmentation by flipping means encoding the flipped images too.
"""

import hashlib
import json
import os
from typing import NamedTuple

import torch

from ..arguments import integer, number
from ..files import atomic_write
from .images import uint8_to_float


SCALE_HINT = "the training set's 1 / std of the latents, scale_factor(train_means) or train.scale_factor"


class LatentData(NamedTuple):
    """Latents scaled to unit variance, as the Trainer takes them: ``data`` (N, c, h, w) float32,
    ``cond`` (``{"y": labels}`` or ``{}``), and the ``scale_factor`` they were multiplied by."""

    data: torch.Tensor
    cond: dict
    scale_factor: float


def _device_of(module):
    return next(module.parameters()).device


@torch.no_grad()
def encode_means(autoencoder, images, batch_size=500):
    """The posterior means E(x) of ``images`` (N, C, H, W), uint8 in 0..255 or float in [-1, 1], in
    batches on the autoencoder's device, in eval mode (its mode is restored). Returns (N, c, h, w)
    float32 on the CPU."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a tensor of shape (N, C, H, W), got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    batch_size = integer(batch_size, "batch_size", minimum=1)
    device, was_training = _device_of(autoencoder), autoencoder.training
    autoencoder.eval()
    try:
        means = []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size]
            x = uint8_to_float(x) if x.dtype == torch.uint8 else x
            means.append(autoencoder.encode(x.to(device, torch.float32))[0].float().cpu())
    finally:
        autoencoder.train(was_training)
    return torch.cat(means)


def scale_factor(latents):
    """1 / std over every element of ``latents`` (all of them: the whole training set), in float64 in
    one pass over the examples (the sum and the sum of squares), so the set never has to be copied to
    float64 at once. Multiplying the latents by it gives them a std of exactly 1."""
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point() or latents.numel() < 2:
        raise ValueError("latents must be a float tensor of at least two numbers (the encoded training set)")
    total = total_sq = 0.0
    for chunk in latents.split(4096):
        chunk = chunk.double()
        total, total_sq = total + chunk.sum(), total_sq + (chunk ** 2).sum()
    n = latents.numel()
    variance = (total_sq - total ** 2 / n) / (n - 1)
    std = float(variance.clamp(min=0).sqrt())
    if not std > 0:
        raise ValueError("the latents have zero variance (every latent is the same): the autoencoder did not "
                         "learn to encode; check its training before scaling")
    return 1.0 / std


def _raw_bytes(tensor):
    """A tensor's bytes, any dtype, as a buffer that hashlib reads without a copy."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def _fingerprint(autoencoder, images):
    """sha256 of what the latents depend on: the autoencoder (class, config, weights) and the images."""
    h = hashlib.sha256()
    h.update(type(autoencoder).__name__.encode())
    h.update(json.dumps(getattr(autoencoder, "config", {}), sort_keys=True).encode())
    for key, value in autoencoder.state_dict().items():
        h.update(f"{key} {value.dtype} {tuple(value.shape)}".encode())
        h.update(_raw_bytes(value))
    h.update(f"images {images.dtype} {tuple(images.shape)}".encode())
    h.update(_raw_bytes(images))
    return h.hexdigest()


def _cached_means(autoencoder, images, cache, batch_size):
    """The posterior means, read from ``cache`` when it holds those of this autoencoder and these
    images, else encoded and written there (atomically)."""
    if cache is None:
        return encode_means(autoencoder, images, batch_size)
    key = _fingerprint(autoencoder, images)
    if os.path.exists(cache):
        held = torch.load(cache, map_location="cpu", weights_only=True)
        if held.get("fingerprint") == key:
            return held["means"]
    means = encode_means(autoencoder, images, batch_size)
    atomic_write(cache, lambda f: torch.save({"fingerprint": key, "means": means}, f))
    return means


def encode_dataset(autoencoder, images, labels=None, scale=None, cache=None, batch_size=500):
    """``images`` encoded once (posterior means), scaled, with their labels, as a :class:`LatentData`.

    ``scale`` None computes the factor from these latents (:func:`scale_factor`: pass the whole
    training set); held-out images take the training set's factor, ``scale=train.scale_factor``.
    ``cache`` (a file path) keeps the unscaled means: a later call with the same autoencoder weights and
    the same images reads them back instead of encoding again; anything else is encoded afresh.
    """
    if labels is not None and (not isinstance(labels, torch.Tensor) or len(labels) != len(images)):
        raise ValueError(f"labels must be a tensor with one label per image ({len(images)}), got "
                         f"{len(labels) if hasattr(labels, '__len__') else type(labels).__name__}")
    if scale is not None:
        scale = number(scale, "scale", minimum=0, strict_minimum=True, hint=SCALE_HINT)
    means = _cached_means(autoencoder, images, cache, batch_size)
    factor = scale_factor(means) if scale is None else scale
    return LatentData(means * factor, {} if labels is None else {"y": labels.long()}, factor)


def latent_decoder(autoencoder, scale):
    """The function ``z -> autoencoder.decode(z / scale)``: what turns a sample of a diffusion model
    trained on latents scaled by ``scale`` into images, e.g. ``generate(..., clip_x0=False,
    decode=latent_decoder(autoencoder, latents.scale_factor))``. Decodes without gradients, in eval mode."""
    scale = number(scale, "scale", minimum=0, strict_minimum=True, hint=SCALE_HINT)

    @torch.no_grad()
    def decode(z):
        was_training = autoencoder.training
        autoencoder.eval()
        try:
            return autoencoder.decode(z.to(_device_of(autoencoder), torch.float32) / scale)
        finally:
            autoencoder.train(was_training)

    return decode
