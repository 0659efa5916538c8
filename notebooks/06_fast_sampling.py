# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/06_fast_sampling.ipynb)
#
# # Lesson 6 — Fewer steps without retraining: strided DDPM, DDIM, spacings and inversion
#
# The shipped MNIST model was trained on T = 1000 noise levels, and sampling it with Algorithm 2 costs 1000 network
# calls per image. This lesson samples the **same network** on S = 10 … 1000 steps, two ways: strided DDPM
# (Nichol & Dhariwal 2021) and DDIM (Song et al. 2021). DDIM with $\eta = 0$ is deterministic, so it can also be run
# backwards: it **encodes** an image into the noise that decodes back to it, and two encoded images can be
# interpolated.
#
# | profile | what runs | runtime on 2 CPU cores |
# |---|---|---|
# | ci, cpu, gpu (the same) | 10 samples per sampler at S = 10, inversion of 2 test images, one interpolation | about 2 min |
# | the full FID table | `benchmarks/fast_sampling.py` (not run here; its stored table is read from `docs/fast_sampling_table.json`) | see docs/benchmarks.md |
#
# Library: `lesson_lib.diffusion.steps` (`ddpm_step`, `ddim_step`), `timesteps.spaced`, `sampling.sample` (the one loop),
# `inversion` (`ddim_invert`, `slerp`).

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import json
import math
from importlib import resources
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from lesson_lib.course.plotting import show_grid
from lesson_lib.data.images import load_mnist
from lesson_lib.diffusion.denoiser import ClipX0, Denoiser
from lesson_lib.diffusion.guidance import ClassifierFreeGuidance
from lesson_lib.diffusion.inversion import ddim_invert, lerp, slerp
from lesson_lib.diffusion.sampling import ddim_sample, ddpm_sample, sample
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.diffusion.timesteps import SPACINGS, spaced
from lesson_lib.pretrained import load_pretrained

torch.set_num_threads(1)
model, schedule = load_pretrained("mnist_cond")
T = schedule.T

# %% [markdown]
# ## 1. Strided DDPM: a shorter chain with the same marginals
#
# The forward marginals $q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\,x_0, (1-\bar\alpha_t) I)$ depend on $t$ only
# through $\bar\alpha_t$. Keep a sub-sequence $\tau_1 < \dots < \tau_S$ of $0..T-1$ and define a new Markov chain whose
# $i$-th step has
#
# $$\beta_{\tau_{i-1}\to\tau_i} = 1 - \frac{\bar\alpha_{\tau_i}}{\bar\alpha_{\tau_{i-1}}} ,$$
#
# so that $\prod_{j \le i}(1-\beta_j) = \bar\alpha_{\tau_i}$: the short chain has the same marginals at every kept step,
# and the network, trained on $q(x_t \mid x_0)$, predicts $\hat x_0$ (or $\hat\epsilon$) there unchanged. Algorithm 2 then
# runs on the short chain, with the posterior $q(x_s \mid x_t, \hat x_0)$ of a jump from $t$ to $s$ and variance
# $\beta_{t\to s}$ (or $\tilde\beta_{t\to s} = \frac{1-\bar\alpha_s}{1-\bar\alpha_t}\beta_{t\to s}$). That is
# `ddpm_step(schedule, x_t, t, s, pred, noise)` for any $s < t$.
#
# ## 2. DDIM: a non-Markovian forward process (Song et al. 2021)
#
# DDPM's loss only ever sees the marginals $q(x_t \mid x_0)$, so any forward process with those marginals trains the same
# network. Song et al. pick, for each $\sigma_t \ge 0$, the family
#
# $$q_\sigma(x_s \mid x_t, x_0) = \mathcal N\!\Big(\sqrt{\bar\alpha_s}\,x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\;
# \frac{x_t - \sqrt{\bar\alpha_t}\,x_0}{\sqrt{1-\bar\alpha_t}},\; \sigma^2 I\Big).$$
#
# *Why the marginals are kept:* if $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$, the fraction is $\epsilon$,
# so $x_s = \sqrt{\bar\alpha_s}x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\,\epsilon + \sigma z$, a Gaussian with mean
# $\sqrt{\bar\alpha_s}x_0$ and variance $(1-\bar\alpha_s-\sigma^2) + \sigma^2 = 1-\bar\alpha_s$: exactly $q(x_s \mid x_0)$.
# The forward process $q(x_t \mid x_s, x_0)$ that follows from Bayes' rule is no longer Markov (it depends on $x_0$),
# which is why the steps may jump.
#
# Sampling replaces $x_0$ and $\epsilon$ by the network's $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon)/\sqrt{\bar\alpha_t}$
# and $\hat\epsilon$ (**Eq. 12**):
#
# $$x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\;\hat\epsilon + \sigma z,\qquad
# \sigma = \eta\,\sqrt{\frac{1-\bar\alpha_s}{1-\bar\alpha_t}}\,\sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_s}} .$$
#
# * $\eta = 1$ gives $\sigma^2 = \tilde\beta_{t\to s}$, and the step is DDPM's posterior step with $\tilde\beta$ (tested in
#   `tests/test_steps.py`);
# * $\eta = 0$ gives a deterministic map $x_T \mapsto x_0$, a first-order discretisation of the probability-flow ODE.
#
# ## 3. Which S timesteps? Four spacings
#
# `timesteps.spaced(T, S, spacing)`; the sampler always steps to the **next entry of the list**, never to $t - T/\!/S$
# (a bug several libraries had for the non-leading spacings).

