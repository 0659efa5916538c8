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

Why one module of about 450 lines: the blocks (ResBlock, attention, down/up-sampling) exist
only to make this one network, and lesson 3 reads them top to bottom beside the picture
above; the presets and the shape and parameter tables describe the same network.
"""

import warnings

import torch
from torch import nn
import torch.nn.functional as F

from .base import Model, check_prediction
from .embeddings import sinusoidal_embedding


def _is_compiling():
    """True while torch.compile traces the model (data-dependent checks are skipped then)."""
    if hasattr(torch, "compiler") and hasattr(torch.compiler, "is_compiling"):
        return torch.compiler.is_compiling()
    return torch._dynamo.is_compiling()  # torch 2.2


def num_groups(channels, max_groups=32, min_group_size=4):
    """Groups for GroupNorm: 32 as in the paper, fewer so that every group has >= 4 channels.

    The group size matters for the time embedding: a ResBlock adds the same shift to every
    pixel of a channel and then normalises. With one channel per group (e.g. 32 groups of 32
    channels) the normalisation subtracts that shift again and the block never sees t. With
    4 channels per group (DDPM at 128 channels: 32 groups of 4) only the group's mean shift
    is removed and the differences between its channels carry the information.
    """
    limit = max(1, min(max_groups, channels // min_group_size))
    for g in range(limit, 0, -1):
        if channels % g == 0:
            return g
    return 1


def group_norm(channels):
    return nn.GroupNorm(num_groups(channels), channels)


def zero_init(module):
    """Set a layer's weights and bias to zero (so a residual branch starts as the identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimeEmbedding(nn.Module):
    """t -> sinusoidal_embedding(t, ch) -> Linear(ch, 4ch) -> SiLU -> Linear(4ch, 4ch).

    The sinusoid is computed in float32 (:func:`lesson_lib.models.embeddings.sinusoidal_embedding`)
    and cast to the weights' dtype, so the module also works for a model cast to bf16/fp16.
    """

    def __init__(self, base_dim, time_dim):
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))

    def forward(self, t):
        emb = sinusoidal_embedding(t, self.base_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """The PixelCNN++/DDPM residual block with a timestep embedding.

        h = Conv3x3(SiLU(GroupNorm(x)))
        h = h + Linear(SiLU(emb))[:, :, None, None]          (same shift at every pixel)
        h = Conv3x3(Dropout(SiLU(GroupNorm(h))))             (zero-initialised)
        return skip(x) + h                                    (skip = 1x1 conv if channels change)
    """

    def __init__(self, in_ch, out_ch, time_dim, dropout=0.0):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions of a feature map, with a residual connection.

        q, k, v = 1x1 convs of GroupNorm(x)       (one conv producing 3C channels)
        out = softmax(q k^T / sqrt(d)) v          per head, over all H*W positions
        return x + Conv1x1(out)                   (the projection is zero-initialised)

    DDPM uses one head (``heads=1``, so d = C). The block treats positions as a set: permuting
    the pixels of the input permutes the output the same way (the convolutions around it are
    what know about neighbourhoods).
    """

    def __init__(self, ch, heads=1):
        super().__init__()
        if ch % heads:
            raise ValueError(f"heads must divide the channel count: got ch={ch}, heads={heads}")
        self.heads = heads
        self.norm = group_norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_init(nn.Conv2d(ch, ch, 1))

    def forward(self, x):
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x))                                   # (B, 3C, H, W)
        qkv = qkv.reshape(B, 3 * self.heads, C // self.heads, H * W)   # (B, 3*heads, d, HW)
        q, k, v = qkv.transpose(-1, -2).contiguous().chunk(3, dim=1)   # each (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)                  # scale 1/sqrt(d); contiguous
        # inputs let PyTorch pick its fused (flash) kernels instead of the plain matmul path
        out = out.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Halve the resolution with a 3x3 convolution of stride 2 (DDPM's resamp_with_conv=True)."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


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

    ``model.config`` holds every constructor argument (JSON-friendly: lists, not tuples), and
    ``UNet.from_config(config)`` rebuilds the same architecture.
    """

    def __init__(self, in_channels=3, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                 attention_resolutions=(16,), dropout=0.1, num_classes=None, image_size=32,
                 prediction="eps", attention_heads=1, use_attention=True, use_skips=True, learn_sigma=False):
        super().__init__()
        channel_mults = [int(m) for m in channel_mults]
        attention_resolutions = [int(r) for r in attention_resolutions]
        self._check_args(in_channels, base_channels, channel_mults, num_res_blocks, attention_resolutions,
                         dropout, num_classes, image_size, prediction, attention_heads)
        self.config = dict(in_channels=in_channels, base_channels=base_channels, channel_mults=channel_mults,
                           num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions,
                           dropout=dropout, num_classes=num_classes, image_size=image_size,
                           prediction=prediction, attention_heads=attention_heads,
                           use_attention=use_attention, use_skips=use_skips, learn_sigma=bool(learn_sigma))
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
        self.class_embedding = nn.Embedding(num_classes + 1, time_dim) if num_classes is not None else None

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
        emb = self.time_embedding(t)
        if self.class_embedding is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes, dtype=torch.long)
            emb = emb + self.class_embedding(y).to(emb.dtype)
        return emb

    def _check_inputs(self, x, t, y):
        factor = 2 ** (self.num_levels - 1)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (batch, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"image height and width must be divisible by 2**(levels-1) = {factor}, got "
                             f"{tuple(x.shape[2:])}; resize or pad the images, or use fewer channel_mults")
        size = tuple(x.shape[2:])
        if self.image_size is not None and size != (self.image_size,) * 2 and size not in self._warned_sizes:
            self._warned_sizes.add(size)     # once per size: it is convolutional, so it runs, but say so
            warnings.warn(f"this UNet was built for {self.image_size}x{self.image_size} images, got "
                          f"{size[0]}x{size[1]}: it runs (the network is convolutional) but was never "
                          f"trained at this size; resize the images, or build a model with "
                          f"image_size={size[0]} to train one", stacklevel=5)   # the caller of model(x, t)
        if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"t must be a tensor of integer timesteps (torch.long), got "
                            f"{getattr(t, 'dtype', type(t).__name__)}")
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape (batch,) = ({x.shape[0]},), got {tuple(t.shape)}")
        # Checks of values read the tensors (a device sync on CUDA, at every step), so they run on
        # the CPU; on a GPU the sampler and the Trainer check timesteps and labels where they enter.
        values = x.device.type == "cpu" and not _is_compiling()
        if values and t.numel() and int(t.min()) < 0:
            raise ValueError(f"timesteps must be >= 0 (code index t is the paper's t+1), got {int(t.min())}")
        if y is None:
            return
        if self.num_classes is None:
            raise ValueError("this UNet is unconditional (num_classes=None): call it without y, or build it "
                             "with num_classes=... to use class labels")
        if y.shape != t.shape or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"y must be an integer tensor of shape ({x.shape[0]},), got dtype {y.dtype} and "
                             f"shape {tuple(y.shape)}")
        if values and y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"class labels y must lie in 0..{self.num_classes - 1} (or {self.num_classes} for "
                             f"the null class), got values in {int(y.min())}..{int(y.max())}")

    def forward(self, x, t, y=None):
        """eps_theta(x_t, t, y) (or x0/v, see ``prediction``), shaped like ``x``; with
        ``learn_sigma`` the prediction and v, concatenated along the channels."""
        self._check_inputs(x, t, y)
        emb = self.embed(t, None if y is None else y.long())
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


