"""The first stage of latent diffusion: what the autoencoder minimises (Rombach et al., 2022).

The autoencoder (:class:`lesson_lib.models.autoencoder.AutoencoderKL`) encodes an image x into a
diagonal Gaussian q(z | x) = N(mu, diag(sigma^2)) and decodes a sample of it. Its objective, per
image, is

    L(x) = sum_pixels (x - D(z))^2  +  kl_weight * KL( q(z | x) || N(0, I) ),     z = mu + sigma * e,  e ~ N(0, I)

    KL( N(mu, sigma^2) || N(0, 1) ) = 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)   per latent element

(the reparameterised sample z of Kingma & Welling 2014, whose Appendix B works out this KL; it is
summed over the latent's elements). The KL is :func:`~lesson_lib.diffusion.likelihood.normal_kl`
with the prior N(0, 1), the same Gaussian KL the variational bound of lesson 8 sums.

Why the squared error (L2) per pixel, where the reference has the absolute error (L1) of
``ldm/modules/losses/contperceptual.py``: there L1 is one term beside a perceptual (LPIPS) and an
adversarial loss, which this course cannot have offline. Alone, the squared error is the negative
log-likelihood of a Gaussian decoder of fixed variance (up to a constant), so the objective is a
VAE's negative ELBO with the KL weighted down (a beta-VAE with beta far below 1); and in trials of
the recipes' autoencoders it gave both the higher PSNR and a reconstruction FID no worse (the figures
are in :mod:`lesson_lib.recipes.autoencoder`).
``reconstruction="l1"`` is there to compare: where a latent could stand for several images, the L1
decoder outputs their median pixel by pixel, the L2 decoder their mean.

Why so small a ``kl_weight``: the KL is not there to make the latent a N(0, I) that one could
sample (that is the diffusion model's job). Its -log sigma^2 keeps sigma away from 0, so the decoder
learns from slightly noisy latents and decodes nearby latents to nearby images, and its mu^2 pulls
the latent's scale gently towards 1. The reference weighs it 1e-6 against the summed L1; the recipes
of :mod:`lesson_lib.recipes.autoencoder` weigh it 1e-6 against the summed squared error and say what
that measured. The scale the latent ends at is set by the reconstruction more than by the KL, and
:mod:`lesson_lib.data.latents` rescales it to unit variance before diffusion.
"""

import torch

from ..arguments import choice, number
from .likelihood import normal_kl
from .losses import Objective

RECONSTRUCTIONS = ("l1", "l2")


def kl_to_standard_normal(mean, logvar):
    """KL( N(mean, exp(logvar)) || N(0, 1) ) per element, in nats: 0.5 (mean^2 + sigma^2 - 1 - log sigma^2)
    (Kingma & Welling 2014, Appendix B, before its sum), from :func:`~lesson_lib.diffusion.likelihood.normal_kl`."""
    zero = torch.zeros((), dtype=mean.dtype, device=mean.device)
    return normal_kl(mean, logvar, zero, zero)


class AutoencoderLoss(Objective):
    """The autoencoder's objective (module docstring): the summed squared (or, ``reconstruction="l1"``,
    absolute) error of the decoded sample plus ``kl_weight`` times the summed KL to N(0, I), divided by the pixels of
    an image so that it reads as an error per pixel, averaged over the batch.

    It has no noise schedule, so the Trainer's ``schedule`` is None and its checkpoints store no betas.
    The model is called as ``net(x0, noise)`` and returns ``(x_hat, mean, logvar)``
    (:meth:`AutoencoderKL.forward <lesson_lib.models.autoencoder.AutoencoderKL.forward>`); the noise e of
    the sample z = mean + sigma * e is drawn from the Trainer's generator, so a resumed run draws the same.
    """

    def __init__(self, kl_weight=1e-6, reconstruction="l2"):
        super().__init__()
        self.kl_weight = number(kl_weight, "kl_weight", minimum=0,
                                hint="the weight of the summed KL against the summed reconstruction error, e.g. 1e-6")
        self.reconstruction = choice(reconstruction, "reconstruction", RECONSTRUCTIONS,
                                     hint="l2: the squared error per pixel; l1: the absolute error (the reference's)")

    def config(self):
        return {"name": "autoencoder", "kl_weight": self.kl_weight, "reconstruction": self.reconstruction}

    def terms(self, net, x0, noise=None):
        """Per image: the summed reconstruction error and the summed KL, two (B,) float32 tensors
        (``noise`` None decodes the posterior mean, which an evaluation does)."""
        x_hat, mean, logvar = net(x0, noise)
        if x_hat.shape != x0.shape:
            raise ValueError(f"the autoencoder returned images of shape {tuple(x_hat.shape)} for x0 of shape "
                             f"{tuple(x0.shape)}; its decoder must give back the input's shape")
        error = (x_hat.float() - x0.float())
        error = error.abs() if self.reconstruction == "l1" else error ** 2
        return error.flatten(1).sum(1), kl_to_standard_normal(mean.float(), logvar.float()).flatten(1).sum(1)

    def forward(self, net, model, x0, cond, generator):
        if cond:
            raise ValueError(f"an autoencoder takes no conditioning, got cond with {', '.join(cond)}: "
                             f"pass no cond to the Trainer")
        latent = (x0.shape[0], model.latent_channels, x0.shape[2] // model.factor, x0.shape[3] // model.factor)
        noise = torch.empty(latent, device=x0.device, dtype=x0.dtype).normal_(generator=generator)
        reconstruction, kl = self.terms(net, x0, noise)
        return (reconstruction + self.kl_weight * kl).mean() / x0[0].numel()
