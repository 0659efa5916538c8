# %% [markdown]
# *Generated from `solutions/01b_reverse_process.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/01b_reverse_process.ipynb`, which `python -m lesson_lib.course.assignments start 01b` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/01b_reverse_process.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 1b · Exercises: the reverse process
#
# The lesson derived the reverse step $x_t \to x_{t-1}$ when $x_0$ is known (the posterior of Eqs. 6–7) and turned the
# bound's term $L_{t-1}$ into $\lambda_t\,\lVert\varepsilon - \varepsilon_\theta\rVert^2$ plus a constant (Ho et al., 2020, Eq. 12).
# Here you take both one step further (about 45 minutes):
#
# 1. a warm-up: the mean $\mu_\theta$ from the predicted noise (Eq. 11);
# 2. a derivation the lesson does not make: the **exact** reverse step $q(x_{t-1} \mid x_t)$ when the data are Gaussian,
#    $x_0 \sim \mathcal N(\mu, s^2 I)$; the two fixed variances of the lesson are its two limits;
# 3. the bound's term $L_{t-1}$ itself, in closed form, for any schedule, constant included.
#
# The grader draws its own schedules (random betas, random $T$), data and timesteps, so compute everything from the
# arguments you are given, with torch (and your own functions): the grader runs your code without the library's diffusion
# modules, so `q_posterior` and the other imports below serve only the checks you run yourself. Code timestep `t` in
# `0, ..., T-1` is the paper's $t+1$: `betas[t]` is $\beta_{t+1}$, and at code `t = 0` the level before is the data itself,
# $\bar\alpha_0 = 1$.
#
# The cell after each exercise runs the grader's checks of that exercise on your function and prints
# what the grader will say: one line per check, ✓ or ✗, its points and, when it fails, the grader's hint.
# That is feedback for you, not the grade: to grade the whole notebook as your instructor will (in a
# sandbox, on fresh random inputs), run `python -P -m lesson_lib.course.grader exercises/01b_reverse_process.ipynb`
# from the repository root.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import torch

from lesson_lib.course import feedback
from lesson_lib.diffusion.forward import q_posterior, q_sample, q_step
from lesson_lib.diffusion.schedules import NoiseSchedule


# %% [markdown]
# ## 1 · Warm-up: the reverse mean from the predicted noise
#
# Given $x_t$, one timestep per example `t` (shape `(B,)`), a noise prediction `eps` shaped like $x_t$, and the schedule's
# `betas` and `alpha_bars` (shape `(T,)`, float64), return
#
# $$\mu = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\varepsilon\Big), \qquad \alpha_t = 1 - \beta_t,$$
#
# in the dtype of `x_t`. Per-example values must be reshaped to `(B, 1, ..., 1)` to broadcast over the other dimensions.

