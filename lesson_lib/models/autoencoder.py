"""The autoencoder of latent diffusion (Rombach et al., 2022): images to a small latent and back.

Latent diffusion trains in two stages. First an autoencoder learns to compress an image x into a
latent z with ``factor`` = f times fewer pixels per side and ``latent_channels`` = c channels, and to
decode it back; then a diffusion model is trained on the latents (:mod:`lesson_lib.data.latents`) and
its samples are decoded. The diffusion network then works at (H/f) x (W/f) instead of H x W.

    x (C, H, W) --Encoder--> mean, log-variance (c, H/f, W/f) --z = mean + sigma * e--> Decoder --> x_hat

The encoder returns a diagonal Gaussian posterior q(z | x) = N(mean, diag(exp(logvar))), as the
KL-regularised autoencoder of Rombach et al. (Sec. 3.1, "KL-reg"; their ``AutoencoderKL``): training
decodes a sample z = mean + sigma * e (the reparameterisation of Kingma & Welling, 2014), and a small
KL(q(z | x) || N(0, I)) keeps sigma away from 0 and pulls the latent's scale gently towards 1 (the
objective is :class:`lesson_lib.diffusion.latent.AutoencoderLoss`). This one is small:
ResBlocks and stride-2 convolutions only (the shared layers of :mod:`lesson_lib.models.layers`, their
ResBlock without a timestep), no attention, and none of the reference's adversarial or perceptual
(LPIPS) losses, whose networks would have to be downloaded.

    Encoder   conv 3x3 -> per level: ``num_res_blocks`` ResBlocks, then a stride-2 convolution
              (none after the last level) -> ResBlock -> GroupNorm, SiLU, conv 3x3 to 2c channels
              (the mean and the log-variance, clamped to [-30, 20] as the reference does)
    Decoder   conv 3x3 -> ResBlock -> per level, deepest first: ``num_res_blocks + 1`` ResBlocks,
              then nearest x2 and a convolution (none after the first level) -> GroupNorm, SiLU,
              conv 3x3 to C channels

With f in {1, 2, 4} there are log2(f) halvings: MNIST's 28 x 28 becomes 28, 14 or 7 pixels a side,
CIFAR-10's 32 x 32 becomes 32, 16 or 8. The decoder's output is not squashed into [-1, 1] (the
reference's is not either); a decoded image is clipped where it becomes an image (saving it, FID).
"""

import math
import numbers

import torch
from torch import nn

from ..arguments import float_tensor, integer
from .base import Model
from .layers import Downsample, ResBlock, Upsample, group_norm

FACTORS = (1, 2, 4)
"""The downsampling factors f an autoencoder may have: 1 (no downsampling), 2 or 4."""

LOGVAR_RANGE = (-30.0, 20.0)
"""Where the encoder's log-variance is clamped, as in the reference's DiagonalGaussianDistribution:
sigma between about 3e-7 and 2e4, so that exp never overflows nor gives sigma = 0."""


def _widths(base_channels, channel_mults):
    return [base_channels * m for m in channel_mults]


class Encoder(nn.Module):
    """x (B, C, H, W) -> (B, 2c, H/f, W/f): the mean and the log-variance, concatenated."""

    def __init__(self, in_channels, latent_channels, widths, num_res_blocks):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        blocks, ch = [], widths[0]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, width, time_dim=None))
                ch = width
            if level != len(widths) - 1:
                blocks.append(Downsample(ch))
        self.down = nn.Sequential(*blocks)
        self.middle = ResBlock(ch, ch, time_dim=None)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, 2 * latent_channels, 3, padding=1))

    def forward(self, x):
        return self.out(self.middle(self.down(self.conv_in(x))))


class Decoder(nn.Module):
    """z (B, c, H/f, W/f) -> x_hat (B, C, H, W)."""

    def __init__(self, out_channels, latent_channels, widths, num_res_blocks):
        super().__init__()
        ch = widths[-1]
        self.conv_in = nn.Conv2d(latent_channels, ch, 3, padding=1)
        self.middle = ResBlock(ch, ch, time_dim=None)
        blocks = []
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(ch, widths[level], time_dim=None))
                ch = widths[level]
            if level != 0:
                blocks.append(Upsample(ch))
        self.up = nn.Sequential(*blocks)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, z):
        return self.out(self.up(self.middle(self.conv_in(z))))


