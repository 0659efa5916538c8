# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/01b_reverse_process.ipynb)
#
# # Lesson 1b — The reverse process, and the bound behind $L_\text{simple}$
#
# Lesson 1 built the forward process $q$, which turns data into noise one small Gaussian step at a time.
# Lesson 2 will *train* a network to undo it and sample with Algorithm 2 of Ho et al. (2020). This lesson sits between the two and answers
# the questions Algorithm 2 leaves open:
#
# 1. Why may the reverse step $p_\theta(x_{t-1} \mid x_t)$ be a **Gaussian** at all?
# 2. What is the exact reverse step when $x_0$ is known — the posterior $q(x_{t-1} \mid x_t, x_0)$, with mean $\tilde\mu_t$ and variance $\tilde\beta_t$ (Eqs. 6–7)?
# 3. Where does the training loss come from? The **variational bound** splits into KL terms between Gaussians; predicting the noise $\varepsilon$ is a rewriting of
#    predicting $\tilde\mu_t$, and the bound weighs each $t$ by $\lambda_t$, which $L_\text{simple}$ drops. What does dropping it do?
# 4. What does a trained $\varepsilon_\theta$ estimate? The **score** $\nabla\log p_t$ of the noisy data, scaled (Tweedie's formula), which lesson 5 steers with.
#
# Every claim is checked numerically with `lesson_lib` (`lesson_lib/diffusion/forward.py`: `q_posterior`, `empirical_posterior`;
# `lesson_lib/diffusion/losses.py`: `vlb_weights`, `WeightedEps`).
#
# **Runtime.** `ci` profile (the stored outputs): about 4 minutes (224 s) single-threaded on a shared 2-core CPU, most of it section 5's three small trainings (2,000 steps each).
# The `cpu` and `gpu` profiles train the same models from three seeds each (about 10 minutes single-threaded on a shared 2-core CPU, estimated from the run quoted in section 5; the trainings run on the CPU in every profile).
#
# **Study time.** About 1.5–2 h to read and work through the derivations, then about 45 min for the exercise (`exercises/01b_reverse_process.ipynb`).
# Code timestep `t` in `0, ..., T-1` is the paper's $t+1$.

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

from lesson_lib.data.toy import swiss_roll
from lesson_lib.diffusion.forward import empirical_posterior, q_posterior, q_sample, q_step, x0_from_eps
from lesson_lib.diffusion.losses import LSimple, WeightedEps, vlb_weights
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.sampling import ddpm_sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.evaluation.metrics import sample_quality_2d
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.training.profiles import current_profile
from lesson_lib.training.trainer import TrainConfig, Trainer

torch.manual_seed(0)
profile = current_profile()
SIZES = {"ci": dict(steps=2000, hidden=64, samples=5000, seeds=1),
         "cpu": dict(steps=2000, hidden=64, samples=5000, seeds=3),
         "gpu": dict(steps=2000, hidden=64, samples=5000, seeds=3)}[profile]
print("profile:", profile, SIZES)


# %% [markdown]
# ## 1. Why the reverse of a small Gaussian step is close to Gaussian
#
# One forward step is $q(x_t \mid x_{t-1}) = \mathcal N(\sqrt{\alpha_t}\,x_{t-1},\ \beta_t I)$ with $\alpha_t = 1 - \beta_t$. Its reverse follows from Bayes' rule:
#
# $$q(x_{t-1} \mid x_t) = \frac{q(x_t \mid x_{t-1})\, q(x_{t-1})}{q(x_t)} \;\propto\; \exp\Big(-\frac{\lVert x_t - \sqrt{\alpha_t}\,x_{t-1}\rVert^2}{2\beta_t}\Big)\; q(x_{t-1}).$$
#
# As a function of $x_{t-1}$, the first factor is a Gaussian centred at $x_t/\sqrt{\alpha_t}$ with standard deviation $\sqrt{\beta_t/\alpha_t}$.
# When $\beta_t$ is small that window is narrow, and over a narrow window the log-density $\log q(x_{t-1})$ is almost a straight line (its first-order Taylor expansion):
#
# $$\log q(x_{t-1}) \approx \log q(c) + \nabla \log q(c)^\top (x_{t-1} - c), \qquad c = x_t/\sqrt{\alpha_t}.$$
#
# A Gaussian times the exponential of a linear function is again a Gaussian (complete the square): its mean moves by $\frac{\beta_t}{\alpha_t}\nabla\log q(c)$ and its variance stays $\beta_t/\alpha_t$.
# So the reverse step is Gaussian **up to the curvature of $\log q$ across a window of width $\sqrt{\beta_t}$** (Feller, 1949; Sohl-Dickstein et al., 2015, Sec. 2.2).
# With large steps the window is wide and the reverse step can be anything — e.g. bimodal.
#
# We check this exactly in 1-D: the data are two points $\pm 1$, so $q(x_{t-1})$ is a mixture of two Gaussians and $q(x_{t-1} \mid x_t)$ can be evaluated on a grid.
# We compare it with the Gaussian of the same mean and variance for one step of a $T = 1000$ chain and one step of a $T = 5$ chain, both taken where $\bar\alpha_{t-1} \approx 0.9$
# (the two bumps of $q(x_{t-1})$ are still well apart), given $x_t = 0.3$. The distance between the two curves is their total variation, $\frac12\int |p - \text{Gaussian}|$ (0: identical, 1: disjoint).

