# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/06_fast_sampling.ipynb)
#
# # Lesson 6 — Fewer steps without retraining: strided DDPM, DDIM, spacings and inversion
#
# The shipped MNIST model was trained on T = 1000 noise levels, and sampling it with Algorithm 2 costs 1000 network
# calls per image. This lesson samples the **same network** on S = 2 … 1000 steps, two ways: strided DDPM
# (Nichol & Dhariwal 2021) and DDIM (Song et al. 2021). DDIM with $\eta = 0$ is deterministic, so it can also be run
# backwards: it **encodes** an image into the noise that decodes back to it, and two encoded images can be
# interpolated.
#
# | profile | what runs | runtime on 2 CPU cores |
# |---|---|---|
# | ci, cpu, gpu (the same) | 10 samples per sampler at S = 10, inversion of 2 test images, one interpolation | about 2 min |
# | the full FID tables | `benchmarks/fast_sampling.py` (not run here; its stored tables are read from `docs/fast_sampling_table.json`, n = 200, and `docs/fast_sampling_table_n5000.json` with five longer-chain cells at n = 5,000) | see docs/benchmarks.md |
#
# **Study time:** about 1 h of reading, and about 40 min for the exercise (`exercises/06_fast_sampling.ipynb`).
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

import matplotlib.pyplot as plt
import torch

from lesson_lib.course.colab import course_file
from lesson_lib.course.plotting import show_grid
from lesson_lib.data.images import load_mnist
from lesson_lib.diffusion.denoiser import ClipX0, Denoiser, Prediction
from lesson_lib.diffusion.guidance import ClassifierFreeGuidance
from lesson_lib.diffusion.inversion import ddim_invert, lerp, slerp
from lesson_lib.diffusion.sampling import ddim_sample, ddpm_sample, sample
from lesson_lib.diffusion.steps import ddim_sigma, ddim_step, ddpm_mean_variance
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
# The forward process $q(x_t \mid x_s, x_0)$ that follows from Bayes' rule is no longer Markov (it depends on $x_0$).
# That is what leaves $\sigma$ free, down to 0. It is *not* why the steps may jump: strided DDPM (section 1) is a Markov
# chain and jumps too. Both may jump because the network was trained only on the marginals $q(x_t \mid x_0)$, and both
# processes keep those marginals at every timestep they visit.
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
path = course_file("docs/fast_sampling_table.json")
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
# Before reading the table, look at what each sampler adds at each step. For every step $t \to s$ of the linspace grids
# the cell below prints the noise level the network expects at $s$, $\sqrt{1-\bar\alpha_s}$; DDIM's fresh noise
# $\sigma(\eta = 1)$ (Eq. 16, `ddim_sigma`) and what is left of the deterministic direction, the coefficient
# $\sqrt{1-\bar\alpha_s-\sigma^2}$ of $\hat\epsilon$; and the standard deviation of strided DDPM's fresh noise,
# $\sqrt{\beta_{t\to s}}$ (`ddpm_mean_variance` with `variance="beta"`, the variant in the table). The last step, to
# the data ($s = -1$), adds no noise in either sampler.

# %%
x_dummy = torch.zeros(1, 1)
print(f"{'S':>2}  {'step t -> s':>12}  {'noise level at s':>16}  {'DDIM eta=1: sigma':>17}  {'coef. of eps_hat':>16}  "
      f"{'strided: sqrt(beta)':>19}")
for S_grid in (2, 3, 5, 10):
    grid = spaced(T, S_grid)
    for t, s in zip(grid, grid[1:]):                       # the noisy steps; the last one, to the data, adds none
        t_, s_ = torch.tensor([t]), torch.tensor([s])
        level = (1 - schedule.alpha_bars_with_0[s + 1]).sqrt().item()
        sigma = ddim_sigma(schedule, t_, s_, 1.0).item()
        _, beta = ddpm_mean_variance(schedule, x_dummy, t_, s_, Prediction(x_dummy, x_dummy), "beta")
        print(f"{S_grid:>2}  {f'{t} -> {s}':>12}  {level:>16.4f}  {sigma:>17.4f}  {max(level ** 2 - sigma ** 2, 0) ** 0.5:>16.4f}  "
              f"{beta.sqrt().item():>19.4f}")
    print(f"{S_grid:>2}  {f'{grid[-1]} -> data':>12}  {'(no noise)':>16}")
