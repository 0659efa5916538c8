"""Checks for lesson 5, guidance (solutions/05_guidance.ipynb).

Everything runs on exact models: a class-conditional Gaussian mixture whose means, spread and noise
schedule the check draws (:class:`lesson_lib.diffusion.oracles.GaussianMixture`), so that its eps,
its noisy classifier p_t(y | x_t) and the class of a sample are known exactly.

Why one module: these are the checks of one exercise notebook; the grader loads a lesson's checks
from one module, and its parts share the drawn mixtures and the reference samplers.

``cfg_eps`` (the warm-up) is compared with :func:`lesson_lib.diffusion.guidance.cfg_eps` (Ho &
Salimans, 2021) for weights that include w = 0 and w = -1.

``guided_ddim_sample`` is a whole classifier-guided sampler: DDIM with eta = 0 on a timestep list the
check draws, guided in the score form (Dhariwal & Nichol, 2021, Algorithm 2) by the gradient of any
differentiable classifier's log-softmax. The student's code gets the model and the classifier only
as functions. At scale 0 it must reproduce the unguided DDIM sampler of the library, at scales 1 and
a drawn one the library's :class:`~lesson_lib.diffusion.guidance.ClassifierGuidance` sampler, on
2-D points and on image-shaped tensors; the classifier's logits carry an x-dependent offset common to
all classes, which the log-softmax removes and a gradient of the raw logit does not. A third check
measures what guidance is for: from the same x_T, the exact log p(y | x_0) of the samples must rise
from scale 0 to 1 to 3.

``cfg_sweep`` is a small experiment on a drawn mixture whose classes overlap: classifier-free
guidance at several w in [0, 1] from the same x_T, the accuracy and the within-class spread of the
samples at each w, and the smallest w whose accuracy reaches a target (one of the measured accuracies,
drawn, so that the answer changes from run to run; and a target above them all, where it is None).
The measurements are compared with the library's
:class:`~lesson_lib.diffusion.guidance.ClassifierFreeGuidance` sampler, and the search is judged on the
accuracies of that sampler (on the student's own where they agree with them to a sample, since a sample
on a class boundary may fall either way). Total: 10 points.
"""

import math

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import as_number, expect_close, expect_finite, expect_tensor, field, pairs
from lesson_lib.course.protocol import type_name

# The worker builds the exact models from the case (the exercise receives them as functions); the
# sampler's reference step is taken away, the guidance module and the sampling loop are not loaded.
WORKER_MODULES = ("lesson_lib.diffusion.oracles",)
HIDDEN = ("lesson_lib.diffusion.steps.ddim_step", "lesson_lib.diffusion.steps.ddim_sigma")

CFG_HINT = ("eps' = (1 + w) * eps_cond - w * eps_uncond, elementwise, for any number w (w may be 0, negative "
            "or a float; return a tensor shaped like eps_cond).")
DDIM_HINT = ("Each step: eps = eps_model(x, t) with t a long tensor of shape (B,); x0_hat = (x - sqrt(1 - ab_t) eps) "
             "/ sqrt(ab_t); x = sqrt(ab_s) x0_hat + sqrt(1 - ab_s) eps, where ab_t = alpha_bars[t], ab_s = "
             "alpha_bars[s] for the next timestep s of the list and 1 after the last one (the data).")
GUIDED_HINT = ("The guidance term is the gradient in x of sum_i log_softmax(classifier(x, t))[i, y_i], taken at the "
               "current x (x.detach().requires_grad_() under torch.enable_grad(), then torch.autograd.grad): the "
               "classifier returns logits, not log-probabilities. Then eps' = eps - scale sqrt(1 - ab_t) grad, and "
               "x0_hat and the step both use eps'.")
RAISE_HINT = ("Guidance must move each sample towards the class asked for: eps' = eps - scale sqrt(1 - ab_t) "
              "grad log p(y | x); check the sign, and that the scale multiplies the gradient.")
SWEEP_HINT = ("For each w, run DDIM (eta = 0) from the same x_T on the list with eps' = (1 + w) eps_model(x, t, y) "
              "- w eps_model(x, t, null); the accuracy is the fraction of samples whose judge(x_0).argmax(1) equals y.")
SPREAD_HINT = ("spread = the mean over all samples of ||x_0 - m_y||^2 (summed over coordinates), where m_k is the "
               "mean of the samples asked for class k at that w.")
