"""Checks for lesson 10, latent diffusion (solutions/10_latent_diffusion.ipynb).

Why one module: these are the checks of one exercise notebook; the grader loads a lesson's checks from
one module, and its parts share the drawn latents, the small autoencoders and the small eps networks.

``kl_term`` is the KL term of the autoencoder's objective, KL( N(mean, diag exp(logvar)) || N(0, I) ) in
nats, summed over every latent element of an image (Kingma & Welling 2014, Appendix B). It is compared with
:func:`lesson_lib.diffusion.latent.kl_to_standard_normal` summed per image, on drawn float32 images, float64
images and float64 vectors whose log-variances include the ends of the encoder's clamp (-30 and 20) and -20
and 10, with one image at the prior. A second check demands what every KL obeys, whatever its formula: exactly
0 at the prior (mean 0, logvar 0), positive elsewhere, and a sum over the elements (the KL of two latents
joined along the channels is the sum of theirs). A third holds the answer to the definition
KL = E_q[log q(z) - log p(z)]: it must lie within 6 standard errors of a Monte Carlo estimate from 20,000
draws of z per image, which the judge makes.

``scale_factor`` is compared with :func:`lesson_lib.data.latents.scale_factor` to 1e-6 on a drawn set of
4,096 latents of 4 x 8 x 8 (over a million numbers, so that n or n - 1 in the variance makes no difference
at that precision), built so that every usual shortcut misses: the set is sorted by norm (its first batch
holds the quietest latents), its channels have different means and stds, its mean is far from 0 and its
std far from 1. A wrong factor is named when it is one of the shortcuts (a first batch, 1 / rms, 1 / var,
the std itself); a tensor of several numbers (one per channel) is refused. A second check, the property
itself: on another drawn set, float32 latents of 16 x 4 x 4 in ten class blocks (again over a million
numbers), the latents times the factor have std 1 to 1e-6.

``latent_loss`` is the L_simple of latent diffusion for given t and eps (Rombach et al. 2022, Eq. 2, with
Ho et al.'s Eq. 4 for z_t): z_0 = scale * the posterior mean of a small drawn
:class:`~lesson_lib.models.autoencoder.AutoencoderKL` with drawn weights (untrained: its log-variance is near 0,
so a sample of the posterior is far from its mean), and a small class-conditional eps network built from drawn
weights. It is compared with :func:`lesson_lib.diffusion.losses.l_simple` on ``scale *``
:func:`~lesson_lib.data.latents.encode_means`. A second check runs backward from the returned loss in the
worker: the eps network's gradients must be the reference's and no parameter of the autoencoder may get
one. A third drives the function with an exact eps network that knows z_0, recovers eps from z_t by Eq. 4
and adds a drawn error delta: the loss must then be mean(delta^2), which only the right z_t gives.
Total: 10 points.
"""

import math

import torch

from lesson_lib.course.checks import check
from lesson_lib.course.checks.judging import as_number, expect_close, expect_tensor, field, pairs
from lesson_lib.course.protocol import type_name
from lesson_lib.models.autoencoder import AutoencoderKL

# What the worker loads besides this module (see lesson_lib/course/box.py): the autoencoder, which the probes
# rebuild from drawn weights. The references (diffusion/latent.py, diffusion/likelihood.py, data/latents.py,
# diffusion/losses.py, diffusion/forward.py) are imported inside the cases and judges only, so the worker
# never holds them.
WORKER_MODULES = ("lesson_lib.models.autoencoder",)

KL_HINT = ("Per latent element KL = 0.5 (mean^2 + sigma^2 - 1 - log sigma^2) with sigma^2 = exp(logvar) (logvar is "
           "the log of the variance, not of sigma); sum it over every element of each image (not the mean), one "
           "number per image, in mean's dtype.")
ZERO_HINT = ("A KL is 0 exactly where the two Gaussians are the same (mean 0, logvar 0: every element's term "
             "vanishes, the -1 included), positive everywhere else, and it adds up over independent elements: "
             "sum each image's element terms, do not average them.")
