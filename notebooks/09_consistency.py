# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/09_consistency.ipynb)
#
# # Lesson 9 — Consistency models: one network call from noise to a digit
#
# Lesson 6 showed that DDIM with $\eta = 0$ follows an ODE, the *probability-flow ODE*: every $x_T$ has one
# trajectory, and the trajectory ends at one image. Lesson 7 trained students to take in one step what their teacher
# takes in two, seven times over. **Consistency models** (Song, Dhariwal, Chen & Sutskever 2023) go straight for the end
# of the trajectory: a network $f_\theta(x_t, t)$ is trained so that every point of a trajectory maps to the same
# output, the trajectory's origin. Then one call, $f_\theta(x_T, T)$, generates; and a few calls, each followed by fresh
# noise, refine.
#
# | part | what runs | runtime, 2-core CPU, one thread |
# |---|---|---|
# | sections 1–2: the consistency function, its boundary condition in the course's VP variables, the exact answer on Gaussian data | a few calls of the oracles | seconds |
# | section 3: consistency distillation and consistency training, as one objective | a few objective calls | seconds |
# | section 4: live on the swiss roll: a teacher, a CD student, CT from the teacher and CT from scratch | an MLP; 4,000 + 3 × 1,500 training steps in every profile | about 1 min |
# | section 5: the shipped `mnist_consistency` beside its teacher | 10 samples per sampler on 1, 2, 4 calls | seconds |
# | section 6: the headline figure: FID and accuracy against network calls at n = 5,000 | read from `docs/distillation_table_n5000.json` (`benchmarks/distillation.py shipped`, not run here) | — |
# | the whole notebook | | `ci` (the stored outputs): as its last cell prints |
#
# **Study time:** about 1 h 15 min of reading, and about 1 h for the exercise (`exercises/09_consistency.ipynb`).
#
# Library: `lesson_lib.diffusion.consistency` (`boundary_scalings`, `edm_scalings`, `vp_sigma`,
# `consistency_function`, `ConsistencyDistillation`, `karras_sigmas`, `ct_schedule`),
# `lesson_lib.diffusion.steps.consistency_step`, `lesson_lib.diffusion.sampling.consistency_sample`.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import json
import math
import time

import matplotlib.pyplot as plt
import torch

from lesson_lib.course.colab import course_file
from lesson_lib.course.plotting import scatter_2d, show_grid
from lesson_lib.data.toy import swiss_roll
from lesson_lib.diffusion.consistency import (ConsistencyDistillation, boundary_scalings, consistency_function,
                                              ct_schedule, edm_scalings, karras_sigmas, vp_sigma)
from lesson_lib.diffusion.denoiser import Denoiser
from lesson_lib.diffusion.distillation import sampler_timesteps
from lesson_lib.diffusion.losses import LSimple
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.sampling import consistency_sample, ddim_sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.evaluation.metrics import sliced_wasserstein
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.pretrained import load_pretrained, model_card
from lesson_lib.recipes.consistency import sample_consistency
from lesson_lib.training.distill import sample_student, student_from
from lesson_lib.training.profiles import current_profile
from lesson_lib.training.trainer import TrainConfig, Trainer

torch.set_num_threads(1)
profile = current_profile()
SIZES = dict(teacher_steps=4000, student_steps=1500, intervals=32)     # the same in every profile: about 1 min
print("profile:", profile, SIZES)
started = time.time()