# ---------------------------------------------------------------------------------------------
# Inspection helpers (lesson 3)

def count_parameters(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_table(model):
    """Rows ``(part, parameters)`` for the parts of a UNet, ending with a ``("total", n)`` row.

    Print with ``for part, n in parameter_table(model): print(f"{part:16s}{n:>12,}")``.
    """
    parts = [("time embedding", [model.time_embedding])]
    if model.class_embedding is not None:
        parts.append(("class embedding", [model.class_embedding]))
    parts += [("input conv", [model.conv_in]), ("down path", [model.down]), ("middle", [model.middle]),
              ("up path", [model.up]), ("output", [model.out])]
    rows = [(name, sum(count_parameters(m) for m in modules)) for name, modules in parts]
    rows.append(("total", count_parameters(model)))
    return rows


def _describe(module):
    if isinstance(module, (ResAttnBlock, MiddleBlock)):
        attn = not isinstance(module.attn, nn.Identity)
        if isinstance(module, MiddleBlock):
            return "ResBlock+Attention+ResBlock" if attn else "ResBlock+ResBlock"
        return "ResBlock+Attention" if attn else "ResBlock"
    if isinstance(module, (Downsample, Upsample)):
        return type(module).__name__
    return "Conv3x3" if isinstance(module, nn.Conv2d) else "GroupNorm+SiLU+Conv3x3"


def shape_table(model, x, t, y=None):
    """Run one forward pass and return rows ``(block name, input shape, output shape)``.

    Rows come in execution order and cover the input conv, every block of the down path,
    the middle, every block of the up path (whose inputs show the concatenated skips) and
    the output head. Names look like ``"down.2 Downsample"`` (attribute path, then kind).
    """
    kinds = (ResAttnBlock, MiddleBlock, Downsample, Upsample)
    watched = [(f"{name} {_describe(m)}", m) for name, m in model.named_modules()
               if isinstance(m, kinds) or name in ("conv_in", "out")]
    rows, handles = [], []

    def hook(name):
        def record(module, inputs, output):
            rows.append((name, tuple(inputs[0].shape), tuple(output.shape)))
        return record

    try:
        for name, module in watched:
            handles.append(module.register_forward_hook(hook(name)))
        with torch.no_grad():
            model(x, t, y)
    finally:
        for h in handles:
            h.remove()
    return rows
