# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/01_forward_process.ipynb)
#
# # Lesson 1 — The forward process: how noise destroys an image
#
# A diffusion model learns to *undo* a fixed process that slowly turns data into noise.
# Before any learning, we study that process on its own (Ho et al., 2020, Sec. 2):
#
# $$q(x_t \mid x_{t-1}) = \mathcal N\big(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big), \qquad t = 1, \dots, T.$$
#
# **In this lesson you will**
# 1. build the two classic noise schedules $\beta_1, \dots, \beta_T$: *linear* (Ho et al.) and *cosine* (Nichol & Dhariwal, 2021);
# 2. derive and check the closed form $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ against running the chain step by step;
# 3. watch a real photograph dissolve under both schedules, and measure how fast each destroys information.
#
# The code lives in `lesson_lib` (read `lesson_lib/diffusion/schedules.py` and `lesson_lib/diffusion/forward.py` beside this notebook);
# here we explain and show. The exercise notebook `exercises/01_forward_process.ipynb` asks you to write these functions yourself.
#
# **Index convention.** Papers count $t = 1, \dots, T$; Python counts from 0. In `lesson_lib`, code index `t` is the paper's $t+1$:
# `betas[0]` is $\beta_1$ and `alpha_bars[T-1]` is $\bar\alpha_T$.
#
# **Runtime.** Nothing is trained here, and every profile computes the same thing: `ci` profile about 40 s on a quiet 2-core CPU, up to 2 min when other jobs share its cores (the stored run, measured with `jupyter nbconvert --execute`); `cpu` and `gpu` profiles: the same, a matter of seconds.
#
# **Study time.** About 45 min to read and run this lesson, then about 45 min for the exercise (`exercises/01_forward_process.ipynb`).
#

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from lesson_lib.diffusion.forward import q_sample, q_sample_chain, q_step
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.course.plotting import load_sample_photo, show_images

torch.manual_seed(0)
T = 1000
linear = NoiseSchedule.linear(T)      # beta from 1e-4 to 0.02 (Ho et al., Sec. 4)
cosine = NoiseSchedule.cosine(T)      # Nichol & Dhariwal (2021), Eq. 17
schedules = {"linear": linear, "cosine": cosine}
print(linear)
print(cosine)

# %% [markdown]
# ## 1. Two schedules
#
# Write $\alpha_t = 1-\beta_t$ and $\bar\alpha_t = \prod_{s\le t}\alpha_s$. The **linear** schedule raises $\beta_t$ from $10^{-4}$ to $0.02$.
# The **cosine** schedule instead chooses $\bar\alpha_t$ directly,
#
# $$\bar\alpha_t = \frac{f(t)}{f(0)},\qquad f(t) = \cos^2\!\Big(\frac{t/T + s}{1+s}\cdot\frac{\pi}{2}\Big),\quad s = 0.008,$$
#
# and sets $\beta_t = 1 - \bar\alpha_t/\bar\alpha_{t-1}$, clipped at 0.999 so the last step stays finite.
# The signal-to-noise ratio $\mathrm{SNR}(t) = \bar\alpha_t / (1-\bar\alpha_t)$ says how much of $x_0$ is still visible in $x_t$.
#
# Reference values (the tests in `tests/test_schedules.py` check these too):

# %% [markdown]
# **A correction to the cosine formula as often printed in slides.** The square and the $\pi/2$ are sometimes dropped,
# giving $f(t) = \cos\big(\tfrac{t/T + s}{1+s}\big)$, which never reaches 0 at $t = T$ and so leaves signal in $x_T$.
# The course follows Nichol & Dhariwal (2021), Eq. 17: $f(t) = \cos\!\big(\tfrac{t/T + s}{1+s}\cdot\tfrac{\pi}{2}\big)^2$,
# $\bar\alpha_t = f(t)/f(0)$, and $\beta_t = 1 - \bar\alpha_t/\bar\alpha_{t-1}$ clipped at $0.999$.
# Below, the formula written out by hand matches `NoiseSchedule.cosine`, and the misprinted one does not.

# %%
s_off, t_frac = 0.008, torch.arange(T + 1, dtype=torch.float64) / T
f = torch.cos((t_frac + s_off) / (1 + s_off) * math.pi / 2) ** 2        # Eq. 17, with the square and pi/2
f_misprint = torch.cos((t_frac + s_off) / (1 + s_off))                 # square and pi/2 dropped
print(f"Eq. 17 by hand vs NoiseSchedule.cosine, largest |difference| of alpha_bar: "
      f"{(f[1:] / f[0] - cosine.alpha_bars).abs().max().item():.0e}")