# %% [markdown]
# ## 1. The consistency function and its boundary condition
#
# Take the deterministic DDIM sampler of lesson 6 with ever more steps: it integrates the probability-flow ODE, and
# carries each $x_t$ along one trajectory to one point of the data. The **consistency function** maps every point of a
# trajectory to that end point:
#
# $$f(x_t, t) = x_0 \ \text{ for every } (x_t, t) \text{ on the trajectory of } x_0 .$$
#
# Two properties define it. *Self-consistency*: $f(x_t, t) = f(x_s, s)$ for any two points of one trajectory. The
# *boundary condition*: at the smallest time $f$ is the identity, $f(x, t_\min) = x$. A network trained for
# self-consistency alone could output a constant; the boundary condition pins it to the data.
#
# **The paper's form.** Song et al. work on the VE time $\sigma \in [\sigma_\min, \sigma_\max] = [0.002, 80]$ with
# $x_\sigma = x_0 + \sigma\epsilon$, and build the boundary condition into the network:
#
# $$f_\theta(x, \sigma) = c_\text{skip}(\sigma)\,x + c_\text{out}(\sigma)\,F_\theta(x, \sigma),\qquad
# c_\text{skip} = \frac{\sigma_d^2}{(\sigma - \sigma_\min)^2 + \sigma_d^2},\quad
# c_\text{out} = \frac{\sigma_d(\sigma - \sigma_\min)}{\sqrt{\sigma^2 + \sigma_d^2}},$$
#
# with $\sigma_d = 0.5$. At $\sigma_\min$, $c_\text{skip} = 1$ and $c_\text{out} = 0$ exactly: $f(x, \sigma_\min) = x$ for
# *any* network $F_\theta$. Away from it, this is EDM's preconditioning (Karras et al. 2022) shifted by $\sigma_\min$.
#
# **The course's VP form.** The course's $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$ is the VE
# variable scaled down: $x_t/\sqrt{\bar\alpha_t} = x_0 + \sigma_t\epsilon$ with $\sigma_t = \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}$
# (`vp_sigma`). The smallest time of the course's grid is the data itself (code timestep $-1$, where DDIM's last step
# lands: $\bar\alpha = 1$, $\sigma = 0$). And every parameterisation of lesson 2 already reads $\hat x_0$ as
# $c_\text{skip}\,x_t + c_\text{out}\,F$ with $(c_\text{skip}, c_\text{out}) = (1, 0)$ at the data (`boundary_scalings`). For the
# v-prediction of lesson 7, $\hat x_0 = \sqrt{\bar\alpha_t}\,x_t - \sqrt{1-\bar\alpha_t}\,\hat v$:
#
# $$c_\text{skip}(t) = \sqrt{\bar\alpha_t},\qquad c_\text{out}(t) = -\sqrt{1-\bar\alpha_t},$$
#
# which is EDM's form with $\sigma_d = 1$ and $\sigma_\min = 0$, written in VP variables. So a consistency model here is
# a v-network read through the `Denoiser`, $f_\theta(x_t, t) = \hat x_0$, with $f(x, -1) = x$ (`consistency_function`);
# and the v teacher of lesson 7 is already a consistency model, a poor one: DDIM on one step.

# %%
schedule = NoiseSchedule.from_name("linear", 1000)
t = torch.tensor([-1, 0, 9, 99, 499, 999])
print(f"{'t':>4} {'sigma_t':>8} | {'c_skip':>7} {'c_out':>7} (v) | {'c_skip':>7} {'c_out':>8} (eps) | {'c_skip':>6} {'c_out':>5} (x0)")
scalings = {p: boundary_scalings(schedule, t, p) for p in ("v", "eps", "x0")}
for i, ti in enumerate(t.tolist()):
    (vs, vo), (es, eo), (xs, xo) = (scalings[p] for p in ("v", "eps", "x0"))
    print(f"{ti:>4} {vp_sigma(schedule, t)[i]:>8.3f} | {vs[i]:>7.3f} {vo[i]:>7.3f}     | {es[i]:>7.2f} {eo[i]:>8.2f}       | "
          f"{xs[i]:>6.0f} {xo[i]:>5.0f}")

# %% [markdown]
# The eps row shows lesson 7's problem again in this language: at $t = 999$ the network's output enters $f$ multiplied by
# $-156.4$. The x0 row jumps from $(0, 1)$ to $(1, 0)$ at the data: the boundary holds only because it is said. The v row
# moves smoothly to $(1, 0)$.
#
# The boundary, checked: an untrained network, any input, the data's time. Then the two forms side by side: the paper's
# scalings against $\sigma$, and the course's v scalings mapped to the same $\sigma$ (the VP $c_\text{skip}$ acts on
# $x_t = x_\text{VE}/\sqrt{1+\sigma^2}$, so on the VE variable it is $c_\text{skip}/\sqrt{1 + \sigma^2}$).

# %%
torch.manual_seed(0)
untrained = MLPDenoiser(dim=2, hidden=32, num_blocks=1, prediction="v").eval()
x = 10 * torch.randn(5, 2)
with torch.no_grad():
    at_data = consistency_function(Denoiser(untrained, schedule), x, torch.full((5,), -1))
    elsewhere = consistency_function(Denoiser(untrained, schedule), x, torch.full((5,), 499))
print(f"f(x, data) == x exactly, for an untrained network: {torch.equal(at_data, x)};  "
      f"at t = 499 it is the network's x0_hat, far from x: {bool((elsewhere - x).abs().max() > 1)}")

