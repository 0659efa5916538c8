# %% [markdown]
# *Generated from `solutions/07_distillation.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/07_distillation.ipynb`, which `python -m lesson_lib.course.assignments start 07` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/07_distillation.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 7 · Exercises: progressive distillation
#
# Progressive distillation (Salimans & Ho, 2022, Algorithm 2) trains a *student* to take in one DDIM step what its
# *teacher* takes in two. For a student step $t \to t''$ with the teacher's mid-point $t'$ between them, the teacher
# takes two DDIM steps without clipping, $z_t \to z' \to z''$, and the student is trained to predict the $\tilde x$
# whose single DDIM step from $z_t$ lands on $z''$:
#
# $$\tilde x = \frac{z'' - (\sigma''/\sigma_t)\, z_t}{\alpha'' - (\sigma''/\sigma_t)\,\alpha_t},\qquad
# \alpha = \sqrt{\bar\alpha},\ \sigma = \sqrt{1-\bar\alpha}.$$
#
# Each halving divides the number of network calls by two; the student then becomes the next teacher.
# Two exercises: the target $\tilde x$, and one training step of the student.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import torch

from lesson_lib.course import feedback

from lesson_lib.diffusion.denoiser import Denoiser, Prediction
from lesson_lib.diffusion.distillation import distillation_timesteps
from lesson_lib.diffusion.forward import eps_from_x0
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import ddim_step


# %% [markdown]
# ## 1 · The distillation target
#
# Given $z_t$, the teacher's $z''$ and, for each example of the batch, $\alpha_t, \sigma_t$ and $\alpha'', \sigma''$
# (tensors of shape `(B,)`), return $\tilde x$. Reshape the coefficients so that they broadcast over the other
# dimensions, and compute in float64: on fine grids the denominator is a difference of nearly equal numbers.
# At the last step ($t'' = -1$, the data) $\alpha'' = 1$ and $\sigma'' = 0$, and $\tilde x = z''$.

# %%
def distillation_target(z_t, z_pp, alpha_t, sigma_t, alpha_pp, sigma_pp):
    """x~ = (z'' - (sigma''/sigma_t) z_t) / (alpha'' - (sigma''/sigma_t) alpha_t) (Algorithm 2), in float64.

    z_t and z_pp have shape (B, ...); alpha_t, sigma_t, alpha_pp and sigma_pp have shape (B,).
    Return a float64 tensor shaped like z_t.
    """
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run: $\tilde x$ is *defined* by one property. Take two DDIM steps of any predictor, then one
# DDIM step from $\tilde x$ over the whole interval: it must land on the same $z''$ (to float64 precision).

# %%
schedule = NoiseSchedule.linear(1000)
grid = distillation_timesteps(1000, 8)                 # the teacher's 8-step grid, -1 (the data) first
ab = schedule.alpha_bars_with_0                         # entry s + 1 is the level of code timestep s
torch.manual_seed(0)
z_t = torch.randn(4, 2, dtype=torch.float64)
teacher = lambda z, t: Prediction(torch.tanh(z), eps_from_x0(schedule, z, t, torch.tanh(z)))  # any x_hat
for i in (3, 0):                                        # a step in the middle, and the last step
    t, t_mid, s = (torch.full((4,), grid[j]) for j in (2 * i + 2, 2 * i + 1, 2 * i))
    z_mid = ddim_step(schedule, z_t, t, t_mid, teacher(z_t, t))
    z_pp = ddim_step(schedule, z_mid, t_mid, s, teacher(z_mid, t_mid))
    x_tilde = distillation_target(z_t, z_pp, ab[t + 1].sqrt(), (1 - ab[t + 1]).sqrt(),
                                  ab[s + 1].sqrt(), (1 - ab[s + 1]).sqrt())
    one_step = ddim_step(schedule, z_t, t, s, Prediction(x_tilde, eps_from_x0(schedule, z_t, t, x_tilde)))
    print(f"student step {grid[2 * i + 2]} -> {grid[2 * i]}: one step from x~ lands on z'':",
          torch.allclose(one_step, z_pp, rtol=0, atol=1e-12))
feedback.check("07", "distillation_target", globals())  # what the grader will say about it


