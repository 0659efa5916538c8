"""Likelihood: the variational bound in bits per dimension, its terms, and L_hybrid.

Ho et al. (2020), Eq. 5, bound the negative log-likelihood of a datum x_0 by

    L_vlb = L_T + sum_{t>1} L_{t-1} + L_0
    L_T     = KL( q(x_T | x_0) || N(0, I) )                                   (the prior term)
    L_{t-1} = KL( q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t) )            (Gaussians, closed form)
    L_0     = -log p_theta(x_0 | x_1),  a Gaussian integrated over the 8-bit bin of x_0

each averaged over the D dimensions and divided by ln 2: *bits per dimension*. On data in
[-1, 1] the 256 levels are 2/255 apart, so a bin is x_0 +- 1/255; the two edge bins (0 and
255) are open, (-inf, -1 + 1/255] and [1 - 1/255, inf) (Ho et al., Eq. 13). A model that spends
b bits per dimension would code a 28x28 MNIST digit in 784 b bits; the uniform code spends 8.

Code indices: timestep t = 0..T-1 here is step t + 1 of the paper, so the term computed at
index t is the paper's L_t for t >= 1 and the decoder L_0 at t = 0, exactly as
improved-diffusion's ``_vb_terms_bpd`` does. The reverse process p_theta(x_{t-1} | x_t) =
N(mu_theta, Sigma) has the posterior mean with x0_hat in place of x_0 (Eq. 7), and Sigma is one of

* ``"beta"``: sigma^2 = beta_t;  ``"beta_tilde"``: sigma^2 = beta-tilde_t (clipped at t = 0 to
  beta-tilde of index 1, where beta-tilde is 0), the two fixed choices of Ho et al.;
* ``"learned"``: log Sigma = frac log beta_t + (1 - frac) log beta-tilde_t (Nichol & Dhariwal
  2021, Eq. 15), so "beta" and "beta_tilde" are its ends frac = 1 and frac = 0. (At t = 0
  improved-diffusion's FIXED_LARGE uses beta-tilde of index 1 instead of beta_0; we keep beta_0,
  the frac = 1 end of the learned range.)

:func:`bits_per_dim` estimates the bound of a batch of real images. The prior and L_0 are
computed exactly per image; the sum over t = 1..T-1 by stratified Monte Carlo with K
timesteps per image (one uniform draw in each of K equal strata, weighted by the stratum's
size: unbiased), and all variances from the same network evaluations. :class:`Hybrid` is
L_hybrid = L_simple + lambda L_vlb as a training objective, :class:`LVlb` the bound alone
with the importance sampler of t (:class:`LossSecondMomentSampler`).

Why one module of about 400 lines: the KL, the decoder, the prior and the reverse variance
are the terms of one bound; the estimator, the two objectives and the timestep sampler all
compute that same bound, and must agree term by term.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..arguments import choice, float_tensor, images, integer, number
from .denoiser import check_clip, check_denoiser, check_returned
from .forward import to_x0_eps
from .losses import DiffusionObjective, _target
from .sampling import evaluating
from .schedules import check_timesteps, extract
from .steps import learned_range

LN2 = math.log(2.0)
SQRT_HALF = math.sqrt(0.5)
VARIANCE_CHOICES = ("beta", "beta_tilde", "learned")
BINS = 256


# --- the terms ----------------------------------------------------------------------------

def normal_kl(mean1, log_var1, mean2, log_var2):
    """KL( N(mean1, e^log_var1) || N(mean2, e^log_var2) ) per element, in nats:

        0.5 (-1 + log_var2 - log_var1 + e^(log_var1 - log_var2) + (mean1 - mean2)^2 e^(-log_var2)).
    """
    return 0.5 * (-1.0 + log_var2 - log_var1 + torch.exp(log_var1 - log_var2)
                  + (mean1 - mean2) ** 2 * torch.exp(-log_var2))


def discretized_gaussian_log_likelihood(x, mean, log_variance):
    """log P(x) per element, in nats, where x lies on the 256-level grid of [-1, 1] and P puts on
    each level the mass of N(mean, e^log_variance) over its bin x +- 1/255 (Ho et al., Eq. 13),
    the bin of -1 reaching down to -inf and that of 1 up to +inf.

    Computed with the exact normal CDF Phi (through ``erfc``; improved-diffusion uses a tanh
    approximation), from the side of the mean where the two CDF values differ most, and
    the edge bins through log Phi directly, so that tails do not round to log 0. Like the
    reference, a bin's probability is floored at 1e-12.

    ``x`` is checked once (finite images in [-1, 1]: uint8 or 0..255 data is refused); the
    objectives call the unchecked ``_discretized_log_likelihood`` at every training step.
    """
    images(x, "x")
    return _discretized_log_likelihood(x, mean, log_variance)


def _ndtr(z):
    """Phi(z) = erfc(-z / sqrt 2) / 2, exact to the last digits in the lower tail too (torch's
    ``special.ndtr`` is 2% off at z = -8 and 0 from z = -9)."""
    return 0.5 * torch.special.erfc(-z * SQRT_HALF)


def _discretized_log_likelihood(x, mean, log_variance):
    half = 1.0 / (BINS - 1)
    inv_std = torch.exp(-0.5 * log_variance)
    upper = (x - mean + half) * inv_std
    lower = (x - mean - half) * inv_std
    right = lower > 0                     # the bin lies right of the mean: use the survival function
    mass = torch.where(right, _ndtr(-lower) - _ndtr(-upper), _ndtr(upper) - _ndtr(lower))
    middle = torch.log(mass.clamp(min=1e-12))
    low_edge = torch.special.log_ndtr(upper)       # P(X <= -1 + 1/255)
    high_edge = torch.special.log_ndtr(-lower)     # P(X >= 1 - 1/255)
    return torch.where(x < -1 + half, low_edge, torch.where(x > 1 - half, high_edge, middle))


def decoder_floor_bpd(x0, log_variance, clip_x0=False):
    """The least L_0 any decoder mean can reach at a fixed width, in bits per dimension (the mean
    over every element of ``x0``): what the decoder's width alone costs, whatever the network.

    The decoder puts on x0 the mass of N(mean, sigma^2) over its bin (Ho et al., Eq. 13), and each
    pixel's best mean is found separately:

    * an interior bin x0 +- h (h = 1/255) holds the most mass with the mean at its centre (the
      density is symmetric and falls away from the mean), 2 Phi(h / sigma) - 1, so it costs
      -log2(2 Phi(h / sigma) - 1) bits at least;
    * an edge bin is open, (-inf, -1 + h] for x0 = -1: its mass Phi((-1 + h - mean) / sigma) rises
      as the mean moves down, to 1 as the mean goes to -inf, so it costs nothing in the limit
      (likewise x0 = 1 with the mean going to +inf).

    The floor is therefore the interior pixels' share times -log2(2 Phi(h / sigma) - 1). With
    ``clip_x0=True`` the mean, x0_hat at t = 0, is clipped to [-1, 1]; an edge bin's best mean is
    then the edge itself (mass Phi(h / sigma)), and the floor is L_0 of x0_hat = x0. On MNIST, where
    82% of the pixels are 0, the two floors differ by a factor of about three.

    ``log_variance`` is a number or a tensor that broadcasts against ``x0`` (e.g. log beta_1 of the
    schedule). ``x0`` must be 8-bit images scaled to [-1, 1] (:func:`check_8bit`)."""
    check_8bit(x0)
    x0 = x0.double()
    log_variance = torch.as_tensor(log_variance, dtype=torch.float64).expand_as(x0)
    cost = -_discretized_log_likelihood(x0, x0, log_variance)
    if not check_clip(clip_x0):
        half = 1.0 / (BINS - 1)
        cost = torch.where((x0 < -1 + half) | (x0 > 1 - half), torch.zeros_like(cost), cost)
    return cost.mean().item() / LN2


def _mean_over_dims(values):
    return values.flatten(1).mean(dim=1)


def prior_bpd(schedule, x0):
    """L_T = KL( q(x_T | x_0) || N(0, I) ) per example, in bits per dimension; q(x_T | x_0) =
    N(sqrt(alpha-bar_T) x_0, (1 - alpha-bar_T) I). No network: it is what the forward process
    leaves of x_0. ``x0``: finite images in [-1, 1]."""
    images(x0, "x0")
    x0 = x0.double()
    a_T = schedule.alpha_bars[-1].to(x0.device)
    kl = normal_kl(a_T.sqrt() * x0, torch.log1p(-a_T).expand_as(x0), torch.zeros_like(x0), torch.zeros_like(x0))
    return _mean_over_dims(kl) / LN2


def reverse_log_variance(schedule, t, x, variance, pred=None):
    """log Sigma of p_theta(x_{t-1} | x_t) at code index ``t``, shaped to broadcast against ``x``:
    log beta_t ("beta"), log beta-tilde_t clipped at t = 0 ("beta_tilde"), or
    :func:`~lesson_lib.diffusion.steps.learned_range` of ``pred.frac`` between them ("learned")."""
    log_beta = extract(schedule.betas.log(), t, x)
    log_beta_tilde = extract(schedule.posterior_log_variance, t, x)
    if variance == "beta":
        return log_beta
    if variance == "beta_tilde":
        return log_beta_tilde
    choice(variance, "variance", VARIANCE_CHOICES)
    if pred is None or getattr(pred, "frac", None) is None:
        raise ValueError("variance='learned' needs a model with a learned variance (pred.frac is None); "
                         "use variance='beta' or 'beta_tilde' for a model with fixed variances")
    return learned_range(pred.frac.to(x.dtype), log_beta, log_beta_tilde)


def vlb_terms(schedule, x0, x_t, t, x0_hat, log_variance):
    """The term of the bound at code index ``t`` for each example, in bits per dimension
    (shape (B,)): KL( q(x_{t-1} | x_t, x_0) || N(mu_theta, Sigma) ) for t >= 1 and the decoder
    -log p_theta(x_0 | x_1) (:func:`discretized_gaussian_log_likelihood`) for t = 0.

    mu_theta is the posterior mean (Ho et al., Eq. 7) with ``x0_hat`` in place of x_0; at t = 0
    it is x0_hat itself. Computed in float64. The arguments are checked once (``x0`` finite
    images in [-1, 1], ``x_t`` and ``x0_hat`` finite, ``t`` in 0..T-1); the objectives call the
    unchecked ``_vlb_terms`` at every training step."""
    images(x0, "x0")
    float_tensor(x_t, "x_t")
    float_tensor(x0_hat, "x0_hat")
    check_timesteps(t, schedule.T, "t")
    return _vlb_terms(schedule, x0, x_t, t, x0_hat, log_variance)


def _vlb_terms(schedule, x0, x_t, t, x0_hat, log_variance):
    x0, x_t, x0_hat = x0.double(), x_t.double(), x0_hat.double()
    log_variance = log_variance.double().expand_as(x_t)
    if x_t.device.type != "cpu":          # no data-dependent indexing: the host need not wait
        return torch.where(t == 0, _decoder_nll(schedule, x0, x_t, t, x0_hat, log_variance),
                           _posterior_kl(schedule, x0, x_t, t, x0_hat, log_variance))
    out = torch.empty(x_t.shape[0], dtype=torch.float64)
    first = t == 0
    for rows, term in ((first, _decoder_nll), (~first, _posterior_kl)):
        if rows.any():
            out[rows] = term(schedule, x0[rows], x_t[rows], t[rows], x0_hat[rows], log_variance[rows])
    return out


def _model_mean(schedule, x_t, t, x0_hat):
    return extract(schedule.posterior_mean_coef_x0, t, x_t) * x0_hat + \
        extract(schedule.posterior_mean_coef_xt, t, x_t) * x_t


def _posterior_kl(schedule, x0, x_t, t, x0_hat, log_variance):
    true_mean, true_log_var = _model_mean(schedule, x_t, t, x0), extract(schedule.posterior_log_variance, t, x_t)
    kl = normal_kl(true_mean, true_log_var, _model_mean(schedule, x_t, t, x0_hat), log_variance)
    return _mean_over_dims(kl) / LN2


def _decoder_nll(schedule, x0, x_t, t, x0_hat, log_variance):
    log_p = _discretized_log_likelihood(x0, _model_mean(schedule, x_t, t, x0_hat), log_variance)
    return -_mean_over_dims(log_p) / LN2


# --- the bound of a batch of real images --------------------------------------------------

class BitsPerDim(NamedTuple):
    """The bound of one reverse-process variance on a batch of images, in bits per dimension.

    ``total = prior + decoder + diffusion`` (means over the images); ``diffusion`` is the
    estimate of sum_{t=1}^{T-1} L_t. ``standard_error`` is that of ``total`` over the images (it
    holds both the spread of the data and that of the timestep draws). ``per_image`` holds each
    image's total; ``t`` and ``L_t`` every sampled (timestep, term) pair, for plotting L_t
    against t (t = 0 rows are the decoder). ``timesteps_per_image`` is K (None: all T - 1)."""

    total: float
    prior: float
    decoder: float
    diffusion: float
    standard_error: float
    n: int
    timesteps_per_image: object
    per_image: torch.Tensor
    t: torch.Tensor
    L_t: torch.Tensor


def check_8bit(x0, name="x0"):
    """x0 must be finite images on the 256-level grid of [-1, 1] (k / 127.5 - 1)."""
    images(x0, name)
    levels = (x0.double() + 1) * 127.5
    if x0.numel() and ((levels - levels.round()).abs().max() > 1e-3 or levels.min() < -1e-3 or levels.max() > 255.001):
        raise ValueError(f"{name} must hold 8-bit images scaled to [-1, 1] (uint8 / 127.5 - 1); the bound is a "
                         f"likelihood of discrete data. Images in [0, 1] need x * 2 - 1 first, and dequantised "
                         f"or augmented images have no 8-bit likelihood")


def stratified_timesteps(n, T, K, generator=None):
    """K timesteps in 1..T-1 for each of ``n`` images: one uniform draw in each of K strata of
    (almost) equal size, and the weights (the strata's sizes) that make sum_k w_k L_{t_k} an
    unbiased estimate of sum_{t=1}^{T-1} L_t. Returns long (n, K) and float64 (K,) tensors."""
    K = integer(K, "timesteps_per_image", minimum=1, maximum=T - 1,
                hint=f"at most T - 1 = {T - 1}, or None for every timestep")
    edges = torch.round(torch.linspace(1, T, K + 1, dtype=torch.float64)).long()
    sizes = edges[1:] - edges[:-1]
    u = torch.rand(n, K, generator=generator, dtype=torch.float64)
    t = edges[:-1] + (u * sizes).floor().long().clamp(max=sizes - 1)
    return t, sizes.double()


@torch.no_grad()
def bits_per_dim(denoise, schedule, x0, timesteps_per_image=16, *, variances=None, cond=None, generator=None,
                 batch_size=256):
    """The variational bound (Ho et al., Eq. 5) of each image of ``x0``, in bits per dimension.

    Args:
        denoise: ``denoise(x_t, t, **cond) -> Prediction``, normally ``Denoiser(model, schedule)``
            with x0_hat **not** clipped (see below).
        x0: 8-bit images scaled to [-1, 1], shape (n, C, H, W) (or (n, D)).
        timesteps_per_image: K, the stratified draws of t in 1..T-1 per image; None computes
            every term (T network evaluations per image).
        variances: which reverse variances to score (see :func:`reverse_log_variance`), all from
            the same network evaluations; default "beta" and "beta_tilde", and "learned" when the
            denoiser reports ``pred.frac``.
        cond: keyword arguments for the denoiser with one row per image (e.g. ``{"y": labels}``).
        generator: a CPU ``torch.Generator`` for the timesteps and the noise.
        batch_size: network evaluations per forward pass.

    Returns a dict variance -> :class:`BitsPerDim`. Each image also costs one evaluation at t = 0
    (the decoder L_0 is computed exactly: on MNIST it is a large part of the bound).

    Why x0_hat is not clipped: the bound is what :class:`Hybrid` and :class:`LVlb` train, and they
    compute it from the unclipped x0_hat, so the same bound is the one to report. At t = 0 the
    decoder's mean is x0_hat itself, and the edge bins of Eq. 13 are open: for a pixel at -1 (0 in
    8 bits) the best mean lies *below* -1 (:func:`decoder_floor_bpd`). Clipping x0_hat to
    [-1, 1] moves every such mean onto the edge and throws that away. improved-diffusion's
    ``calc_bpd_loop`` clips (``clip_denoised=True``), which costs little on CIFAR-10, where few
    pixels sit at the edges; on MNIST, where 82% of the test pixels are 0, it raises the L_0 of a
    model trained on the bound from 0.40 to 0.76 bits/dim (lesson 8). A clipped denoiser,
    ``Denoiser(model, schedule, clip_x0=True)``, gives the bound of a slightly different model:
    the reverse process that samples with clipping.
    """
    check_denoiser(denoise)
    check_8bit(x0)
    for variance in variances or ():
        choice(variance, "variances", VARIANCE_CHOICES)
    n, T, device = x0.shape[0], schedule.T, x0.device
    batch_size = integer(batch_size, "batch_size", minimum=1)
    cond = cond or {}
    for key, value in cond.items():
        if not torch.is_tensor(value) or value.shape[0] != n:
            raise ValueError(f"cond[{key!r}] must be a tensor with one row per image ({n})")
    if timesteps_per_image is None:
        ts = torch.arange(1, T).repeat(n, 1)
        weights = torch.ones(T - 1, dtype=torch.float64)
    else:
        ts, weights = stratified_timesteps(n, T, timesteps_per_image, generator)
    K = ts.shape[1]
    ts = torch.cat([torch.zeros(n, 1, dtype=torch.long), ts], dim=1)           # t = 0: the decoder
    weights = torch.cat([torch.ones(1, dtype=torch.float64), weights])
    image = torch.arange(n).repeat_interleave(K + 1)
    flat_t = ts.reshape(-1)
    terms = {}
    with evaluating(getattr(denoise, "model", None)):
        for start in range(0, image.numel(), batch_size):
            idx, t = image[start:start + batch_size], flat_t[start:start + batch_size]
            x = x0[idx.to(device)]
            t_dev = t.to(device)
            eps = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(device=device, dtype=x.dtype)
            x_t = extract(schedule.sqrt_alpha_bars, t_dev, x) * x + extract(schedule.sqrt_one_minus_alpha_bars, t_dev, x) * eps
            pred = check_returned(denoise(x_t, t_dev, **{k: v[idx.to(v.device)] for k, v in cond.items()}))
            if variances is None:
                variances = ("beta", "beta_tilde") + (("learned",) if getattr(pred, "frac", None) is not None else ())
            for variance in variances:
                log_var = reverse_log_variance(schedule, t_dev, x_t, variance, pred)
                terms.setdefault(variance, []).append(_vlb_terms(schedule, x, x_t, t_dev, pred.x0, log_var).cpu())
    prior = prior_bpd(schedule, x0).cpu()
    results = {}
    for variance, values in terms.items():
        L = torch.cat(values).reshape(n, K + 1)
        decoder = L[:, 0]
        diffusion = (L[:, 1:] * weights[1:]).sum(dim=1)
        per_image = prior + decoder + diffusion
        se = per_image.std().item() / math.sqrt(n) if n > 1 else float("nan")
        results[variance] = BitsPerDim(per_image.mean().item(), prior.mean().item(), decoder.mean().item(),
                                       diffusion.mean().item(), se, n, timesteps_per_image, per_image,
                                       ts.reshape(-1), L.reshape(-1))
    return results


def timestep_bins(t, bins=20, T=1000):
    """The range index (0 .. bins - 1) of each timestep ``t`` when 1..T-1 is cut into ``bins`` equal
    ranges [1 + k (T - 1) / bins, 1 + (k + 1) (T - 1) / bins); t = 0 falls in range 0. Returns
    (index, edges): a long tensor shaped like ``t`` and the bins + 1 edges (float64)."""
    bins = integer(bins, "bins", minimum=1)
    edges = torch.linspace(1, T, bins + 1, dtype=torch.float64)
    return torch.bucketize(torch.as_tensor(t).double(), edges[1:-1], right=True), edges


def mean_by_timestep(t, values, bins=20, T=1000):
    """Average sampled terms ``values`` within ``bins`` equal ranges of t in 1..T-1 (t = 0 rows,
    the decoder, are left out; the ranges are :func:`timestep_bins`'): returns (range centres,
    means, counts), for a plot of L_t against t. To read a curve back at every t, index the means
    with ``timestep_bins(t)[0]``, not with the nearest centre."""
    keep = t > 0
    t, values = t[keep].double(), values[keep].double()
    which, edges = timestep_bins(t, bins, T)
    sums = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, values)
    counts = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, torch.ones_like(values))
    return (edges[:-1] + edges[1:]) / 2, sums / counts.clamp(min=1), counts


# --- training objectives --------------------------------------------------------------------

def _split_output(model, output, x0):
    expected = (x0.shape[0], 2 * x0.shape[1]) + tuple(x0.shape[2:])
    if tuple(output.shape) != expected:
        raise ValueError(f"the model returned shape {tuple(output.shape)}, but a learned-variance objective needs "
                         f"{expected} (the prediction, then v): build the model with learn_sigma=True")
    return output.chunk(2, dim=1)


def _learned_vlb(schedule, x0, x_t, t, pred_out, v, prediction, detach_mean):
    """L_t of each example with log Sigma from v (Eq. 15); with ``detach_mean`` the mean gets no
    gradient (so the bound trains only the variance: the reference's ``cat(eps_hat.detach(), v)``)."""
    out = pred_out.detach() if detach_mean else pred_out
    x0_hat, _ = to_x0_eps(schedule, x_t, t, out.float(), prediction)
    log_var = learned_range((v.float() + 1) / 2, extract(schedule.betas.log(), t, x_t.float()),
                            extract(schedule.posterior_log_variance, t, x_t.float()))
    return _vlb_terms(schedule, x0, x_t, t, x0_hat, log_var)


class Hybrid(DiffusionObjective):
    """L_hybrid = L_simple + lambda L_vlb (Nichol & Dhariwal 2021, Eq. 16), lambda = 0.001.

    Per example, with t uniform over 0..T-1: L_simple is the squared error of the prediction
    half of the output, and L_vlb = T L_t (the bound's term at t, in bits per dimension, as
    improved-diffusion's ``RESCALED_MSE`` computes it) with the predicted mean detached, so the
    bound trains the variance and L_simple the mean. The draw is :class:`LSimple`'s.
    """

    def __init__(self, schedule, lambda_vlb=0.001, class_dropout=0.0):
        super().__init__(schedule, class_dropout)
        self.lambda_vlb = number(lambda_vlb, "lambda_vlb", minimum=0)

    def config(self):
        return {"name": "hybrid", "lambda_vlb": self.lambda_vlb, "class_dropout": self.class_dropout}

    def forward(self, net, model, x0, cond, generator):
        d = self.draw(model, x0, cond, generator)
        out, v = _split_output(model, net(d.x_t, d.t, **d.cond), x0)
        mse = F.mse_loss(out.float(), _target(self.schedule, x0, d.eps, d.t, model.prediction).float())
        vlb = _learned_vlb(self.schedule, x0, d.x_t, d.t, out, v, model.prediction, detach_mean=True)
        return mse + self.lambda_vlb * self.schedule.T * vlb.mean().float()


class LossSecondMomentSampler(torch.nn.Module):
    """Importance sampling of t for L_vlb (Nichol & Dhariwal 2021, Sec. 3.3, Eq. 18):

        p_t proportional to sqrt(E[L_t^2]),   L_vlb = E_{t ~ p}[ L_t / p_t ] = E_{t ~ p}[ T L_t w_t ]

    with E[L_t^2] the mean of the last ``history`` losses seen at t, mixed with the uniform
    distribution (weight ``uniform_prob``) so that no t is starved, and w_t = 1 / (T p_t). Until
    every t holds ``history`` losses it samples uniformly (w = 1), as improved-diffusion's
    ``LossSecondMomentResampler`` does. The history is a buffer: checkpoints save it, so a
    resumed run samples t exactly as the uninterrupted one.
    """

    def __init__(self, T, history=10, uniform_prob=0.001):
        super().__init__()
        self.T = integer(T, "T", minimum=1)
        self.history = integer(history, "history", minimum=1)
        self.uniform_prob = number(uniform_prob, "uniform_prob", minimum=0, maximum=1)
        self.register_buffer("losses", torch.zeros(self.T, self.history, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(self.T, dtype=torch.long))

    def warmed_up(self):
        return bool((self.counts >= self.history).all())

    def probabilities(self):
        """p_t (shape (T,), float64)."""
        if not self.warmed_up():
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64, device=self.losses.device)
        p = (self.losses ** 2).mean(dim=1).sqrt()
        p = p / p.sum()
        return (1 - self.uniform_prob) * p + self.uniform_prob / self.T

    def sample(self, batch, generator=None, device="cpu"):
        """``t, w = sampler.sample(B)``: timesteps drawn from p_t and the weights 1 / (T p_t)."""
        p = self.probabilities().to(device)
        t = torch.multinomial(p, batch, replacement=True, generator=generator)
        return t, 1.0 / (self.T * p[t])

    def update(self, t, losses):
        """Record the per-example ``losses`` seen at timesteps ``t`` (newest replaces oldest)."""
        t = torch.as_tensor(t).cpu().long()
        check_timesteps(t, self.T, "t")
        history, counts = self.losses.cpu(), self.counts.cpu()
        for ti, loss in zip(t.tolist(), torch.as_tensor(losses).detach().double().cpu().tolist()):
            row = history[ti]
            if counts[ti] >= self.history:
                row[:-1] = row[1:].clone()
                row[-1] = loss
            else:
                row[counts[ti]] = loss
            counts[ti] += 1
        self.losses.copy_(history)
        self.counts.copy_(counts)


class LVlb(DiffusionObjective):
    """The bound alone as a training objective: L_vlb = T E_{t ~ p}[ w_t L_t ] with t drawn by
    :class:`LossSecondMomentSampler` (``importance=True``) or uniformly; here the mean is not
    detached, so the bound trains mean and variance (Nichol & Dhariwal's L_vlb runs). Every draw
    comes from the trainer's generator. After each step the sampler records the losses of every
    process's batch (gathered across processes, as improved-diffusion does), so all processes
    keep the same history."""

    def __init__(self, schedule, importance=True, class_dropout=0.0, history=10, uniform_prob=0.001):
        super().__init__(schedule, class_dropout)
        self.importance = bool(importance)
        self.sampler = LossSecondMomentSampler(schedule.T, history, uniform_prob)
        self._weights = self._seen = None

    def config(self):
        return {"name": "l_vlb", "importance": self.importance, "class_dropout": self.class_dropout,
                "history": self.sampler.history, "uniform_prob": self.sampler.uniform_prob}

    def sample_t(self, batch, generator, device):
        if not self.importance:
            self._weights = torch.ones(batch, dtype=torch.float64, device=device)
            return super().sample_t(batch, generator, device)
        t, self._weights = self.sampler.sample(batch, generator, device)
        return t

    def forward(self, net, model, x0, cond, generator):
        d = self.draw(model, x0, cond, generator)
        out, v = _split_output(model, net(d.x_t, d.t, **d.cond), x0)
        L = _learned_vlb(self.schedule, x0, d.x_t, d.t, out, v, model.prediction, detach_mean=False)
        self._seen = (d.t.detach(), L.detach())
        return (self.schedule.T * self._weights * L).mean().float()

    def after_step(self, trainer):
        t, L = self._seen
        self.sampler.update(trainer.distributed.gather(t), trainer.distributed.gather(L))
