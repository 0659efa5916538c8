"""The Diffusion Transformer, DiT (Peebles & Xie, 2023, "Scalable Diffusion Models with Transformers").

DiT replaces the U-Net with a plain Vision Transformer (Dosovitskiy et al., 2021) that reads the
image (in the paper, the latent of an autoencoder) as a sequence of patches (Sec. 3.2, Fig. 3-4):

    x_t (B, C, I, I)
      | patchify: N = (I/p)^2 patches of p x p x C, each flattened to p^2 C numbers
      | Linear(p^2 C, D), + a fixed 2-D sin-cos position embedding
    tokens (B, N, D)
      | depth x DiTBlock, each conditioned on c = TimeEmbedding(t) + ClassEmbedding(y)
      | FinalLayer: LayerNorm, adaLN (shift, scale from c), Linear(D, p^2 C_out)
      | unpatchify
    output (B, C_out, I, I)     C_out = C, or 2C with learn_sigma (the prediction, then v)

One DiTBlock, the "adaLN-Zero" block (Sec. 3.2, "DiT block design"):

    shift1, scale1, gate1, shift2, scale2, gate2 = Linear(SiLU(c))             (6 vectors of D)
    x = x + gate1 * Attention(modulate(LayerNorm(x), shift1, scale1))
    x = x + gate2 * MLP(modulate(LayerNorm(x), shift2, scale2))
    modulate(h, shift, scale) = h * (1 + scale) + shift

The LayerNorms have no weights of their own (eps 1e-6): the scale and shift come from c instead
(adaptive layer norm, as in FiLM and StyleGAN), the same for every token of an example. The MLP is
Linear(D, 4D), GELU (tanh approximation), Linear(4D, D).

Why one module of about 430 lines: the layers, the model, the closed-form parameter count and the
presets describe one architecture; the formula mirrors the constructor term by term, so a change to
a block is a change to both, in one place.

Why adaLN-Zero: the Linear that produces the six vectors starts at zero, so every gate is 0 and
every block is exactly the identity at initialisation; the final Linear also starts at zero, so the
untrained model outputs exactly 0, as the zero-initialised U-Net does (the first L_simple is then
E ||eps||^2 = 1). The paper compares four ways of feeding c to the blocks (in-context tokens,
cross-attention, adaLN, adaLN-Zero; Fig. 5) and adaLN-Zero gives the lowest FID. The other layers
start as in ViT (Sec. 4, "Training"): xavier-uniform Linear weights and zero biases; the time
MLP's weights N(0, 0.02^2), as the reference code does. The class table is the one departure: it
keeps ``nn.Embedding``'s N(0, 1), as the course's U-Net does, where the reference draws N(0, 0.02^2).
A label embedding 100 times smaller than the time embedding it is added to is read by the blocks
only after thousands of steps: on MNIST (DiT-T/4, AdamW 1e-3, batch 128, one CPU thread), after
600 steps the noise-prediction error at t = 500 with the right label against a wrong one was
0.0185 against 0.0197 from N(0, 1), and 0.0192 against 0.0193 from N(0, 0.02^2).

The patch size p sets the cost: halving p multiplies the tokens by 4 and the compute by about 4,
with the parameters almost unchanged (only the patch embedding and the final Linear depend on p).
The paper's scaling experiments find FID falling with the Gflops, whether these come from depth
and width or from more tokens (a smaller p).

What is the same as the reference code (facebookresearch/DiT) and what is not:

* the time embedding is the course's :class:`~lesson_lib.models.layers.TimeEmbedding` with the
  reference's sizes, 256 frequencies -> Linear(256, D) -> SiLU -> Linear(D, D); the reference
  orders its 256 features cos then sin, the course sin then cos (a permutation of the first
  Linear's input columns: the same set of functions, the same parameter count);
* the class table is :class:`~lesson_lib.models.layers.ClassEmbedding` with its null class row
  ``num_classes``, the reference's extra row for classifier-free guidance; labels are dropped by
  the training objective (``class_dropout``), not inside the model;
* the patch embedding is a Linear on :func:`patchify`'s vectors; the reference's convolution
  with kernel = stride = p is the same map with the same parameter count;
* the position embedding is a buffer (not trained, not stored in checkpoints), where the reference
  holds it in a frozen ``nn.Parameter`` that the count its training script prints includes. So
  DiT-S/2 on the paper's 32 x 32 x 4 latents with 1000 classes and learned sigma has 32,865,056
  parameters here, exactly the reference's trainable ones; the reference's printed count,
  32,963,360, adds its 256 x 384 position embedding (:func:`dit_parameter_count`, tests/test_dit.py).

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels where
the device has them). A DiT only takes the image size it was built for: its position embedding
has one row per patch of an ``image_size`` image.
"""