# %%
def posterior_mean_from_eps(x_t, t, eps, betas, alpha_bars):
    """mu_theta(x_t, t) of Ho et al. (2020), Eq. 11: (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t).

    x_t and eps have shape (B, ...); t is a long tensor (B,) of code timesteps; betas and
    alpha_bars have shape (T,). Return a tensor shaped and typed like x_t.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run: with the *true* noise $\varepsilon$ that made $x_t$ from $x_0$, the formula must give the posterior
# mean $\tilde\mu_t(x_t, x_0)$ of Eq. 7 exactly (the lesson derived this line by line).

# %%
schedule = NoiseSchedule.linear(1000)
g = torch.Generator().manual_seed(0)
x0, eps = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
t = torch.tensor([0, 1, 10, 500, 998, 999])
x_t = q_sample(schedule, x0, t, eps)
print("with the true eps, your mean is the posterior mean mu-tilde_t(x_t, x_0):",
      torch.allclose(posterior_mean_from_eps(x_t, t, eps, schedule.betas, schedule.alpha_bars),
                     q_posterior(schedule, x0, x_t, t)[0]))
feedback.check("01b", "posterior_mean_from_eps", globals())  # what the grader will say about it


# %% [markdown]
# ## 2 · The exact reverse step for Gaussian data
#
# The lesson says that $\sigma_t^2 = \tilde\beta_t$ is exact when the data are a single point and $\sigma_t^2 = \beta_t$ when
# $x_0 \sim \mathcal N(0, I)$. Both are special cases of one calculation, which you now make: for data
# $x_0 \sim \mathcal N(\mu, s^2 I)$ (every coordinate independent, mean $\mu$, standard deviation $s$), every $x_t$ is Gaussian,
# and so is the pair $(x_{t-1}, x_t)$. So $q(x_{t-1} \mid x_t)$, the reverse step the network should learn, is a Gaussian
# $\mathcal N(m, v\,I)$ that you can write down exactly.
#
# **Derive** $m$ and $v$ on paper first. Useful facts: $x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon$ with $\varepsilon$
# independent of $x_{t-1}$ (one step of the chain); the mean and variance of $x_{t-1}$ follow from
# $x_{t-1} = \sqrt{\bar\alpha_{t-1}}\,x_0 + \sqrt{1-\bar\alpha_{t-1}}\,\varepsilon'$; and for a jointly Gaussian pair $(a, b)$,
# $\mathbb E[a \mid b] = \mathbb E[a] + \frac{\mathrm{Cov}(a, b)}{\mathrm{Var}(b)}(b - \mathbb E[b])$ and
# $\mathrm{Var}(a \mid b) = \mathrm{Var}(a) - \frac{\mathrm{Cov}(a, b)^2}{\mathrm{Var}(b)}$. Then check your $v$ at $s = 0$ and
# $s = 1$, and implement it.
#
# The grader passes a schedule of its own: `betas` (float64, shape `(T,)`, any increasing values in $(0, 1)$); compute
# $\bar\alpha$ from them. `data_mean` and `data_std` are numbers ($s = 0$ is allowed: the data are the single point $\mu$).

# %%
def gaussian_reverse_step(x_t, t, betas, data_mean, data_std):
    """The exact q(x_{t-1} | x_t) = N(mean, variance I) for data x_0 ~ N(data_mean, data_std^2 I).

    x_t: float64 tensor (B, D); t: long tensor (B,) of code timesteps (t = 0 steps to the data x_0 itself);
    betas: float64 tensor (T,), the schedule. Return (mean, variance): mean shaped like x_t, variance a
    float64 tensor of shape (B,) (the same for every coordinate).
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run: simulate the chain. Draw $x_0$ from the data, then $x_{t-1}$ from $q(x_{t-1} \mid x_0)$ and $x_t$ by one
# step, a million times in 1-D, on a short schedule with large steps, and measure the mean and variance of $x_{t-1}$
# among the samples whose $x_t$ fell within 0.02 of 0.3 (the width of the bin adds less than 1% to the variance; the
# 15,000 to 50,000 samples in it leave about 2% of sampling error). The simulation knows nothing of your formula.

# %%
small = NoiseSchedule.linear(20, 0.01, 0.2)
n, t_code, gen = 1_000_000, 3, torch.Generator().manual_seed(1)
for data_mean, data_std in ((0.3, 0.0), (0.0, 1.0), (0.8, 0.4)):
    x0 = data_mean + data_std * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    x_prev = q_sample(small, x0, torch.full((n,), t_code - 1), torch.randn(n, 1, generator=gen, dtype=torch.float64))
    x_t = q_step(small, x_prev, torch.full((n,), t_code), torch.randn(n, 1, generator=gen, dtype=torch.float64))
    near = (x_t[:, 0] - 0.3).abs() < 0.02
    mean, variance = gaussian_reverse_step(torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([t_code]),
                                           small.betas, data_mean, data_std)
    print(f"data N({data_mean}, {data_std}^2): simulated mean {x_prev[near].mean():.3f}, variance "
          f"{x_prev[near].var():.4f};  yours: mean {mean.item():.3f}, variance {variance.item():.4f}")
