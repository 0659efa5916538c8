# %% [markdown]
# *Generated from `solutions/02_swiss_roll.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/02_swiss_roll.ipynb`, which `python -m lesson_lib.course.assignments start 02` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/02_swiss_roll.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 2 · Exercises: sampling and training on the swiss roll
#
# A DDPM generates data by running the forward process backwards. A network
# $\epsilon_\theta(x_t, t)$ learns to predict the noise in $x_t$; sampling then starts from pure
# noise $x_T \sim \mathcal N(0, I)$ and removes a little of it at every step (Ho et al., 2020,
# Algorithm 2). Training (Algorithm 1) is plain regression on the noise, the loss
# $L_\text{simple}$ of Eq. 14.
#
# You implement one reverse step and one training step, then use both to train a small network on
# the 2-D swiss roll and sample from it. The cell after each exercise runs the grader's checks of
# that exercise on your function and prints what the grader will say: one line per check, ✓ or ✗,
# its points and, when it fails, the grader's hint. That is feedback for you, not the grade: to grade
# the whole notebook as your instructor will (in a sandbox, on fresh random inputs), run
# `python -P -m lesson_lib.course.grader exercises/02_swiss_roll.ipynb` from the repository root. Code timestep `t` in `0, ..., T-1` is the paper's $t+1$.

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

from lesson_lib.diffusion import forward, losses, sampling
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.diffusion.schedules import NoiseSchedule, linear_beta_schedule
from lesson_lib.data.toy import swiss_roll
from lesson_lib.course import feedback


# %% [markdown]
# ## 1 · One reverse step (Algorithm 2)
#
# $$x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,
# \epsilon_\theta(x_t, t)\Big) + \sigma_t z, \qquad z \sim \mathcal N(0, I),$$
#
# with $\alpha_t = 1 - \beta_t$ and $\sigma_t^2 = \beta_t$; at the last step (code `t = 0`) no noise
# is added. The network is called on the whole batch with one timestep per example.

# %%
def reverse_step(eps_model, x_t, t, betas, alpha_bars, z):
    """One step x_t -> x_{t-1} of DDPM sampling (Ho et al., Algorithm 2, line 4):

        x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_model(x_t, t)) / sqrt(alpha_t)
                  + sigma_t * z,        alpha_t = 1 - beta_t,  sigma_t = sqrt(beta_t)

    t is a Python int (code index, the paper's t+1); the network takes the whole batch and one
    timestep per example, eps_model(x_t, t_batch) with t_batch a long tensor of shape (B,).
    z ~ N(0, I) is shaped like x_t; the last step (t == 0) adds no noise. Return a tensor shaped
    and typed like x_t.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("02", "reverse_step", globals())  # what the grader will say about it


# %% [markdown]
# ## 2 · One training step (Algorithm 1)
#
# Draw a timestep $t$ uniformly and noise $\epsilon \sim \mathcal N(0, I)$ for every example, form
# $x_t$ with Eq. 4, and regress the network's output on $\epsilon$ (Ho et al., Eq. 14):
#
# $$L_\text{simple} = \mathbb E_{t, x_0, \epsilon}\big\|\epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0
# + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t\big)\big\|^2 .$$

# %%
def training_step(model, optimizer, x0, alpha_bars):
    """One step of DDPM training (Ho et al., Algorithm 1) on L_simple (Eq. 14):

        L_simple = mean over the batch and all entries of || eps - model(x_t, t) ||^2,
        x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps   (Eq. 4),

    with a fresh t ~ Uniform{0, ..., T-1} (T = len(alpha_bars); a long tensor of shape (B,), one
    per example) and a fresh eps ~ N(0, I) shaped like x0 at every call. Take one optimizer step
    on L_simple (gradients zeroed first) and return its value as a Python float.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# `training_step` draws its own $t$ and $\epsilon$, so the grader records what the model is called
# with, recovers $\epsilon$ from $x_t$ by inverting Eq. 4, and compares the loss with
# `lesson_lib.diffusion.losses.l_simple` for that same $t$ and $\epsilon$. With plain SGD, one step must
# also move every parameter by exactly $-\text{lr}\cdot\nabla L_\text{simple}$.

