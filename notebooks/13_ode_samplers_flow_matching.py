# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/13_ode_samplers_flow_matching.ipynb)
#
# # Lesson 13 — The probability-flow ODE, second-order samplers and flow matching
#
# This lesson goes beyond the lecture, to where the field went next. Today's image generators sample by solving an
# ordinary differential equation with a higher-order solver, in tens of network calls rather than a thousand, and
# many are trained by **flow matching**: the network learns the velocity of a straight path between data and noise
# (Stable Diffusion 3 is such a "rectified flow", Esser et al. 2024). The courses followed: MIT's 6.S184 (2026) is
# called *Introduction to Flow Matching and Diffusion Models*, and CMU's 10-799 (spring 2026) compares flow matching
# with DDIM. The thread of the lesson is that neither is a new kind of model:
#
# * DDIM with $\eta = 0$ (lesson 6) is exactly **Euler's method** on the probability-flow ODE. Better solvers of the
#   same equation, Heun's method (Karras et al. 2022, "EDM") and DPM-Solver++(2M) (Lu et al. 2022), come closer to its
#   solution in the same number of network calls, from the same trained network. Whether that buys better samples is
#   measured in section 4.
# * **Flow matching** on the straight path trains a velocity, which converts exactly into the $\hat x_0$ and
#   $\hat\varepsilon$ of lessons 1–8: one Euler step of the flow *is* one DDIM step. What differs is the scale of the
#   state, the loss weighting and which times the training sees. On the course's budget, flow matching trained the
#   better latent model (section 6).
#
# | part | what runs | runtime, 2-core CPU, one thread |
# |---|---|---|
# | section 1: the probability-flow ODE in EDM's variables; DDIM is its Euler step | one call of `mnist_cond` | under a second |
# | section 2: Heun and DPM-Solver++(2M) as steps of the one loop | the loop traced on Gaussian data | under a second |
# | section 3: Gaussian data: the exact flow map; first against second order | 21 runs of the loop in float64 | under a second |
# | section 4: `mnist_cond`: quality against network calls, measured; the three solvers side by side | read from `docs/ode_table.json` (`benchmarks/fast_sampling.py --table ode`, not run here); 40 samples and Heun's first step on 10 | about 5 s |
# | section 5: flow matching: the path, the velocity, logit-normal $t$, Euler = DDIM | closed forms and the exact velocity of Gaussian data | under a second |
# | section 6: the shipped `mnist_latent_flow` against `mnist_latent` | its card; 70 samples; read from `docs/ode_flow_table.json` (`benchmarks/ode_flow.py`, not run here) | about a second |
# | section 7: the fastest route to 64 digits; the playground | read from `docs/ode_flow_table.json`; the panel's first draw | about a second |
# | the whole notebook | | `ci` (the stored outputs): as its last cell prints |
#
# **Study time:** about 1 h of reading and running, and about 1 h for the exercise
# (`exercises/13_ode_samplers_flow_matching.ipynb`). Both are estimates, not measured.
#
# Library: `lesson_lib.diffusion.ode` (`sigma_of`, `euler_step`, `heun_step`, `dpmpp_2m_step`, `SOLVERS`),
# `lesson_lib.diffusion.sampling` (the one loop `sample` and its `state`, `ode_sample`),
# `lesson_lib.diffusion.flow_matching` (`path`, `velocity_target`, `to_x0_eps`, `vp_level`, `vp_scale`, `flow_time`,
# `logit_normal`, `FlowMatching`, `FlowGrid`, `flow_sample`), `lesson_lib.diffusion.oracles` (`GaussianData`),
# `lesson_lib.course.playground`; the recipe `mnist_latent_flow` (`lesson_lib.recipes.latent`) and the benchmarks
# `benchmarks/fast_sampling.py --table ode` and `benchmarks/ode_flow.py`.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import ast
import inspect
import json
import math
import time

import matplotlib.pyplot as plt
import torch

from lesson_lib.course.colab import course_file
from lesson_lib.course.plotting import show_grid
from lesson_lib.diffusion.denoiser import Denoiser, Prediction
from lesson_lib.diffusion.flow_matching import (FlowGrid, flow_euler_step, flow_sample, flow_time, logit_normal,
                                                path, to_x0_eps, velocity_target, vp_level, vp_scale)
from lesson_lib.diffusion.forward import eps_from_x0
from lesson_lib.diffusion.guidance import ClassifierFreeGuidance
from lesson_lib.diffusion.ode import SOLVERS, dpmpp_2m_step, euler_step, heun_step, sigma_of, stateful
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.sampling import sample
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.diffusion.timesteps import spaced
from lesson_lib.pretrained import latent_decoding, load_pretrained, model_card
from lesson_lib.sample import generate
from lesson_lib.training.profiles import current_profile

torch.set_num_threads(1)
profile = current_profile()
print("profile:", profile)
started = time.time()


def read_table(name):
    """A measured table from docs/, or None while the benchmark has not written it."""
    try:
        return json.loads(course_file(f"docs/{name}").read_text())
    except FileNotFoundError:
        return None

# %% [markdown]
# ## 1. The probability-flow ODE, and DDIM as its Euler step
#
# Karras et al. (2022, "EDM") describe every diffusion model by one noise level $\sigma$. For the course's schedule
# (VP: variance preserving) the change of variables is
#
# $$\sigma_t = \sqrt{\frac{1 - \bar\alpha_t}{\bar\alpha_t}}, \qquad x_\text{VE} = \frac{x_t}{\sqrt{\bar\alpha_t}} ,$$
#
# and the forward process $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ becomes
# $x_\text{VE} = x_0 + \sigma_t\,\varepsilon$: the clean image plus noise of standard deviation $\sigma$ ("variance
# exploding", VE). In these variables the **probability-flow ODE** (Song et al. 2021, "score SDE"), the deterministic
# path that carries every $x_T$ to a sample while keeping every marginal $q(x_t)$ of the forward process, is
#
# $$\frac{d x_\text{VE}}{d\sigma} = \frac{x_\text{VE} - D(x_\text{VE}; \sigma)}{\sigma} = \hat\varepsilon(x_t, t)
# \qquad \text{(EDM, Eq. 3 with } \sigma(t) = t,\ s(t) = 1\text{)},$$
#
# where $D = \hat x_0$ is the denoiser: the network's $\hat x_0$ and $\hat\varepsilon$ satisfy
# $x_\text{VE} = \hat x_0 + \sigma\,\hat\varepsilon$, so the slope of the ODE is the network's $\hat\varepsilon$ itself.
# Sampling integrates it from the largest $\sigma$ down to $\sigma = 0$. The course's linear schedule ($T = 1000$)
# spans this range (`sigma_of`; code timestep $t = -1$ is the data, $\bar\alpha = 1$):

# %%
model, schedule = load_pretrained("mnist_cond")
sigmas = sigma_of(schedule.alpha_bars)
print(f"sigma at code timestep t = 0: {sigmas[0].item():.4f};  at t = {schedule.T - 1}: {sigmas[-1].item():.2f};  "
      f"at the data (t = -1): {sigma_of(schedule.alpha_bars_with_0[0]).item():.0f}")