print(f"for comparison, at this step beta-tilde_t = {small.posterior_variance[t_code]:.4f} and beta_t = {small.betas[t_code]:.4f}")
feedback.check("01b", "gaussian_reverse_step", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · One term of the bound, in closed form
#
# $L_{t-1} = \mathrm{KL}\big(q(x_{t-1} \mid x_t, x_0)\,\Vert\,p_\theta(x_{t-1} \mid x_t)\big)$ with $q = \mathcal N(\tilde\mu_t, \tilde\beta_t I)$
# (Eqs. 6–7) and $p_\theta = \mathcal N(\mu_\theta, \sigma_t^2 I)$, where $\mu_\theta$ comes from the network's $\hat\varepsilon$ by Eq. 11 and
# $\sigma_t^2$ is $\beta_t$ (`variance="beta"`) or $\tilde\beta_t$ (`"beta_tilde"`). Return it **in nats, summed over the
# dimensions**, for each example, with $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$.
#
# You need the KL between two isotropic Gaussians in $D$ dimensions (derive it, or look it up and say where), and the
# lesson's Eq. 12 tells you what to expect: as a function of $\hat\varepsilon$ it is $\lambda_t\lVert\varepsilon - \hat\varepsilon\rVert^2$ plus a
# constant $C_t$. The grader scores the two parts separately: how $L_{t-1}$ grows with the error, and its value at
# $\hat\varepsilon = \varepsilon$. Only code timesteps $t \ge 1$ are asked for ($L_0$, the decoder, is another kind of term).

# %%
def vlb_term(x0, eps, eps_hat, t, betas, variance="beta"):
    """L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || N(mu_theta(x_t, eps_hat), sigma_t^2 I)) per example, in nats.

    x0, eps, eps_hat: float64 tensors (B, D); t: long tensor (B,) of code timesteps >= 1; betas: float64
    tensor (T,); variance: "beta" or "beta_tilde" (sigma_t^2). Return a float64 tensor of shape (B,).
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run: a KL is an expectation, $\mathbb E_{x_{t-1} \sim q}\big[\log q(x_{t-1}) - \log p_\theta(x_{t-1})\big]$, so a
# Monte-Carlo average over 200,000 draws from $q$ must agree with your closed form (to about 1%; the draws know nothing of
# it). Then the two parts the grader scores: the growth with the error, divided by $\lVert\varepsilon - \hat\varepsilon\rVert^2$, is the
# lesson's $\lambda_t$; the value at $\hat\varepsilon = \varepsilon$ is the constant $C_t$.

# %%
def log_normal(x, mean, var):
    """log N(x; mean, var I), summed over the last dimension."""
    return (-0.5 * (torch.log(2 * torch.pi * var) + (x - mean) ** 2 / var)).sum(-1)


betas = small.betas
t = torch.tensor([t_code])
x0, eps, eps_hat = (torch.randn(1, 3, generator=gen, dtype=torch.float64) for _ in range(3))
x_t = q_sample(small, x0, t, eps)
mean_q, var_q, _ = q_posterior(small, x0, x_t, t)
draws = mean_q + var_q.sqrt() * torch.randn(200_000, 3, generator=gen, dtype=torch.float64)
for variance in ("beta", "beta_tilde"):
    var_p = small.betas[t, None] if variance == "beta" else var_q
    mean_p = posterior_mean_from_eps(x_t, t, eps_hat, betas, small.alpha_bars)
    monte_carlo = (log_normal(draws, mean_q, var_q) - log_normal(draws, mean_p, var_p)).mean().item()
    closed = vlb_term(x0, eps, eps_hat, t, betas, variance).item()
    growth = (closed - vlb_term(x0, eps, eps, t, betas, variance).item()) / ((eps - eps_hat) ** 2).sum().item()
    print(f"sigma^2 = {variance:<10}: closed form and Monte Carlo agree within 1%: {abs(closed - monte_carlo) < 0.01 * closed};"
          f"  growth / ||eps - eps_hat||^2 = {growth:.4f}, C_t = {vlb_term(x0, eps, eps, t, betas, variance).item():.4f}")
feedback.check("01b", "vlb_term", globals())  # what the grader will say about it
