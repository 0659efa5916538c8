# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/07_distillation.ipynb)
#
# # Lesson 7 — Progressive distillation: halving the number of steps, again and again
#
# A DDPM sampler (Algorithm 2 of Ho et al. 2020) calls the network T = 1000 times per sample. Lesson 6 cut that to
# tens of calls without retraining: DDIM is a discretisation of an ODE, and on the shipped MNIST model it stays at the
# FID floor of n = 200 down to S = 5 (lesson 6's linspace grid; at n = 5,000, where the floor is 0.049, that S = 5 is
# 8.9× the floor and S = 10 3.7×, docs/benchmarks.md §10). On 1 or 2 steps it does not: each DDIM step moves along a straight line from an
# estimate $\hat x_0$ that, at high noise, is a blurred average of many digits (sections 4 and 5 show it). **Progressive distillation** (Salimans & Ho 2022)
# retrains the network so that one DDIM step of a *student* does what two DDIM steps of its *teacher* do, then lets the
# student teach the next student: 128 → 64 → 32 → 16 → 8 → 4 → 2 → 1 steps.
#
# A step count names a sampler only together with its grid. Lesson 6's 2-step linspace grid is $[999, 0]$: one step in
# disguise, FID 34 to 38 at n = 200. This lesson samples on a **nested grid** (section 1), whose 2 steps are
# $[999, 499]$; DDIM of the same `mnist_cond` scores 2.88 on it at n = 500 (section 5).
#
# | part | what runs | runtime, 2-core CPU, one thread |
# |---|---|---|
# | sections 1–2: Algorithm 2, the target identity, the v-parameterisation and its weights, the eps/v measurement | a few network calls | seconds |
# | section 3: two halvings on the swiss roll, live | a v-prediction MLP teacher and its students; `ci`: 2,000 + 2 × 300 training steps; `cpu`/`gpu`: 4,000 + 3 × 400 | `ci`: 91 s in the stored run (shared CPU); `cpu`: about 1 min |
# | section 4: the shipped MNIST students and their teacher | 10 samples per sampler at 1, 2, 4, 8 steps | seconds |
# | section 5: the stored ladder | read from `docs/distillation_table.json` (`benchmarks/distillation.py`, not run here) | — |
# | the whole notebook | | `ci` (the stored outputs): 42 s (as its last cell prints) on a 2-core CPU |
#
# **Study time:** about 1 h 15 min of reading, and about 1 h for the exercise (`exercises/07_distillation.ipynb`).
#
# Library: `lesson_lib.diffusion.distillation` (`distillation_timesteps`, `distillation_target`, `teacher_target`,
# `loss_weights`, `eps_error_gain`, the `Distillation` objective), `lesson_lib.training.distill`
# (`progressive_distillation`, `sample_student`).

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import json
import time

import matplotlib.pyplot as plt
import torch

from lesson_lib.course.colab import course_file
from lesson_lib.course.plotting import scatter_2d, show_grid
from lesson_lib.data.images import load_mnist
from lesson_lib.data.toy import swiss_roll
from lesson_lib.diffusion.denoiser import Denoiser, Prediction
from lesson_lib.diffusion.distillation import (distillation_target, distillation_timesteps, eps_error_gain,
                                               loss_weights, teacher_target)
from lesson_lib.diffusion.forward import eps_from_x0, q_sample
from lesson_lib.diffusion.losses import LSimple
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.evaluation.metrics import sliced_wasserstein
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.pretrained import load_pretrained, model_card
from lesson_lib.training.distill import progressive_distillation, sample_student
from lesson_lib.training.profiles import current_profile
from lesson_lib.training.trainer import TrainConfig, Trainer

torch.set_num_threads(1)
profile = current_profile()
SIZES = {"ci": dict(teacher_steps=2000, start_steps=16, halvings=2, halving_steps=300),
         "cpu": dict(teacher_steps=4000, start_steps=32, halvings=3, halving_steps=400),
         "gpu": dict(teacher_steps=4000, start_steps=32, halvings=3, halving_steps=400)}[profile]
print("profile:", profile, SIZES)
started = time.time()