SMALLEST_HINT = ("the smallest w in weights (the list is not sorted) whose accuracy is at least target (an accuracy "
                 "equal to the target reaches it); None when no w reaches it.")

SCALES = (0.0, 1.0, 3.0)   # the scales of the check that guidance raises the class probability


def _random_betas():
    """A schedule of T from 50 to 300 steps between drawn ends, reaching alpha-bar_T < 0.01."""
    T = int(torch.randint(50, 301, ()))
    low = float(10 ** (-4 + torch.rand(())))
    high = float(20 / T * (1 + torch.rand(())))
    return torch.linspace(low, min(high, 0.5), T, dtype=torch.float64)


def _timesteps(T, S):
    """S distinct code timesteps, descending, starting at T - 1 (a list the check draws)."""
    rest = (torch.randperm(T - 1)[:S - 1] if S > 1 else torch.zeros(0, dtype=torch.long)).sort(descending=True).values
    return [T - 1] + rest.tolist()


def _mixture_params(K, D):
    """K class means in D dimensions, about 1 from the origin, and a spread at which the classes overlap."""
    if D == 2:
        angle = 2 * math.pi * (torch.arange(K, dtype=torch.float64) / K + torch.rand((), dtype=torch.float64))
        means = (0.8 + 0.4 * torch.rand(K, 1, dtype=torch.float64)) * torch.stack([angle.cos(), angle.sin()], 1)
    else:
        means = torch.randn(K, D, dtype=torch.float64)
    return means, float(0.5 + 0.3 * torch.rand(()))


def _mixture(case):
    from lesson_lib.diffusion.oracles import GaussianMixture
    from lesson_lib.diffusion.schedules import NoiseSchedule
    return GaussianMixture(NoiseSchedule(case["betas"]), case["means"], case["std"])


class _Unconditional(torch.nn.Module):
    """The mixture's unconditional eps on tensors of any shape (B, ...): what the student's sampler gets."""

    prediction, image_size = "eps", None

    def __init__(self, mixture):
        super().__init__()
        self.mixture, self.num_classes, self.in_channels = mixture, mixture.num_classes, None

    def forward(self, x, t, y=None):
        return self.mixture(x.flatten(1), t).reshape(x.shape)


class _Classifier:
    """The mixture's exact noisy classifier as logits: log p_t(y | x_t) plus an offset that depends on x
    but not on the class (the log-softmax removes it; the gradient of a raw logit does not)."""

    def __init__(self, mixture, offset):
        self.mixture, self.offset, self.num_classes = mixture, offset, mixture.num_classes

    def __call__(self, x, t):
        flat = x.flatten(1)
        return self.mixture.log_posterior(flat, t) + self.offset * (flat ** 2).sum(1, keepdim=True)


def _reference_guided(case, x_T, y, scale):
    """The library's classifier-guided DDIM (eta = 0) sampler on the case's mixture."""
    from lesson_lib.diffusion.denoiser import Denoiser
    from lesson_lib.diffusion.guidance import ClassifierGuidance
    from lesson_lib.diffusion.sampling import sample
    from lesson_lib.diffusion.steps import ddim_step
    mixture = _mixture(case)
    denoise = ClassifierGuidance(Denoiser(_Unconditional(mixture), mixture.schedule),
                                 _Classifier(mixture, case["offset"]), scale)
    return sample(denoise, mixture.schedule, x_T, case["timesteps"], ddim_step, stochastic=False, cond={"y": y},
                  progress=False)


# --- the warm-up: cfg_eps -------------------------------------------------------------------

def _cfg_case():
    weights = [0.0, -1.0, 0.3, 4.0, float(torch.rand(()) * 8)]
    shapes = [(4, 2), (3, 1, 6, 6), (2, 3, 4, 4), (5, 2), (2, 1, 3, 3)]
    return {"examples": [{"eps_cond": torch.randn(shape), "eps_uncond": torch.randn(shape), "w": w}
                         for shape, w in zip(shapes, weights)]}


def _cfg_probe(ns, case):
    return [ns["cfg_eps"](e["eps_cond"].clone(), e["eps_uncond"].clone(), e["w"]) for e in case["examples"]]