sigma = torch.logspace(-3, 2, 200, dtype=torch.float64)
paper_skip, paper_out = edm_scalings(sigma)
vp_skip, vp_out = edm_scalings(sigma, sigma_min=0.0, sigma_data=1.0)
fig, ax = plt.subplots(figsize=(7, 3.6))
ax.plot(sigma, paper_skip, "C0", label=r"$c_{skip}$, paper ($\sigma_d$ = 0.5, $\sigma_{min}$ = 0.002)")
ax.plot(sigma, paper_out / 0.5, "C0--", label=r"$c_{out}/\sigma_d$, paper")
ax.plot(sigma, vp_skip, "C1", label=r"$c_{skip}$, course v-network ($\sigma_d$ = 1, $\sigma_{min}$ = 0)")
ax.plot(sigma, vp_out, "C1--", label=r"$-c_{out}$, course v-network")
course_sigmas = vp_sigma(schedule, torch.tensor([0, 999]))
ax.axvspan(course_sigmas[0], course_sigmas[1], color="gray", alpha=0.12, label="the course's t = 0 .. 999")
ax.set_xscale("log"); ax.set_xlabel(r"VE noise level $\sigma$ ($x/\sqrt{\bar\alpha} = x_0 + \sigma\epsilon$)")
ax.set_ylabel("scaling"); ax.set_title("the boundary scalings: c_skip -> 1 and c_out -> 0 at the smallest time")
ax.legend(fontsize=7, loc="center right"); plt.tight_layout(); plt.show()
print(f"the course's sigma range: {course_sigmas[0]:.4f} (t = 0) to {course_sigmas[1]:.1f} (t = 999); the paper's: 0.002 to 80")

# %% [markdown]
# ## 2. The exact consistency function of Gaussian data
#
# For data $x_0 \sim \mathcal N(0, C^2 I)$ every quantity is known in closed form (`lesson_lib.diffusion.oracles`). The
# probability-flow ODE keeps each point's standard score: $x_s = \sqrt{v_s/v_t}\,x_t$ with $v_t = \bar\alpha_t C^2 + 1 - \bar\alpha_t$
# (`GaussianData.flow`). So the consistency function is linear:
#
# $$f(x_t, t) = \frac{C}{\sqrt{v_t}}\,x_t = \frac{C}{\sqrt{C^2 + \sigma_t^2}}\cdot\frac{x_t}{\sqrt{\bar\alpha_t}} .$$
#
# It is *not* Tweedie's $E[x_0 \mid x_t] = \sqrt{\bar\alpha_t}\,C^2 x_t / v_t$, the denoiser's answer (lesson 1b): the
# mean of all the $x_0$ that could have produced $x_t$ is a shrunk, blurred answer, while $f$ picks the one $x_0$ on
# this trajectory. Along one DDIM trajectory (1,000 steps, exact denoiser), $f$ stays put and Tweedie's mean does not:

# %%
C = 0.5
gauss = GaussianData(schedule, std=C, prediction="eps", dim=1)
x_T = torch.tensor([[2.0]], dtype=torch.float64)
states = ddim_sample(gauss, schedule, x_T=x_T, steps=1000, return_trajectory=True, progress=False, autocast=False)[1]
times = torch.arange(999, -2, -1)                          # the time of each state, x_T first, the data last
rows = (999, 500, 200, 50, 0, -1)
print(f"{'t':>4} {'x_t':>7} {'f(x_t, t)':>10} {'E[x0 | x_t]':>12}")
for t_show in rows:
    x_t = states[times.tolist().index(t_show)]
    tt = torch.tensor([t_show])
    f_exact = gauss.flow(x_t, tt, torch.tensor([-1]))
    tweedie = x_t if t_show == -1 else gauss.denoise(x_t, tt).x0
    print(f"{t_show:>4} {x_t.item():>7.4f} {f_exact.item():>10.4f} {tweedie.item():>12.4f}")

# %% [markdown]
# The trajectory from $x_T = 2$ ends at 0.9970; the exact $f$ reads 1.0000 at the start ($C \cdot 2/\sqrt{v_T}$) and
# 0.9970 to 1.0000 all the way down (the 0.3% it drifts is DDIM's own error over 1,000 steps of the trajectory). Tweedie's
# mean starts at 0.0032, near the data's mean 0, and reaches the end point only in the last few steps. A consistency model
# learns $f$; a denoiser learns the mean, which is why one DDIM step of even a perfect denoiser is a blurred average.