# %% [markdown]
# ## 1. Algorithm 2, as written
#
# Write $\alpha_t = \sqrt{\bar\alpha_t}$ and $\sigma_t = \sqrt{1-\bar\alpha_t}$, so that $z_t = \alpha_t x + \sigma_t\epsilon$
# (the course's $x_t$). A DDIM step with $\eta = 0$ from $t$ to $s$ (lesson 6, Eq. 12) written with $\hat x = \hat x(z_t)$ is
#
# $$z_s = \alpha_s\,\hat x + \frac{\sigma_s}{\sigma_t}\big(z_t - \alpha_t\,\hat x\big).$$
#
# Salimans & Ho's Algorithm 2, for a student that takes $N$ steps:
#
# 1. the student starts as a copy of the teacher, $\theta \leftarrow \eta$;
# 2. draw $x$ from the data, $i \sim \mathrm{U}\{1..N\}$, $t = i/N$, $\epsilon \sim \mathcal N(0, I)$, $z_t = \alpha_t x + \sigma_t\epsilon$;
# 3. two DDIM steps of the teacher, **without clipping**, to $t' = t - 0.5/N$ and $t'' = t - 1/N$:
#    $z' = \alpha'\hat x_\eta(z_t) + \frac{\sigma'}{\sigma_t}(z_t - \alpha_t\hat x_\eta(z_t))$, then
#    $z'' = \alpha''\hat x_\eta(z') + \frac{\sigma''}{\sigma'}(z' - \alpha'\hat x_\eta(z'))$;
# 4. the target is the $\hat x$ for which **one** DDIM step from $z_t$ to $t''$ lands on $z''$: solve
#    $z'' = \alpha''\tilde x + \frac{\sigma''}{\sigma_t}(z_t - \alpha_t\tilde x)$ for $\tilde x$,
#
# $$\tilde x = \frac{z'' - (\sigma''/\sigma_t)\,z_t}{\alpha'' - (\sigma''/\sigma_t)\,\alpha_t};$$
#
# 5. the loss is $w(\lambda_t)\,\lVert\tilde x - \hat x_\theta(z_t)\rVert^2$ with $\lambda_t = \log(\alpha_t^2/\sigma_t^2)$ (section 2);
# 6. when the student has converged it becomes the teacher, $\eta \leftarrow \theta$, and $N \leftarrow N/2$.
#
# Each halving trains with its own optimiser and a learning rate annealed linearly to 0, without EMA and without dropout
# (as in the paper's experiments); `progressive_distillation` runs each halving as an ordinary `Trainer` with the
# `Distillation` objective. The numerator and denominator of $\tilde x$ are differences of nearly equal numbers when
# $t'' \approx t$, so the library computes the teacher's steps and $\tilde x$ in float64.
#
# With $T = 1000$ discrete timesteps, $t = i/N$ becomes a **nested grid**: the $N$-step grid is every other entry of
# the $2N$-step grid, so a student step covers exactly two teacher steps (entry 0, $-1$, stands for the data).

# %%
for n in (1, 2, 4, 8):
    print(f"N = {n}: {distillation_timesteps(1000, n)}")

# %% [markdown]
# ### The target, checked numerically
#
# $\tilde x$ is defined by one property, which holds for *any* teacher: take the teacher's two DDIM steps, then one DDIM
# step from $\tilde x$ over the whole interval. An untrained v-prediction network is teacher enough; its outputs are
# taken to float64 and everything after them is computed in float64. The library's `teacher_target` computes the same
# $\tilde x$ in one call.

# %%
schedule = NoiseSchedule.from_name("linear", 1000)
torch.manual_seed(0)
any_teacher = MLPDenoiser(dim=2, hidden=32, num_blocks=1, prediction="v").eval()
grid = distillation_timesteps(1000, 8)                  # the teacher's 8 steps: a student of 4 steps
z_t = torch.randn(5, 2, dtype=torch.float64)
denoise = Denoiser(lambda z, t: any_teacher(z.float(), t).double(), schedule, prediction="v")   # no clipping
with torch.no_grad():
    for i in (3, 1, 0):                                 # student steps: the first, one in the middle, the last
        t, t_mid, s = (torch.full((5,), grid[j]) for j in (2 * i + 2, 2 * i + 1, 2 * i))
        z_mid = ddim_step(schedule, z_t, t, t_mid, denoise(z_t, t))
        z_pp = ddim_step(schedule, z_mid, t_mid, s, denoise(z_mid, t_mid))
        x_tilde = distillation_target(schedule, z_t, t, z_pp, s)
        one_step = ddim_step(schedule, z_t, t, s, Prediction(x_tilde, eps_from_x0(schedule, z_t, t, x_tilde)))
        same = torch.allclose(teacher_target(any_teacher, schedule, z_t, t, t_mid, s), x_tilde, rtol=0, atol=1e-12)
        print(f"student step t = {grid[2 * i + 2]:>3} -> t'' = {grid[2 * i]:>3}: "
              f"max |one student step - two teacher steps| < 1e-12: {bool((one_step - z_pp).abs().max() < 1e-12)};  "
              f"teacher_target gives the same x~: {same}")

