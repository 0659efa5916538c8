# %% [markdown]
# *Generated from `solutions/03_unet.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/03_unet.ipynb`, which `python -m lesson_lib.course.assignments start 03` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/03_unet.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 3 · Exercises: the U-Net's building blocks
#
# The denoiser of DDPM is a U-Net (Ho et al., 2020, Appendix B) assembled from a few blocks, each
# there for a reason:
#
# * the **sinusoidal time embedding** tells one network which of the $T$ noise levels it is denoising;
# * the **ResBlock** is the workhorse: two convolutions, a residual connection, and the time
#   embedding added to every channel;
# * the **self-attention block** lets every position mix with every other at low resolution, with
#   weights computed from the content;
# * the **class-conditional embedding** tells the network which digit to draw, and has a row for
#   "no label", the null class that classifier-free guidance needs.
#
# You implement the embedding, scaled dot-product attention, and the forward passes of the two
# blocks; their `__init__` is given, with the same submodule names as `lesson_lib.models.unet`, so that
# the grader can copy `lesson_lib`'s weights into your block and compare the outputs. Then your
# blocks replace `lesson_lib`'s inside a whole U-Net. Last, you write the class-conditional embedding
# (its `__init__` too) and drive the shipped model `mnist_cond` with it.
#
# The cell after each exercise runs the grader's checks of that exercise on your code and prints what
# the grader will say: one line per check, ✓ or ✗, its points and, when it fails, the grader's hint.
# That is feedback for you, not the grade: to grade the whole notebook as your instructor will (in a
# sandbox, on fresh random inputs), run `python -P -m lesson_lib.course.grader exercises/03_unet.ipynb`
# from the repository root.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from lesson_lib.models import embeddings, unet
from lesson_lib.models.layers import group_norm, zero_init
from lesson_lib.course import feedback
from lesson_lib.course.plotting import show_grid
from lesson_lib.diffusion.sampling import ddim_sample
from lesson_lib.pretrained import load_pretrained


# %% [markdown]
# ## 1 · The sinusoidal time embedding
#
# The network is shared across all noise levels, so $t$ is an input. A raw integer in $0..999$ is
# a poor input for a neural network; DDPM uses the positional encoding of the Transformer
# (Vaswani et al., 2017, Sec. 3.5). With $h = \text{dim}/2$ frequencies
#
# $$\omega_i = \text{max\_period}^{-i/h}, \qquad i = 0, \dots, h-1,$$
#
# the embedding of $t$ is $[\sin(t\omega_0), \dots, \sin(t\omega_{h-1}), \cos(t\omega_0), \dots, \cos(t\omega_{h-1})]$:
# sines first, then cosines. Fast frequencies tell nearby timesteps apart, slow ones place $t$ on the whole range.

# %%
def sinusoidal_embedding(t, dim, max_period=10000):
    """Embed timesteps t (a tensor of shape (B,), integer or float) as a (B, dim) float32 tensor.

    With half = dim // 2 frequencies omega_i = max_period ** (-i / half), i = 0..half-1, row b is
        [sin(t_b * omega_0), ..., sin(t_b * omega_{half-1}), cos(t_b * omega_0), ..., cos(t_b * omega_{half-1})].
    Compute in float32; dim is even.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("03", "sinusoidal_embedding", globals())  # what the grader will say about it

mine = sinusoidal_embedding(torch.arange(0, 1000), 64)
plt.figure(figsize=(8, 3))
plt.imshow(mine.T, aspect="auto", cmap="RdBu", interpolation="nearest")
plt.xlabel("timestep t"); plt.ylabel("dimension"); plt.colorbar()
plt.title("your embedding: sines (top half), cosines (bottom half)")
plt.show()


# %% [markdown]
# ## 2 · The ResBlock
#
# DDPM's residual block (from PixelCNN++, Salimans et al., 2017):
#
# $$\begin{aligned}
# h &= \text{conv}_1(\text{SiLU}(\text{norm}_1(x))) \\
# h &= h + \text{time\_proj}(\text{SiLU}(\text{emb})) \quad\text{(one shift per channel, the same at every pixel)}\\
# h &= \text{conv}_2(\text{dropout}(\text{SiLU}(\text{norm}_2(h)))) \\
# \text{out} &= \text{skip}(x) + h
# \end{aligned}$$
#
# `skip` is a 1x1 convolution when the number of channels changes, else the identity. `conv2`
# starts at zero, so a fresh block is exactly the identity: a deep stack of them starts stable.

# %%
class ResBlock(nn.Module):
    """The DDPM residual block with a timestep embedding (same layers as lesson_lib.models.unet.ResBlock)."""

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
        """x: (B, in_ch, H, W) features, emb: (B, time_dim) time embedding -> (B, out_ch, H, W):

            h   = conv1(SiLU(norm1(x))) + time_proj(SiLU(emb))      (one shift per channel, all pixels)
            out = skip(x) + conv2(dropout(SiLU(norm2(h))))

        the pre-activation residual block of PixelCNN++ used by DDPM (Ho et al., Appendix B).
        """
        # YOUR CODE HERE
        raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
def perturbed(module, seed=0, scale=0.2):
    """Add noise to every weight, so the zero-initialised layers are not zero any more
    (otherwise a forward pass that forgot conv2 would still match)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module.eval()


