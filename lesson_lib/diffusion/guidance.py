"""Guidance: steering a diffusion model toward a class y by wrapping its denoiser or its step.

Why one module of about 380 lines: classifier guidance and classifier-free guidance are one
identity (the sum of scores below) read two ways, and the tests prove them equal; their
formulas, checks and wrappers sit side by side so that they can be compared line by line.

Bayes' rule, p_t(x | y) = p_t(y | x) p_t(x) / p(y), turns into a sum of scores (the constant
p(y) has no gradient in x):

    grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x).

A network that predicts the noise is a score in disguise, eps(x_t) = -sqrt(1 - alpha-bar_t)
grad log p_t(x_t) (Song et al., 2021), so the same sum in eps reads

    eps(x_t | y) = eps(x_t) - sqrt(1 - alpha-bar_t) grad log p_t(y | x_t).

Guidance scales the class term by a factor and so samples from p_t(x) p_t(y | x)^scale,
sharper than p_t(x | y) for a scale above 1. There are two ways to get that term:

* **Classifier guidance** (Dhariwal & Nichol, 2021) trains a classifier f_phi(y | x_t, t) on
  noisy images (:class:`~lesson_lib.models.noisy_classifier.NoisyClassifier`) and takes its
  gradient. Both published forms are here:

      score form (their Algorithm 2, DDIM and any step; :class:`ClassifierGuidance`):
          eps' = eps - s sqrt(1 - alpha-bar_t) grad log f_phi(y | x_t, t),   x0' from eps' (Eq. 4)
      mean form (their Algorithm 1, ancestral steps; :class:`ClassifierGuidedStep`):
          mu'  = mu + s Sigma grad log f_phi(y | x_t, t)

  In a one-step DDPM step the score form moves the mean by s beta_t / sqrt(alpha_t) grad log f,
  the mean form by s Sigma grad log f: the same for Sigma = beta_t up to 1/sqrt(alpha_t).

* **Classifier-free guidance** (Ho & Salimans, 2021) needs no classifier. By Bayes' rule again
  grad log p_t(y | x) = grad log p_t(x | y) - grad log p_t(x) = -(eps(x, y) - eps(x, null)) /
  sqrt(1 - alpha-bar_t), and one network trained with label dropout gives both terms (the null
  class is "no label"). With the paper's weight w (:class:`ClassifierFreeGuidance`):

      eps' = (1 + w) eps(x_t, y) - w eps(x_t, null)      = eps_u + s (eps_c - eps_u),  s = 1 + w.

  The paper writes w (w = 0 is the conditional model); diffusers, Imagen, DiT and most code
  write the scale s = 1 + w (s = 1 is the conditional model, s = 0 the unconditional one).
  :func:`scale_from_w` and :func:`w_from_scale` convert. Classifier-free guidance with scale s
  *is* classifier guidance with scale s on the unconditional model, with the model's own
  implicit classifier p_t(y | x) ∝ p_t(x | y) / p_t(x) in place of f_phi.

The sampling loop (:mod:`lesson_lib.diffusion.sampling`) never changes. The score form and CFG
change the prediction, so they wrap the denoiser (signature ``(x_t, t, **cond) -> Prediction``;
the presets take ``guidance=``, a function of their denoiser, and clip x0_hat *after* it, since
guiding clipped parts moves x0_hat outside [-1, 1] again). The mean form needs Sigma of the step
t -> s, which only the step knows, so it is a step with ``ddpm_step``'s signature
(``ddpm_sample(..., step=...)``); its mu comes from the clipped x0_hat, as in the authors' code.
"""

import torch

from ..arguments import choice, integer, labels, number
from .denoiser import Prediction, check_denoiser
from .flow_matching import FlowGrid
from .forward import x0_from_eps
from .sampling import evaluating
from .schedules import extract
from .steps import ddpm_mean_variance

GRADIENT_AT = ("x_t", "mean")


# --- the formulas, one function each ---------------------------------------------------------

def scale_from_w(w):
    """The libraries' guidance scale s = 1 + w from the paper's weight w (Ho & Salimans)."""
    return 1.0 + w


def w_from_scale(scale):
    """The paper's weight w = s - 1 from the libraries' scale s."""
    return scale - 1.0