# %%
def exact_reverse(schedule, t, x_t, grid):
    """q(x_{t-1} | x_t) on a grid, for data = the two points -1 and +1 (code index t, so x_{t-1} has alpha-bar_prev)."""
    ab_prev, a, b = schedule.alpha_bars_prev[t], schedule.alphas[t], schedule.betas[t]
    prior = sum(torch.exp(-(grid - m * ab_prev.sqrt()) ** 2 / (2 * (1 - ab_prev))) for m in (-1.0, 1.0))
    density = torch.exp(-(x_t - a.sqrt() * grid) ** 2 / (2 * b)) * prior
    return density / torch.trapezoid(density, grid)


grid = torch.linspace(-4, 4, 8001, dtype=torch.float64)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for ax, T in zip(axes, (1000, 5)):
    s = NoiseSchedule.linear(T) if T == 1000 else NoiseSchedule.linear(T, 0.1, 0.6)
    t = int(torch.argmin((s.alpha_bars_prev - 0.9).abs()))
    p = exact_reverse(s, t, 0.3, grid)
    mean = torch.trapezoid(grid * p, grid)
    var = torch.trapezoid((grid - mean) ** 2 * p, grid)
    gauss = torch.exp(-(grid - mean) ** 2 / (2 * var)) / (2 * math.pi * var).sqrt()
    tv = 0.5 * torch.trapezoid((p - gauss).abs(), grid).item()
    ax.plot(grid, p, label="exact $q(x_{t-1} \\mid x_t = 0.3)$")
    ax.plot(grid, gauss, "--", label="Gaussian, same mean and variance")
    ax.set_xlim(-2, 2) if T == 5 else ax.set_xlim(mean - 6 * var.sqrt(), mean + 6 * var.sqrt())
    ax.set_xlabel("$x_{t-1}$"); ax.set_ylabel("density"); ax.legend(fontsize=8)
    ax.set_title(f"one step of T = {T}: beta_t = {s.betas[t].item():.4f}\ntotal variation to the Gaussian = {tv:.4f}", fontsize=10)
    print(f"T = {T:4d}: beta_t = {s.betas[t].item():.4f}, total-variation distance to a Gaussian = {tv:.4f}")
plt.tight_layout()
plt.show()

# %% [markdown]
# With a small step ($\beta_t \approx 0.002$) the exact reverse step *is* a Gaussian, to a total-variation distance of 0.0003;
# with one big step ($\beta_t = 0.225$) it has the two bumps of the data, and the best Gaussian misses a third of its mass (total variation 0.34). This is why DDPM needs many small steps (and one reason lesson 2's $T = 10$ run loses quality: about 3 times the data-vs-data floor, against about 1.2 times with $T = 100$),
# and why fast samplers need more than a Gaussian step (lessons 6 and 7).

# %% [markdown]
# ## 2. The posterior $q(x_{t-1} \mid x_t, x_0)$, derived
#
# $q(x_{t-1} \mid x_t)$ depends on the whole data distribution, but given one $x_0$ the reverse step is **exactly** Gaussian, because both factors of Bayes' rule are:
#
# $$q(x_{t-1} \mid x_t, x_0) = \frac{q(x_t \mid x_{t-1})\; q(x_{t-1} \mid x_0)}{q(x_t \mid x_0)}$$
#
# (the chain is Markov, so $q(x_t \mid x_{t-1}, x_0) = q(x_t \mid x_{t-1})$). Keep only the terms that depend on $x_{t-1}$ (1-D for brevity; every coordinate is the same):
#
# $$\log q(x_{t-1} \mid x_t, x_0) = -\frac{(x_t - \sqrt{\alpha_t}\,x_{t-1})^2}{2\beta_t} - \frac{(x_{t-1} - \sqrt{\bar\alpha_{t-1}}\,x_0)^2}{2(1-\bar\alpha_{t-1})} + \text{const}.$$
#
# Expand the squares and collect powers of $x_{t-1}$:
#
# $$= -\frac12\Big(\frac{\alpha_t}{\beta_t} + \frac{1}{1-\bar\alpha_{t-1}}\Big)x_{t-1}^2 + \Big(\frac{\sqrt{\alpha_t}}{\beta_t}x_t + \frac{\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_{t-1}}x_0\Big)x_{t-1} + \text{const}.$$
#
# A Gaussian $\mathcal N(\tilde\mu, \tilde\beta)$ has log-density $-\frac{1}{2\tilde\beta}x^2 + \frac{\tilde\mu}{\tilde\beta}x + \text{const}$, so reading off the coefficients:
#
# $$\frac{1}{\tilde\beta_t} = \frac{\alpha_t}{\beta_t} + \frac{1}{1-\bar\alpha_{t-1}} = \frac{\alpha_t(1-\bar\alpha_{t-1}) + \beta_t}{\beta_t(1-\bar\alpha_{t-1})} = \frac{1-\bar\alpha_t}{\beta_t(1-\bar\alpha_{t-1})},$$
#
# using $\alpha_t(1-\bar\alpha_{t-1}) + \beta_t = \alpha_t - \bar\alpha_t + 1 - \alpha_t = 1 - \bar\alpha_t$. Hence (**Eq. 7**)
#
# $$\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t, \qquad
# \tilde\mu_t = \tilde\beta_t\Big(\frac{\sqrt{\alpha_t}}{\beta_t}x_t + \frac{\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_{t-1}}x_0\Big) = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t .$$
#
# Note $\tilde\beta_t < \beta_t$ always, and at $t = 1$ ($\bar\alpha_0 = 1$): $\tilde\beta_1 = 0$ and $\tilde\mu_1 = x_0$.
#
# **Checked against the chain.** Fix one $x_0$, draw $x_{t-1} \sim q(x_{t-1} \mid x_0)$ and then $x_t$ by one step of the chain (`q_step`), 400,000 times.
# Group the pairs by the value of $x_t$ (bins of width 0.05) and measure the mean and variance of $x_{t-1}$ in each bin (`empirical_posterior`).
# Within a bin $\tilde\mu_t$ itself varies a little, which adds $(\text{slope} \times 0.05)^2/12$ to the measured variance; we add it to the prediction.

