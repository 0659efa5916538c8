# %% [markdown]
# *Generated from `solutions/04_training_images.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/04_training_images.ipynb`, which `python -m lesson_lib.course.assignments start 04` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/04_training_images.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 4 · Exercises: training an image model
#
# Two pieces turn lesson 2's training step into the one that trains image models:
#
# * an **exponential moving average (EMA)** of the weights. Ho et al. (2020, Appendix B) sample
#   from $\theta_\text{EMA} \leftarrow d\,\theta_\text{EMA} + (1-d)\,\theta$ with $d = 0.9999$: the
#   average smooths out the noise of stochastic gradient descent;
# * **class conditioning with label dropout** (Ho & Salimans, 2022). The model sees the label $y$,
#   but with probability $p_\text{uncond}$ the label is replaced by a *null class*, so that one
#   network learns both $\epsilon_\theta(x_t, t, y)$ and the unconditional $\epsilon_\theta(x_t, t)$.
#   Lesson 5 combines the two for classifier-free guidance.
#
# You implement `ema_update` and a class-conditional `training_step`, then train a small U-Net on
# MNIST with them. Code timestep `t` in `0, ..., T-1` is the paper's $t+1$.
#
# The cell after each exercise runs the grader's checks of that exercise on your function and prints
# what the grader will say: one line per check, ✓ or ✗, its points and, when it fails, the grader's hint.
# That is feedback for you, not the grade: to grade the whole notebook as your instructor will (in a
# sandbox, on fresh random inputs), run
# `python -P -m lesson_lib.course.grader exercises/04_training_images.ipynb` from the repository root.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import copy

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from lesson_lib.diffusion import forward, losses
from lesson_lib.data.images import load_mnist
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.models.unet import UNet
from lesson_lib.course import feedback


# %% [markdown]
# ## 1 · The EMA update
#
# After every optimiser step, every parameter of the averaged copy moves a fraction $1 - d$ of the
# way towards the current weights:
#
# $$\theta_\text{EMA} \leftarrow d\,\theta_\text{EMA} + (1 - d)\,\theta .$$
#
# The average covers roughly the last $1/(1-d)$ steps. Update the copy **in place** and without
# recording a graph: the copy of a 35.7M-parameter model is updated 800,000 times in DDPM's CIFAR-10 run.

# %%
def ema_update(ema_model, model, decay):
    """One EMA update of ema_model towards model (Ho et al., Appendix B), for every pair of
    parameters (in the order of .parameters()):

        theta_ema <- decay * theta_ema + (1 - decay) * theta

    in place: ema_model's existing tensors change (they may require grad, so no graph may be
    recorded); model does not change. Returns None.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("04", "ema_update", globals())  # what the grader will say about it

# %% [markdown]
# What the average does: below, one weight is trained by SGD on a noisy objective (its gradient
# is $\theta - 1$ plus noise). The raw weight keeps jittering around the optimum $\theta^* = 1$; the
# EMA settles, and the larger $d$, the smoother it is, but the longer it lags behind at the start.

# %%
torch.manual_seed(0)
weight = nn.Linear(1, 1, bias=False)
nn.init.zeros_(weight.weight)
optimizer = torch.optim.SGD(weight.parameters(), lr=0.1)
averages = {d: copy.deepcopy(weight) for d in (0.9, 0.99)}
trace = {"raw": []} | {d: [] for d in averages}
for step in range(600):
    loss = 0.5 * (weight.weight - 1).pow(2).sum() + weight.weight.sum() * torch.randn(()) * 0.5
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for d, average in averages.items():
        ema_update(average, weight, d)
        trace[d].append(average.weight.item())
    trace["raw"].append(weight.weight.item())

plt.figure(figsize=(7, 3))
for name, values in trace.items():
    plt.plot(values, label="raw weight" if name == "raw" else f"EMA, d = {name}", lw=1 if name == "raw" else 2)
plt.axhline(1, color="gray", ls=":")
plt.xlabel("step"); plt.ylabel(r"$\theta$"); plt.legend(); plt.title("SGD on a noisy objective")
plt.show()


# %% [markdown]
# ### Two questions about the average
#
# **Predict first.** (1) A model's weights stop changing at $\theta$ while its average is at
# $\theta_\text{EMA}$: where is the average after $n$ more updates, and what does it become when the two
# start equal? (2) The newest weights enter the average with weight $1 - d$, as in a plain mean over $N$
# steps: what is $N$ for $d = 0.999$, and for DDPM's $d = 0.9999$? Answer both as formulas: the grader
# compares them with lesson_lib's `EMA` for values it draws.

# %%
def ema_of_constant(theta_ema, theta, decay, steps):
    """The average (a float) after `steps` EMA updates with this decay, starting at theta_ema,
    of a weight that stays at theta the whole time."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