print(f"t = 499: {sigmas[499].item():.3f};  sigma = 1 (as much noise as signal) near t = "
      f"{int((sigmas - 1).abs().argmin())}")

# %% [markdown]
# The course's ODE starts at $\sigma = 157.41$ and ends at $0.0100$ before a last step to the data; EDM's own grid
# for images in $[-1, 1]$ runs from 80 down to 0.002.
#
# **DDIM is Euler's method.** An Euler step from $\sigma_t$ to $\sigma_s$ uses the slope at the start,
# $x_\text{VE}(\sigma_s) = x_\text{VE}(\sigma_t) + (\sigma_s - \sigma_t)\,\hat\varepsilon$. Substituting
# $x_\text{VE}(\sigma_t) = \hat x_0 + \sigma_t\hat\varepsilon$ gives $\hat x_0 + \sigma_s\hat\varepsilon$, and
# multiplying by $\sqrt{\bar\alpha_s}$ (with $\sqrt{\bar\alpha_s}\,\sigma_s = \sqrt{1 - \bar\alpha_s}$) gives
# $\sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s}\,\hat\varepsilon$: DDIM's Eq. 12 with $\eta = 0$. The
# library's `euler_step` computes the first form, `ddim_step` the second. One step of each, from the prediction of
# `mnist_cond` for 10 noisy inputs (in float64, with $\hat\varepsilon$ derived from $\hat x_0$ so that the pair is
# exactly consistent):

# %%
x_t = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
t, s = torch.full((10,), 700), torch.full((10,), 500)
with torch.no_grad():
    x0_hat = Denoiser(model, schedule)(x_t, t, y=torch.arange(10)).x0.double()
x_t64 = x_t.double()
pred = Prediction(x0_hat, eps_from_x0(schedule, x_t64, t, x0_hat))
x_euler, _ = euler_step(schedule, x_t64, t, s, pred)
x_ddim = ddim_step(schedule, x_t64, t, s, pred)
print(f"the step moves x by up to {(x_ddim - x_t64).abs().max().item():.1f}; "
      f"max |Euler step - DDIM step| < 1e-12: {(x_euler - x_ddim).abs().max().item() < 1e-12}")

# %% [markdown]
# The two agree to rounding. So every DDIM sample of lessons 6–11 was an Euler solution of this ODE, and the error
# DDIM makes with few steps is the **discretisation error** of Euler's method: a first-order method, whose global
# error shrinks in proportion to the step. Section 3 measures it.

# %% [markdown]
# ## 2. Two second-order solvers, as steps of the one loop
#
# **Heun** (EDM, Algorithm 2, lines 5–8) takes the Euler step to a trial point $x'_s$, calls the network there, and
# repeats the step with the average of the two slopes:
#
# $$x_\text{VE}(\sigma_s) = x_\text{VE}(\sigma_t) + (\sigma_s - \sigma_t)\,
# \tfrac12\big(\hat\varepsilon(x_t, t) + \hat\varepsilon(x'_s, s)\big).$$
#
# Two network calls a step, except the last one to $\sigma = 0$, which stays Euler (the slope
# $(x - \hat x_0)/\sigma$ is not defined at $\sigma = 0$): **$2N - 1$ calls for $N$ steps**.
#
# **DPM-Solver++(2M)** (Lu et al. 2022, Algorithm 2) writes DDIM in $\hat x_0$ form,
# $x_\text{VE}(\sigma_s) = \frac{\sigma_s}{\sigma_t}\,x_\text{VE}(\sigma_t) + \big(1 - \frac{\sigma_s}{\sigma_t}\big)\hat x_0$,
# and replaces $\hat x_0$ by a linear extrapolation in $\lambda = -\ln\sigma$ from this step's $\hat x_0$ and the
# previous step's:
#
# $$D = \Big(1 + \frac{1}{2r}\Big)\hat x_0^{(t)} - \frac{1}{2r}\,\hat x_0^{(\text{prev})},
# \qquad r = \frac{h_\text{prev}}{h},\quad h = \lambda_s - \lambda_t .$$
#
# **One call a step**, second order from the second step on; the first step (no previous $\hat x_0$ yet) and the
# step to $\sigma = 0$ ($h$ infinite) are plain DDIM.
#
# Both need something a step of the chain never needed: Heun a second network call inside its step, DPM-Solver++
# the previous step's $\hat x_0$. The course does not give them a loop of their own. Its one sampling loop (`sample`,
# met in lessons 4 and 6) threads a small dict, the `state`, through any step marked as stateful; it starts as
# `{"denoise": ...}`, the run's own denoiser (with its conditioning and guidance), so that Heun's second call sees
# exactly what the first saw. These are the lines of the loop that do it:

# %%
def code(function, start=None, stop=None):
    """The source of ``function`` without its docstring, or only its lines from ``start`` to ``stop`` (substrings)."""
    source = inspect.getsource(function)
    node = ast.parse(source).body[0]
    lines = source.splitlines()
    if start is not None:
        first = next(i for i, line in enumerate(lines) if start in line)
        last = next(i for i, line in enumerate(lines) if i > first and stop in line)
        return "\n".join(lines[first:last + 1])
    docstring = ast.get_docstring(node) is not None
    return "\n".join(lines[:node.body[0].lineno - 1] + lines[node.body[1 if docstring else 0].lineno - 1:])


print(code(sample, start="state = {", stop="x = x_s"))

# %% [markdown]
# A stateful step takes the state as a seventh argument and returns it with the new $x$. Heun reads the denoiser from
# it; DPM-Solver++ reads the previous $\hat x_0$ and $\lambda$ and stores this step's:

# %%
print(code(heun_step))
print()
print(code(dpmpp_2m_step))

# %% [markdown]
# To watch it work, the loop below runs both solvers for three steps on Gaussian data, whose exact denoiser
# (`GaussianData`, section 3) stands in for a network; a wrapper prints each network call and what the state holds
# when a step starts:

# %%
gaussian = GaussianData(schedule, mean=0.5, std=0.5)


def traced(solver):
    @stateful
    def step(schedule, x_t, t, s, pred, noise=None, state=None):
        held = {k: f"lambda = {v[0].item():.2f}" if k == "lam" else type(v).__name__ for k, v in state.items()}
        print(f"    step {int(t[0])} -> {int(s[0])} starts; state: {held}")
        return SOLVERS[solver](schedule, x_t, t, s, pred, noise, state)
    return step


def counted(x, t, **cond):
    print(f"      network call at t = {int(t[0])}")
    return gaussian.denoise(x, t)


x_T = torch.tensor([[0.3]], dtype=torch.float64)
for solver in ("heun", "dpmpp2m"):
    print(f"{solver}, 3 steps on {spaced(schedule.T, 3)}:")
    sample(counted, schedule, x_T, spaced(schedule.T, 3), traced(solver), stochastic=False, progress=False)

# %% [markdown]
# Heun: 5 calls for 3 steps; the second call of each step comes from inside the step, at the step's end point, and
# the step to the data makes none. DPM-Solver++: 3 calls; the first step finds no previous $\hat x_0$ in the state
# (a DDIM step), the later ones find it with the $\lambda$ it was made at. The same loop runs DDPM, DDIM, guided
# and consistency sampling unchanged: a step that is not marked is called without the state.