print(f"beta_(999 -> 0) = {float(1 - schedule.alpha_bars_with_0[1000] / schedule.alpha_bars_with_0[1]):.5f}")

# %% [markdown]
# At $n = 200$ the floor is 1.18, and a sampler within a few tenths of it cannot be told from the data *at that n*: the
# floor's own spread between draws is about 0.2. The same script measured the cells of $S \le 20$ again at
# $n = 5{,}000$, where the floor falls to 0.049 (docs/benchmarks.md §10 explains why a small $n$ flatters samples less
# diverse than the data), and of the longer chains strided DDPM on 50 steps, DDIM on 50 steps at the three $\eta$ and
# DDIM ($\eta = 0$) on 100, from the same $x_T$ (the last five rows; the other cells of $S \ge 100$ would take half an
# hour to five hours of CPU each at this $n$). Beside FID it prints FID
# extrapolated to infinite $n$ (FID$_\infty$, a fit of FID$(n)$ = FID$_\infty + k/n$ over subsets) and the class accuracy
# of the course classifier, which took no part:

# %%
large = json.loads(course_file("docs/fast_sampling_table_n5000.json").read_text())
for name in ("fast_sampling_strided50_n5000", "mnist_cond_ddim50_n5000", "mnist_cond_ddim100_n5000"):
    large["rows"] += json.loads(course_file(f"docs/{name}.json").read_text())["rows"]
floor = large["floor"]
print(f"n = {large['n']} per cell, seed {large['seed']}, the same x_T in every cell; real-data floor at n = {large['n']}: "
      f"FID {floor['fid']:.3f}, FID_inf {floor['fid_infinity']:.3f}")
print(f"{'sampler':>13} {'S':>3} {'eta':>4} {'FID':>8} {'x floor':>8} {'FID_inf':>8} {'accuracy':>9}")
for r in large["rows"]:
    print(f"{r['sampler']:>13} {r['S']:>3} {'-' if r['eta'] is None else r['eta']:>4} {r['fid']:>8.3f} "
          f"{r['fid'] / floor['fid']:>7.1f}x {r['fid_infinity']:>8.3f} {r['accuracy']:>9.1%}")