MC_HINT = ("KL(q || p) is E_q[log q(z) - log p(z)], here estimated by sampling z = mean + sigma * e: check the factor "
           "0.5, the -1, sigma^2 = exp(logvar), and the sign.")
SCALE_HINT = ("The factor is one number for the whole set: 1 / (the standard deviation of every element of every "
              "latent: all images, all channels together, deviations taken from the set's mean), computed "
              "in float64.")
UNIT_HINT = ("Multiplied by the factor, the set must have standard deviation 1: the factor is 1 over the standard "
             "deviation of all the latents together, one number, computed in float64.")
LOSS_HINT = ("z0 = scale * the posterior mean (autoencoder.encode(x0) returns (mean, logvar); no sample, no "
             "decoding), z_t = sqrt(alpha_bars[t]) z0 + sqrt(1 - alpha_bars[t]) eps (Ho et al., Eq. 4), and the "
             "loss is the mean over every entry of (eps - eps_model(z_t, t, y))^2.")
GRAD_HINT = ("The autoencoder is frozen: encode under torch.no_grad() (or detach the mean), and return the loss as "
             "a tensor that still carries the eps model's graph (not loss.item(), no torch.no_grad() around the "
             "eps model).")
EXACT_HINT = ("An eps model that knows z0 recovers eps from z_t exactly, so the loss is only the error planted in "
              "it: this fails when z_t is not Eq. 4 of z0 = scale * the posterior mean, or when the loss is not "
              "the mean of (eps - prediction)^2.")

MC_DRAWS = 20_000           # draws of z per image in the Monte Carlo check
MC_SIGMAS = 6.0             # its tolerance, in standard errors
SET_SIZE = 4096             # latents in the scale factor's sets (over a million numbers each)
SCALE_RTOL = 1e-6           # the scale factor's tolerance
FIRST_BATCHES = (16, 32, 50, 64, 100, 128, 200, 250, 256, 500, 512, 1000, 1024)   # batch sizes a shortcut may use
NUM_CLASSES = 3             # classes of the small eps networks


def _uniform(low, high, shape=(), dtype=torch.float64):
    return low + (high - low) * torch.rand(shape, dtype=dtype)


def _draw_schedule():
    """A drawn schedule as plain data: its name and T."""
    return {"schedule": ("linear", "cosine")[int(torch.randint(0, 2, ()))], "T": int(torch.randint(200, 1001, ()))}


def _schedule(case):
    from lesson_lib.diffusion.schedules import NoiseSchedule
    return NoiseSchedule.from_name(case["schedule"], case["T"])


# --- 1 · the KL term ------------------------------------------------------------------------------

def _kl_inputs(shape, dtype, logvar_range=(-8.0, 4.0), extremes=True):
    """Drawn (mean, logvar) of ``shape`` (B, ...); with ``extremes``, the first elements of every image take
    the clamp's ends and two far values."""
    mean = 1.5 * torch.randn(shape, dtype=torch.float64)
    logvar = _uniform(*logvar_range, shape)
    if extremes:
        logvar.view(shape[0], -1)[:, :4] = torch.tensor([-30.0, -20.0, 10.0, 20.0], dtype=torch.float64)
    return mean.to(dtype), logvar.to(dtype)


def _kl_case():
    calls = []
    for shape, dtype in [((5, 4, 3, 3), torch.float32), ((4, 2, 5, 5), torch.float64), ((6, 7), torch.float64)]:
        mean, logvar = _kl_inputs(shape, dtype)
        mean[0], logvar[0] = 0.0, 0.0                      # one image at the prior: its KL is 0
        calls.append({"mean": mean, "logvar": logvar})
    return {"calls": calls}


def _kl_probe(ns, case):
    return [ns["kl_term"](c["mean"].clone(), c["logvar"].clone()) for c in case["calls"]]


def _kl_what(mean):
    return f"kl_term for mean of shape {tuple(mean.shape)} ({mean.dtype})"