# %% [markdown]
# ## 3. Gaussian data: the exact flow map, and first against second order
#
# For data $x_0 \sim \mathcal N(m, s^2 I)$ the ODE can be solved by hand. In the VE variables the marginal at level
# $\sigma$ is $\mathcal N(m, (s^2 + \sigma^2) I)$ and the exact $\hat\varepsilon = E[\varepsilon \mid x]
# = \sigma\,(x - m) / (s^2 + \sigma^2)$, so $d \ln(x - m) / d\sigma = \sigma / (s^2 + \sigma^2)$ and each point keeps
# its standard score:
#
# $$x_0 = m + \frac{s}{\sqrt{s^2 + \sigma_T^2}}\,\big(x_\text{VE}(\sigma_T) - m\big),
# \qquad x_\text{VE}(\sigma_T) = x_T / \sqrt{\bar\alpha_T}.$$
#
# An affine map: every solver's error can be measured against it exactly. `GaussianData.flow` holds the same map in
# the course's variables, from any timestep to any other:

# %%
m, sd = 0.5, 0.5
x_T = torch.tensor([[-1.5], [0.3], [2.0]], dtype=torch.float64)             # three starting points
sigma_T = sigma_of(schedule.alpha_bars[-1])
by_hand = m + sd / (sd ** 2 + sigma_T ** 2).sqrt() * (x_T / schedule.alpha_bars[-1].sqrt() - m)
library = gaussian.flow(x_T, torch.full((3,), schedule.T - 1), torch.full((3,), -1))
print("x_T:", x_T.flatten().tolist(), "-> x_0:", [round(v, 4) for v in by_hand.flatten().tolist()])
print("max |by hand - GaussianData.flow| < 1e-12:", (by_hand - library).abs().max().item() < 1e-12)

# %% [markdown]
# Each solver now runs from $t = 999$ to $t = 0$ ($\sigma = 0.0100$, where the exact map is compared; the last step
# to the data is left out, so every Heun step is corrected and $N$ Heun steps cost $2N$ calls) on the course's
# default grid (`spaced(1000, N + 1)`, evenly spaced code timesteps), with the exact denoiser in place of a network,
# in float64. The error is the largest of the three points' errors, relative to the largest $|x|$:

# %%
exact_at_0 = gaussian.flow(x_T, torch.full((3,), schedule.T - 1), torch.zeros(3, dtype=torch.long))
NAMES = {"euler": "DDIM (= Euler)", "heun": "Heun", "dpmpp2m": "DPM-Solver++(2M)"}
STEPS = (5, 10, 20, 40, 80, 160, 320)


def error_at_0(solver, steps):
    at_0 = {}
    sample(gaussian.denoise, schedule, x_T, spaced(schedule.T, steps + 1), SOLVERS[solver], stochastic=False,
           callback=lambda r: at_0.update(x=r.x_s) if r.s == 0 else None, progress=False)
    return ((at_0["x"] - exact_at_0).abs().max() / exact_at_0.abs().max()).item()


errors = {solver: [error_at_0(solver, n) for n in STEPS] for solver in NAMES}
calls = {solver: [2 * n if solver == "heun" else n for n in STEPS] for solver in NAMES}
print(f"{'steps N':>7}" + "".join(f"{NAMES[k] + ': error':>26} {'ratio':>6}" for k in NAMES))
for i, n in enumerate(STEPS):
    cells = []
    for k in NAMES:
        ratio = f"{errors[k][i - 1] / errors[k][i]:.2f}" if i else "-"
        cells.append(f"{errors[k][i]:>26.3g} {ratio:>6}")
    print(f"{n:>7}" + "".join(cells))
lam = -sigma_of(schedule.alpha_bars[spaced(schedule.T, 11)]).log()                  # lambda = -ln sigma at each t
print("N = 10: each step's length in lambda = -ln sigma:", [round(h, 2) for h in lam.diff().tolist()])

# %%
fig, ax = plt.subplots(figsize=(6.6, 4.4))
for k, marker in zip(NAMES, "os^"):
    ax.plot(calls[k], errors[k], marker + "-", label=NAMES[k] + (" (2N calls)" if k == "heun" else " (N calls)"))
n_ref = torch.tensor([10.0, 640.0])
ax.plot(n_ref, 2.0 / n_ref, "k:", lw=1, label="slope -1 (first order)")
ax.plot(n_ref, 12.0 / n_ref ** 2, "k--", lw=1, label="slope -2 (second order)")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xticks([5, 10, 20, 40, 80, 160, 320, 640], ["5", "10", "20", "40", "80", "160", "320", "640"])
ax.set_xticks([], minor=True)
ax.set_xlabel("network calls (log scale)")
ax.set_ylabel("relative error at t = 0 against the exact map")
ax.set_title("Gaussian data N(0.5, 0.5^2), exact denoiser, float64")
ax.legend(fontsize=8, loc="lower left")
fig.tight_layout()
plt.show()

# %% [markdown]
# Halving the step divides DDIM's error by 1.83 to 1.98: first order, the slope $-1$. Heun's falls by 3.91 to 4.29 a
# halving, the slope $-2$, and at equal calls it is ahead everywhere (at 20 calls: 0.047 against DDIM's 0.0882).
# DPM-Solver++(2M) reaches its second-order ratio late, 3.74 and then 4.11 and 4.18 from $N = 40$ on; at 10 steps
# its error is larger than at 5 (ratio 0.47) and larger than DDIM's. The reason is the grid: evenly spaced code
# timesteps make the last step, from $t = 100$ to $t = 0$, very long in $\lambda = -\ln\sigma$ (3.53 at $N = 10$,
# the one before it 0.75), and the solver extrapolates $\hat x_0$ across it from a step a fifth as long. Section 4
# measures the three solvers on a trained network, on the same grid.

# %% [markdown]
# ## 4. On `mnist_cond`: fewer calls for the same quality, measured
#
# `benchmarks/fast_sampling.py --table ode` (not run here) sampled `mnist_cond` without guidance with each solver at
# budgets of 4 to 50 network calls, every cell from the same $x_T$ on the course's default grid, and measured FID and
# KID on the course classifier's features against the real-data floor at the same $n$, class accuracy, and the
# root-mean-square distance of the first 100 samples to DDIM with 1,000 steps from the same $x_T$ (nearly the ODE's
# exact solution). Heun's budget holds the most steps that fit: $N$ steps cost $2N - 1$ calls.

# %%
ode = read_table("ode_table.json")
if ode is None:
    print("docs/ode_table.json is not there yet: run benchmarks/fast_sampling.py --table ode")