print(f"alpha_bar_T: Eq. 17 = {(f[-1] / f[0]).item():.3f}, misprint = {(f_misprint[-1] / f_misprint[0]).item():.3f} (signal left at t = T)")

# %%
print(f"linear: alpha_bar_T = {linear.alpha_bars[-1].item():.4e}   (about 4.04e-05)")
print(f"cosine: beta_T      = {cosine.betas[-1].item():.3f}        (clipped to 0.999)")
print(f"cosine: alpha_bar at t = T/2 = {cosine.alpha_bars[T // 2 - 1].item():.5f} (about 0.49384)")

# %%
steps = np.arange(1, T + 1)
fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
for name, s in schedules.items():
    axes[0].plot(steps, s.betas, label=name)
    axes[1].plot(steps, s.alpha_bars, label=name)
    axes[2].plot(steps, torch.log10(s.snr), label=name)
axes[0].set(title=r"$\beta_t$", xlabel="t", yscale="log")
axes[1].set(title=r"$\bar\alpha_t$ (share of signal variance left)", xlabel="t")
axes[2].set(title=r"$\log_{10}\,\mathrm{SNR}(t)$", xlabel="t")
for ax in axes:
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The linear schedule drives $\bar\alpha_t$ to almost zero by $t \approx 600$: the last third of its steps all look like pure noise.
# The cosine schedule spends its steps more evenly — $\bar\alpha_t$ falls almost linearly in the middle — which is why Nichol & Dhariwal found it works better on small images.

# %% [markdown]
# ### Log-SNR: the noise level each step works at
#
# $\log \mathrm{SNR}_t = \log\big(\bar\alpha_t / (1-\bar\alpha_t)\big)$ (natural log) falls from about $+9$ (almost clean) to below $-10$ (almost pure noise).
# The linear schedule falls steeply at first and then spends its last few hundred steps far below 0; the cosine schedule falls almost linearly in the middle and steeply only in its last few steps.
# This matters for lesson 2: with few steps $T$, the linear schedule scaled to $T$ (betas times $1000/T$) has to clip $\beta_t$ at 0.999,
# and its last steps leave almost no signal — lesson 2's schedule ablation measures what that costs.

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
for name, s in schedules.items():
    ax.plot(steps, torch.log(s.alpha_bars / (1 - s.alpha_bars)), label=name)
ax.axhline(0, color="gray", ls=":", label="SNR = 1 (signal and noise equal)")
ax.set(xlabel="t (step, of T = 1000)", ylabel=r"$\log\,\mathrm{SNR}_t$ (natural log)",
       title=r"$\log\,\bar\alpha_t / (1-\bar\alpha_t)$ per schedule")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Why $\sqrt{1-\beta_t}$? Variance preservation
#
# Each step adds noise of variance $\beta_t$. If it did only that, $x_t = x_{t-1} + \sqrt{\beta_t}\,\varepsilon$, variances would add up:
# $\mathrm{Var}(x_t) = \mathrm{Var}(x_{t-1}) + \beta_t$, so unit-variance data would end at $1 + \sum_t \beta_t \approx 11$ for the linear schedule
# ($\sum_t\beta_t = 1000 \cdot (10^{-4} + 0.02)/2 = 10.05$), and the end point would depend on the data's scale.
# Shrinking the signal first, $x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon$, gives
# $\mathrm{Var}(x_t) = (1-\beta_t)\,\mathrm{Var}(x_{t-1}) + \beta_t$, which stays exactly 1 when it starts at 1: the process is *variance preserving*,
# and $x_T$ is a standard normal whatever $T$ is. Below, 5,000 unit-variance samples go through both chains (`q_step` for the first).

# %%
g1 = torch.Generator().manual_seed(3)
x_vp = torch.randn(5_000, 1, dtype=torch.float64, generator=g1)
x_add = x_vp.clone()
var_vp, var_add = [], []
for t in range(T):
    eps_t = torch.randn(x_vp.shape, dtype=torch.float64, generator=g1)
    x_vp = q_step(linear, x_vp, torch.full((len(x_vp),), t), eps_t)     # sqrt(1 - beta_t) x + sqrt(beta_t) eps
    x_add = x_add + linear.betas[t].sqrt() * eps_t                       # x + sqrt(beta_t) eps
    var_vp.append(x_vp.var().item()); var_add.append(x_add.var().item())