@check(points=1, uses=["cfg_eps"], case=_cfg_case, probe=_cfg_probe)
def cfg_eps_is_the_papers_combination(case, answer):
    """cfg_eps is (1 + w) eps_cond - w eps_uncond, for w = 0, w = -1 and other weights."""
    from lesson_lib.diffusion import guidance
    for e, got in pairs(case["examples"], answer):
        expected = guidance.cfg_eps(e["eps_cond"], e["eps_uncond"], e["w"])
        expect_close(got, expected, f"cfg_eps with w = {e['w']:.3g}", rtol=1e-5, atol=1e-6, hint=CFG_HINT)


# --- the classifier-guided DDIM sampler -----------------------------------------------------

def _sampler_case(scales):
    """Two drawn mixtures: 2-D points, and image-shaped tensors (B, 1, 2, 2) of a 4-D mixture."""
    runs = []
    for shape in [(18, 2), (12, 1, 2, 2)]:
        D = math.prod(shape[1:])
        means, std = _mixture_params(3, D)
        betas = _random_betas()
        runs.append({"betas": betas, "means": means, "std": std, "offset": float(0.2 + torch.rand(())),
                     "timesteps": _timesteps(len(betas), int(torch.randint(5, 13, ()))),
                     "x_T": torch.randn(shape, dtype=torch.float64), "y": torch.randint(0, 3, (shape[0],)),
                     "scales": list(scales)})
    return {"runs": runs}


def _sampler_probe(ns, case):
    results = []
    for run in case["runs"]:
        mixture = _mixture(run)
        model, classifier = _Unconditional(mixture), _Classifier(mixture, run["offset"])
        alpha_bars = mixture.schedule.alpha_bars.clone()
        results.append([ns["guided_ddim_sample"](model, classifier, run["x_T"].clone(), run["y"].clone(),
                                                 list(run["timesteps"]), alpha_bars.clone(), scale)
                        for scale in run["scales"]])
    return results


def _judge_sampler(case, answer, hint):
    for run, got in pairs(case["runs"], answer):
        for scale, x0 in pairs(run["scales"], got):
            expected = _reference_guided(run, run["x_T"], run["y"], scale)
            expect_close(x0, expected, f"guided_ddim_sample at scale {scale:.3g} for x_T of shape "
                         f"{tuple(run['x_T'].shape)} ({len(run['timesteps'])} steps of a schedule of "
                         f"T = {len(run['betas'])})", rtol=1e-6, atol=1e-8, hint=hint)


@check(points=2, uses=["guided_ddim_sample"], case=lambda: _sampler_case([0.0]), probe=_sampler_probe)
def guided_sampler_at_scale_0_is_ddim(case, answer):
    """At scale 0, guided_ddim_sample is the unguided DDIM sampler (eta = 0) on the drawn list, points and images."""
    _judge_sampler(case, answer, DDIM_HINT)


@check(points=2, uses=["guided_ddim_sample"],
       case=lambda: _sampler_case([1.0, float(2 + 4 * torch.rand(()))]), probe=_sampler_probe)
def guided_sampler_follows_the_classifier(case, answer):
    """At scale 1 and a drawn scale, guided_ddim_sample is the library's classifier-guided DDIM (score form)."""
    _judge_sampler(case, answer, GUIDED_HINT)


def _raise_case():
    means, std = _mixture_params(3, 2)
    betas = _random_betas()
    return {"runs": [{"betas": betas, "means": means, "std": std, "offset": float(0.2 + torch.rand(())),
                      "timesteps": _timesteps(len(betas), int(torch.randint(8, 13, ()))),
                      "x_T": torch.randn(90, 2, dtype=torch.float64), "y": torch.arange(3).repeat_interleave(30),
                      "scales": list(SCALES)}]}


@check(points=1, uses=["guided_ddim_sample"], case=_raise_case, probe=_sampler_probe)
def guidance_raises_the_class_probability(case, answer):
    """From the same x_T, the exact log p(y | x_0) of the samples rises from scale 0 to 1 to 3."""
    (run, samples), = pairs(case["runs"], answer)
    mixture = _mixture(run)
    level = torch.full((len(run["y"]),), -1)           # t = -1: the data, alpha-bar = 1
    means = []
    for scale, x0 in pairs(run["scales"], samples):
        what = f"guided_ddim_sample at scale {scale:.3g}"
        expect_tensor(x0, what, shape=run["x_T"].shape)
        expect_finite(x0, what, RAISE_HINT)
        log_p = mixture.log_posterior(x0.double(), level)[torch.arange(len(run["y"])), run["y"]]
        means.append(log_p.mean().item())
    shown = ", ".join(f"{m:.3f} at scale {s:.3g}" for s, m in zip(run["scales"], means))
    if not all(b > a + 1e-6 for a, b in zip(means, means[1:])):
        raise AssertionError(f"the mean exact log p(y | x_0) of your samples is {shown}: it must rise with the "
                             f"scale. {RAISE_HINT}")


