# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/10_latent_diffusion.ipynb)
#
# # Lesson 10 — Latent diffusion: compress first, then diffuse
#
# Every model so far denoised pixels. A 28×28 digit has 784 of them, and the U-Net of lesson 3 runs its convolutions
# over every one at every step of training and sampling. Most of what those pixels hold is not what a digit *is*: the
# exact softness of an edge, the grey level of a stroke's rim. **Latent diffusion** (Rombach, Blattmann, Lorenz,
# Esser & Ommer 2022) splits the work in two. An **autoencoder** learns once to compress an image into a small latent and
# back, keeping what the eye needs; then a diffusion model learns the distribution of the latents, which is smaller
# and cheaper to model, and its samples are decoded. This is how Stable Diffusion and most of today's image and video
# generators are built.
#
# | part | what runs | runtime, 2-core CPU, one thread |
# |---|---|---|
# | section 1: what a pixel U-Net pays, counted | one forward pass of two U-Nets under a FLOP counter | seconds |
# | section 2: the shipped autoencoder `mnist_autoencoder`: shapes, latents, reconstructions | encoding and decoding a few digits | seconds |
# | section 3: its objective, the reconstruction error and a small KL, trained live on a tiny autoencoder | 300 steps of a tiny autoencoder through the course's Trainer | about 30 s |
# | section 4: the scale factor, and why the latents must have unit variance | encoding 10,000 training digits | about 10 s |
# | section 5: the shipped latent diffusion model `mnist_latent`: samples, guidance, and why $\hat x_0$ is never clipped | 100 guided and 2 × 500 unguided latent samples of 50 DDIM steps, decoded; FID of the 500s | about 40 s |
# | section 6: what latent diffusion buys, measured | read from the models' cards and `docs/latent_table.json` (`benchmarks/latent.py`, not run here) | — |
# | section 8: colour, the shipped `cifar10_autoencoder` and `cifar10_latent` | 10 CIFAR-10 images reconstructed; 80 guided latent samples of 25 DDIM steps, decoded; the rest from their cards | 10–20 s |
# | the whole notebook | | `ci` (the stored outputs): as its last cell prints |
#
# **Study time:** about 1 h 15 min of reading, and about 1 h for the exercise (`exercises/10_latent_diffusion.ipynb`).
#
# Library: `lesson_lib.models.autoencoder` (`AutoencoderKL`), `lesson_lib.diffusion.latent` (`kl_to_standard_normal`,
# `AutoencoderLoss`), `lesson_lib.data.latents` (`encode_means`, `scale_factor`, `encode_dataset`, `latent_decoder`),
# `lesson_lib.pretrained.load_autoencoder`; the recipes `mnist_autoencoder` and `mnist_latent`, `cifar10_autoencoder` and
# `cifar10_latent`.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import json
import time

import matplotlib.pyplot as plt
import torch

from lesson_lib.course.colab import course_file
from lesson_lib.course.plotting import show_grid
from lesson_lib.data.images import load_dataset, uint8_to_float
from lesson_lib.data.latents import encode_dataset, encode_means, latent_decoder, scale_factor
from lesson_lib.diffusion.guidance import ClassifierFreeGuidance
from lesson_lib.diffusion.latent import AutoencoderLoss, kl_to_standard_normal
from lesson_lib.evaluation.fid import compute_metrics, real_floor
from lesson_lib.evaluation.judges import class_accuracy
from lesson_lib.evaluation.metrics import psnr
from lesson_lib.models.autoencoder import autoencoder_preset
from lesson_lib.pretrained import load_autoencoder, load_pretrained, model_card
from lesson_lib.sample import generate
from lesson_lib.training.profiles import current_profile
from lesson_lib.training.trainer import TrainConfig, Trainer

torch.set_num_threads(1)
profile = current_profile()
print("profile:", profile)
started = time.time()
train_images, train_labels, _ = load_dataset("mnist", "train", as_uint8=True)
test_images, test_labels, _ = load_dataset("mnist", "test", as_uint8=True)

# %% [markdown]
# ## 1. What a pixel U-Net pays
#
# A convolution costs in proportion to the pixels it slides over. The course's MNIST U-Net (`mnist_cond`) works at
# 28×28, 14×14 and 7×7 with widths 32, 64 and 64. The latent model of this lesson keeps only its innermost level: one
# level of width 64 at 7×7, on a latent of 7×7×4 (four numbers per position instead of one). Counted by torch's FLOP
# counter, one forward pass each, batch of one:

