"""The layers the course's networks are built from: embeddings of t and y, ResBlock, attention, resampling.

The U-Net (:mod:`lesson_lib.models.unet`), the noisy classifier
(:mod:`lesson_lib.models.noisy_classifier`) and every later network take their layers from here,
so one ResBlock means the same thing everywhere. All come from the DDPM code (Ho et al., 2020,
Appendix B: the PixelCNN++ backbone, with one self-attention head):

    TimeEmbedding    t -> sinusoid -> MLP: the vector every ResBlock adds to its features
    ClassEmbedding   y -> a learned vector; row ``num_classes`` is the null class ("no label")
    embed_t_and_y    the time embedding plus the class embedding (the null class without a label)
    ResBlock         GroupNorm, SiLU, conv, + time, GroupNorm, SiLU, dropout, conv; + skip
    AttentionBlock   self-attention over the H*W positions of a feature map; + skip
    Downsample       stride-2 convolution (halves H and W)
    Upsample         nearest-neighbour x2, then a convolution (doubles H and W)

and the two helpers they share: :func:`group_norm` (with :func:`num_groups`) and
:func:`zero_init`. Zero initialisation, as in the DDPM code: the last convolution of every
ResBlock and the output projection of every attention block start at zero, so each residual
block is the identity at initialisation.
"""

import torch
from torch import nn
import torch.nn.functional as F

from .embeddings import sinusoidal_embedding


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
    """``nn.GroupNorm`` over ``channels`` with :func:`num_groups` groups (Wu & He, 2018)."""
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


class ClassEmbedding(nn.Embedding):
    """A learned vector per class label, plus one for "no label": the null class of classifier-free guidance.

    An ``nn.Embedding`` with ``num_classes + 1`` rows. Labels ``0..num_classes-1`` pick their
    row; row ``num_classes`` is the *null class*. Classifier-free guidance (Ho & Salimans, 2022,
    Sec. 3.2) trains one network for both scores by replacing the label with the null class a
    fraction of the time, so eps_theta(x_t, t) = eps_theta(x_t, t, y=null) and guidance mixes
    the two. A model adds the result to its time embedding.
    """

    def __init__(self, num_classes, dim):
        super().__init__(num_classes + 1, dim)
        self.num_classes = num_classes

    def null_labels(self, batch_size, device=None):
        """``batch_size`` copies of the null class, ``num_classes`` (long)."""
        return torch.full((batch_size,), self.num_classes, dtype=torch.long, device=device)

    def forward(self, y):
        """(B,) labels in ``0..num_classes`` (``num_classes``: no label) -> (B, dim)."""
        return super().forward(y.long())


def embed_t_and_y(time_embedding, class_embedding, t, y=None):
    """The vector every block of a network reads: ``time_embedding(t)``, plus ``class_embedding(y)``
    when the network is class-conditional (``class_embedding`` not None), with the null class when
    ``y`` is None (the unconditional prediction of classifier-free guidance)."""
    emb = time_embedding(t)
    if class_embedding is None:
        return emb
    if y is None:
        y = class_embedding.null_labels(t.shape[0], t.device)
    return emb + class_embedding(y).to(emb.dtype)


class ResBlock(nn.Module):
    """The PixelCNN++/DDPM residual block with a timestep embedding.

        h = Conv3x3(SiLU(GroupNorm(x)))
        h = h + Linear(SiLU(emb))[:, :, None, None]          (same shift at every pixel)
        h = Conv3x3(Dropout(SiLU(GroupNorm(h))))             (zero-initialised)
        return skip(x) + h                                    (skip = 1x1 conv if channels change)

    With ``time_dim=None`` the block has no timestep (no ``time_proj``; call it as ``block(x)``):
    the same block for a network that sees no t, such as the autoencoder of latent diffusion.
    """

    def __init__(self, in_ch, out_ch, time_dim, dropout=0.0):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_ch) if time_dim is not None else None
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_proj is not None:
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