# %%
s50, t = NoiseSchedule.from_name("linear", 50), 5
n, g = 400_000, torch.Generator().manual_seed(0)
x0 = torch.full((n, 1), 0.8, dtype=torch.float64)
x_prev = q_sample(s50, x0, torch.full((n,), t - 1), torch.randn(n, 1, generator=g, dtype=torch.float64))
x_t = q_step(s50, x_prev, torch.full((n,), t), torch.randn(n, 1, generator=g, dtype=torch.float64))
edges = torch.linspace(0.4, 1.1, 15)
centres, mean, var, count = empirical_posterior(x_prev, x_t, edges)
mu, beta_tilde, _ = q_posterior(s50, x0[:len(centres)], centres[:, None], torch.full((len(centres),), t))
in_bin = (0.05 * s50.posterior_mean_coef_xt[t]) ** 2 / 12

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
axes[0].plot(centres, mean, "o", label="chain: mean of $x_{t-1}$ in the bin")
axes[0].plot(centres, mu[:, 0], "-", label=r"$\tilde\mu_t(x_t, x_0)$, Eq. 7")
axes[0].set_xlabel("$x_t$ (bin centre)"); axes[0].set_ylabel("$x_{t-1}$"); axes[0].legend(fontsize=8)
axes[0].set_title(f"posterior mean, x_0 = 0.8, paper's t = {t + 1} of T = 50")
axes[1].plot(centres, var, "o", label="chain: variance of $x_{t-1}$ in the bin")
axes[1].axhline(beta_tilde[0, 0] + in_bin, color="C1", label=r"$\tilde\beta_t$ (+ the in-bin spread)")
axes[1].axhline(s50.betas[t], color="C2", ls="--", label=r"$\beta_t$")
axes[1].set_xlabel("$x_t$ (bin centre)"); axes[1].set_ylabel("variance"); axes[1].legend(fontsize=8)
axes[1].set_title("posterior variance")
plt.tight_layout()
plt.show()
print(f"largest |chain mean - mu-tilde| over {len(centres)} bins: {(mean - mu[:, 0]).abs().max().item():.3f}")
print(f"chain variance / (beta-tilde_t + in-bin spread): {(var / (beta_tilde[0, 0] + in_bin)).min().item():.2f}"
      f" to {(var / (beta_tilde[0, 0] + in_bin)).max().item():.2f};  beta-tilde_t / beta_t = {(beta_tilde[0, 0] / s50.betas[t]).item():.2f}")

# %% [markdown]
# The chain's moments sit on $\tilde\mu_t$ and $\tilde\beta_t$, clearly below $\beta_t$. How much smaller is $\tilde\beta_t$ than $\beta_t$ along the chain?

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.4))
for name in ("linear", "cosine"):
    s = NoiseSchedule.from_name(name, 1000)
    ax.plot(torch.arange(1, 1001), s.posterior_variance / s.betas, label=f"{name} schedule")
ax.set_xscale("log"); ax.set_xlabel("paper's t (log scale), T = 1000"); ax.set_ylabel(r"$\tilde\beta_t / \beta_t$")
ax.set_title(r"$\tilde\beta_t / \beta_t = (1 - \bar\alpha_{t-1}) / (1 - \bar\alpha_t)$"); ax.legend(); ax.grid(alpha=0.3)
plt.show()
for name in ("linear", "cosine"):
    s = NoiseSchedule.from_name(name, 1000)
    r = s.posterior_variance / s.betas
    within = int((r < 0.99).nonzero().max()) + 2          # paper's t from which the ratio stays above 0.99
    print(f"{name}: ratio at t = 1, 2, 10, 100, 1000: {[round(r[i].item(), 3) for i in (0, 1, 9, 99, 999)]}; "
          f"within 1% of 1 from t = {within}")

# %% [markdown]
# The two choices differ only in the first steps: at $t = 100$ the ratio is 0.982 on both schedules, and it stays within 1% of 1 from $t = 168$ (linear) and $t = 186$ (cosine) on. Ho et al. (Sec. 3.2) fix $\sigma_t^2$ to one of them:
# $\tilde\beta_t$ is exact when the data is a single point $x_0$ (the posterior above), $\beta_t$ is exact when $x_0 \sim \mathcal N(0, I)$ (then every $x_t$ is $\mathcal N(0, I)$ and the reverse of
# $x_t = \sqrt{\alpha_t}x_{t-1} + \sqrt{\beta_t}\varepsilon$ has variance $\beta_t$). The exercise derives the exact reverse step for Gaussian data, of which both are limits, and checks it by simulation.