# %% [markdown]
# ## 2 · One distillation training step
#
# Write one optimisation step of the student on a batch $(z_t, t)$ whose teacher mid-points and ends are `t_mid`
# and `s` (long tensors of shape `(B,)`), with class labels `y`:
#
# 1. under `torch.no_grad()`, two DDIM steps of the teacher **without clipping** (`Denoiser(teacher, schedule)`,
#    `ddim_step`): $z_t \to z'$ at `t_mid` $\to z''$ at `s`;
# 2. the target $\tilde x$ with your `distillation_target`;
# 3. the student's $\hat x$ at $(z_t, t)$ (`Denoiser(student, schedule)(z_t, t, y=y).x0`: the student predicts $v$);
# 4. the loss with the truncated-SNR weight, $\frac1B\sum_b \max(\mathrm{SNR}_{t_b}, 1)\,\overline{(\hat x_b - \tilde x_b)^2}$
#    (the bar is the mean over dimensions, $\mathrm{SNR}_t = \bar\alpha_t / (1 - \bar\alpha_t)$);
# 5. `optimizer.zero_grad()`, `loss.backward()`, `optimizer.step()`; return the loss as a number.

# %%
def distillation_step(student, teacher, schedule, z_t, t, t_mid, s, y, optimizer):
    """One step of progressive distillation (Salimans & Ho, 2022, Algorithm 2); returns loss.item()."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run: for Gaussian data $x \sim \mathcal N(0, c^2)$ the best denoiser is linear,
# $\hat x = a_t z$ with $a_t = \alpha_t c^2 / (\alpha_t^2 c^2 + \sigma_t^2)$, so the teacher's two steps are linear
# and so is the optimal student: $\tilde x = k_t z$. A student with one weight per timestep, trained with your step,
# must find $k_t$.

# %%
c = 0.5
class Oracle(torch.nn.Module):                          # the exact x_hat of N(0, c^2), as an x0 predictor
    prediction = "x0"
    def forward(self, z, t, y=None):
        a = ab[t + 1].sqrt() * c ** 2 / (ab[t + 1] * c ** 2 + 1 - ab[t + 1])
        return a[:, None].to(z.dtype) * z

class LinearStudent(torch.nn.Module):                   # x_hat = w_t z
    prediction = "x0"
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1000, dtype=torch.float64))
    def forward(self, z, t, y=None):
        return self.w[t][:, None] * z

grid2 = distillation_timesteps(1000, 4)                 # the teacher's 4 steps, the student's 2
student, generator = LinearStudent(), torch.Generator().manual_seed(0)
optimizer = torch.optim.Adam(student.parameters(), lr=0.05)
for step in range(300):
    i = torch.randint(0, 2, (256,), generator=generator)
    t, t_mid, s = (torch.tensor(grid2)[2 * i + k] for k in (2, 1, 0))
    x0 = c * torch.randn(256, 2, generator=generator, dtype=torch.float64)
    z_t = ab[t + 1].sqrt()[:, None] * x0 + (1 - ab[t + 1]).sqrt()[:, None] * torch.randn(256, 2, generator=generator, dtype=torch.float64)
    for group in optimizer.param_groups:
        group["lr"] = 0.05 * (1 - step / 300)           # annealed linearly to 0, as each halving is
    distillation_step(student, Oracle(), schedule, z_t, t, t_mid, s, None, optimizer)
probe = torch.ones(1, 2, dtype=torch.float64)
for i in range(2):
    t, t_mid, s = (torch.tensor([grid2[2 * i + k]]) for k in (2, 1, 0))
    z_mid = ddim_step(schedule, probe, t, t_mid, Denoiser(Oracle(), schedule)(probe, t))
    z_pp = ddim_step(schedule, z_mid, t_mid, s, Denoiser(Oracle(), schedule)(z_mid, t_mid))
    k = distillation_target(probe, z_pp, ab[t + 1].sqrt(), (1 - ab[t + 1]).sqrt(), ab[s + 1].sqrt(), (1 - ab[s + 1]).sqrt())
    print(f"t = {int(t)}: learned w = {float(student.w.detach()[t]):.3f}, optimal k = {float(k[0, 0]):.3f}")
feedback.check("07", "distillation_step", globals())  # what the grader will say about it
