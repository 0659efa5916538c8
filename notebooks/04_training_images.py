# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/04_training_images.ipynb)
#
# # Lesson 4 — Training a DDPM on MNIST and CIFAR-10
#
# Lessons 2 and 3 gave us the training loop and the U-Net. Now we train the real thing: a class-conditional DDPM
# on MNIST digits and on CIFAR-10 photos, with everything that makes image training work in practice
# (`lesson_lib/training/trainer.py`): AdamW with warm-up, gradient clipping, an EMA of the weights, bf16 autocast and
# channels-last memory on a GPU, the whole dataset on the GPU, label dropout (for classifier-free guidance, lesson 5),
# and checkpoints that resume exactly.
#
# **How long this takes depends on your machine.** `lesson_lib` picks a *profile*; `FULL_RUN = True` (first code cell)
# trains the profile's full length instead of the shorter default:
#
# | profile | when | MNIST steps (default / full) | CIFAR-10 steps (default / full) | what you get |
# |---|---|---|---|---|
# | `gpu` | CUDA present (Colab: *Runtime → Change runtime type → GPU*) | course model, batch 256: 3,000 / 6,000 | 1,000 / 100,000 | sharp digits (the shipped model had 3,100 such steps); CIFAR-10 photos only from the full run |
# | `cpu` | no GPU | course model, batch 64: 800 / 3,000 | 200 / 3,000 | the first digit shapes |
# | `ci` | `DDPM_PROFILE=ci` (our automated tests) | a tiny model, batch 32: 300 | 200 | MNIST blobs, CIFAR-10 noise: every code path runs |
#
# **Runtime of the whole lesson** (`python benchmarks/lesson_runtimes.py --profile P --lessons 04` re-measures it):
#
# | profile | hardware | default | `FULL_RUN = True` |
# |---|---|---|---|
# | `ci` | 2-core cloud CPU | 3 min (172 s) measured in the test suite on a clean clone (two test workers on the 2 cores); 16 min while other jobs shared the machine (load 4–6 on 2 cores); two tiny trainings take most of it | the same |
# | `cpu` | 2-core cloud CPU | 8–28 min (estimate from measured training images/s of the same U-Net on 2-core CPUs, docs/benchmarks.md section 7) | 40 min to 2.5 h (estimate) |
# | `gpu` | NVIDIA H200 | about 4 min (estimated from its measured training throughput) | about 2 h (estimated) |
# | `gpu` | Colab's free T4 | about 10–20 min (**estimate**, not measured: assuming float32, as the T4 has no bfloat16, at 30–50% of its published 8.1 TFLOPS) | 8–14 h (estimate) |
#
# Progress bars show the time left.
#
# **Study time.** About 45 min to read and run this lesson, plus the training time above, then about 1 h for the exercise
# notebook (`exercises/04_training_images.ipynb`: the EMA update and a training step with label dropout).
#
# The outputs stored in this notebook come from the `ci` profile: its own samples are blobs, and every figure of them
# says so. Beside them the lesson shows a model the course ships (`mnist_cond`: the `gpu` profile's model, trained with
# this exact code on a GPU), so you see both what too little training looks like and what the same code does with enough.
# The same training runs headless with `python -m lesson_lib.train --config mnist`.

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import json

import matplotlib.pyplot as plt
import torch

from lesson_lib.course.colab import course_file
from lesson_lib.course.plotting import show_grid
from lesson_lib.data.images import load_dataset
from lesson_lib.diffusion.denoiser import Denoiser
from lesson_lib.diffusion.guidance import ClassifierFreeGuidance
from lesson_lib.diffusion.losses import l_simple
from lesson_lib.diffusion.sampling import ddim_sample, evaluating, sample
from lesson_lib.diffusion.steps import ddim_step
from lesson_lib.diffusion.timesteps import spaced
from lesson_lib.evaluation.metrics import nearest_neighbours
from lesson_lib.pretrained import latent_decoding, load_pretrained, model_card
from lesson_lib.sample import generate
from lesson_lib.train import build
from lesson_lib.training.profiles import current_profile, training_settings

torch.manual_seed(0)
profile = current_profile()
settings = training_settings("mnist", profile)
print("profile:", profile)
print("MNIST settings:", {k: settings[k] for k in ("preset", "steps", "batch_size", "lr", "ema_decay")})