import inspect

import torch
from torch import nn
import torch.nn.functional as F

from ..arguments import integer, number
from .base import Model, check_prediction, reads_values
from .embeddings import sinusoidal_embedding
from .layers import ClassEmbedding, TimeEmbedding, embed_t_and_y, zero_init

CONDITIONINGS = ("adaln-zero", "in-context")
"""How c reaches the blocks (:class:`DiT`'s ``conditioning``): the paper's adaLN-Zero, or its in-context baseline."""

TIME_FREQUENCIES = 256
"""Sinusoid features of t fed to the time MLP: the reference's ``frequency_embedding_size``."""


def patchify(x, p):
    """Cut images ``x`` (B, C, I, I) into (B, N, p^2 C) tokens, N = (I/p)^2 (Sec. 3.2, "Patchify").

    Token k is the patch at row k // (I/p) and column k % (I/p) (raster order); within a token,
    entry (i p + j) C + c is pixel (i, j) of the patch in channel c. A plain reshape:
    :func:`unpatchify` undoes it exactly.
    """
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"x must be square images of shape (B, C, I, I), got {tuple(x.shape)}")
    B, C, size, _ = x.shape
    if size % p:
        raise ValueError(f"the image size {size} must be divisible by the patch size p={p}")
    g = size // p
    x = x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 3, 5, 1)       # (B, row, column, i, j, c)
    return x.reshape(B, g * g, p * p * C)


def unpatchify(tokens, p, channels, size):
    """The inverse of :func:`patchify`: tokens (B, (size/p)^2, p^2 channels) -> (B, channels, size, size)."""
    g = size // p
    if size % p or tokens.ndim != 3 or tokens.shape[1:] != (g * g, p * p * channels):
        raise ValueError(f"tokens must have shape (B, {g * g}, {p * p * channels}) for {size} x {size} images "
                         f"of {channels} channel(s) in {p} x {p} patches, got {tuple(tokens.shape)}")
    x = tokens.reshape(tokens.shape[0], g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4)   # (B, c, row, i, column, j)
    return x.reshape(tokens.shape[0], channels, size, size)