# %%
pixel_model, schedule = load_pretrained("mnist_cond")
latent_model, _ = load_pretrained("mnist_latent")

# model.forward_gflops(): one forward pass on one example under torch's FLOP counter (a multiply-add counts 2,
# attention included)
rows = [("pixel U-Net (mnist_cond)", pixel_model, (1, 28, 28)), ("latent U-Net (mnist_latent)", latent_model, (4, 7, 7))]
print(f"{'model':<28} {'input':>8} {'parameters':>11} {'GFLOPs / forward':>17}")
cost = {}
for name, model, shape in rows:
    cost[name] = model.forward_gflops()
    size = "x".join(map(str, shape))
    print(f"{name:<28} {size:>8} {sum(p.numel() for p in model.parameters()):>11,} {cost[name]:>17.3f}")
print(f"the latent U-Net costs {cost[rows[0][0]] / cost[rows[1][0]]:.1f}x less per forward pass")

# %% [markdown]
# Sampling with 50 DDIM steps and classifier-free guidance calls the network 100 times per image; training calls it
# once per image per step, and backpropagation costs about twice the forward pass again. Whatever runs on the latent
# pays the smaller figure. The autoencoder's decoder runs once per sample, at the end.

# %% [markdown]
# ## 2. The autoencoder: 784 numbers to 196 and back
#
# `mnist_autoencoder` (recipe `lesson_lib.recipes.autoencoder`) is a small convolutional autoencoder: ResBlocks and
# two stride-2 convolutions take a digit from 28×28×1 to 7×7×4 (the downsampling factor $f = 4$, $c = 4$ channels);
# the decoder mirrors it with nearest-neighbour upsampling. The encoder returns a *distribution*, a diagonal Gaussian
# $q(z \mid x) = \mathcal N(\mu(x), \operatorname{diag}\sigma^2(x))$, as a variational autoencoder's does.

# %%
autoencoder, scale = load_autoencoder("mnist_autoencoder")
card = autoencoder.card
print(f"parameters: {card['parameters']:,}   latent shape (c, h, w): {tuple(autoencoder.latent_shape)}")
x = uint8_to_float(test_images[:8])
with torch.no_grad():
    mean, logvar = autoencoder.encode(x)
    reconstruction = autoencoder.decode(mean).clamp(-1, 1)
print(f"images {tuple(x.shape)} -> means {tuple(mean.shape)} and log-variances {tuple(logvar.shape)} -> "
      f"reconstructions {tuple(reconstruction.shape)}")
print("PSNR of these 8 reconstructions (dB):", [round(v, 1) for v in psnr(reconstruction, x).tolist()])

# %%
channels = [(mean[:, k:k + 1] / mean.abs().amax()).clamp(-1, 1) for k in range(4)]
latent_rows = torch.stack([x, *[torch.nn.functional.interpolate(c, size=28, mode="nearest") for c in channels],
                           reconstruction])
show_grid(latent_rows, row_labels=["original", "latent ch 0", "latent ch 1", "latent ch 2", "latent ch 3",
                                   "decoded"],
          title="mnist_autoencoder: 8 test digits, their 7x7x4 latent means (grey = 0) and the decoded means")

# %% [markdown]
# The latent is not a small picture of the digit in one channel: the four channels share the work, each a 7×7 map with
# the digit's layout still visible (convolutions keep space). The decoded means are hard to tell from the originals.
# Over 2,000 test digits the card measures:

# %%
e = card["evaluation"]
print(f"PSNR {e['psnr_db']:.1f} dB over n = {e['n']:,} test digits")
print(f"reconstruction FID {e['reconstruction_fid']:.3f} against the real-data floor {e['fid_floor_train_vs_test']:.3f} "
      f"(train against test digits, the same n = {e['n']:,}, features {e['feature_network']})")

# %% [markdown]
# **The reconstruction FID is the floor of every latent model decoded by this autoencoder.** A perfect latent diffusion
# model would sample exactly the latents of real digits, and its decoded samples would be reconstructions: this FID.
# Here it is at the real-data floor (the autoencoder loses nothing the feature network sees), so the latent model is
# not held back by its first stage. Rombach et al. call this split *perceptual* compression (the autoencoder drops what
# is imperceptible) and *semantic* compression (the diffusion model learns what the digits are); an autoencoder that
# compresses too hard starts dropping semantics too, and the floor rises.