def classifier_guided_eps(eps, grad_log_prob, sqrt_one_minus_alpha_bar, scale):
    """The score form of classifier guidance (Dhariwal & Nichol, 2021, Algorithm 2):

        eps' = eps - s sqrt(1 - alpha-bar_t) grad log f(y | x_t, t)."""
    return eps - scale * sqrt_one_minus_alpha_bar * grad_log_prob


def classifier_guided_mean(mean, sigma2, grad_log_prob, scale):
    """The mean form of classifier guidance (Dhariwal & Nichol, 2021, Algorithm 1): the
    ancestral step's mean, moved along the classifier's gradient by its own variance,

        mu' = mu + s Sigma grad log f(y | x, t)."""
    return mean + scale * sigma2 * grad_log_prob


def cfg_eps(eps_cond, eps_uncond, w):
    """Classifier-free guidance (Ho & Salimans, 2021) with the paper's weight w:

        eps' = (1 + w) eps(x_t, y) - w eps(x_t, null).

    w = 0 is the conditional model, w = -1 the unconditional one."""
    return (1 + w) * eps_cond - w * eps_uncond


def rescale_cfg(eps_guided, eps_cond, phi):
    """The rescale of Lin et al. (2023, Sec. 3.4): guidance inflates the output's standard
    deviation; bring it back to the conditional output's, per example over all its dimensions,
    and blend:

        eps_r = eps' std(eps_c) / std(eps'),    eps'' = phi eps_r + (1 - phi) eps'.

    phi = 0 changes nothing; phi = 1 gives every example the std of its conditional output."""
    dims = tuple(range(1, eps_guided.ndim))
    ratio = eps_cond.std(dim=dims, keepdim=True) / eps_guided.std(dim=dims, keepdim=True)
    return phi * eps_guided * ratio + (1 - phi) * eps_guided


def classifier_gradient(classifier, x_t, t, y):
    """grad_x log f(y | x, t) at x = x_t, one gradient per example, shape of ``x_t``.

    ``classifier(x, t)`` returns logits (B, K). One backward pass of the sum over the batch of
    log softmax(logits)[y] gives every example its own gradient, because the examples do not
    interact: that holds in eval mode (a BatchNorm in train mode mixes the batch), so the
    classifier is put in eval mode for the call and its mode restored
    (:func:`~lesson_lib.diffusion.sampling.evaluating`). Runs under ``torch.enable_grad()``,
    also inside the sampler's ``no_grad``.
    """
    with evaluating(classifier), torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        logits = classifier(x, t)
        log_probs = torch.log_softmax(logits.to(x.dtype), dim=1)
        selected = log_probs.gather(1, y.long().reshape(-1, 1)).sum()
        (grad,) = torch.autograd.grad(selected, x)
    return grad.detach()


# --- checks ---------------------------------------------------------------------------------

def _check_interval(interval, T=None):
    if interval is None:
        return None
    fix = f"(t_min, t_max) with 0 <= t_min <= t_max{'' if T is None else f' <= {T - 1}'} (code timesteps)"
    try:
        lo, hi = interval
    except (TypeError, ValueError):
        raise TypeError(f"interval must be a pair {fix}, got interval={interval!r}") from None
    lo, hi = (integer(v, "interval", hint=f"a pair {fix}") for v in (lo, hi))
    if lo > hi or lo < 0 or (T is not None and hi >= T):
        raise ValueError(f"interval must be {fix}, got interval={interval!r}")
    return lo, hi


def _in_interval(t, interval, like):
    """A (B, 1, ..., 1) boolean mask: which examples' t lie in the guidance interval."""
    if interval is None:
        return None
    lo, hi = interval
    return ((t >= lo) & (t <= hi)).reshape(-1, *([1] * (like.ndim - 1)))


def _schedule_of(denoise, schedule):
    schedule = schedule if schedule is not None else getattr(denoise, "schedule", None)
    if schedule is None:
        raise ValueError("pass schedule=... (the denoiser has no .schedule to read it from)")
    return schedule


class _LabelCheck:
    """Checks a label tensor once, not at every step (reading values makes the host wait for
    the GPU); a new tensor is checked again."""

    def __init__(self, num_classes, what):
        self.num_classes, self.what, self.seen = num_classes, what, ()

    def __call__(self, y, batch):
        if y is None:
            raise ValueError(f"{self.what} needs the target classes: pass y=labels (a long tensor of shape (B,))")
        if y is not self.seen:
            labels(y, self.num_classes, "y", batch=batch, hint=f"the target classes of {self.what}")
            self.seen = y


