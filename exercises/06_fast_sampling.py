# %% [markdown]
# *Generated from `solutions/06_fast_sampling.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/06_fast_sampling.ipynb`, which `python -m lesson_lib.course.assignments start 06` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/06_fast_sampling.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 6 · Exercises: fewer steps without retraining
#
# A model trained on T = 1000 steps can be sampled on S of them, without retraining. DDIM (Song et al. 2021, Eq. 12)
# with $\eta = 0$ is deterministic: a discretisation of the probability-flow ODE, which it follows more closely the more
# steps it takes. Which S steps to take is a choice, and the lesson's four spacings are only some of the answers.
#
# About 40 minutes:
#
# 1. a warm-up: one DDIM step;
# 2. a timestep spacing of **your own** that beats linspace, measured exactly: on Gaussian data the exact denoiser and the
#    exact ODE map are known, so the error of every list of timesteps can be computed;
# 3. DDIM inversion of a given denoiser;
# 4. a question the lesson leaves open: what norm does the exact encoding of a point have?
#
# Runtime: under 30 s (no trained network is run). The grader draws its own schedules, data and timestep lists. Write
# your functions with torch, math and each other: the grader runs them without the library's diffusion modules, so the
# library's imports below, and the helper `ddim_error` built on them, serve only your own measurements.
#
# The cell after each exercise runs the grader's checks of that exercise on your function and prints
# what the grader will say: one line per check, ✓ or ✗, its points and, when it fails, the grader's hint.
# That is feedback for you, not the grade: to grade the whole notebook as your instructor will (in a
# sandbox, on fresh random inputs), run `python -P -m lesson_lib.course.grader exercises/06_fast_sampling.ipynb`
# from the repository root.

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
from lesson_lib.diffusion.denoiser import Denoiser
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.sampling import sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.diffusion.timesteps import spaced


# %% [markdown]
# ## 1 · Warm-up: one DDIM step
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
# ## 2 · A spacing of your own
#
# For Gaussian data, $x_0 \sim \mathcal N(\mu, s^2 I)$, the exact denoiser is known (`GaussianData` in
# `lesson_lib/diffusion/oracles.py`), and so is the exact map that DDIM with infinitely many steps computes. So the
# error of DDIM on any list of S timesteps can be measured exactly: run DDIM from $x_T$ with the exact denoiser and
# compare the result with the exact map from the same $x_T$. The helper below does that; it is not graded.
#
# Measure linspace first, on narrow data (small $s$: like images, whose pixels given the rest of the image vary little)
# and on wide data ($s$ near 1), and look at *which* steps err.

# %%
def ddim_error(timesteps, data_std, schedule, data_mean=0.3, n=256):
    """RMS distance between DDIM (eta = 0) with the exact denoiser of N(data_mean, data_std^2 I) data on
    ``timesteps`` and the exact probability-flow map from T - 1 to the data, from the same n points x_T."""
    data = GaussianData(schedule, data_mean, data_std, dim=2)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = sample(Denoiser(data, schedule), schedule, x_T, timesteps, ddim_step, stochastic=False, progress=False)
    exact = data.flow(x_T, torch.full((n,), schedule.T - 1), torch.full((n,), -1))
    return ((x0 - exact) ** 2).mean().sqrt().item()


for name in ("linear", "cosine"):
    s = NoiseSchedule.from_name(name, 1000)
    for data_std in (0.1, 1.0):
        errors = {spacing: ddim_error(spaced(1000, 10, spacing), data_std, s) for spacing in ("linspace", "trailing")}
        print(f"{name:>6} schedule, data std {data_std}, S = 10: " + ", ".join(f"{k} {v:.3g}" for k, v in errors.items()))

# %% [markdown]
# Now design `my_timesteps(alpha_bars, S, data_std)`: S distinct timesteps in descending order, the first $T-1$ (where
# $x_T$ lives), that make DDIM err less than linspace. The grader draws the schedule (linear or cosine, T from 100 to
# 1000), S (from 4 to 20) and the data, and asks for at most 0.75 times linspace's error on narrow data
# ($s$ from 0.05 to 0.3) and at most 0.9 times on wide data ($s$ from 0.7 to 1.5, linear schedule).
#
# Things to think about: where along the chain does $\hat x_0$ change fastest? The ratio of noise to signal in
# $x_t / \sqrt{\bar\alpha_t} = x_0 + \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}\;\epsilon$ is a natural clock; compare it with $s$. Try a
# rule, measure it with `ddim_error`, and keep what works.