def _kl_tolerances(mean):
    """(rtol, atol) of one image's KL: float32 rounding in each of its D terms, or float64's."""
    D = mean[0].numel()
    return (1e-5, 1e-6 * D) if mean.dtype == torch.float32 else (1e-10, 1e-12 * D)


@check(points=1, uses=["kl_term"], case=_kl_case, probe=_kl_probe)
def kl_term_is_the_closed_form(case, answer):
    """kl_term is the library's KL to N(0, I) summed per image, for log-variances from -30 to 20."""
    from lesson_lib.diffusion.latent import kl_to_standard_normal
    for c, got in pairs(case["calls"], answer):
        mean, logvar = c["mean"], c["logvar"]
        expected = kl_to_standard_normal(mean, logvar).flatten(1).sum(1)
        rtol, atol = _kl_tolerances(mean)
        expect_close(got, expected, _kl_what(mean), rtol=rtol, atol=atol, hint=KL_HINT)


def _kl_property_case():
    examples = []
    for dtype in (torch.float32, torch.float64):
        B, h = int(torch.randint(3, 7, ())), int(torch.randint(2, 5, ()))
        parts = [_kl_inputs((B, channels, h, h), dtype, logvar_range=(-4.0, 2.0), extremes=False)
                 for channels in (1, 2)]
        for mean, logvar in parts:
            mean[0], logvar[0] = 0.0, 0.0                  # image 0 at the prior in both parts
        examples.append({"a": parts[0], "b": parts[1]})
    return {"examples": examples}


def _kl_property_probe(ns, case):
    answers = []
    for e in case["examples"]:
        (ma, la), (mb, lb) = e["a"], e["b"]
        answers.append([ns["kl_term"](ma.clone(), la.clone()), ns["kl_term"](mb.clone(), lb.clone()),
                        ns["kl_term"](torch.cat([ma, mb], 1), torch.cat([la, lb], 1))])
    return answers


@check(points=1, uses=["kl_term"], case=_kl_property_case, probe=_kl_property_probe)
def kl_term_is_zero_at_the_prior_positive_elsewhere_and_adds_up(case, answer):
    """kl_term is exactly 0 at mean 0, logvar 0, positive elsewhere, and the KL of joined latents is the sum."""
    for e, got in pairs(case["examples"], answer):
        (ma, _), (mb, _) = e["a"], e["b"]
        joined = torch.cat([ma, mb], 1)
        values = []
        for mean, value in pairs((ma, mb, joined), got):
            what = _kl_what(mean)
            expect_tensor(value, what, shape=(mean.shape[0],), dtype=mean.dtype)
            if not bool(torch.isfinite(value).all()):
                raise AssertionError(f"{what} contains NaN or inf. {ZERO_HINT}")
            if value[0].item() != 0:
                raise AssertionError(f"{what} is {value[0].item():.6g} for image 0, whose mean and logvar are all 0 "
                                     f"(the prior itself): expected exactly 0. {ZERO_HINT}")
            if not bool((value[1:] > 0).all()):
                worst = int(value[1:].argmin()) + 1
                raise AssertionError(f"{what} is {value[worst].item():.6g} for image {worst}, whose latent is not "
                                     f"the prior's: a KL there is positive. {ZERO_HINT}")
            values.append(value)
        rtol, _ = _kl_tolerances(joined)
        expect_close(values[2], values[0] + values[1], f"{_kl_what(joined)} (the latents of shapes "
                     f"{tuple(ma.shape)} and {tuple(mb.shape)} joined along the channels), against the sum of their "
                     f"KLs", rtol=rtol, atol=0, hint=ZERO_HINT)


def _mc_case():
    mean, logvar = _kl_inputs((4, 2, 3, 3), torch.float64, logvar_range=(-1.5, 1.0), extremes=False)
    return {"mean": mean, "logvar": logvar, "seed": int(torch.randint(0, 2 ** 31 - 1, ()))}