# %% [markdown]
# ## 3. Training the autoencoder: reconstruction plus a small KL
#
# The autoencoder is trained on
#
# $$\mathcal L(x) = \sum_\text{pixels} \big(x - D(z)\big)^2 + \lambda\,\mathrm{KL}\big(q(z\mid x)\,\|\,\mathcal N(0, I)\big),
# \qquad z = \mu(x) + \sigma(x)\odot e,\quad e \sim \mathcal N(0, I),$$
#
# with the KL of two Gaussians in closed form, per latent element (Kingma & Welling 2014, Appendix B):
#
# $$\mathrm{KL}\big(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(0, 1)\big) = \tfrac12\big(\mu^2 + \sigma^2 - 1 - \log\sigma^2\big).$$
#
# Decoding a *sample* $z$ rather than the mean, through the reparameterisation $z = \mu + \sigma e$, lets the gradient
# reach $\mu$ and $\sigma$. With $\lambda = 1$ this is, up to constants, a VAE's negative ELBO for a Gaussian decoder of fixed variance; latent diffusion
# takes $\lambda = 10^{-6}$ (the reference's value). The KL is not there to make $q(z)$ a standard normal one could
# sample: that is the diffusion model's job. Its $-\log\sigma^2$ keeps $\sigma$ away from zero, so the decoder learns to
# map nearby latents to nearby images; its $\mu^2$ pulls the latents' scale gently towards 1. The closed form, checked
# against a Monte Carlo estimate $\mathbb E_q[\log q(z) - \log p(z)]$:

# %%
mu, log_var = torch.tensor([0.0, 0.0, 1.5, -0.3]), torch.tensor([0.0, -2.0, 0.0, 1.0])
closed = kl_to_standard_normal(mu, log_var)
g = torch.Generator().manual_seed(0)
z = mu + (0.5 * log_var).exp() * torch.randn(200_000, 4, generator=g)
log_q = torch.distributions.Normal(mu, (0.5 * log_var).exp()).log_prob(z)
log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z)
print("mu      ", [round(v, 2) for v in mu.tolist()])
print("log var ", [round(v, 2) for v in log_var.tolist()])
print("KL, closed form:", [round(v, 3) for v in closed.tolist()])
print("KL, Monte Carlo:", [round(v, 2) for v in (log_q - log_p).mean(0).tolist()], "(200,000 draws)")

# %% [markdown]
# Zero only at $\mu = 0, \sigma = 1$; a shift costs $\mu^2/2$, a narrower or wider posterior costs through
# $\sigma^2 - 1 - \log\sigma^2$. How much the shipped autoencoder's posterior spreads, in units of the latents' own
# spread, its card records:

# %%
print(f"posterior sigma / latent std = {e['posterior_sigma_over_latent_std']:.4f}")

# %% [markdown]
# At $\lambda = 10^{-6}$ the posterior is almost a point: $\sigma$ is 0.2% of the latents' spread. That is why the
# latent data path encodes the posterior **mean** once and keeps it (`encode_dataset`): a sample would differ from the
# mean by a fraction of a percent.
#
# The autoencoder trains through the same Trainer as every diffusion model of the course: `AutoencoderLoss` is an
# objective without a noise schedule. A tiny one (width 8) on 2,000 digits for 300 steps, live:

# %%
# NBVAL_IGNORE_OUTPUT
# (the progress bar's speed varies from machine to machine)
torch.manual_seed(0)
tiny = autoencoder_preset("mnist", base_channels=8)
trainer = Trainer(tiny, train_images[:2000], AutoencoderLoss(kl_weight=1e-6),
                  TrainConfig(batch_size=32, lr=2e-3, warmup_steps=20, ema_decay=0.9, seed=0, log_every=25))
trainer.run(300)

# %%
steps = [step for step, _ in trainer.history]
losses = [loss for _, loss in trainer.history]
with torch.no_grad():
    tiny_reconstruction = trainer.model.eval().decode(trainer.model.encode(x)[0]).clamp(-1, 1)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(steps, losses, marker="o")
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("loss per pixel (squared error + KL)")
ax.set_title("a tiny autoencoder (width 8) trained for 300 steps")
fig.tight_layout()
plt.show()
print(f"loss per pixel: {losses[0]:.2f} at step {steps[0]}, {losses[-1]:.2f} at step {steps[-1]}")
print(f"PSNR of the 8 test digits after 300 steps: {psnr(tiny_reconstruction, x).mean():.0f} dB "
      f"(the shipped one, 12,000 steps of width 16: {psnr(reconstruction, x).mean():.0f} dB)")

