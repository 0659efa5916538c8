# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-course/ddpm-course/blob/main/notebooks/05_guidance.ipynb)
#
# # Lesson 5 — Guidance: a noisy classifier, classifier guidance and classifier-free guidance
#
# Lesson 4's model draws a digit of the class we ask for. *Guidance* makes it draw that class **more so**: samples
# that a judge recognises more often, at the price of variety. There are two published ways to do it, and this lesson
# runs both on one model, with the same seeds and the same yardsticks:
#
# * **classifier guidance** (Dhariwal & Nichol, 2021) adds the gradient of a separately trained *noisy* classifier;
# * **classifier-free guidance** (Ho & Salimans, 2021) needs no classifier: it extrapolates from the model's
#   unconditional prediction towards its conditional one.
#
# Both live in `lesson_lib/diffusion/guidance.py` as *wrappers of the denoiser*: a callable with the denoiser's
# signature `(x_t, t, y) -> Prediction`. The sampling loop of lessons 2–4 does not change.
#
# **Runtime.** The shipped models do all the work; the profile sets how much is computed live (`SIZE` below).
# `ci` profile: about 1 min on a quiet 2-core cloud CPU, 2 min when other jobs share its cores (the stored run: 109 s at a
# load of about 9; measured with `python benchmarks/lesson_runtimes.py --profile ci --lessons 05`). `cpu` profile: about 4 min on a quiet 2-core cloud CPU (estimate from the `ci` run's cell times: the sampling cell does 5 times the work, the accuracy cells 5 times the images). `gpu` profile:
# about a minute on an NVIDIA H200 or a free Colab T4 (estimate, not measured: about 36,000 image-evaluations of a
# 1.6M-parameter U-Net, seconds of GPU work, plus loading).
#
# **Study time.** About 1 h to read and run this lesson, then about 1.5 h for the exercise notebook (`exercises/05_guidance.ipynb`: a guided sampler and a w sweep of your own).

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import functools
import json

import matplotlib.pyplot as plt
import torch

from lesson_lib.course.colab import course_file
from lesson_lib.data.images import load_dataset, make_grid_image
from lesson_lib.diffusion.denoiser import Denoiser
from lesson_lib.diffusion.guidance import ClassifierFreeGuidance, ClassifierGuidance, scale_from_w, w_from_scale
from lesson_lib.diffusion.sampling import ddpm_sample
from lesson_lib.diffusion.oracles import GaussianMixture
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.evaluation.judges import accuracy_against_t, class_accuracy, load_classifier
from lesson_lib.evaluation.metrics import sample_quality_2d
from lesson_lib.pretrained import load_noisy_classifier, load_pretrained, model_card
from lesson_lib.sample import generate
from lesson_lib.training.profiles import current_profile

torch.manual_seed(0)
profile = current_profile()
# How much each section computes live: the ci profile (2 CPU cores) keeps the whole lesson under 3 minutes.
SIZE = {"ci": dict(columns=3, steps=10, n_accuracy=200),
        "cpu": dict(columns=6, steps=25, n_accuracy=1000),
        "gpu": dict(columns=8, steps=50, n_accuracy=5000)}[profile]
print("profile:", profile, SIZE)