# %% [markdown]
# ## 3. The variational bound and the weight $\lambda_t$
#
# The model is $p_\theta(x_{0:T}) = p(x_T)\prod_{t=1}^T p_\theta(x_{t-1} \mid x_t)$ with $p(x_T) = \mathcal N(0, I)$ and Gaussian steps $p_\theta(x_{t-1}\mid x_t) = \mathcal N(\mu_\theta(x_t, t), \sigma_t^2 I)$.
# Its likelihood has a lower bound (Jensen's inequality, as for a VAE whose latents are $x_{1:T}$):
#
# $$-\log p_\theta(x_0) \le \mathbb E_q\Big[-\log\frac{p_\theta(x_{0:T})}{q(x_{1:T}\mid x_0)}\Big] = L.$$
#
# Write out the two chains, $p_\theta(x_{0:T}) = p(x_T)\prod_t p_\theta(x_{t-1}\mid x_t)$ and $q(x_{1:T}\mid x_0) = \prod_t q(x_t\mid x_{t-1})$, keep $t = 1$ apart, and rewrite every other
# forward factor with Bayes' rule *conditioned on $x_0$* (the chain is Markov, so conditioning on $x_0$ changes nothing):
# $q(x_t \mid x_{t-1}) = q(x_{t-1}\mid x_t, x_0)\,q(x_t\mid x_0)/q(x_{t-1}\mid x_0)$ for $t \ge 2$. Then
#
# $$L = \mathbb E_q\Big[-\log p(x_T) - \sum_{t=2}^{T}\log\frac{p_\theta(x_{t-1}\mid x_t)}{q(x_{t-1}\mid x_t, x_0)} - \sum_{t=2}^{T}\log\frac{q(x_{t-1}\mid x_0)}{q(x_t\mid x_0)} - \log\frac{p_\theta(x_0\mid x_1)}{q(x_1\mid x_0)}\Big].$$
#
# The third sum **telescopes**: written out it is $\log q(x_1\mid x_0) - \log q(x_2\mid x_0) + \log q(x_2\mid x_0) - \dots - \log q(x_T\mid x_0) = \log q(x_1\mid x_0) - \log q(x_T\mid x_0)$.
# Its $\log q(x_1\mid x_0)$ cancels the denominator of the last term, and its $\log q(x_T\mid x_0)$ joins $-\log p(x_T)$:
#
# $$L = \mathbb E_q\Big[\log\frac{q(x_T\mid x_0)}{p(x_T)} + \sum_{t=2}^{T}\log\frac{q(x_{t-1}\mid x_t, x_0)}{p_\theta(x_{t-1}\mid x_t)} - \log p_\theta(x_0\mid x_1)\Big].$$
#
# Each log-ratio compares two densities of the same variable, and its expectation under the numerator's density is a KL divergence. So $L$ splits into (Ho et al., Eq. 5)
#
# $$L = \underbrace{\mathrm{KL}\big(q(x_T\mid x_0)\,\Vert\,p(x_T)\big)}_{L_T} + \sum_{t=2}^{T}\underbrace{\mathrm{KL}\big(q(x_{t-1}\mid x_t,x_0)\,\Vert\,p_\theta(x_{t-1}\mid x_t)\big)}_{L_{t-1}} \underbrace{-\,\log p_\theta(x_0\mid x_1)}_{L_0}.$$
#
# * $L_T$ has no parameters: it is small when $\bar\alpha_T \approx 0$ and is ignored in training.
# * $L_{t-1}$ is a KL between two Gaussians. With equal covariance $\sigma_t^2 I$ in $p_\theta$ and $\tilde\beta_t I$ in $q$, the closed form gives
#   $L_{t-1} = \frac{1}{2\sigma_t^2}\lVert\tilde\mu_t(x_t, x_0) - \mu_\theta(x_t, t)\rVert^2 + C_t$ (Eq. 8), with $C_t$ independent of $\theta$ ($C_t = 0$ when $\sigma_t^2 = \tilde\beta_t$).
# * $L_0$ is the decoder. For a Gaussian decoder, $\tilde\mu_1 = x_0$ makes it the same squared error with $\sigma_1^2$ (Ho et al. use a discretised decoder for images).
#
# **Predicting $\varepsilon$ is a reparameterisation of predicting $\tilde\mu_t$.** Write $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ (lesson 1), i.e. $x_0 = \frac{1}{\sqrt{\bar\alpha_t}}(x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon)$, and substitute it into $\tilde\mu_t$:
#
# $$\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{(1-\bar\alpha_t)\sqrt{\bar\alpha_t}}\big(x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon\big) + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t.$$
#
# Since $\sqrt{\bar\alpha_{t-1}}/\sqrt{\bar\alpha_t} = 1/\sqrt{\alpha_t}$, the coefficient of $x_t$ is
# $\frac{\beta_t + \alpha_t(1-\bar\alpha_{t-1})}{\sqrt{\alpha_t}(1-\bar\alpha_t)} = \frac{1-\bar\alpha_t}{\sqrt{\alpha_t}(1-\bar\alpha_t)} = \frac{1}{\sqrt{\alpha_t}}$ (the same identity as in section 2), and the coefficient of $\varepsilon$ is $-\frac{\beta_t}{\sqrt{\alpha_t}\sqrt{1-\bar\alpha_t}}$:
#
# $$\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\varepsilon\Big) \qquad\text{(Eq. 10)}.$$
#
# $x_t$ is the network's input, so the only unknown is $\varepsilon$: choose $\mu_\theta$ of the same form with $\varepsilon_\theta(x_t, t)$ in place of $\varepsilon$ (Eq. 11). Then
#
# $$\tilde\mu_t - \mu_\theta = \frac{\beta_t}{\sqrt{\alpha_t}\sqrt{1-\bar\alpha_t}}\,(\varepsilon_\theta - \varepsilon), \qquad
# L_{t-1} - C_t = \underbrace{\frac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1-\bar\alpha_t)}}_{\lambda_t}\,\lVert\varepsilon - \varepsilon_\theta(x_t, t)\rVert^2 \qquad\text{(Eq. 12)}.$$
#
# $L_\text{simple}$ (Eq. 14) is this with every $\lambda_t$ replaced by 1. With $\sigma_t^2 = \beta_t$, $\lambda_t = \frac{\beta_t}{2\alpha_t(1-\bar\alpha_t)}$; with $\sigma_t^2 = \tilde\beta_t$, $\lambda_t = \frac{\beta_t}{2\alpha_t(1-\bar\alpha_{t-1})}$,
# infinite at $t = 1$ ($\tilde\beta_1 = 0$); `vlb_weights` then uses $\tilde\beta_2$ there, as Ho et al.'s code clips the log-variance.
#
# First the identity, numerically: the closed-form Gaussian KL, minus its value at $\varepsilon_\theta = \varepsilon$, divided by $\lVert\varepsilon - \varepsilon_\theta\rVert^2$, for random vectors.

