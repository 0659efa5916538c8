"""The U-Net denoiser of DDPM (Ho et al., 2020, Appendix B).

The network eps_theta(x_t, t) maps a noisy image to an image of the same shape. DDPM uses a
U-Net (Ronneberger et al., 2015) with the backbone of PixelCNN++ (Salimans et al., 2017):

    x_t --conv_in--> [down path] --> [middle] --> [up path] --norm, SiLU, conv_out--> eps
                        |   each down block's output is kept ...   ^
                        +------ ... and concatenated on the way up --+

* Down path: at each resolution level, ``num_res_blocks`` ResBlocks (with self-attention
  after each one at the resolutions listed in ``attention_resolutions``, 16x16 in the paper),
  then a stride-2 convolution halves the resolution (none after the last level).
* Middle: ResBlock -> self-attention -> ResBlock at the lowest resolution.
* Up path: the mirror image, with ``num_res_blocks + 1`` ResBlocks per level; each one takes
  the concatenation of the current features and one stored down-path output (the skip
  connections: fine detail reaches the output without squeezing through the bottleneck),
  then nearest-neighbour x2 upsampling followed by a 3x3 convolution.
* The timestep t enters every ResBlock: sinusoidal embedding -> MLP (:class:`TimeEmbedding`)
  -> a per-block Linear whose output is added to every pixel of each channel.
* Optional class conditioning (not in DDPM; used for classifier-free guidance, Ho & Salimans
  2022): a learned embedding of the label y is added to the time embedding. Index
  ``num_classes`` is a learned *null class* meaning "no label".

Zero initialisation: as in the DDPM code, the last convolution of every ResBlock, the output
projection of every attention block and the final output convolution start at zero. Each
residual block is then the identity at initialisation and the untrained model outputs 0,
which keeps the start of training stable. Gradients still reach every weight after the first
optimiser step (the zero layers receive gradient immediately and become non-zero).

With the paper's CIFAR-10 settings (``unet_preset("ddpm_cifar10")``) this module has exactly
35,746,307 parameters, the paper's "35.7M".

Why one module of about 340 lines: :class:`SuperResUNet` (a cascade's super-resolution stage) is
the U-Net with a wider first convolution and one more embedding; it lives beside the network it extends.

The layers (ResBlock, attention, down/up-sampling, the embeddings of t and y) are in
:mod:`lesson_lib.models.layers`, shared with the other networks; this module assembles them.
Lesson 3's tables of shapes and parameters are in :mod:`lesson_lib.course.inspection`.
"""

import warnings

import torch
from torch import nn

from .base import Model, check_prediction, reads_values
from .layers import (AttentionBlock, ClassEmbedding, Downsample, ResBlock, TimeEmbedding, Upsample, embed_t_and_y,
                     group_norm, zero_init)


class ResAttnBlock(nn.Module):
    """One step of the U-Net: a ResBlock, followed by self-attention at chosen resolutions."""

    def __init__(self, in_ch, out_ch, time_dim, dropout, attention, heads=1):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, time_dim, dropout)
        self.attn = AttentionBlock(out_ch, heads) if attention else nn.Identity()

    def forward(self, x, emb):
        return self.attn(self.res(x, emb))


class MiddleBlock(nn.Module):
    """ResBlock -> self-attention -> ResBlock at the lowest resolution."""

    def __init__(self, ch, time_dim, dropout, attention, heads=1):
        super().__init__()
        self.res1 = ResBlock(ch, ch, time_dim, dropout)
        self.attn = AttentionBlock(ch, heads) if attention else nn.Identity()
        self.res2 = ResBlock(ch, ch, time_dim, dropout)

    def forward(self, x, emb):
        return self.res2(self.attn(self.res1(x, emb)), emb)


