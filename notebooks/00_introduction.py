# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/00_introduction.ipynb)
#
# # Lesson 0 — Where diffusion models sit among generative models
#
# A generative model learns a distribution $p_\theta(x)$ from samples of the data distribution $p(x)$, so that we
# can draw new samples and, for some families, score how likely an $x$ is. This short lesson places
# denoising diffusion (Ho et al., 2020) among the other families, names the three things every family
# trades against each other, and shows where in this course each of them is measured.
#
# **In this lesson you will**
# 1. sort the main families by *how* they represent $p_\theta(x)$;
# 2. meet the *generative learning trilemma*: sample quality, mode coverage, fast sampling;
# 3. read published CIFAR-10 figures for each family side by side, and see what a diffusion model pays for its quality.
#
# **Runtime and study time.** Nothing here trains: the notebook runs in a few seconds. Reading it takes about 15 minutes; there is no exercise.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %% [markdown]
# ## 1. A map of generative models
#
# The first split is whether the model writes down a density at all.
#
# **Explicit density** — the model defines $p_\theta(x)$ and is trained by maximum likelihood (or a bound on it).
# * *Tractable density*: $\log p_\theta(x)$ is computed exactly.
#   * **Autoregressive models** (PixelCNN, Sparse Transformer) factor the image one sub-pixel at a time,
#     $p_\theta(x) = \prod_i p_\theta(x_i \mid x_{<i})$. Exact likelihood, but sampling is sequential: one network call per sub-pixel.
#   * **Normalizing flows** (RealNVP, Glow) push a Gaussian through an invertible network $x = f_\theta(z)$ and
#     count the change of volume, $\log p_\theta(x) = \log p(z) + \log\lvert\det \partial z / \partial x\rvert$. Exact likelihood and
#     one-pass sampling, at the price of an architecture that must stay invertible.
# * *Approximate density*: only a lower bound on $\log p_\theta(x)$ is computed.
#   * **Variational autoencoders** maximise the evidence lower bound (ELBO) over one latent $z$.
#   * **Diffusion models** are latent-variable models too, with $T$ latents $x_1, \dots, x_T$ of the data's size made by a
#     *fixed* noising process. Training maximises a variational bound,
#     $\log p_\theta(x_0) \ge -L_{\text{VLB}}$ (Ho et al., 2020, Eq. 3), which lesson 1b turns into the simple loss $L_\text{simple}$.
#     So a DDPM's likelihood is quoted as an upper bound on the NLL ("≤ 3.75 bits/dim").
#
# **Implicit density** — the model only knows how to *sample*.
# * **GANs** map noise to an image in one pass, $x = G_\theta(z)$, and learn from a discriminator rather than from a likelihood:
#   there is no $p_\theta(x)$ to report.
#
# ## 2. The generative learning trilemma
#
# Xiao, Kreis and Vahdat (2022) name three wishes that no family of their time met all at once:
#
# | | high sample quality | mode coverage (diversity) | fast sampling |
# |---|---|---|---|
# | GANs | yes | weak (mode collapse, low recall) | yes: one network call |
# | VAEs, flows | weaker | yes: trained on likelihood, every mode is paid for | yes: one network call |
# | autoregressive | good | yes | no: one call per sub-pixel |
# | diffusion (DDPM) | yes | yes | no: one call per denoising step, $T = 1000$ |
#
# Diffusion models buy quality *and* coverage with many small denoising steps. Much of the research since 2020
# (DDIM, distillation, consistency models, denoising diffusion GANs) is about the third corner: the same samples in fewer steps.
#
# The next cell draws both sections as one picture: on the left, what each family runs to turn noise into a sample and what
# it is trained on; on the right, the trilemma's triangle, with each family on the side between the two corners it reaches
# (after Xiao, Kreis and Vahdat, 2022, Fig. 1).

# %%
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, Polygon


def box(ax, x, y, text, color, width):
    ax.add_patch(FancyBboxPatch((x - width / 2, y - 0.31), width, 0.62, boxstyle="round,pad=0.04,rounding_size=0.12",
                                facecolor=color, edgecolor="0.25", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def arrow(ax, start, end, style="-|>", color="0.2", **kwargs):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle=style, color=color, lw=1.2, **kwargs))


