# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/03_unet.ipynb)
#
# # Lesson 3 — The U-Net: why each piece is there
#
# On the swiss roll (lesson 2) the denoiser $\varepsilon_\theta(x_t, t)$ was a small MLP. An image denoiser needs more:
#
# * its output is an **image of the same size** as its input (the predicted noise, one number per pixel);
# * the same local patterns (edges, strokes, textures) occur **everywhere in the image**, so weights should be shared across positions: convolutions;
# * it must see **fine detail** (to tell noise from texture at small $t$) and the **whole image** (to decide what the image is at large $t$);
# * it must know **which noise level** it is looking at: one network serves all $T = 1000$ steps.
#
# DDPM's answer (Ho et al., 2020, Appendix B) is a U-Net (Ronneberger et al., 2015) built from the blocks of PixelCNN++:
#
# ```
# x_t ─ conv_in ─┬─ down: per level, ResBlocks (+ attention), then Downsample ──┐
#                │    (every block's output is kept)                            │
#                │                                      middle: ResBlock ─ Attention ─ ResBlock
#                │                                                              │
#                └─> up: per level, concat(h, kept output) → ResBlock (+ attention), then Upsample
#                                                                               │
#                                                   out: GroupNorm ─ SiLU ─ Conv3x3 ─> ε̂
#
# t (and the class y) ─> emb = TimeEmbedding(t) + ClassEmbedding(y) ─> added inside every ResBlock
# ```
#
# This lesson takes it apart: the time embedding, the ResBlock, self-attention and the skip connections, a diagram of the
# whole network drawn from the model itself, how the class label gets in, what the shapes and parameters are, and
# finally what the network loses when attention or the skips are removed. The code is `lesson_lib/models/unet.py`;
# `docs/unet.md` summarises it. The exercise notebook has you write the embedding, the ResBlock, attention, the attention
# block and the class-conditional embedding yourself.
#
# **Study time.** About 1 h to read and run this lesson, then 1.5–2 h for the exercise notebook.
#
# **Runtime.** The lesson trains the same three tiny U-Nets (150 steps each) and samples 33 digits from a shipped model
# in every profile, so `ci` and `cpu` run the same cells. The stored run took 6 min (356 s) on a 2-core cloud CPU that other
# jobs shared (load about 9; each training took 89–106 s of it, against 12–20 s in an earlier run on a quiet machine);
# re-measure with `python benchmarks/lesson_runtimes.py --profile ci --lessons 03`. `gpu` profile:
# well under a minute on an NVIDIA H200 or a free Colab T4 (estimate, not measured: 450 training steps of batch 32 of
# U-Nets of 0.23–0.28M parameters, and 660 evaluations of a 1.6M-parameter U-Net).

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from lesson_lib.data.images import load_mnist
from lesson_lib.models.embeddings import sinusoidal_embedding
from lesson_lib.diffusion.forward import q_sample, x0_from_eps
from lesson_lib.diffusion.losses import LSimple, l_simple
from lesson_lib.course.plotting import show_grid, show_images
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.training.trainer import TrainConfig, Trainer, default_device
from lesson_lib.course.inspection import draw_unet, parameter_table, shape_table
from lesson_lib.diffusion.sampling import ddim_sample
from lesson_lib.evaluation.judges import classify
from lesson_lib.models.layers import AttentionBlock, ResBlock
from lesson_lib.models.unet import PRESETS, UNet, unet_preset
from lesson_lib.pretrained import load_pretrained

torch.manual_seed(0)
torch.set_num_threads(min(2, torch.get_num_threads()))   # small models run fastest on few threads

# %% [markdown]
# ## 1. Telling the network the time: the sinusoidal embedding
#
# One set of weights denoises at every noise level, so $t$ is an input. Feeding the raw number $t \in \{0, \dots, 999\}$ works badly: a network
# finds it hard to react differently to $t = 500$ and $t = 501$ from a single input that barely changes. DDPM borrows the Transformer's positional
# encoding (Vaswani et al., 2017, Sec. 3.5): $\text{dim}/2$ frequencies $\omega_i = 10000^{-i/(\text{dim}/2)}$, spaced geometrically from 1 down to
# $1/10000$, and
#
# $$\text{emb}(t) = \big[\sin(t\,\omega_0), \dots, \sin(t\,\omega_{\text{dim}/2-1}),\ \cos(t\,\omega_0), \dots, \cos(t\,\omega_{\text{dim}/2-1})\big].$$
#
# The first dimensions oscillate fast (period $2\pi \approx 6$ steps) and tell neighbouring timesteps apart; the last ones change slowly and say
# roughly where in $0..999$ we are. An MLP (`TimeEmbedding`) then maps this vector to the width the network needs.