# --- the classifier-free sweep ----------------------------------------------------------------

def _reference_sweep(case):
    """Accuracy, spread and samples of the library's classifier-free guided DDIM at each w of the case."""
    from lesson_lib.diffusion.denoiser import Denoiser
    from lesson_lib.diffusion.guidance import ClassifierFreeGuidance
    from lesson_lib.diffusion.sampling import sample
    from lesson_lib.diffusion.steps import ddim_step
    mixture = _mixture(case)
    level = torch.full((len(case["y"]),), -1)
    accuracy, spread = [], []
    for w in case["weights"]:
        denoise = ClassifierFreeGuidance(Denoiser(mixture, mixture.schedule), w)
        x0 = sample(denoise, mixture.schedule, case["x_T"], case["timesteps"], ddim_step, stochastic=False,
                    cond={"y": case["y"]}, progress=False)
        accuracy.append((mixture.log_posterior(x0, level).argmax(1) == case["y"]).double().mean().item())
        centres = torch.stack([x0[case["y"] == k].mean(0) for k in range(mixture.num_classes)])
        spread.append(((x0 - centres[case["y"]]) ** 2).sum(1).mean().item())
    return accuracy, spread


def _smallest(weights, accuracy, target):
    reached = [w for w, a in zip(weights, accuracy) if a >= target]
    return min(reached) if reached else None


def _sweep_case():
    """A drawn mixture whose classes overlap (std 0.7 to 1.0), 15 to 30 steps, w = 0 and four drawn w in (0, 1]:
    redrawn until guidance changes the accuracy by three samples or more, so that a sweep that does not guide
    cannot match it; the target lies between two measured accuracies."""
    K = 3
    for _ in range(20):
        means, _ = _mixture_params(K, 2)
        std = float(0.7 + 0.3 * torch.rand(()))
        betas = _random_betas()
        weights = [0.0] + (0.02 + 0.98 * torch.rand(4, dtype=torch.float64)).tolist()
        weights = [weights[i] for i in torch.randperm(len(weights)).tolist()]
        case = {"betas": betas, "means": means, "std": std, "null_class": K, "weights": weights,
                "timesteps": _timesteps(len(betas), int(torch.randint(15, 31, ()))),
                "x_T": torch.randn(30 * K, 2, dtype=torch.float64), "y": torch.arange(K).repeat_interleave(30)}
        accuracy = _reference_sweep(case)[0]
        if max(accuracy) - accuracy[case["weights"].index(0.0)] >= 3 / len(case["y"]):
            break
    case["target"] = _target(case, accuracy)
    return case


def _target(case, accuracy):
    """A target that tells a right search from the usual wrong ones: the accuracy of a drawn w that is the
    first, in increasing w, to reach it (so "> target" finds another w), with a larger w reaching it too;
    the list is then reordered (the accuracy of a w does not depend on the order) so that the first w of
    the list that reaches the target is not the smallest."""
    weights = case["weights"]
    order = sorted(range(len(weights)), key=lambda i: weights[i])
    records = [j for j in range(len(order) - 1)
               if all(accuracy[order[k]] < accuracy[order[j]] for k in range(j))
               and any(accuracy[order[k]] >= accuracy[order[j]] for k in range(j + 1, len(order)))]
    later = [j for j in records if j > 0]
    choices = later or records or [0]
    target = accuracy[order[choices[int(torch.randint(0, len(choices), ()))]]]
    reaching = [i for i, a in enumerate(accuracy) if a >= target]
    smallest = min(reaching, key=lambda i: weights[i])
    if len(reaching) > 1 and reaching[0] == smallest:      # move the smallest behind the last that reaches
        last = reaching[-1]
        for values in (weights, accuracy):
            values[smallest], values[last] = values[last], values[smallest]
    return target