# --- classifier guidance --------------------------------------------------------------------

def _check_classifier(classifier, model, dataset):
    """The classifier's number of classes, after checking that it fits ``model`` (when known)
    and ``dataset`` (when given)."""
    num_classes = getattr(classifier, "num_classes", None)
    if num_classes is None:
        raise ValueError("the classifier must say how many classes it has (a num_classes attribute)")
    if dataset is not None and getattr(classifier, "dataset", dataset) != dataset:
        raise ValueError(f"this classifier was trained on {classifier.dataset!r}, not {dataset!r}; "
                         f"guide with a noisy classifier of the same dataset")
    for name in ("image_size", "in_channels"):
        mine, theirs = getattr(classifier, name, None), getattr(model, name, None)
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(f"the classifier was built for {name}={mine} but the model makes "
                             f"{name}={theirs}: a classifier for another image size or dataset "
                             f"cannot guide this model")
    theirs = getattr(model, "num_classes", None)
    if theirs is not None and theirs != num_classes:
        raise ValueError(f"the classifier has {num_classes} classes but the model {theirs}: "
                         f"they are not for the same dataset")
    return num_classes


class ClassifierGuidance:
    """``ClassifierGuidance(denoise, classifier, scale)(x_t, t, y=labels) -> Prediction``: the
    score form of classifier guidance (Dhariwal & Nichol, 2021, Algorithm 2) around any
    denoiser, for any step (DDIM, DDPM, strided or not). The mean form of their Algorithm 1 is
    a step instead: :class:`ClassifierGuidedStep`.

    Args:
        denoise: ``denoise(x_t, t, **cond) -> Prediction`` (a :class:`Denoiser`).
        classifier: ``classifier(x_t, t) -> logits`` trained on noisy images, e.g. a
            :class:`~lesson_lib.models.noisy_classifier.NoisyClassifier` (put in eval mode for
            every gradient). It always receives the original-schedule timestep t, also when
            sampling on fewer steps (the loop passes original timesteps).
        scale: s >= 0 (0 = no guidance). A negative s would steer *away* from y; it is refused.
        interval: guide only where t_min <= t <= t_max (code timesteps); elsewhere the
            prediction is the unguided one.
        condition_model: pass ``y`` on to the denoiser too (guidance on the conditional model);
            default False: guide the model's unconditional output (its null class).
        dataset: if given, the classifier's ``dataset`` attribute must match it.
        schedule: the noise schedule; read from ``denoise.schedule`` when left out.
    """

    def __init__(self, denoise, classifier, scale, *, interval=None, condition_model=False, dataset=None,
                 schedule=None):
        check_denoiser(denoise)
        scale = number(scale, "scale", minimum=0, hint="a negative scale steers away from the class; guidance "
                                                       "toward y needs s >= 0, and s = 0 is no guidance")
        self.denoise, self.classifier, self.scale = denoise, classifier, scale
        self.schedule = _schedule_of(denoise, schedule)
        self.interval = _check_interval(interval, self.schedule.T)
        self.condition_model = condition_model
        self.num_classes = _check_classifier(classifier, getattr(denoise, "model", None), dataset)
        self.check_labels = _LabelCheck(self.num_classes, "this classifier")

    def __call__(self, x_t, t, y=None, **cond):
        self.check_labels(y, x_t.shape[0])
        pred = self.denoise(x_t, t, **(dict(cond, y=y) if self.condition_model else cond))
        if self.scale == 0:
            return pred
        g = classifier_gradient(self.classifier, x_t, t, y)
        eps = classifier_guided_eps(pred.eps, g, extract(self.schedule.sqrt_one_minus_alpha_bars, t, x_t), self.scale)
        x0 = x0_from_eps(self.schedule, x_t, t, eps)
        inside = _in_interval(t, self.interval, x_t)
        if inside is not None:
            x0, eps = torch.where(inside, x0, pred.x0), torch.where(inside, eps, pred.eps)
        return pred._replace(x0=x0, eps=eps)            # a learned variance passes through