# %%
t = torch.arange(1000)
emb = sinusoidal_embedding(t, 128)          # (1000, 128): sines in columns 0..63, cosines in 64..127
print("embedding:", tuple(emb.shape), emb.dtype)

period = lambda i: 2 * torch.pi * 10000 ** (i / 64)    # of sine dimension i, in timesteps
fig, axes = plt.subplots(1, 3, figsize=(16, 3.6), gridspec_kw={"width_ratios": [1.4, 1, 1]})
im = axes[0].imshow(emb.T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
axes[0].set(xlabel="timestep t", ylabel="dimension", title="sinusoidal embedding (dim = 128)")
fig.colorbar(im, ax=axes[0])
for i in [0, 4, 8]:
    axes[1].plot(t[:60], emb[:60, i], ".-", label=f"dim {i} (period {period(i):.0f})", lw=1)
axes[1].set(xlabel="timestep t", title="fast sine dimensions, t < 60")
for i in [20, 28, 36, 44]:
    axes[2].plot(t, emb[:, i], label=f"dim {i} (period {period(i):,.0f})")
axes[2].set(xlabel="timestep t", title="slow sine dimensions", xlim=(0, 999))
for ax in axes[1:]:
    ax.legend(fontsize=8, loc="lower left")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Similar times, similar codes.** The cosine similarity between two embeddings depends only on the distance $|t - t'|$ (because
# $\sin a \sin b + \cos a \cos b = \cos(a - b)$). It is 1 for $t = t'$, drops quickly over the first few tens of steps and stays low
# beyond: nearby timesteps get similar codes, which lets the network share what it learns between neighbouring noise levels, while distant
# timesteps stay distinguishable. (It never reaches 0: the slowest dimensions hardly change over 1000 steps.)

# %%
unit = F.normalize(emb, dim=1)
similarity = unit @ unit.T                  # (1000, 1000) cosine similarities

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
im = axes[0].imshow(similarity, cmap="viridis", vmin=-0.2, vmax=1)
axes[0].set(xlabel="t'", ylabel="t", title="cosine similarity of emb(t) and emb(t')")
fig.colorbar(im, ax=axes[0])
for t0 in (10, 500, 900):
    axes[1].plot(t, similarity[t0], label=f"t = {t0}")
axes[1].set(xlabel="t'", ylabel="cosine similarity", title="similarity to one timestep", xlim=(0, 999))
axes[1].legend()
plt.tight_layout()
plt.show()

for a, b in [(500, 501), (500, 510), (500, 600), (500, 999), (0, 999)]:
    print(f"similarity of t = {a} and t = {b}: {similarity[a, b].item():.2f}")
assert torch.allclose(similarity[0, 100], similarity[500, 600], atol=1e-3)  # depends only on |t - t'|

# %% [markdown]
# ## 2. The ResBlock: the workhorse
#
# Almost all of the U-Net's weights sit in residual blocks (He et al., 2016) in the style of PixelCNN++:
#
# ```
# h = Conv3x3(SiLU(GroupNorm(x)))
# h = h + Linear(SiLU(emb))[:, :, None, None]      # the time embedding: one shift per channel, the same at every pixel
# h = Conv3x3(Dropout(SiLU(GroupNorm(h))))         # this conv starts at zero
# return skip(x) + h                               # skip = 1x1 conv when the channel count changes, else the identity
# ```
#
# Why each piece:
#
# * **Two 3x3 convolutions**: local features, with weights shared across positions.
# * **The residual connection** `x + h`: gradients flow straight through dozens of blocks. And because the second convolution is
#   initialised to zero (as in the DDPM code), a fresh block *is* the identity, so a deep untrained network starts out harmless.
# * **GroupNorm** instead of BatchNorm: it normalises each example on its own, so the result does not depend on the batch (batches of
#   large images are small, and sampling runs one image at a time).
# * **The time embedding** is added after the first convolution: every block, at every resolution, learns its own response to $t$.
#   (A subtle point: GroupNorm subtracts each group's mean, and with it any shift shared by all channels of the group. With one channel per
#   group, the per-channel time shift would be erased by the next normalisation. `lesson_lib` therefore keeps at least 4 channels per group.)

# %%
block = ResBlock(32, 32, time_dim=128)
x, emb_a, emb_b = torch.randn(2, 32, 8, 8), torch.randn(2, 128), torch.randn(2, 128)
with torch.no_grad():
    print("a fresh ResBlock is the identity:", torch.equal(block(x, emb_a), x))
    torch.nn.init.normal_(block.conv2.weight, std=0.05)          # as after some training
    print("after training, its output depends on t:", not torch.allclose(block(x, emb_a), block(x, emb_b)))
    print("GroupNorm groups at 32 channels:", block.norm2.num_groups, "(8 channels each)")

    # The pitfall: one channel per group erases the per-channel time shift before conv2 sees it.
    block.norm2 = torch.nn.GroupNorm(32, 32)
    print("with 1 channel per group, the output still depends on t:",
          not torch.allclose(block(x, emb_a), block(x, emb_b), atol=1e-6))


# %% [markdown]
# ## 3. Self-attention: every pixel sees every pixel
#
# A 3x3 convolution looks at its 8 neighbours and mixes them with **fixed weights**: the weight given to "the pixel above me" is the
# same whatever the image shows. How *far* the network sees is not what it lacks: every halving of the resolution doubles the
# reach of the convolutions after it, and we measure below that in the `mnist` preset the centre of the 14x14 level already depends
# on every pixel of the 28x28 input. What convolutions cannot do is choose *which* positions to combine according to what they contain.
# **Self-attention** (Vaswani et al., 2017) does: each of the $N = H\cdot W$ positions computes a query $q$, a key $k$ and a value $v$
# (1x1 convolutions of the normalised features) and outputs a weighted average of all values,
#
# $$\text{out} = \text{softmax}\Big(\frac{QK^\top}{\sqrt{C}}\Big)V, \qquad Q, K, V \in \mathbb R^{N \times C},$$
#
# followed by a zero-initialised 1x1 projection and a residual connection. The weights $\text{softmax}(QK^\top/\sqrt C)$ are computed from the
# features themselves: a position can draw on the positions that look alike (two ends of one stroke) wherever they are, and on
# different ones for another image. That content-dependent mixing, in one step, is what attention adds. The attention matrix has
# $N^2$ entries, so DDPM uses it only at low resolution: at 16x16 for CIFAR-10 (and in the middle block); the `mnist` preset uses it at 7x7.
#
# We measure how far each block "sees": the gradient of one output pixel (the centre) with respect to every input pixel.

# %%
def influence(block_fn, x):
    """|d out[center] / d x|, summed over channels: which input pixels affect the centre output."""
    x = x.clone().requires_grad_(True)
    out = block_fn(x)
    out[:, :, 8, 8].sum().backward()
    return x.grad.abs().sum(dim=(0, 1))


def perturbed(module, scale=0.1):
    """Random weights everywhere, including the layers that start at zero."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module.eval()


torch.manual_seed(0)
x = torch.randn(1, 32, 16, 16)
res = perturbed(ResBlock(32, 32, time_dim=128))
attn = perturbed(AttentionBlock(32))
maps = {"ResBlock (two 3x3 convs)": influence(lambda z: res(z, torch.zeros(1, 128)), x),
        "attention branch, proj(out)": influence(lambda z: attn(z) - z, x)}

fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
for ax, (name, m) in zip(axes, maps.items()):
    im = ax.imshow((m / m.max()).clamp_min(1e-4).log10(), cmap="magma", vmin=-4, vmax=0)
    ax.plot(8, 8, "c+", ms=12)
    ax.set(title=name, xlabel="input column", ylabel="input row", xticks=[0, 5, 10, 15], yticks=[0, 5, 10, 15])
fig.colorbar(im, ax=axes, label="log10(influence / its largest value)")
fig.suptitle("influence of each input pixel on the centre output (+), 16x16 feature map")
plt.show()

inside = torch.zeros(16, 16, dtype=torch.bool)
inside[6:11, 6:11] = True                                # the 5x5 neighbourhood of the centre
for name, m in maps.items():
    local = m[inside].min() > 3 * m[~inside].max()
    print(f"{name:<28} every pixel in the 5x5 window outweighs every pixel outside it (by 3x): {local.item()}")

# %% [markdown]
# The ResBlock's influence is concentrated in the 5x5 window that two 3x3 convolutions reach: there the colour bar reads 0 to
# about -1, a tenth of the largest influence or more. GroupNorm's statistics add a weak, image-wide term outside it (about -3,
# a thousandth: every pixel contributes a little to the mean and variance). The attention branch draws on the whole map, with
# weights set by the input: another $x$ gives another pattern. Attention is also **permutation equivariant**: shuffle the pixels
# and its output is shuffled the same way, it has no idea where a pixel is. The convolutions around it supply the geometry.
#
# **Reach through downsampling.** The ResBlock alone sees 5x5 pixels, but a U-Net stacks them between stride-2 convolutions. Below,
# the `mnist` preset without attention and without its GroupNorms (so that only convolutions connect pixels), with random weights:
# for the centre of each down-path block's output, the side of the square of input pixels it depends on.

# %%
def reach_of_each_block(model, size=28):
    """For each down-path block: (name, its map size, side of the input square that reaches its centre)."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.GroupNorm):
                setattr(module, child_name, torch.nn.Identity())      # convolutions only
    outputs = {}
    blocks = [("conv_in", model.conv_in)] + [(f"down.{i}", m) for i, m in enumerate(model.down)]
    for name, module in blocks:
        module.register_forward_hook(lambda m, i, out, name=name: outputs.__setitem__(name, out))
    x = torch.randn(1, 1, size, size, requires_grad=True)
    model(x, torch.zeros(1, dtype=torch.long))
    for name, _ in blocks:
        out = outputs[name]
        grad, = torch.autograd.grad(out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum(), x, retain_graph=True)
        rows = grad[0, 0].abs().sum(dim=1).nonzero()
        yield name, out.shape[-1], int(rows.max() - rows.min() + 1)


torch.manual_seed(0)
for name, side, window in reach_of_each_block(perturbed(UNet(**PRESETS["mnist"], use_attention=False))):
    print(f"{name:<8} output {side:>2}x{side:<2}: its centre depends on a {window:>2}x{window:<2} square of the 28x28 input")

# %% [markdown]
# Each convolution at 28x28 adds 2 pixels to the square, each at 14x14 adds 4: by `down.4`, still at 14x14, the centre depends on
# every input pixel. Reach comes from the downsampling; attention at 7x7 adds the choice of what to mix.
#
# The price of attention is the $N \times N$ attention matrix, per image and per head:

# %%
for size in (32, 16, 8, 7, 4):
    n = size * size
    print(f"{size:>2}x{size:<2}: N = {n:>4} positions, attention matrix {n * n:>9,} entries")


# %% [markdown]
# ## 4. Down, up, and the skip connections
#
# The down path halves the resolution at each level (a stride-2 convolution) while widening the channels: deep features are cheap to compute
# at 7x7 and see the whole digit. The up path doubles the resolution back. Without more, everything the output knows about the input would
# pass through the **bottleneck**, the 7x7 feature map of the middle block. The network's target, $\varepsilon$, is a pixel-level pattern: at
# large $t$, $x_t$ is almost $\varepsilon$ itself, and the best prediction is close to passing the input through. Through the bottleneck alone
# that means learning to encode the 784 pixels into the 7x7 map and to decode them again. **Skip connections** give it for free: every
# output of the down path is kept and concatenated to the input of one up-path block at the same resolution, so fine detail reaches the
# output without going through the bottleneck. (Section 7 measures what removing them costs.)
#
# `shape_table` runs one forward pass and records every block's input and output shape. Watch the channel count of the up-path inputs: it is the
# current width *plus* the width of the skip being concatenated.

# %%
def print_shapes(name, x, t):
    lines = [f"{name} preset: {PRESETS[name]}", f"{'block':<44}{'input':>20}{'output':>20}"]
    for block, shape_in, shape_out in shape_table(unet_preset(name).eval(), x, t):
        lines.append(f"{block:<44}{str(shape_in):>20}{str(shape_out):>20}")
    print("\n".join(lines))


print_shapes("mnist", torch.randn(2, 1, 28, 28), torch.tensor([10, 900]))


def bottleneck(model):
    """(channels, height, width) of the middle block's output, from one forward pass."""
    x = torch.randn(1, model.in_channels, model.image_size, model.image_size)
    rows = shape_table(model.eval(), x, torch.zeros(1, dtype=torch.long))
    return next(shape_out for name, _, shape_out in rows if name.startswith("middle"))[1:]


c, h, w = bottleneck(unet_preset("mnist"))
print(f"\nbottleneck of the mnist preset: {h}x{w}x{c} = {h * w * c:,} numbers, for an image of 28x28 = 784 pixels")

# %%
print_shapes("cifar10", torch.randn(2, 3, 32, 32), torch.tensor([10, 900]))

# %% [markdown]
# Things to notice:
#
# * `up.0` of the MNIST model takes 128 channels: 64 from the middle block plus 64 from the last down-path output. `up.8`, the first
#   block at 28x28, takes 64 + 32 = 96: 64 channels come up from 14x14, 32 come across from the down path.
# * Every down-path output (and the input convolution's) is used by exactly one up-path block, which is why the up path has one more ResBlock per level.
# * Attention appears only at 7x7 for MNIST (16x16 for CIFAR-10) and in the middle.
# * The output has the input's shape: the network predicts one noise value per pixel and channel.
#
# **The whole network in one picture.** `draw_unet` (`lesson_lib/course/inspection.py`) draws a model from the same forward pass:
# one box per block in execution order, one row per feature-map size, so the down path descends to 7x7 and the up path climbs back.
# Each box gives its channels in → out; an up-path block shows its input as *current + skip*. The green arcs are the skip connections,
# each from the block whose output is kept to the up-path block that concatenates it: the last one kept is the first one used, so the
# arcs nest. The red dot marks the blocks whose ResBlocks add the embedding, the only way $t$ (and, in a class-conditional model,
# the label $y$: next section) enters the network. Drawn here: the `mnist` preset with 10 classes, the architecture of the
# shipped `mnist_cond`.

# %%
fig, ax = plt.subplots(figsize=(15, 6.2))
draw_unet(unet_preset("mnist", num_classes=10), ax=ax, title="the mnist preset with 10 classes (the shipped mnist_cond)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Telling the network the class: the label embedding and the null class
#
# From lesson 4 on, every image model is **class-conditional**: $\varepsilon_\theta(x_t, t, y)$ is asked for a digit of class $y$. The
# label enters exactly where $t$ does. `ClassEmbedding` (`lesson_lib/models/layers.py`) is a table of learned vectors, one row per
# label, as wide as the time embedding, and `UNet.embed` adds the row of $y$ to the time embedding:
#
# $$\text{emb}(t, y) = \underbrace{\text{MLP}\big(\text{sinusoid}(t)\big)}_{\texttt{TimeEmbedding}} + \underbrace{E[y]}_{\texttt{ClassEmbedding}}.$$
#
# This one vector reaches every ResBlock (the red dots above) through its `time_proj`, as one shift per channel (section 2): every block, at
# every resolution, is told the class, at the cost of one table.
#
# **The null class.** The table has `num_classes + 1` rows. The last one, index `num_classes` (10 for MNIST), means "no label":
# `model(x_t, t)` without `y` uses it. Why a row of its own? "No label" must be an input the network has *seen during training*, and
# one that is none of the classes; a label it was never trained on would give an arbitrary output. (Whether that row is learned,
# as here, or fixed at zero changes nothing the network can represent: the last bias of the time MLP can absorb any shift
# common to all rows.)
#
# **Label dropout** (Ho & Salimans, 2022) is how it sees it: during training, each label is replaced by the null class with
# probability $p_\text{uncond}$ (0.1 for the shipped `mnist_cond`: its card's `class_dropout`). The same network is then fitted on two
# regression problems at once. With a label, $\varepsilon_\theta(x_t, t, y) \approx \mathbb E[\varepsilon \mid x_t, y]$, the noise predictor of
# $p(x \mid y)$; with the null class, $\varepsilon_\theta(x_t, t, \varnothing) \approx \mathbb E[\varepsilon \mid x_t]$, that of $p(x)$, all digits together.
# One network, two models, sharing every weight but one row. Lesson 4 trains with it (its exercise has you write that training step);
# lesson 5 combines the two predictions (classifier-free guidance).
#
# The shipped model, checked against the formula:

# %%
cond_model, cond_schedule = load_pretrained("mnist_cond")
table = cond_model.class_embedding.weight
print(f"class embedding of mnist_cond: {tuple(table.shape)} = {table.numel():,} parameters "
      f"({cond_model.num_classes} classes + the null row, each as wide as the time embedding)")
t_check, y_check = torch.tensor([10, 500, 999, 200]), torch.tensor([3, 7, 0, 10])
with torch.no_grad():
    by_hand = cond_model.time_embedding(t_check) + table[y_check]
    print("embed(t, y) = TimeEmbedding(t) + E[y]:", torch.allclose(cond_model.embed(t_check, y_check), by_hand))
    print("no label is the null row:", torch.equal(cond_model.embed(t_check), cond_model.embed(t_check, torch.full((4,), 10))))

# %% [markdown]
# **One network, eleven models.** Three starting noises $x_T$ (rows), each sampled with every label $y = 0, \dots, 9$ and with the null class
# $\varnothing$ (columns): the same $x_T$, the same 20 DDIM steps (lesson 6), only the row of the table changes. The course's clean
# classifier (`lesson_lib.evaluation.judges`, trained on real digits) then reads each sample.

# %%
# NBVAL_IGNORE_OUTPUT
# (a progress bar)
y_all = torch.arange(11).repeat(3)                          # 0..9, then 10 = the null class, for each x_T
x_T = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3)).repeat_interleave(11, dim=0)
digits = ddim_sample(cond_model, cond_schedule, x_T=x_T, steps=20, clip_x0=True, model_kwargs={"y": y_all})