FAMILIES = [  # name, colour, start, network (and how often it runs), what it is trained on
    ("GAN", "#f4cccc", "noise $z$", r"generator $G_\theta$", "one pass",
     r"trained against a discriminator $D_\phi$ that tells data from samples"),
    ("VAE", "#d9ead3", "latent $z$", r"decoder $p_\theta(x\mid z)$", "one pass",
     r"trained on the ELBO; an encoder $q_\phi(z\mid x)$ (dashed) maps data to $z$"),
    ("flow", "#cfe2f3", "noise $z$", r"invertible $f_\theta$", "one pass",
     r"trained on the exact likelihood, $\log p(z) + \log|\det \partial z/\partial x|$: it runs both ways"),
    ("diffusion", "#fff2cc", "noise $x_T$", r"denoiser $\varepsilon_\theta(x_t, t)$", "$T$ small steps",
     "trained to predict the noise that a fixed forward process (dashed) added:\n"
     r"$L_\mathrm{simple}$, from a bound on the likelihood"),
]
fig = plt.figure(figsize=(14, 5.2))
ax = fig.add_axes([0.0, 0.0, 0.6, 1.0])
ax.set_xlim(-0.3, 8.0); ax.set_ylim(-0.3, 8.4); ax.axis("off")
ax.set_title("What turns noise into a sample, and what it is trained on", fontsize=12)
xs = [2.0, 4.45, 6.9]                                     # start, network, sample
for i, (name, color, start, network, runs, training) in enumerate(FAMILIES):
    y = 7.2 - 2.0 * i
    ax.text(0.0, y, name, ha="left", va="center", fontsize=11, fontweight="bold")
    box(ax, xs[0], y, start, "white", 1.5)
    box(ax, xs[1], y, f"{network}\n({runs})", color, 2.1)
    box(ax, xs[2], y, "sample $x_0$" if name == "diffusion" else "sample $x$", "white", 1.5)
    arrow(ax, (xs[0] + 0.75, y), (xs[1] - 1.05, y))
    arrow(ax, (xs[1] + 1.05, y), (xs[2] - 0.75, y))
    if name == "flow":                                    # invertible: the same network maps data back to noise
        arrow(ax, (xs[1] - 1.05, y - 0.18), (xs[0] + 0.75, y - 0.18))
        arrow(ax, (xs[2] - 0.75, y - 0.18), (xs[1] + 1.05, y - 0.18))
    if name in ("VAE", "diffusion"):                      # data -> latent, used in training only
        arrow(ax, (xs[2] - 0.2, y + 0.33), (xs[0] + 0.2, y + 0.33), color="0.45", ls="--",
              connectionstyle="arc3,rad=0.22")
    ax.text(xs[1], y - 0.55, training, ha="center", va="top", fontsize=8.5, style="italic", color="0.25")

tx = fig.add_axes([0.62, 0.04, 0.37, 0.88])
tx.set_xlim(-0.35, 1.35); tx.set_ylim(-0.2, 1.05); tx.axis("off"); tx.set_aspect("equal")
tx.set_title("The generative learning trilemma", fontsize=12)
corners = {"high sample\nquality": (0.5, 0.866), "mode coverage\n(diversity)": (0.0, 0.0), "fast\nsampling": (1.0, 0.0)}
tx.add_patch(Polygon(list(corners.values()), closed=True, facecolor="0.96", edgecolor="0.3", lw=1.2))
for text, (x, y) in corners.items():
    tx.text(x, y + (0.06 if y > 0.5 else -0.06), text, ha="center", va="bottom" if y > 0.5 else "top",
            fontsize=10, fontweight="bold")
sides = [  # family, colour, its place on a side of the triangle, where its note goes, the note
    ("GAN", "#f4cccc", (0.75, 0.433), (0.92, 0.53, "left"), "quality, speed;\nweak coverage"),
    ("VAE, flow", "#d9ead3", (0.5, 0.0), (0.5, -0.13, "center"), "coverage, speed;\nweaker quality"),
    ("diffusion\n(and autoregressive)", "#fff2cc", (0.25, 0.433), (0.08, 0.56, "right"),
     "quality, coverage;\nslow: many network calls"),
]
for name, color, (x, y), (nx, ny, align), note in sides:
    tx.text(x, y, name, ha="center", va="center", fontsize=9.5,
            bbox=dict(boxstyle="round,pad=0.3", facecolor=color, edgecolor="0.25"))
    tx.text(nx, ny, note, ha=align, va="center", fontsize=9, color="0.3")
plt.show()

