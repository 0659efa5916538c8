# %% [markdown]
# # Lesson 12 · Exercises: cascaded diffusion
#
# A cascade (Ho et al., 2021, Cascaded Diffusion Models) splits generation in two: a base model samples a small
# image, and a super-resolution (SR) model samples the large image conditioned on it. The SR model is trained on
# low-resolution images made from real ones, but at sampling time it is given the base model's samples, which differ
# from real ones. *Conditioning augmentation* (Sec. 4.1) noises the low-resolution image with the forward process, in
# training and in sampling, so that the SR model cannot rely on the fine detail where the two differ.
#
# Three exercises, about an hour: making the low-resolution image (area downsampling), the Gaussian conditioning
# augmentation, and the input the SR network reads. The checks you can run use MNIST test digits and an untrained,
# tiny SR U-Net built with a fixed seed. Runtime: a few seconds.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from lesson_lib.course import feedback

from lesson_lib.data.images import load_mnist
from lesson_lib.diffusion import cascade as library
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.models.unet import SuperResUNet


# %% [markdown]
# ## 1 · Area downsampling
#
# The SR model learns from pairs: a real image $x$ of size $H \times W$ and its low-resolution version. The course
# makes the low-resolution image by *area* downsampling: with a factor $f$, output pixel $(i, j)$ is the mean of the
# $f \times f$ block of pixels it covers,
#
# $$x^{\text{low}}_{c,\,i,\,j} = \frac{1}{f^2} \sum_{a=0}^{f-1} \sum_{b=0}^{f-1} x_{c,\; f i + a,\; f j + b} .$$
#
# Every pixel belongs to exactly one block, so the image's mean is kept, and a constant image stays that constant.
# Write `area_downsample(x, factor=2)`: `x` is `(B, C, H, W)` with `H` and `W` divisible by `factor`; return
# `(B, C, H / factor, W / factor)` in `x`'s dtype. One reshape that splits each side into (blocks, pixels within a
# block) and one mean do it, with no loop.