# %%
show_grid(torch.stack([x, tiny_reconstruction, reconstruction]),
          row_labels=["original", "tiny, 300 steps", "shipped"],
          title="the same 8 test digits through a briefly trained and the shipped autoencoder")

# %% [markdown]
# Three hundred steps already give recognisable digits: a blurred version, because the squared error's best guess
# for an edge it cannot yet place exactly is its average. The shipped autoencoder trained 12,000 steps of batch 64
# (48 min on one CPU thread; its card has the time).

# %% [markdown]
# ## 4. The scale factor: give the diffusion model data of unit variance
#
# The forward process $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon$ was designed for data of
# about unit variance: the schedule decides how fast the signal drowns relative to noise of variance one. The KL is too
# weak to fix the latents' scale (at $\lambda = 10^{-6}$ the reconstruction decides it), so latent diffusion multiplies
# the latents by
#
# $$\text{scale factor} = \frac{1}{\operatorname{std}(z)}\qquad\text{over every element of every training latent},$$
#
# and divides samples by it before decoding. Stable Diffusion's 0.18215 is this number for its autoencoder. It must be
# the training set's std, not one batch's: the reference implementation takes it from the first batch, whose std
# differs from the set's by its sampling error and by whatever that batch happens to hold.

# %%
means = encode_means(autoencoder, train_images[:10_000])
by_class = means[train_labels[:10_000].argsort()]                 # a data order where one batch is not the set
print(f"1 / std over 10,000 training latents:              {scale_factor(means):.3f}")
print(f"1 / std over the whole training set (the card):    {scale:.3f}")
print(f"1 / std over one batch of 64, in the dataset order: {scale_factor(means[:64]):.3f}")
print(f"1 / std over one batch of 64, sorted by class:     {scale_factor(by_class[:64]):.3f}   (all zeros)")
print("std of each latent channel:", [round(v, 2) for v in means.transpose(0, 1).flatten(1).std(1).tolist()])
held_out = encode_dataset(autoencoder, test_images[:2000], scale=scale)
print(f"held-out latents times the training factor: std {held_out.data.std():.3f} over 2,000 test digits")

# %% [markdown]
# This autoencoder happens to produce latents with a std near 1 already (its factor is 1.06), so here the scale
# changes little. That is luck, not design: the channels' stds differ, and another autoencoder, or the same one with
# another seed or KL weight, lands elsewhere (Stable Diffusion's at std 5.5). What a wrong scale does, the signal-to-noise
# ratio shows. For data of std $s$, $\mathrm{SNR}(t) = s^2\,\bar\alpha_t / (1 - \bar\alpha_t)$: a factor $s^2$ at every
# $t$, the schedule shifted.

# %%
t = torch.arange(1000)
snr = schedule.snr                                   # alpha-bar_t / (1 - alpha-bar_t)
fig, ax = plt.subplots(figsize=(6, 3.4))
for s, label in ((1.0, "std 1 (scaled latents, or pixels)"), (1 / 0.18215, "std 5.5 (Stable Diffusion's latents, unscaled)"),
                 (0.25, "std 0.25")):
    ax.plot(t, (s ** 2 * snr).log10(), label=label)
ax.axhline(0, color="grey", lw=0.8, ls=":")
ax.set_xlabel("timestep t")
ax.set_ylabel("log10 signal-to-noise ratio")
ax.set_title("the same schedule on data of three scales")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
for s in (1.0, 1 / 0.18215, 0.25):
    half = int((s ** 2 * snr < 1).nonzero()[0])
    print(f"std {s:>4.2f}: signal and noise equal at t = {half:>3}; at t = T the signal is "
          f"{s * schedule.sqrt_alpha_bars[-1]:.3f} of the noise's std")

# %% [markdown]
# With latents of std 5.5, signal and noise are equal only at $t = 581$ instead of $t = 259$: a third of the timesteps
# that the schedule spends on coarse structure now see data that is mostly signal, and at $t = T$ six times more of
# the signal is left than sampling from pure noise assumes. With std 0.25 the opposite: signal and noise are equal
# already at $t = 73$. Scaling restores the schedule the course's models were designed for.

