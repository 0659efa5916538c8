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
# In the lesson the library did the work. Here you build it (about an hour): a warm-up formula, then a whole
# classifier-guided sampler that works with *any* model and *any* differentiable classifier, then a small experiment,
# a sweep of the classifier-free weight $w$ that measures what guidance buys and what it costs.
#
# Everything runs on the exact 2-D mixture of the lesson's section 2 (three Gaussian classes, every density known), so
# a sample's true class probability can be measured exactly. The grader draws its own mixtures, noise schedules and
# timestep lists, and hands your functions the model and the classifier only as functions: use nothing but the
# arguments. Code timestep `t` in `0, ..., T-1` is the paper's $t+1$.
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
from lesson_lib.diffusion.denoiser import Denoiser
from lesson_lib.diffusion.forward import q_sample
from lesson_lib.diffusion.oracles import GaussianMixture
from lesson_lib.diffusion.sampling import sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.diffusion.timesteps import spaced

# %% [markdown]
# ## 1 · Warm-up: the classifier-free combination
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

# %% [markdown]
# ## 2 · A classifier-guided sampler
#
# Write the whole sampler: DDIM with $\eta = 0$ (lesson 6 derives it; here it is given), guided in the score form. From
# $x$ at timestep $t$ to the next timestep $s$ of the list:
#
# 1. $\epsilon = $ `eps_model(x, t)` (with `t` a long tensor of shape `(B,)`, one entry per example);
# 2. $g = \nabla_x \sum_i \log \operatorname{softmax}\big(\texttt{classifier}(x, t)\big)_{i, y_i}$, the gradient of each example's
#    log-probability of its own target class at the current $x$ (one backward pass of the sum gives every example its own
#    gradient: the examples do not interact). The classifier returns *logits*; use `torch.enable_grad()`, since a
#    sampler usually runs under `no_grad`;
# 3. $\tilde\epsilon = \epsilon - s_\text{scale}\,\sqrt{1-\bar\alpha_t}\;g$;
# 4. $\hat x_0 = (x - \sqrt{1-\bar\alpha_t}\,\tilde\epsilon) / \sqrt{\bar\alpha_t}$ and $x \leftarrow \sqrt{\bar\alpha_s}\,\hat x_0 +
#    \sqrt{1-\bar\alpha_s}\,\tilde\epsilon$, with $\bar\alpha_s = 1$ after the last timestep of the list (the data).
#
# `x_T` may be a batch of 2-D points `(B, 2)` or of images `(B, C, H, W)`: every example of the batch sits at the same
# timestep, so each $\bar\alpha$ is one number per step. At scale 0 the classifier is not needed.

