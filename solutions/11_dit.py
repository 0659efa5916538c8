# %% [markdown]
# # Lesson 11 · Exercises: the Diffusion Transformer
#
# The Diffusion Transformer, DiT (Peebles & Xie, 2023), replaces the U-Net by a plain Vision Transformer. It cuts
# the image $x_t$ into $p \times p$ patches, turns each patch into a token of width $D$, and runs the sequence of
# tokens through Transformer blocks that read the condition $c$ (the embedding of $t$ and of the label) through
# adaptive LayerNorms whose gates start at zero: the *adaLN-Zero* block. The output tokens are turned back into
# patches and the patches into an image.
#
# Three exercises, about an hour: cutting an image into tokens and back, the modulation of adaLN, and one
# adaLN-Zero block's forward pass. The checks you can run use the course's tiny `DiT-T/4`, untrained and built
# with a fixed seed: a 28 x 28 MNIST digit in 4 x 4 patches is 49 tokens, of width 128. Runtime: a few seconds.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import torch

from lesson_lib.course import feedback

from lesson_lib.data.images import load_mnist
from lesson_lib.models import dit as library
from lesson_lib.models.dit import dit_preset


# %% [markdown]
# ## 1 · Patchify and its inverse
#
# DiT's first layer is "patchify" (Sec. 3.2, Fig. 4): an image of $C$ channels and size $I \times I$ becomes
# $N = (I/p)^2$ tokens, each holding the $p^2 C$ numbers of one $p \times p$ patch. A Linear layer then maps each
# token to width $D$. Which number goes where is a convention, but the model's position embedding and its last layer
# depend on it, so the course fixes one:
#
# * the patches are numbered row by row: token $k$ is the patch at row $r = k \,//\, (I/p)$ and column
#   $c = k \bmod (I/p)$ of the grid, the pixels `x[:, :, r*p:(r+1)*p, c*p:(c+1)*p]`;
# * within a token the channel varies fastest, then the column in the patch: entry $(i p + j) C + c$ is pixel
#   $(i, j)$ of the patch in channel $c$.
#
# Write `patchify(x, p)`: `x` is `(B, C, I, I)` and `p` divides `I`; return `(B, (I/p)^2, p^2 C)` in that order.
# Then `unpatchify(tokens, p, channels, size)`, its exact inverse, which the model applies to its output tokens:
# `(B, (size/p)^2, p^2 channels)` back to `(B, channels, size, size)`. No arithmetic is involved, only reshapes and
# one permutation of the axes each: `x.reshape(B, C, I/p, p, I/p, p)` names the six axes.

# %%
def patchify(x, p):
    """Cut images x (B, C, I, I) into (B, (I/p)^2, p^2 C) tokens (Peebles & Xie, 2023, Sec. 3.2, "Patchify").

    Token k is the patch at row k // (I/p) and column k % (I/p); within a token, entry (i p + j) C + c is
    pixel (i, j) of the patch in channel c."""
    ### BEGIN SOLUTION
    B, C, size, _ = x.shape
    g = size // p
    return x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(B, g * g, p * p * C)
    ### END SOLUTION


def unpatchify(tokens, p, channels, size):
    """The exact inverse of patchify: tokens (B, (size/p)^2, p^2 channels) -> images (B, channels, size, size)."""
    ### BEGIN SOLUTION
    B, g = tokens.shape[0], size // p
    return tokens.reshape(B, g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4).reshape(B, channels, size, size)
    ### END SOLUTION


# %% [markdown]
# A check you can run: eight test digits in 4 x 4 patches, DiT-T/4's 49 tokens of 16 numbers. Token 24 is the
# patch in the middle of the grid, row 3 and column 3, the pixels 12 to 15 in both directions. Then three-channel
# images of 32 x 32 in 8 x 8 patches, where the order of the channels within a token matters.

# %%
digits, labels = load_mnist("test")
x = digits[:8]
tokens = patchify(x, 4)
print("digits", tuple(x.shape), "-> tokens", tuple(tokens.shape))
print("token 24 is the middle patch:", torch.equal(tokens[:, 24], x[:, :, 12:16, 12:16].permute(0, 2, 3, 1).flatten(1)))
print("the library's patchify agrees:", torch.equal(tokens, library.patchify(x, 4)),
      "| unpatchify(patchify(x)) is x:", torch.equal(unpatchify(tokens, 4, 1, 28), x))
rgb = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
print("RGB", tuple(rgb.shape), "-> tokens", tuple(patchify(rgb, 8).shape),
      "| the library's:", torch.equal(patchify(rgb, 8), library.patchify(rgb, 8)),
      "| back:", torch.equal(unpatchify(patchify(rgb, 8), 8, 3, 32), rgb))
feedback.check("11", ["patchify", "unpatchify"], globals())  # what the grader will say about them


# %% [markdown]
# ## 2 · The modulation of adaLN
#
# A DiT block normalises its tokens with a LayerNorm that has no scale and shift of its own: they come from the
# condition $c$ instead, one vector each per example, the same for all $N$ tokens of that example (adaptive
# LayerNorm, as in FiLM and StyleGAN):
#
# $$\operatorname{modulate}(h, \text{shift}, \text{scale}) = h \odot (1 + \text{scale}) + \text{shift}.$$
#
# The $1 +$ makes a zero scale leave $h$ as it is, so a modulation that starts at zero starts as the identity.
#
# Write `modulate(x, shift, scale)`: `x` is `(B, N, D)`, `shift` and `scale` are `(B, D)`; return `(B, N, D)`.