# %% [markdown]
# ## 5. Diffusion in the latent space
#
# `mnist_latent` (recipe `lesson_lib.recipes.latent`) is a U-Net trained with $L_\text{simple}$ on the scaled latents
# of the whole training set, exactly as `mnist_cond` was trained on pixels: the same schedule, the same label dropout
# (so classifier-free guidance works), the same Trainer; the data happen to be 7×7×4. Sampling is the course's one
# loop, then the decoder:
#
# ```python
# generate(latent_model, schedule, n, "ddim", 50, cond={"y": labels}, clip_x0=False,
#          decode=latent_decoder(autoencoder, scale))
# ```
#
# `clip_x0=False` matters. The pixel samplers clip $\hat x_0$ to $[-1, 1]$ at every step, because images live there.
# Latents do not: after scaling they have unit variance, and a third of their elements lie outside $[-1, 1]$.

# %%
scaled = means * scale
print(f"fraction of scaled training latent elements outside [-1, 1]: {(scaled.abs() > 1).float().mean():.2f}")
print(f"smallest and largest: {scaled.min():.1f}, {scaled.max():.1f}")

# %%
labels = torch.arange(10).repeat_interleave(10)
decode = latent_decoder(autoencoder, scale)
cfg = lambda denoise: ClassifierFreeGuidance(denoise, w=2.0)
guided = generate(latent_model, schedule, 100, "ddim", 50, cond={"y": labels}, seed=0, progress=False,
                  guidance=cfg, clip_x0=False, decode=decode).clamp(-1, 1)
show_grid(guided.view(10, 10, 1, 28, 28), row_labels=list(range(10)), row_title="class",
          title="mnist_latent: DDIM-50 in the 7x7x4 latent, guidance w = 2, decoded")

# %% [markdown]
# Now the same model without guidance, from the same latent noise twice: once as it should be sampled, once with
# $\hat x_0$ clipped to $[-1, 1]$ at every step as the pixel samplers do. 500 samples each (50 per class), measured:

# %%
labels_500 = torch.arange(10).repeat_interleave(50)
runs = {}
for name, clip in (("w = 0", False), ("w = 0, x0_hat clipped", True)):
    runs[name] = generate(latent_model, schedule, 500, "ddim", 50, cond={"y": labels_500}, seed=1, progress=False,
                          clip_x0=clip, decode=decode).clamp(-1, 1)
floor_500 = real_floor("mnist", 500)["fid"]
for name, x0 in runs.items():
    fid = compute_metrics(x0, dataset="mnist")["fid"]
    accuracy = class_accuracy(x0, labels_500, "mnist")["accuracy"]
    print(f"{name:<22} FID {fid:.2f} (floor {floor_500:.2f}, n = 500)   class accuracy {accuracy:.2f}")
show_grid(torch.stack([runs[k][labels_500 == 3][:8] for k in runs] + [guided[labels == 3][:8]]),
          row_labels=["w = 0", "w = 0, clipped", "w = 2"],
          title="class 3: the same latent noise sampled unclipped and clipped; guided samples below")

# %% [markdown]
# Clipping costs a factor of three in FID at this $n$ (2.15 against 0.61, with the real-data floor at 0.76: the
# unclipped samples are at the floor, and below it is noise at $n = 500$) and five points of class accuracy. The grid
# shows why: at every step a third of the latent's elements, those beyond $\pm 1$, are cut back, the decoder receives
# latents it never saw in training, and it answers with grainy strokes and a speckled background. The bottom row is
# the guided model of the grid above, unclipped: guidance makes the digits bolder and more alike.

# %% [markdown]
# ## 6. What latent diffusion buys, measured
#
# The shipped models' cards: both sampled with DDIM, FID on the course's MNIST features at $n = 2{,}000$ beside the
# real-data floor at the same $n$, class accuracy by the course's classifier (which took no part in training either).

# %%
pixel_card, latent_card = model_card("mnist_cond"), model_card("mnist_latent")
pe, le = pixel_card["evaluation"], latent_card["evaluation"]
print(f"{'model':<42} {'FID':>6} {'floor':>6} {'accuracy':>9}   training")
print(f"{'mnist_cond, pixels, DDIM-100, no guidance':<42} {pe['fid']:>6.3f} {pe['fid_floor_train_vs_test']:>6.3f} "
      f"{pe['class_accuracy']:>9.3f}   {pixel_card['examples_seen']:,} images, {pixel_card['wall_time_s'] / 60:.1f} min on one H200")
