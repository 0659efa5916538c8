# %% [markdown]
# *Generated from `solutions/06_fast_sampling.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/06_fast_sampling.ipynb`, which `python -m lesson_lib.course.assignments start 06` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/06_fast_sampling.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 6 · Exercises: fewer steps without retraining
#
# A model trained on T = 1000 steps can be sampled on S of them, without retraining, in two ways:
#
# * **strided DDPM** (Nichol & Dhariwal 2021): keep a sub-sequence $\tau_1 < \dots < \tau_S$ and recompute the
#   betas of the shorter chain so that it reaches the same $\bar\alpha$ at every kept step;
# * **DDIM** (Song et al. 2021, Eq. 12): a non-Markovian forward process with the same marginals, whose
#   reverse step has a free noise scale $\sigma = \eta\,\tilde\sigma$; $\eta = 0$ is deterministic.
#
# The four exercises: one DDIM step, the betas of a respaced chain, spherical interpolation, and a prediction
# about norms in high dimensions. Runtime: under 10 s in every profile (no network is run).

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import math

import torch

from lesson_lib.course import feedback

from lesson_lib.diffusion.schedules import NoiseSchedule


# %% [markdown]
# ## 1 · One DDIM step
#
# Given $x_t$, the model's $\hat\epsilon$, $\bar\alpha_t$ and $\bar\alpha_s$ (each of shape `(B,)`, one per example),
# $\eta$ and a standard normal `noise` shaped like $x_t$, return
#
# $$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon}{\sqrt{\bar\alpha_t}},\qquad
# \sigma = \eta\sqrt{\frac{1-\bar\alpha_s}{1-\bar\alpha_t}}\sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_s}},\qquad
# x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\;\hat\epsilon + \sigma\,\text{noise}.$$

# %%
def ddim_update(x_t, eps, alpha_bar_t, alpha_bar_s, eta, noise):
    """One DDIM step (Song et al., 2021, Eq. 12) from level alpha_bar_t to level alpha_bar_s.

    x_t, eps and noise have shape (B, ...); alpha_bar_t and alpha_bar_s have shape (B,);
    eta is a number (0 = deterministic). Return x_s, shaped and typed like x_t."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run: with $\eta = 0$, a step that keeps the *true* noise maps $x_t = \sqrt{\bar\alpha_t}x_0 +
# \sqrt{1-\bar\alpha_t}\epsilon$ exactly onto $x_s = \sqrt{\bar\alpha_s}x_0 + \sqrt{1-\bar\alpha_s}\epsilon$: the same $x_0$ and
# the same $\epsilon$, at the new level.

# %%
schedule = NoiseSchedule.linear(1000)
g = torch.Generator().manual_seed(0)
x0, eps = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
a_t, a_s = schedule.alpha_bars[[700] * 4], schedule.alpha_bars[[300] * 4]
x_t = a_t.sqrt()[:, None] * x0 + (1 - a_t).sqrt()[:, None] * eps
x_s = ddim_update(x_t, eps, a_t, a_s, 0.0, torch.zeros_like(x_t))
print("eta = 0 lands on q(x_s | x_0):", torch.allclose(x_s, a_s.sqrt()[:, None] * x0 + (1 - a_s).sqrt()[:, None] * eps))
feedback.check("06", "ddim_update", globals())  # what the grader will say about it


# %% [markdown]
# ## 2 · The betas of a respaced chain
#
# Keep the timesteps $\tau_1 < \dots < \tau_S$ (ascending, code indices into `alpha_bars`). The new chain
# must reach $\bar\alpha_{\tau_i}$ after its $i$-th step, so its betas are
#
# $$\beta'_i = 1 - \frac{\bar\alpha_{\tau_i}}{\bar\alpha_{\tau_{i-1}}},\qquad \bar\alpha_{\tau_0} = 1 .$$

# %%
def respaced_betas(alpha_bars, timesteps):
    """The S betas of the chain that visits only ``timesteps`` (an ascending list of code indices),
    as a tensor of shape (S,): 1 - alpha_bars[tau_i] / alpha_bars[tau_(i-1)], and 1 - alpha_bars[tau_1]
    for the first."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
taus = [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
betas = respaced_betas(schedule.alpha_bars, taus)
print("respaced betas:", [round(b, 4) for b in betas.tolist()])
print("the new chain keeps the alpha-bars:", torch.allclose(torch.cumprod(1 - betas, 0), schedule.alpha_bars[taus]))
feedback.check("06", "respaced_betas", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · Spherical interpolation
#
# Between two encoded noises $z_1, z_2$ (per example, over every dimension but the first):
#
# $$\theta = \arccos\frac{\langle z_1, z_2\rangle}{\lVert z_1\rVert\,\lVert z_2\rVert},\qquad
# z(\alpha) = \frac{\sin((1-\alpha)\theta)}{\sin\theta}\,z_1 + \frac{\sin(\alpha\theta)}{\sin\theta}\,z_2 .$$

# %%
def slerp(z1, z2, alpha):
    """Spherical interpolation of z1 and z2 (shape (B, ...)) at the number alpha in [0, 1]."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
z1, z2 = torch.randn(3, 784, generator=g), torch.randn(3, 784, generator=g)
print("endpoints:", torch.allclose(slerp(z1, z2, 0.0), z1, atol=1e-5), torch.allclose(slerp(z1, z2, 1.0), z2, atol=1e-5))
feedback.check("06", "slerp", globals())  # what the grader will say about it


# %% [markdown]
# ## 4 · A prediction
#
# Draw $z_1, z_2 \sim \mathcal N(0, I_d)$ independently. Their norms are both close to $\sqrt d$. **Before you measure
# it**, predict the norm of the straight-line midpoint $(z_1 + z_2)/2$ as a function of $d$, and write it below. Then
# run the cell after it.

# %%
def lerp_midpoint_norm(d):
    """Your prediction of ||(z1 + z2) / 2|| for independent z1, z2 ~ N(0, I_d), as a number."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
d = 784
z1, z2 = torch.randn(1000, d, generator=g), torch.randn(1000, d, generator=g)
print(f"measured mean norm of the midpoint, d = {d}: {((z1 + z2) / 2).norm(dim=1).mean():.1f}; "
      f"sqrt(d) = {math.sqrt(d):.1f}")
feedback.check("06", "lerp_midpoint_norm", globals())  # what the grader will say about it