# %% [markdown]
# ## 1. Bayes' rule on scores
#
# Bayes' rule, $p_t(x \mid y) = p_t(y \mid x)\, p_t(x) / p(y)$, becomes a **sum** once we take the log and the
# gradient in $x$ ($p(y)$ does not depend on $x$):
#
# $$\nabla_x \log p_t(x \mid y) = \nabla_x \log p_t(x) + \nabla_x \log p_t(y \mid x).$$
#
# A noise-predicting network is a score in disguise: $\epsilon_\theta(x_t, t) \approx -\sqrt{1-\bar\alpha_t}\,
# \nabla \log p_t(x_t)$. Multiplying the sum by $-\sqrt{1-\bar\alpha_t}$:
#
# $$\epsilon(x_t \mid y) = \epsilon(x_t) - \sqrt{1-\bar\alpha_t}\,\nabla_x \log p_t(y \mid x_t).$$
#
# **Guidance** multiplies the class term by a scale $s$; the sampler then follows (approximately) the score of
# $p_t(x)\,p_t(y \mid x)^s$, which for $s > 1$ is sharper than $p_t(x \mid y)$: regions where the class is
# *ambiguous* lose weight.
#
# "Approximately" hides more than the networks' errors. For $s \ne 1$ (and $s \ne 0$), the family
# $p_t(x)\,p_t(y \mid x)^s$ (normalised) is not what the forward process makes of any one distribution. Noising
# $p_0(x)\,p_0(y \mid x)^s$ does not give $p_t(x)\,p_t(y \mid x)^s$ at $t > 0$, because noising blurs a density (a
# Gaussian convolution) and blurring does not commute with raising to a power. So the guided $\tilde\epsilon$ is not the
# score of any diffused density, and a guided sampler does not sample $p_0(x)\,p_0(y \mid x)^s$ exactly, even with perfect networks. It samples *something*
# sharper than $p(x \mid y)$, which is what guidance is used for; what exactly, the sampler and its number of steps decide.
#
# **Classifier guidance.** Train a classifier $f_\phi(y \mid x_t, t)$ on noisy images and use its gradient
# (Dhariwal & Nichol's Algorithm 2, "score form", for DDIM and any step; `x0_hat` is derived again from the new
# $\tilde\epsilon$):
#
# $$\tilde\epsilon = \epsilon_\theta(x_t) - s\,\sqrt{1-\bar\alpha_t}\;\nabla_x \log f_\phi(y \mid x_t, t).$$
#
# Their Algorithm 1 shifts the mean of an ancestral step instead: $\tilde\mu = \mu + s\,\Sigma\,\nabla_x \log
# f_\phi(y \mid x_t, t)$. That changes the step, not the prediction, so it is a step in the library
# (`ClassifierGuidedStep`, given to `ddpm_sample(..., step=...)`), with $\Sigma$ the step's own variance.
#
# **Classifier-free guidance.** Bayes' rule once more: $\nabla \log p_t(y \mid x) = \nabla \log p_t(x \mid y) -
# \nabla \log p_t(x) = -\big(\epsilon(x, y) - \epsilon(x, \varnothing)\big) / \sqrt{1-\bar\alpha_t}$. The model
# of lesson 4 was trained with label dropout, so it predicts both $\epsilon(x, y)$ and $\epsilon(x, \varnothing)$
# (the *null class* $\varnothing$ means "no label"). Its **implicit classifier** replaces $f_\phi$, and guiding
# the conditional model with weight $w$ gives
#
# $$\tilde\epsilon = \epsilon(x_t, y) + w\big(\epsilon(x_t, y) - \epsilon(x_t, \varnothing)\big)
#   = (1 + w)\,\epsilon(x_t, y) - w\,\epsilon(x_t, \varnothing).$$
#
# No classifier is trained, and no gradient is taken: two network evaluations, batched into one call.
#
# **The training side** (lesson 3, section 5; lesson 4's exercise). Label dropout replaces each training label by $\varnothing$
# with probability $p_\text{uncond}$; the shipped `mnist_cond` used $p_\text{uncond} = 0.1$ (its card's `class_dropout`,
# printed below). The choice is a split of one network's training between two tasks. Ho & Salimans tried 0.1, 0.2 and 0.5
# on ImageNet 64x64: 0.1 and 0.2 did about equally well and 0.5 was worse. The unconditional prediction only has to
# point the difference $\epsilon(x, y) - \epsilon(x, \varnothing)$ the right way; by their result a tenth of the training
# is enough for that, while the conditional model, which the guided sample is mostly made of, keeps nine tenths.
#
# | convention | formula | conditional model | unconditional model | used by |
# |---|---|---|---|---|
# | weight $w$ | $(1+w)\,\epsilon_c - w\,\epsilon_u$ | $w = 0$ | $w = -1$ | the paper (Ho & Salimans) |
# | scale $s = 1 + w$ | $\epsilon_u + s\,(\epsilon_c - \epsilon_u)$ | $s = 1$ | $s = 0$ | diffusers, Imagen, DiT |
#
# Read the second row against classifier guidance: CFG with scale $s$ **is** classifier guidance with scale $s$ on
# the unconditional model, with the model's own implicit classifier. `scale_from_w` and `w_from_scale` convert.

# %%
print("w = 0 is s =", scale_from_w(0.0), "(the conditional model); s = 0 is w =", w_from_scale(0.0),
      "(the unconditional model)")
print("label dropout of the shipped mnist_cond, p_uncond =", model_card("mnist_cond")["train_config"]["class_dropout"])