class UNet(Model):
    """The DDPM U-Net: ``model(x_t, t, y=None)`` returns a tensor shaped like ``x_t``.

    Args:
        in_channels: image channels (1 for MNIST, 3 for CIFAR-10); the output has as many.
        base_channels: width ``ch`` of the first level; level i has ``ch * channel_mults[i]``.
        channel_mults: one multiplier per resolution level; ``len(channel_mults) - 1`` halvings.
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map sizes (in pixels, e.g. ``(16,)``) that get
            self-attention after each ResBlock. Each must be a size the model passes through.
        dropout: dropout rate inside every ResBlock (0.1 for CIFAR-10 in the paper).
        num_classes: if given, the model is class-conditional with labels ``0..num_classes-1``
            and a learned null class ``num_classes`` (used when ``y`` is None).
        image_size: height = width of the training images; fixes where attention goes.
        prediction: what the output means, "eps", "x0" or "v" (read by training and sampling).
        attention_heads: heads in every attention block (DDPM: 1).
        use_attention: False removes every attention block, middle included (ablation).
        use_skips: False removes the skip connections: the up path then sees only the
            bottleneck features and its ResBlocks are built for the narrower input (ablation).
        learn_sigma: True doubles the output channels (Nichol & Dhariwal, 2021): the first
            ``in_channels`` are the prediction, the last ``in_channels`` are v of the learned
            variance (see :mod:`lesson_lib.diffusion.denoiser`). Default False, so configs
            stored without it (every checkpoint before lesson 8) build the same network.

    ``model.config`` holds every constructor argument (JSON-friendly: lists, not tuples; recorded
    by :class:`~lesson_lib.models.base.Model`), and ``UNet.from_config(config)`` rebuilds the same
    architecture.
    """

    def __init__(self, in_channels=3, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                 attention_resolutions=(16,), dropout=0.1, num_classes=None, image_size=32,
                 prediction="eps", attention_heads=1, use_attention=True, use_skips=True, learn_sigma=False):
        super().__init__()
        channel_mults = [int(m) for m in channel_mults]
        attention_resolutions = [int(r) for r in attention_resolutions]
        self._check_args(in_channels, base_channels, channel_mults, num_res_blocks, attention_resolutions,
                         dropout, num_classes, image_size, prediction, attention_heads)
        self.prediction = prediction
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = image_size
        self._warned_sizes = set()
        self.use_skips = use_skips
        self.learn_sigma = bool(learn_sigma)
        self.num_levels = len(channel_mults)
        time_dim = 4 * base_channels
        heads = attention_heads

        def attention_at(resolution):
            return use_attention and resolution in attention_resolutions

        self.time_embedding = TimeEmbedding(base_channels, time_dim)
        # Row num_classes of this table is the learned "no label" embedding.
        self.class_embedding = ClassEmbedding(num_classes, time_dim) if num_classes is not None else None

        # Down path. skip_channels records the width of every output kept for the up path.
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        ch, resolution = base_channels, image_size
        skip_channels = [ch]
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(ResAttnBlock(ch, base_channels * mult, time_dim, dropout,
                                              attention_at(resolution), heads))
                ch = base_channels * mult
                skip_channels.append(ch)
            if level != self.num_levels - 1:
                self.down.append(Downsample(ch))
                resolution //= 2
                skip_channels.append(ch)

        self.middle = MiddleBlock(ch, time_dim, dropout, use_attention, heads)

        # Up path: num_res_blocks + 1 blocks per level, each consuming one stored skip.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                skip_ch = skip_channels.pop()
                in_ch = ch + skip_ch if use_skips else ch
                self.up.append(ResAttnBlock(in_ch, base_channels * mult, time_dim, dropout,
                                            attention_at(resolution), heads))
                ch = base_channels * mult
            if level != 0:
                self.up.append(Upsample(ch))
                resolution *= 2
        assert not skip_channels

        out_channels = 2 * in_channels if learn_sigma else in_channels
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_init(nn.Conv2d(ch, out_channels, 3, padding=1)))

    @staticmethod
    def _check_args(in_channels, base_channels, channel_mults, num_res_blocks, attention_resolutions,
                    dropout, num_classes, image_size, prediction, attention_heads):
        if in_channels < 1 or base_channels < 1 or num_res_blocks < 1:
            raise ValueError(f"in_channels, base_channels and num_res_blocks must be >= 1, got "
                             f"{in_channels}, {base_channels}, {num_res_blocks}")
        if len(channel_mults) < 1 or min(channel_mults) < 1:
            raise ValueError(f"channel_mults must be a non-empty list of positive ints, got {channel_mults}")
        factor = 2 ** (len(channel_mults) - 1)
        if image_size % factor:
            raise ValueError(f"image_size={image_size} must be divisible by 2**(levels-1) = {factor} for "
                             f"{len(channel_mults)} levels (channel_mults={channel_mults}); use fewer levels "
                             f"or pad/resize the images")
        resolutions = [image_size // 2 ** i for i in range(len(channel_mults))]
        unknown = [r for r in attention_resolutions if r not in resolutions]
        if unknown:
            raise ValueError(f"attention_resolutions {unknown} are not feature-map sizes of this model; with "
                             f"image_size={image_size} and {len(channel_mults)} levels they are {resolutions}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be None (unconditional) or >= 1, got {num_classes}")
        check_prediction(prediction)
        if any(base_channels * m % attention_heads for m in channel_mults):
            raise ValueError(f"attention_heads={attention_heads} must divide every level's channel count "
                             f"{[base_channels * m for m in channel_mults]}")

    def embed(self, t, y=None):
        """The vector added inside every ResBlock: time embedding (+ class embedding)."""
        return embed_t_and_y(self.time_embedding, self.class_embedding, t, y)

    def check_inputs(self, x, t, y=None):
        """The base's checks (:meth:`Model.check_inputs`) at any image size, and the U-Net's own:
        t >= 0 (read on the CPU only, see :func:`~lesson_lib.models.base.reads_values`); height
        and width divisible by 2**(levels-1); a size it was not built for runs (the network is
        convolutional), with a warning, once per size."""
        super().check_inputs(x, t, y, any_image_size=True)
        if reads_values(x) and t.numel() and int(t.min()) < 0:
            raise ValueError(f"timesteps must be >= 0 (code index t is the paper's t+1), got {int(t.min())}")
        factor = 2 ** (self.num_levels - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"image height and width must be divisible by 2**(levels-1) = {factor}, got "
                             f"{tuple(x.shape[2:])}; resize or pad the images, or use fewer channel_mults")
        size = tuple(x.shape[2:])
        if size != (self.image_size,) * 2 and size not in self._warned_sizes:
            self._warned_sizes.add(size)
            warnings.warn(f"this UNet was built for {self.image_size}x{self.image_size} images, got "
                          f"{size[0]}x{size[1]}: it runs (the network is convolutional) but was never "
                          f"trained at this size; resize the images, or build a model with "
                          f"image_size={size[0]} to train one", stacklevel=5)   # the caller of model(x, t)

    def forward(self, x, t, y=None):
        """eps_theta(x_t, t, y) (or x0/v, see ``prediction``), shaped like ``x``; with
        ``learn_sigma`` the prediction and v, concatenated along the channels."""
        self.check_inputs(x, t, y)
        return self.trunk(x, self.embed(t, y))

    def trunk(self, x, emb):
        """The network after its inputs are checked and embedded: ``conv_in`` on ``x`` (the image, or
        the image and its conditioning channels in :class:`SuperResUNet`), the down path, the middle,
        the up path and the output head, with ``emb`` inside every ResBlock."""
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = block(h, emb)
            hs.append(h)
        h = self.middle(h, emb)
        for block in self.up:
            if self.use_skips and not isinstance(block, Upsample):
                h = torch.cat([h, hs.pop()], dim=1)
            h = block(h, emb)
        return self.out(h)


class SuperResUNet(UNet):
    """The U-Net of a cascade's super-resolution stage (Ho et al. 2021, Cascaded Diffusion Models,
    Sec. 3 and 4.1): ``model(x_t, t, y=None, low_res=..., aug_level=...)``.

    The low-resolution image, upsampled to the size of x_t, is concatenated to x_t along the
    channels, so the first convolution reads ``in_channels + cond_channels`` channels; everything
    after it is the :class:`UNet`. With ``embed_aug_level`` the level of the conditioning
    augmentation (the number of forward-process steps k the low-resolution image was noised with,
    0 = clean; :func:`lesson_lib.diffusion.cascade.augment`) is embedded like the timestep, by a
    :class:`~lesson_lib.models.layers.TimeEmbedding` of its own, and added to the time embedding.
    The output has ``in_channels`` channels, as the plain U-Net's (``in_channels`` stays the data's).

    Args:
        cond_channels: channels of the upsampled low-resolution image (None: ``in_channels``).
        embed_aug_level: True to take ``aug_level`` (a long tensor (B,) of k in 0..T) and embed it.
        The rest: as :class:`UNet`.

    A separate class rather than a new argument of :class:`UNet`, so that every plain U-Net's
    config and state dict stay exactly what they were. :mod:`lesson_lib.diffusion.cascade` builds
    the ``low_res`` and ``aug_level`` this model takes.
    """

    def __init__(self, cond_channels=None, embed_aug_level=True, in_channels=1, base_channels=32,
                 channel_mults=(1, 2, 2), num_res_blocks=2, attention_resolutions=(7,), dropout=0.1,
                 num_classes=None, image_size=28, prediction="eps", attention_heads=1, use_attention=True,
                 use_skips=True, learn_sigma=False):
        super().__init__(in_channels=in_channels, base_channels=base_channels, channel_mults=channel_mults,
                         num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions,
                         dropout=dropout, num_classes=num_classes, image_size=image_size, prediction=prediction,
                         attention_heads=attention_heads, use_attention=use_attention, use_skips=use_skips,
                         learn_sigma=learn_sigma)
        cond_channels = in_channels if cond_channels is None else cond_channels
        if isinstance(cond_channels, bool) or not isinstance(cond_channels, int) or cond_channels < 1:
            raise ValueError(f"cond_channels must be a positive int (the low-resolution image's channels), or "
                             f"None for in_channels={in_channels}; got cond_channels={cond_channels!r}")
        if not isinstance(embed_aug_level, bool):
            raise TypeError(f"embed_aug_level must be True or False, got embed_aug_level={embed_aug_level!r}")
        self.cond_channels = cond_channels
        self.embed_aug_level = embed_aug_level
        self.conv_in = nn.Conv2d(in_channels + cond_channels, base_channels, 3, padding=1)
        self.aug_embedding = TimeEmbedding(base_channels, 4 * base_channels) if embed_aug_level else None

    def check_conditioning(self, x, low_res, aug_level):
        """Raise an error naming the argument unless ``low_res`` (and ``aug_level``) fit ``x``."""
        shape = (x.shape[0], self.cond_channels, *x.shape[2:])
        if not isinstance(low_res, torch.Tensor) or not low_res.is_floating_point() or tuple(low_res.shape) != shape:
            got = (f"shape {tuple(low_res.shape)}, dtype {low_res.dtype}" if isinstance(low_res, torch.Tensor)
                   else type(low_res).__name__)
            raise ValueError(f"low_res must be a float tensor of shape {shape} (the low-resolution image upsampled "
                             f"to x's size: cond=LowResCondition(...)(images) in lesson_lib.diffusion.cascade), "
                             f"got {got}")
        if not self.embed_aug_level:
            if aug_level is not None:
                raise ValueError("this SuperResUNet does not embed the augmentation level (embed_aug_level=False): "
                                 "call it without aug_level, or build it with embed_aug_level=True")
            return
        if (not isinstance(aug_level, torch.Tensor) or aug_level.is_floating_point() or aug_level.dtype == torch.bool
                or tuple(aug_level.shape) != (x.shape[0],)):
            got = (f"dtype {aug_level.dtype} and shape {tuple(aug_level.shape)}" if isinstance(aug_level, torch.Tensor)
                   else type(aug_level).__name__)
            raise ValueError(f"aug_level must be a long tensor of shape ({x.shape[0]},): the number of forward "
                             f"steps k the low-resolution image was noised with (0 = clean), got {got}")
        if reads_values(x) and aug_level.numel() and int(aug_level.min()) < 0:
            raise ValueError(f"aug_level must be >= 0 (0 = a clean low-resolution image), got {int(aug_level.min())}")

    def forward(self, x, t, y=None, low_res=None, aug_level=None):
        """eps_theta(x_t, t, y, z_lr, k) (or x0/v), shaped like ``x``: the U-Net on concat(x_t, z_lr)."""
        self.check_inputs(x, t, y)
        self.check_conditioning(x, low_res, aug_level)
        emb = self.embed(t, y)
        if self.aug_embedding is not None:
            emb = emb + self.aug_embedding(aug_level).to(emb.dtype)
        return self.trunk(torch.cat([x, low_res.to(x.dtype)], dim=1), emb)


# ---------------------------------------------------------------------------------------------
# Presets

PRESETS = {
    # Course model for MNIST (28x28x1): 28 -> 14 -> 7, attention at 7x7. 1.62M parameters and
    # 0.55 GFLOP per image forward, so a laptop CPU can train it (base_channels=48 gives 3.6M
    # parameters but costs 2.2x the compute).
    "mnist": dict(in_channels=1, image_size=28, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2,
                  attention_resolutions=(7,), dropout=0.1),
    # Course model for CIFAR-10 (32x32x3): the DDPM model at half width. 8.95M parameters
    # (fp16 weights: 18 MB), 3.2 GFLOP per image forward.
    "cifar10": dict(in_channels=3, image_size=32, base_channels=64, channel_mults=(1, 2, 2, 2),
                    num_res_blocks=2, attention_resolutions=(16,), dropout=0.1),
    # The DDPM paper's CIFAR-10 model (Ho et al. 2020, Appendix B): 35,746,307 parameters
    # (the paper's 35.7M), 12.4 GFLOP per image forward.
    "ddpm_cifar10": dict(in_channels=3, image_size=32, base_channels=128, channel_mults=(1, 2, 2, 2),
                         num_res_blocks=2, attention_resolutions=(16,), dropout=0.1),
}


def unet_preset(name, **overrides):
    """Build ``UNet(**PRESETS[name], **overrides)``, e.g. ``unet_preset("mnist", num_classes=10)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; choose one of {sorted(PRESETS)}")
    return UNet(**{**PRESETS[name], **overrides})