def ema_steps_averaged(decay):
    """N, the number of steps of a plain mean whose newest step has the same weight, 1 - decay,
    as in the EMA (a float)."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("04", ['ema_of_constant', 'ema_steps_averaged'], globals())  # what the grader will say about it
print(f"from 0 towards 1 with d = 0.999: {ema_of_constant(0.0, 1.0, 0.999, 1000):.3f} after 1000 steps, "
      f"{ema_of_constant(0.0, 1.0, 0.999, 5000):.3f} after 5000; equal weights stay at "
      f"{ema_of_constant(0.5, 0.5, 0.999, 1000)}")
print(f"steps averaged: d = 0.999: {ema_steps_averaged(0.999):.0f}, d = 0.9999: {ema_steps_averaged(0.9999):.0f}")


# %% [markdown]
# An average of weights that do not change is those weights: the EMA only differs from the raw
# weights while they move. It forgets its start at the rate $d^n$, so after $N = 1/(1-d)$ steps about
# $e^{-1} \approx 37\%$ of the distance is left: with $d = 0.9999$ the average needs tens of thousands
# of steps to forget the random initialisation, which is why a short run warms the decay up.

# %% [markdown]
# ## 2 · A class-conditional training step with label dropout
#
# Algorithm 1 of Ho et al. with one change: the model also receives the class labels $y$, and each
# label is independently replaced by the null class (index `model.num_classes`) with probability
# $p_\text{uncond}$:
#
# $$L = \big\|\epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t,\ \tilde y\big)\big\|^2,
# \qquad \tilde y = \begin{cases}\varnothing & \text{with probability } p_\text{uncond}\\ y & \text{otherwise.}\end{cases}$$
#
# Do not overwrite the caller's `y`: build a new tensor (`torch.where`).

# %%
def training_step(model, optimizer, x0, y, schedule, p_uncond):
    """One step of class-conditional DDPM training with label dropout (Ho & Salimans, 2022):

        L = mean over the batch and all entries of || eps - model(x_t, t, y=labels) ||^2,
        x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps     (Eq. 4, schedule.alpha_bars),

    with a fresh t ~ Uniform{0, ..., schedule.T - 1} (long, shape (B,)), a fresh eps ~ N(0, I) shaped
    like x0, and labels = y with each entry independently replaced by the null class
    model.num_classes with probability p_uncond (y itself does not change). Take one optimizer
    step on L (gradients zeroed first) and return L as a Python float.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# `training_step` draws its own $t$, $\epsilon$ and dropout mask, so the grader records what the
# model is called with, recovers $\epsilon$ from $x_t$ by inverting Eq. 4, and compares the loss with
# `lesson_lib.diffusion.losses.l_simple` for those same $t$, $\epsilon$ and labels. On a large batch, the
# fraction of null labels must be close to $p_\text{uncond}$.

# %%
feedback.check("04", "training_step", globals())  # what the grader will say about it

# %% [markdown]
# ## 3 · Train a small class-conditional U-Net on MNIST
#
# The `mnist` preset's architecture at half width with one ResBlock per level (28x28, 14x14 and 7x7,
# attention at 7x7), trained with Adam, your `training_step` and your `ema_update`, for 150 steps of
# 32 digits. That is far
# too short for good samples (lesson 4's main notebook trains longer, and ships a pretrained model);
# here we watch the loss fall. The data come from `DDPM_DATA_DIR` if it is set, otherwise
# torchvision downloads MNIST.

# %%
torch.manual_seed(0)
torch.set_num_threads(1)  # a network this small trains fastest on one CPU thread
schedule = NoiseSchedule.linear(1000)
images, digits = load_mnist("train")
images, digits = images[:10_000], digits[:10_000]
model = UNet(in_channels=1, image_size=28, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
             attention_resolutions=(7,), dropout=0.0, num_classes=10)
ema_model = copy.deepcopy(model).requires_grad_(False)
optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
history = []
for step in range(150):
    idx = torch.randint(0, len(images), (32,))
    history.append(training_step(model, optimizer, images[idx], digits[idx], schedule, p_uncond=0.1))
    ema_update(ema_model, model, decay=min(0.99, (1 + step) / (10 + step)))  # warm-up, as lesson_lib.training.ema

# %%
smoothed = torch.tensor(history).view(-1, 10).mean(dim=1)  # mean over blocks of 10 steps
plt.figure(figsize=(6, 3))
plt.plot(torch.arange(len(smoothed)) * 10, smoothed)
plt.yscale("log"); plt.xlabel("step"); plt.ylabel("L_simple (mean over 10 steps)")
plt.title("class-conditional U-Net on MNIST")
plt.show()
assert smoothed[-1] < 0.5 * smoothed[0]

# %% [markdown]
# Which weights are better, the raw ones or their average? We measure $L_\text{simple}$ on 256 test
# digits with fixed $t$ and $\epsilon$, so that the two numbers differ only by the weights.

# %%
test_images, test_digits = load_mnist("test")
g = torch.Generator().manual_seed(0)
x0, y = test_images[:256], test_digits[:256]
t, eps = torch.randint(0, schedule.T, (256,), generator=g), torch.randn(x0.shape, generator=g)
with torch.no_grad():
    for name, weights in [("raw weights", model), ("EMA weights", ema_model)]:
        print(f"{name}: held-out L_simple = {losses.l_simple(weights.eval(), schedule, x0, t, eps, y=y).item():.3f}")

# %% [markdown]
# Try other seeds, decays and numbers of steps. The average helps most when the raw weights jitter
# around a good solution, as in the figure of section 1; with a decay too close to 1 for the length
# of the run it lags behind instead. That is why `lesson_lib.training.ema.EMA` warms the decay up,
# $\min(d, (1+n)/(10+n))$ after $n$ updates, as the training loop above did.