# %% [markdown]
# ## 2. The 2-D picture, where everything is exact
#
# Three classes of 2-D points, $x_0 \mid y = k \sim \mathcal N(\mu_k, \sigma^2 I)$, overlapping a little. Under
# noising every density stays Gaussian, $p_t(x \mid y = k) = \mathcal N(\sqrt{\bar\alpha_t}\mu_k, v_t I)$ with
# $v_t = \bar\alpha_t\sigma^2 + 1 - \bar\alpha_t$, so the exact $\epsilon(x_t)$, $\epsilon(x_t \mid y)$ and
# classifier $p_t(y \mid x_t)$ can be written down (`lesson_lib/diffusion/oracles.py:GaussianMixture`, about 40 lines;
# the tests check the library against the same oracle). No training: we run guidance on the truth.

# %%
MEANS = torch.tensor([[1.0, 0.0], [-0.5, 0.866], [-0.5, -0.866]], dtype=torch.float64)
SIGMA, K = 0.6, 3


class ExactClassifier:
    """p_t(y | x_t) of the mixture, as log-probabilities: what a perfect noisy classifier would answer."""

    num_classes = K

    def __init__(self, mixture):
        self.mixture = mixture

    def __call__(self, x, t):
        return self.mixture.log_posterior(x, t)


toy_schedule = NoiseSchedule.from_name("linear", 200)
mixture = GaussianMixture(toy_schedule, MEANS, SIGMA)   # the exact eps as a model whose null class is K
exact_classifier = ExactClassifier(mixture)

n_toy = 600
y_toy = torch.arange(K).repeat_interleave(n_toy)
x_T = torch.randn(K * n_toy, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
toy = {}
for s in (0.0, 1.0, 4.0):
    toy[s] = ddpm_sample(mixture, toy_schedule, x_T=x_T, model_kwargs={"y": y_toy}, progress=False,
                         generator=torch.Generator().manual_seed(1),
                         guidance=lambda d: ClassifierGuidance(d, exact_classifier, s))

# %%
def class_data(k, n, seed):
    return MEANS[k] + SIGMA * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), sharex=True, sharey=True)
data = torch.cat([class_data(k, n_toy, 100 + k) for k in range(K)])
panels = [("data: x_0 | y", data), ("scale 0 (unconditional)", toy[0.0]),
          ("classifier guidance, scale 1", toy[1.0]), ("classifier guidance, scale 4", toy[4.0])]
for ax, (title, points) in zip(axes, panels):
    for k in range(K):
        p = points[y_toy == k].numpy()
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.4, color=f"C{k}", label=f"y = {k}")
    ax.set_title(title); ax.set_xlim(-3, 3); ax.set_ylim(-3, 3); ax.set_aspect("equal")
axes[0].legend(markerscale=5, loc="lower left", fontsize=8)
plt.suptitle("2-D mixture, exact model: colour = the class asked for")
plt.tight_layout(); plt.show()

# %% [markdown]
# At scale 0 the class we ask for is ignored (the colours are mixed); at scale 1 guidance on the exact unconditional
# model reproduces each class exactly — Bayes' rule, nothing more; at scale 4 each class moves away from the others
# and tightens. The checks below are the ones `tests/test_guidance.py` makes to float64 precision.

# %%
quality = [sample_quality_2d(toy[1.0][y_toy == k], functools.partial(class_data, k))["ratio"] for k in range(K)]
spread = {s: torch.stack([toy[s][y_toy == k].std(0).mean() for k in range(K)]).mean().item() for s in toy}
print("scale 1 reproduces every class (sliced Wasserstein within 1.5x of the data floor):", all(q < 1.5 for q in quality))
print("the spread within a class shrinks from scale 1 to scale 4:", spread[4.0] < spread[1.0])
x, t = x_T[:50], torch.randint(0, 200, (50,), generator=torch.Generator().manual_seed(2))
cfg = ClassifierFreeGuidance(Denoiser(mixture, toy_schedule), scale=4.0)(x, t, y=y_toy[:50]).eps
cg = ClassifierGuidance(Denoiser(mixture, toy_schedule), exact_classifier, 4.0)(x, t, y=y_toy[:50]).eps
print("CFG with s = 4 equals classifier guidance with s = 4 on the unconditional model:",
      torch.allclose(cfg, cg, atol=1e-12))