def _monte_carlo_kl(mean, logvar, seed, draws=MC_DRAWS):
    """(estimate, standard error) per image of E_q[log q(z) - log p(z)], z = mean + sigma * e drawn from q,
    p = N(0, I): per element log q - log p = -0.5 logvar - 0.5 e^2 + 0.5 z^2 (the log 2 pi terms cancel)."""
    generator = torch.Generator().manual_seed(seed)
    e = torch.randn((draws,) + tuple(mean.shape), generator=generator, dtype=torch.float64)
    z = mean + torch.exp(0.5 * logvar) * e
    log_ratio = (-0.5 * logvar - 0.5 * e ** 2 + 0.5 * z ** 2).flatten(2).sum(2)       # (draws, B)
    return log_ratio.mean(0), log_ratio.std(0) / math.sqrt(draws)


@check(points=1, uses=["kl_term"], case=_mc_case, probe=lambda ns, case: ns["kl_term"](case["mean"].clone(),
                                                                                       case["logvar"].clone()))
def kl_term_agrees_with_a_monte_carlo_estimate(case, answer):
    """kl_term lies within 6 standard errors of E_q[log q(z) - log p(z)] estimated from 20,000 draws per image."""
    mean = case["mean"]
    what = _kl_what(mean)
    expect_tensor(answer, what, shape=(mean.shape[0],), dtype=mean.dtype)
    if not bool(torch.isfinite(answer).all()):
        raise AssertionError(f"{what} contains NaN or inf. {MC_HINT}")
    estimate, error = _monte_carlo_kl(mean, case["logvar"], case["seed"])
    for i, (got, want, se) in enumerate(zip(answer.tolist(), estimate.tolist(), error.tolist())):
        if not abs(got - want) <= MC_SIGMAS * se:
            raise AssertionError(f"{what} is {got:.5g} for image {i}; a Monte Carlo estimate of E_q[log q(z) - "
                                 f"log p(z)] from {MC_DRAWS:,} draws of z gives {want:.5g} +- {se:.2g} (one standard "
                                 f"error). {MC_HINT}")


# --- 2 · the scale factor --------------------------------------------------------------------------

def _latent_set(blocks, shape, dtype):
    """A drawn set of SET_SIZE latents of ``shape`` (c, h, w), in ``blocks`` consecutive blocks (classes), each
    block with its own per-channel means and stds, each latent with its own amplitude; the set's mean is far
    from 0 (all channel means share one sign) and its std is then set far from 1 (between 0.25 and 0.5, or
    2 and 4)."""
    c = shape[0]
    sign = 1.0 if torch.rand(()) < 0.5 else -1.0
    size = SET_SIZE // blocks
    latents = []
    for _ in range(blocks):
        stds = torch.exp(_uniform(math.log(0.3), math.log(3.0), (c,)))
        means = sign * stds * _uniform(0.5, 1.5, (c,))
        amplitude = _uniform(0.3, 1.7, (size,))
        noise = torch.randn((size,) + tuple(shape), dtype=torch.float64)
        latents.append(means.view(1, c, 1, 1) + amplitude.view(-1, 1, 1, 1) * stds.view(1, c, 1, 1) * noise)
    latents = torch.cat(latents)
    target = float(_uniform(0.25, 0.5) if torch.rand(()) < 0.5 else _uniform(2.0, 4.0))
    return (latents * (target / latents.std())).to(dtype)


def _scale_case():
    latents = _latent_set(1, (4, 8, 8), torch.float32)
    return {"latents": latents[latents.flatten(1).norm(dim=1).argsort()]}     # sorted by norm: quietest first


def _scale_probe(ns, case):
    return ns["scale_factor"](case["latents"].clone())


def _one_number(got, what, hint):
    """The answer as a float: a tensor of several numbers is one factor per channel (or per image)."""
    if type(got) is torch.Tensor and got.numel() > 1:
        raise AssertionError(f"{what} returned a tensor of shape {tuple(got.shape)} ({got.numel()} numbers), "
                             f"expected one number: one factor for the whole set, not one per channel or per "
                             f"image. {hint}")
    return as_number(got, what, hint)