# %%
show_grid(digits.view(3, 11, 1, 28, 28), row_labels=[f"$x_T$ no. {i + 1}" for i in range(3)],
          col_labels=[f"y = {k}" for k in range(10)] + ["y = ∅"], col_title="label given to the model",
          title="mnist_cond: the same x_T in each row, one label per column", figsize=(11, 3.6))

# %%
# NBVAL_IGNORE_OUTPUT
# (a sample near a class boundary could be read differently on another CPU; the verdict below is checked)
read, confidence = classify(digits, "mnist")
asked = y_all < 10
print(f"labels 0-9: the classifier reads the asked-for digit in {(read[asked] == y_all[asked]).sum()} of {asked.sum()} samples "
      f"(median confidence {confidence[asked].median():.2f})")
for i in ((read != y_all) & asked).nonzero().flatten().tolist():
    print(f"  x_T no. {i // 11 + 1}, y = {y_all[i]}: read as a {read[i]}")
print("with the null class it reads:", read[~asked].tolist(), "with confidence", [round(c, 2) for c in confidence[~asked].tolist()])

# %%
print("the asked-for digit in at least 27 of the 30 labelled samples:", bool((read[asked] == y_all[asked]).sum() >= 27))

# %% [markdown]
# Down each column the digit is the one asked for; along each row something of $x_T$ stays, such as the thickness of the
# strokes (thin in the second row, thick in the third). The classifier reads the asked-for digit in 28 of the 30 labelled
# samples; the two it reads otherwise, both in the first row, are a 3 that it takes for a 5 and a 7 that it
# takes for a 9. The null class asks for no digit in particular (a sample of $p(x)$), and the classifier is unsure of all three
# (confidence below 0.5). The network has less to go on without a label, and it learned that task from a tenth of its
# training examples. Lesson 5 puts the two predictions together.
#
# ## 6. Where the parameters are
#
# `parameter_table` counts the parameters of each part. The `ddpm_cifar10` preset is the paper's CIFAR-10 model ($\text{ch} = 128$, multipliers
# (1, 2, 2, 2), 2 ResBlocks per level, attention at 16x16): Ho et al. report 35.7M parameters.