# %%
def my_timesteps(alpha_bars, S, data_std):
    """Your spacing: S distinct code timesteps in descending order, starting at T - 1 = len(alpha_bars) - 1.

    alpha_bars: float64 tensor (T,); S: the number of steps (1 <= S <= T); data_std: the data's standard
    deviation. Return a list of S ints (or a long tensor)."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("06", "my_timesteps", globals())  # what the grader will say about it

# %% [markdown]
# Your spacing against linspace, for a few data and step counts (error ratio: yours / linspace's):

# %%
for name in ("linear", "cosine"):
    s = NoiseSchedule.from_name(name, 1000)
    for data_std in (0.1, 0.3, 1.0):
        ratios = [ddim_error(my_timesteps(s.alpha_bars, S, data_std), data_std, s) / ddim_error(spaced(1000, S), data_std, s)
                  for S in (5, 10, 20)]
        print(f"{name:>6} schedule, data std {data_std}: ratio at S = 5, 10, 20: " + ", ".join(f"{r:.2f}" for r in ratios))
print("your 10 timesteps for data std 0.1, linear schedule:", my_timesteps(NoiseSchedule.linear(1000).alpha_bars, 10, 0.1))

# %% [markdown]
# ## 3 · DDIM inversion
#
# With $\eta = 0$ the update runs just as well upwards, from a level $\bar\alpha_t$ to a *noisier* one $\bar\alpha_s < \bar\alpha_t$: that
# encodes an image into the $x_T$ that decodes back to it. Write the encoder for any denoiser `eps_model(x, t)`, on the list
# of timesteps the decoder would use (descending): take `x0` as the state at the list's lowest entry, then climb the list
# entry by entry, each step evaluating the model at the level you are at; return the state at `timesteps[0]`. Your
# `ddim_update` does the stepping.

# %%
def ddim_encode(eps_model, x0, timesteps, alpha_bars):
    """DDIM inversion (Song et al., 2021, Sec. 4.3 with eta = 0): encode x0 into the x_T that DDIM decodes to x0.

    eps_model(x, t) -> eps (t: long tensor (B,)); x0: float tensor (B, ...), the state at timesteps[-1];
    timesteps: the decoder's descending list of code timesteps; alpha_bars: float64 tensor (T,).
    Return the state at timesteps[0], shaped like x0."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("06", "ddim_encode", globals())  # what the grader will say about it

# %% [markdown]
# The round trip on the exact model of Gaussian data: your encoder, then the library's DDIM decoder on the same list.

# %%
data = GaussianData(schedule, 0.3, 0.5, dim=2)
points = data.sample(200, generator=torch.Generator().manual_seed(1))
for S in (10, 50, 200):
    ts = spaced(1000, S)
    x_T = ddim_encode(data, points, ts, schedule.alpha_bars)
    back = sample(Denoiser(data, schedule), schedule, x_T, ts, ddim_step, stochastic=False, progress=False)
    print(f"S = {S:>3}: RMS round-trip error {((back - points) ** 2).mean().sqrt():.1e}")

# %% [markdown]
# The error falls roughly as $1/S$ (0.25, 0.057 and 0.015 at S = 10, 50 and 200). The encoder's step from $t$ up to $s$
# uses $\epsilon$ at $t$, the level it leaves; the decoder's step back down uses $\epsilon$ at $s$. The two differ by an amount
# that vanishes only as the steps shrink, so DDIM inversion is exact only in the limit, even with the exact model.

# %% [markdown]
# ## 4 · A question: the norm of an exact encoding
#
# The lesson found that DDIM encodings of two digits had norm about 16, not $\sqrt{784} = 28$, the norm of a typical draw of
# $\mathcal N(0, I)$. Predict the norm in a case you can work out exactly. The data are $x_0 \sim \mathcal N(0, s^2 I)$, a point $x_0$
# of norm $r$ is encoded with infinitely many DDIM steps (the probability-flow ODE) to the last level, where
# $\bar\alpha = \bar\alpha_T$. **Before you measure it**, derive $\lVert x_T\rVert$ as a function of $r$, $s$ and $\bar\alpha_T$, and write it
# below. Then run the cell after it, which measures it with your encoder.

# %%
def encoding_norm(x0_norm, data_std, alpha_bar_T):
    """Your prediction of ||x_T|| for the exact DDIM encoding of a point of norm x0_norm, data N(0, data_std^2 I)."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("06", "encoding_norm", globals())  # what the grader will say about it

# %%
d, data_std = 784, 0.5
digits = GaussianData(schedule, 0.0, data_std, dim=d)
typical = digits.sample(1, generator=torch.Generator().manual_seed(2))
for label, x0 in (("a typical point", typical), ("the same point at a fifth of the distance from the mean", typical / 5)):
    x_T = ddim_encode(digits, x0, spaced(1000, 500), schedule.alpha_bars)
    print(f"{label}: norm {x0.norm():.2f}; encoding's norm measured (S = 500) {x_T.norm():.2f}, "
          f"predicted {encoding_norm(x0.norm().item(), data_std, schedule.alpha_bars[-1].item()):.2f}")
print(f"a draw of N(0, I) in d = {d} has norm about sqrt(d) = {math.sqrt(d):.1f}")

# %% [markdown]
# For Gaussian data the exact encoding only rescales: a point at distance $r$ from the mean lands at distance
# $r\sqrt{\bar\alpha_T s^2 + 1 - \bar\alpha_T}/s \approx r/s$. A point at the data's typical distance, $s\sqrt d$, encodes to the
# typical norm of $\mathcal N(0, I)$, $\sqrt d$; a point nearer the mean than typical encodes to a proportionally shorter $x_T$.
# The norm of an encoding measures how far its point lies from the data's mean, in units of the data's spread.