# %% [markdown]
# How to read the FID table. The floor is what two samples of *real* digits score against each other at this $n$, so a
# cell at or under it is as close to the test set as real data can be shown to be here.
#
# * **$S = 2$ is one step in disguise.** The linspace grid for $S = 2$ is $[999, 0]$: the first network call jumps
#   from pure noise straight to $t = 0$ on the $\hat x_0$ it sees at $t = 999$, and the second call, at $t = 0$, only
#   has the 1% noise of that level to remove. That is why every DDIM cell at $S = 2$ is at FID 34 to 38, far above
#   $S = 3$. The only stochastic step goes to $t = 0$, where $\sigma(\eta = 1) = 0.0100$ is the whole noise level:
#   $\eta = 1$ swaps the $0.0100\,\hat\epsilon$ of $\eta = 0$ for $0.0100\,z$, pixel noise of standard deviation
#   0.01, and changes nothing else. The 0.2 that $\eta = 1$ adds to the FID at $S = 2$ (every seed) is the price of
#   that 1% noise, not of noise left with too few steps to remove it. (Lesson 7 samples "2-step DDIM" on another
#   grid, the nested $[999, 499]$: its first step lands at $t = 499$, where the $\hat x_0$ of $t = 999$ is far from
#   final, and its second call does real work, so it scores far better there. A step count names a sampler only with
#   its grid.)
# * **From $S = 3$ the paper's reason applies.** On $[999, 500, 0]$ the first step lands at $t = 500$ with
#   $\sigma(\eta = 1) = 0.9601$ of a noise level of 0.9603: $\eta = 1$ replaces almost all of the deterministic
#   direction $\hat\epsilon$ (its coefficient falls to 0.0210) by fresh noise, and one step is left to remove it. At
#   $S = 3$, $\eta = 0$ scores below $\eta = 1$ for every $x_T$ seed, by 0.1 to 0.3.
# * **From $S = 5$ every DDIM cell of the $n = 200$ table is at its floor; at $n = 5{,}000$ none is.** There the floor
#   is 0.049, and $S = 5$ scores 0.433, 0.439 and 0.527 ($\eta$ = 0, 0.5 and 1: 8.9 to 10.8× the floor), $S = 10$ 0.180,
#   0.167 and 0.220 (3.4 to 4.5×), $S = 20$ 0.160, 0.147 and 0.138 (2.8 to 3.3×); FID$_\infty$ stays 0.05 to 0.45 above the
#   floor's 0.001. The same samples cut into random subsets of 200 average 1.75 to 1.80 at $S = 5$, against the floor's
#   1.17 ± 0.19 over draws: one draw of $n = 200$ cannot tell them from the data.
# * **Which $\eta$ is best depends on $S$, and $n = 200$ had it backwards at $S = 10$.** At $S = 3$ and 5, $\eta = 0$ is
#   best and $\eta = 1$ worst (2.71 against 2.95; 0.433 against 0.527): the paper's ordering. At $S = 10$, $\eta = 0.5$ is
#   best (0.167) and $\eta = 1$ still worst (0.220, against 0.180 for $\eta = 0$), where the $n = 200$ table put $\eta = 1$
#   lowest for every seed. At $S = 20$ the order has turned: $\eta = 1$ scores 0.138, $\eta = 0.5$ 0.147 and $\eta = 0$ 0.160,
#   and KID and FID$_\infty$ agree (every cell starts from the same $x_T$). Fresh noise can wash out part of the error
#   that earlier steps made, once the remaining steps are small enough to remove that noise again. On CIFAR-10 this comes
#   much later: Song et al.'s Table 1 has $\eta = 0$ best at every $S$ up to 1,000 (6.84 against 18.36 for $\eta = 1$ at 20
#   steps), and only the large-variance DDPM beats it, at 1,000 steps (3.17 against 4.04). At $S = 2$ the three are 34.60,
#   34.63 and 34.81, as the 1% noise predicts.
# * **The strided-DDPM row is the variant with $\sigma^2 = \beta_{t\to s}$**, Song et al.'s $\hat\sigma$ row. Its other
#   variant, $\sigma^2 = \tilde\beta_{t\to s}$, *is* the $\eta = 1$ row (the same step, tested in `tests/test_steps.py`),
#   so the gap between the two rows is the variance, not the striding. The two variances differ most on the step into
#   $t = 0$: $\tilde\beta_{t\to 0} = \frac{1-\bar\alpha_0}{1-\bar\alpha_t}\beta_{t\to 0}$ is tiny, while
#   $\beta_{t\to 0} = 1 - \bar\alpha_t/\bar\alpha_0$ is nearly the whole noise level at $t$. The strided chain therefore
#   arrives at $t = 0$, where the network expects noise of 0.01, carrying fresh noise of standard deviation 1.0000,
#   0.9603, 0.6918 and 0.3554 at $S = 2$, 3, 5 and 10 (the cell above; at $S = 2$, $\sigma^2 = \beta_{999\to 0} = 0.99996$),
#   and the last call cannot remove it: FID 129, 100, 59 and 15.6 at $n = 200$; 127, 97, 57, 14.2, 1.90 and 0.261 on
#   $S = 2$ to 50 at $n = 5{,}000$. At $n = 200$ it reaches the floor from $S = 50$; at $n = 5{,}000$ it is still 5.4×
#   the floor there (FID$_\infty$ 0.162), behind DDIM on 10 steps.
# * **Beyond 20 steps deterministic DDIM gains nothing measurable; stochastic DDIM still does.** With $\eta = 0$, 50
#   steps score 0.162 and 100 steps 0.164, level with 0.160 on 20. With $\eta = 0.5$ and 1, 50 steps score 0.134 and
#   0.123 (2.8× and 2.5× the floor, FID$_\infty$ 0.049 and 0.029; 97.5% and 98.0% accuracy), below every other cell of
#   the table, and the order of $S = 20$ holds: $\eta = 1$ best, $\eta = 0$ worst. So the shipped model's gap to the
#   data is not all its own: on 50 steps the $\eta = 0$ ODE keeps an error that fresh noise washes out. (On 100 steps
#   only $\eta = 0$ was measured at this $n$: 32 min per cell on this CPU.)

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
# ## 7. Interpolating between two noises: slerp against the straight line
#
# A sampler starts from $x_T \sim \mathcal N(0, I_d)$ with $d = 784$, whose norm concentrates at $\sqrt d = 28$. The
# straight-line midpoint of two independent draws, $(z_a + z_b)/2$, has variance $1/2$ per pixel and so a norm of about
# $\sqrt{d/2} \approx 19.8$: a point the sampler never starts from. Slerp follows the great circle between the two draws
# and keeps the norm. The histogram below is of 1,000 pairs of real draws.