# %%
s = NoiseSchedule.linear(1000)
g = torch.Generator().manual_seed(2)
t = torch.tensor([1, 5, 50, 500, 999])
x0, eps, eps_hat = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
x_t = q_sample(s, x0, t, eps)
mean_q, var_q, _ = q_posterior(s, x0, x_t, t)
mu_theta = lambda e: q_posterior(s, x0_from_eps(s, x_t, t, e), x_t, t)[0]      # Eq. 11: mu-tilde at x0_hat(eps)
kl = lambda mean_p, var_p: (0.5 * (torch.log(var_p / var_q) + var_q / var_p - 1) + (mean_q - mean_p) ** 2 / (2 * var_p)).sum(-1)
for variance in ("beta", "beta_tilde"):
    var_p = s.betas[t, None] if variance == "beta" else var_q
    ratio = (kl(mu_theta(eps_hat), var_p) - kl(mu_theta(eps), var_p)) / ((eps - eps_hat) ** 2).sum(-1)
    err = ((ratio - vlb_weights(s, variance)[t]).abs() / vlb_weights(s, variance)[t]).max().item()
    print(f"sigma^2 = {variance:<10}: KL / ||eps - eps_hat||^2 equals lambda_t at t = {(t + 1).tolist()}: {err < 1e-9}")

# %% [markdown]
# Now the weight itself, on a log scale, for both schedules and both choices of $\sigma_t^2$ ($T = 1000$):

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for ax, name in zip(axes, ("linear", "cosine")):
    s = NoiseSchedule.from_name(name, 1000)
    for variance, style in (("beta", "-"), ("beta_tilde", "--")):
        ax.plot(torch.arange(1, 1001), vlb_weights(s, variance), style,
                label=r"$\sigma_t^2 = \beta_t$" if variance == "beta" else r"$\sigma_t^2 = \tilde\beta_t$")
    ax.axhline(1, color="gray", lw=0.8, label=r"$L_\mathrm{simple}$: $\lambda_t = 1$")
    ax.set_yscale("log"); ax.set_xlabel("paper's t"); ax.set_title(f"{name} schedule, T = 1000"); ax.grid(alpha=0.3)
axes[0].set_ylabel(r"$\lambda_t$ (log scale)"); axes[0].legend()
plt.tight_layout()
plt.show()
for name in ("linear", "cosine"):
    w = vlb_weights(NoiseSchedule.from_name(name, 1000), "beta")
    print(f"{name}: lambda_t (sigma^2 = beta) is largest at t = {int(w.argmax()) + 1}; "
          f"lambda_1 = {w[0].item():.3f}, lambda_500 = {w[499].item():.4f}, lambda_1000 = {w[999].item():.4g}")

# %% [markdown]
# On the linear schedule the bound weighs the first, least noisy steps most: $\lambda_1 = 1/(2\alpha_1) \approx 0.5$, and $\lambda_t$ falls about ninety-fold by $t \approx 500$, then rises slightly towards $t = T$.
# On the cosine schedule the clipped last steps ($\beta_t \to 0.999$, so $\alpha_t \to 0.001$) make $\lambda_t$ explode near $t = T$.
# $L_\text{simple}$ gives every $t$ the same weight: compared with the bound it **down-weights the small-$t$ terms** (on the linear schedule), spending the network's capacity on the noisier, harder denoising tasks;
# Ho et al. (Sec. 3.4) report better samples this way. Section 5 measures what it does on a toy problem.