# %%
tables = {name: dict(parameter_table(unet_preset(name))) for name in PRESETS}
print(f"{'part':<18}" + "".join(f"{name:>16}" for name in tables))
for part in tables["mnist"]:
    print(f"{part:<18}" + "".join(f"{table[part]:>16,}" for table in tables.values()))
total = tables["ddpm_cifar10"]["total"]
print(f"\nddpm_cifar10: {total / 1e6:.1f}M parameters (the paper: 35.7M)")
assert total == 35_746_307

# %% [markdown]
# The up path holds more than half of every model: it has one more ResBlock per level than the down path, and its blocks read the wider,
# concatenated inputs. Halving the width (`cifar10` against `ddpm_cifar10`) divides the parameters by about 4, since a convolution's weights
# grow with the product of its input and output channels.
#
# ## 7. What do attention and the skips buy? A short measured run
#
# Claims about architecture are cheap; let us measure. We train three tiny U-Nets on MNIST for the same number of steps with the same
# `Trainer`, the same batches, timesteps and noise (same seed):
#
# * **full**: 16 base channels, levels 28x28, 14x14, 7x7, one ResBlock per level, attention at 7x7 and in the middle;
# * **no attention**: the same without any attention block (`use_attention=False`);
# * **no skips**: the same without skip connections (`use_skips=False`): the up path sees only what comes up from the bottleneck.
#
# We compare $L_\text{simple}$ on a **fixed held-out batch**: 256 test digits, timesteps spread evenly over $0..999$, and one fixed draw of
# $\varepsilon$, so that the three numbers differ only by the networks.
#
# **The data.** If the environment variable `DDPM_DATA_DIR` points to a local copy of the datasets (as in our automated tests), MNIST is read
# from there; otherwise `lesson_lib.data.images.load_mnist` downloads it once with torchvision (about 12 MB, into `~/.cache/lesson_lib`). If you are
# offline and have no local copy, the cell below stops with an error that explains both options.
#
# **The length.** Each model trains 150 steps of 32 images: about 15 seconds on two CPU cores, and the same run on every machine, so the
# numbers below are what you will see. That is enough to see large effects, not small ones; change `steps` to train longer (see the
# discussion at the end).