for w in ("0", "2"):
    g = le[f"guidance_{w}"]
    print(f"{'mnist_latent, latents, DDIM-50, w = ' + w:<42} {g['fid']:>6.3f} {le['fid_floor_train_vs_test']:>6.3f} "
          f"{g['class_accuracy']:>9.3f}   {latent_card['examples_seen']:,} images, "
          f"{latent_card['wall_time_s'] / 60:.0f} min on one CPU thread")
print(f"the autoencoder's reconstruction FID (the latent model's floor): {le['reconstruction_fid']:.3f}")

# %% [markdown]
# The pixel model is still the better sampler without guidance (FID 0.216 against 0.368, 96.9% against 91.7% class
# accuracy), after seeing a similar number of images with a network that works at full resolution. What changed is
# the price: the latent model trained in 45 minutes on one CPU thread, where the pixel model needed a GPU for the same
# number of images. With guidance $w = 2$ every latent sample is classified as its label (100%), at FID 0.714, the
# trade-off of lesson 5. Both stay above the autoencoder's reconstruction FID (0.191), as they must.

# %% [markdown]
# Against the factor $f$, `benchmarks/latent.py` measured the rest on one thread of this course's 2-core test machine
# (`docs/latent_table.json`; docs/benchmarks.md §12). The diffusion U-Nets are one family: the pixel U-Net, and the
# same network without its outer level ($f = 2$, 14×14×4) or its two outer levels ($f = 4$, 7×7×4, `mnist_latent`'s).
# The autoencoders of $f = 2$ and $f = 4$ trained 2,000 steps each with the same settings; the shipped one 12,000.

# %%
table = json.loads(course_file("docs/latent_table.json").read_text())
speed = {row["factor"]: row for row in table["speed"]["rows"]}
autoencoders = {row["factor"]: row for row in table["autoencoders"]["rows"]}
print(f"{'f':>2} {'latent':>8} {'PSNR':>8} {'rec. FID':>9} {'train img/s':>12} {'sample img/s':>13}")
for f in (1, 2, 4):
    a, v = autoencoders.get(f), speed[f]
    shape = "x".join(map(str, v["shape"]))
    quality = f"{a['psnr_db']:>6.1f}dB {a['reconstruction_fid']:>9.3f}" if a else f"{'-':>8} {'(floor)':>9}"
    print(f"{f:>2} {shape:>8} {quality} {v['train_images_per_s']:>9.0f} ({v['train_speedup']:>4.1f}x) "
          f"{v['sample_images_per_s']:>8.1f} ({v['sample_speedup']:>4.1f}x)")

# %% [markdown]
# Every autoencoder reconstructs at the real-data floor of the course's features (0.194 at $n = 2{,}000$, section 2):
# on MNIST the first stage costs nothing that the feature network sees, even at $f = 4$ with 4× fewer numbers than
# pixels; PSNR separates them. The speed follows the FLOPs of section 1 closely: training at $f = 4$ is 7.1× faster
# per image than at the pixels and sampling 7.0× (the forward pass costs 7.1× less), $f = 2$ sits between. Removing
# the U-Net's outer levels saves less than the 16× fewer positions suggest, because its innermost level, the one
# that stays, was already a large part of the pixel model's cost.
#
# The last comparison gives each route the same 15 minutes of training on one thread, from scratch, with
# `mnist_cond`'s settings, and measures 1,000 DDIM-50 samples without guidance:

# %%
generation = {row["factor"]: row for row in table["generation"]["rows"]}
for f, what in ((1, "pixels"), (4, "latents")):
    g = generation[f]
    print(f"{what:<8} {g['minutes']:.0f} min of training: {g['steps']:,} steps ({g['images_seen']:,} images), "
          f"FID {g['fid']:.2f} (floor {g['fid_floor']:.2f}, n = {g['n']:,}), class accuracy {g['class_accuracy']:.2f}")

# %% [markdown]
# In the same 15 minutes the latent model takes 5.7× as many steps, and its samples are far closer to the data (FID
# 0.93 against 5.62, class accuracy 0.85 against 0.70); neither is finished. This is latent diffusion's argument in
# one line: for the same compute the diffusion model sees many more examples, and the autoencoder's cost (48 minutes,
# once) is shared by every latent model trained on it.

