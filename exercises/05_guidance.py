# %% [markdown]
# *Generated from `solutions/05_guidance.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/05_guidance.ipynb`, which `python -m lesson_lib.course.assignments start 05` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/05_guidance.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 5 · Exercises: guidance
#
# Guidance steers a diffusion model towards a class $y$ by adding the gradient of a log-probability of $y$ to the
# score. Bayes' rule on scores, $\nabla \log p_t(x \mid y) = \nabla \log p_t(x) + \nabla \log p_t(y \mid x)$, written
# in terms of the noise prediction $\epsilon = -\sqrt{1-\bar\alpha_t}\,\nabla \log p_t(x_t)$, gives the two methods
# of the lesson:
#
# * **classifier guidance** (Dhariwal & Nichol, 2021): $\tilde\epsilon = \epsilon(x_t) - s\,\sqrt{1-\bar\alpha_t}\,
#   \nabla_x \log f_\phi(y \mid x_t, t)$ with a noisy classifier $f_\phi$;
# * **classifier-free guidance** (Ho & Salimans, 2021): $\tilde\epsilon = (1 + w)\,\epsilon(x_t, y) - w\,
#   \epsilon(x_t, \varnothing)$, with the model's own conditional and unconditional predictions.
#
# You implement both combinations and answer a question about the two ways of writing the guidance strength.
# Code timestep `t` in `0, ..., T-1` is the paper's $t+1$.
#
# The cell after each exercise runs the grader's checks of that exercise on your function and prints
# what the grader will say: one line per check, ✓ or ✗, its points and, when it fails, the grader's hint.
# That is feedback for you, not the grade: to grade the whole notebook as your instructor will (in a
# sandbox, on fresh random inputs), run `python -P -m lesson_lib.course.grader exercises/05_guidance.ipynb`
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

from lesson_lib.diffusion.schedules import NoiseSchedule

# %% [markdown]
# ## 1 · The classifier-guided noise prediction
#
# Given the model's $\epsilon$ at $x_t$, the gradient $g = \nabla_x \log f_\phi(y \mid x_t, t)$ (one per example,
# shaped like $x_t$) and $\bar\alpha_t$ for each example of the batch, return
#
# $$\tilde\epsilon = \epsilon - s\,\sqrt{1-\bar\alpha_t}\;g .$$
#
# `alpha_bar` has shape `(B,)`: reshape it so that it broadcasts over every other dimension of `eps`.

# %%
def classifier_guided_eps(eps, grad_log_prob, alpha_bar, scale):
    """eps' = eps - scale * sqrt(1 - alpha_bar) * grad_log_prob, per example.

    eps and grad_log_prob have shape (B, ...); alpha_bar has shape (B,) (one alpha-bar_t per
    example); scale is a number. Return a tensor shaped and typed like eps.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("05", "classifier_guided_eps", globals())  # what the grader will say about it

# %% [markdown]
# A check you can run: on a 1-D Gaussian mixture of two classes, $x_0 \mid y = k \sim \mathcal N(\mu_k, \sigma^2)$, every
# noisy density is known, $p_t(x \mid k) = \mathcal N(\sqrt{\bar\alpha_t}\mu_k, v_t)$ with $v_t = \bar\alpha_t\sigma^2 +
# 1 - \bar\alpha_t$. At scale 1, guidance of the exact unconditional $\epsilon$ with the exact classifier must give
# the exact conditional $\epsilon$.

# %%
schedule = NoiseSchedule.linear(1000)
mu, sigma = torch.tensor([-1.0, 2.0], dtype=torch.float64), 0.5
x = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
t = torch.tensor([0, 100, 300, 500, 700, 900, 999])
y = torch.tensor([0, 1, 0, 1, 0, 1, 1])
ab = schedule.alpha_bars[t][:, None]
v = ab * sigma ** 2 + 1 - ab
eps_k = (1 - ab).sqrt() * (x - ab.sqrt() * mu) / v                     # (7, 2): eps(x_t | k)
log_p = -(x - ab.sqrt() * mu) ** 2 / (2 * v)                            # log p_t(k | x_t) + const
posterior = log_p.softmax(dim=1)
eps_uncond = (posterior * eps_k).sum(1, keepdim=True)
grad = (-(x - ab.sqrt() * mu) / v).gather(1, y[:, None]) - (posterior * -(x - ab.sqrt() * mu) / v).sum(1, keepdim=True)
guided = classifier_guided_eps(eps_uncond, grad, ab[:, 0], 1.0)
print("at scale 1, your guided eps is the exact conditional eps:",
      torch.allclose(guided, eps_k.gather(1, y[:, None])))

# %% [markdown]
# ## 2 · The classifier-free combination
#
# The model predicts $\epsilon(x_t, y)$ with the label and $\epsilon(x_t, \varnothing)$ with the null class. With
# the paper's weight $w$:
#
# $$\tilde\epsilon = (1 + w)\,\epsilon(x_t, y) - w\,\epsilon(x_t, \varnothing).$$

# %%
def cfg_eps(eps_cond, eps_uncond, w):
    """Classifier-free guidance (Ho & Salimans, 2021) with the paper's weight w:

        eps_guided = (1 + w) eps(x_t, y) - w eps(x_t, null)

    eps_cond and eps_uncond are shaped alike; w is a number. Return a tensor of that shape."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("05", "cfg_eps", globals())  # what the grader will say about it

# %%
eps_c = eps_k.gather(1, y[:, None])
# CFG with weight w is classifier guidance with scale s = 1 + w on the unconditional model:
print("cfg_eps(w = 2) equals classifier guidance at scale 3:",
      torch.allclose(cfg_eps(eps_c, eps_uncond, 2.0), classifier_guided_eps(eps_uncond, grad, ab[:, 0], 3.0)))

# %% [markdown]
# ## 3 · Two conventions
#
# Papers write the weight $w$; most libraries (diffusers, Imagen, DiT) write the scale $s$ in
# $\tilde\epsilon = \epsilon_u + s\,(\epsilon_c - \epsilon_u)$. Fill in the four numbers: which $w$ and which $s$
# give the plain conditional model $\epsilon(x_t, y)$, and which give the unconditional model
# $\epsilon(x_t, \varnothing)$?

# %%
def guidance_conventions():
    """A dict of four numbers:

        "w_conditional":    the paper's w at which guidance returns eps(x_t, y)
        "s_conditional":    the libraries' s at which guidance returns eps(x_t, y)
        "w_unconditional":  the paper's w at which guidance returns eps(x_t, null)
        "s_unconditional":  the libraries' s at which guidance returns eps(x_t, null)
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("05", "guidance_conventions", globals())  # what the grader will say about it