# %% [markdown]
# ## 4. What $\varepsilon_\theta$ estimates: the score of the noisy data
#
# Lesson 5 steers sampling with the gradient of the noisy data's log-density, $\nabla\log p_t(x_t)$ (the **score**), and takes it from the noise-predicting network.
# That a network trained on $L_\text{simple}$ knows the score follows in two steps.
#
# **The best $\varepsilon_\theta$ is a conditional mean.** At each $t$ the squared error splits as
# $\mathbb E\lVert\varepsilon - f(x_t)\rVert^2 = \mathbb E\lVert\varepsilon - \mathbb E[\varepsilon\mid x_t]\rVert^2 + \mathbb E\lVert\mathbb E[\varepsilon\mid x_t] - f(x_t)\rVert^2$
# (the cross term vanishes once we condition on $x_t$). The first part does not depend on $f$, so $L_\text{simple}$ is minimised by $\varepsilon^*(x_t, t) = \mathbb E[\varepsilon\mid x_t]$,
# and that first part is a loss no network can go below (lesson 2 computes it for the swiss roll).
#
# **That conditional mean is the score, scaled (Tweedie's formula).** The noisy marginal is $p_t(x_t) = \int q(x_t\mid x_0)\,p(x_0)\,dx_0$ with $q(x_t\mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\,x_0, (1-\bar\alpha_t)I)$.
# Differentiate under the integral, using $\nabla_{x_t} q(x_t\mid x_0) = -\frac{x_t - \sqrt{\bar\alpha_t}\,x_0}{1-\bar\alpha_t}\,q(x_t\mid x_0)$ and Bayes' rule $q(x_t\mid x_0)\,p(x_0)/p_t(x_t) = q(x_0\mid x_t)$:
#
# $$\nabla\log p_t(x_t) = \frac{1}{p_t(x_t)}\int \nabla_{x_t} q(x_t\mid x_0)\,p(x_0)\,dx_0 = -\frac{x_t - \sqrt{\bar\alpha_t}\,\mathbb E[x_0\mid x_t]}{1-\bar\alpha_t}.$$
#
# Solved for the mean, this is **Tweedie's formula** (Efron, 2011): $\mathbb E[x_0\mid x_t] = \big(x_t + (1-\bar\alpha_t)\nabla\log p_t(x_t)\big)/\sqrt{\bar\alpha_t}$.
# Since $x_t - \sqrt{\bar\alpha_t}\,x_0 = \sqrt{1-\bar\alpha_t}\,\varepsilon$, the same line says
#
# $$\mathbb E[\varepsilon\mid x_t] = -\sqrt{1-\bar\alpha_t}\;\nabla\log p_t(x_t), \qquad\text{so a trained network has}\qquad \varepsilon_\theta(x_t, t) \approx -\sqrt{1-\bar\alpha_t}\;\nabla\log p_t(x_t).$$
#
# This is **denoising score matching** (Vincent, 2011): regressing the score of the noising step, $\nabla_{x_t}\log q(x_t\mid x_0) = -\varepsilon/\sqrt{1-\bar\alpha_t}$, on $x_t$ alone
# gives the score of the marginal $p_t$, which we can never evaluate. Ho et al. (Sec. 3.2) make this connection; $L_\text{simple}$ is denoising score matching at every noise level, with the loss scaled by $1-\bar\alpha_t$.
#
# **Checked on Gaussian data, where everything is exact.** For $x_0 \sim \mathcal N(m, s^2 I)$ every marginal is Gaussian, $p_t = \mathcal N\big(\sqrt{\bar\alpha_t}\,m, (\bar\alpha_t s^2 + 1 - \bar\alpha_t) I\big)$, and
# `GaussianData` (`lesson_lib/diffusion/oracles.py`) returns $\mathbb E[\varepsilon\mid x_t]$ in closed form. We compare it with $-\sqrt{1-\bar\alpha_t}$ times the gradient that autograd takes of $\log p_t$,
# and with a Monte Carlo estimate that uses nothing but Bayes' rule: draw $x_0$ from the data, weight each draw by $q(x_t\mid x_0)$, and average the noise $\varepsilon = (x_t - \sqrt{\bar\alpha_t}\,x_0)/\sqrt{1-\bar\alpha_t}$ that would have produced $x_t$.

# %%
s = NoiseSchedule.linear(1000)
m, sd = 0.5, 0.3                                            # the data: x_0 ~ N(0.5, 0.3^2 I)
gauss = GaussianData(s, mean=m, std=sd, dim=3)
g = torch.Generator().manual_seed(3)
t = torch.tensor([0, 9, 99, 499, 999])                      # one x_t (3-D) at each of these code timesteps
x_t = torch.randn(len(t), 3, generator=g, dtype=torch.float64).requires_grad_()
a = s.alpha_bars[t, None]
log_p = torch.distributions.Normal(a.sqrt() * m, (a * sd ** 2 + 1 - a).sqrt()).log_prob(x_t).sum()
score, = torch.autograd.grad(log_p, x_t)                    # grad log p_t(x_t), one row per x_t
exact = gauss(x_t.detach(), t)                              # E[eps | x_t] in closed form
error = ((-(1 - a).sqrt() * score - exact).abs().max() / exact.abs().max()).item()
print(f"-sqrt(1 - alpha-bar_t) * grad log p_t(x_t) equals E[eps | x_t] at t = {(t + 1).tolist()} "
      f"to float64 precision (relative error < 1e-12): {error < 1e-12}")

x0 = gauss.sample(1_000_000, generator=g)[:, 0]             # a million 1-D draws of the data
print("\n   t    x_t   E[eps | x_t]: exact   Monte Carlo (+- its standard error)")
for code_t, x in ((9, 0.6), (99, 0.6), (99, -1.0), (499, 0.6)):
    ab = s.alpha_bars[code_t]
    eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()            # the noise that takes each draw to x_t = x
    weights = torch.softmax(-eps ** 2 / 2, 0)               # q(x_t | x_0) = N(x_t; sqrt(ab) x_0, 1 - ab), normalised over the draws
    mc = (weights * eps).sum()
    se = (weights ** 2 * (eps - mc) ** 2).sum().sqrt()      # standard error of a weighted average
    closed_form = gauss(torch.tensor([[x]], dtype=torch.float64), torch.tensor([code_t])).item()
    print(f"{code_t + 1:4d} {x:6.1f} {closed_form:19.4f} {mc.item():13.4f} +- {se.item():.4f}")

# %% [markdown]
# The autograd score and the closed form agree to rounding, at every noise level; the Monte Carlo averages over a million draws differ from it by at most about one standard error (the largest gap, 0.0065 at $t = 100$, $x_t = -1$, equals its standard error).
# Nothing here is special to Gaussians except that $p_t$ can be written down: for any data, the network that minimises $L_\text{simple}$ is $-\sqrt{1-\bar\alpha_t}\,\nabla\log p_t$.
# A finite network only approaches it, which is why lesson 5 writes $\varepsilon_\theta \approx -\sqrt{1-\bar\alpha_t}\,\nabla\log p_t$.

# %% [markdown]
# ## 5. What dropping $\lambda_t$ does, measured on the swiss roll
#
# Three objectives train the same MLP on lesson 2's swiss roll ($T = 100$, linear schedule), from the same seeds, which fix the initial weights, the batches, $t$ and $\varepsilon$:
#
# * $L_\text{simple}$ (`LSimple`);
# * the bound's weighting with $\sigma_t^2 = \beta_t$, and with $\sigma_t^2 = \tilde\beta_t$ (`WeightedEps(schedule, variance)`).
#
# The weights are divided by their mean over $t$ (`normalize=True`), so all three take steps of the same overall size at the same learning rate and differ only in how they spread the effort over $t$.
# Each model samples with Algorithm 2 (`ddpm_sample`, the $\sigma_t^2$ it was trained for), and the samples are scored by the sliced Wasserstein distance to the data,
# as a multiple of the **data-vs-data floor** (lesson 2): 1 means as close as fresh data.