# %% [markdown]
# ## 7. Other ways to regularise the latent: VQ
#
# The KL is one way to keep a latent well behaved. The other in Rombach et al. is **vector quantisation** (VQ-VAE, van
# den Oord et al. 2017; VQGAN, Esser et al. 2021): the encoder's output at each position is replaced by the nearest of
# $K$ learned codebook vectors, and the gradient passes the rounding unchanged (the straight-through estimator), with a
# commitment loss that keeps the encoder near its codes. The latent is then discrete in principle, bounded in scale
# (no scale factor needed), and the quantiser sits inside the decoder, so the diffusion model still works on the
# continuous pre-quantisation latent. Its costs are the codebook's own failure modes: codes that are never used
# ("codebook collapse") and a rounding error that the decoder must absorb. Rombach et al. report both kinds working; the
# KL kind is what Stable Diffusion uses, and what this course builds.

# %% [markdown]
# ## 8. Colour: CIFAR-10 in an 8×8×8 latent
#
# Lesson 4 could not show a CIFAR-10 photo: its pixel model needs a GPU for hours. The same two stages on CIFAR-10's
# 32×32×3 images, on a CPU: `cifar10_autoencoder` (the same architecture as MNIST's, $f = 4$, $c = 8$ channels:
# 3,072 numbers to 512) and `cifar10_latent`, a class-conditional U-Net of two levels (8×8 and 4×4, widths 64–128)
# on its latents. Both recipes are in `lesson_lib.recipes` and ran on two CPU threads (their cards say how long).
# First the autoencoder, on one test image of each class:

# %%
cifar_autoencoder, cifar_scale = load_autoencoder("cifar10_autoencoder")
cifar_images, cifar_labels, cifar_classes = load_dataset("cifar10", "test", as_uint8=True)
first_of_each = torch.stack([torch.nonzero(cifar_labels == k)[0, 0] for k in range(10)])
originals = uint8_to_float(cifar_images[first_of_each])
with torch.no_grad():
    decoded = cifar_autoencoder.decode(cifar_autoencoder.encode(originals)[0]).clamp(-1, 1)
c, h, w = cifar_autoencoder.latent_shape
print(f"{cifar_autoencoder.card['parameters']:,} parameters; images {tuple(originals.shape[1:])} -> latents "
      f"{(c, h, w)}: {originals[0].numel() / (c * h * w):.0f}x fewer numbers")
show_grid(torch.stack([originals, decoded]), row_labels=["original", "decoded"], col_labels=list(cifar_classes),
          title="cifar10_autoencoder: one test image per class and its decoded posterior mean", figsize=(12, 3))
ce = cifar_autoencoder.card["evaluation"]
print(f"over n = {ce['n']:,} test images: PSNR {ce['psnr_db']:.1f} dB, reconstruction FID {ce['reconstruction_fid']:.2f} "
      f"against the real-data floor {ce['fid_floor_train_vs_test']:.2f} (features {ce['feature_network']})")
print(f"scale factor {cifar_scale:.3f}; the scaled test latents' std {ce['scaled_latent_std_test']:.2f}")

# %% [markdown]
# Each object keeps its shape and colour; what the decoder loses is fine texture. The smooth airplane and ship come back
# almost exactly, the frog's leaves and the horse's background come back softer. Over 5,000 test images the card
# measures PSNR 32.8 dB and a reconstruction FID of 1.22 against the real-data floor of 0.25 at the same $n$. MNIST's
# autoencoder sat at its floor; this one costs something the feature network sees, about 5× the floor. **This is the
# floor of every CIFAR-10 latent model below.** A plain squared error blurs texture, which is why Rombach et al. add a
# perceptual (LPIPS) and an adversarial loss to their autoencoders. This course has no offline perceptual network, so
# it keeps the squared error (the recipe's docstring says how that choice was measured). The scale factor again brings
# the held-out latents to unit std (0.996).

# %%
cifar_model, cifar_schedule = load_pretrained("cifar10_latent")
cifar_decode = latent_decoder(cifar_autoencoder, cifar_scale)
row_labels = torch.arange(10).repeat_interleave(8)
W_SHOWN = 4.0
cifar_samples = generate(cifar_model, cifar_schedule, 80, "ddim", 25, cond={"y": row_labels}, seed=0, progress=False,
                         guidance=lambda denoise: ClassifierFreeGuidance(denoise, w=W_SHOWN), clip_x0=False,
                         decode=cifar_decode).clamp(-1, 1)
show_grid(cifar_samples.view(10, 8, 3, 32, 32), row_labels=list(cifar_classes), row_title="class", figsize=(9, 11),
          title=f"cifar10_latent: DDIM-25 in the 8x8x8 latent, guidance w = {W_SHOWN:g}, decoded")