# The cpu and gpu profiles' full runs take longer than 20 minutes on a 2-core CPU or a free Colab T4
# (see the runtimes above), so by default they are cut to the steps below. FULL_RUN = True trains the
# profile's full length (gpu: CIFAR-10 for hours).
FULL_RUN = False
SHORT = {"ci": {}, "cpu": {"mnist": 800, "cifar10": 200}, "gpu": {"mnist": 3000, "cifar10": 1000}}[profile]
run_steps = lambda dataset, steps: steps if FULL_RUN else min(steps, SHORT.get(dataset, steps))

# %% [markdown]
# ## 1. Train on MNIST
#
# `build` loads the data (from `DDPM_DATA_DIR` if you have a local copy, otherwise torchvision downloads it),
# builds the U-Net with 10 classes plus a *null* class, and the `Trainer`. Images are kept as `uint8` (on the GPU when
# there is one) and turned into $[-1, 1]$ floats batch by batch.
#
# **Class-conditional, with label dropout** (lesson 3, section 5). The network is $\varepsilon_\theta(x_t, t, y)$: the label's
# row of a learned table, `ClassEmbedding`, is added to the time embedding and so reaches every ResBlock. The table has an
# 11th row, the null class, "no label". At every training step the objective (`LSimple(schedule, class_dropout=0.1)`)
# replaces each label by the null class with probability 0.1, so the same network also learns the unconditional
# $\varepsilon_\theta(x_t, t, \varnothing)$, all digits together: lesson 5's classifier-free guidance combines the two. The
# exercise notebook has you write that training step.
#
# While it trains we also keep score of the **EMA** (exponential moving average) of the weights,
# $\bar\theta \leftarrow d\,\bar\theta + (1-d)\,\theta$ with decay $d$ (`ema_decay` above), which is what DDPM samples
# from. Every tenth of the run a callback measures $L_\text{simple}$ of the raw weights $\theta$ and of the EMA $\bar\theta$ on the
# same **held-out batch** (256 test digits, timesteps spread evenly over $0..999$, one fixed draw of $\varepsilon$), so the two
# numbers differ only by the weights.

# %%
trainer, steps = build("mnist", profile)
steps = run_steps("mnist", steps)
model = trainer.model
print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {steps} steps of batch {trainer.config.batch_size}")

test_x, test_y, _ = load_dataset("mnist", "test")
g_held = torch.Generator().manual_seed(0)
held = dict(x0=test_x[:256].to(trainer.device), t=torch.linspace(0, 999, 256).round().long().to(trainer.device),
            eps=torch.randn(256, 1, 28, 28, generator=g_held).to(trainer.device), y=test_y[:256].to(trainer.device))
held_out = {"step": [], "raw": [], "EMA": []}

def score(trainer):
    """Held-out L_simple of the raw and the EMA weights at this step."""
    held_out["step"].append(trainer.step)
    for name, net in (("raw", trainer.model), ("EMA", trainer.ema.model)):
        with torch.no_grad(), evaluating(net):
            held_out[name].append(l_simple(net, trainer.schedule, **held).item())