# %% [markdown]
# ## 2. Why not eps-prediction: the v-parameterisation
#
# A DDPM predicts $\hat\epsilon$ and recovers $\hat x = (z_t - \sigma_t\hat\epsilon)/\alpha_t$, so an error in $\hat\epsilon$
# reaches $\hat x$ multiplied by $\sigma_t/\alpha_t = 1/\sqrt{\mathrm{SNR}_t}$, $\mathrm{SNR}_t = \alpha_t^2/\sigma_t^2$
# (`eps_error_gain`). For the linear schedule that gain is 157.4 at $t = 999$. With 1000 small steps this does not matter:
# each early step moves $z$ only a little towards $\hat x$, and later steps, at lower noise, correct it. A sampler of 1–4 steps *is* mostly its first $\hat x$.
# Salimans & Ho (Sec. 4) therefore predict
#
# $$v \equiv \alpha_t\,\epsilon - \sigma_t\,x, \qquad \hat x = \alpha_t z_t - \sigma_t\hat v, \qquad \hat\epsilon = \sigma_t z_t + \alpha_t\hat v ,$$
#
# whose error reaches $\hat x$ multiplied by $\sigma_t \le 1$. What the network predicts and how its error is weighted are
# two choices. Written as a weight on the squared error of $\hat x$:
#
# * an MSE on $\epsilon$ is $\mathrm{SNR}_t\,\lVert x - \hat x\rVert^2$: no weight at all on $\hat x$ at high noise;
# * an MSE on $v$ is $(\mathrm{SNR}_t + 1)\,\lVert x - \hat x\rVert^2$ (`"snr_plus_one"`);
# * **truncated SNR**, $\max(\mathrm{SNR}_t, 1)\,\lVert x - \hat x\rVert^2$ (`"snr_trunc"`, the default), is the larger of the
#   $x$ and $\epsilon$ losses.
#
# Both of the paper's weightings stay at 1 or more where $\mathrm{SNR}_t \to 0$, where a few-step sampler needs $\hat x$.

# %%
ts = torch.arange(1000)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for weighting, label in (("snr_trunc", "max(SNR, 1)  (truncated SNR)"), ("snr_plus_one", "SNR + 1  (MSE on v)"),
                         ("constant", "1  (MSE on x)")):
    axes[0].plot(ts, loss_weights(schedule, ts, weighting), label=label)
axes[0].plot(ts, loss_weights(schedule, ts, "snr_plus_one") - 1, "k:", label="SNR  (MSE on eps)")
axes[0].set_yscale("log"); axes[0].set_xlabel("code timestep t"); axes[0].set_ylabel("weight w on ||x - x_hat||^2")
axes[0].set_title("loss weights, linear schedule, T = 1000"); axes[0].legend(fontsize=8)
axes[1].plot(ts, eps_error_gain(schedule, ts), label="eps-prediction: sigma_t / alpha_t")
axes[1].plot(ts, schedule.sqrt_one_minus_alpha_bars, label="v-prediction: sigma_t")
axes[1].set_yscale("log"); axes[1].set_xlabel("code timestep t"); axes[1].set_ylabel("gain")
axes[1].set_title("how much a prediction error grows in x_hat"); axes[1].legend(fontsize=8)
plt.tight_layout(); plt.show()
for t in (999, 950, 900, 700, 500):
    print(f"t = {t}: SNR = {float(loss_weights(schedule, torch.tensor(t), 'snr_plus_one')) - 1:.2e}, "
          f"eps gain sigma/alpha = {float(eps_error_gain(schedule, torch.tensor(t))):.1f}")

# %% [markdown]
# ### Measured: $\hat x$ of an eps model and of a v model at high noise
#
# 32 MNIST test images are noised to $z_t$ at four large $t$ (the same noise for both models), and two shipped models
# predict $\hat x$, unclipped: `mnist_cond` (eps-prediction, 1.6M parameters, trained with $L_\text{simple}$) and the
# 8-step student `mnist_distilled_8` (v-prediction, the same 1.6M-parameter architecture). The student is trained to predict the target
# $\tilde x$ of its own 8-step grid, not $x$ itself, so its error against $x$ is not what it minimises; what matters here
# is the size of $\hat x$. Pixels of $x$ lie in $[-1, 1]$.

# %%
# NBVAL_IGNORE_OUTPUT
# (the last digit can vary between CPUs; the verdict in the next cell is checked)
eps_model, mnist_schedule = load_pretrained("mnist_cond")
v_model, _ = load_pretrained("mnist_distilled_8")
test_images, test_labels = load_mnist("test")
x0, y = test_images[:32], test_labels[:32]
g = torch.Generator().manual_seed(0)
print(f"{'t':>4} {'gain':>6}  {'model':<22} {'std x_hat':>9} {'min':>6} {'max':>6} {'|x_hat|>1.5':>11} "
      f"{'RMSE vs x':>9} {'RMSE eps_hat':>12}")
x_hats = {}
with torch.no_grad():
    for t in (999, 950, 900, 700):
        tt = torch.full((32,), t)
        eps = torch.randn(x0.shape, generator=g)
        z = q_sample(mnist_schedule, x0, tt, eps)
        for name, m in (("mnist_cond (eps)", eps_model), ("mnist_distilled_8 (v)", v_model)):
            pred = Denoiser(m, mnist_schedule)(z, tt, y=y)
            x_hats[t, name] = pred.x0
            print(f"{t:>4} {float(eps_error_gain(mnist_schedule, torch.tensor(t))):>6.1f}  {name:<22} "
                  f"{pred.x0.std():>9.2f} {pred.x0.min():>6.1f} {pred.x0.max():>6.1f} "
                  f"{(pred.x0.abs() > 1.5).float().mean():>11.1%} "
                  f"{(pred.x0 - x0).pow(2).mean().sqrt():>9.2f} {(pred.eps - eps).pow(2).mean().sqrt():>12.4f}")