def sincos_2d_position_embedding(dim, grid_size):
    """The fixed position embedding of a ``grid_size`` x ``grid_size`` grid of tokens: (grid_size^2, dim).

    Each axis gets half of the ``dim`` channels, and each half is the Transformer's 1-D sinusoid
    (Vaswani et al., 2017, Sec. 3.5; :func:`~lesson_lib.models.embeddings.sinusoidal_embedding`,
    the one the time embedding uses) of the token's coordinate on that axis: with d = dim / 2,
    frequencies omega_i = 1 / 10000^(2i / d) for i < d / 2, sin(pos omega) then cos(pos omega).
    As in the reference (ViT, MAE), the first half encodes the column, the second the row; token k
    is at row k // grid_size, column k % grid_size, the order of :func:`patchify`.
    """
    if dim % 4 or dim < 4:
        raise ValueError(f"dim must be a positive multiple of 4 (half the channels per axis, each half "
                         f"sin and cos), got dim={dim}")
    pos = torch.arange(grid_size)
    rows, columns = pos.repeat_interleave(grid_size), pos.repeat(grid_size)
    return torch.cat([sinusoidal_embedding(columns, dim // 2), sinusoidal_embedding(rows, dim // 2)], dim=1)


def modulate(x, shift, scale):
    """adaLN's x * (1 + scale) + shift: x (B, N, D), shift and scale (B, D), the same for every token.

    With shift = scale = 0 it is the identity, so a zero-initialised modulation leaves the
    normalised features as they are."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def _vit_linear(in_features, out_features):
    """A Linear with ViT's initialisation: xavier-uniform weight, zero bias."""
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _layer_norm(dim, affine=False):
    """LayerNorm, eps 1e-6; without its own scale and shift unless ``affine`` (adaLN supplies them)."""
    return nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)


class ViTBlock(nn.Module):
    """The plain pre-norm Transformer block of ViT: ``block(x)``, x (B, N, D).

        x = x + Attention(LayerNorm(x))
        x = x + MLP(LayerNorm(x))

    The block of "in-context" conditioning (Sec. 3.2), where c arrives as tokens of the sequence;
    :class:`DiTBlock` is the same block with its LayerNorms modulated by c instead.
    """

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, affine=True):
        super().__init__()
        self.num_heads = num_heads
        hidden = int(hidden_size * mlp_ratio)
        self.norm1 = _layer_norm(hidden_size, affine)
        self.qkv = _vit_linear(hidden_size, 3 * hidden_size)
        self.proj = _vit_linear(hidden_size, hidden_size)
        self.norm2 = _layer_norm(hidden_size, affine)
        self.mlp = nn.Sequential(_vit_linear(hidden_size, hidden), nn.GELU(approximate="tanh"),
                                 _vit_linear(hidden, hidden_size))

    def attention(self, h):
        """Multi-head self-attention over the N tokens: softmax(q k^T / sqrt(D / heads)) v, per head."""
        B, N, D = h.shape
        q, k, v = self.qkv(h).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)                 # (B, heads, N, D / heads)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))

    def forward(self, x, c=None):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DiTBlock(ViTBlock):
    """The adaLN-Zero Transformer block (see the module docstring): ``block(x, c)``, x (B, N, D), c (B, D)."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
        super().__init__(hidden_size, num_heads, mlp_ratio, affine=False)
        self.modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(hidden_size, 6 * hidden_size)))

    def forward(self, x, c):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=1)
        x = x + gate1[:, None, :] * self.attention(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None, :] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """LayerNorm, adaLN (shift, scale from c), then Linear(D, p^2 C_out) per token; both Linears start at zero.

    With ``adaptive=False`` (in-context conditioning) the LayerNorm has its own scale and shift and
    c is not read."""

    def __init__(self, hidden_size, patch_size, out_channels, adaptive=True):
        super().__init__()
        self.norm = _layer_norm(hidden_size, affine=not adaptive)
        self.modulation = None
        if adaptive:
            self.modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(hidden_size, 2 * hidden_size)))
        self.linear = zero_init(nn.Linear(hidden_size, patch_size * patch_size * out_channels))

    def forward(self, x, c):
        h = self.norm(x)
        if self.modulation is not None:
            shift, scale = self.modulation(c).chunk(2, dim=1)
            h = modulate(h, shift, scale)
        return self.linear(h)


class DiT(Model):
    """The Diffusion Transformer: ``model(x_t, t, y=None)`` returns a tensor shaped like ``x_t``
    (twice its channels with ``learn_sigma``).

    Args:
        in_channels: channels C of the data (1 for MNIST, 4 for the paper's latents).
        image_size: height = width I of the data; the only size the model takes.
        patch_size: p, which must divide ``image_size``; the model sees (I/p)^2 tokens.
        hidden_size: the token width D; a multiple of ``num_heads`` and of 4.
        depth: the number of DiT blocks.
        num_heads: attention heads per block (each of width D / num_heads).
        mlp_ratio: the MLP's hidden width over D (4 in the paper).
        num_classes: if given, the model is class-conditional, with labels ``0..num_classes-1`` and
            the null class ``num_classes`` (used when ``y`` is None); label dropout for
            classifier-free guidance is the objective's ``class_dropout``, as for the U-Net.
        learn_sigma: True doubles the output channels exactly as the U-Net's: the first C are the
            prediction, the last C are v of the learned variance (Nichol & Dhariwal, 2021), read
            by :mod:`lesson_lib.diffusion.denoiser` and the objectives of
            :mod:`lesson_lib.diffusion.likelihood`.
        prediction: what the output means, "eps", "x0" or "v".
        conditioning: how c reaches the blocks. "adaln-zero" (the paper's choice, the default):
            every block's LayerNorms are modulated by c. "in-context" (the paper's first
            baseline, Sec. 3.2): the time embedding and the class embedding (null class when
            ``y`` is None) join the sequence as two more tokens, without a position embedding,
            through plain :class:`ViTBlock` s, and are dropped before the final layer (which then
            has its own LayerNorm scale and shift and does not read c). Almost the same Gflops,
            fewer parameters (no modulation Linears).

    The paper's sizes are :func:`dit_preset` ("DiT-S/2" ... "DiT-XL/8"); ``model.config`` holds
    every argument and ``DiT.from_config(config)`` rebuilds the same architecture.
    """

    def __init__(self, in_channels=1, image_size=28, patch_size=4, hidden_size=128, depth=6, num_heads=4,
                 mlp_ratio=4.0, num_classes=None, learn_sigma=False, prediction="eps", conditioning="adaln-zero"):
        super().__init__()
        self._check_args(in_channels, image_size, patch_size, hidden_size, depth, num_heads, mlp_ratio,
                         num_classes, learn_sigma, prediction)
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got conditioning={conditioning!r}")
        self.conditioning = conditioning
        self.in_channels, self.image_size, self.patch_size = in_channels, image_size, patch_size
        self.num_classes, self.learn_sigma, self.prediction = num_classes, learn_sigma, prediction
        self.out_channels = 2 * in_channels if learn_sigma else in_channels

        self.patch_embedding = _vit_linear(patch_size * patch_size * in_channels, hidden_size)
        self.register_buffer("position_embedding",
                             sincos_2d_position_embedding(hidden_size, image_size // patch_size), persistent=False)
        self.time_embedding = TimeEmbedding(TIME_FREQUENCIES, hidden_size)
        for layer in (self.time_embedding.mlp[0], self.time_embedding.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        self.class_embedding = None
        if num_classes is not None:
            self.class_embedding = ClassEmbedding(num_classes, hidden_size)     # N(0, 1): see the docstring
        adaptive = conditioning == "adaln-zero"
        block = DiTBlock if adaptive else ViTBlock
        self.blocks = nn.ModuleList(block(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, adaptive)

    @staticmethod
    def _check_args(in_channels, image_size, patch_size, hidden_size, depth, num_heads, mlp_ratio,
                    num_classes, learn_sigma, prediction):
        for name, value in [("in_channels", in_channels), ("image_size", image_size), ("patch_size", patch_size),
                            ("hidden_size", hidden_size), ("depth", depth), ("num_heads", num_heads)]:
            integer(value, name, minimum=1)
        if image_size % patch_size:
            sizes = [p for p in range(1, image_size + 1) if image_size % p == 0]
            raise ValueError(f"patch_size={patch_size} must divide image_size={image_size} (the patches tile the "
                             f"image); for image_size={image_size} choose patch_size among {sizes}")
        if hidden_size % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide hidden_size={hidden_size} (each head gets "
                             f"hidden_size / num_heads channels); change num_heads or hidden_size")
        if hidden_size % 4:
            raise ValueError(f"hidden_size={hidden_size} must be a multiple of 4 for the 2-D sin-cos position "
                             f"embedding (half the channels per axis, each half sin and cos)")
        number(mlp_ratio, "mlp_ratio", minimum=0, strict_minimum=True, hint="the paper uses 4.0")
        if int(hidden_size * mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio={mlp_ratio} gives an MLP of width int({hidden_size} * {mlp_ratio}) = 0; "
                             f"use a larger mlp_ratio (the paper's is 4.0)")
        if num_classes is not None:
            integer(num_classes, "num_classes", minimum=1, hint="or None for an unconditional model")
        if not isinstance(learn_sigma, bool):
            raise TypeError(f"learn_sigma must be True or False, got learn_sigma={learn_sigma!r}")
        check_prediction(prediction)

    @property
    def num_tokens(self):
        """N = (image_size / patch_size)^2, the length of the token sequence."""
        return (self.image_size // self.patch_size) ** 2

    def embed(self, t, y=None):
        """c = TimeEmbedding(t) (+ ClassEmbedding(y), the null class when ``y`` is None): what every block reads."""
        return embed_t_and_y(self.time_embedding, self.class_embedding, t, y)

    def condition_tokens(self, t, y=None):
        """In-context conditioning's extra tokens (B, 1 or 2, D): TimeEmbedding(t), then ClassEmbedding(y)."""
        tokens = [self.time_embedding(t)]
        if self.class_embedding is not None:
            if y is None:
                y = self.class_embedding.null_labels(t.shape[0], t.device)
            tokens.append(self.class_embedding(y).to(tokens[0].dtype))
        return torch.stack(tokens, dim=1)

    def check_inputs(self, x, t, y=None):
        """The base's checks (:meth:`Model.check_inputs`: x of shape (B, *data_shape), integer t
        and labels) and t >= 0 (read on the CPU only, see :func:`~lesson_lib.models.base.reads_values`)."""
        super().check_inputs(x, t, y)
        if reads_values(x) and t.numel() and int(t.min()) < 0:
            raise ValueError(f"timesteps must be >= 0 (code index t is the paper's t+1), got {int(t.min())}")

    def forward(self, x, t, y=None):
        """eps_theta(x_t, t, y) (or x0/v, see ``prediction``), shaped like ``x``; with
        ``learn_sigma`` the prediction and v, concatenated along the channels."""
        self.check_inputs(x, t, y)
        h = self.patch_embedding(patchify(x, self.patch_size))
        h = h + self.position_embedding.to(h.dtype)
        if self.conditioning == "in-context":
            h = torch.cat([h, self.condition_tokens(t, y).to(h.dtype)], dim=1)
            c = None
        else:
            c = self.embed(t, y)
        for block in self.blocks:
            h = block(h, c)
        h = h[:, :self.num_tokens]                      # in-context: drop the condition tokens
        return unpatchify(self.final_layer(h, c), self.patch_size, self.out_channels, self.image_size)


# ---------------------------------------------------------------------------------------------
# The closed-form parameter count, and the presets

def dit_parameter_count(config, parts=False):
    """The number of learned parameters of ``DiT(**config)`` (missing arguments take DiT's defaults).

    With C channels, patch p, width D, MLP width h = int(D * mlp_ratio), K classes, C_out = C or 2C:

        patch embedding   p^2 C D + D
        time embedding    256 D + D + D^2 + D
        class embedding   (K + 1) D                      (0 for an unconditional model)
        each block        (3D^2 + 3D) + (D^2 + D)        attention: qkv and output projection
                          + (2 D h + h + D)              MLP (= 8D^2 + 5D at ratio 4)
                          + (6D^2 + 6D)                  adaLN-Zero modulation
                          = 18 D^2 + 15 D at ratio 4
        final layer       (2D^2 + 2D) + (D p^2 C_out + p^2 C_out)

    In-context conditioning replaces each block's modulation (6D^2 + 6D) by the two LayerNorms' own
    scales and shifts (4D), and the final layer's modulation (2D^2 + 2D) by its LayerNorm's (2D).

    The blocks hold almost everything (DiT-XL/2: 28 x (18 x 1152^2 + 15 x 1152) = 669.3M of its
    674.8M), and only the patch embedding and the final Linear depend on p. The position embedding is fixed,
    not a parameter. ``parts=True`` returns these five terms in a dict instead of their sum.
    """
    defaults = {name: p.default for name, p in inspect.signature(DiT).parameters.items()}
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"config has arguments DiT does not take: {unknown}; it takes {list(defaults)}")
    cfg = {**defaults, **config}
    C, p, D, K = cfg["in_channels"], cfg["patch_size"], cfg["hidden_size"], cfg["num_classes"]
    h = int(D * cfg["mlp_ratio"])
    out = 2 * C if cfg["learn_sigma"] else C
    adaptive = cfg["conditioning"] == "adaln-zero"
    block = (3 * D * D + 3 * D) + (D * D + D) + (2 * D * h + h + D) + ((6 * D * D + 6 * D) if adaptive else 4 * D)
    counts = {"patch embedding": p * p * C * D + D,
              "time embedding": TIME_FREQUENCIES * D + D + D * D + D,
              "class embedding": 0 if K is None else (K + 1) * D,
              "blocks": cfg["depth"] * block,
              "final layer": ((2 * D * D + 2 * D) if adaptive else 2 * D) + (D * p * p * out + p * p * out)}
    return counts if parts else sum(counts.values())