feedback.check("03", "ResBlock", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · Scaled dot-product attention
#
# Each position has a query $q$, a key $k$ and a value $v$ (vectors of size $d$). A position's output
# is an average of all values, weighted by how well its query matches each key:
#
# $$\text{attention}(Q, K, V) = \text{softmax}\Big(\frac{QK^\top}{\sqrt d}\Big)V,$$
#
# the softmax taken over the keys. Dividing by $\sqrt d$ keeps the dot products of size about 1,
# so the softmax does not saturate (Vaswani et al., 2017, Sec. 3.2.1).

# %%
def attention(q, k, v):
    """Scaled dot-product attention, softmax(q k^T / sqrt(d)) v.

    q: (..., N, d) queries, k: (..., M, d) keys, v: (..., M, d_v) values, where "..." is any
    number of leading dimensions (batch, heads) that are passed through. The softmax is over
    the M keys; d is q's last dimension. Returns (..., N, d_v).
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("03", "attention", globals())  # what the grader will say about it


# %% [markdown]
# ## 4 · The self-attention block
#
# DDPM applies attention to a feature map $x$ of shape $(B, C, H, W)$ at low resolution (16x16 for
# CIFAR-10), treating the $H \cdot W$ pixels as $N$ positions with $C$ features each:
#
# 1. normalise, then one 1x1 convolution gives $3C$ channels: the first $C$ are the queries,
#    the next $C$ the keys, the last $C$ the values;
# 2. reshape each to $(B, H\cdot W, C)$: `z.flatten(2).transpose(1, 2)`. (A plain
#    `z.reshape(B, H * W, C)` would mix channels and positions!);
# 3. attend over the positions, reshape back to $(B, C, H, W)$;
# 4. a 1x1 projection (zero-initialised) and a residual connection: `x + proj(out)`.
#
# One head, as in DDPM.

# %%
class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions of a feature map (same layers as
    lesson_lib.models.unet.AttentionBlock with heads=1)."""

    def __init__(self, ch):
        super().__init__()
        self.norm = group_norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_init(nn.Conv2d(ch, ch, 1))

    def forward(self, x):
        """x: (B, C, H, W) -> (B, C, H, W): self-attention over the N = H*W positions,

            out = x + proj(attention(q, k, v)),   (q, k, v) = qkv(norm(x)),

        where q, k and v are the three groups of C channels of qkv's output (in that order), each
        seen as N positions with C features, (B, N, C), and the result is laid out as (B, C, H, W).
        """
        # YOUR CODE HERE
        raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("03", "AttentionBlock", globals())  # what the grader will say about it


# %% [markdown]
# ## 5 · A question: how big is a block?
#
# Most of DDPM's 35.7M parameters sit in its ResBlocks. **Predict first**: how many parameters has one
# ResBlock from 128 to 256 channels with a 512-dimensional time embedding, and which of its layers holds
# most of them? Then write the count as a formula of `in_ch`, `out_ch` and `time_dim` (count by hand,
# layer by layer: a convolution has a weight per input channel, output channel and kernel position, and
# a bias per output channel; a GroupNorm a scale and a shift per channel). The grader asks for sizes it
# draws and compares with lesson_lib's block.

# %%
def resblock_parameter_count(in_ch, out_ch, time_dim):
    """The number of parameters (an int) of ResBlock(in_ch, out_ch, time_dim): the two GroupNorms,
    the two 3x3 convolutions, the time projection and, when in_ch != out_ch, the 1x1 skip convolution,
    each with its bias.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("03", "resblock_parameter_count", globals())  # what the grader will say about it
block = ResBlock(128, 256, time_dim=512)
print(f"your formula: {resblock_parameter_count(128, 256, 512):,}; your block has "
      f"{sum(p.numel() for p in block.parameters()):,} parameters, "
      f"{sum(p.numel() for p in block.conv2.parameters()):,} of them in conv2")


# %% [markdown]
# The two 3x3 convolutions hold most of it, about 85% here (9 weights per pair of channels); the time
# projection and the skip convolution most of the rest, the norms almost nothing. Doubling the width quadruples a block's size.

# %% [markdown]
# ## 6 · Your blocks inside a whole U-Net
#
# `lesson_lib.models.unet.UNet` is built from exactly these blocks. We take a small U-Net (with
# attention at 8x8), swap every ResBlock and attention block for yours, carrying the weights over,
# and check that the whole network computes the same $\epsilon_\theta(x_t, t)$.

# %%
def swap_in_my_blocks(model):
    """Replace every ResBlock and AttentionBlock of a lesson_lib UNet by this notebook's, in place."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, unet.ResBlock):
                mine = ResBlock(child.conv1.in_channels, child.conv1.out_channels, child.time_proj.in_features)
            elif isinstance(child, unet.AttentionBlock):
                mine = AttentionBlock(child.qkv.in_channels)
            else:
                continue
            mine.load_state_dict(child.state_dict())
            setattr(module, name, mine)
    return model


# %%
torch.manual_seed(0)
reference = perturbed(unet.UNet(in_channels=1, image_size=16, base_channels=16, channel_mults=(1, 2),
                                num_res_blocks=1, attention_resolutions=(8,), dropout=0.0), scale=0.05)
x_t, t = torch.randn(4, 1, 16, 16), torch.tensor([0, 10, 500, 999])
with torch.no_grad():
    expected = reference(x_t, t)
    ours = swap_in_my_blocks(reference)
    n_mine = sum(isinstance(m, (ResBlock, AttentionBlock)) for m in ours.modules())
    same = torch.allclose(ours(x_t, t), expected, rtol=1e-4, atol=1e-4)
print(f"the U-Net with {n_mine} of your blocks computes the same output as lesson_lib's: {same}")


# %% [markdown]
# ## 7 · The class label: a conditional embedding with a null class
#
# A class-conditional U-Net, $\epsilon_\theta(x_t, t, y)$, is told the label $y$ the way it is told $t$: a table $E$
# holds one learned vector per label, as wide as the time embedding, and the vector every ResBlock receives is
#
# $$\text{emb}(t, y) = \text{TimeEmbedding}(t) + E[y].$$
#
# The table has one row more than there are classes: row `num_classes` is the **null class**, "no label". A model
# called without labels uses it for every example, and label dropout (lesson 4) trains that row, so that one
# network gives both $\epsilon_\theta(x_t, t, y)$ and the unconditional $\epsilon_\theta(x_t, t, \varnothing)$, which
# classifier-free guidance (lesson 5) combines (Ho & Salimans, 2022).
#
# Write the module that adds the label's row to a given time embedding, its `__init__` too. Keep the names the
# docstrings give: the grader loads the table of a `lesson_lib` U-Net into yours and compares with the U-Net's own
# `embed(t, y)`.

# %%
class ConditionalEmbedding(nn.Module):
    """The class-conditional part of the vector every ResBlock receives (lesson_lib's UNet.embed).

    Holds self.num_classes and self.class_embedding, an nn.Embedding with one learned row of size
    dim per label: one per class, 0..num_classes-1, and one for the null class ("no label").
    """

    def __init__(self, num_classes, dim):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError("Exercise: implement this (see the docstring above).")

    def forward(self, time_emb, y=None):
        """time_emb: (B, dim) float, the time embedding of each example; y: (B,) long labels in
        0..num_classes (num_classes is the null class), or None for no labels at all.
        Returns the (B, dim) sum

            emb = time_emb + E[y],    E = the rows of self.class_embedding,

        with y = num_classes (the null class) for every example when y is None. The inputs do not change.
        """
        # YOUR CODE HERE
        raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("03", "ConditionalEmbedding", globals())  # what the grader will say about it

# %% [markdown]
# Now your module drives a real model. `mnist_cond` is the course's shipped class-conditional U-Net (lesson 4);
# below, its own label table is loaded into your `ConditionalEmbedding`, which then replaces the model's `embed`.
# One starting noise $x_T$ is sampled with every label and with the null class (20 DDIM steps, lesson 6), and
# the same with the model's own embedding, for comparison.

# %%
cond_model, cond_schedule = load_pretrained("mnist_cond")
mine = ConditionalEmbedding(cond_model.num_classes, cond_model.class_embedding.embedding_dim)
mine.class_embedding.load_state_dict(cond_model.class_embedding.state_dict())
labels = torch.arange(cond_model.num_classes + 1)                 # 0..9, then the null class
x_T = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0)).repeat(len(labels), 1, 1, 1)
sample = lambda: ddim_sample(cond_model, cond_schedule, x_T=x_T, steps=20, clip_x0=True,  # noqa: E731
                             model_kwargs={"y": labels}, progress=False)
with torch.no_grad():
    reference = sample()
    cond_model.embed = lambda t, y=None: mine(cond_model.time_embedding(t), y)   # yours, from now on
    yours = sample()
print("your embedding drives mnist_cond exactly as lesson_lib's:", torch.allclose(yours, reference, atol=1e-4))
show_grid(yours.view(1, -1, 1, 28, 28), col_labels=[f"y = {k}" for k in range(10)] + ["null"],
          row_labels=["one x_T"], title="mnist_cond with your ConditionalEmbedding", figsize=(11, 1.8))

# %% [markdown]
# One starting noise, eleven samples: the label alone decides which digit the model aims for, and with the null class
# it draws whatever digit that noise leads to when no class is asked for, a sample of $p(x)$. Not every sample is the
# digit asked for; lesson 4 counts how often the model gets it right, with a classifier.