# %% [markdown]
# ## 3. Consistency distillation and consistency training, one objective
#
# **Consistency distillation (CD, the paper's Algorithm 2).** Self-consistency is enforced between neighbouring times.
# On the nested grid of lesson 7 with $N$ intervals ($t_n$, $n = 0..N$, $t_0 = -1$ the data), draw $n \sim U\{0..N-1\}$,
# $t = t_{n+1}$, $s = t_n$, and:
#
# 1. $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$ (Eq. 4);
# 2. one ODE step of a trained *teacher* from $t$ to $s$: $\hat x_s$ = DDIM with $\eta = 0$, unclipped;
# 3. the loss $d\big(f_\theta(x_t, t),\ f_{\theta^-}(\hat x_s, s)\big)$, no gradient through the second argument.
#
# $f_{\theta^-}$ is the **target network**, an exponential moving average of the student,
# $\theta^- \leftarrow \mu\,\theta^- + (1-\mu)\,\theta$ after each step ($\mu = 0.95$ in the paper's CD; $\mu = 0$, the
# student itself under stop-gradient, in improved CT). It is a different average from the EMA of the weights that are
# sampled (lesson 4): two EMAs, two jobs. At $s = -1$ the target is $\hat x_s$ itself (the boundary), so the data end of
# the grid anchors everything above it, one interval at a time. The student and the target run under the same random
# state, so that with dropout they share a mask (the reference code saves and restores the RNG state); the course's
# students have no dropout, as in lesson 7. The distance $d$: the paper's best results use LPIPS, which needs
# downloaded network weights; the course uses the pseudo-Huber distance of improved CT,
# $d = \sqrt{\lVert\Delta\rVert^2 + c^2} - c$ with $c = 0.00054\sqrt{\dim}$ (0.0151 for MNIST): quadratic for small
# errors, linear for large ones.
#
# **Consistency training (CT, Algorithm 3)** needs no teacher: the ODE step is taken with the true $x_0$, i.e.
# $\hat x_s = \sqrt{\bar\alpha_s}\,x_0 + \sqrt{1-\bar\alpha_s}\,\epsilon$ with the *same* $\epsilon$. That is an unbiased,
# one-sample estimate of the teacher's step, and a noisy one, which is why CT from scratch needs hundreds of thousands of
# steps: small-budget reproductions reported in the reference codes' issue trackers land at CIFAR-10 FID 10–285 where
# the papers report 2.5–8.7. **Easy consistency tuning** (ECT, Geng et al. 2024) starts CT from a trained diffusion
# model instead; its 1-step FID of 3.60 on CIFAR-10 comes *on top of* that model's training.
#
# In the library both are one `Trainer` objective, `ConsistencyDistillation(schedule, student, teacher, intervals, mu,
# distance)`, with `teacher=None` for CT. Below, on Gaussian data, the CD loss of the *exact* consistency function
# against the exact denoiser's DDIM step: what is left is DDIM's own error over one interval, which shrinks as the grid
# gets finer.

# %%
gauss2 = GaussianData(schedule, std=C, prediction="eps", dim=2)


class ExactConsistency(GaussianData):
    """The exact f of N(0, C^2 I) as an x0-predicting model: the flow map to the data."""
    def forward(self, x_t, t, **cond):
        return self.flow(x_t, t, torch.full_like(t, -1))


exact_f = ExactConsistency(schedule, std=C, prediction="x0", dim=2)
x0 = gauss2.sample(8192, torch.Generator().manual_seed(0))
print(f"{'N':>5} {'CD loss (squared error) of the exact f':>40}")
for N in (8, 16, 32, 64, 128):
    objective = ConsistencyDistillation(schedule, exact_f, gauss2, intervals=N, mu=0.0, distance="l2")
    loss = objective(exact_f, exact_f, x0, {}, torch.Generator().manual_seed(1)).item()
    print(f"{N:>5} {loss:>40.1e}")

# %% [markdown]
# Each doubling of $N$ divides the loss by about 15, close to 16: DDIM's error over one interval of width $h$ is of
# order $h^2$, and its square of order $h^4$. A network trained by CD on a coarse grid therefore learns the consistency
# function of the *teacher's DDIM*, a little off the exact one; the test suite checks that a linear student converges to
# exactly that fixed point, and that it approaches the exact $f$ as $N$ grows.
#
# The paper's own grid and schedules, for reference (the course uses the nested grid with $N$ fixed): the Karras grid
# on $N = 11$ boundaries, and CT's growing $N(k)$ with its target rate $\mu(k)$ on CIFAR-10 ($s_0 = 2$, $s_1 = 150$,
# $\mu_0 = 0.9$, $K$ = 800k steps):

# %%
print("Karras sigmas, N = 11:", [round(s, 4) for s in karras_sigmas(11).tolist()])
for k in (0, 200_000, 400_000, 800_000):
    N_k, mu_k = ct_schedule(k, 800_000)
    print(f"CT step k = {k:>7,}: N(k) = {N_k:>3}, mu(k) = {mu_k:.6f}")