# %%
eps_range = x_hats[999, "mnist_cond (eps)"].abs().max().item()
v_range = x_hats[999, "mnist_distilled_8 (v)"].abs().max().item()
print(f"t = 999: the eps model's x_hat reaches beyond [-5, 5]: {eps_range > 5};  the v model's stays inside [-2.5, 2.5]: {v_range < 2.5}")
show_grid(torch.stack([x_hats[999, "mnist_cond (eps)"][:8].clamp(-3, 3) / 3,
                       x_hats[999, "mnist_distilled_8 (v)"][:8].clamp(-3, 3) / 3, x0[:8]]),
          row_labels=["eps: x_hat", "v: x_hat", "x"], col_labels=[str(int(k)) for k in y[:8]],
          col_title="test image (its class)", title="x_hat at t = 999, shown on [-3, 3] (x itself lies in [-1, 1])")

# %% [markdown]
# Read the table by rows of equal $t$. At $t = 999$ the eps model's $\hat\epsilon$ is accurate to about 0.01 (RMSE against
# the true $\epsilon$), yet its $\hat x$ is the noisy image above: 157 × 0.01 is an error of order 1 on every pixel, and
# single pixels reach −14.0 and +8.6. The v model's $\hat x$ stays inside $[-1.6, 0.9]$: a smooth, blurred digit. The gap
# shrinks as $t$ falls with the gain (at $t = 700$, gain 12, the two are alike). This is the measurement behind
# the choice of the course's students: `benchmarks/distillation.py` first re-parameterises `mnist_cond` as a
# v-prediction network and distils that one.

# %% [markdown]
# ## 3. Two halvings, live, on the swiss roll
#
# The data of lesson 2, a linear schedule with T = 1000, and an MLP that predicts $v$, trained briefly with
# $L_\text{simple}$ on $v$. It is the teacher on $N$ DDIM steps of the nested grid; `progressive_distillation` halves it
# twice (three times in the `cpu` and `gpu` profiles). Each halving is a `Trainer` whose student starts from its teacher,
# with lr $10^{-3}$ annealed linearly to 0, batch 512, no EMA. Sampling is DDIM with $\eta = 0$ and no clipping
# (`sample_student`), 5,000 points from the same $x_T$ for every model.

# %%
data = swiss_roll(20_000, seed=0)
toy_start = time.time()
teacher = MLPDenoiser(dim=2, hidden=128, num_blocks=3, prediction="v")
trainer = Trainer(teacher, data, LSimple(schedule), TrainConfig(batch_size=512, lr=1e-3, warmup_steps=100, ema_decay=0.995),
                  device="cpu")
trainer.run(SIZES["teacher_steps"], progress=False)
teacher = trainer.ema.model.eval()
N = SIZES["start_steps"]
students = progressive_distillation(teacher, schedule, data, start_steps=N, end_steps=N >> SIZES["halvings"],
                                    train_steps=SIZES["halving_steps"], config=TrainConfig(batch_size=512, lr=1e-3),
                                    device="cpu")
toy_seconds = time.time() - toy_start

# %%
# NBVAL_IGNORE_OUTPUT
# (timings)
print(f"teacher ({SIZES['teacher_steps']} steps) and {len(students)} halvings of {SIZES['halving_steps']} steps: "
      f"{toy_seconds:.0f} s")
for n, t in students:
    print(f"student on {n} steps: weighted x-loss {t.history[0][1]:.1e} (first {t.config.log_every} steps) -> "
          f"{t.history[-1][1]:.1e} (last)")

# %%
reference = swiss_roll(5000, seed=10_000)
floor = sliced_wasserstein(swiss_roll(5000, seed=20_000), reference)
def toy_sample(model, steps):                   # the same x_T (seed 1) for every model
    return sample_student(model, schedule, steps, (5000, 2), generator=torch.Generator().manual_seed(1), clip_x0=False)
panels = [(f"teacher, DDIM {N >> k} steps", toy_sample(teacher, N >> k), N >> k, "teacher")
          for k in range(len(students) + 1)]
panels += [(f"student, {n} steps", toy_sample(t.model, n), n, "student") for n, t in students]
ratio = {(who, steps): sliced_wasserstein(x, reference) / floor for _, x, steps, who in panels}
fig, axes = plt.subplots(2, len(students) + 1, figsize=(4 * (len(students) + 1), 8), squeeze=False)
for ax, (title, x, steps, who) in zip(axes[0], panels[:len(students) + 1]):
    scatter_2d(ax, x, f"{title}\nSW {ratio[who, steps]:.1f} x floor", color="C0", s=0.5)
scatter_2d(axes[1, 0], reference, "data (5,000 points)", color="gray", s=0.5)
for ax, (title, x, steps, who) in zip(axes[1, 1:], panels[len(students) + 1:]):
    scatter_2d(ax, x, f"{title}\nSW {ratio[who, steps]:.1f} x floor", color="C2", s=0.5)