# %% [markdown]
# ## 3. The noisy classifier, and why it must be noisy
#
# On images there is no exact classifier: we train one. The sampler asks it about $x_t$ at every step, and
# $x_t$ is mostly noise for most of the chain, so it is trained on exactly that: cross-entropy on
# $x_t = \texttt{q\_sample}(x_0, t)$ with $t$ uniform (`NoisyCrossEntropy`, through the course's `Trainer`), and it
# is told $t$ through the U-Net's time embedding (`lesson_lib/models/noisy_classifier.py`: the U-Net's down path
# and a linear head). The course ships one; its card says how it was trained.

# %%
card = model_card("mnist_noisy_classifier")
print(f"{card['architecture']}, {card['parameters']:,} parameters, {card['steps']} steps of batch {card['batch_size']} "
      f"({card['examples_seen']:,} noisy images) in {card['wall_time_s'] / 60:.0f} min on a CPU")
print("accuracy on noisy test images, from the card:")
curve = card["evaluation"]["accuracy_against_t"]
for t, a in zip(curve["timesteps"], curve["accuracy"]):
    print(f"  t = {t:>3}: {a:.1%}")

# %% [markdown]
# Beside it we put the course's **clean** classifier (lesson 4's judge, trained on clean digits only) and ask both
# about the same noisy test images.

# %%
# NBVAL_IGNORE_OUTPUT
# (accuracies on a small slice of the test set vary in the last digit; the verdicts below are checked)
guide, guide_schedule = load_noisy_classifier("mnist_noisy_classifier")
judge = load_classifier("mnist")
test_x, test_y, _ = load_dataset("mnist", "test")
ts = [0, 100, 200, 300, 400, 500, 600, 800, 999]
n_acc = SIZE["n_accuracy"]
noisy_acc = accuracy_against_t(guide, guide_schedule, test_x[:n_acc], test_y[:n_acc], ts)
clean_acc = accuracy_against_t(judge, guide_schedule, test_x[:n_acc], test_y[:n_acc], ts, uses_t=False)
plt.figure(figsize=(6, 3.2))
plt.plot(ts, noisy_acc, "o-", label="noisy classifier f(y | x_t, t)")
plt.plot(ts, clean_acc, "s--", label="clean classifier f(y | x_0)")
plt.axhline(0.1, color="gray", lw=0.8, ls=":", label="chance")
plt.xlabel("timestep t"); plt.ylabel("accuracy on q_sample(x_0, t)"); plt.ylim(0, 1.02); plt.legend(fontsize=8)
plt.title(f"MNIST test images, n = {n_acc}"); plt.show()

# %%
mid = ts.index(400)
print("the noisy classifier is right at small t (>= 95% at t = 0):", noisy_acc[0] >= 0.95)
print("its accuracy falls with t, to near chance at t = 999:", noisy_acc[-1] < 0.3 and noisy_acc[0] > noisy_acc[mid] > noisy_acc[-1])
print("at t = 400 the clean classifier is far worse than the noisy one:", clean_acc[mid] + 0.2 < noisy_acc[mid])

# %% [markdown]
# The clean classifier knows digits, but not digits under noise. Its curve does not drift down to chance: it collapses
# between $t = 100$ and $t = 200$ to *below* chance, and stays there. Which digits does it answer? We count its answers on
# the same noisy images (the same $\varepsilon$ as the figure):

# %%
# NBVAL_IGNORE_OUTPUT
# (an image near a class boundary could be called differently on another CPU; the verdict below is checked)
from lesson_lib.diffusion.forward import q_sample

eps_acc = torch.randn(test_x[:n_acc].shape, generator=torch.Generator().manual_seed(0))    # accuracy_against_t's noise
answers = {}
with torch.no_grad():
    for t in ts:
        x_t = q_sample(guide_schedule, test_x[:n_acc], torch.full((n_acc,), t), eps_acc)
        answers[t] = torch.bincount(judge(x_t).argmax(dim=1), minlength=10)
for t, counts in answers.items():
    k = counts.argmax().item()
    print(f"t = {t:>3}: clean accuracy {clean_acc[ts.index(t)]:6.1%}; its most frequent answer is {k}, "
          f"for {counts[k] / n_acc:4.0%} of the images")
print(f"8s among these {n_acc} test digits: {(test_y[:n_acc] == 8).float().mean():.1%}")

# %%
print("from t = 300 on, the clean classifier calls every noisy image an 8:",
      all(answers[t][8].item() == n_acc for t in ts if t >= 300))