# %%
steps = 150
device = default_device()
train_images, _ = load_mnist("train", as_uint8=True)
train_images = train_images[:10_000]
test_images, _ = load_mnist("test")
schedule = NoiseSchedule.linear(1000)

g = torch.Generator().manual_seed(0)                       # the fixed held-out batch
x0_test = test_images[:256]
t_test = torch.linspace(0, 999, 256).round().long()
eps_test = torch.randn(x0_test.shape, generator=g)

tiny = dict(in_channels=1, image_size=28, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
            attention_resolutions=(7,), dropout=0.0)
variants = {"full": {}, "no attention": {"use_attention": False}, "no skips": {"use_skips": False}}
print(f"{steps} steps of batch 32 on {len(train_images):,} training digits")
for name, change in variants.items():
    torch.manual_seed(0)
    print(f"{name:<14}{sum(p.numel() for p in UNet(**tiny, **change).parameters()):>9,} parameters")
c, h, w = bottleneck(UNet(**tiny))
print(f"bottleneck of these models: {h}x{w}x{c} = {h * w * c:,} numbers, for 28x28 = 784 pixels")

# %%
# NBVAL_IGNORE_OUTPUT
# (timings)
trainers = {}
for name, change in variants.items():
    torch.manual_seed(0)
    config = TrainConfig(batch_size=32, lr=2e-3, warmup_steps=20, log_every=10, seed=0)
    trainers[name] = Trainer(UNet(**tiny, **change), train_images, LSimple(schedule), config, device=device)
    start = time.perf_counter()
    trainers[name].run(steps, progress=False)
    print(f"{name:<14} trained in {time.perf_counter() - start:.0f} s")