for ax in axes.flat:
    if ax.has_data():
        ax.set_xlim(-3, 3); ax.set_ylim(-3, 3); ax.set_xlabel("$x_1$"); ax.set_ylabel("$x_2$")
fig.suptitle(f"top: the teacher, DDIM on fewer and fewer steps; bottom: its students (one network call per step).\n"
             f"SW: sliced Wasserstein distance to 5,000 data points, in units of the data-vs-data floor ({floor:.3f})")
plt.tight_layout(); plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
# (the figures vary slightly between CPUs; the verdicts below are checked)
print(f"{'steps':>5} {'teacher DDIM':>13} {'student':>8}   (sliced Wasserstein / floor)")
for k in range(len(students) + 1):
    steps = N >> k
    print(f"{steps:>5} {ratio['teacher', steps]:>13.1f} {ratio.get(('student', steps), float('nan')):>8.1f}")

# %%
for n, _ in students:
    gap_kept = ratio["student", n] < 1.25 * ratio["teacher", N]
    beats = ratio["student", n] < 0.75 * ratio["teacher", n]
    print(f"student on {n:>2} steps: within 1.25 x of the teacher on {N} steps: {gap_kept};  "
          f"better than the teacher's DDIM on {n} steps by more than a quarter: {beats}")

# %% [markdown]
# What the stored run shows (`ci` profile; one sample set moves a ratio by a few tenths): the teacher's DDIM degrades
# quickly as its steps are halved (2.9, 6.6 and 15.4 × the floor on 16, 8 and 4 steps): each straight DDIM step from a
# blurred $\hat x$ cuts across the spiral, and on 4 steps the arms are gone. The students on 8 and 4 steps keep the
# 16-step teacher's quality (2.9 × each): they have learned the teacher's two-step maps, curvature included. They inherit
# its error too: a student copies its teacher, so the 16-step teacher's 2.9 × (a short training, then 16 DDIM steps) is
# what they can reach. The `cpu` profile (a longer-trained teacher on 32 steps, three halvings; run once on the same
# machine, about 1 min, not stored) gave 1.5 × for the teacher on 32 steps and for each student on 16, 8 and 4 steps,
# against 2.9, 6.7 and 15.5 × for the teacher's DDIM on those steps.

# %% [markdown]
# ## 4. The shipped MNIST students and their teacher
#
# Two recipes made the course's MNIST teacher and students (`lesson_lib/recipes/distilled.py`). `mnist_cond` predicts
# $\epsilon$, whose $\hat x$ fails at few steps (section 2), so the recipe `mnist_v_teacher` first re-parameterises it:
# a v-prediction U-Net of the same architecture (1.6M parameters) starts from its weights and learns its $\hat x$ on the
# 128-step grid (`Distillation` with `teacher_steps=1`: the same denoiser with another output), 750 steps at batch 32 on
# a learning rate that anneals over 1,000 (the run was cut at 750 for the time available; about 49 min on one CPU
# thread). That network, shipped as `mnist_v_teacher`, is the teacher on 128 DDIM steps. The recipe `mnist_distilled`
# halves the shipped teacher seven times, 128 → 64 → … → 1, with **512 training steps per halving** at batch 32 (lr
# $10^{-4}$ annealed to 0, truncated-SNR weight); the paper trains each halving for about 50,000 steps (CIFAR-10). The
# students on 8, 4, 2 and 1 steps ship as `mnist_distilled_8`, `_4`, `_2`, `_1`. Lesson 9's consistency model is
# distilled from the same shipped teacher, so every comparison with "the teacher" below is with the network the
# students were distilled from.
#
# Below, each row is one class, and every image of a row starts from the same $x_T$, one network call per step, all on
# the same nested grid: the students on 1, 2, 4 and 8 steps; DDIM of their v teacher on the same steps, the comparison
# that shows what distillation adds; and DDIM of `mnist_cond`, the eps network the teacher was made from, which shows
# what the parameterisation adds. All three clip $\hat x$ to $[-1, 1]$ at every step (`sample_student`).

# %%
recipe = model_card("mnist_distilled_1")["settings"]
print("the recipe, from the students' model card:", recipe)
teacher_card = model_card("mnist_v_teacher")
print("the v teacher's card:", teacher_card["made_with"])
steps_shown = (1, 2, 4, 8)
shipped = {n: load_pretrained(f"mnist_distilled_{n}")[0] for n in steps_shown}
v_teacher, _ = load_pretrained("mnist_v_teacher")
labels = torch.arange(10)
columns, column_labels = [], []
for who, model_of in (("student", shipped.get), ("v teacher\nDDIM", lambda n: v_teacher),
                      ("mnist_cond\nDDIM", lambda n: eps_model)):
    for n in steps_shown:
        columns.append(sample_student(model_of(n), mnist_schedule, n, (10, 1, 28, 28), labels,
                                      torch.Generator().manual_seed(0)))
        column_labels.append(f"{who}\n{n} step{'s' if n > 1 else ''}")