# %% [markdown]
# Each row is its class at a glance, by colour and layout:
#
# * airplanes: a dark shape on a blue sky;
# * cars and trucks: red and blue bodies, front-on;
# * frogs: green on brown;
# * horses: brown, on grass;
# * ships: on blue water.
#
# The detail is missing. Cats and dogs are fur-coloured shapes with a face only hinted at, and birds are blobs against
# sky or leaves; these are the classes that CIFAR-10 models find hardest. The guidance shown, $w = 4$, is the best of
# the three that the card measured on 5,000 samples each:

# %%
cifar_card = model_card("cifar10_latent")
ge = cifar_card["evaluation"]
judge = model_card("cifar10_classifier")["evaluation"]["test_accuracy"]
print(f"cifar10_latent: {cifar_card['examples_seen']:,} latents seen in {cifar_card['wall_time_s'] / 60:.0f} min on "
      f"{cifar_card['hardware']}; {ge['sampler']}")
print(f"{'guidance':<10} {'FID':>6} {'KID':>8} {'class accuracy':>15}")
for key in sorted(k for k in ge if k.startswith("guidance_")):
    g = ge[key]
    print(f"{'w = ' + key.split('_')[1]:<10} {g['fid']:>6.2f} {g['kid']:>8.4f} {g['class_accuracy']:>15.3f}")
n = ge["guidance_0"]["n"]
print(f"{'floors':<10} {ge['fid_floor_train_vs_test']:>6.2f} {ge['kid_floor']:>8.4f}   (real test images against "
      f"training images, n = {n:,})")
print(f"the autoencoder's reconstruction FID at the same n: {ge['reconstruction_fid']:.2f}")
print(f"the judge's accuracy on real test images: {judge:.3f}")

# %% [markdown]
# On CIFAR-10, guidance does more than on MNIST:
#
# * **Without guidance ($w = 0$)** only 34.6% of the samples are classified as their label, at FID 22.3.
# * **With $w = 2$**, 78.8% at FID 7.6.
# * **With $w = 4$**, 89.0% at FID 6.7. The judge itself reaches 88.6% on real test images: guided samples are each
#   class's most typical images, easier to classify than real photos (lesson 5's trade-off).
#
# Unlike on MNIST (section 6: $w = 2$ doubled `mnist_latent`'s FID), FID improves with guidance too. Unguided, the
# judge is unsure of many of this short-trained model's samples (mean confidence 0.54, against 0.78 at $w = 4$), and
# guidance pulls them towards the images of their label. Even the best FID is 5.6× the autoencoder's
# reconstruction floor (1.22) and 27× the real-data floor (0.25), all at $n = 5{,}000$. So what limits these samples
# is the latent model, 61 minutes on two CPU threads, not the first stage.
#
# These FIDs are on the course's CIFAR-10 classifier features. They cannot be compared with the Inception FIDs that
# papers report (lesson 4, section 4).

# %% [markdown]
# ## Summary
#
# * A latent diffusion model is two models: an autoencoder trained once on reconstruction plus a tiny KL, and a
#   diffusion model trained on its latents, whose samples are decoded (sections 2, 3, 5).
# * The autoencoder's reconstruction FID is a floor that no latent model decoded by it can beat; `mnist_autoencoder`
#   keeps it at the real-data floor with a 4× smaller latent (section 2).
# * The latents are multiplied by one factor, 1 / their std over the whole training set, so the forward process sees
#   data of unit variance; a wrong scale shifts the whole schedule (section 4).
# * Latents are not images: the sampler must not clip $\hat x_0$ in latent space; clipping tripled FID here
#   (section 5).
# * At $f = 4$ the diffusion U-Net trains 7.1× and samples 7.0× faster per image on a CPU thread; given the same 15
#   minutes, the latent model reaches FID 0.93 where the pixel model is at 5.62 (section 6). The shipped
#   `mnist_latent`, 45 minutes on one thread, samples every digit as its class with guidance $w = 2$.
# * The same two stages give the course its first colour model on a CPU: `cifar10_autoencoder` (40 minutes) loses
#   texture, so its reconstruction FID, 5× the floor, is what any CIFAR-10 latent model inherits. `cifar10_latent`
#   (61 minutes) samples objects of the asked-for class, 89% of them classified so with $w = 4$ (section 8).
#
# **Exercises** (`exercises/10_latent_diffusion.ipynb`): the KL term, the scale factor, and one latent training step,
# each checked against the library.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"this notebook ran in {time.time() - started:.0f} s (profile {profile})")