# %%
S = 10
for spacing in SPACINGS:
    print(f"{spacing:>9}: {spaced(T, S, spacing)}")
fig, ax = plt.subplots(figsize=(8, 2.6))
for k, spacing in enumerate(SPACINGS):
    ts = spaced(T, S, spacing)
    ax.scatter(ts, [k] * len(ts), s=25)
ax.set_yticks(range(len(SPACINGS)), SPACINGS)
ax.set_xlabel("code timestep t (0 = least noisy, 999 = pure noise)")
ax.set_title(f"the S = {S} timesteps each spacing visits (T = {T})")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 4. The same x_T, four samplers, S = 10
#
# One sample per class (rows: sampler; columns: class), every sampler starting from the same $x_T$ and drawing its step
# noise from the same seed. $\hat x_0$ is clipped to $[-1, 1]$ as in `lesson_lib.sample`.

# %%
labels = torch.arange(10)
x_T = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
common = dict(x_T=x_T, clip_x0=True, progress=False, model_kwargs={"y": labels})
rows = {}
for eta in (0.0, 0.5, 1.0):
    rows[f"DDIM eta={eta}"] = ddim_sample(model, schedule, steps=S, eta=eta, generator=torch.Generator().manual_seed(1), **common)
rows["strided DDPM"] = ddpm_sample(model, schedule, timesteps=spaced(T, S), generator=torch.Generator().manual_seed(1), **common)
show_grid(torch.stack(list(rows.values())), row_labels=list(rows), col_labels=[str(k) for k in range(10)],
          row_title="sampler, S = 10", col_title="class", title="S = 10 steps from the same x_T")

# %% [markdown]
# ## 5. The stored table: FID against S and eta
#
# FID is computed on the course MNIST classifier's features (not Inception: compare only within this table), against
# n test images, beside the real-data floor (n train vs n test images) at the same n. The table was measured by
# `benchmarks/fast_sampling.py` on a 2-core CPU; what it covers (and what it leaves out, for CPU time) is printed with it.

# %%
path = Path("..") / "docs" / "fast_sampling_table.json"
table = json.loads(path.read_text())
print(f"n = {table['n']} per cell, seed {table['seed']}, spacing {table['spacing']}, x0_hat clipped: {table['clip_x0']}")
print(f"real-data floor at n = {table['n']}: FID {table['floor_fid']:.2f}")
seeds = [table["seed"]] + [repeat["seed"] for repeat in table["repeats"]]
fids = {(r["sampler"], r["S"], r["eta"]): {table["seed"]: r["fid"]} for r in table["rows"]}
for repeat in table["repeats"]:                      # the same cells from other x_T seeds (fewer S)
    for r in repeat["rows"]:
        fids[(r["sampler"], r["S"], r["eta"])][repeat["seed"]] = r["fid"]