# %% [markdown]
# It is not answering at random. At $t = 100$ its answers are still spread over the digits (80.5% right), but at $t = 200$
# it calls 95% of the images an 8, and from $t = 300$ on every one of them: its accuracy there, 5.0%, is just the share of
# 8s in this slice, below the 10% of chance. To this classifier, heavy noise looks like an 8. Its answer over four fifths
# of the chain ($t \ge 200$) is the same whatever the digit, so as a guide it could not tell the sampler which class to
# move towards there. The noisy one degrades gracefully towards chance, which is what it should do — at $t = 999$
# almost nothing of $x_0$ is left.
#
# ## 4. The shipped MNIST model, guided both ways, with the same seeds
#
# The course's `mnist_cond` (lesson 4) has 10 classes and a null class. Every grid below starts from the **same**
# noise $x_T$ (one row per class), and uses DDIM with `x0_hat` clipped to $[-1, 1]$ *after* guidance:
#
# * classifier guidance at scale $s$ on the model's **unconditional** output (its null class), with the noisy
#   classifier as the guide; $s = 0$ is the unconditional model;
# * classifier-free guidance at weight $w$; $w = 0$ is the plain conditional model.

# %%
# NBVAL_IGNORE_OUTPUT
# (samples vary between CPUs in the last bits; the checks below compare accuracies, not pixels)
model, schedule = load_pretrained("mnist_cond")
columns, steps = SIZE["columns"], SIZE["steps"]
labels = torch.arange(10).repeat_interleave(columns)
settings = {
    "conditional, no guidance (w = 0)": None,
    "unconditional (classifier s = 0)": lambda d: ClassifierGuidance(d, guide, 0.0),
    "classifier guidance s = 2": lambda d: ClassifierGuidance(d, guide, 2.0, dataset="mnist"),
    "classifier guidance s = 8": lambda d: ClassifierGuidance(d, guide, 8.0, dataset="mnist"),
    "classifier-free w = 1": lambda d: ClassifierFreeGuidance(d, 1.0),
    "classifier-free w = 4": lambda d: ClassifierFreeGuidance(d, 4.0),
}
samples = {name: generate(model, schedule, len(labels), "ddim", steps, {"y": labels}, seed=0, progress=False,
                          guidance=guidance) for name, guidance in settings.items()}

# %%
fig, axes = plt.subplots(2, 3, figsize=(12, 9))
for ax, (name, images) in zip(axes.flat, samples.items()):
    ax.imshow(make_grid_image(images, nrow=columns))          # one row per class
    ax.set_title(name, fontsize=10); ax.set_xticks([])
    ax.set_yticks([(28 + 2) * k + 16 for k in range(10)]); ax.set_yticklabels([f"y = {k}" for k in range(10)], fontsize=7)
plt.suptitle(f"mnist_cond, DDIM {steps} steps, same x_T in every panel (one row per class)")
plt.tight_layout(); plt.show()

# %% [markdown]
# A live slice of the numbers: the clean judge (which did not guide) reads the class of these few samples.

# %%
# NBVAL_IGNORE_OUTPUT
# (a few samples per class: the figures are noisy; the verdicts below are checked)
live = {name: class_accuracy(images, labels, classifier=judge)["accuracy"] for name, images in samples.items()}
for name, acc in live.items():
    print(f"{name:<36} class accuracy {acc:.0%}  (n = {len(labels)})")

# %%
print("the unconditional model ignores the label (accuracy below 40%):", live["unconditional (classifier s = 0)"] < 0.4)
print("classifier guidance at s = 8 makes the label stick (accuracy above 70%):", live["classifier guidance s = 8"] > 0.7)
print("classifier-free guidance at w = 4 is at least as accurate as the conditional model:",
      live["classifier-free w = 4"] >= live["conditional, no guidance (w = 0)"])

# %% [markdown]
# ## 5. The headline figure: accuracy, FID and diversity against guidance strength
#
# A few dozen samples say little; `benchmarks/guidance.py` measured the sweep on more, and stored it in the guide's
# model card. Both methods share one x-axis, the scale $s$ relative to the unconditional model: classifier guidance
# at scale $s$, and classifier-free guidance at $s = 1 + w$ (so the conditional model sits at $s = 1$).
#
# * **class accuracy**, judged by the course's clean classifier (not the guide: guidance is partly an adversarial
#   attack on the classifier that guides, so that one would flatter it);
# * **FID** on the course classifier's features, with the real-data floor (train against test images at the same $n$);
# * **diversity**: the mean feature distance between two samples of the same class, beside that of real test images.