def _shortcut(got, latents):
    """What a wrong factor is, when it is one of the usual shortcuts; else None."""
    z = latents.double()
    candidates = [("1 / the root mean square of the latents: the set's mean was not subtracted",
                   1 / z.pow(2).mean().sqrt()),
                  ("1 / the variance, not 1 / the standard deviation", 1 / z.var()),
                  ("the standard deviation itself, not 1 over it", z.std())]
    candidates += [(f"1 / the std of the first {k} latents only (a first batch), not of the whole set",
                    1 / z[:k].std()) for k in FIRST_BATCHES]
    candidates.append(("the mean of one factor per channel", (1 / z.transpose(0, 1).flatten(1).std(1)).mean()))
    for name, value in candidates:
        if math.isclose(got, float(value), rel_tol=1e-4):
            return name
    return None


@check(points=2, uses=["scale_factor"], case=_scale_case, probe=_scale_probe)
def scale_factor_is_one_over_the_whole_sets_std(case, answer):
    """scale_factor is the library's 1 / std of every element of a set sorted by norm, mean not 0, channels unequal."""
    from lesson_lib.data.latents import scale_factor
    latents = case["latents"]
    what = f"scale_factor for {len(latents):,} latents of shape {tuple(latents.shape[1:])} sorted by norm"
    got = _one_number(answer, what, SCALE_HINT)
    expected = scale_factor(latents)
    if not abs(got - expected) <= SCALE_RTOL * expected:
        shortcut = _shortcut(got, latents)
        named = f": that is {shortcut}" if shortcut else ""
        raise AssertionError(f"{what} = {got:.8g}, expected {expected:.8g}{named}. {SCALE_HINT}")


def _unit_case():
    latents = _latent_set(10, (16, 4, 4), torch.float32)         # ten classes, one block each, in order
    return {"latents": latents}


@check(points=1, uses=["scale_factor"], case=_unit_case, probe=_scale_probe)
def scaled_latents_have_std_one(case, answer):
    """The latents times scale_factor have standard deviation 1 to 1e-6 (a set of ten class blocks)."""
    latents = case["latents"]
    what = f"scale_factor for {len(latents):,} latents of shape {tuple(latents.shape[1:])} in ten class blocks"
    got = _one_number(answer, what, UNIT_HINT)
    std = (latents.double() * got).std().item()
    if not abs(std - 1) <= SCALE_RTOL:
        raise AssertionError(f"the latents times {what} = {got:.8g} have standard deviation {std:.8g}, expected 1 "
                             f"to {SCALE_RTOL:g}. {UNIT_HINT}")


# --- 3 · one latent training step ------------------------------------------------------------------

class TinyEps(torch.nn.Module):
    """A small class-conditional eps network on latents (B, c, h, w), built from given float32 weights that
    take gradients: a 1x1 mixing of the channels, a shift by t / T and by the label's embedding, tanh, and a
    skip. Called as ``eps_model(z_t, t, y)`` (``y`` by position or by name)."""

    def __init__(self, weights, T):
        super().__init__()
        self.T = T
        self.W = torch.nn.Parameter(weights["W"].clone())
        self.u = torch.nn.Parameter(weights["u"].clone())
        self.E = torch.nn.Parameter(weights["E"].clone())

    def forward(self, z, t, y=None):
        _check_call(z, t, y)
        h = z.to(self.W.dtype)
        mixed = torch.einsum("oc,bchw->bohw", self.W, h)
        shift = (t.to(h.dtype) / self.T)[:, None] * self.u + self.E[y]
        return torch.tanh(mixed + shift[:, :, None, None]) + 0.5 * h


