# %% [markdown]
# *Generated from `solutions/01b_reverse_process.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/01b_reverse_process.ipynb`, which `python -m lesson_lib.course.assignments start 01b` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/01b_reverse_process.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 1b · Exercises: the reverse process
#
# The lesson derived two facts about one reverse step $x_t \to x_{t-1}$ (Ho et al., 2020):
#
# * If the network predicts the noise, $\varepsilon_\theta(x_t, t)$, the mean of $p_\theta(x_{t-1} \mid x_t)$ is the posterior mean
#   $\tilde\mu_t$ with $x_0$ replaced by its estimate from $\varepsilon_\theta$ (Eq. 11):
#   $\;\mu_\theta = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\varepsilon_\theta\Big)$.
# * The bound's term $L_{t-1}$ is then $\lambda_t\,\lVert\varepsilon - \varepsilon_\theta\rVert^2$ plus a constant, with
#   $\lambda_t = \dfrac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1-\bar\alpha_t)}$ (Eq. 12); $L_\text{simple}$ sets every $\lambda_t$ to 1.
#
# You implement both and answer four short questions. Code timestep `t` in `0, ..., T-1` is the paper's $t+1$:
# `betas[t]` is $\beta_{t+1}$ and `alpha_bars[t]` is $\bar\alpha_{t+1}$.
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
from lesson_lib.diffusion.forward import q_posterior, q_sample
from lesson_lib.diffusion.schedules import NoiseSchedule


# %% [markdown]
# ## 1 · The reverse mean from the predicted noise
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
# ## 2 · The weight $\lambda_t$
#
# Return $\lambda_t = \beta_t^2 / \big(2\sigma_t^2\,\alpha_t\,(1-\bar\alpha_t)\big)$ for each entry of `t`, as a float64 tensor of shape `(B,)`,
# with $\sigma_t^2 = \beta_t$ for `variance="beta"` and $\sigma_t^2 = \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$ for `variance="beta_tilde"`.
# At code `t = 0` the previous $\bar\alpha$ is $\bar\alpha_0 = 1$ (so $\tilde\beta_1 = 0$ and that weight is infinite; the grader asks for it only with `"beta"`).

# %%
def vlb_weight(t, betas, alpha_bars, variance="beta"):
    """lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) (Ho et al., Eq. 12) for each code timestep in t.

    sigma_t^2 is beta_t (variance="beta") or beta-tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t
    (variance="beta_tilde"). Return a float64 tensor of shape t.shape.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run: the weight is what turns a squared error on $\varepsilon$ into the KL between two Gaussians.
# Compute $\mathrm{KL}\big(q(x_{t-1}\mid x_t,x_0)\,\Vert\,\mathcal N(\mu_\theta, \sigma_t^2 I)\big)$ from its closed form for a random wrong
# $\hat\varepsilon$, subtract its value at $\hat\varepsilon = \varepsilon$, and divide by $\lVert\varepsilon - \hat\varepsilon\rVert^2$.

# %%
def gaussian_kl(mean_q, var_q, mean_p, var_p):
    """KL(N(mean_q, var_q I) || N(mean_p, var_p I)), summed over the last dimension."""
    return (0.5 * (torch.log(var_p / var_q) + var_q / var_p - 1) + (mean_q - mean_p) ** 2 / (2 * var_p)).sum(-1)


t = torch.tensor([1, 10, 500, 998, 999])
x0, eps, eps_hat = (torch.randn(5, 2, generator=g, dtype=torch.float64) for _ in range(3))
x_t = q_sample(schedule, x0, t, eps)
mean_q, var_q, _ = q_posterior(schedule, x0, x_t, t)
for variance in ("beta", "beta_tilde"):
    var_p = schedule.betas[t, None] if variance == "beta" else var_q
    kl = gaussian_kl(mean_q, var_q, posterior_mean_from_eps(x_t, t, eps_hat, schedule.betas, schedule.alpha_bars), var_p)
    kl0 = gaussian_kl(mean_q, var_q, posterior_mean_from_eps(x_t, t, eps, schedule.betas, schedule.alpha_bars), var_p)
    print(f"sigma^2 = {variance}: KL = your lambda_t * ||eps - eps_hat||^2 + a constant:",
          torch.allclose((kl - kl0) / ((eps - eps_hat) ** 2).sum(-1),
                         vlb_weight(t, schedule.betas, schedule.alpha_bars, variance).double()))
feedback.check("01b", "vlb_weight", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · Four questions
#
# Answer with strings (`"beta"` or `"beta_tilde"`) and numbers (the **paper's** $t$, from 1 to 1000):
#
# 1. Which fixed $\sigma_t^2$ is the exact variance of $q(x_{t-1} \mid x_t)$ when the data is a **single point** $x_0$?
# 2. Which is exact when the data is $x_0 \sim \mathcal N(0, I)$? (Hint: then every $x_t$ is $\mathcal N(0, I)$ too.)
# 3. At which $t$ is $\lambda_t$ (with $\sigma_t^2 = \beta_t$) largest on `NoiseSchedule.linear(1000)`?
# 4. And on `NoiseSchedule.cosine(1000)`? Use your `vlb_weight` for 3 and 4.

# %%
def reverse_process_answers():
    """A dict:

        "variance_when_x0_is_one_point":       "beta" or "beta_tilde"
        "variance_when_x0_is_standard_normal": "beta" or "beta_tilde"
        "lambda_peak_t_linear":  the paper's t (1..1000) of the largest lambda_t, linear schedule, sigma^2 = beta
        "lambda_peak_t_cosine":  the same for the cosine schedule
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run for questions 1 and 2: simulate one step of the chain, $x_{t-1} \to x_t$, and look at the spread of
# $x_{t-1}$ among the samples whose $x_t$ fell near 0.3. (It checks your answers against a simulation; the grader checks them too.)

# %%
answers = reverse_process_answers()
T_small, t_code = 50, 5                       # an early step, where beta-tilde_t and beta_t differ most
small = NoiseSchedule.from_name("linear", T_small)
n, gen = 400_000, torch.Generator().manual_seed(1)
for key, x0 in (("variance_when_x0_is_one_point", torch.full((n, 1), 0.3, dtype=torch.float64)),
                ("variance_when_x0_is_standard_normal", torch.randn(n, 1, generator=gen, dtype=torch.float64))):
    x_prev = q_sample(small, x0, torch.full((n,), t_code - 1), torch.randn(n, 1, generator=gen, dtype=torch.float64))
    x_t = small.alphas[t_code].sqrt() * x_prev + small.betas[t_code].sqrt() * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    near = (x_t - 0.3).abs() < 0.02
    spread = x_prev[near].var().item()
    named = {"beta": small.betas[t_code].item(), "beta_tilde": small.posterior_variance[t_code].item()}
    closest = min(named, key=lambda name: abs(named[name] - spread))
    print(f"{key}: you answered {answers[key]!r}; the simulation's variance is closest to {closest!r}")
for name, key in (("linear", "lambda_peak_t_linear"), ("cosine", "lambda_peak_t_cosine")):
    s = NoiseSchedule.from_name(name, 1000)
    peak = int(vlb_weight(torch.arange(1000), s.betas, s.alpha_bars).argmax()) + 1
    print(f"{key}: you answered {answers[key]}; your vlb_weight peaks at the paper's t = {peak}")
feedback.check("01b", "reverse_process_answers", globals())  # what the grader will say about it
