"""Exact answers: data whose every noisy marginal is known in closed form, and the optimal denoiser.

A network trained on data can only approximate E[eps | x_t]; for Gaussian data, and for a mixture
of Gaussians, it is known exactly, so the library's formulas can be tested against the truth
rather than against a second implementation (and lessons can show guidance or a sampler on the
exact model). With alpha-bar = a_t and x_0 ~ N(mu, s^2 I):

    q(x_t) = N(sqrt(a_t) mu, v_t I),            v_t = a_t s^2 + 1 - a_t
    E[eps | x_t] = sqrt(1 - a_t) (x_t - sqrt(a_t) mu) / v_t
    E[x_0 | x_t] = mu + sqrt(a_t) s^2 (x_t - sqrt(a_t) mu) / v_t                  (Tweedie's formula)

and the probability-flow ODE (DDIM with eta = 0 and infinitely many steps) maps x_t to
x_s = sqrt(a_s) mu + sqrt(v_s / v_t) (x_t - sqrt(a_t) mu): it keeps each point's standard score.

For a class-conditional mixture, class k ~ N(mu_k, s^2 I) with prior weights w_k, each class is
such a Gaussian, the unconditional eps is the posterior-weighted average of the classes', and the
exact classifier is p_t(k | x_t) proportional to w_k N(x_t; sqrt(a_t) mu_k, v_t I).

Both are ``nn.Module`` "models" (``prediction``, ``num_classes``, ``in_channels``) that the
samplers and objectives can call like a network, in the precision of their input; ``denoise``
gives the exact :class:`~lesson_lib.diffusion.denoiser.Prediction` directly.
"""

import torch

from ..models.base import check_prediction
from .denoiser import Prediction
from .schedules import extract


def _level(schedule, t, x):
    """alpha-bar at code timesteps ``t`` (s = -1 is the data: alpha-bar = 1), shaped like ``x``."""
    return extract(schedule.alpha_bars_with_0, t + 1, x)


class GaussianData(torch.nn.Module):
    """x_0 ~ N(``mean``, ``std``^2 I) in ``dim`` dimensions under ``schedule``, and its exact
    denoiser: called as a model it returns the exact eps, x0 or v (``prediction``)."""

    num_classes, image_size = None, None

    def __init__(self, schedule, mean=0.0, std=1.0, prediction="eps", dim=1):
        super().__init__()
        check_prediction(prediction)
        self.schedule, self.mean, self.std, self.prediction, self.in_channels = schedule, mean, std, prediction, dim

    def variance(self, t, x):
        """v_t = a_t s^2 + 1 - a_t, the variance of each coordinate of x_t (t = -1: the data's s^2)."""
        a = _level(self.schedule, t, x)
        return a * self.std ** 2 + 1 - a

    def denoise(self, x_t, t, **cond):
        """The exact Prediction(E[x_0 | x_t], E[eps | x_t])."""
        a = _level(self.schedule, t, x_t)
        centred, v = x_t - a.sqrt() * self.mean, a * self.std ** 2 + 1 - a
        return Prediction(self.mean + a.sqrt() * self.std ** 2 / v * centred, (1 - a).sqrt() / v * centred)

    def forward(self, x_t, t, **cond):
        x0, eps = self.denoise(x_t, t)[:2]
        if self.prediction == "v":
            a = _level(self.schedule, t, x_t)
            return a.sqrt() * eps - (1 - a).sqrt() * x0
        return eps if self.prediction == "eps" else x0

    def flow(self, x_t, t, s):
        """The probability-flow ODE's exact map from timestep ``t`` to ``s`` (long tensors (B,);
        s = -1 is the data)."""
        a_t, a_s = _level(self.schedule, t, x_t), _level(self.schedule, s, x_t)
        v_t, v_s = self.variance(t, x_t), self.variance(s, x_t)
        return a_s.sqrt() * self.mean + (v_s / v_t).sqrt() * (x_t - a_t.sqrt() * self.mean)

    def sample(self, n, generator=None, dtype=torch.float64):
        """``n`` draws of the data, shape (n, dim)."""
        return self.mean + self.std * torch.randn(n, self.in_channels, generator=generator, dtype=dtype)


class GaussianMixture(torch.nn.Module):
    """A class-conditional mixture: class k ~ N(``means[k]``, ``std``^2 I) with prior ``weights``
    (uniform by default), under ``schedule``. Called as a model, ``mixture(x_t, t, y)`` is the exact
    eps given the class (``y = K``, the null class, or no ``y``: the unconditional eps);
    :meth:`log_posterior` is the exact noisy classifier log p_t(y | x_t)."""

    prediction, image_size = "eps", None

    def __init__(self, schedule, means, std, weights=None):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        self.schedule, self.std = schedule, std
        self.num_classes, self.in_channels = means.shape
        self.register_buffer("means", means)
        weights = torch.full((self.num_classes,), 1.0 / self.num_classes, dtype=torch.float64) if weights is None \
            else torch.as_tensor(weights, dtype=torch.float64)
        self.register_buffer("log_weights", weights.log())

    def _per_class(self, x, t):
        """eps(x_t | k) for every class (B, K, D) and log w_k N(x_t; sqrt(a_t) mu_k, v_t I) + const (B, K)."""
        a = _level(self.schedule, t, x)                                     # (B, 1)
        v = a * self.std ** 2 + 1 - a
        centred = x[:, None] - a.sqrt()[:, None] * self.means.to(x.dtype)   # (B, K, D)
        eps = (1 - a).sqrt()[:, None] * centred / v[:, None]
        return eps, self.log_weights.to(x.dtype) - (centred ** 2).sum(-1) / (2 * v)

    def log_posterior(self, x_t, t):
        """log p_t(y | x_t) for every class (B, K): the exact classifier of classifier guidance."""
        return self._per_class(x_t, t)[1].log_softmax(-1)

    def forward(self, x_t, t, y=None):
        eps_k, logits = self._per_class(x_t, t)
        unconditional = (logits.softmax(-1)[..., None] * eps_k).sum(1)
        if y is None:
            return unconditional
        conditional = eps_k[torch.arange(len(x_t)), y.clamp(max=self.num_classes - 1)]
        return torch.where((y == self.num_classes)[:, None], unconditional, conditional)

    def sample(self, y, generator=None, dtype=torch.float64):
        """One draw of the data for each label in ``y``, shape (len(y), D)."""
        noise = torch.randn(len(y), self.in_channels, generator=generator, dtype=dtype)
        return self.means.to(dtype)[y] + self.std * noise