# %%
# NBVAL_IGNORE_OUTPUT
# (exact losses vary slightly between CPUs; the verdicts below are checked)
def held_out(model):
    """L_simple per test example, for the fixed (x0, t, eps)."""
    model.eval()
    x0, t, eps = x0_test.to(device), t_test.to(device), eps_test.to(device)
    with torch.no_grad():
        eps_hat = model(q_sample(schedule.to(device), x0, t, eps), t)
    return ((eps_hat - eps) ** 2).mean(dim=(1, 2, 3)).cpu()


per_example = {name: held_out(trainer.model) for name, trainer in trainers.items()}
loss = {name: values.mean().item() for name, values in per_example.items()}
for name, value in loss.items():
    print(f"{name:<14} held-out L_simple = {value:.4f}   ({value / loss['full']:.2f} x full)")
torch.testing.assert_close(loss["full"], l_simple(trainers["full"].model, schedule.to(device), x0_test.to(device),
                                                  t_test.to(device), eps_test.to(device)).item())

# %%
bins = 8                                   # t_test is sorted: split it into 8 ranges of timesteps
centers = t_test.view(bins, -1).float().mean(dim=1)
fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
for name, trainer in trainers.items():
    s, l = zip(*trainer.history)
    axes[0].plot(s, l, label=name)
    axes[1].plot(centers, per_example[name].view(bins, -1).mean(dim=1), "o-", label=name)