# %%
def guided_ddim_sample(eps_model, classifier, x_T, y, timesteps, alpha_bars, scale):
    """Classifier-guided DDIM (eta = 0) in the score form (Dhariwal & Nichol, 2021, Algorithm 2).

    eps_model(x, t) -> the model's eps, shaped like x (t: long tensor (B,)); classifier(x, t) -> logits (B, K),
    differentiable in x; x_T: float tensor (B, ...), the state at timesteps[0]; y: long tensor (B,), the target
    classes; timesteps: a descending list of code timesteps; alpha_bars: float64 tensor (T,); scale: a number >= 0.
    Return x_0, shaped and typed like x_T."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("05", "guided_ddim_sample", globals())  # what the grader will say about it

# %% [markdown]
# Now run it on the lesson's mixture, from the same $x_T$ at three scales, 20 DDIM steps. The exact classifier at the
# data level, $p(y \mid x_0)$, says how strongly each sample belongs to the class it was asked for.
#
# One more check, which is Bayes' rule itself: at scale 1, guidance of the exact unconditional model by the exact
# classifier gives the exact conditional $\epsilon$ at every step, so your guided sampler must produce the very samples that
# plain DDIM produces on the exact conditional model (the library's sampler, which knows nothing of your code).

# %%
MEANS = torch.tensor([[1.0, 0.0], [-0.5, 0.866], [-0.5, -0.866]], dtype=torch.float64)
toy_schedule = NoiseSchedule.linear(200)
mixture = GaussianMixture(toy_schedule, MEANS, 0.6)
unconditional = lambda x, t: mixture(x, t)                       # eps(x_t): no label
exact_classifier = lambda x, t: mixture.log_posterior(x, t)      # log p_t(y | x_t): logits of an exact classifier
ts = spaced(200, 20)
y_toy = torch.arange(3).repeat_interleave(200)
x_T = torch.randn(600, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
data_level = torch.full((600,), -1)                               # t = -1: the data, alpha-bar = 1
for scale in (0.0, 1.0, 4.0):
    x0 = guided_ddim_sample(unconditional, exact_classifier, x_T, y_toy, ts, toy_schedule.alpha_bars, scale)
    log_p = mixture.log_posterior(x0, data_level)
    print(f"scale {scale}: mean log p(y | x_0) = {log_p[torch.arange(600), y_toy].mean():.3f}, "
          f"samples of the class asked for (exact classifier's argmax): {(log_p.argmax(1) == y_toy).double().mean():.3f}")
    if scale == 1.0:
        conditional = sample(Denoiser(mixture, toy_schedule), toy_schedule, x_T, ts, ddim_step, stochastic=False,
                             cond={"y": y_toy}, progress=False)
        print("  at scale 1 your samples are plain DDIM's on the exact conditional model:",
              torch.allclose(x0, conditional, atol=1e-10))

# %% [markdown]
# ## 3 · A sweep of the classifier-free weight
#
# The lesson's headline figure plotted accuracy and diversity against the guidance strength. Measure the same trade-off
# here, exactly. For each weight $w$ in `weights`:
#
# * run DDIM ($\eta = 0$) from the **same** `x_T` on `timesteps`, with the guided prediction
#   $\tilde\epsilon = (1+w)\,\epsilon(x_t, y) - w\,\epsilon(x_t, \varnothing)$, where `eps_model(x, t, labels)` is the class-conditional
#   model and the label `null_class` means "no label" (your sampler of section 2 can do the stepping);
# * **accuracy**: the fraction of the samples whose `judge(x_0).argmax(1)` equals the class asked for (`judge` returns
#   the logits of a classifier of clean data);
# * **spread**: the mean over all samples of $\lVert x_0 - m_y\rVert^2$ (summed over the coordinates), where $m_k$ is the mean of
#   the samples asked for class $k$: how far a sample lies from the centre of its own class.
#
# Then find `smallest_w`: the smallest $w$ of `weights` (the list is in no particular order) whose accuracy is at least
# `target`, or `None` if none is.

# %%
def cfg_sweep(eps_model, judge, x_T, y, null_class, timesteps, alpha_bars, weights, target):
    """Classifier-free guidance at each w of ``weights`` from the same x_T: what it buys and what it costs.

    eps_model(x, t, labels) -> eps (labels == null_class: unconditional); judge(x) -> logits (B, K) of clean data;
    x_T: float tensor (B, D); y: long tensor (B,); timesteps: descending list; alpha_bars: float64 tensor (T,);
    weights: a list of numbers; target: a number (an accuracy). Return a dict:

        "accuracy":   a list of numbers, one per w (in the order of weights)
        "spread":     a list of numbers, one per w
        "smallest_w": the smallest w whose accuracy >= target, or None
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("05", "cfg_sweep", globals())  # what the grader will say about it

# %% [markdown]
# The sweep on the lesson's mixture, 600 samples (200 per class), 20 steps. For comparison, samples of the true
# class-conditional data would have a spread of $2\sigma^2 = 0.72$ (two coordinates of variance $0.6^2$), and the exact classifier
# of clean data is right on them as often as the classes' overlap allows.

# %%
weights = [0.0, 0.5, 1.0, 2.0, 4.0]
judge = lambda x: mixture.log_posterior(x, torch.full((len(x),), -1))
result = cfg_sweep(mixture, judge, x_T, y_toy, 3, ts, toy_schedule.alpha_bars, weights, target=0.95)
for w, a, s in zip(weights, result["accuracy"], result["spread"]):
    print(f"w = {w:3.1f}: accuracy {a:.3f}, spread {s:.3f}")
print("the smallest w with accuracy >= 0.95:", result["smallest_w"])
real = torch.cat([mixture.sample(torch.full((200,), k), generator=torch.Generator().manual_seed(k)) for k in range(3)])
print(f"real data, 600 samples: accuracy {(judge(real).argmax(1) == y_toy).double().mean():.3f}")
x_T_matched = q_sample(toy_schedule, real, torch.full((600,), 199), torch.randn(600, 2, generator=torch.Generator().manual_seed(5),
                                                                                dtype=torch.float64))
matched = cfg_sweep(mixture, judge, x_T_matched, y_toy, 3, ts, toy_schedule.alpha_bars, [0.0], target=0.95)
print(f"w = 0 from x_T drawn from q(x_T | y) instead of N(0, I): accuracy {matched['accuracy'][0]:.3f}, "
      f"spread {matched['spread'][0]:.3f}")

# %% [markdown]
# Guidance buys accuracy with diversity: from $w = 0$ to $w = 4$ the accuracy rises to 1 while the spread falls to less than a
# third of the true $0.72$. The accuracy at $w = 0$ sits below the real data's for a reason that has nothing to do with
# guidance: the lesson's 200-step schedule stops at $\bar\alpha_T = 0.13$, where $q(x_T \mid y)$ still leans towards its class
# (its mean is $\sqrt{\bar\alpha_T}\,m_y = 0.36\,m_y$), and $x_T \sim \mathcal N(0, I)$ ignores that. Started from $q(x_T \mid y)$ (the
# last line), the unguided sampler scores 0.905 against the data's 0.868: the shortfall is gone, and the small excess is
# what 20 coarse DDIM steps do, shrinking the spread (0.620 against 0.72) and so making the samples easier to classify
# (600 samples leave a standard error of about 0.013 on each accuracy).