show_grid(torch.stack(columns, dim=1), row_labels=[str(k) for k in range(10)], col_labels=column_labels,
          row_title="class", col_title="the distilled students; DDIM of their v teacher; DDIM of mnist_cond (eps), on the same steps",
          title="the same x_T in every row, one network call per step, the nested grid")

# %% [markdown]
# What the grid shows. From the same $x_T$ the four students draw nearly the same digit, at 1 step as at 8: each
# halving copied its teacher's map from $x_T$ to the image closely. DDIM of their v teacher on 1 step outputs its first
# $\hat x$, clipped: a blurred digit of the right class, which sharpens on 2 steps and is clean on 4 and 8. DDIM of
# `mnist_cond` on 1 step is noise: the eps model's $\hat x$ failure of section 2, not a want of distillation; from 2
# steps on it looks like the v teacher's. So the 1-step comparison that shows what distillation adds is the students
# against the v teacher (blur against a sharp digit), not against `mnist_cond`.

# %% [markdown]
# ## 5. The ladder: FID and class accuracy against network calls
#
# `python benchmarks/distillation.py table --n 500 --calls 1 2 4 8 16 128` (not run here) sampled n = 500 images (50 per
# class) from the students on 1 to 16 steps, each on its own number of steps, and from their 128-step teacher with DDIM on
# the same numbers of steps and nested grid: the fair comparison, the same network before distillation; on 1 to 8 steps
# also from the shipped `mnist_cond`, the eps network the teacher was re-parameterised from. FID is on the course MNIST classifier's features
# against 500 test images, beside the real-vs-real floor at the same n; class accuracy is the course classifier's on the
# samples. The table is stored in `docs/distillation_table.json`.

# %%
table = json.loads(course_file("docs/distillation_table.json").read_text())
floor_fid = table["floor"]
rows = {r["calls"]: r for r in table["rows"]}
print(f"n = {table['n']} samples per cell; real-vs-real FID floor at n = {table['n']}: {floor_fid:.2f}")
print(f"{'calls':>5} | {'student FID':>11} {'acc':>6} | {'teacher DDIM FID':>16} {'acc':>6} | "
      f"{'mnist_cond DDIM FID':>19} {'acc':>6}")
for calls, r in sorted(rows.items()):
    s, d, m = r["student"], r["ddim"], r.get("ddim_mnist_cond")
    student = f"{s['fid']:>11.2f} {s['accuracy']:>6.1%}" if s else f"{'(teacher)':>11} {'':>6}"
    original = f"{m['fid']:>19.2f} {m['accuracy']:>6.1%}" if m else f"{'-':>19} {'':>6}"
    print(f"{calls:>5} | {student} | {d['fid']:>16.2f} {d['accuracy']:>6.1%} | {original}")

# %%
calls = sorted(rows)
student_calls = [c for c in calls if rows[c]["student"]]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
teacher_steps = max(rows)
axes[0].plot(calls, [rows[c]["ddim"]["fid"] for c in calls], "o-", label=f"teacher ({teacher_steps} steps), DDIM on fewer steps")
axes[0].plot(student_calls, [rows[c]["student"]["fid"] for c in student_calls], "s-", label="distilled students")
axes[0].axhline(floor_fid, color="gray", ls="--", label=f"real-vs-real floor, n = {table['n']}")
axes[0].set_ylim(bottom=0); axes[0].set_ylabel("FID (course classifier features)")
axes[1].plot(calls, [rows[c]["ddim"]["accuracy"] for c in calls], "o-", label="teacher, DDIM")
axes[1].plot(student_calls, [rows[c]["student"]["accuracy"] for c in student_calls], "s-", label="students")
axes[1].axhline(0.9, color="gray", ls=":", label="90%")
axes[1].set_ylabel("class accuracy of the samples")
for ax in axes:
    ax.set_xscale("log", base=2); ax.set_xticks(calls, [str(c) for c in calls])
    ax.set_xlabel("network calls per sample (= sampling steps)"); ax.legend(fontsize=8)
axes[0].set_title(f"FID against network calls, n = {table['n']}")
axes[1].set_title("class accuracy against network calls")
plt.tight_layout(); plt.show()

# %% [markdown]
# The teacher was also measured when it was exported, at a larger n: DDIM on 1, 2, 4 and 8 steps of the nested grid,
# n = 2,000 (200 per class), every arm from the same $x_T$, beside the real-vs-real floor at n = 2,000 (one thread of
# the shared 2-core CPU). Its card holds the figures:

# %%
measured = teacher_card["evaluation"]
print(f"mnist_v_teacher, DDIM on the nested grid, n = {measured['n']}; real-vs-real floor at n = {measured['n']}: "
      f"{measured['fid_floor']:.2f}")
for arm in measured["ddim"]:
    print(f"  {arm['steps']} step{'s' if arm['steps'] > 1 else ' '}: FID {arm['fid']:>5.2f}, class accuracy {arm['accuracy']:.1%}")