# %% [markdown]
# ## 4. Live on the swiss roll
#
# The data of lesson 2 and the v-prediction MLP of lesson 7, trained with $L_\text{simple}$ on $v$ (4,000 steps). Three
# consistency models of the same size then train for 1,500 steps each on the nested grid with $N = 32$ intervals
# ($\mu = 0.95$, squared error, lr $10^{-3}$ annealed to 0, batch 512): **CD** from the teacher (the student starts as a
# copy of it); **CT from the teacher** (no teacher steps, the teacher's weights as the start: ECT's route); **CT from
# scratch**. Each is sampled with 1, 2 and 4 calls on the nested grid (`consistency_sample`), 5,000 points from the same
# $x_T$, against DDIM of the teacher on the same number of calls; SW is the sliced Wasserstein distance to 5,000 data
# points in units of the data-vs-data floor (lesson 7).

# %%
data = swiss_roll(20_000, seed=0)
toy_start = time.time()
torch.manual_seed(0)
teacher = MLPDenoiser(dim=2, hidden=128, num_blocks=3, prediction="v")
trainer = Trainer(teacher, data, LSimple(schedule), TrainConfig(batch_size=512, lr=1e-3, warmup_steps=100, ema_decay=0.995),
                  device="cpu")
trainer.run(SIZES["teacher_steps"], progress=False)
teacher = trainer.ema.model.eval()
consistency_models = {}
for name, teacher_of_run, start in (("CD", teacher, "teacher"), ("CT from the teacher", None, "teacher"),
                                    ("CT from scratch", None, "scratch")):
    torch.manual_seed(1)
    student = student_from(teacher) if start == "teacher" else MLPDenoiser(dim=2, hidden=128, num_blocks=3, prediction="v")
    objective = ConsistencyDistillation(schedule, student, teacher_of_run, intervals=SIZES["intervals"], mu=0.95,
                                        distance="l2")
    run = Trainer(student, data, objective, TrainConfig(batch_size=512, lr=1e-3, warmup_steps=0, ema_decay=0.0,
                                                        lr_decay_steps=SIZES["student_steps"]), device="cpu")
    run.run(SIZES["student_steps"], progress=False)
    consistency_models[name] = run.model.eval()
toy_seconds = time.time() - toy_start

# %%
# NBVAL_IGNORE_OUTPUT
# (timings)
print(f"teacher ({SIZES['teacher_steps']} steps) and three consistency models ({SIZES['student_steps']} steps each): "
      f"{toy_seconds:.0f} s")

# %%
reference = swiss_roll(5000, seed=10_000)
floor = sliced_wasserstein(swiss_roll(5000, seed=20_000), reference)
def toy_x_T():                                            # the same x_T (seed 1) for every sampler
    return torch.randn(5000, 2, generator=torch.Generator().manual_seed(1))
calls_shown = (1, 2, 4)
toy = {("teacher, DDIM", k): sample_student(teacher, schedule, k, (5000, 2), generator=torch.Generator().manual_seed(1),
                                            clip_x0=False) for k in calls_shown}
for name, model in consistency_models.items():
    for k in calls_shown:
        toy[name, k] = consistency_sample(model, schedule, x_T=toy_x_T(), timesteps=sampler_timesteps(1000, k),
                                          generator=torch.Generator().manual_seed(2), progress=False)
ratio = {key: sliced_wasserstein(x, reference) / floor for key, x in toy.items()}
names = ["teacher, DDIM", *consistency_models]
fig, axes = plt.subplots(len(calls_shown), len(names), figsize=(3.4 * len(names), 3.3 * len(calls_shown)))
for i, k in enumerate(calls_shown):
    for j, name in enumerate(names):
        scatter_2d(axes[i, j], toy[name, k], f"{name}, {k} call{'s' if k > 1 else ''}\nSW {ratio[name, k]:.1f} x floor",
                   color="C0" if j == 0 else "C2", s=0.5)
        axes[i, j].set_xlim(-3, 3); axes[i, j].set_ylim(-3, 3)
        axes[i, j].set_xlabel("$x_1$"); axes[i, j].set_ylabel("$x_2$")
fig.suptitle("one network call per step: DDIM of the teacher (left) and three consistency models, from the same $x_T$")
plt.tight_layout(); plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
# (the figures vary slightly between CPUs; the verdicts below are checked)
print(f"{'':<22}" + "".join(f"{k:>3} call{'s' if k > 1 else ' '}" for k in calls_shown) + "   (sliced Wasserstein / floor)")
for name in names:
    print(f"{name:<22}" + "".join(f"{ratio[name, k]:>9.1f}" for k in calls_shown))