class AutoencoderKL(Model):
    """A KL-regularised convolutional autoencoder: ``encode(x) -> (mean, logvar)``, ``decode(z) -> x``.

    Args:
        in_channels: image channels (1 for MNIST, 3 for CIFAR-10); the decoder returns as many.
        image_size: height = width of the training images; must be divisible by ``factor``.
        factor: the downsampling factor f, one of :data:`FACTORS`: the latent is
            ``image_size / f`` pixels a side (there are log2(f) stride-2 convolutions).
        latent_channels: c, the channels of the latent.
        base_channels: the width of the first level.
        channel_mults: one multiplier per level, log2(f) + 1 of them; None gives 1 for the first
            level and 2 for the others.
        num_res_blocks: ResBlocks per level in the encoder (one more in the decoder, as the
            reference's decoder has).

    ``model.config`` holds every constructor argument (recorded by :class:`~lesson_lib.models.base.Model`),
    so ``AutoencoderKL(**model.config)`` rebuilds it and a checkpoint or a shipped file can name it.
    It is not a denoiser: ``prediction`` is None and it has no classes.
    """

    prediction = None

    def __init__(self, in_channels=1, image_size=28, factor=4, latent_channels=4, base_channels=32,
                 channel_mults=None, num_res_blocks=1):
        super().__init__()
        in_channels = integer(in_channels, "in_channels", minimum=1)
        image_size = integer(image_size, "image_size", minimum=1)
        if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or factor not in FACTORS:
            raise ValueError(f"factor must be one of {', '.join(map(str, FACTORS))} (the downsampling factor f: "
                             f"the latent is image_size / f pixels a side), got factor={factor!r}")
        if image_size % factor:
            fits = ", ".join(str(f) for f in FACTORS if image_size % f == 0)
            raise ValueError(f"image_size={image_size} is not divisible by factor={factor}: the latent would be "
                             f"{image_size / factor:g} pixels a side; choose factor in ({fits}), or pad or resize "
                             f"the images to a multiple of {factor}")
        factor = int(factor)
        latent_channels = integer(latent_channels, "latent_channels", minimum=1)
        base_channels = integer(base_channels, "base_channels", minimum=1)
        num_res_blocks = integer(num_res_blocks, "num_res_blocks", minimum=1)
        levels = int(math.log2(factor)) + 1
        if channel_mults is None:
            channel_mults = [1] + [2] * (levels - 1)
        channel_mults = [integer(m, "channel_mults", minimum=1) for m in channel_mults]
        if len(channel_mults) != levels:
            raise ValueError(f"channel_mults must have log2(factor) + 1 = {levels} entries, one per level, for "
                             f"factor={factor}, got channel_mults={channel_mults}; or leave it None")
        self.in_channels, self.image_size = in_channels, image_size
        self.factor, self.latent_channels = factor, latent_channels
        widths = _widths(base_channels, channel_mults)
        self.encoder = Encoder(in_channels, latent_channels, widths, num_res_blocks)
        self.decoder = Decoder(in_channels, latent_channels, widths, num_res_blocks)

    @property
    def latent_shape(self):
        """The shape of one image's latent: ``(c, image_size / f, image_size / f)``."""
        side = self.image_size // self.factor
        return (self.latent_channels, side, side)

    def _check(self, x, name, channels, what):
        float_tensor(x, name, ndim=4, finite=False)
        if x.shape[1] != channels:
            raise ValueError(f"{name} must have {channels} channel(s) ({what}), got shape {tuple(x.shape)}")

    def encode(self, x):
        """The posterior q(z | x) = N(mean, diag(exp(logvar))): ``(mean, logvar)``, each
        (B, c, H/f, W/f), for images ``x`` (B, C, H, W) in [-1, 1] with H and W divisible by f."""
        self._check(x, "x", self.in_channels, "the images this autoencoder was built for")
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"x's height and width must be divisible by factor={self.factor}, got "
                             f"{tuple(x.shape[2:])}; pad or resize the images")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z):
        """Images (B, C, f h, f w) from latents ``z`` (B, c, h, w); not clipped to [-1, 1]."""
        self._check(z, "z", self.latent_channels, "its latent_channels")
        return self.decoder(z)

    def forward(self, x, noise=None):
        """``(x_hat, mean, logvar)``: ``x`` encoded, and decoded from the posterior mean, or with
        ``noise`` (a standard normal draw shaped like the mean) from the sample
        z = mean + exp(logvar / 2) * noise, the reparameterisation that training uses."""
        mean, logvar = self.encode(x)
        z = mean
        if noise is not None:
            if noise.shape != mean.shape:
                raise ValueError(f"noise must have the latent's shape {tuple(mean.shape)}, got {tuple(noise.shape)}")
            z = mean + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mean, logvar


PRESETS = {
    # MNIST 28x28x1 -> 7x7x4 (f = 4): 196 numbers per digit instead of 784; widths 16-32-32, 196k parameters.
    "mnist": dict(in_channels=1, image_size=28, factor=4, latent_channels=4, base_channels=16,
                  channel_mults=(1, 2, 2), num_res_blocks=1),
    # CIFAR-10 32x32x3 -> 8x8x8 (f = 4): 512 numbers per image instead of 3,072; widths 32-64-64, 780k parameters.
    "cifar10": dict(in_channels=3, image_size=32, factor=4, latent_channels=8, base_channels=32,
                    channel_mults=(1, 2, 2), num_res_blocks=1),
}


def autoencoder_preset(name, **overrides):
    """``AutoencoderKL(**PRESETS[name], **overrides)``, e.g. ``autoencoder_preset("mnist", factor=2,
    channel_mults=(1, 2))``."""
    if name not in PRESETS:
        raise ValueError(f"unknown autoencoder preset {name!r}; choose one of {sorted(PRESETS)}")
    return AutoencoderKL(**{**PRESETS[name], **overrides})