axes[0].set(yscale="log", xlabel="step", ylabel="training loss (mean over 10 steps)", title="training")
axes[1].set(yscale="log", xlabel="timestep t", ylabel="held-out L_simple", title="held-out loss by timestep")
for ax in axes:
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# What the networks make of one noisy input: from $\hat\varepsilon$ we can compute the network's estimate of the clean image,
# $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$ (lesson 1). Below, six test digits at $t = 200$ (the paper's $t = 201$).

# %%
x0 = test_images[:6].to(device)
t = torch.full((6,), 200, device=device)
x_t = q_sample(schedule.to(device), x0, t, torch.randn(x0.shape, generator=g).to(device))
rows = [x0, x_t]
with torch.no_grad():
    for trainer in trainers.values():
        rows.append(x0_from_eps(schedule.to(device), x_t, t, trainer.model(x_t, t)).clamp(-1, 1))
show_images(torch.cat(rows).cpu(), nrow=6, figsize=(7.5, 6.6), row_labels=["x0", "x_t", *trainers],
            suptitle="clean digits, noisy inputs (t = 200), and each model's estimate of x0")

# %%
ratio_skips = loss["no skips"] / loss["full"]
ratio_attention = loss["no attention"] / loss["full"]
print("removing the skips raises the held-out loss by more than 1.5x:", ratio_skips > 1.5)
print("removing attention changes it by less than 10%:", abs(ratio_attention - 1) < 0.1)
assert ratio_skips > 1.5