else:
    print(f"{ode['model']}, n = {ode['n']:,} samples per cell ({ode['n'] // 10} per class), seed {ode['seed']}, "
          f"{ode['spacing']} grid, x0_hat clipped: {ode['clip_x0']}; complete: {ode['complete']}")
    print(f"{ode['hardware']}; features {ode['feature_network']}; distance: {ode['reference']}")
    spread = ode["floor"]["fid_by_n"][str(ode["n"])][1]
    print(f"real-data floor at n = {ode['n']:,}: FID {ode['floor_fid']:.3f} (standard deviation over random draws of "
          f"{ode['n']:,} real images: {spread:.3f})")
    print(f"{'solver':<17} {'steps':>5} {'calls':>5} {'FID':>7} {'KID':>8} {'accuracy':>8} {'Tr ratio':>8} "
          f"{'RMS to DDIM-1000':>16}")
    for solver in NAMES:
        for r in sorted((r for r in ode["rows"] if r["solver"] == ("ddim" if solver == "euler" else solver)),
                        key=lambda r: r["nfe"]):
            print(f"{NAMES[solver]:<17} {r['S']:>5} {r['nfe']:>5} {r['fid']:>7.3f} {r['kid'] or 0.0:>8.4f} "
                  f"{r['accuracy']:>8.3f} {r['trace_ratio']:>8.2f} {r['rms_to_ddim1000']:>16.4f}")