print(f"{'sampler':>13} {'S':>5} {'eta':>4} " + " ".join(f"{'FID, seed ' + str(s):>12}" for s in seeds))
for (sampler, S, eta), by_seed in fids.items():
    cells = " ".join(f"{by_seed[s]:>12.2f}" if s in by_seed else f"{'-':>12}" for s in seeds)
    print(f"{sampler:>13} {S:>5} {'-' if eta is None else eta:>4} {cells}")
print("not run:", table.get("not_run", "-"))
print("the paper's ordering, seed by seed (the same x_T for both etas):")
for S in sorted({S for (sampler, S, eta) in fids if sampler == "ddim"}):
    zero, one = fids[("ddim", S, 0.0)], fids[("ddim", S, 1.0)]
    paired = [s for s in zero if s in one]
    wins = sum(zero[s] < one[s] for s in paired)
    print(f"  S = {S:>4}: eta = 0 below eta = 1 in {wins} of {len(paired)} seed(s)")

# %% [markdown]
# How to read it. The floor is what two samples of *real* digits score against each other at this $n$, so a cell at or
# under it is as close to the test set as real data can be shown to be here.
#
# * **At the fewest steps the paper's ordering holds, by a small margin.** At $S = 2$ and $3$, $\eta = 0$ scores below
#   $\eta = 1$ for every $x_T$ seed (by 0.1 to 0.3); with so few steps, the fresh noise a stochastic step adds has
#   few steps left in which to be removed.
# * **From $S = 5$ on every DDIM cell is at the floor**, and from $S = 10$ the order even reverses ($\eta = 1$ below $\eta = 0$ for
#   every seed), but only below the floor, where $n = 200$ cannot call one sampler better. On MNIST this model is good
#   enough that five deterministic or stochastic steps both reach the floor; Song et al.'s large gaps are on CIFAR-10 and
#   CelebA.
# * **Strided DDPM** (ancestral steps with the large variance $\beta_{t\to s}$) is far worse at few steps (FID 129 at
#   $S = 2$, 16 at $S = 10$) and reaches the floor only from $S = 50$: its noise per step is too large for a long stride.

# %% [markdown]
# ## 6. DDIM inversion: encode, then decode
#
# With $\eta = 0$ the update of Eq. 12 can be run with $s > t$: from $x_0$ up to $x_T$ (`ddim_invert`, the same loop on an
# ascending list). Decoding the result with DDIM on the same list returns (nearly) the image; the error is the
# discretisation error of the ODE both ways, so it shrinks with S. Two things break the round trip:
#
# * **clipping** $\hat x_0$ to $[-1, 1]$ is not invertible (many $\hat x_0$ map to the same clipped one);
# * **strong guidance**: with CFG the two directions evaluate $\hat\epsilon$ at different points of a far more curved
#   field, and the per-step errors no longer cancel.

# %%
images, test_labels = load_mnist("test")
x0, y0 = images[:2], test_labels[:2]
denoise = Denoiser(model, schedule)


def round_trip(denoiser, steps):
    ts = spaced(T, steps)
    x_T = ddim_invert(denoiser, schedule, x0, ts, cond={"y": y0})
    back = sample(denoiser, schedule, x_T, ts, ddim_step, stochastic=False, cond={"y": y0}, progress=False)
    return x_T, back, ((back - x0) ** 2).mean().item()


results = {}
for steps in (10, 20, 50):
    results[f"S = {steps}"] = round_trip(denoise, steps)
results["S = 20, clip x0"] = round_trip(ClipX0(denoise, schedule, True), 20)
results["S = 20, CFG w = 3"] = round_trip(ClassifierFreeGuidance(denoise, 3.0), 20)
# two significant figures: the 4th decimal of the CFG round trip depends on the CPU's kernels
for name, (_, _, mse) in results.items():
    print(f"{name:>18}: per-pixel MSE of the reconstruction {mse:.2g}")

# %% [markdown]
# What the numbers above say on this model: the round-trip error falls fast with S (first-order errors both ways), and
# CFG with $w = 3$ roughly doubles it at S = 20. Clipping, against the usual warning, *lowered* the error at S = 20 here:
# at coarse steps the unclipped $\hat x_0$ at high $t$ lies far outside $[-1, 1]$ and its errors are larger than what
# clipping loses. The warning concerns the limit of many steps, where the unclipped round trip tends to zero error and a
# clipped one need not; this lesson does not measure that limit.