class ClassifierGuidedStep:
    """``ClassifierGuidedStep(classifier, scale, y)(schedule, x_t, t, s, pred, noise) -> x_s``:
    the mean form of classifier guidance (Dhariwal & Nichol, 2021, Algorithm 1), an ancestral
    step with :func:`~lesson_lib.diffusion.steps.ddpm_step`'s signature:

        mu, Sigma = the step t -> s (:func:`~lesson_lib.diffusion.steps.ddpm_mean_variance`)
        x_s       = mu + scale Sigma grad log f(y | x_t, t) + sqrt(Sigma) noise

    Sigma is the step's own (beta_{t->s}, beta-tilde_{t->s} or the learned one), so the step
    holds no timestep list: it is right on every list the loop visits, e.g. ``spaced(T, 50)``.
    Pass it to the sampler as ``ddpm_sample(model, schedule, shape, step=guided)`` (which gives
    it ``variance=``) or to the loop ``sample(denoise, schedule, x_T, timesteps, guided)``. The
    model sees what ``model_kwargs`` gives it: leave ``y`` out there to guide the unconditional
    model (its null class), put it in to guide the conditional one.

    Args:
        classifier: ``classifier(x_t, t) -> logits`` trained on noisy images (eval mode for every
            gradient), as in :class:`ClassifierGuidance`.
        scale: s >= 0 (0 = plain ``ddpm_step``).
        y: the target classes, a long tensor of shape (B,).
        gradient_at: where g = grad log f(y | x, t) is taken: "x_t" (default), at the current
            state and t, as the reference code does; or "mean", at the unguided mu with the level
            of s, as the paper's derivation (a Taylor expansion of log f around mu) says. x_t is
            the default because there the classifier sees what it was trained on (a sample of
            q(x_t | x_0)), as in the score form, and the authors found the two "didn't noticeably
            change results"; benchmarks/guidance.py measures it.
        interval: guide only where t_min <= t <= t_max (code timesteps).
        dataset: if given, the classifier's ``dataset`` attribute must match it.
    """

    def __init__(self, classifier, scale, y, *, gradient_at="x_t", interval=None, dataset=None):
        scale = number(scale, "scale", minimum=0, hint="a negative scale steers away from the class; guidance "
                                                       "toward y needs s >= 0, and s = 0 is no guidance")
        choice(gradient_at, "gradient_at", GRADIENT_AT)
        self.classifier, self.scale, self.gradient_at = classifier, scale, gradient_at
        self.interval = _check_interval(interval)
        self.num_classes = _check_classifier(classifier, None, dataset)
        if y is None:
            raise ValueError("the mean form needs the target classes: pass y=labels (a long tensor of shape (B,))")
        self.y = labels(y, self.num_classes, "y", hint="the target classes of this classifier")

    def __call__(self, schedule, x_t, t, s, pred, noise=None, variance="beta"):
        if self.y.shape[0] != x_t.shape[0]:
            raise ValueError(f"y must be 1-D with one label per example, shape ({x_t.shape[0]},), got shape "
                             f"{tuple(self.y.shape)}; the target classes of this classifier")
        mean, sigma2 = ddpm_mean_variance(schedule, x_t, t, s, pred, variance)
        if self.scale != 0:
            y = self.y.to(x_t.device)
            if self.gradient_at == "x_t":
                g = classifier_gradient(self.classifier, x_t, t, y)
            else:
                g = classifier_gradient(self.classifier, mean, s.clamp(min=0), y)
            guided = classifier_guided_mean(mean, sigma2, g, self.scale)
            inside = _in_interval(t, self.interval, x_t)
            mean = guided if inside is None else torch.where(inside, guided, mean)
        if noise is None:
            return mean
        return mean + sigma2.sqrt() * noise


# --- classifier-free guidance ---------------------------------------------------------------