# %%
if ode is not None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for solver, marker in zip(NAMES, "os^"):
        rows = sorted((r for r in ode["rows"] if r["solver"] == ("ddim" if solver == "euler" else solver)),
                      key=lambda r: r["nfe"])
        nfe = [r["nfe"] for r in rows]
        for ax, key in zip(axes, ("fid", "accuracy", "rms_to_ddim1000")):
            ax.plot(nfe, [r[key] for r in rows], marker + "-", label=NAMES[solver])
    axes[0].axhline(ode["floor_fid"], color="grey", ls="--", lw=1, label=f"real-data floor (n = {ode['n']:,})")
    axes[0].set_ylim(0, 2.5)
    above = [r for r in ode["rows"] if r["fid"] > 2.5]
    axes[0].text(0.03, 0.03, "above the axis: " + ", ".join(f"{NAMES.get(r['solver'], 'DDIM')} at {r['nfe']} calls "
                                                            f"{r['fid']:.1f}" for r in above),
                 transform=axes[0].transAxes, fontsize=8)
    axes[0].set_ylabel(f"FID (MNIST classifier features, n = {ode['n']:,})")
    axes[1].set_ylabel(f"class accuracy (n = {ode['n']:,})")
    axes[1].set_ylim(0.85, 1.0)
    below = [r for r in ode["rows"] if r["accuracy"] < 0.85]
    axes[1].text(0.03, 0.03, "below the axis: " + ", ".join(f"{NAMES.get(r['solver'], 'DDIM')} at {r['nfe']} calls {r['accuracy']:.3f}"
                                                           for r in below), transform=axes[1].transAxes, fontsize=8)
    axes[2].set_yscale("log")
    axes[2].set_ylabel("RMS distance to DDIM-1000 (log scale)")
    axes[0].set_title("FID and the floor")
    axes[1].set_title("class accuracy")
    axes[2].set_title("distance to the ODE's solution (first 100 samples)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks([3, 4, 6, 8, 10, 15, 20, 35, 50], ["3", "4", "6", "8", "10", "15", "20", "35", "50"])
        ax.set_xticks([], minor=True)
        ax.set_xlabel("network calls (log scale)")
        ax.legend(fontsize=8)
    fig.suptitle("mnist_cond without guidance, the same x_T in every cell")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# What the table shows, on one CPU thread with $n = 1{,}000$ per cell:
#
# * **Solving the ODE.** DPM-Solver++(2M) is the closest to DDIM-1000 at every budget (0.0753 at 10 calls against
#   DDIM's 0.0943), and at 20 calls it is about as close as DDIM at 35 (0.0323 against 0.0301). Heun passes DDIM from
#   19 calls on (0.0453 against 0.0510 at 20), and at 49 calls it is as close as DPM-Solver++ at 50 (0.0115 and
#   0.0109). Below 9 calls Heun fails outright: FID 320.009 at 3 calls and 72.845 at 5 (the end of this section shows
#   why).
# * **Sample quality.** From 8 calls on, DDIM's FID lies between 0.321 and 0.353 and DPM-Solver++'s between 0.352 and
#   0.413, around the floor of 0.335; the FID of 1,000 training images against 1,000 test images varies by 0.049
#   (standard deviation) when both are redrawn, so at this $n$ these differences are small. DDIM, farther from the
#   ODE's solution than DPM-Solver++ at every budget, has the lowest FID from 10 calls on.
# * **Few DDIM steps trade spread for typical digits.** At 4 calls DDIM's samples are classified right most often
#   (0.994) but their features spread less than the data's (trace ratio 0.81, where 1 is the test set's spread), and
#   FID is 0.945. DPM-Solver++ at 4 calls keeps the spread (1.00) and reaches FID 0.287 at accuracy 0.992. With more
#   calls every solver ends near 0.94 of the spread and 0.964 to 0.969 accuracy.
#
# **The aim, DPM-Solver++(2M) at 10 calls at least as good as DDIM at 20** (FID and class accuracy at the same
# $n = 1{,}000$), **does not hold**: FID 0.411 against 0.321, class accuracy 0.963 against 0.975. DPM-Solver++ is the
# better solver of the ODE, and at 4 and 6 calls the better sampler by FID; from 10 calls on, where DDIM is already
# at the floor, the measured quality does not reward the smaller solver error. Clipping $\hat x_0$ at every step is
# not the cause: without it (`benchmarks/fast_sampling.py --table ode --nfe 10 20 --no-clip`, stored in
# `docs/ode_table_noclip.json`, same $n$ and $x_T$) DPM-Solver++(2M) at 10 calls scores FID 0.412 and accuracy 0.961,
# DDIM at 20 calls 0.303 and 0.974. Nor is the small $n$: at $n = 5{,}000$ (`--n 5000 --nfe 10 20 --solvers ddim
# dpmpp2m`, stored in `docs/ode_table_n5000.json`; floor 0.049) DPM-Solver++(2M) at 10 calls scores FID 0.230 and
# accuracy 0.970, DDIM at 20 calls 0.160 and 0.976.
#
# The same $x_T$ through the three solvers at 6 network calls (Heun: 3 steps, 5 calls), with DDIM at 50 steps as
# the reference, one digit per class, by the same `generate` call as `python -m lesson_lib.sample --sampler ...`:

# %%
digits = torch.arange(10)
runs = {"DDIM, 6 calls": ("ddim", 6), "DPM-Solver++(2M), 6 calls": ("dpmpp2m", 6),
        "Heun, 3 steps = 5 calls": ("heun", 3), "DDIM, 50 calls": ("ddim", 50)}
shown = {name: generate(model, schedule, 10, sampler, steps, cond={"y": digits}, seed=0, progress=False)
         for name, (sampler, steps) in runs.items()}
show_grid(torch.stack(list(shown.values())), row_labels=list(shown), col_labels=digits.tolist(), col_title="class",
          title="mnist_cond from one x_T (seed 0), no guidance", figsize=(13, 5.6))
for name, images in list(shown.items())[:3]:
    rms = (images - shown["DDIM, 50 calls"]).pow(2).flatten(1).mean(1).sqrt().mean().item()
    print(f"{name:<27} RMS distance to DDIM-50 from the same x_T: {rms:.2f}")

# %% [markdown]
# At 6 calls DDIM and DPM-Solver++ draw the digits of DDIM-50 with small differences in the strokes (RMS distance
# 0.16 and 0.15 on these 10); Heun, with 5 calls, leaves most of the noise in place (0.82).
#
# **Why Heun fails with few steps on this grid.** Substituting the Euler step into Heun's update shows what the
# second call adds: Heun's step is the DDIM step plus a correction,
#
# $$x_\text{VE}^\text{Heun}(\sigma_s) = x_\text{VE}^\text{DDIM}(\sigma_s)
# + \frac{\sigma_s - \sigma_t}{2}\,\big(\hat\varepsilon(x'_s, s) - \hat\varepsilon(x_t, t)\big),$$
#
# or, in the course's variable, that correction times $\sqrt{\bar\alpha_s}$. The factor in front of the difference is
# half the step in $\sigma$, and the course's grid spends its first step on most of the range of $\sigma$: with 3
# steps, from 157.41 to 3.44. The correction, measured on the 10 digits above for the first step at 3 and at 8 steps
# (the column "factor" is $\sqrt{\bar\alpha_s}\,(\sigma_s - \sigma_t)/2$):

# %%
denoise = Denoiser(model, schedule, clip_x0=True)                  # as generate() builds it (x0_hat clipped)
x_T = torch.randn((10, 1, 28, 28), generator=torch.Generator().manual_seed(0))      # generate()'s x_T for seed 0
rms = lambda a: a.pow(2).mean().sqrt().item()                                       # noqa: E731
print(f"{'steps':>5} {'first step':>12} {'sigma_t -> sigma_s':>19} {'factor':>7} {'RMS of the eps difference':>26} "
      f"{'RMS of the correction':>22} {'RMS of x_s (DDIM)':>18}")
for steps in (3, 8):
    t_, s_ = spaced(schedule.T, steps)[:2]
    t, s = torch.full((10,), t_), torch.full((10,), s_)
    with torch.no_grad():
        first = denoise(x_T, t, y=digits)
        x_trial, _ = euler_step(schedule, x_T, t, s, first)                     # the DDIM (Euler) step
        second = denoise(x_trial, s, y=digits)                                # Heun's second call
    sigma_t, sigma_s = sigma_of(schedule.alpha_bars[t_]), sigma_of(schedule.alpha_bars[s_])
    factor = (schedule.alpha_bars[s_].sqrt() * (sigma_s - sigma_t) / 2).item()
    print(f"{steps:>5} {f'{t_} -> {s_}':>12} {f'{sigma_t:.2f} -> {sigma_s:.2f}':>19} {factor:>7.2f} "
          f"{rms(second.eps - first.eps):>26.3f} {rms(factor * (second.eps - first.eps)):>22.3f} {rms(x_trial):>18.2f}")

# %% [markdown]
# With 3 steps the factor is $-21.47$: the two predictions differ by only 0.151 (RMS), yet the correction, 3.239, is
# three times the size of the state itself (0.97). A second-order formula assumes that the slope changes linearly
# over the step; from $\sigma = 157.41$ to $3.44$ it does not. With 8 steps the first step ends at $\sigma = 41.15$
# and the correction is 0.014. DDIM has no such term: its step $\hat x_0 + \sigma_s\hat\varepsilon$ stays bounded
# however long it is. Karras et al. pair Heun with a grid of their own (evenly spaced in $\sigma^{1/7}$ from 80 to
# 0.002), not tried here; on the course's grid Heun reaches FID 0.450 at 15 calls.

# %% [markdown]
# ## 5. Flow matching: a straight path and its velocity
#
# Flow matching (Lipman et al. 2023; Liu et al. 2023, "rectified flow") chooses the path first. The course's
# convention keeps the direction of its timesteps, $t = 1$ the noise and $t = 0$ the data:
#
# $$x_t = (1 - t)\,x_0 + t\,\varepsilon, \qquad v = \frac{d x_t}{dt} = \varepsilon - x_0 .$$
#
# Lipman et al. and the `torchcfm` library write the other direction, $x_t = t\,x_1 + (1 - t)\,x_0$ with $x_0$ the
# noise and $x_1$ the data: their time is $1 - t$, their target $x_1 - x_0$ is $-v$, and they integrate upwards. Time,
# target and direction flip together; flipping only one of them is a bug users of these libraries report often.
#
# The network $v_\theta(x_t, t)$ regresses the velocity, $L = E_{t, x_0, \varepsilon}\,\|v_\theta(x_t, t) -
# (\varepsilon - x_0)\|^2$ (`FlowMatching`). **A velocity is a denoiser**: from $(x_t, v)$ both ends of the straight
# line through $x_t$ follow,
#
# $$\hat x_0 = x_t - t\,v, \qquad \hat\varepsilon = x_t + (1 - t)\,v$$
#
# (`to_x0_eps`), so the course's loop samples a velocity network unchanged: a `VelocityDenoiser` reads the network
# this way, the flow's own Euler and Heun steps move $x$ along $t$ (Heun corrects every step, the last one included,
# since the velocity is finite at $t = 0$: $2N$ calls), and classifier-free guidance mixes the velocity
# (`flow_sample`).

# %%
g = torch.Generator().manual_seed(0)
x0, eps = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
tt = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
x_tt, v = path(x0, eps, tt), velocity_target(x0, eps)
print("ends: x at t = 0 is x_0:", torch.equal(x_tt[0], x0[0]), "| x at t = 1 is eps:", torch.equal(x_tt[3], eps[3]))
x0_back, eps_back = to_x0_eps(x_tt, tt, v)
error = max((x0_back - x0).abs().max(), (eps_back - eps).abs().max()).item()
print("(x_t, v) -> x0_hat, eps_hat: both ends recovered, max error < 1e-14:", error < 1e-14)

# %% [markdown]
# **Which $t$ the training sees.** Esser et al. (2024, Sec. 3.1) argue that the velocity is hardest to predict in
# the middle of the path: at $t = 1$ the best prediction needs only the mean of the data (there $v = x_t - E[x_0]$),
# and near $t = 0$ only the mean of the noise, 0. Their choice for Stable Diffusion 3 draws $t$ from the
# **logit-normal** law (their Eq. 19), $t = \operatorname{sigmoid}(u)$, $u \sim \mathcal N(0, 1)$ (`logit_normal`), which puts
# $P(0.3 \le t \le 0.7) = 2\Phi(\operatorname{logit} 0.7) - 1 = 0.603$ of the draws in the middle, against 0.4 for the
# uniform law. `mnist_latent_flow` trains with it.

# %%
draws = logit_normal(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
exact = math.erf(math.log(0.7 / 0.3) / math.sqrt(2))
print(f"P(0.3 <= t <= 0.7): exact {exact:.4f}; in 100,000 draws {((draws >= 0.3) & (draws <= 0.7)).double().mean().item():.3f}; "
      f"uniform 0.4")
fig, ax = plt.subplots(figsize=(6.4, 3.8))
ax.hist(draws.numpy(), bins=50, range=(0, 1), density=True, alpha=0.6, label="logit-normal(0, 1), 100,000 draws")
grid_t = torch.linspace(0.001, 0.999, 400, dtype=torch.float64)
density = torch.exp(-torch.logit(grid_t) ** 2 / 2) / math.sqrt(2 * math.pi) / (grid_t * (1 - grid_t))
ax.plot(grid_t, density, "k-", lw=1, label="its density")
ax.axhline(1.0, color="tab:red", lw=1.5, label="uniform U(0, 1)")
ax.axvspan(0.3, 0.7, color="grey", alpha=0.15, label="0.3 <= t <= 0.7")
ax.set_xlabel("flow time t (0 = data, 1 = noise)")
ax.set_ylabel("density")
ax.set_title("which times the training sees")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **The loss weighting.** On the straight path $\hat x_0 - x_0 = -t\,(v_\theta - v)$ and
# $\hat\varepsilon - \varepsilon = (1 - t)(v_\theta - v)$, so
#
# $$\|v_\theta - v\|^2 = \frac{\|\hat\varepsilon - \varepsilon\|^2}{(1 - t)^2} = \frac{\|\hat x_0 - x_0\|^2}{t^2} :$$
#
# plain flow matching is $L_\text{simple}$'s $\varepsilon$-loss weighted by $1/(1 - t)^2$, up near the data, and then
# by the density of $t$. On this Gaussian path the two objectives differ in that weighting, in the scale of the state
# (next paragraph) and in the law of $t$, not in what the network can express: each network's output converts exactly
# into the other's.
#
# **The same ODE, another scale.** $x_t / c_t$ with $c_t = \sqrt{(1-t)^2 + t^2}$ (`vp_scale`) is a VP state
# $\sqrt{\bar\alpha}\,x_0 + \sqrt{1-\bar\alpha}\,\varepsilon$ with $\bar\alpha(t) = (1-t)^2 / ((1-t)^2 + t^2)$
# (`vp_level`): the same signal-to-noise ratio. In EDM's variable, $\sigma = t / (1 - t)$. The course's schedule, read
# as flow times (`flow_time`, the inverse of `vp_level`), never reaches $t = 1$:

# %%
for k in (0, 249, 499, 999):
    print(f"code timestep {k:>3}: alpha-bar {schedule.alpha_bars[k].item():.5f} -> flow time t = "
          f"{flow_time(schedule.alpha_bars[k]).item():.5f}  (sigma = t / (1 - t) = {sigma_of(schedule.alpha_bars[k]).item():.4g})")
round_trip = (vp_level(flow_time(schedule.alpha_bars)) - schedule.alpha_bars).abs().max().item()
print("vp_level(flow_time(alpha-bar)) = alpha-bar for all 1,000 levels, to 1e-12:", round_trip < 1e-12)

# %% [markdown]
# **One Euler step of the flow is one DDIM step.** An Euler step $x_s = x_t + (s - t)\,v$ equals
# $(1 - s)\,\hat x_0 + s\,\hat\varepsilon$ (substitute $x_t = (1-t)\hat x_0 + t\hat\varepsilon$ and
# $v = \hat\varepsilon - \hat x_0$): DDIM's update written on the path. Divided by $c_s$, it is DDIM's Eq. 12 between
# the matching VP levels, for *any* velocity. Checked in float64 with a random velocity on the flow's grid
# (`FlowGrid`: code index $k$ is $t = (k + 1)/1000$), for long and short steps:

# %%
grid = FlowGrid(1000)
x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
worst = 0.0
for k_t, k_s in [(999, 899), (999, -1), (499, 249), (249, -1), (10, 3)]:
    t, s = torch.full((6,), k_t), torch.full((6,), k_s)
    tau, tau_s = grid.times_with_0[k_t + 1], grid.times_with_0[k_s + 1]
    v = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(k_t))
    pred = Prediction(*to_x0_eps(x, tau, v))
    flow_step, _ = flow_euler_step(grid, x, t, s, pred)
    ddim_vp = ddim_step(grid, x / vp_scale(tau), t, s, pred)          # DDIM on x_VP = x_t / c_t
    worst = max(worst, (flow_step / vp_scale(tau_s) - ddim_vp).abs().max().item())
print(f"5 steps (t = 1 -> 0.9, 1 -> 0, 0.5 -> 0.25, 0.25 -> 0, 0.011 -> 0.004): max |Euler / c_s - DDIM| < 1e-12: "
      f"{worst < 1e-12}")

# %% [markdown]
# So a flow model sampled with Euler's method and an $\varepsilon$-model sampled with DDIM run the same update; they
# differ in the grid of levels they visit (the flow's uniform $t$ against the course's evenly spaced code timesteps)
# and in what the network learnt.
#
# **One Euler step from pure noise returns the mean.** At $t = 1$ the input holds no information about $x_0$, so the
# best velocity gives $\hat x_0 = E[x_0]$, and a single Euler step from $t = 1$ to $0$ lands every starting point on
# the data mean: a one-step flow model draws the average. With the exact velocity of Gaussian data $\mathcal N(0.7,
# 0.4^2)$, built from `GaussianData` on the flow's grid:

# %%
class ExactVelocity(torch.nn.Module):
    """E[eps - x_0 | x_t] for Gaussian data on the flow's grid: the VP oracle at the matching level, on x_t / c_t."""

    prediction, num_classes, image_size, in_channels = "v", None, None, 1

    def __init__(self, data):
        super().__init__()
        self.data = data

    def forward(self, x_t, k, **cond):
        c = vp_scale(self.data.schedule.times[k]).to(x_t.dtype).reshape(-1, 1)
        x0_hat, eps_hat = self.data.denoise(x_t / c, k)[:2]
        return eps_hat - x0_hat


flow_data = GaussianData(grid, mean=0.7, std=0.4)
x1 = torch.randn(6, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
one_step = flow_sample(ExactVelocity(flow_data), x_T=x1, steps=1, progress=False)
exact_map = 0.7 + 0.4 * x1                       # the exact flow map of this data: x_0 = m + s x_1
print("x_1 (noise):         ", [round(v, 3) for v in x1.flatten().tolist()])
print("one Euler step:      ", [round(v, 3) for v in one_step.flatten().tolist()])
print("exact: 0.7 + 0.4 x_1:", [round(v, 3) for v in exact_map.flatten().tolist()])
for solver in ("euler", "heun"):
    x_0 = flow_sample(ExactVelocity(flow_data), x_T=x1, steps=8, solver=solver, progress=False)
    print(f"{solver.capitalize()}, 8 steps ({8 * (2 if solver == 'heun' else 1)} calls): "
          f"max |x_0 - exact| = {(x_0 - exact_map).abs().max().item():.2g}")

# %% [markdown]
# Every starting point lands on 0.7, the mean, although the exact flow map $x_0 = 0.7 + 0.4\,x_1$ (affine, as in
# section 3) sends them to six different points. The same holds for any velocity trained to its optimum: one Euler
# step from $t = 1$ returns $E[x_0]$, or $E[x_0 \mid y]$ for a class-conditional model, the average digit of the
# class. More steps follow the curve: 8 Euler steps miss the exact map by up to 0.16, 8 Heun steps (16 calls) by
# 0.0069.

# %% [markdown]
# ## 6. The shipped flow model `mnist_latent_flow`
#
# `mnist_latent_flow` is lesson 10's `mnist_latent` with one change: the objective. The same autoencoder and its
# 7×7×4 latents, the same U-Net (built to output a velocity), the same data, label dropout 0.1, Trainer and budget;
# flow matching with logit-normal $t$ instead of $L_\text{simple}$ (recipe `mnist_latent_flow` in
# `lesson_lib.recipes.latent`). Its card, beside `mnist_latent`'s:

# %%
cards = {"mnist_latent_flow": model_card("mnist_latent_flow"), "mnist_latent": model_card("mnist_latent")}
for name, card in cards.items():
    e = card["evaluation"]
    print(f"{name} (recipe {card['recipe']}): {card['steps']:,} steps of batch {card['settings']['batch_size']} "
          f"({card['examples_seen']:,} latents), {card['wall_time_s'] / 60:.0f} min on {card['hardware']}")
    print(f"    {e['sampler']}; features {e['feature_network']}, n = {e['guidance_0']['n']:,}")
    for w in ("0", "2"):
        r = e[f"guidance_{w}"]
        print(f"    guidance w = {w}: FID {r['fid']:.3f}, KID {r['kid']:.5f}, class accuracy {r['class_accuracy']:.3f}")
e = cards["mnist_latent_flow"]["evaluation"]
print(f"real-data floor (train against test, n = {e['guidance_0']['n']:,}): FID {e['fid_floor_train_vs_test']:.3f}, "
      f"KID {e['kid_floor']:.5f}; the autoencoder's reconstructions: FID {e['reconstruction_fid']:.3f}")

# %% [markdown]
# The two models had the same budget, 8,000 steps of batch 128 on one CPU thread (41 and 45 minutes). Without guidance
# the flow model's samples (50 Euler steps) reach FID 0.147, at the real-data floor of 0.194 (below it: at
# $n = 2{,}000$ the two are not told apart), and 0.975 of them are classified as their label, against 0.368 and 0.917
# for `mnist_latent` with DDIM-50. With guidance $w = 2$ both classify every sample right (1.000), at FID 0.712 and
# 0.714. On this budget flow matching gave the better model. It is one run of each from the same seed (the spread
# between seeds was not measured), and which of the changes made the difference, the path, the weighting
# $1/(1-t)^2$ or the logit-normal $t$, was not measured either.
#
# Samples, one per class, from the same noise (seed 0) with Euler and Heun at a few steps, decoded by the
# autoencoder:

# %%
flow_model, flow_grid = load_pretrained("mnist_latent_flow")
print("its schedule is the flow's grid:", flow_grid)
decoding = latent_decoding("mnist_latent_flow")          # decode with mnist_autoencoder; x0_hat never clipped
rows = {}
for sampler, steps, w in (("euler", 1, 0), ("euler", 2, 0), ("euler", 4, 0), ("euler", 8, 0), ("heun", 2, 0),
                          ("heun", 4, 0), ("euler", 8, 2)):
    calls_ = steps * (2 if sampler == "heun" else 1)
    label = (f"{sampler.capitalize()}, {steps} step{'s' if steps > 1 else ''} ({calls_} call{'s' if calls_ > 1 else ''}"
             f"{', w = 2' if w else ''})")
    guidance = (lambda denoise: ClassifierFreeGuidance(denoise, w=w)) if w else None
    rows[label] = generate(flow_model, flow_grid, 10, sampler, steps, cond={"y": digits}, seed=0, progress=False,
                           guidance=guidance, **decoding)
show_grid(torch.stack(list(rows.values())).clamp(-1, 1), row_labels=list(rows), col_labels=digits.tolist(),
          col_title="class", title="mnist_latent_flow from one x_T (seed 0), decoded", figsize=(13, 9))

# %% [markdown]
# One Euler step draws a blurred, averaged digit of each class, as section 5 predicts for the optimal velocity. From
# 2 steps on the digits are clean and nearly the same from row to row; Heun at 2 steps (4 calls) leaves faint
# speckles around the strokes, and guidance $w = 2$ makes the strokes bolder.
#
# **Flow matching against $L_\text{simple}$, measured.** `benchmarks/ode_flow.py --part flow` (not run here) sampled
# `mnist_latent_flow` (Euler, and Heun at half the steps) and `mnist_latent` (DDIM, DPM-Solver++(2M)) at equal
# budgets of network calls, every arm from the same $x_T$ and without guidance, and measured FID and KID against the
# floor at the same $n$, and class accuracy:

# %%
ARMS = {("mnist_latent_flow", "euler"): "flow matching, Euler", ("mnist_latent_flow", "heun"): "flow matching, Heun",
        ("mnist_latent", "ddim"): "L_simple (eps), DDIM", ("mnist_latent", "dpmpp2m"): "L_simple (eps), DPM-Solver++(2M)"}
flow_table = read_table("ode_flow_table.json")
part = (flow_table or {}).get("flow")
if part is None:
    print("docs/ode_flow_table.json has no part 'flow' yet: run benchmarks/ode_flow.py --part flow")
else:
    spread = part["floor"]["fid_by_n"][str(part["n"])][1]
    print(f"n = {part['n']:,} per arm, seed {part['seed']}, guidance w = {part['guidance']:g}, x_T: {part['x_T']}")
    print(f"{part['hardware']}; features {part['feature_network']}")
    print(f"real-data floor at n = {part['n']:,}: FID {part['floor_fid']:.3f} (standard deviation over random draws: "
          f"{spread:.3f})")
    print(f"{'model':<18} {'sampler':<8} {'steps':>5} {'calls':>5} {'FID':>7} {'KID':>8} {'accuracy':>8}")
    for name, sampler in ARMS:
        for r in sorted((r for r in part["rows"] if (r["model"], r["sampler"]) == (name, sampler)), key=lambda r: r["nfe"]):
            print(f"{r['model']:<18} {r['sampler']:<8} {r['S']:>5} {r['nfe']:>5} {r['fid']:>7.3f} {r['kid'] or 0.0:>8.4f} "
                  f"{r['accuracy']:>8.3f}")

# %%
if part is not None:
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for (name, sampler), label in ARMS.items():
        arm = sorted((r for r in part["rows"] if r["model"] == name and r["sampler"] == sampler), key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in arm], [r["fid"] for r in arm], ("o-" if "flow" in name else "s--"), label=label)
    ax.axhline(part["floor_fid"], color="grey", ls=":", lw=1, label=f"real-data floor (n = {part['n']:,})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([2, 4, 8, 16, 50], ["2", "4", "8", "16", "50"])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("network calls (log scale)")
    ax.set_yticks([0.2, 0.5, 1, 2, 5, 10], ["0.2", "0.5", "1", "2", "5", "10"])
    ax.set_yticks([], minor=True)
    ax.set_ylabel(f"FID (MNIST classifier features, n = {part['n']:,}, log scale)")
    ax.set_title("the same U-Net and latents, two objectives, one x_T")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# At every budget the flow model's samples are closer to the data, by FID and by class accuracy. At 4 calls Euler on
# the flow reaches FID 0.232 and Heun 0.196, against 0.752 for DDIM and 0.344 for DPM-Solver++(2M) on `mnist_latent`.
# From 8 calls on the flow model is at the floor of 0.194 (0.147 to 0.163), while `mnist_latent` stays between 0.331
# and 0.487. At 2 calls the $\varepsilon$-model fails (FID 11.706, accuracy 0.232; DPM-Solver++ with 2 steps is DDIM,
# since its first and last steps are first order), while 2 Euler steps on the flow give FID 0.543 at accuracy 0.997.
# The flow model's accuracy lies between 0.960 and 0.997 in every arm, `mnist_latent`'s between 0.232 and 0.947.
#
# A second-order solver buys little here: Heun on the flow is ahead of Euler at 4 and 8 calls (0.196 against 0.232,
# 0.147 against 0.163), level from 16 calls on, and behind at 2 calls, where it has a single step (1.873 against
# 0.543). On `mnist_latent`, as on `mnist_cond` in section 4, DPM-Solver++ beats DDIM by FID only at the smallest
# budgets (here at 4 calls; on `mnist_cond` at 4 and 6). This compares two
# trained models, one run of each: it shows that this flow-matching model samples better in few calls than this
# $\varepsilon$-model trained on the same budget, not why.

# %% [markdown]
# ## 7. The fastest route to 64 digits, and a playground
#
# `benchmarks/ode_flow.py --part fastest` timed the shortest routes from noise to 64 class-conditional digits through
# the shipped models, each one call of `lesson_lib.course.playground.draw` (that is, of `generate`) on 2 CPU threads,
# and measured each route's class accuracy; seconds per 64 correct digits is the time divided by the accuracy (the
# expected time when the misses are drawn again):

# %%
fastest = (flow_table or {}).get("fastest")
if fastest is None:
    print("docs/ode_flow_table.json has no part 'fastest' yet: run benchmarks/ode_flow.py --part fastest")
else:
    print(f"{fastest['hardware']}; time: {fastest['timing']}; accuracy of {fastest['accuracy_n']:,} samples per route")
    print(f"{'model':<18} {'sampler':<12} {'steps':>5} {'w':>4} {'s for 64':>9} {'accuracy':>9} {'s per 64 correct':>17}")
    for r in sorted(fastest["rows"], key=lambda r: r["seconds_per_64_correct"]):
        print(f"{r['model']:<18} {r['sampler']:<12} {r['steps']:>5} {r['w']:>4g} {r['seconds_per_64']:>9.3f} "
              f"{r['accuracy']:>9.3f} {r['seconds_per_64_correct']:>17.3f}")

# %% [markdown]
# The fastest route to 64 class-correct digits on 2 threads is `mnist_latent_flow` with 4 Euler steps and no
# guidance: 0.161 s for 64 digits, 0.990 of them classified as asked, 0.163 s per 64 correct ones. **The aim, 64
# class-correct digits in under 1 second on 2 CPU cores, holds**, and for six more routes: the one-step distilled
# student (0.200 s), the consistency model (0.240 s), the flow model with guidance $w = 2$ (0.258 s at 4 steps, every
# digit correct), the two-step student (0.396 s), and `mnist_latent` with DPM-Solver++(2M) and the flow model, both at
# 8 guided steps (0.513 s and 0.527 s). Only the pixel model `mnist_cond` misses it (3.689 s at 8 guided steps): a
# latent model's U-Net runs on 7×7×4 latents, 7.1 times cheaper per call (lesson 10), and the decoder
# runs once. The fastest route's samples are also close to the data: the same model and sampler at 4 calls measured
# FID 0.232 against the floor's 0.194 in the table of section 6 ($n = 2{,}000$, one thread).
#
# **The playground.** One panel over every shipped MNIST generator: pick the model, the sampler, the steps, the
# guidance weight $w$ and the seed, and it draws every digit. Each draw is one call of `generate` with these settings
# and the model card's defaults for the rest, the same as
# `python -m lesson_lib.sample --pretrained NAME --sampler ... --steps ... --guidance w`. Things to try: the distilled
# students `mnist_distilled_1` to `mnist_distilled_8` (1 to 8 calls, each on its own grid) against
# `mnist_latent_flow` at 1 to 8 Euler steps; DDIM against DPM-Solver++(2M) at 4 to 8 steps on `mnist_cond`; the
# guidance weight $w$ on the flow model. (The panel needs a running kernel; a static copy of this page shows no
# panel.)

# %%
# NBVAL_IGNORE_OUTPUT
# (an interactive widget; its drawing time varies from machine to machine)
from lesson_lib.course.playground import playground

panel = playground()

# %% [markdown]
# ## Summary
#
# * In EDM's variables, $\sigma = \sqrt{(1 - \bar\alpha)/\bar\alpha}$ and $x_\text{VE} = x/\sqrt{\bar\alpha}$, the
#   probability-flow ODE of the course's schedule is $dx_\text{VE}/d\sigma = \hat\varepsilon$, from $\sigma = 157.41$
#   down to $0.0100$; DDIM with $\eta = 0$ is exactly its Euler step (section 1).
# * Heun ($2N - 1$ calls) and DPM-Solver++(2M) ($N$ calls, the previous $\hat x_0$ extrapolated in
#   $\lambda = -\ln\sigma$) are steps of the one loop: its `state` carries Heun's second call and the previous
#   $\hat x_0$ (section 2).
# * On Gaussian data, whose exact flow map is affine, halving the step divides DDIM's error by about 2 and Heun's by
#   about 4; DPM-Solver++(2M) reaches 4 only from 40 steps on the course's grid, whose last step is long in $\lambda$
#   (section 3).
# * On `mnist_cond` DPM-Solver++(2M) comes closest to the ODE's solution at every budget, but from 10 calls on FID and
#   class accuracy ($n = 1{,}000$) do not reward it: the aim, DPM-Solver++ at 10 calls as good as DDIM at 20, does
#   not hold. Heun fails below 9 calls on this grid: its correction is half the step in $\sigma$ times the change of
#   $\hat\varepsilon$ (section 4).
# * Flow matching: $x_t = (1 - t)\,x_0 + t\,\varepsilon$, $v = \varepsilon - x_0$. A velocity is a denoiser
#   ($\hat x_0 = x_t - t\,v$, $\hat\varepsilon = x_t + (1 - t)\,v$); its loss is the $\varepsilon$-loss weighted by
#   $1/(1 - t)^2$; logit-normal $t$ puts 0.603 of the draws in $[0.3, 0.7]$; one Euler step of the flow is one DDIM
#   step, and one step from pure noise returns the mean (section 5).
# * `mnist_latent_flow`, `mnist_latent` trained by flow matching on the same budget, reaches FID 0.147 at the floor
#   (0.194) and 0.975 class accuracy without guidance; at equal network calls from the same $x_T$ it beats the
#   $\varepsilon$-model at every budget from 2 to 50 calls, by FID and by accuracy (section 6).
# * The fastest shipped route to 64 class-correct digits on 2 CPU threads is `mnist_latent_flow` with 4 Euler steps:
#   0.124 s, well under the aim of 1 s (section 7).
#
# **Exercise** (`exercises/13_ode_samplers_flow_matching.ipynb`): the flow-matching pair $(x_t, v)$, one Euler step of
# the flow, and the DPM-Solver++(2M) update, each checked against the library.

# %%
# NBVAL_IGNORE_OUTPUT
# (the run time depends on the machine and on what else it runs)
print(f"this notebook ran in {time.time() - started:.0f} s (profile {profile})")