# %% [markdown]
# ## 3. Published figures, side by side
#
# Unconditional CIFAR-10 (32×32×3). FID: Fréchet Inception distance of 50k samples to the data, lower is better;
# NLL: negative log-likelihood on the test set in bits per dimension, lower is better ("≤": an upper bound from a variational bound);
# NFE: network evaluations to draw one sample. A "—" means the model reports no such number (a GAN has no likelihood)
# or that this course has not checked a published one; a blank guess is worse than a gap.
#
# | family | density | model (paper, year) | FID ↓ | NLL, bits/dim ↓ | NFE per sample | where the figures are published |
# |---|---|---|---|---|---|---|
# | autoregressive | explicit, tractable | Gated PixelCNN (van den Oord et al., 2016) | 65.93 | 3.03 | 3,072 | quoted in Ho et al. (2020), Table 1 |
# | autoregressive | explicit, tractable | Sparse Transformer (Child et al., 2019) | — | 2.80 | 3,072 | quoted in Ho et al. (2020), Table 1 |
# | normalizing flow | explicit, tractable | Glow (Kingma & Dhariwal, 2018) | — | 3.35 | 1 | Kingma & Dhariwal (2018), Table 2 |
# | VAE | explicit, approximate | NVAE (Vahdat & Kautz, 2020) | — | ≤ 2.91 | 1 | Vahdat & Kautz (2020), abstract |
# | VAE | explicit, approximate | very deep VAE (Child, 2021) | — | ≤ 2.87 | 1 | Child (2021): the mean of four seeds (2.84–2.90) |
# | GAN | implicit | SNGAN (Miyato et al., 2018) | 21.7 | — | 1 | quoted in Ho et al. (2020), Table 1 |
# | GAN | implicit | StyleGAN2 + ADA, v1 (Karras et al., 2020) | 3.26 | — | 1 | quoted in Ho et al. (2020), Table 1 |
# | diffusion | explicit, approximate | DDPM, $L_\text{simple}$ (Ho et al., 2020) | 3.17 | ≤ 3.75 | 1,000 | Ho et al. (2020), Table 1 |
# | diffusion | explicit, approximate | DDPM, true bound $L$ with fixed $\Sigma$ (Ho et al., 2020) | 13.51¹ | ≤ 3.70 | 1,000 | Ho et al. (2020), Table 1 |
# | diffusion | explicit, approximate | Improved DDPM, learned variances (Nichol & Dhariwal, 2021) | — | ≤ 2.94 | — | Nichol & Dhariwal (2021); table number not checked here |
# | diffusion, fewer steps | explicit, approximate | DDIM, η = 0, 50 steps (Song, Meng & Ermon, 2021) | 4.67 | — | 50 | Song et al. (2021), Table 1 |
# | diffusion, fewer steps | explicit, approximate | DDIM, η = 0, 10 steps (Song, Meng & Ermon, 2021) | 13.36 | — | 10 | Song et al. (2021), Table 1 |
# | distilled diffusion | — | progressive distillation, 4 steps (Salimans & Ho, 2022) | 3.00 | — | 4 | Salimans & Ho (2022); table number not checked here |
# | distilled diffusion | — | consistency distillation, 1 step (Song et al., 2023) | 3.55 | — | 1 | Song et al. (2023); table number not checked here |
#
# How to read it:
# * **Quality.** DDPM's FID 3.17 matches the best unconditional GAN of its table (StyleGAN2 + ADA, 3.26), with a plain $L_\text{simple}$ loss. Training on the
#   true bound $L$ gives a better NLL (3.70) but a far worse FID (13.51): likelihood and sample quality are different goals.
# * **Likelihood.** A DDPM's NLL (≤ 3.75) is behind the autoregressive models (2.80–3.03) and the hierarchical VAEs (≤ 2.87–2.91);
#   learning the variances closes most of the gap (≤ 2.94).
# * **Speed.** The price is the last column: 1,000 network calls per sample against one for a GAN. DDIM keeps FID 4.67 with 50 calls but not
#   with 10 (13.36); distillation gets to 4 or 1 call.
#
# ¹ Ho et al. print two FIDs for training on the true bound $L$ with fixed isotropic $\Sigma$: 13.51 when the network predicts the
# noise $\varepsilon$ (Table 1, and the $\varepsilon$-prediction rows of Table 2) and 13.22 when it predicts the posterior mean $\tilde\mu_t$
# directly (Table 2). Both are in the paper; lesson 1b compares $\varepsilon$-prediction objectives, so 13.51 is the figure to set against $L_\text{simple}$'s 3.17.
#
# The NFE column is not a published measurement but follows from how each model samples; the next cell computes it
# with `lesson_lib`, the same code the later lessons sample with.