# (depth, hidden_size, num_heads) of the paper's Table 1.
SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}

# The paper's data: 256 x 256 ImageNet through the autoencoder of Stable Diffusion (f = 8) gives
# 32 x 32 x 4 latents; 1000 classes; learned sigma.
PAPER_DATA = dict(image_size=32, in_channels=4, num_classes=1000, learn_sigma=True)

PRESETS = {f"DiT-{size}/{p}": dict(depth=depth, hidden_size=width, num_heads=heads, patch_size=p, **PAPER_DATA)
           for size, (depth, width, heads) in SIZES.items() for p in (2, 4, 8)}
# The course's tiny DiT for MNIST 28 x 28 x 1 on a CPU: 6 blocks of width 128, 4 heads, 1.87M
# parameters (the MNIST U-Net has 1.62M). Forward FLOPs per image (Model.forward_gflops, attention
# included; a multiply-add is 2 FLOPs): DiT-T/7 16 tokens 0.040 G, DiT-T/4 49 tokens 0.125 G, DiT-T/2
# 196 tokens 0.58 G (the U-Net: 0.55 G). Counted the same way, the paper's presets give twice its
# Gflops (which count a multiply-add once): DiT-S/2 12.1 (6.06), DiT-XL/2 237.2 (118.6).
PRESETS.update({f"DiT-T/{p}": dict(depth=6, hidden_size=128, num_heads=4, patch_size=p, image_size=28,
                                   in_channels=1, num_classes=None, learn_sigma=False) for p in (2, 4, 7)})