# %% [markdown]
# The teacher's DDIM is far from the floor on 1 and 2 steps (FID 6.16 and 2.77, against a floor of 0.19 at n = 2,000),
# as at n = 500 (6.25 and 2.80; FIDs at different n are not strictly comparable), and close to it on 4 and 8 steps
# (0.59 and 0.28). Its class accuracy stays at 97.6–98.9%: the blurred 1-step digits are still of their class. At
# n = 2,000 the floor is lower than at n = 500, and 4- and 8-step DDIM now sit above it, where n = 500 could not tell
# them from the data. The students against the teacher at a large n come below, at n = 5,000.
#
# Three aims were set for this distillation before it ran: (a) the 4-step student's FID gap to the floor at most half
# of 4-step DDIM's; (b) the 8-step student's gap within 1.5 × the teacher's; (c) class accuracy at least 90% at
# 4 steps. A gap is FID minus the floor, counted as 0 when FID is below the floor: at this n such a sampler cannot be
# told from the data. The verdicts, from the stored table:

# %%
gap = lambda r, floor=floor_fid: max(r["fid"] - floor, 0.0)   # below the floor is as good as data at this n
teacher_gap = gap(rows[teacher_steps]["ddim"])
aims = {
    "(a) 4-step student's gap <= 1/2 of 4-step DDIM's": gap(rows[4]["student"]) <= 0.5 * gap(rows[4]["ddim"]),
    "(b) 8-step student's gap <= 1.5 x the teacher's": gap(rows[8]["student"]) <= 1.5 * teacher_gap,
    "(c) class accuracy >= 90% at 4 steps": rows[4]["student"]["accuracy"] >= 0.9,
}
print(f"gaps to the floor: teacher ({teacher_steps} steps) {teacher_gap:.2f}; 8 steps: student {gap(rows[8]['student']):.2f}, "
      f"DDIM {gap(rows[8]['ddim']):.2f}; 4 steps: student {gap(rows[4]['student']):.2f}, DDIM {gap(rows[4]['ddim']):.2f}")
for aim, holds in aims.items():
    print(f"{aim:<52} {'holds' if holds else 'does not hold'}")

# %% [markdown]
# What the numbers show (n = 500 per cell, one seed; the floor is 0.76):
#
# * **The halvings kept the teacher.** The 128-step teacher scores FID 0.50 (96.4% class accuracy); its
#   students score 0.52, 0.55, 0.57, 0.60 and 0.64 on 16, 8, 4, 2 and 1 steps, with 95.6–97.4% accuracy: every one of
#   them below the real-vs-real floor, so at n = 500 none can be told from the data.
# * **Where DDIM breaks, the students win**: on 1 step DDIM of the same teacher scores 6.25 (a blurred digit, still
#   98.2% of its class) against the student's 0.64 (97.4%); on 2 steps 2.80 against 0.60. DDIM of `mnist_cond`, the
#   eps network, scores 34.20 with 28.2% accuracy on 1 step: the eps model's $\hat x$ failure of section 2, not a want
#   of distillation.
# * **On 4 steps and more, DDIM is at the floor too** (0.755 on 4 steps, just under the floor's 0.762; 0.50 on 8): on
#   MNIST a good model needs no distillation at 4 steps and more, and n = 500 cannot rank samplers that all sit at the
#   floor.
# * **The aims** hold, but (a) and (b) hold because every gap is 0: the 4-step student (0.57) and 4-step DDIM (0.755)
#   are both below the floor, and so are the 8-step student (0.55) and the teacher. (c) holds: 96.0% of the 4-step
#   student's samples are classified as their class. What n = 500 does show is the 1- and 2-step result above.
# * **At n = 5,000 the floor no longer hides them** (docs/benchmarks.md §10: the shipped students and DDIM of `mnist_cond`
#   from the same $x_T$, the floor at the same n, references drawn at random). The floor falls to 0.049; the students
#   score 0.330, 0.263, 0.231 and 0.211 on 1, 2, 4 and 8 steps (6.8× down to 4.3× the floor), ordered by steps in FID,
#   KID and FID extrapolated to infinite n alike. On 4 steps the student beats DDIM of `mnist_cond` (0.231 against 0.446);
#   on 8 steps DDIM of `mnist_cond` wins (0.187 against 0.211, with 98.1% against 96.8% accuracy), though the student
#   beats DDIM-8 of its own teacher (0.244). So against the best DDIM the course has, distillation pays on 1, 2 and 4
#   steps here, not on 8. The students' samples are less diverse than the data (feature covariance 0.88–0.93 of the test
#   set's), which is why a small n flattered them.
#
# The three aims again at n = 5,000, from the same tables (`python benchmarks/distillation.py shipped`; the teacher's
# 128 steps with `--v-teacher-steps 128`). Aim (a) is read against DDIM-4 of both the v teacher and `mnist_cond`:

# %%
large = json.loads(course_file("docs/distillation_table_n5000.json").read_text())
at = {r["calls"]: r for r in large["rows"]}
at[128] = json.loads(course_file("docs/distillation_v_teacher128_n5000.json").read_text())["rows"][0]
floor_large = large["floor"]["fid"]
teacher_128 = at[128]["ddim_v_teacher"]
print(f"n = {large['n']} per arm, the same x_T; real-vs-real floor {floor_large:.3f}; the v teacher on its 128 steps: "
      f"FID {teacher_128['fid']:.3f}, class accuracy {teacher_128['accuracy']:.1%}")
a_teacher = gap(at[4]["student"], floor_large) / gap(at[4]["ddim_v_teacher"], floor_large)
a_cond = gap(at[4]["student"], floor_large) / gap(at[4]["ddim_mnist_cond"], floor_large)
b_teacher = gap(at[8]["student"], floor_large) / gap(teacher_128, floor_large)
c_accuracy = at[4]["student"]["accuracy"]
for aim, value, holds in [("(a) 4-step student's gap / DDIM-4's of the v teacher (aim <= 0.5)", a_teacher, a_teacher <= 0.5),
                          ("(a) 4-step student's gap / DDIM-4's of mnist_cond   (aim <= 0.5)", a_cond, a_cond <= 0.5),
                          ("(b) 8-step student's gap / the 128-step teacher's   (aim <= 1.5)", b_teacher, b_teacher <= 1.5),
                          ("(c) class accuracy of the 4-step student            (aim >= 0.9)", c_accuracy, c_accuracy >= 0.9)]:
    print(f"{aim}  {value:.3f}  {'holds' if holds else 'does not hold'}")

# %% [markdown]
# At n = 5,000 the aims are decided by gaps, not by the floor:
#
# * **(a)** holds against DDIM-4 of the v teacher (0.36) and of `mnist_cond` (0.46; `mnist_cond`'s DDIM is the better
#   4-step sampler of the two, 0.446 against 0.554).
# * **(b)** holds: the 8-step student's gap is 1.12× the 128-step teacher's (0.211 against 0.194, 96.8% against 96.5%
#   accuracy): 16 times fewer calls for about an eighth more distance to the data. The teacher, cut at 750 of its 1,000
#   planned conversion steps, sits above DDIM-50 of `mnist_cond` (0.162, lesson 9's table); against that, a teacher as
#   good as `mnist_cond`, the ratio is 0.162 / 0.113 = 1.44, inside the aim too.
# * **(c)** holds: 96.9% of the 4-step student's samples are of their class.
#
# An earlier recipe distilled a smaller v network (0.41M parameters, trained from scratch on `mnist_cond`'s $\hat x$)
# from 64 steps: its students scored 1.1–1.3 with 93% accuracy, and (a) failed. Starting the v teacher from
# `mnist_cond`'s own weights, at its full width, is what moved the students to the floor; the halvings (512 steps each,
# where the paper trains about 50,000) were as short as before.

# %% [markdown]
# ## Summary
#
# * Algorithm 2: a student learns in one DDIM step the teacher's two, through the target
#   $\tilde x = (z'' - (\sigma''/\sigma_t)z_t)/(\alpha'' - (\sigma''/\sigma_t)\alpha_t)$, exact to float64 (section 1);
#   the student then teaches the next.
# * At few steps $\hat x$ is what the sampler outputs, and an eps model's $\hat x$ multiplies its error by
#   $\sigma_t/\alpha_t$ (157.4 at $t = 999$): measured, single pixels of $\hat x$ at −14.0. Students predict $v$ and weight the
#   $x$-error by $\max(\mathrm{SNR}, 1)$ or $\mathrm{SNR} + 1$ (section 2).
# * On the swiss roll, two halvings keep the teacher's quality at a quarter of its steps, where the teacher's own DDIM
#   is several times worse (section 3).
# * On MNIST, with 512 training steps per halving on two CPU threads, the students of `mnist_cond` (re-parameterised
#   to $v$) sit at the FID floor of n = 500 from 16 steps down to 1, with 96–97% class accuracy, where DDIM of the same
#   teacher scores 6.25 on 1 step and 2.80 on 2; the three aims hold at n = 500, (a) and (b) because every gap is 0 there.
#   At n = 5,000 the students are 4.3–6.8× the floor, ordered by steps, ahead of DDIM of `mnist_cond` on 4 steps and
#   behind it on 8; the 8-step student's gap is 1.12× that of the teacher on 128 steps, and all three aims hold there
#   too (section 5).
# * Beside the students, DDIM of their v teacher (shipped as `mnist_v_teacher`) on 1 step is a blurred digit
#   (FID 6.16 at n = 2,000, floor 0.19), while DDIM of the eps model `mnist_cond` on 1 step is noise: that column shows
#   the parameterisation, the v teacher's shows what distillation adds (section 4).

# %%
# NBVAL_IGNORE_OUTPUT
print(f"this notebook ran in {time.time() - started:.0f} s (profile {profile})")