# %%
z = torch.randn(2000, 784, generator=torch.Generator().manual_seed(2))
lin = lerp(z[:1000], z[1000:], 0.5).norm(dim=1)
sph = slerp(z[:1000], z[1000:], 0.5).norm(dim=1)
fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(z.norm(dim=1).numpy(), bins=40, alpha=0.6, label="2,000 draws of N(0, I), d = 784")
ax.hist(lin.numpy(), bins=40, alpha=0.6, label="linear midpoints of 1,000 pairs")
ax.hist(sph.numpy(), bins=40, alpha=0.6, label="slerp midpoints of the same pairs")
ax.set_xlabel("norm ||z||"); ax.set_ylabel("count"); ax.legend(); plt.tight_layout(); plt.show()
print(f"mean norm: draws {z.norm(dim=1).mean():.1f} (sqrt(d) = {math.sqrt(784):.1f}), linear midpoints {lin.mean():.1f} "
      f"(sqrt(d/2) = {math.sqrt(392):.1f}), slerp midpoints {sph.mean():.1f}")

# %% [markdown]
# What the decoder makes of a point inside the shell: 16 pairs of draws and their two midpoints, each decoded with DDIM
# ($\eta = 0$, S = 10) under the **null class** (label 10, the same for every image, so only $x_T$ differs between the
# rows). The cell prints each row's mean norm of $x_T$ and the mean pixel value of its images on $[0, 1]$ (the ink),
# beside that of 1,000 test digits.

# %%
g = torch.Generator().manual_seed(3)
z_a, z_b = torch.randn(16, 1, 28, 28, generator=g), torch.randn(16, 1, 28, 28, generator=g)
null = torch.full((16,), 10)
starts = {"draw a": z_a, "linear midpoint": lerp(z_a, z_b, 0.5), "slerp midpoint": slerp(z_a, z_b, 0.5), "draw b": z_b}
decoded = {name: sample(denoise, schedule, x_T, spaced(T, 10), ddim_step, stochastic=False, cond={"y": null},
                        progress=False) for name, x_T in starts.items()}
for name, x_T in starts.items():
    print(f"{name:>15}: norm of x_T {x_T.flatten(1).norm(dim=1).mean():5.1f}, ink of the 16 decoded images "
          f"{((decoded[name] + 1) / 2).mean():.2f}")
print(f"{'test digits':>15}: ink {((images[:1000] + 1) / 2).mean():.2f}")
show_grid(torch.stack([decoded[name][:8] for name in starts]), row_labels=list(starts),
          col_labels=[str(i) for i in range(8)], row_title="x_T", col_title="pair",
          title="DDIM (S = 10, null class) from two draws of N(0, I) and their two midpoints")