# %%
bench = card["guidance_benchmark"]
rows = bench["rows"]
print(f"n = {bench['n']} per row ({bench['n'] // 10} per class), {bench['sampler']}, seed {bench['seed']}, "
      f"{bench['device']} ({bench['threads']} torch thread{'s' if bench['threads'] > 1 else ''}); FID floor {bench['fid_floor']:.2f}, KID floor {bench['kid_floor']:.4f}, "
      f"real diversity {bench['real_diversity']:.2f}")
print(f"{'method':<46} {'strength':>8} {'FID':>7} {'KID':>8} {'accuracy':>8} {'diversity':>9}")
for r in rows:
    print(f"{r['method']:<46} {r['strength']:>8.2f} {r['fid']:>7.2f} {r['kid']:>8.4f} {r['accuracy']:>8.3f} {r['diversity']:>9.2f}")

# %% [markdown]
# **Guiding the conditional model (ADM-G).** Dhariwal & Nichol's best ImageNet results guide the *conditional* model with
# the classifier, $\tilde\epsilon = \epsilon_\theta(x_t, y) - s\sqrt{1-\bar\alpha_t}\,\nabla_x \log f_\phi(y \mid x_t, t)$: in the
# library `ClassifierGuidance(..., condition_model=True)`. By Bayes' rule the conditional model already holds the class
# term once, so on the shared axis ADM-G at scale $s$ sits at $1 + s$, like CFG at $1 + w$: the same extra push, from the
# separate classifier instead of the model's own. The sweep measured it with the same settings (the same seed, $x_T$
# and labels) and stored its rows with the others, in the table above; the figure draws them beside the two methods:

# %%
cfg_rows = [r for r in rows if r["method"].startswith("classifier-free")]
cg_rows = [r for r in rows if r["method"] == "classifier, s, unconditional model"]
adm_g_rows = [r for r in rows if r["method"] == "classifier, s, conditional model (ADM-G)"]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharex=True)
for key, ax, ylabel in zip(("accuracy", "fid", "diversity"), axes, ("class accuracy (clean judge)", "FID (course features)", "within-class feature distance")):
    ax.plot([scale_from_w(r["strength"]) for r in cfg_rows], [r[key] for r in cfg_rows], "o-", label="classifier-free, s = 1 + w")
    ax.plot([r["strength"] for r in cg_rows], [r[key] for r in cg_rows], "s-", label="classifier guidance of the unconditional model, s")
    ax.plot([1 + r["strength"] for r in adm_g_rows], [r[key] for r in adm_g_rows], "^-",
            label="ADM-G: classifier guidance of the conditional model, 1 + s")
    ax.set_xlabel("guidance scale s (relative to the unconditional model)"); ax.set_ylabel(ylabel)
axes[1].axhline(bench["fid_floor"], color="gray", ls=":", label=f"real-data floor (n = {bench['n']})")
axes[2].axhline(bench["real_diversity"], color="gray", ls=":", label="real test images")
axes[0].legend(fontsize=7, loc="lower right")
for ax in axes[1:]:
    ax.legend(handles=ax.lines[-1:], fontsize=7, loc="upper right")       # the grey reference line
plt.suptitle(f"MNIST, mnist_cond, n = {bench['n']} per point, same seeds; stored by benchmarks/guidance.py")
plt.tight_layout(); plt.show()

# %% [markdown]
# At $n = 200$ the floor is 1.18 and moves by about 0.2 between draws, so most rows above cannot be told apart, nor
# from the data. The same script measured every row again at $n = 5{,}000$, where the floor is 0.049
# (`benchmarks/guidance.py --large`; docs/benchmarks.md §10), with FID extrapolated to infinite $n$ (FID$_\infty$) beside FID:

# %%
large = json.loads(course_file("docs/guidance_table_n5000.json").read_text())
print(f"n = {large['n']} per row, {large['sampler']}, seed {large['seed']}; real-data floor at n = {large['n']}: "
      f"FID {large['fid_floor']:.3f}, FID_inf {large['floor']['fid_infinity']:.3f}; real digits' within-class spread "
      f"{large['real_diversity']:.2f}")