# %%
# NBVAL_IGNORE_OUTPUT
# (a progress bar with the time left)
history = trainer.run(steps, callback_every=max(steps // 10, 1), callback=score)

# %%
step, loss = zip(*history)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
axes[0].plot(step, loss)
axes[0].set(yscale="log", xlabel="training step", ylabel="$L_{simple}$ (mean over the log interval)",
            title="MNIST training loss (raw weights, training batches)")
for name in ("raw", "EMA"):
    axes[1].plot(held_out["step"], held_out[name], "o-", label=f"{name} weights")
axes[1].set(yscale="log", xlabel="training step", ylabel="held-out $L_{simple}$", title="the same held-out batch, raw against EMA")
axes[1].legend()
plt.tight_layout()
plt.show()
assert loss[-1] < 0.5 * loss[0]
print("the loss fell below half its first logged value:", loss[-1] < 0.5 * loss[0])

# %%
# NBVAL_IGNORE_OUTPUT
# (losses vary in the last digits between CPUs; the verdicts below are checked)
for s, r, e in zip(held_out["step"], held_out["raw"], held_out["EMA"]):
    print(f"step {s:>5}: held-out L_simple raw {r:.4f}, EMA {e:.4f}  (EMA / raw = {e / r:.2f})")

# %%
half = len(held_out["step"]) // 2
print("early in the run the EMA lags behind the raw weights (higher loss at the first check):",
      held_out["EMA"][0] > held_out["raw"][0])
print("at the last step the EMA's held-out loss is the lower one:", held_out["EMA"][-1] < held_out["raw"][-1])

# %% [markdown]
# **What the numbers say.** The EMA remembers about $1/(1-d)$ steps (100 in the `ci` profile, 1,000 in the others), so at
# the first check it still averages in the random initial weights and its loss is the *higher* one. Later it is the
# lower one: in the run stored here (`ci` profile) from step 90 on, and about 7% lower at the last step (0.037 against
# 0.040). The raw weights' loss also jumps from check to check (it rose at step 210), the EMA's falls smoothly:
# averaging irons out the noise of the last optimiser steps.

# %% [markdown]
# ## 2. Samples: raw weights, their EMA, and a model trained long enough
#
# We ask for one row per digit class, from the same starting noise $x_T$ for all three models. Sampling uses DDIM
# with 30 steps (Song et al., 2021: a model trained with all $T$ steps can be sampled on a sub-sequence of them; lesson 6
# opens it) to keep this fast.
#
# The third panel is the course's shipped model: the same code, the `gpu` profile's model, trained for 150 seconds on
# one GPU (an NVIDIA H200). Its model card records how it was trained and how good it is. **On a GPU (the `gpu`
# profile) your own model from section 1 takes its place**, so you can compare it with the card.

# %%
card = model_card("mnist_cond")
ev = card["evaluation"]
print(f"trained {card['steps']} steps ({card['examples_seen']:,} images) in {card['wall_time_s']:.0f} s on {card['hardware'].split(' (')[0]}")
print(f"FID {ev['fid']:.2f} against a real-data floor of {ev['fid_floor_train_vs_test']:.2f} (n = {ev['n']}, course classifier features)")
print(f"class accuracy of its samples: {ev['class_accuracy']:.1%}")
pretrained, schedule = load_pretrained("mnist_cond", device=trainer.device)
good_name = "shipped model mnist_cond (3,100 steps of batch 256 on a GPU)"
if profile == "gpu":                       # your own model is good enough: use it
    pretrained, schedule, good_name = trainer.ema.model, trainer.schedule, f"your model, EMA after {trainer.step} steps"

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bars)
per_class = 5
y = torch.arange(10, device=trainer.device).repeat_interleave(per_class)
x_T = torch.randn((len(y), 1, 28, 28), generator=torch.Generator().manual_seed(1)).to(trainer.device)
ddim = lambda net, sched: ddim_sample(net, sched, x_T=x_T, steps=30, clip_x0=True, model_kwargs={"y": y},
                                      device=trainer.device).cpu()
raw, ema, good = ddim(trainer.model, trainer.schedule), ddim(trainer.ema.model, trainer.schedule), ddim(pretrained, schedule)

# %%
tiny = profile == "ci"
what = (f"{trainer.step} steps of a tiny model: this is what too little training looks like" if tiny
        else f"after {trainer.step} steps ({profile} profile)")
grid = lambda x: x.view(10, per_class, 1, 28, 28)
rows = [f"y = {k}" for k in range(10)]
for images, title in ((raw, f"raw weights, {what}"), (ema, f"EMA weights, {what}"), (good, good_name)):
    show_grid(grid(images), row_labels=rows, col_labels=[f"sample {j + 1}" for j in range(per_class)],
              row_title="class asked for", title=title, figsize=(5.6, 9.6))

# %% [markdown]
# **Raw and EMA look alike here.** From the same $x_T$ the two tiny models draw nearly the same images, stroke for
# stroke: digit-like strokes, few of them the asked-for digit, and many blobs or plain noise. A loss 7% lower does not
# show at this quality; in so short a run the EMA's gain is the number in section 1, not the picture. (DDPM uses an
# EMA of decay 0.9999 over 800,000 steps.) The shipped model saw 82 times as many images (3,100 steps of batch 256 against
# 300 of 32) and draws clean digits, nearly all of them the asked-for one: that, not the tiny model, is what this code
# gives with enough training. Nearly all, not all: the course's MNIST classifier (`lesson_lib.evaluation.judges`, trained
# on real digits) reads its 50 samples below.

# %%
# NBVAL_IGNORE_OUTPUT
# (a sample near a class boundary could be read differently on another CPU; the verdict below is checked)
from lesson_lib.evaluation.judges import classify

read, confidence = classify(good, "mnist")
print(f"{good_name}: the classifier reads the asked-for digit in {(read == y.cpu()).sum()} of {len(y)} samples")
for i in (read != y.cpu()).nonzero().flatten().tolist():
    print(f"  y = {y[i]}, sample {i % per_class + 1}: read as a {read[i]} (confidence {confidence[i]:.2f})")

# %%
print("at least 45 of the 50 samples are read as the asked-for digit:", bool((read == y.cpu()).sum() >= 45))

# %% [markdown]
# For the shipped model, 47 of 50. The three it rejects are the second and fifth 7s of the grid (read as a 9 and, with
# little confidence, a 4) and the third 9 (read as a 7). This agrees with the model card's class accuracy printed
# above, 96.9% of its n = 2,000 samples (100 DDIM steps): a good conditional model still draws a wrong or ambiguous
# digit now and then. Lesson 5's guidance trades some variety for fewer of them.

# %% [markdown]
# ## 3. Watching a sample form: $x_t$ and the model's $\hat x_0$ along the chain
#
# At every step the network predicts the noise $\hat\varepsilon = \varepsilon_\theta(x_t, t)$; subtracting it and rescaling gives
# its current guess of the clean image (Ho et al., 2020, Eq. 15):
#
# $$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon}{\sqrt{\bar\alpha_t}}.$$
#
# The sampler's `callback` receives every step (`StepRecord(i, t, s, x_t, pred, x_s)`, with `pred.x0` = $\hat x_0$),
# so we only collect what it sees. One sample per class for four classes, 20 DDIM steps, the shipped model (the
# tiny model's $\hat x_0$ would only be a blob). Rows come in pairs: $x_t$, then $\hat x_0$ at the same step; columns are
# the timestep $t$ of that step. Algorithm 2 (1000 steps) tells the same story, only more slowly.

# %%
# NBVAL_IGNORE_OUTPUT
# (a progress bar)
classes = torch.tensor([0, 3, 7, 8], device=trainer.device)
records = []
x_T4 = torch.randn((4, 1, 28, 28), generator=torch.Generator().manual_seed(2)).to(trainer.device)
with evaluating(pretrained):
    x_0 = sample(Denoiser(pretrained, schedule.to(trainer.device), clip_x0=True), schedule.to(trainer.device), x_T4,
                 spaced(1000, 20), ddim_step, stochastic=False, cond={"y": classes}, callback=records.append,
                 desc="DDIM sampling")

# %%
shown = [records[i] for i in (0, 3, 6, 9, 12, 15, 17, 19)]
print("timesteps shown:", [r.t for r in shown])
panels, labels = [], []
for k, c in enumerate(classes.tolist()):
    panels += [torch.stack([r.x_t[k] for r in shown]), torch.stack([r.pred.x0[k] for r in shown])]
    labels += [f"y = {c}: $x_t$", f"y = {c}: $\\hat x_0$"]
show_grid(torch.stack(panels).cpu(), row_labels=labels, col_labels=[f"t = {r.t}" for r in shown],
          col_title="timestep t of the step (DDIM, 20 steps, shipped model)", figsize=(9, 9.6),
          title="the state $x_t$ and the model's guess $\\hat x_0$ of the clean image")
print("the last step's x0_hat is the sample:", torch.allclose(records[-1].pred.x0, x_0, atol=1e-5))

# %% [markdown]
# **What the grid shows.** $x_t$ stays noise to the eye until about $t = 370$, but $\hat x_0$ shows the digit's class and
# rough shape from $t \approx 840$ on, as a blurred average of the digits that fit; each later step sharpens it and fixes
# details (the 7's bar and slant move between $t = 684$ and $t = 368$). Coarse shape first, detail in the last steps: the same
# story as the swiss roll in lesson 2. At $t = 0$ the two rows agree: the last step's $\hat x_0$ *is* the sample.

# %% [markdown]
# ## 4. Is the good model memorising?
#
# A model could reach a low loss by memorising training images. We look for each sample of the good model (section 2's
# third panel) for its **nearest training image** (Euclidean distance over pixels) and compare with how far *fresh test
# images* are from their nearest training image. If samples sat much closer to the training set than test images do,
# they would be copies.

# %%
# NBVAL_IGNORE_OUTPUT
# (distances vary in the last digit between CPUs; the verdict below is checked)
train_x, _, _ = load_dataset("mnist", "train")
idx, d_samples = nearest_neighbours(good, train_x)
_, d_test = nearest_neighbours(test_x[:60], train_x)
print(f"median distance to the nearest training image: samples {d_samples.median():.1f}, test images {d_test.median():.1f}")

# %%
print("samples are no closer to the training set than new data is:", bool(d_samples.median() > 0.8 * d_test.median()))

# %%
pairs = torch.stack([good[::per_class][:10], train_x[idx[::per_class][:10]]], dim=1)
show_grid(pairs.transpose(0, 1), row_labels=["sample", "nearest training image"], col_labels=[f"y = {k}" for k in range(10)],
          title="one sample per class and its nearest training image", figsize=(10, 2.8))

# %% [markdown]
# ### Numbers for quality: FID, and why it depends on the sample size
#
# The model card's FID compares the statistics (mean and covariance) of classifier features of generated and real images
# (Heusel et al., 2017; see `docs/metrics.md`). FID is **biased upwards at small sample sizes**: even two sets of *real*
# images differ, and less so the more images we use. So a FID means something only next to the floor — real against real
# at the same $n$ — and two models compare only at the same $n$. Here is the floor of MNIST's real images at several $n$:
#
# These FIDs are computed on the features of the course's small MNIST classifier (`docs/metrics.md`), not on those of the
# Inception network that the published FIDs of lesson 0 use (CIFAR-10, 50,000 samples). The two scales have nothing in common:
# an MNIST FID of 0.22 here and a CIFAR-10 FID of 3.17 there cannot be compared, and neither says which model is better.

# %%
# NBVAL_IGNORE_OUTPUT
# (figures vary in the last digit between CPUs; the check below is compared)
from lesson_lib.evaluation.fid import real_floor

floors = {n: real_floor("mnist", n)["fid"] for n in (100, 300, 1000, 3000)}
for n, f in floors.items():
    print(f"n = {n:>5}: FID(train, test) = {f:.2f}")

# %%
values = list(floors.values())
print("the real-vs-real FID shrinks as n grows:", all(a > b for a, b in zip(values, values[1:])))
print(f"so the model card's FID {ev['fid']:.2f} is read against the floor at its own n = {ev['n']}: {ev['fid_floor_train_vs_test']:.2f}")

# %% [markdown]
# `python -m lesson_lib.evaluate --pretrained mnist_cond --n 1000` prints FID, KID, class accuracy and samples/s next to the floor.
#
# A small $n$ also *flatters*: samples less diverse than the data (a smaller feature covariance) gain more from the
# small-$n$ bias than real images do, and can score at or below the floor. At $n = 5{,}000$ (docs/benchmarks.md §10)
# the floor is 0.049 and 8-step DDIM of this model scores 0.187, 3.8× the floor, where at $n = 500$ the same samples sit
# at 1.2×. The card's figure is at its own small $n$. Its own sampler, 100 DDIM steps, was measured again at
# $n = 5{,}000$ by `benchmarks/fast_sampling.py` (the floor at the same $n$, the test images drawn at random; FID
# extrapolated to infinite $n$, FID$_\infty$, beside FID):

# %%
large = json.loads(course_file("docs/mnist_cond_ddim100_n5000.json").read_text())
row, floor = large["rows"][0], large["floor"]
print(f"mnist_cond, DDIM-{row['S']} (eta = {row['eta']:g}), n = {row['n']:,}: FID {row['fid']:.3f}, "
      f"{row['fid'] / floor['fid']:.1f}x the floor {floor['fid']:.3f}; FID_inf {row['fid_infinity']:.3f} "
      f"(floor {floor['fid_infinity']:.3f}); class accuracy {row['accuracy']:.1%}")
print(f"the card, n = {ev['n']:,}: FID {ev['fid']:.3f} against the floor {ev['fid_floor_train_vs_test']:.3f}")

# %% [markdown]
# At $n = 5{,}000$ the card's sampler is 3.4× the floor, with FID$_\infty$ 0.072 against the floor's 0.001, where the
# card's own $n$ had put it close to its floor. 20 DDIM steps score 0.160 at the same $n$ (lesson 6): more steps of
# the deterministic sampler buy nothing. Not all of what remains is the model's, though: DDIM with fresh noise
# ($\eta = 1$) on 50 steps scores 0.123 (lesson 6), so part of the gap is the deterministic sampler's. Lesson 7 shows
# what a larger $n$ separates.

# %% [markdown]
# ## 5. CIFAR-10
#
# Same code, harder data: 32×32 colour photos of ten classes, with random horizontal flips. The `cifar10` preset
# (8.95M parameters) needs a GPU and hours for good samples (the `gpu` profile's full run, `FULL_RUN = True`, is 100,000 steps of batch 128:
# about two hours on an H200, estimated from its measured 1,869 training images/s); DDPM's own model (35.7M) trained for days. Beside this run's samples we put real CIFAR-10 test images of the
# same classes: what a good model should approach. The course's one shipped CIFAR-10 model comes after it.

# %%
cifar_trainer, cifar_steps = build("cifar10", profile)
cifar_steps = run_steps("cifar10", cifar_steps)
print(f"CIFAR-10: {sum(p.numel() for p in cifar_trainer.model.parameters()):,} parameters, {cifar_steps} steps")

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bars with the time left)
cifar_history = cifar_trainer.run(cifar_steps)
yc = torch.arange(10, device=cifar_trainer.device).repeat_interleave(4)
cifar = ddim_sample(cifar_trainer.ema.model, cifar_trainer.schedule, (40, 3, 32, 32), steps=25, clip_x0=True,
                    model_kwargs={"y": yc}, device=cifar_trainer.device,
                    generator=torch.Generator(cifar_trainer.device).manual_seed(1)).cpu()