# %% [markdown]
# The linear midpoints decode to thin-stroked digits (two of the eight shown are ones), with about half the ink of the
# images decoded from the draws themselves and of the test digits; the slerp midpoints decode to ordinary digits with
# ordinary ink.
# The decoder reads a short $x_T$ as "little signal to remove" and draws little. (16 pairs: enough for a gap of this
# size, not for finer comparisons.)
#
# ### Two encodings are not two draws
#
# DDIM inversion (section 6) of a digit gives an $x_T$ that keeps the image's structure. Below, the first two sevens of
# the test set are encoded and decoded under their own label, 7, on S = 20 steps, and every point of both paths is
# decoded under the same label (changing the label half way would change the digit by itself).

# %%
sevens = (test_labels == 7).nonzero().flatten()[:2]
x7, y7 = images[sevens], torch.full((5,), 7)
x_T_pair = ddim_invert(denoise, schedule, x7, spaced(T, 20), cond={"y": y7[:2]})
flat = x_T_pair.flatten(1)
print(f"the two encodings: norms {flat.norm(dim=1)[0]:.1f} and {flat.norm(dim=1)[1]:.1f} (sqrt(d) = 28.0); "
      f"pixel mean {flat.mean():.2f}, pixel std {flat.std(dim=1).mean():.2f} (N(0, I): 0 and 1); "
      f"cosine between them {torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0):.2f} (two draws: about 0)")
print(f"norm of the midpoint: linear {lerp(flat[0], flat[1], 0.5).norm():.1f}, slerp {slerp(flat[:1], flat[1:], 0.5).norm():.1f}")
alphas = torch.linspace(0, 1, 5)
a, b = x_T_pair[:1].expand(5, -1, -1, -1), x_T_pair[1:].expand(5, -1, -1, -1)
paths = [sample(denoise, schedule, f(a, b, alphas), spaced(T, 20), ddim_step, stochastic=False, cond={"y": y7},
                progress=False) for f in (slerp, lerp)]
originals = torch.cat([x7[:1], torch.full((3, 1, 28, 28), -1.0), x7[1:]])
show_grid(torch.stack([originals] + paths), row_labels=["originals", "slerp", "linear"],
          col_labels=[f"{a:.2f}" for a in alphas.tolist()], row_title="path", col_title="alpha (0 = seven a, 1 = seven b)",
          title="decoded interpolations of two DDIM encodings (S = 20, label 7 throughout)")

# %% [markdown]
# The encodings are not typical draws: their norm is well inside the shell, their pixels have a positive mean and a
# standard deviation near 0.45, and the two point in related directions (cosine 0.45). Their linear midpoint is shorter than the ends,
# but by far less than $\sqrt 2$, and both paths decode to the same smooth passage from one seven to the other. The
# $\sqrt{d/2}$ argument, and with it the case for slerp, is about independent draws of $\mathcal N(0, I)$, as above;
# for encoded images it buys little here.

# %% [markdown]
# ## What to take away
#
# * A network trained on T steps samples on S steps without retraining: only the step's two alpha-bars change.
# * DDIM's $\eta$ chooses how much fresh noise each step adds. At few steps $\eta = 0$ beats $\eta = 1$ (the paper's ordering,
#   on MNIST at $S = 3$, 5 and 10 at $n = 5{,}000$); at 20 and 50 steps the order turns and $\eta = 1$ is best (on 50
#   steps 0.123 against 0.162 for $\eta = 0$, which gains nothing beyond 20 steps). At $S = 2$
#   ($[999, 0]$) $\eta$ only swaps 1% noise. From 5 steps every DDIM cell of the $n = 200$ table is at the floor; at
#   $n = 5{,}000$ none is ($S = 5$ is about 9× the floor, $S = 20$ about 3×): a small $n$ hides what the large one ranks.
# * $\eta = 0$ is an invertible map (up to discretisation): inversion is DDIM climbing, and it fails with clipping and
#   strong guidance.
# * Draws of $\mathcal N(0, I_d)$ live on a shell of radius $\sqrt d$; a straight-line midpoint of two of them lies inside
#   it and decodes to a faint digit, so interpolate along the shell (slerp). DDIM encodings of digits are not such draws.
#
# Exercises: `exercises/06_fast_sampling.ipynb` (one DDIM step, a timestep spacing of your own that must beat linspace on exact Gaussian oracles, DDIM inversion of a given denoiser, the norm of an exact encoding).