# %%
grid = torch.stack([x0] + [back for _, back, _ in results.values()], 1)      # (2 images, 1 + variants, ...)
show_grid(grid, row_labels=[f"test image {i}" for i in range(2)], col_labels=["original"] + list(results),
          row_title="image", col_title="decoded from its DDIM encoding", title="DDIM inversion round trips")

# %% [markdown]
# ## 7. Interpolating two encodings: slerp against the straight line
#
# An encoded $x_T$ looks like a draw of $\mathcal N(0, I_d)$ with $d = 784$, whose norm concentrates at $\sqrt d = 28$. The
# straight-line midpoint of two independent draws has norm about $\sqrt{d/2} \approx 19.8$: a point the decoder never saw
# at $t = T$. Slerp keeps the norm.

# %%
x_T_pair = results["S = 20"][0]
print(f"norms of the two encodings: {x_T_pair.flatten(1).norm(dim=1).tolist()[0]:.1f}, "
      f"{x_T_pair.flatten(1).norm(dim=1).tolist()[1]:.1f} (sqrt(d) = {math.sqrt(784):.1f})")
z = torch.randn(2000, 784, generator=torch.Generator().manual_seed(2))
lin = lerp(z[:1000], z[1000:], 0.5).norm(dim=1)
sph = slerp(z[:1000], z[1000:], 0.5).norm(dim=1)
fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(z.norm(dim=1).numpy(), bins=40, alpha=0.6, label="draws of N(0, I), d = 784")
ax.hist(lin.numpy(), bins=40, alpha=0.6, label="linear midpoints")
ax.hist(sph.numpy(), bins=40, alpha=0.6, label="slerp midpoints")
ax.set_xlabel("norm ||z||"); ax.set_ylabel("count (of 1000 pairs)"); ax.legend(); plt.tight_layout(); plt.show()
print(f"mean norm: draws {z.norm(dim=1).mean():.1f}, linear midpoints {lin.mean():.1f} (sqrt(d/2) = "
      f"{math.sqrt(392):.1f}), slerp midpoints {sph.mean():.1f}")

# %% [markdown]
# The histogram is about draws of $\mathcal N(0, I)$. The two *encodings* printed above are not typical draws: their norm
# (about 16) lies well inside the shell, since DDIM inversion of a digit on a black background gives a structured $x_T$.
# Slerp still keeps the path at the encodings' own norm, where the straight line dips below it.

# %%
alphas = torch.linspace(0, 1, 5)
a, b = x_T_pair[:1].expand(5, -1, -1, -1), x_T_pair[1:].expand(5, -1, -1, -1)
y_mid = torch.where(alphas < 0.5, y0[0], y0[1])
decoded = [sample(denoise, schedule, f(a, b, alphas), spaced(T, 20), ddim_step, stochastic=False,
                  cond={"y": y_mid}, progress=False) for f in (slerp, lerp)]
show_grid(torch.stack(decoded), row_labels=["slerp", "linear"], col_labels=[f"{a:.2f}" for a in alphas.tolist()],
          row_title="interpolation", col_title="alpha (0 = image 0, 1 = image 1)",
          title="decoded interpolations of two DDIM encodings (S = 20; label of the nearer end)")

# %% [markdown]
# ## What to take away
#
# * A network trained on T steps samples on S steps without retraining: only the step's two alpha-bars change.
# * DDIM's $\eta$ chooses how much fresh noise each step adds. The paper's ordering (at few steps, $\eta = 0$ beats
#   $\eta = 1$) holds on MNIST only at 2 and 3 steps; from 5 steps every DDIM cell of the stored table is at the floor.
# * $\eta = 0$ is an invertible map (up to discretisation): inversion is DDIM climbing, and it fails with clipping and
#   strong guidance.
# * Noise lives on a shell of radius $\sqrt d$; interpolate along it (slerp), not through it.
#
# Exercises: `solutions/06_fast_sampling.ipynb` (one DDIM step, the respaced betas, slerp, a predicted norm).