# %%
best_ct = min(ratio["CT from the teacher", 1], ratio["CT from scratch", 1])
print(f"CD on 1 call beats the teacher's DDIM on 4 calls: {ratio['CD', 1] < ratio['teacher, DDIM', 4]};  "
      f"CD on 1 call beats both CTs on 1 call: {ratio['CD', 1] < best_ct};  "
      f"every consistency model on 1 call beats DDIM on 1 call by more than 3x: "
      f"{all(ratio[n, 1] * 3 < ratio['teacher, DDIM', 1] for n in consistency_models)}")

# %% [markdown]
# What the stored run shows (`ci` profile; the figures move by a few tenths between CPUs, the verdicts above are
# checked). DDIM of the teacher on 1 call collapses to a point near the mean (42.8 × the floor: one step from $x_T$ is
# Tweedie's mean, section 2), on 4 calls it is a blob (15.7 ×). The **CD** model draws the spiral in **one call**
# (1.6 ×), about what lesson 7's teacher reached on 32 DDIM steps; more calls do not improve it here (2.2 × on 2 and
# 4): each re-noising step throws away all but $\hat x_0$, so it helps only where one call leaves errors that fresh
# noise and a second look can fix. **CT from the teacher** keeps the spiral's outline but blurs it (3.7 ×): in 1,500
# steps its one-sample targets are too noisy to finish what ECT starts. **CT from scratch** has learned little but the
# rough extent of the data (4.7 ×): the small-budget failure that users of the reference code report, reproduced in a
# minute. With the same training steps, the teacher's ODE steps are what made CD work.

# %% [markdown]
# ## 5. The shipped MNIST consistency model
#
# `mnist_consistency` was made by the recipe of the same name (`python -m lesson_lib.train --recipe mnist_consistency`):
# consistency distillation of `mnist_v_teacher`, the v-prediction teacher of lesson 7. The student started as a copy of
# the teacher (1.6M parameters, no dropout) and trained on the nested grid with $N = 32$ intervals, one DDIM step of the
# teacher per pair, $\mu = 0.95$, the pseudo-Huber distance, batch 32, lr $10^{-4}$ annealed linearly to 0; the sampled
# weights are the Trainer's EMA (0.995). Its card says how long that took and on what:

# %%
card = model_card("mnist_consistency")
print(f"training: {card['steps']:,} steps of batch {card['settings']['batch_size']} "
      f"({card['examples_seen']:,} images), {card['wall_time_s'] / 60:.0f} min on {card['hardware']}")
print("objective:", card["objective"])
cm_model, mnist_schedule = load_pretrained("mnist_consistency")
v_teacher, _ = load_pretrained("mnist_v_teacher")
students = {n: load_pretrained(f"mnist_distilled_{n}")[0] for n in (1, 2, 4)}

# %% [markdown]
# Each row is one class; every image of a row starts from the same $x_T$. Columns: the consistency model on 1, 2 and 4
# calls (multistep sampling on the nested grid: $[999]$, $[999, 499]$, $[999, 749, 499, 249]$), the progressive-distillation
# students of lesson 7 on as many steps, and DDIM of the v teacher on as many steps. Every sampler clips $\hat x_0$ to
# $[-1, 1]$.

# %%
labels = torch.arange(10)
columns, column_labels = [], []
for who in ("consistency", "student", "v teacher DDIM"):
    for n in (1, 2, 4):
        generator = torch.Generator().manual_seed(0)
        if who == "consistency":
            images = sample_consistency(cm_model, mnist_schedule, n, (10, 1, 28, 28), labels, generator)
        else:
            images = sample_student(students[n] if who == "student" else v_teacher, mnist_schedule, n, (10, 1, 28, 28),
                                    labels, generator)
        columns.append(images)
        column_labels.append(f"{who}\n{n} call{'s' if n > 1 else ''}")
show_grid(torch.stack(columns, dim=1), row_labels=[str(k) for k in range(10)], col_labels=column_labels,
          row_title="class", col_title="consistency model; distilled students (lesson 7); DDIM of their v teacher",
          title="the same x_T in every row, one network call per step")

# %% [markdown]
# What the grid shows. On **one call** the consistency model draws sharp digits of the right class, and in most rows
# the same digit as the 1-step student (the 0, 3, 7 and 9, for instance): both learned the teacher's ODE map from
# $x_T$, by different routes. DDIM of the teacher on one call is its blurred $\hat x_0$, Tweedie's mean of section 2. On
# **2 and 4 calls** the two fast samplers part ways: a student's extra steps follow the same ODE trajectory, so its
# digit hardly changes; the consistency model re-noises $\hat x_0$ with *fresh* noise before each further call, so its
# digit changes from column to column (a new draw near the first, not a refinement of the same trajectory), while
# DDIM of the teacher sharpens the same digit as it gets more steps.

