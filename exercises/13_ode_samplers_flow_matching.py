# %% [markdown]
# *Generated from `solutions/13_ode_samplers_flow_matching.ipynb` by `python -m lesson_lib.course.assignments generate`, which may replace this file. Students: work in your own copy, `exercises/my_work/13_ode_samplers_flow_matching.ipynb`, which `python -m lesson_lib.course.assignments start 13` makes and which neither updates nor tests ever touch (grade it with `lesson-lib-grade exercises/my_work/13_ode_samplers_flow_matching.ipynb`). Course maintainers: edit the solution notebook, not this file.*

# %% [markdown]
# # Lesson 13 · Exercises: the probability-flow ODE, second-order samplers and flow matching
#
# Deterministic sampling integrates one ordinary differential equation from the noise to the data, and a sampler is
# a method for integrating it. Flow matching (Lipman et al., 2023; Liu et al., 2023) trains a network on the velocity
# of a straight path between data and noise, and samples it with the simplest method there is, Euler's. A diffusion
# model's probability-flow ODE can be integrated with DDIM, which is Euler's method in EDM's variable, or with a
# second-order method at the same cost per step: DPM-Solver++(2M) (Lu et al., 2022).
#
# Three exercises, about an hour: the point on the straight path and its regression target, one Euler step of the
# flow (and what it equals), and the update of DPM-Solver++(2M). The checks you can run use no trained network: the
# data are Gaussian, whose exact denoiser and exact flow are known in closed form, so every error you see is the
# solver's. Runtime: a few seconds.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import torch

from lesson_lib.course import feedback

from lesson_lib.diffusion import flow_matching as library
from lesson_lib.diffusion.denoiser import Prediction
from lesson_lib.diffusion.flow_matching import FlowGrid, to_x0_eps, vp_scale
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.diffusion.timesteps import spaced


# %% [markdown]
# ## 1 · The straight path and its target
#
# Flow matching joins each data point $x_0$ to a draw of noise $\epsilon \sim \mathcal N(0, I)$ by a straight line.
# The course keeps the direction of its timesteps: $t = 1$ is the noise and $t = 0$ the data,
#
# $$x_t = (1 - t)\, x_0 + t\, \epsilon, \qquad v = \frac{d x_t}{dt} = \epsilon - x_0 .$$
#
# The network $v_\theta(x_t, t)$ is trained to regress $v$, which is the same at every point of a line. Lipman et al.
# write the other direction ($x_0$ the noise, $x_1$ the data, target $x_1 - x_0$): their time is $1 - t$ and their
# target $-v$. Target, time and direction flip together; flipping only one of them is the classic bug, and nothing
# raises an error.
#
# Write `flow_matching_pair(x0, eps, t)`: `x0` and `eps` have the same shape `(B, ...)` (points `(B, D)` or images
# `(B, C, H, W)`), `t` is a `(B,)` tensor in their dtype, one time per example. Return the pair `(x_t, v)`.

# %%
def flow_matching_pair(x0, eps, t):
    """The point x_t = (1 - t) x0 + t eps on the straight path and its velocity v = eps - x0, the regression target
    (Liu et al., 2023, Eq. 1, in the course's direction: t = 1 noise, t = 0 data). t (B,), one per example."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run: six images of Gaussian data at six times from 0 to 1. The first is the data itself, the last
# the noise itself, and $v$ is the slope of the path, read off by a central difference.

# %%
g = torch.Generator().manual_seed(0)
x0 = 0.7 + 0.4 * torch.randn(6, 1, 8, 8, generator=g)
eps = torch.randn(6, 1, 8, 8, generator=g)
t = torch.linspace(0, 1, 6)
x_t, v = flow_matching_pair(x0, eps, t)
print("x_t at t = 0 is x0:", torch.equal(x_t[0], x0[0]), "| at t = 1 it is eps:", torch.equal(x_t[5], eps[5]))
slope = (flow_matching_pair(x0, eps, t + 0.01)[0] - flow_matching_pair(x0, eps, t - 0.01)[0]) / 0.02
print("v is dx_t/dt:", torch.allclose(slope, v, atol=1e-4), "| the library agrees:",
      torch.allclose(x_t, library.path(x0, eps, t)) and torch.equal(v, library.velocity_target(x0, eps)))
feedback.check("13", "flow_matching_pair", globals())  # what the grader will say about it


# %% [markdown]
# ## 2 · One Euler step of the flow
#
# A trained network gives a velocity at every point, and sampling integrates $dx/dt = v_\theta(x, t)$ from $t = 1$
# ($x_1 = \epsilon$) down to $t = 0$. Euler's method takes the velocity where it stands:
#
# $$x_s = x_t + (s - t)\, v_\theta(x_t, t), \qquad s < t .$$
#
# A velocity is also a denoiser: from $(x_t, v)$ both ends of the line follow, $\hat x_0 = x_t - t v$ and
# $\hat\epsilon = x_t + (1 - t) v$, and the Euler step is $(1 - s)\hat x_0 + s \hat\epsilon$. Divided by
# $c_t = \sqrt{(1 - t)^2 + t^2}$, $x_t$ is a VP state $\sqrt{\bar\alpha}\, x_0 + \sqrt{1 - \bar\alpha}\,\epsilon$ with
# $\bar\alpha = (1 - t)^2 / c_t^2$, so one Euler step of the flow is exactly one DDIM step between those levels.
#
# Write `euler_flow_step(x_t, v, t, s)`: `x_t` and `v` are `(B, ...)`; `t` and `s` are both numbers, or both `(B,)`
# tensors in `x_t`'s dtype, one time per example, with `s < t`. Return $x_s$, shaped and typed like `x_t`.

# %%
def euler_flow_step(x_t, v, t, s):
    """One Euler step of dx/dt = v from flow time t down to s: x_s = x_t + (s - t) v (t, s numbers or (B,) tensors)."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run: the exact velocity $E[\epsilon - x_0 \mid x_t]$ of data $\mathcal N(0.7, 0.4^2)$, from the exact