var_add_theory = 1 + torch.cumsum(linear.betas, 0)
print(f"Var(x_T): with sqrt(1 - beta_t): measured {var_vp[-1]:.2f}, theory 1.00 | "
      f"without: measured {var_add[-1]:.1f}, theory 1 + sum beta_t = {var_add_theory[-1].item():.2f}")

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(steps, np.ones(T), color="C0", label=r"$\sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon$, theory")
ax.plot(steps[::25], var_vp[::25], "o", color="C0", ms=4, label="same, measured (5,000 samples)")
ax.plot(steps, var_add_theory, color="C1", label=r"$x_{t-1} + \sqrt{\beta_t}\,\varepsilon$, theory $1 + \sum_{s\leq t}\beta_s$")
ax.plot(steps[::25], var_add[::25], "s", color="C1", ms=4, label="same, measured (5,000 samples)")
ax.set(xlabel="t (step, linear schedule)", ylabel=r"$\mathrm{Var}(x_t)$", title=r"unit-variance data: variance of $x_t$")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The closed form against the chain
#
# Because a sum of independent Gaussians is Gaussian, composing $t$ steps of the chain gives (Ho et al., Eq. 4)
#
# $$q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\, x_0,\ (1-\bar\alpha_t) I\big)
# \quad\Longleftrightarrow\quad x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon .$$
#
# This is what makes training cheap: we can jump straight to any $t$. Let us check it. We start 20,000 copies of
# $x_0 = 1.5$, run the chain step by step (`q_sample_chain`) and, separately, jump with the closed form (`q_sample`), then compare the mean and standard deviation at several $t$ with the theory.

# %% [markdown]
# **Where the closed form comes from: merging two steps.** Write two steps with independent noises $\varepsilon_{t-1}, \varepsilon_t \sim \mathcal N(0, I)$:
#
# $$x_{t-1} = \sqrt{\alpha_{t-1}}\,x_{t-2} + \sqrt{1-\alpha_{t-1}}\,\varepsilon_{t-1}, \qquad x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{1-\alpha_t}\,\varepsilon_t.$$
#
# Substitute the first into the second:
#
# $$x_t = \sqrt{\alpha_t\alpha_{t-1}}\,x_{t-2} + \underbrace{\sqrt{\alpha_t(1-\alpha_{t-1})}\,\varepsilon_{t-1} + \sqrt{1-\alpha_t}\,\varepsilon_t}_{\text{sum of two independent Gaussians}}.$$
#
# A sum of independent zero-mean Gaussians is a zero-mean Gaussian whose variance is the sum of the variances:
#
# $$\alpha_t(1-\alpha_{t-1}) + (1-\alpha_t) = 1 - \alpha_t\alpha_{t-1},$$
#
# so $x_t = \sqrt{\alpha_t\alpha_{t-1}}\,x_{t-2} + \sqrt{1-\alpha_t\alpha_{t-1}}\,\bar\varepsilon$ with a single $\bar\varepsilon \sim \mathcal N(0, I)$: two steps are one step with $\alpha_t\alpha_{t-1}$ in place of $\alpha_t$.
# By induction (merge the result with the step before, again and again down to $x_0$) the product becomes $\bar\alpha_t = \prod_{s\le t}\alpha_s$, which is the closed form above.
# The check: 200,000 copies of $x_{t-2} = 1.5$ through two `q_step`s at the end of the linear schedule, where $\beta$ is largest.

# %%
g2 = torch.Generator().manual_seed(4)
t = T - 1                                                          # code index of x_t; x_{t-2} is index t - 2
x_tm2 = torch.full((200_000, 1), 1.5, dtype=torch.float64)
x_two = x_tm2
for step in (t - 1, t):
    x_two = q_step(linear, x_two, torch.full((len(x_two),), step),
                   torch.randn(x_two.shape, dtype=torch.float64, generator=g2))
a_t, a_tm1 = linear.alphas[t].item(), linear.alphas[t - 1].item()
print(f"mean:     measured {x_two.mean().item():.3f}, predicted sqrt(alpha_t alpha_(t-1)) * 1.5 = {math.sqrt(a_t * a_tm1) * 1.5:.3f}")
print(f"variance: measured {x_two.var().item():.3f}, predicted 1 - alpha_t alpha_(t-1) = {1 - a_t * a_tm1:.3f}")
print(f"induction: product of all alphas = {torch.prod(linear.alphas).item():.4e}, alpha_bar_T = {linear.alpha_bars[-1].item():.4e}")