class ClassifierFreeGuidance:
    """``ClassifierFreeGuidance(denoise, w)(x_t, t, y=labels) -> Prediction``: classifier-free
    guidance (Ho & Salimans, 2021) with the paper's weight w; ``scale=`` gives the libraries'
    s = 1 + w instead (give one of the two).

    One network call on the batch [x_t, x_t] with labels [y, null] gives eps(x_t, y) and
    eps(x_t, null); they are combined by :func:`cfg_eps`, optionally rescaled
    (:func:`rescale_cfg` with ``rescale=phi``), and x0_hat is derived from the result. On a
    flow-matching model's grid (:class:`~lesson_lib.diffusion.flow_matching.FlowGrid`) x0_hat is mixed
    the same way instead: both ends are affine in the velocity, so this is v' = (1 + w) v_c - w v_u.

    Args:
        denoise: a denoiser of a class-conditional model with a null class (label dropout).
        w: the guidance weight, w >= -1 (w = 0: the conditional model; w = -1: the
            unconditional one; -1 < w < 0 interpolates). Below -1 (s < 0) it means nothing.
        scale: s = 1 + w, s >= 0, instead of w.
        null_class: the model's "no label" index; read from ``denoise.model.num_classes``.
        interval: guide only where t_min <= t <= t_max (code timesteps); elsewhere the
            prediction is the conditional one (w = 0).
        rescale: phi in [0, 1] of Lin et al. (2024); 0 = off.
        schedule: the noise schedule; read from ``denoise.schedule`` when left out.
    """

    def __init__(self, denoise, w=None, *, scale=None, null_class=None, interval=None, rescale=0.0,
                 schedule=None):
        check_denoiser(denoise)
        if (w is None) == (scale is None):
            raise ValueError("give the guidance strength once: w (the paper's weight, 0 = conditional) "
                             "or scale (s = 1 + w, 1 = conditional)")
        if scale is not None:
            scale = number(scale, "scale", minimum=0,
                           hint="s = 0 is the unconditional model; below it CFG means nothing")
            w = w_from_scale(scale)
        w = number(w, "w", minimum=-1, hint="w = -1 is the unconditional model; below it CFG means nothing")
        rescale = number(rescale, "rescale", minimum=0, maximum=1, hint="phi of Lin et al.; 0 = off")
        if null_class is None:
            null_class = getattr(getattr(denoise, "model", None), "num_classes", None)
            if null_class is None:
                raise ValueError("classifier-free guidance needs a model trained with a null class (label "
                                 "dropout); this model has no num_classes. Use classifier guidance, or "
                                 "pass null_class= if the model has one")
        null_class = integer(null_class, "null_class", minimum=1, hint="the model's 'no label' index, its num_classes")
        self.denoise, self.w, self.null_class, self.rescale = denoise, w, null_class, rescale
        self.schedule = _schedule_of(denoise, schedule)
        # a flow's grid (lesson 13): x0_hat cannot be read back from eps_hat at t = 1 (x_t = eps there)
        self.flow = isinstance(self.schedule, FlowGrid)
        if self.flow and rescale:
            raise ValueError("rescale (Lin et al.) is defined for a VP schedule's eps; leave it at 0 for a "
                             "flow-matching model")
        self.interval = _check_interval(interval, self.schedule.T)
        self.check_labels = _LabelCheck(self.null_class, "classifier-free guidance (the null class is not a target)")

    @property
    def scale(self):
        return scale_from_w(self.w)

    def __call__(self, x_t, t, y=None, **cond):
        self.check_labels(y, x_t.shape[0])
        if self.w == 0:
            return self.denoise(x_t, t, y=y, **cond)
        null = torch.full_like(y, self.null_class)
        both = self.denoise(torch.cat([x_t, x_t]), torch.cat([t, t]), y=torch.cat([y, null]),
                            **{k: torch.cat([v, v]) for k, v in cond.items()})
        eps_c, eps_u = both.eps.chunk(2)
        eps = cfg_eps(eps_c, eps_u, self.w)
        if self.rescale:
            eps = rescale_cfg(eps, eps_c, self.rescale)
        inside = _in_interval(t, self.interval, x_t)
        if inside is not None:
            eps = torch.where(inside, eps, eps_c)
        if self.flow:          # x0_hat = x_t - t v is affine in v as eps_hat is: the same mix guides both
            x0_c, x0_u = both.x0.chunk(2)
            x0 = cfg_eps(x0_c, x0_u, self.w)
            if inside is not None:
                x0 = torch.where(inside, x0, x0_c)
        else:
            x0 = x0_from_eps(self.schedule, x_t, t, eps)
        # A learned variance is the conditional prediction's (as GLIDE samples it); guidance moves the mean only.
        variance = {name: value.chunk(2)[0] for name, value in (("log_variance", both.log_variance),
                                                                 ("frac", both.frac)) if value is not None}
        return Prediction(x0, eps, **variance)