# %%
data = swiss_roll(20_000, seed=0)
reference = lambda n, seed: swiss_roll(n, seed=seed)
s100 = NoiseSchedule.from_name("linear", 100)
for variance in ("beta", "beta_tilde"):
    w = WeightedEps(s100, variance).weights()
    print(f"T = 100, normalised lambda_t (sigma^2 = {variance}): t = 1, 2, 3, 10, 100: {[round(w[i].item(), 2) for i in (0, 1, 2, 9, 99)]}; "
          f"share of the total weight on t = 1, 2, 3: {(w[:3].sum() / w.sum()).item():.0%}")
OBJECTIVES = {"L_simple": (LSimple(s100), "beta"), "weighted, sigma^2 = beta": (WeightedEps(s100, "beta"), "beta"),
              "weighted, sigma^2 = beta_tilde": (WeightedEps(s100, "beta_tilde"), "beta_tilde")}


def train_and_score(objective, variance, seed):
    config = TrainConfig(batch_size=512, lr=1e-3, warmup_steps=100, ema_decay=0.998, log_every=100, seed=seed)
    torch.manual_seed(seed)                                 # the initial weights
    trainer = Trainer(MLPDenoiser(dim=2, hidden=SIZES["hidden"], num_blocks=3), data, objective, config, device="cpu")
    trainer.run(SIZES["steps"], progress=False)
    x = ddpm_sample(trainer.ema.model, s100, (SIZES["samples"], 2), variance=variance,
                    generator=torch.Generator().manual_seed(100 + seed), progress=False)
    return x, sample_quality_2d(x, reference)["ratio"]


results = {name: [train_and_score(objective, variance, seed) for seed in range(SIZES["seeds"])]
           for name, (objective, variance) in OBJECTIVES.items()}

# %%
# NBVAL_IGNORE_OUTPUT
# (the exact figures vary slightly between CPUs; the verdicts below are compared)
for name, runs in results.items():
    ratios = [ratio for _, ratio in runs]
    print(f"{name:<32} {' '.join(f'{r:5.2f}' for r in ratios)}  x floor  (mean {sum(ratios) / len(ratios):.2f}, "
          f"{SIZES['steps']} steps, {len(ratios)} seed(s))")

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
axes[0].scatter(*data[:SIZES["samples"]].T, s=0.5, color="gray"); axes[0].set_title("data")
for ax, (name, runs) in zip(axes[1:], results.items()):
    x, ratio = runs[0]
    ax.scatter(*x.T, s=0.5, color="C2"); ax.set_title(f"{name}\n{ratio:.1f} x floor (seed 0)")
for ax in axes:
    ax.set_xlim(-2.5, 2.5); ax.set_ylim(-2.5, 2.5); ax.set_aspect("equal"); ax.set_xlabel("$x_1$"); ax.set_ylabel("$x_2$")
plt.tight_layout()
plt.show()

# %%
mean_ratio = {name: sum(r for _, r in runs) / len(runs) for name, runs in results.items()}
for name, ratio in mean_ratio.items():                      # lesson 2's check on its baseline: within 2 x the floor
    print(f"{name:<32} draws the spiral (< 2 x floor, lesson 2's check): {ratio < 2}")
print("L_simple ahead of the beta-tilde weighting by more than 0.5 x floor:",
      mean_ratio["weighted, sigma^2 = beta_tilde"] - mean_ratio["L_simple"] > 0.5)

# %% [markdown]
# How much does a ratio of 2.7 mean? The sliced-Wasserstein distance compares the clouds' projections on lines, so it is **lenient with a wrong shape** that has the right spread:
# a Gaussian blob with the data's mean and covariance, which has no spiral at all, is only a few times the floor.

# %%
mean, cov = data.mean(0), torch.cov(data.T)
blob = mean + torch.randn(SIZES["samples"], 2, generator=torch.Generator().manual_seed(1)) @ torch.linalg.cholesky(cov).T
print(f"a Gaussian blob with the data's mean and covariance, {SIZES['samples']:,} points: "
      f"{sample_quality_2d(blob, reference)['ratio']:.1f} x floor")

# %% [markdown]
# **What the numbers support.** In the stored `ci` run (seed 0, 2,000 training steps, hidden width 64, 5,000 samples; lesson 2's baseline settings, with a narrower network) the three objectives scored
# 1.18 ($L_\text{simple}$), 1.41 (weighted, $\beta_t$) and 2.70 (weighted, $\tilde\beta_t$) times the floor. $L_\text{simple}$ and the $\beta_t$ weighting draw the spiral (the second more blurred); the $\tilde\beta_t$ weighting, at the same budget,
# draws the outer arm but fills the inside with a blob: its 2.70 lies between the spiral's 1.18 and the Gaussian blob's 6.9.
# With the `cpu` profile (the same sizes, seeds 0, 1, 2; run once on 2 CPU cores, not stored here) the ratios were 1.18, 1.25, 1.33 for $L_\text{simple}$ (mean 1.25), 1.41, 1.40, 1.50 for the $\beta_t$ weighting (mean 1.44)
# and 2.70, 2.48, 1.99 for the $\tilde\beta_t$ weighting (mean 2.39). Seed for seed, $L_\text{simple}$ beat the $\beta_t$ weighting by 0.15 to 0.23 times the floor and the $\tilde\beta_t$ weighting by 0.65 to 1.52.
# **At a fixed training budget on the swiss roll, dropping $\lambda_t$ helped**, and the more the weighting favours the first steps, the more it cost: the $\tilde\beta_t$ weighting puts a quarter of its weight on $t = 1, 2, 3$, where the noise is tiny,
# and leaves little for the noisy steps that shape the spiral. We did not train longer to see whether the weighted objectives catch up.
# What we did *not* test: images, the discretised decoder $L_0$, or the cosine schedule, where $\lambda_t$ spans five orders of magnitude and the weighted objective would be dominated by a handful of timesteps.
# Ho et al. (Table 2) report a large effect on CIFAR-10: FID 3.17 with $L_\text{simple}$ against 13.51 when the same $\varepsilon$-predicting network is trained on the true bound with fixed isotropic $\Sigma$ (13.22 when the network predicts $\tilde\mu_t$ instead).
# Our toy result points the same way, on a far smaller problem and at one training budget.

