# %% [markdown]
# *Generated from `solutions/01_forward_process.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/01_forward_process.ipynb`, which `python -m lesson_lib.course.assignments start 01` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/01_forward_process.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 1 · Exercises: the forward process
#
# The forward process of a diffusion model (Ho et al., 2020, *Denoising Diffusion Probabilistic
# Models*) destroys data one small step at a time. For $t = 1, \dots, T$ it scales the data down a
# little and adds a little Gaussian noise (Eq. 2):
#
# $$q(x_t \mid x_{t-1}) = \mathcal N\big(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big).$$
#
# In this notebook you implement the pieces: the noise schedules $\beta_1, \dots, \beta_T$, the
# products $\bar\alpha_t$, one-shot sampling from $q(x_t \mid x_0)$ and the posterior
# $q(x_{t-1} \mid x_t, x_0)$. Each exercise is a function with a docstring: replace
# `raise NotImplementedError(...)` with your code. The cell after each exercise runs the grader's
# checks of that exercise on your function and prints what the grader will say: one line per check,
# ✓ or ✗, its points and, when it fails, the grader's hint. That is feedback for you, not the grade:
# to grade the whole notebook as your instructor will (in a sandbox, on fresh random inputs), run
# `python -P -m lesson_lib.course.grader exercises/01_forward_process.ipynb` from the repository root.
#
# **Index convention.** Code timestep `t` in `0, ..., T-1` is the paper's $t+1$: `betas[0]` is
# $\beta_1$ and `alpha_bars[T-1]` is $\bar\alpha_T$.

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

from lesson_lib.diffusion import forward
from lesson_lib.diffusion.schedules import NoiseSchedule, cosine_beta_schedule, linear_beta_schedule
from lesson_lib.data.toy import swiss_roll
from lesson_lib.course import feedback

torch.manual_seed(0)
T = 1000


# %% [markdown]
# ## 1 · The linear schedule
#
# Ho et al. (Sec. 4) raise $\beta_t$ linearly from $\beta_1 = 10^{-4}$ to $\beta_T = 0.02$ over
# $T = 1000$ steps. Work in float64: $\bar\alpha_t$ is a product of up to 1000 factors and float32
# would lose digits.