# %%
n, x0_value = 20_000, 1.5
x0 = torch.full((n, 1), x0_value, dtype=torch.float64)
g = torch.Generator().manual_seed(0)
chain = q_sample_chain(linear, x0, generator=g)           # (T, n, 1): every x_t
print(f"{'t':>5} | {'theory mean':>11} {'chain':>7} {'jump':>7} | {'theory std':>10} {'chain':>7} {'jump':>7}")
for t in [0, 9, 99, 299, 599, 999]:
    jump = q_sample(linear, x0, torch.full((n,), t))
    mean, std = math.sqrt(linear.alpha_bars[t]) * x0_value, math.sqrt(1 - linear.alpha_bars[t])
    print(f"{t + 1:>5} | {mean:>11.2f} {chain[t].mean():>7.2f} {jump.mean():>7.2f} | "
          f"{std:>10.2f} {chain[t].std():>7.2f} {jump.std():>7.2f}")
    # 20,000 samples: the standard error of the mean is below 0.01
    assert abs(chain[t].mean() - mean) < 0.03 and abs(jump.mean() - mean) < 0.03
    assert abs(chain[t].std() - std) < 0.03 and abs(jump.std() - std) < 0.03

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 3.4), sharey=True)
for ax, t in zip(axes, [9, 199, 999]):
    jump = q_sample(linear, x0, torch.full((n,), t))
    bins = np.linspace(-4, 4, 81)
    ax.hist(chain[t].flatten().numpy(), bins=bins, density=True, alpha=0.5, label="step-by-step chain")
    ax.hist(jump.flatten().numpy(), bins=bins, density=True, alpha=0.5, label="closed form")
    ax.set(title=f"t = {t + 1}", xlabel="$x_t$")
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The two histograms coincide: in distribution, $T$ small steps and one big jump are the same thing.
# (They are *not* the same sample path — the chain draws $t$ noises, the jump one — but training only ever needs the distribution.)

# %% [markdown]
# ## 3. A real photograph under both schedules
#
# Matplotlib ships a portrait of Grace Hopper. We scale it to $[-1, 1]$ (the range every image model in this course uses) and noise it with the **same** $\varepsilon$ under both schedules.

# %%
photo = load_sample_photo(size=128)                   # (3, 128, 128) in [-1, 1]
ts = [0, 49, 99, 249, 499, 749, 999]
eps = torch.randn(1, *photo.shape, generator=torch.Generator().manual_seed(1))
rows = []
for name, s in schedules.items():
    for t in ts:
        rows.append(q_sample(s, photo[None], torch.tensor([t]), eps)[0])
show_images(torch.stack(rows), nrow=len(ts), titles=[f"t={t + 1}" for t in ts] * 2,
            row_labels=list(schedules), figsize=(15, 4.8))

# %% [markdown]
# The jumps above use the closed form. Running the chain step by step (`q_step`, a fresh noise at every step) on the same photograph,
# and keeping it at the same $t$ columns, gives the second row below, under the linear schedule.
# The two rows are samples of the same distribution $q(x_t \mid x_0)$, not the same image: the noise patterns differ, the amount of noise does not.

# %%
g5 = torch.Generator().manual_seed(5)
x, kept = photo[None], []
for t in range(max(ts) + 1):
    x = q_step(linear, x, torch.tensor([t]), torch.randn(x.shape, generator=g5))
    if t in ts:
        kept.append(x[0])
jumps = [q_sample(linear, photo[None], torch.tensor([t]), eps)[0] for t in ts]
show_images(torch.stack(jumps + kept), nrow=len(ts), titles=[f"t={t + 1}" for t in ts] * 2,
            row_labels=["closed form,\none jump", "chain,\nstep by step"], figsize=(15, 4.8),
            suptitle="linear schedule: the same photograph noised two ways")