def _sweep_probe(ns, case):
    mixture = _mixture(case)

    def eps_model(x, t, y):
        return mixture(x, t, y)

    def judge(x):
        return mixture.log_posterior(x, torch.full((len(x),), -1))

    return ns["cfg_sweep"](eps_model, judge, case["x_T"].clone(), case["y"].clone(), case["null_class"],
                           list(case["timesteps"]), mixture.schedule.alpha_bars.clone(), list(case["weights"]),
                           case["target"])


def _search_probe(ns, case):
    """The sweep at the drawn target, and again at a target above every accuracy (the answer is then None)."""
    first = _sweep_probe(ns, case)
    return {"at_target": first, "above_all": _sweep_probe(ns, dict(case, target=1 + 1 / len(case["y"])))}


def _numbers(value, what, n):
    """A list of n finite numbers from a list, tuple or 1-D tensor."""
    if type(value) is torch.Tensor and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise AssertionError(f"{what} is {type_name(value)}, expected a list of {n} numbers, one per w")
    return [as_number(v, f"{what}[{i}]") for i, v in enumerate(value)]


def _sweep_described(case):
    return f"cfg_sweep for w in {[round(w, 3) for w in case['weights']]}"


@check(points=2, uses=["cfg_sweep"], case=_sweep_case, probe=_sweep_probe)
def sweep_measures_the_accuracy(case, answer):
    """cfg_sweep's accuracy at each w is that of the library's classifier-free guided DDIM on the mixture."""
    expected, _ = _reference_sweep(case)
    got = _numbers(field(answer, "accuracy"), f"{_sweep_described(case)}: 'accuracy'", len(expected))
    n = len(case["y"])
    for w, a, b in zip(case["weights"], got, expected):
        if not abs(a - b) <= 1.5 / n:
            raise AssertionError(f"{_sweep_described(case)}: the accuracy at w = {w:.3g} is {a:.4g}, expected "
                                 f"{b:.4g} ({n} samples). {SWEEP_HINT}")


@check(points=1, uses=["cfg_sweep"], case=_sweep_case, probe=_sweep_probe)
def sweep_measures_the_spread(case, answer):
    """cfg_sweep's within-class spread at each w is that of the library's sampler."""
    _, expected = _reference_sweep(case)
    got = _numbers(field(answer, "spread"), f"{_sweep_described(case)}: 'spread'", len(expected))
    expect_close(torch.tensor(got, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                 f"{_sweep_described(case)}: 'spread'", rtol=1e-4, atol=1e-8, hint=SPREAD_HINT + " " + SWEEP_HINT)


def _own_accuracy(answer, reference, n):
    """The accuracies the answer reports where they agree with the reference's to a sample (a sample on a
    class boundary may fall either way, and the search must then be judged on them), else the reference's."""
    try:
        got = _numbers(field(answer, "accuracy"), "accuracy", len(reference))
    except AssertionError:
        return reference
    return got if all(abs(a - b) <= 1.5 / n for a, b in zip(got, reference)) else reference


@check(points=1, uses=["cfg_sweep"], case=_sweep_case, probe=_search_probe)
def sweep_finds_the_smallest_w(case, answer):
    """cfg_sweep's smallest_w is the smallest w whose accuracy reaches the drawn target, None when none does."""
    reference, _ = _reference_sweep(case)
    for target, got_all in ((case["target"], field(answer, "at_target")),
                            (1 + 1 / len(case["y"]), field(answer, "above_all"))):
        accuracy = _own_accuracy(got_all, reference, len(case["y"]))
        expected = _smallest(case["weights"], accuracy, target)
        got = field(got_all, "smallest_w")
        shown = ", ".join(f"{a:.4g} at w = {w:.3g}" for w, a in zip(case["weights"], accuracy))
        what = (f"{_sweep_described(case)}: 'smallest_w' for the target accuracy {target:.4g} (the accuracies: "
                f"{shown})")
        if expected is None:
            if got is not None:
                raise AssertionError(f"{what} is {got!r}, expected None: no w reaches the target. {SMALLEST_HINT}")
            continue
        value = as_number(got, what, SMALLEST_HINT)
        if not abs(value - expected) <= 1e-9 * max(1.0, abs(expected)):
            raise AssertionError(f"{what} is {value:.6g}, which is not the smallest w whose accuracy reaches the "
                                 f"target. {SMALLEST_HINT}")