# denoiser at the matching VP level on the course's grid of 1000 flow times. The exact flow carries $x_1$ to
# $0.7 + 0.4\, x_1$. One Euler step from $t = 1$ lands every sample on $\hat x_0 = E[x_0] = 0.7$, the average of the
# data; more steps approach the exact flow, and the error of Euler's method, first order, shrinks in proportion to the
# step. Last, one step with an arbitrary velocity, compared with DDIM between the matching VP levels.

# %%
grid = FlowGrid(1000)
data = GaussianData(grid, mean=0.7, std=0.4)
x1 = torch.randn(10000, 1, generator=g, dtype=torch.float64)
print(f"the exact flow, 0.7 + 0.4 x_1: mean {(0.7 + 0.4 * x1).mean():.4f}, std {(0.4 * x1).std():.4f}")
for n in (1, 4, 20, 100):
    x = x1
    for i in range(n):
        t, s = 1 - i / n, 1 - (i + 1) / n                 # multiples of 1/1000: the grid's code indices 1000 t - 1
        x0_hat, eps_hat = data.denoise(x / vp_scale(t), torch.full((len(x),), round(1000 * t) - 1))[:2]
        x = euler_flow_step(x, eps_hat - x0_hat, t, s)  # the exact velocity E[eps - x_0 | x_t]
    error = (x - (0.7 + 0.4 * x1)).abs().max()
    print(f"{n:3d} Euler step{'s' if n > 1 else ' '}: mean {x.mean():.4f}, std {x.std():.4f}, "
          f"largest error {error:.4f}")
x, v = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
pred = Prediction(*to_x0_eps(x, 0.8, v))                     # t = 0.8 and 0.3 are code indices 799 and 299
ddim = ddim_step(grid, x / vp_scale(0.8), torch.full((4,), 799), torch.full((4,), 299), pred)
print("from t = 0.8 to 0.3 the step is DDIM's:", torch.allclose(euler_flow_step(x, v, 0.8, 0.3) / vp_scale(0.3), ddim,
                                                               rtol=1e-12, atol=1e-12))