DATA_ARGUMENTS = ("image_size", "in_channels", "num_classes", "learn_sigma", "prediction", "conditioning")
"""What :func:`dit_preset` lets a caller change: the data and the output, not the architecture."""


def dit_preset(name, **data):
    """``DiT`` of the paper's size ``name`` ("DiT-S/2" ... "DiT-XL/8", Table 1) or the course's tiny
    one ("DiT-T/2", "DiT-T/4", "DiT-T/7"), for the data described by ``data``.

    The paper's presets default to its 32 x 32 x 4 latents, 1000 classes and learned sigma; the tiny
    ones to MNIST (28 x 28 x 1, unconditional, fixed variance). E.g. ``dit_preset("DiT-S/4",
    image_size=28, in_channels=1, num_classes=10, learn_sigma=False)``. Only ``image_size``,
    ``in_channels``, ``num_classes``, ``learn_sigma``, ``prediction`` and ``conditioning`` (the
    in-context baseline of lesson 11's comparison) may be changed: another depth or width is another
    model, built with ``DiT(...)``.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown DiT preset {name!r}; choose one of {list(PRESETS)}")
    other = sorted(set(data) - set(DATA_ARGUMENTS))
    if other:
        raise ValueError(f"dit_preset takes only {', '.join(DATA_ARGUMENTS)}, got {other}: the name fixes the "
                         f"architecture; build DiT(**{{**PRESETS[{name!r}], ...}}) to change it")
    return DiT(**{**PRESETS[name], **data})