# %% [markdown]
# ## 6. The figure that ties fast sampling together
#
# `python benchmarks/distillation.py shipped --n 5000` (not run here; one thread of a 2-core CPU) sampled n = 5,000 images
# (500 per class) from every fast sampler the course ships, all descended from `mnist_cond` and all from the same
# $x_T$: DDIM of `mnist_cond` (lesson 6) on the nested grid; DDIM of its v re-parameterisation `mnist_v_teacher`; the
# progressive-distillation students (lesson 7); and the consistency model. FID is on the course MNIST classifier's
# features against 5,000 test images drawn at random, beside the real-vs-real floor at the same n; class accuracy is
# the same classifier's, which took no part in training any of them.

# %%
table = json.loads(course_file("docs/distillation_table_n5000.json").read_text())
floor_fid = table["floor"]["fid"]
rows = {r["calls"]: r for r in table["rows"]}
arms = {"ddim_mnist_cond": "DDIM of mnist_cond (eps)", "ddim_v_teacher": "DDIM of mnist_v_teacher",
        "student": "progressive distillation", "consistency": "consistency model"}
calls = [1, 2, 4, 8]
print(f"n = {table['n']} per cell; real-vs-real floor at n = {table['n']}: FID {floor_fid:.3f}")
print(f"{'calls':>5} | " + " | ".join(f"{label[:24]:>24}" for label in arms.values()))
for c in calls:
    cells = []
    for key in arms:
        arm = rows[c].get(key)
        cells.append(f"{arm['fid']:>14.3f} {arm['accuracy']:>8.1%}" if arm else f"{'-':>24}")
    print(f"{c:>5} | " + " | ".join(cells))