feedback.check("13", "euler_flow_step", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · DPM-Solver++(2M)
#
# DPM-Solver writes a diffusion model's probability-flow ODE in $\lambda = -\ln \sigma$, where
# $\sigma = \sqrt{(1 - \bar\alpha) / \bar\alpha}$ is EDM's noise level (so $\lambda = \ln(\sqrt{\bar\alpha} /
# \sqrt{1 - \bar\alpha})$, half the log signal-to-noise ratio). In EDM's variable $x^{VE} = x / \sqrt{\bar\alpha}$ a
# step from level $t$ to level $s$ is exactly (Lu et al., 2022)
#
# $$x_s^{VE} = \frac{\sigma_s}{\sigma_t}\, x_t^{VE}
#   + \sigma_s \int_{\lambda_t}^{\lambda_s} e^{\lambda}\, \hat x_0(\lambda)\, d\lambda ,$$
#
# where $\hat x_0(\lambda)$ is the denoiser's along the path. DDIM holds $\hat x_0$ constant over the step, which
# gives $x_s^{VE} = \frac{\sigma_s}{\sigma_t} x_t^{VE} + (1 - \frac{\sigma_s}{\sigma_t})\hat x_0$: a first-order method.
# DPM-Solver++(2M) keeps the previous step's $\hat x_0$ and extrapolates linearly in $\lambda$ to the middle of the
# step (Algorithm 2). With $h = \lambda_s - \lambda_t$ and
# $r = (\lambda_t - \lambda_{\text{prev}}) / h$,
#
# $$D = \Big(1 + \frac{1}{2r}\Big)\hat x_0 - \frac{1}{2r}\,\hat x_0^{\text{prev}}, \qquad
#   x_s = \sqrt{\bar\alpha_s}\, D
#   + \sqrt{1 - \bar\alpha_s}\;\frac{x_t - \sqrt{\bar\alpha_t}\, D}{\sqrt{1 - \bar\alpha_t}} :$$
#
# DDIM's step with $D$ in place of $\hat x_0$ and the noise re-derived from $x_t$ and $D$ (in EDM's variable,
# $x_s^{VE} = \frac{\sigma_s}{\sigma_t} x_t^{VE} + (1 - \frac{\sigma_s}{\sigma_t}) D$). One network call a step, as
# DDIM, and second order. It is not exact even when $\hat x_0$ is linear in $\lambda$ (reading the line at the middle
# of the step is not weighing it by $e^\lambda$), but its error on one step then shrinks about eightfold when the step
# is halved, DDIM's about fourfold. The first step has no previous $\hat x_0$ and is DDIM's; so is the last, to the data
# ($\bar\alpha_s = 1$, $\lambda_s = \infty$), which this exercise leaves out.
#
# Write `dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s)`: `x_t`, `x0_hat` (the
# denoiser's at $t$) and `x0_prev` (its $\hat x_0$ at the previous step's time) are `(B, ...)`; the three levels are
# `(B,)` float64 tensors with `alpha_bar_prev < alpha_bar_t < alpha_bar_s < 1`. Compute the $\lambda$s in float64 and
# return $x_s$ shaped and typed like `x_t`.

# %%
def dpmpp_2m_update(x_t, x0_hat, x0_prev, alpha_bar_prev, alpha_bar_t, alpha_bar_s):
    """DPM-Solver++(2M)'s update (Lu et al., 2022, Algorithm 2) in the VP variable: x0_hat extrapolated linearly in
    lambda = ln(sqrt(ab) / sqrt(1 - ab)) to D, then DDIM's eta = 0 step from level alpha_bar_t to alpha_bar_s with D."""
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: implement this (see the docstring above).")


# %% [markdown]
# A check you can run: three points of data $\mathcal N(0.5, 0.5^2)$ on the course's linear schedule, carried from
# $t = 999$ to $t = 0$ in $N$ steps of the linspace grid by DDIM and by DPM-Solver++(2M) (your update, after a first
# DDIM step), with the exact denoiser; the error is relative to the exact flow map at $t = 0$. Halving the step halves
# DDIM's error (first order) and, once the steps are short, quarters DPM-Solver++(2M)'s (second order). Up to 40 steps
# DPM-Solver++(2M) is the worse of the two on this grid, whose last step, to $t = 0$, is by far its longest in
# $\lambda$: there $1/(2r)$ is largest, and DPM-Solver++(2M) extrapolates furthest.

# %%
schedule = NoiseSchedule.linear(1000)
gaussian, ab = GaussianData(schedule, mean=0.5, std=0.5), schedule.alpha_bars
lam = torch.log(ab.sqrt() / (1 - ab).sqrt())
x_T = torch.tensor([[-1.5], [0.3], [2.0]], dtype=torch.float64)
exact = gaussian.flow(x_T, torch.full((3,), 999), torch.zeros(3, dtype=torch.long))
for n in (10, 20, 40, 80, 160):
    errors = []
    for second_order in (False, True):
        ts, x, x0_prev = spaced(1000, n + 1), x_T, None
        for t_prev, t, s in zip([None] + ts, ts, ts[1:]):
            pred = gaussian.denoise(x, torch.full((3,), t))                 # the exact x0_hat and eps_hat
            if second_order and x0_prev is not None:
                x = dpmpp_2m_update(x, pred.x0, x0_prev, ab[[t_prev] * 3], ab[[t] * 3], ab[[s] * 3])
            else:
                x = ddim_step(schedule, x, torch.full((3,), t), torch.full((3,), s), pred)
            x0_prev = pred.x0
        errors.append(float((x - exact).abs().max() / exact.abs().max()))
    h = [float(lam[s] - lam[t]) for t, s in zip(ts, ts[1:])]                # each step's length in lambda
    print(f"{n:3d} steps (in lambda: the last {h[-1]:.2f}, the others {max(h[:-1]):.2f} at most): relative error "
          f"DDIM {errors[0]:.4f}, DPM-Solver++(2M) {errors[1]:.4f}")
feedback.check("13", "dpmpp_2m_update", globals())  # what the grader will say about it