# %%
def modulate(x, shift, scale):
    """adaLN's x * (1 + scale) + shift (Peebles & Xie, 2023, Sec. 3.2): x (B, N, D); shift and scale (B, D), one
    vector per example, the same for all N tokens."""
    ### BEGIN SOLUTION
    return x * (1 + scale[:, None, :]) + shift[:, None, :]
    ### END SOLUTION


# %% [markdown]
# A check you can run: the untrained DiT-T/4 (class-conditional, 10 classes) embeds the eight digits' tokens to
# width 128 and adds its position embedding, as its forward pass does; $c$ is the embedding of $t$ and the label,
# one vector of 128 per digit.

# %%
torch.manual_seed(0)
model = dit_preset("DiT-T/4", num_classes=10).eval()
with torch.no_grad():
    h = model.patch_embedding(tokens) + model.position_embedding
    c = model.embed(torch.full((8,), 500), labels[:8])
shift, scale = torch.randn(8, 128), torch.randn(8, 128)
print("tokens", tuple(h.shape), "| c", tuple(c.shape), "| shift and scale", tuple(shift.shape))
print("the library's modulate agrees:", torch.allclose(modulate(h, shift, scale), library.modulate(h, shift, scale)),
      "| at shift = scale = 0 it is h:", torch.equal(modulate(h, torch.zeros(8, 128), torch.zeros(8, 128)), h))
feedback.check("11", "modulate", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · One adaLN-Zero block
#
# A DiT block is a pre-norm Transformer block (self-attention, then an MLP, each inside a residual connection)
# whose LayerNorms are modulated by $c$, and whose two residual branches are scaled by gates, also computed from
# $c$ (Sec. 3.2, "DiT block design"):
#
# $$\text{shift}_1, \text{scale}_1, \text{gate}_1, \text{shift}_2, \text{scale}_2, \text{gate}_2
#   = \operatorname{Linear}(\operatorname{SiLU}(c)) \quad (6 \text{ vectors of } D)$$
# $$x \leftarrow x + \text{gate}_1 \odot \operatorname{Attention}\big(\operatorname{modulate}(\operatorname{LN}(x),
#   \text{shift}_1, \text{scale}_1)\big)$$
# $$x \leftarrow x + \text{gate}_2 \odot \operatorname{MLP}\big(\operatorname{modulate}(\operatorname{LN}(x),
#   \text{shift}_2, \text{scale}_2)\big)$$
#
# The second line reads the $x$ the first line produced. The Linear that makes the six vectors starts at zero
# (the "Zero" of adaLN-Zero): every gate is then 0 and the block is exactly the identity, so in an untrained DiT of
# any depth every block passes its tokens through unchanged, and training learns, block by block, what to add.
#
# Write `dit_block_forward(block, x, c)` from the parts of a course `DiTBlock`: `block.modulation` (SiLU, then
# the Linear; `block.modulation(c)` is `(B, 6D)`: split it with `.chunk(6, dim=1)`, in the order above),
# `block.norm1` and `block.norm2` (the LayerNorms), `block.attention` (the self-attention over the tokens) and
# `block.mlp`. Use your `modulate`. `x` is `(B, N, D)`, `c` is `(B, D)`; a gate is `(B, D)`, the same for every
# token. Do not call `block(x, c)`: that is what your answer is compared with.

# %%
def dit_block_forward(block, x, c):
    """One adaLN-Zero DiT block (Peebles & Xie, 2023, Sec. 3.2), written from block.modulation, block.norm1,
    block.norm2, block.attention and block.mlp: x (B, N, D), c (B, D) -> (B, N, D)."""
    ### BEGIN SOLUTION
    shift1, scale1, gate1, shift2, scale2, gate2 = block.modulation(c).chunk(6, dim=1)
    x = x + gate1[:, None, :] * block.attention(modulate(block.norm1(x), shift1, scale1))
    return x + gate2[:, None, :] * block.mlp(modulate(block.norm2(x), shift2, scale2))
    ### END SOLUTION


# %% [markdown]
# A check you can run: the untrained model's first block is exactly the identity on the 49 tokens of width 128.
# Once its modulation Linear holds other weights than zeros, the block changes every token, as `block(x, c)` does.

# %%
block = model.blocks[0]
with torch.no_grad():
    out = dit_block_forward(block, h, c)
    print("block input", tuple(h.shape), "-> output", tuple(out.shape), "| at a zero modulation it is h:",
          torch.equal(out, h))
    torch.nn.init.normal_(block.modulation[1].weight, std=0.05)
    out = dit_block_forward(block, h, c)
    print("with a non-zero modulation, every token changes:", bool(((out - h).abs().amax(-1) > 0).all()),
          "| the block's own forward agrees:", torch.allclose(out, block(h, c), rtol=1e-4, atol=1e-5))
feedback.check("11", "dit_block_forward", globals())  # what the grader will say about it