def _check_call(z, t, y):
    """Refuse a call that is not eps_model(z_t, t, y) with t and y long tensors of shape (B,)."""
    if type(z) is not torch.Tensor or z.ndim != 4:
        raise TypeError(f"the eps model takes z_t, a latent batch of shape (B, c, h, w), as its first argument; "
                        f"got {type_name(z)} of shape {tuple(getattr(z, 'shape', ()))}")
    for name, value in (("t", t), ("y", y)):
        if type(value) is not torch.Tensor or value.dtype != torch.long or tuple(value.shape) != (z.shape[0],):
            raise TypeError(f"the eps model is called as eps_model(z_t, t, y) with {name} a long tensor of shape "
                            f"(B,) = ({z.shape[0]},); got {name} = {value!r:.80}")


class ExactEps(torch.nn.Module):
    """The exact eps network of one batch: it knows z_0 and recovers eps from z_t by Eq. 4,
    (z_t - sqrt(alpha-bar_t) z_0) / sqrt(1 - alpha-bar_t), then adds the planted error ``delta``."""

    def __init__(self, z0, alpha_bars, delta):
        super().__init__()
        self.z0, self.alpha_bars, self.delta = z0, alpha_bars, delta

    def forward(self, z, t, y=None):
        _check_call(z, t, y)
        a = self.alpha_bars[t].view(-1, 1, 1, 1)
        eps = (z.double() - a.sqrt() * self.z0) / (1 - a).sqrt() + self.delta
        return eps.to(z.dtype)


def _eps_weights(c):
    return {"W": torch.randn(c, c) / math.sqrt(c), "u": torch.randn(c), "E": torch.randn(NUM_CLASSES, c)}


def _autoencoder(case):
    autoencoder = AutoencoderKL(**case["autoencoder_config"])
    autoencoder.load_state_dict(case["autoencoder"])
    return autoencoder


def _step_case(t_low=0.0):
    """A drawn schedule, a small AutoencoderKL with drawn weights (untrained: its log-variance is near 0, so a
    posterior sample is far from the mean), images, labels, t (from ``t_low`` T up, with T - 1 among them) and
    eps, and the factor that gives these images' latents a std of 1."""
    from lesson_lib.data.latents import encode_means, scale_factor
    case = _draw_schedule()
    T, B = case["T"], 6
    config = dict(in_channels=1, image_size=8, factor=2, latent_channels=2, base_channels=8)
    autoencoder = AutoencoderKL(**config)
    x0 = torch.rand(B, 1, 8, 8) * 2 - 1
    t = torch.randint(int(t_low * T), T, (B,))
    t[:2] = torch.tensor([int(t_low * T), T - 1])
    eps = torch.randn(B, 2, 4, 4)
    scale = scale_factor(encode_means(autoencoder, x0))
    return dict(case, alpha_bars=_schedule(case).alpha_bars, autoencoder_config=config,
                autoencoder=dict(autoencoder.state_dict()), x0=x0, y=torch.randint(0, NUM_CLASSES, (B,)), t=t,
                eps=eps, scale=scale, eps_weights=_eps_weights(2))


def _call(ns, eps_model, autoencoder, case):
    return ns["latent_loss"](eps_model, autoencoder, case["x0"].clone(), case["y"].clone(), case["t"].clone(),
                             case["eps"].clone(), case["alpha_bars"].clone(), case["scale"])


def _step_probe(ns, case):
    """The loss, and after backward from it (when it is a one-number tensor with a graph) the eps network's
    gradients and the names of the autoencoder's parameters that got one."""
    autoencoder, eps_model = _autoencoder(case), TinyEps(case["eps_weights"], case["T"])
    loss = _call(ns, eps_model, autoencoder, case)
    graph = type(loss) is torch.Tensor and loss.numel() == 1 and loss.requires_grad
    if graph:
        loss.backward()
    return {"loss": loss, "graph": graph,
            "eps_grads": {name: p.grad for name, p in eps_model.named_parameters()},
            "autoencoder_grads": sorted(name for name, p in autoencoder.named_parameters()
                                        if p.grad is not None and bool(p.grad.ne(0).any()))}


def _step_what(case):
    return (f"latent_loss for a batch of {len(case['x0'])} images 8 x 8 (latents 2 x 4 x 4, scale = "
            f"{case['scale']:.4g}, a {case['schedule']} schedule with T = {case['T']}, t = {case['t'].tolist()})")