# %% [markdown]
# **What we measured, and what we did not.**
#
# * **Skips.** Without skip connections the held-out loss is several times higher, at every timestep: 4.61x in the run stored here,
#   and 3.72x, 3.96x and 4.04x with seeds 1, 2 and 3 (the same code run separately on a 2-core CPU). The gap is
#   largest at large $t$: there $x_t$ is almost pure noise and the best prediction of $\varepsilon$ is close to $x_t$ itself. The full
#   U-Net passes its input through the skips; the one without them has to carry a 28x28 pattern of noise through the 7x7 bottleneck,
#   and at $t = 200$ its estimate $\hat x_0$ keeps visible noise. Room is not what it lacks: the bottleneck holds 7x7x32 = 1,568
#   numbers (printed above), twice the 784 pixels. What it lacks is the learned encoding and decoding that the skips make
#   unnecessary, and 150 steps do not teach it. With longer training the gap shrinks: after 400 steps it was 1.73x and 1.64x (seeds 0 and 1).
# * **Attention.** In this short run on MNIST, removing attention changes the loss by a few percent at most (1.02x here, 1.01x to
#   1.04x with seeds 1 to 3), less than the full model's own loss varies between the four seeds (0.0425 to 0.0455). That does **not** show that attention is useless: MNIST digits are small and simple, the runs are short, and a loss on a
#   batch does not measure the global coherence of samples that attention is meant to help with. Ho et al. use attention at 16x16 but do not
#   report an ablation of it; we do not claim a number here either.
#
# ## Summary
#
# * The **sinusoidal embedding** gives every timestep a code that is close for nearby $t$ and distinct for distant ones; an MLP and a
#   per-block linear layer bring it into every ResBlock as a per-channel shift.
# * **ResBlocks** (GroupNorm, SiLU, two 3x3 convolutions, residual connection, zero-initialised last layer) do the local work.
# * **Downsampling** gives the convolutions their reach; **self-attention** adds mixing chosen by the content, every position with
#   every other in one step, at a cost quadratic in the number of positions, so only at low resolution.
# * **Skip connections** carry detail past the bottleneck; removing them hurts a lot, even in a run of a few seconds.
# * **The class label** enters like $t$: a learned row $E[y]$ added to the time embedding, with one more row for "no label" (the null
#   class). Label dropout trains one network for $p(x \mid y)$ and $p(x)$.
# * The paper's CIFAR-10 model has 35,746,307 parameters; most of them sit in the up path.
#
# **Next:** lesson 4 trains the `mnist` and `cifar10` presets, class-conditional (section 5), with the full training loop.