print(f"{'method':<46} {'strength':>8} {'FID':>7} {'x floor':>8} {'FID_inf':>8} {'accuracy':>9} {'diversity':>9}")
for r in large["rows"]:
    print(f"{r['method']:<46} {r['strength']:>8.2f} {r['fid']:>7.3f} {r['fid'] / large['fid_floor']:>7.1f}x "
          f"{r['fid_infinity']:>8.3f} {r['accuracy']:>9.2%} {r['diversity']:>9.2f}")

# %% [markdown]
# **What the numbers show** (n = 200 per point, so read FID differences of a few tenths as noise: the floor
# itself is about 1.2 at this n):
#
# * **Accuracy rises and diversity falls with the scale, for both methods.** Classifier guidance takes the
#   unconditional model from chance (11%) to about 96% at $s = 4$; classifier-free guidance starts from the
#   conditional model's 98% and reaches 100% at $w = 0.5$. (At $s = 0$ the label is ignored, so the
#   "within-class" spread there is that of all digits together.)
# * **The unguided conditional model is at the floor of $n = 200$ (1.16 against 1.18), but not at $n = 5{,}000$.** There it
#   scores 0.148, 3.0× the floor of 0.049, with FID$_\infty$ 0.073 against the floor's 0.001: about where lesson 6's DDIM
#   on 20 steps stands (0.160). At $n = 2{,}000$ it had looked level with the floor (0.174 against 0.194; the same
#   samples' random subsets of 2,000 average 0.221 against the floor's 0.154). MNIST digits are easy and this model is
#   good, but not indistinguishable from the data.
# * **Guidance buys accuracy with FID and narrows each class.** At $n = 5{,}000$ CFG at $w = 0.5$ already scores 0.182
#   (3.7× the floor) with 99.8% accuracy, against 0.148 and 97.1% unguided; $w = 1$, 2 and 4 score 0.323, 0.539 and 0.783
#   (6.6×, 11.0× and 16.0×) with 99.98% to 100%. The within-class spread falls from 2.06 to 1.85, 1.69 and 1.60, against
#   the real digits' 2.37: fewer kinds of each digit. Guidance cannot improve FID here: the conditional model is already
#   the closest to the data.
# * **Classifier guidance at scale 1 on the unconditional model makes FID worse**: 1.646 against 1.464 unguided at
#   $n = 5{,}000$ (34× and 30× the floor; 2.9 against 2.5 at $n = 200$), as Dhariwal & Nichol found on ImageNet: a
#   learned classifier's gradient at scale 1 is not the exact Bayes term of section 2, and it takes a larger scale to
#   approach the conditional model's accuracy. FID then falls to 0.876 at $s = 2$ (84.0%), 0.502 at $s = 4$ (94.0%) and
#   0.425 at $s = 8$ (97.6%): at $s = 8$ the guided unconditional model has the conditional model's accuracy and spread
#   (2.67 against 2.68) at nearly three times its FID. At $s = 2$ and 4 its within-class spread (3.86 and 3.09) lies
#   *above* the real digits' 2.37, because the samples drawn into another class widen the class they were asked for.
# * The x-axis is shared, but the two methods are not the same at the same $s$: CFG's "classifier" is the model
#   itself, classifier guidance's is a separate 0.24M-parameter network.
# * **Guiding the conditional model (ADM-G) and CFG lie on one trade-off; neither dominates.** At $n = 200$ ADM-G's FID
#   stays within the noise of the conditional model's at every scale (1.09 to 1.19 against 1.16), and it reaches 100%
#   accuracy from $s = 2$, where guiding the unconditional model gets 95.5% at $s = 4$ (FID 1.47). At $n = 5{,}000$,
#   ranked by FID: ADM-G $s = 1$ 0.150 (99.58%), CFG $w = 0.5$ 0.182 (99.78%), ADM-G $s = 2$ 0.208 (99.78%), ADM-G
#   $s = 4$ 0.285 (99.90%), CFG $w = 1$ 0.323 (99.98%), ADM-G $s = 8$ 0.370 (99.90%), CFG $w = 2$ 0.539 (100%).
#   At the same accuracy, 99.78%, CFG is the cheaper push (0.182 against 0.208 for ADM-G at $s = 2$), without a second
#   network. ADM-G at $s = 1$ takes accuracy from 97.1% to 99.6% at the unguided FID (0.150 against 0.148; FID$_\infty$
#   0.068 against 0.073), a point no CFG row reaches; past $s = 4$ it gains no accuracy (99.90% at 4 and 8) while its FID
#   still rises. Read the accuracies with their size in mind: at $n = 5{,}000$, 99.78% is 11 wrong digits and 99.90% is 5.
# * **Negative KIDs are not a bug.** KID is an *unbiased* estimate of a squared distance (the MMD² between the feature
#   distributions, `docs/metrics.md`): its mean over repeated draws is the true value, which is $\ge 0$, but one estimate
#   scatters around it and goes below 0 when the true value is smaller than its noise. The floor itself, real
#   against real, came out negative at this $n$. Read a KID against the floor, like FID, and not by its sign.