def _step_reference(case):
    """(the library's loss, the eps network's gradients): L_simple (Eq. 14) of the eps network on
    z_0 = scale * the posterior means, with the case's t and eps."""
    from lesson_lib.data.latents import encode_means
    from lesson_lib.diffusion.losses import l_simple
    eps_model = TinyEps(case["eps_weights"], case["T"])
    z0 = case["scale"] * encode_means(_autoencoder(case), case["x0"])
    loss = l_simple(eps_model, _schedule(case), z0, t=case["t"], eps=case["eps"], y=case["y"])
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in eps_model.named_parameters()}


def _judge_loss(case, answer):
    """Fail unless the answer's loss is the library's; return the reference gradients."""
    what = _step_what(case)
    expected, grads = _step_reference(case)
    got = as_number(field(answer, "loss"), what, LOSS_HINT)
    if not abs(got - expected.item()) <= 1e-5 * abs(expected.item()) + 1e-7:
        raise AssertionError(f"{what} = {got:.7g}, expected {expected.item():.7g}. {LOSS_HINT}")
    return grads


@check(points=2, uses=["latent_loss"], case=_step_case, probe=_step_probe)
def latent_loss_is_l_simple_on_the_scaled_posterior_mean(case, answer):
    """latent_loss is the library's L_simple on z0 = scale * the posterior mean, for the given t and eps."""
    _judge_loss(case, answer)


@check(points=1, uses=["latent_loss"], case=_step_case, probe=_step_probe)
def latent_loss_trains_the_eps_model_only(case, answer):
    """latent_loss is right and its gradient reaches every eps-model weight as the library's does, no encoder weight."""
    grads = _judge_loss(case, answer)
    what = _step_what(case)
    if field(answer, "graph") is not True:
        raise AssertionError(f"{what} returned a loss that carries no graph: backward cannot reach the eps model. "
                             f"{GRAD_HINT}")
    got = field(answer, "eps_grads")
    for name, expected in grads.items():
        grad = field(got, name)
        if grad is None:
            raise AssertionError(f"the eps model's parameter {name} got no gradient from {what}. {GRAD_HINT}")
        expect_close(grad, expected, f"the gradient of the eps model's parameter {name} from {what}", rtol=1e-4,
                     atol=1e-6, hint=GRAD_HINT)
    leaked = field(answer, "autoencoder_grads")
    if not isinstance(leaked, list) or leaked:
        named = ", ".join(map(str, leaked[:3])) + (", ..." if len(leaked) > 3 else "") \
            if isinstance(leaked, list) else type_name(leaked)
        raise AssertionError(f"backward from {what} reached the autoencoder's parameters ({named}). {GRAD_HINT}")


def _exact_case():
    from lesson_lib.data.latents import encode_means
    case = _step_case(t_low=0.1)                 # away from t = 0, where 1 / sqrt(1 - alpha-bar) magnifies rounding
    case["z0"] = case["scale"] * encode_means(_autoencoder(case), case["x0"]).double()
    case["delta"] = _uniform(0.2, 1.0) * torch.randn(case["eps"].shape, dtype=torch.float64)
    return case


def _exact_probe(ns, case):
    return _call(ns, ExactEps(case["z0"], case["alpha_bars"], case["delta"]), _autoencoder(case), case)


@check(points=1, uses=["latent_loss"], case=_exact_case, probe=_exact_probe)
def latent_loss_of_an_exact_eps_model_is_its_planted_error(case, answer):
    """With an eps model exact up to a planted error delta, latent_loss is mean(delta^2)."""
    what = f"{_step_what(case)} with an eps model that is exact up to a planted error delta"
    expected = case["delta"].pow(2).mean().item()
    got = as_number(answer, what, EXACT_HINT)
    if not abs(got - expected) <= 1e-4 * expected:
        raise AssertionError(f"{what} = {got:.7g}, expected mean(delta^2) = {expected:.7g}. {EXACT_HINT}")