# %%
def linear_betas(T, beta_start=1e-4, beta_end=0.02):
    """The linear noise schedule of Ho et al. (2020), Sec. 4: beta_1 .. beta_T evenly spaced
    from beta_start to beta_end,

        beta_t = beta_start + (t - 1) / (T - 1) * (beta_end - beta_start),   t = 1..T,

    as a float64 tensor of shape (T,) (code index t - 1 holds beta_t; for T = 1, just beta_start).
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("01", "linear_betas", globals())  # what the grader will say about it


# %% [markdown]
# ## 2 · The cosine schedule
#
# Nichol & Dhariwal (2021, Eq. 17) choose $\bar\alpha_t$ instead and derive the betas from it:
#
# $$\bar\alpha_t = \frac{f(t)}{f(0)}, \qquad f(t) = \cos^2\Big(\frac{t/T + s}{1 + s}\cdot\frac{\pi}{2}\Big),
# \qquad \beta_t = 1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}},$$
#
# with a small offset $s = 0.008$. Near $t = T$, $\bar\alpha_t$ reaches 0 and $\beta_T$ would be 1,
# so every $\beta_t$ is clipped to at most $0.999$.

# %%
def cosine_betas(T, s=0.008, max_beta=0.999):
    """The cosine schedule of Nichol & Dhariwal (2021), Eq. 17.

    With f(t) = cos^2( (t/T + s) / (1 + s) * pi/2 ) for t = 0, 1, ..., T, let
    alpha_bar(t) = f(t) / f(0) and beta_t = 1 - alpha_bar(t) / alpha_bar(t-1) for t = 1..T.
    Clip every beta to at most max_beta (the last one would be 1). Return a float64 tensor
    of shape (T,).
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("01", "cosine_betas", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · The products $\bar\alpha_t$
#
# With $\alpha_t = 1 - \beta_t$, the signal left after $t$ steps is governed by
# $\bar\alpha_t = \prod_{s \le t} \alpha_s$ (Ho et al., Eq. 4).

# %%
def alpha_bars_from_betas(betas):
    """alpha_bar_t = prod_{s <= t} alpha_s with alpha_s = 1 - beta_s (Ho et al., Eq. 4).

    betas is a 1-D tensor beta_1..beta_T; return alpha_bar_1..alpha_bar_T, a new tensor of the
    same shape and dtype (betas itself must not change).
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("01", "alpha_bars_from_betas", globals())  # what the grader will say about it
print(f"alpha_bar_T: linear {alpha_bars_from_betas(linear_betas(T))[-1].item():.2e}, "
      f"cosine {alpha_bars_from_betas(cosine_betas(T))[-1].item():.2e}")


# %% [markdown]
# ## 4 · Sampling $x_t$ in one shot
#
# Composing $t$ Gaussian steps gives a single Gaussian (Ho et al., Eq. 4):
#
# $$q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big), \qquad
# x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\quad \epsilon \sim \mathcal N(0, I).$$
#
# A batch holds one timestep per example, so `alpha_bars[t]` has shape `(B,)`: reshape it to
# `(B, 1, ..., 1)` so that it broadcasts over points `(B, 2)` and images `(B, C, H, W)` alike.

# %%
def q_sample(x0, t, alpha_bars, eps):
    """Draw x_t ~ q(x_t | x_0) in one shot (Ho et al., Eq. 4):

        x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps

    x0: data of shape (B, ...), e.g. points (B, 2) or images (B, C, H, W);
    t: a long tensor of shape (B,), one code timestep per example;
    alpha_bars: the float64 tensor (T,) of alpha_bars_from_betas;
    eps: the noise, shaped like x0.
    Return a tensor with the shape and dtype of x0.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("01", "q_sample", globals())  # what the grader will say about it


# %% [markdown]
# ## 5 · The posterior $q(x_{t-1} \mid x_t, x_0)$
#
# Given both ends, the previous step is Gaussian too (Ho et al., Eqs. 6–7):
#
# $$\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0
# + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t, \qquad
# \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t,$$
#
# with $\bar\alpha_0 = 1$. This is what the reverse process learns to imitate. Watch the first step:
# at code `t = 0` the previous $\bar\alpha$ is $\bar\alpha_0 = 1$, and `alpha_bars[t - 1]` would
# silently wrap around to the last entry.

# %%
def posterior_mean_variance(x0, x_t, t, betas, alpha_bars):
    """The posterior q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I) (Ho et al., Eqs. 6-7):

        mu_tilde   = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) * x0
                     + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * x_t
        beta_tilde = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t

    with alpha_t = 1 - beta_t and alpha_bar_0 = 1 (at code t = 0, the paper's t = 1, the
    previous alpha-bar is 1). t is a long tensor of shape (B,). Return (mean, variance):
    mean shaped and typed like x0, variance of shape (B, 1, ..., 1).
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("01", "posterior_mean_variance", globals())  # what the grader will say about it

# %% [markdown]
# ## 6 · Look at it
#
# Left: $\bar\alpha_t$, the share of the signal's variance left at step $t$, for both schedules.
# The cosine schedule destroys information more evenly. Right: the swiss roll noised in one shot
# with your `q_sample` at a few timesteps of the linear schedule.

# %%
x0 = swiss_roll(2000, seed=0)
alpha_bars = alpha_bars_from_betas(linear_betas(T))
fig, axes = plt.subplots(1, 5, figsize=(13, 2.8))
axes[0].plot(alpha_bars, label="linear")
axes[0].plot(alpha_bars_from_betas(cosine_betas(T)), label="cosine")
axes[0].set(title="alpha_bar_t", xlabel="code t")
axes[0].legend()
for ax, t in zip(axes[1:], [0, 50, 200, 999]):
    x_t = q_sample(x0, torch.full((len(x0),), t), alpha_bars, torch.randn_like(x0))
    ax.scatter(x_t[:, 0], x_t[:, 1], s=1)
    ax.set(title=f"x_t at code t = {t}", xlim=(-3, 3), ylim=(-3, 3), aspect="equal")
plt.tight_layout()
plt.show()


# %% [markdown]
# ## 7 · A question: which schedule keeps more signal?
#
# $\bar\alpha_t$ is the share of the signal's variance left in $x_t$. **Predict first**, from the figure
# or from the formulas: at code `t = 500` of $T = 1000$, which schedule keeps more of the signal, the
# linear or the cosine one, and by roughly how much? Is that so at every $t$, even the last few steps?
#
# Then measure it: `signal_left(t)` returns both $\bar\alpha_t$ and the name of the schedule that keeps
# more. The grader asks at `t = 500` and at timesteps it draws, one of them among the last five.

# %%
def signal_left(t, T=1000):
    """alpha_bar_t of the linear and of the cosine schedule with T steps, at code timestep t, and
    which of the two keeps more of the signal:

        {"linear": alpha_bar_t (linear), "cosine": alpha_bar_t (cosine), "more": "linear" or "cosine"}

    with the two numbers as Python floats, measured with your functions above.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("01", "signal_left", globals())  # what the grader will say about it
for t in (500, 999):
    answer = signal_left(t)
    print(f"t = {t}: linear {answer['linear']:.3g}, cosine {answer['cosine']:.3g}: {answer['more']} keeps more")

# %% [markdown]
# At `t = 500` the cosine schedule keeps about six times more signal than the linear one: the linear
# schedule has destroyed most of the data half-way through, which is why Nichol & Dhariwal proposed
# the cosine one. Only in the last few steps, where the cosine $\bar\alpha_t$ is forced to 0, does the
# linear schedule keep more (both are then almost pure noise).