# %%
acc_cfg = [r["accuracy"] for r in cfg_rows]
acc_cg = [r["accuracy"] for r in cg_rows]
div_cfg = [r["diversity"] for r in cfg_rows]
div_cg = [r["diversity"] for r in cg_rows]
print("accuracy rises with the scale, both methods:", acc_cfg[-1] > acc_cfg[0] and acc_cg[-1] > acc_cg[0])
print("diversity falls with the scale, both methods:", div_cfg[-1] < div_cfg[0] and div_cg[-1] < div_cg[0])
print("the unguided conditional model's FID is within 3x of the real-data floor:", cfg_rows[0]["fid"] < 3 * bench["fid_floor"])

# %% [markdown]
# ### Where to take the gradient
#
# The derivation behind the mean form expands $\log f_\phi(y \mid x)$ around the step's mean $\mu$, so the gradient
# belongs at $\mu$; the reference code takes it at $x_t$. `ClassifierGuidedStep(classifier, s, y, gradient_at=...)`
# offers both; the default is `"x_t"`, where the classifier sees exactly what it was trained on (a sample of
# $q(x_t \mid x_0)$ at level $t$), and where the score form has to take it anyway. The benchmark ran both with
# paired noise, at $n = 200$ and again at $n = 5{,}000$:

# %%
for n, table in ((bench["n"], rows), (large["n"], large["rows"])):
    for r in table:
        if "mean form" in r["method"]:
            print(f"n = {n:>4}  {r['method']:<46} s = {r['strength']:.0f}: accuracy {r['accuracy']:.1%}, "
                  f"FID {r['fid']:.3f}, diversity {r['diversity']:.2f}")

# %% [markdown]
# At $n = 200$ the two cannot be told apart. At $n = 5{,}000$ the gradient at the mean, the derivation's choice, draws
# 1.1 points more of the digits asked for (97.0% against 95.9%: 57 more of 5,000 samples, from the same noise), with FID
# 1.331 against 1.361, a gap under twice the spread between draws of the reference images (about 0.02). Both rows are
# far from the data because of their sampler, not their guide: strided DDPM with $\sigma^2 = \beta_{t\to s}$ on 25 steps
# is itself far off (lesson 6), and the same guide on DDIM-25 at $s = 4$ scores 0.502.

# %% [markdown]
# ## Summary
#
# * Bayes' rule on scores: $\nabla \log p_t(x \mid y) = \nabla \log p_t(x) + \nabla \log p_t(y \mid x)$. Guidance
#   scales the second term.
# * Classifier guidance: $\tilde\epsilon = \epsilon - s\sqrt{1-\bar\alpha_t}\,\nabla \log f_\phi(y \mid x_t, t)$, with a
#   classifier trained on noisy images — a clean one is blind for most of the chain.
# * Classifier-free guidance: $\tilde\epsilon = (1+w)\,\epsilon(x, y) - w\,\epsilon(x, \varnothing)$, one batched call,
#   no classifier; $s = 1 + w$ in the libraries' convention. It is classifier guidance with the model's implicit
#   classifier.
# * Classifier guidance of the conditional model (ADM-G, `condition_model=True`) adds the classifier's push to a model that
#   already knows the class: on MNIST at $s = 1$ it raises accuracy to 99.6% at the unguided model's FID; at larger
#   scales it trades FID for accuracy on about the same curve as CFG.
# * Both methods are wrappers of the denoiser (`lesson_lib/diffusion/guidance.py`); the sampling loop never changes.
# * Guidance buys class fidelity with diversity. Judge it with a network that did not guide, and read FID next to its
#   floor.
#
# **Exercises** (`exercises/05_guidance.ipynb`): the CFG combination, a classifier-guided DDIM sampler for any model and
# classifier, and a w sweep on the exact mixture. **Next:** lesson 6 samples in far fewer steps (DDIM in depth), lesson 7 distils the sampler itself.