ddim50 = rows[50]["ddim_mnist_cond"]
print(f"DDIM of mnist_cond on 50 steps: FID {ddim50['fid']:.3f}, class accuracy {ddim50['accuracy']:.1%}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
styles = {"ddim_mnist_cond": "C7o:", "ddim_v_teacher": "C0o-", "student": "C1s-", "consistency": "C2D-"}
for key, label in arms.items():
    have = [c for c in calls if rows[c].get(key)]
    axes[0].plot(have, [rows[c][key]["fid"] for c in have], styles[key], label=label)
    axes[1].plot(have, [rows[c][key]["accuracy"] for c in have], styles[key], label=label)
axes[0].axhline(floor_fid, color="gray", ls="--", label=f"real-vs-real floor, n = {table['n']}")
axes[0].axhline(ddim50["fid"], color="C7", ls="-.", lw=1, label="DDIM of mnist_cond, 50 steps")
axes[0].set_yscale("log"); axes[0].set_ylabel("FID (course classifier features, log scale)")
axes[1].set_ylabel("class accuracy of the samples"); axes[1].set_ylim(0.9, 1.0)
for ax in axes:
    ax.set_xscale("log", base=2); ax.set_xticks(calls, [str(c) for c in calls])
    ax.set_xlabel("network calls per sample"); ax.legend(fontsize=8)
axes[0].set_title(f"FID against network calls, n = {table['n']}")
axes[1].set_title("class accuracy (DDIM of mnist_cond, 1 call: below the axis)")
plt.tight_layout(); plt.show()

# %% [markdown]
# The aims set for the consistency model before it was trained, and the training compute of each route from a v
# teacher. Compute is counted in network evaluations of a batch of 32, a backward pass as two: a halving step of
# progressive distillation costs 5 (two teacher calls, the student's forward and backward), a consistency-distillation
# step costs 5 too (one teacher call, one target call, the student's forward and backward). Wall-clock times are on two
# threads of the 2-core CPU, both shared with other jobs, so they compare loosely.

# %%
cm = {c: rows[c]["consistency"] for c in calls}
ladder = model_card("mnist_distilled_1")                  # lesson 7's last student: its card holds the whole ladder's run
halvings = round(math.log2(ladder["settings"]["teacher_steps"]))     # 128 -> 64 -> ... -> 1: seven halvings
ladder_steps = halvings * ladder["settings"]["train_steps"]          # of 512 steps each, batch 32
ladder_evaluations, cm_evaluations = 5 * ladder_steps, 5 * card["steps"]
aims = {
    "1 call: class accuracy >= 96%": cm[1]["accuracy"] >= 0.96,
    "1 call: FID <= 1.5 x DDIM-50 of mnist_cond": cm[1]["fid"] <= 1.5 * ddim50["fid"],
    "2 calls: FID <= the 2-step student's": cm[2]["fid"] <= rows[2]["student"]["fid"],
    "less training compute than the whole ladder": cm_evaluations < ladder_evaluations,
}
print(f"1 call: FID {cm[1]['fid']:.3f} = {cm[1]['fid'] / ddim50['fid']:.2f} x DDIM-50's {ddim50['fid']:.3f}; "
      f"the 1-step student: {rows[1]['student']['fid'] / ddim50['fid']:.2f} x")
print(f"progressive distillation: {ladder_steps:,} steps, {ladder_evaluations:,} network evaluations, "
      f"{ladder['wall_time_s'] / 60:.0f} min")
print(f"consistency distillation: {card['steps']:,} steps, {cm_evaluations:,} network evaluations "
      f"({cm_evaluations / ladder_evaluations:.2f} x), {card['wall_time_s'] / 60:.0f} min")
for aim, holds in aims.items():
    print(f"{aim:<46} {'holds' if holds else 'does not hold'}")

# %% [markdown]
# What the figure shows (n = 5,000 per cell, one seed; the floor is 0.049):
#
# * **On 1, 2 and 4 calls the consistency model is the best sampler the course has**: FID 0.298, 0.248 and 0.204,
#   against 0.330, 0.263 and 0.231 for the progressive-distillation students, with 97.1–97.7% class accuracy. FID
#   extrapolated to infinite n and KID rank them the same way (`docs/benchmarks.md` §11).
# * **DDIM needs 8 steps to catch up**: DDIM of `mnist_cond` scores 0.187 on 8 steps, ahead of the consistency model's
#   0.200 by FID (KID puts them the other way round); on 1 step it is noise (24.8% accuracy), the eps failure of lesson 7.
#   DDIM of the v teacher is blurred on 1 step (6.131) and still 0.244 on 8: the consistency model beats its own teacher
#   at every number of calls.
# * **More calls help a consistency model less**: 0.298 → 0.248 → 0.204 → 0.200. Each call after the first starts from
#   fresh noise around $\hat x_0$ (section 5's grid), so it trades a little of the first call's error for a new draw.
# * **The best arms are still 3.8–6.8× the floor** (the students and the consistency model at every number of calls,
#   DDIM on 8 steps), and less diverse than the data (feature covariance 0.88–0.94 of the test set's): at n = 500, where the floor is 0.76, all of them looked like data (the card's n = 500 figures).
#
# The aims: **class accuracy ≥ 96% on one call holds** (97.7%); **2 calls at least as good as the 2-step student holds**
# (0.248 against 0.263); **1 call within 1.5× DDIM-50 of `mnist_cond` does not hold**: 0.298 is 1.85× DDIM-50's 0.162,
# closer than the 1-step student's 2.04×. **Less training compute than the ladder does not hold**: counted in network
# evaluations the consistency model took 1.12× the ladder's (4,000 steps against 3,584, at the same cost per step);
# by the clock the two took about the same (48 and 47 min, both on two threads). Both routes start from the same
# shipped `mnist_v_teacher` (lesson 7), so its conversion from `mnist_cond` is a cost they share.

# %% [markdown]
# ## Summary
#
# * A consistency function maps every point of a probability-flow trajectory to its origin; the boundary condition
#   $f(x, t_\min) = x$ is built into the parameterisation. On the course's grid the smallest time is the data, where
#   every parameterisation of $\hat x_0$ already has $c_\text{skip} = 1$, $c_\text{out} = 0$; a v-network's is EDM's
#   preconditioning with $\sigma_d = 1$ (section 1).
# * For Gaussian data the consistency function is the flow map in closed form, and it is not the denoiser's mean
#   (section 2). CD's loss at it is DDIM's own one-interval error, falling about 15× per halving of the interval
#   (section 3).
# * Consistency distillation and consistency training are one objective with an EMA target; CT swaps the teacher's
#   step for the true $x_0$, a one-sample estimate. On the swiss roll, with equal steps, CD draws the spiral in one call,
#   CT from the teacher a blurred one and CT from scratch little more than a blob (section 4).
# * On MNIST, 4,000 steps of CD from the v teacher give the best 1-, 2- and 4-call sampler of the course at n = 5,000
#   (FID 0.298, 0.248, 0.204; floor 0.049), ahead of progressive distillation at about the same training compute
#   (sections 5 and 6).
#
# **Exercises** (`exercises/09_consistency.ipynb`): the boundary-condition parameterisation of a v-network, one
# consistency-distillation target, and the multistep consistency sampler, each checked against the library and the
# Gaussian oracle.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"this notebook ran in {time.time() - started:.0f} s (profile {profile})")