# %%
def area_downsample(x, factor=2):
    """Area downsampling: each factor x factor block of x (B, C, H, W) becomes its mean (the low-resolution
    training images of a cascade's SR stage, Ho et al., 2021, Sec. 3)."""
    ### BEGIN SOLUTION
    B, C, H, W = x.shape
    return x.reshape(B, C, H // factor, factor, W // factor, factor).mean(dim=(3, 5))
    ### END SOLUTION


# %% [markdown]
# A check you can run: eight test digits, 28 x 28, to 14 x 14. At factor 2, bilinear interpolation to half the size
# (`align_corners=False`, no antialiasing) reads each output pixel at the centre of its 2 x 2 block, halfway between
# four pixels, which is their mean: the same as area downsampling. At factor 4 it reads only the two middle pixels of
# each row and column of a block, and the two differ.

# %%
digits = load_mnist("test")[0][:8]
low = area_downsample(digits)
print("digits", tuple(digits.shape), "-> low", tuple(low.shape), "| the library agrees:",
      torch.allclose(low, library.downsample(digits), atol=1e-6))
print("mean kept:", torch.allclose(low.mean((2, 3)), digits.mean((2, 3)), atol=1e-6))
for f in (2, 4):
    bilinear = F.interpolate(digits, size=(28 // f, 28 // f), mode="bilinear", align_corners=False)
    print(f"factor {f}: largest difference to bilinear {(area_downsample(digits, f) - bilinear).abs().max():.2f}")
feedback.check("12", "area_downsample", globals())  # what the grader will say about it


# %% [markdown]
# ## 2 · Gaussian conditioning augmentation
#
# The SR model is conditioned on $z$, the low-resolution image noised by the forward process $q(x_k \mid x_0)$ of
# Ho et al. (2020, Eq. 4) at a level $s \in [0, 1]$ (CDM Sec. 4.1):
#
# $$z = \sqrt{\bar\alpha_k}\, x^{\text{low}} + \sqrt{1 - \bar\alpha_k}\, e, \qquad e \sim \mathcal N(0, I),
#   \qquad k = \operatorname{round}(s\, T).$$
#
# The level $s$ is a fraction of the SR model's schedule of $T$ steps: on the course's linear schedule with
# $T = 1000$, $s = 0.2$ is $k = 200$. The levels come from `schedule.alpha_bars_with_0`, which starts with
# $\bar\alpha_0 = 1$ (the clean image): it holds $T + 1$ numbers and entry $k$ is $\bar\alpha_k$. So $s = 0$ is
# exactly the identity, no noise added. As the forward process, the augmentation preserves variance: for $x^{\text{low}}$
# of variance $v$ and independent $e$, $\operatorname{Var}(z) = \bar\alpha_k v + 1 - \bar\alpha_k$. The network is told
# $k$, so it knows how much of what it sees is noise.
#
# Write `augment(x_low, level, alpha_bars, e)`: `x_low` and `e` are `(B, C, h, w)`, `alpha_bars` is
# `alpha_bars_with_0` (float64, length $T + 1$, so $T$ = `len(alpha_bars) - 1`), and `level` is a number, one level for
# the whole batch, or a `(B,)` tensor, one level per sample (over all its channels and pixels). The noise `e` is
# given, so the answer is determined. Compute in float64 and return $z$ in `x_low`'s dtype.

# %%
def augment(x_low, level, alpha_bars, e):
    """Gaussian conditioning augmentation (Ho et al., 2021, Sec. 4.1): z = sqrt(ab_k) x_low + sqrt(1 - ab_k) e,
    k = round(s T), with alpha_bars = alpha-bar_0 = 1, ..., alpha-bar_T; level a number or a (B,) tensor."""
    ### BEGIN SOLUTION
    T = len(alpha_bars) - 1
    k = torch.round(torch.as_tensor(level, dtype=torch.float64) * T).long()
    a = alpha_bars[k].reshape(-1, *[1] * (x_low.ndim - 1))       # one level per sample, or one for all
    return (a.sqrt() * x_low + (1 - a).sqrt() * e).to(x_low.dtype)
    ### END SOLUTION


# %% [markdown]
# A check you can run: the 10,000 test digits at 14 x 14 augmented at four levels with the same $e$; the variance of
# $z$ over their 1.96 million pixels against $\bar\alpha_k v + 1 - \bar\alpha_k$. The library's `augment` draws $e$ from
# a generator; given the same draw, it gives the same $z$. Last, one level per sample, on the eight digits.

# %%
schedule = NoiseSchedule.linear(1000)
alpha_bars = schedule.alpha_bars_with_0
low_all = area_downsample(load_mnist("test")[0])
e_all = torch.randn(low_all.shape, generator=torch.Generator().manual_seed(3))
v = low_all.double().var()
for s in (0.0, 0.1, 0.2, 0.5):
    z = augment(low_all, s, alpha_bars, e_all)
    a = alpha_bars[round(s * 1000)]
    print(f"s = {s}: k = {round(s * 1000):3d}, alpha-bar_k = {a:.3f}, Var(z) = {z.double().var():.3f}, "
          f"alpha-bar_k v + 1 - alpha-bar_k = {a * v + 1 - a:.3f}, z = x_low exactly: {torch.equal(z, low_all)}")
e = torch.randn(low.shape, generator=torch.Generator().manual_seed(1))
z_library, k = library.augment(low, 0.2, schedule, torch.Generator().manual_seed(1))
print("the library agrees at s = 0.2:", torch.allclose(augment(low, 0.2, alpha_bars, e), z_library, atol=1e-6))
levels = torch.linspace(0, 0.7, 8, dtype=torch.float64)
print("one level per sample:", all(torch.equal(augment(low, levels, alpha_bars, e)[b],
                                               augment(low[b:b + 1], float(levels[b]), alpha_bars, e[b:b + 1])[0])
                                   for b in range(8)))
feedback.check("12", "augment", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · The SR network's input
#
# The SR network denoises $x_t$, the high-resolution image at step $t$ of its own chain, and reads the
# low-resolution image as extra channels: $z$ is upsampled to $x_t$'s size by bilinear interpolation
# (`align_corners=False`, pixel centres at half-integers, as `lesson_lib.diffusion.cascade.upsample`) and
# concatenated after $x_t$ along the channels, so the first convolution of `SuperResUNet` reads $C_x + C_{\text{low}}$
# channels, $x_t$'s first. The same $z$ conditions every step of the chain: it is drawn once per sample, before the
# chain starts.
#
# Write `sr_model_input(x_t, z_low)`: `x_t` is `(B, C_x, H, W)`, `z_low` is `(B, C_low, h, w)` with $H / h$ and
# $W / w$ integers; return `(B, C_x + C_low, H, W)`.

# %%
def sr_model_input(x_t, z_low):
    """The input of the SR U-Net's first convolution (Ho et al., 2021, Sec. 3): concat(x_t, upsample(z_low)) along
    the channels, z_low upsampled to x_t's size bilinearly with align_corners=False."""
    ### BEGIN SOLUTION
    up = F.interpolate(z_low, size=tuple(x_t.shape[2:]), mode="bilinear", align_corners=False)
    return torch.cat([x_t, up], dim=1)
    ### END SOLUTION


# %% [markdown]
# A check you can run: the digits noised to $t = 300$ of the SR schedule, and $z$ at $s = 0.2$. A tiny untrained
# `SuperResUNet` (fixed seed) is called as a sampler calls it; a hook on its first convolution records what it reads,
# which must be your input. Area downsampling does not undo the upsampling: bilinear interpolation mixes each pixel
# with its neighbours, so `area_downsample` of the upsampled $z$ is not $z$ (on a noisy $z$, far from it), though
# each image's mean is kept.

# %%
t = torch.full((8,), 300)                                      # code timestep 300 of the SR model's schedule
a_t = schedule.alpha_bars[t].float().view(-1, 1, 1, 1)
x_t = a_t.sqrt() * digits + (1 - a_t).sqrt() * torch.randn(digits.shape, generator=torch.Generator().manual_seed(2))
z = augment(low, 0.2, alpha_bars, e)
net_input = sr_model_input(x_t, z)
torch.manual_seed(0)
sr = SuperResUNet(in_channels=1, image_size=28, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                  attention_resolutions=(), dropout=0.0)
seen = {}
sr.conv_in.register_forward_hook(lambda module, inputs, output: seen.update(x=inputs[0]))
with torch.no_grad():
    sr(x_t, t, low_res=library.upsample(z, 28), aug_level=torch.full((8,), 200))
print("SR input", tuple(net_input.shape), "| the network's first convolution reads it:", torch.equal(seen["x"], net_input))
back = area_downsample(net_input[:, 1:])
print(f"area_downsample(upsampled z) - z: largest difference {(back - z).abs().max():.2f}, "
      f"mean kept: {torch.allclose(back.mean((2, 3)), z.mean((2, 3)), atol=1e-5)}")
feedback.check("12", "sr_model_input", globals())  # what the grader will say about it

# %% [markdown]
# The stages of one digit: the 28 x 28 image, its 14 x 14 version, $z$ at $s = 0.2$ ($\bar\alpha_{200} = 0.659$: the
# digit scaled by 0.81 under noise of standard deviation 0.58, already hard to make out), and the two channels the SR
# network reads: $x_t$ at $t = 300$ and $z$ upsampled to 28 x 28, blurred by the bilinear interpolation.

# %%
panels = [(digits[0, 0], "digit, 28 x 28"), (low[0, 0], "area_downsample, 14 x 14"), (z[0, 0], "z at s = 0.2"),
          (net_input[0, 0], "SR input 0: x_t, t = 300"), (net_input[0, 1], "SR input 1: z upsampled")]
fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
for ax, (image, title) in zip(axes, panels):
    shown = ax.imshow(image, cmap="gray", vmin=-1.5, vmax=1.5)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("column (pixels)")
axes[0].set_ylabel("row (pixels)")
fig.colorbar(shown, ax=axes, shrink=0.8, label="pixel value")
plt.show()