# %%
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.timesteps import all_steps, spaced

schedule = NoiseSchedule.linear(1000)                      # Ho et al. (2020): T = 1000, beta from 1e-4 to 0.02
height, width, channels = 32, 32, 3                        # one CIFAR-10 image
nfe = {                                                    # network evaluations per sample
    "autoregressive\n(one per sub-pixel)": height * width * channels,
    "DDPM\n(every step)": len(all_steps(schedule.T)),
    "DDIM, 50 steps": len(spaced(schedule.T, 50)),      # 50 of the 1000 timesteps, evenly spaced
    "DDIM, 10 steps": len(spaced(schedule.T, 10)),
    "progressive\ndistillation": 4,
    "GAN / flow / VAE /\nconsistency model": 1,
}
fid = {                                                    # published CIFAR-10 FID, from the table above
    "autoregressive\n(one per sub-pixel)": "FID 65.93, Gated PixelCNN",
    "DDPM\n(every step)": "FID 3.17",
    "DDIM, 50 steps": "FID 4.67",
    "DDIM, 10 steps": "FID 13.36",
    "progressive\ndistillation": "FID 3.00",
    "GAN / flow / VAE /\nconsistency model": "FID 3.26 StyleGAN2 + ADA, 3.55 consistency distillation",
}
for name, n in nfe.items():
    print(f"{name.replace(chr(10), ' '):40s} {n:5d} network evaluations")

# %%
colors = ["C1", "C0", "C0", "C0", "C2", "C3"]
fig, ax = plt.subplots(figsize=(8, 3.6))
names = list(nfe)
bars = ax.barh(names, [nfe[k] for k in names], color=colors)
ax.set_xscale("log")
ax.set_xlim(0.5, 6e4)
ax.invert_yaxis()
ax.set_xlabel("network evaluations per CIFAR-10 sample (log scale)")
ax.set_title("The fast-sampling corner of the trilemma: what one sample costs")
for bar, name in zip(bars, names):
    label = f"{nfe[name]:,}   ({fid[name]})"
    ax.text(bar.get_width() * 1.15, bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=9)
ax.grid(axis="x", which="major", alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# Each bar is a count of forward passes, not seconds: a GAN's generator and a DDPM's U-Net differ in size too, so
# wall-clock time depends on the network as well (lesson 3 counts the U-Net's parameters).
# The FID in brackets is the published CIFAR-10 figure from the table above; one-call models range from FID 3.26
# (StyleGAN2 + ADA) to far worse, so a single bar does not say they are all equally good.
#
# ## 4. Where this course measures each corner
#
# | corner | lesson | what it measures |
# |---|---|---|
# | how noise destroys data (the process diffusion inverts) | [1 — The forward process](01_forward_process.ipynb) | how many of the $T$ steps each schedule needs to erase a photograph |
# | where the training loss comes from | [1b — The reverse process and the bound](01b_reverse_process.ipynb) | the variational bound term by term, the weight $\lambda_t$ that $L_\text{simple}$ drops, and what dropping it does on the swiss roll |
# | sample quality | [2 — A DDPM on the swiss roll](02_swiss_roll.ipynb) | a sample-quality metric against its data-vs-data floor; how $T$ and the schedule change it |
# | cost of one network evaluation | [3 — The U-Net](03_unet.ipynb) | parameters and shapes per block of the network called at every step |
# | sample quality and mode coverage at image scale | [4 — Training on MNIST and CIFAR-10](04_training_images.ipynb) | FID and KID against the real-data floor; nearest training neighbours (does the model copy, or cover?) |
# | quality against diversity | [5 — Guidance](05_guidance.ipynb) | class accuracy, FID and within-class diversity as guidance strength grows |
# | fast sampling | [6 — Fewer steps without retraining](06_fast_sampling.ipynb), [7 — Progressive distillation](07_distillation.ipynb) | FID against the number of network calls: strided DDPM and DDIM without retraining, then students distilled to 8, 4, 2 and 1 steps |
# | likelihood | [8 — Learned variances and bits per dimension](08_likelihood.ipynb) | the variational bound in bits/dim, term by term, against two baselines anyone can check; learned against fixed variances |
#
# **Takeaway.** Diffusion models are explicit-density latent-variable models trained on a variational bound. They reach GAN-level
# quality without giving up mode coverage, and pay for it in sampling steps: the rest of the course builds that model, then
# measures each corner of the trilemma on it.