# %% [markdown]
# ## 6. Common slips when these formulas are copied
#
# Copied by hand, these formulas pick up a few recurring slips. Each is easy to make and changes the result; the course uses the papers' forms:
#
# * **The posterior variance** is $\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t$ (Eq. 7). A common slip drops the factor $\beta_t$: what is left is the *ratio* $\tilde\beta_t/\beta_t$ plotted in section 2,
#   which tends to 1, so a sampler using it would add noise of variance about 1 at every step. Swapping numerator and denominator is another: the result would exceed $\beta_t$, which section 2's chain rules out.
# * **The bound's term** is $L_{t-1} = \frac{1}{2\sigma_t^2}\lVert\tilde\mu_t - \mu_\theta\rVert^2 + C_t$ (Eq. 8): it divides by the *variance* $\sigma_t^2$ of the reverse step, a number.
#   Writing $\lVert\Sigma_\theta\rVert_2^2$ there is a common slip; for $\Sigma_\theta = \sigma_t^2 I$ it is $\sigma_t^4$, and every $\lambda_t$ of section 3 would be off by the factor $1/\sigma_t^2$.
# * **The weight** $\lambda_t = \frac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}$ has $\alpha_t$ (one step), not $\bar\alpha_t$, in the denominator, and $\beta_t$ squared; both slips change its shape against $t$.
# * **DDIM's estimate of $x_0$** is $\hat x_0 = \big(x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon_\theta(x_t, t)\big)/\sqrt{\bar\alpha_t}$, the forward process of lesson 1 solved for $x_0$, with $\bar\alpha_t$ of the *current* step in both places.
#   $\sqrt{1-\bar\alpha_{t-1}}$ in it is a common slip: $\bar\alpha_{t-1}$ belongs to the other terms of the update (Song et al., 2021, Eq. 12), and with it $\hat x_0$ no longer recovers $x_0$ even from the true $\varepsilon$. Lesson 6 derives the update.
# * **Cosine schedule** (Nichol & Dhariwal, 2021, Eq. 17): $\bar\alpha_t = f(t)/f(0)$ with $f(t) = \cos^{\mathbf 2}\!\Big(\frac{t/T + s}{1+s}\cdot\frac{\pi}{\mathbf 2}\Big)$, $s = 0.008$.
#   Without the square it is another schedule ($\bar\alpha_t$ is a cosine, not its square, so the noise arrives later than in the paper); with $\pi$ in place of $\pi/2$ the cosine reaches 0 at $t = T/2$, after which
#   $\bar\alpha_t$ climbs back towards 1 (squared) or turns negative (unsquared). `lesson_lib/diffusion/schedules.py` implements Eq. 17; lesson 1 plots it.
# * **Indices**: the papers count $t = 1..T$; code counts $0..T-1$, so `alpha_bars[t - 1]` is $\bar\alpha_{t-1}$ only for $t \ge 1$ and $\bar\alpha_0 = 1$ must be prepended (lesson 1's exercise).

# %% [markdown]
# ## Summary
#
# * The reverse of a small Gaussian step is close to Gaussian because $\log q$ is nearly linear across a window of width $\sqrt{\beta_t}$ (section 1); this is what licenses $p_\theta(x_{t-1}\mid x_t) = \mathcal N(\mu_\theta, \sigma_t^2 I)$.
# * Given $x_0$, the reverse step is exactly $\mathcal N(\tilde\mu_t, \tilde\beta_t I)$ (Eqs. 6–7), confirmed by the chain itself; $\tilde\beta_t$ and $\beta_t$ differ only in the first steps.
# * The variational bound is a sum of Gaussian KLs; writing $\mu_\theta$ through $\varepsilon_\theta$ turns each into $\lambda_t\lVert\varepsilon - \varepsilon_\theta\rVert^2$. $L_\text{simple}$ drops $\lambda_t$; on the swiss roll, at a fixed budget of 2,000 steps, it beat both weightings on each of three seeds, by 0.15 to 0.23 times the floor against $\sigma_t^2 = \beta_t$ and by 0.65 to 1.52 against $\tilde\beta_t$, whose samples did not reach the spiral.
# * The network that minimises $L_\text{simple}$ is $\mathbb E[\varepsilon\mid x_t] = -\sqrt{1-\bar\alpha_t}\,\nabla\log p_t(x_t)$ (Tweedie's formula, denoising score matching; section 4), checked exactly on Gaussian data: a trained $\varepsilon_\theta$ estimates the scaled score.
#
# **Next:** lesson 2 trains $\varepsilon_\theta$ with $L_\text{simple}$ and samples with $\mu_\theta$ of Eq. 11. The exercise notebook `exercises/01b_reverse_process.ipynb` asks for $\mu_\theta$ from $\varepsilon$ (a warm-up), the exact reverse step for Gaussian data, and the bound's term $L_{t-1}$ in closed form on any schedule, checked by Monte Carlo.