# %%
feedback.check("02", "training_step", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · A question: which $\sigma_t^2$?
#
# Algorithm 2 adds noise of variance $\sigma_t^2$. Ho et al. (Sec. 3.2) tried two choices,
# $\sigma_t^2 = \beta_t$ and $\sigma_t^2 = \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$,
# and found them similar in practice, each the best possible for one kind of data. **Think first**:
# if the data were a single point $x_0$, what would the true $p(x_{t-1} \mid x_t)$ be (lesson 1's last
# exercise)? And if the data were $x_0 \sim \mathcal N(0, I)$, which never changes under the forward
# process? Then write `sigma_squared`: the grader asks it at timesteps and schedules it draws.

# %%
def sigma_squared(t, betas, alpha_bars, data):
    """The optimal reverse-process variance sigma_t^2 at code timestep t >= 1 (Ho et al., Sec. 3.2),
    as a Python float, for data = "single point" (x0 is one fixed point) or "standard normal"
    (x0 ~ N(0, I)): one of beta_t and beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %%
feedback.check("02", "sigma_squared", globals())  # what the grader will say about it
schedule = NoiseSchedule.linear(1000)
for t in (1, 10, 999):
    point, normal = (sigma_squared(t, schedule.betas, schedule.alpha_bars, d) for d in ("single point", "standard normal"))
    print(f"t = {t}: single point {point:.3g}, standard normal {normal:.3g}")

# %% [markdown]
# For a single point, $p(x_{t-1} \mid x_t)$ is exactly the posterior $q(x_{t-1} \mid x_t, x_0)$, whose
# variance is $\tilde\beta_t$; for $x_0 \sim \mathcal N(0, I)$ every $x_t$ is $\mathcal N(0, I)$ too and the
# reverse step's variance is $\beta_t$ (its mean shrinks by $\sqrt{1-\beta_t}$). The two differ only at small $t$,
# where $\tilde\beta_1 = 0$: that is why both work about equally well on real data.

# %% [markdown]
# ## 4 · Train on the swiss roll and sample
#
# With $T = 100$ steps we stretch Ho et al.'s linear schedule to $\beta_t \in [10^{-3}, 0.2]$ so
# that $\bar\alpha_T$ is still close to 0. A few thousand training steps of a small MLP
# (`lesson_lib.models.mlp.MLPDenoiser`) take seconds on a CPU; then Algorithm 2 turns noise into a swiss
# roll with your `reverse_step`.

# %%
torch.manual_seed(0)
torch.set_num_threads(1)  # a network this small trains fastest on one CPU thread
T = 100
schedule = NoiseSchedule(linear_beta_schedule(T, beta_start=1e-3, beta_end=0.2))
data = swiss_roll(10_000, seed=0)
model = MLPDenoiser(dim=2, hidden=64, num_blocks=2)
optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
history = []
for step in range(3000):
    batch = data[torch.randint(0, len(data), (256,))]
    history.append(training_step(model, optimizer, batch, schedule.alpha_bars))

# %%
model.eval()
x = torch.randn(2000, 2)  # x_T ~ N(0, I)
with torch.no_grad():
    for t in reversed(range(T)):
        x = reverse_step(model, x, t, schedule.betas, schedule.alpha_bars, torch.randn_like(x))

fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
smoothed = torch.tensor(history).view(-1, 50).mean(dim=1)  # mean over blocks of 50 steps
axes[0].plot(torch.arange(len(smoothed)) * 50, smoothed)
axes[0].set(title="training loss (L_simple)", xlabel="step")
axes[1].scatter(data[:2000, 0], data[:2000, 1], s=1)
axes[1].set(title="data")
axes[2].scatter(x[:, 0], x[:, 1], s=1)
axes[2].set(title="samples (Algorithm 2)")
for ax in axes[1:]:
    ax.set(xlim=(-2.5, 2.5), ylim=(-2.5, 2.5), aspect="equal")
plt.tight_layout()
plt.show()