# %%
assert cifar_history[-1][1] < cifar_history[0][1]
print("the CIFAR-10 loss fell:", cifar_history[-1][1] < cifar_history[0][1])
cifar_x, cifar_y, cifar_classes = load_dataset("cifar10", "test")
real = torch.stack([cifar_x[cifar_y == k][:4] for k in range(10)])
what = (f"{cifar_trainer.step} steps of a tiny model: this is what too little training looks like" if profile == "ci"
        else f"EMA after {cifar_trainer.step} steps ({profile} profile)")
show_grid(torch.cat([cifar.view(10, 4, 3, 32, 32), real], dim=1), row_labels=list(cifar_classes),
          col_labels=["sample"] * 4 + ["real"] * 4, row_title="class", figsize=(7, 9),
          title=f"CIFAR-10: {what} (left), real test images (right)")

# %% [markdown]
# **What the figure shows.** After 200 steps the tiny model's samples are still coloured noise: nothing in
# them is an object yet, and no row looks like its class. That is what too little training looks like on
# CIFAR-10; the real images on the right are what a model trained for hours on a GPU approaches.

# %% [markdown]
# **A trained colour model.** The course ships one CIFAR-10 diffusion model, `cifar10_latent` (lesson 10). It does not
# denoise pixels: it diffuses in the 8×8×8 latent of an autoencoder, which let it train in an hour on two CPU threads
# instead of hours on a GPU. Four of its samples per class, with classifier-free guidance $w = 4$ (lesson 5), beside
# the same real images:

# %%
colour_model, colour_schedule = load_pretrained("cifar10_latent")
colour = generate(colour_model, colour_schedule, 40, "ddim", 25, cond={"y": torch.arange(10).repeat_interleave(4)},
                  seed=0, progress=False, guidance=lambda denoise: ClassifierFreeGuidance(denoise, w=4.0),
                  **latent_decoding("cifar10_latent")).clamp(-1, 1)
show_grid(torch.cat([colour.view(10, 4, 3, 32, 32), real], dim=1), row_labels=list(cifar_classes),
          col_labels=["sample"] * 4 + ["real"] * 4, row_title="class", figsize=(7, 9),
          title="CIFAR-10: the shipped cifar10_latent (lesson 10), guidance w = 4 (left), real test images (right)")

# %% [markdown]
# **What the figure shows.** Every row has its class's colours and layout: a blue sky behind the airplanes, horses on
# grass, ships on water. The fine detail is missing, and the animals (birds, cats, dogs) are the least clear. On 5,000
# such samples the course's classifier names the asked-for class 89% of the time, about as often as for real test
# photos (88.6%). Lesson 10 builds the model and measures it.

# %% [markdown]
# ## Summary
# * One loop trains every model; only the profile's sizes change between a CI machine, a laptop and a GPU.
# * Sample from the EMA weights, and judge the difference by a number: the held-out loss of raw and EMA weights at the same step (section 1). A short run's samples may look alike either way.
# * Along the chain, $\hat x_0$ (the predicted noise subtracted) shows the digit long before $x_t$ does: coarse shape first, detail in the last steps.
# * Check for memorisation by comparing nearest-neighbour distances with those of held-out data.
# * Quality in numbers: FID, KID and class accuracy, always next to the real-data floor at the same $n$ (`python -m lesson_lib.evaluate`; `docs/metrics.md`).
#
# **Next:** lesson 5 steers these class-conditional models with guidance; lessons 6 and 7 sample them in far fewer steps (DDIM in depth, distillation).