# %% [markdown]
# ## 4. How fast does each schedule destroy the image?
#
# $\sqrt{\bar\alpha_t}$ is the weight of $x_0$ in $x_t$. We measure what is left by the correlation between the photo's pixels and those of $x_t$,
# and find the first step where it falls below 0.1 — the point where little of the image is left.
#
# **The theoretical curve.** Treat the pixels of $x_0$ as samples with variance $\sigma_{x_0}^2 = \mathrm{Var}(x_0)$ (over the photo's pixels), and $\varepsilon$ as independent of them with unit variance. Then
# $\mathrm{Cov}(x_0, x_t) = \sqrt{\bar\alpha_t}\,\sigma_{x_0}^2$ and $\mathrm{Var}(x_t) = \bar\alpha_t\sigma_{x_0}^2 + 1 - \bar\alpha_t$, so per pixel
#
# $$\mathrm{corr}(x_0, x_t) = \frac{\sqrt{\bar\alpha_t}\,\sigma_{x_0}^2}{\sigma_{x_0}\sqrt{\bar\alpha_t\sigma_{x_0}^2 + 1-\bar\alpha_t}}
# = \frac{\sqrt{\bar\alpha_t}}{\sqrt{\bar\alpha_t + (1-\bar\alpha_t)/\mathrm{Var}(x_0)}}.$$
#
# For unit-variance data this is just $\sqrt{\bar\alpha_t}$. The photo in $[-1, 1]$ has a smaller variance (printed below), so its correlation falls faster than $\sqrt{\bar\alpha_t}$: the same noise hides a faint signal sooner. The plot overlays this curve (dashed) on the measured one.
#

# %%
def correlation(a, b):
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


all_t = torch.arange(T)
print(f"{'schedule':>8} | first t with corr < 0.1 | steps left after it | corr at t=500")
for name, s in schedules.items():
    x_all = q_sample(s, photo[None].expand(T, -1, -1, -1), all_t,
                     torch.randn(T, *photo.shape, generator=torch.Generator().manual_seed(2)))
    corr = np.array([correlation(photo, x_all[t]) for t in range(T)])
    gone = int(np.argmax(corr < 0.1))
    print(f"{name:>8} | {gone + 1:>23} | {T - gone - 1:>19} | {corr[499]:.2f}")
    schedules[name].measured_corr = corr

var_x0 = photo.var(unbiased=False).item()
print(f"Var(x_0) over the photo's pixels = {var_x0:.3f}")
plt.figure(figsize=(7, 3.5))
for k, (name, s) in enumerate(schedules.items()):
    theory = (s.alpha_bars.sqrt() / (s.alpha_bars + (1 - s.alpha_bars) / var_x0).sqrt()).numpy()
    print(f"{name:>8}: largest |measured - theory| = {np.abs(s.measured_corr - theory).max():.2f}")
    plt.plot(steps, s.measured_corr, color=f"C{k}", label=f"{name}, measured")
    plt.plot(steps, theory, color="black" if k == 0 else "gray", ls="--", lw=1, label=f"{name}, theory")
plt.axhline(0.1, color="gray", ls=":")
plt.xlabel("t (step)"); plt.ylabel("corr(photo, $x_t$)"); plt.legend(); plt.title("information left in $x_t$")
plt.show()

# %% [markdown]
# Under the linear schedule the photo is essentially gone a little past halfway, so about a third of all steps are spent on near-pure noise,
# where the model has little to learn. The cosine schedule keeps some image far longer and destroys it gradually: more of the model's capacity — and of the sampler's steps — go to the noise levels that matter.

# %% [markdown]
# ## 5. Explore: slide through t
#
# Move the slider (in JupyterLab or Colab; a static page shows only the widget's description).

# %%
# NBVAL_IGNORE_OUTPUT
# (a live widget: its text form depends on the ipywidgets version)
import ipywidgets as widgets


def show_t(t=250):
    pair = torch.stack([q_sample(s, photo[None], torch.tensor([t - 1]), eps)[0] for s in schedules.values()])
    show_images(pair, nrow=2, titles=[f"{name}, t={t}" for name in schedules], figsize=(6, 3.2))


slider = widgets.interactive(show_t, t=widgets.IntSlider(value=250, min=1, max=T, step=1, continuous_update=False))
slider

# %% [markdown]
# ## Summary
# * $\beta_t$ sets the noise added at each step; $\bar\alpha_t$ — the product of $1-\beta_s$ — says how much signal survives to step $t$.
# * The closed form $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\varepsilon$ agrees in distribution with the step-by-step chain.
# * The linear schedule destroys images early and wastes its last steps; the cosine schedule spreads the destruction evenly.
#
# **Next:** lesson 2 trains a model to run this process backwards, on 2-D data where everything fits in a plot.
