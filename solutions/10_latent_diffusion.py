# %% [markdown]
# # Lesson 10 · Exercises: latent diffusion
#
# Latent diffusion (Rombach, Blattmann, Lorenz, Esser & Ommer, 2022) trains in two stages. First an autoencoder
# learns to compress an image $x$ into a small latent and back: its encoder $\mathcal E$ returns a diagonal Gaussian
# posterior $q(z \mid x) = \mathcal N(\mu, \operatorname{diag}\sigma^2)$, its decoder $\mathcal D$ maps a latent to
# an image. Then a diffusion model learns the distribution of the latents, $z_0 = s\,\mu(x)$ with a scale factor
# $s$ that gives them unit variance, and its samples are decoded.
#
# Three exercises, about an hour: the KL term of the autoencoder's objective, the scale factor, and the loss of one
# training step of the diffusion model on latents. The checks you can run use the course's shipped MNIST
# autoencoder, `mnist_autoencoder` (28 x 28 digits to latents of 4 x 7 x 7). Runtime: a few seconds (2,000 digits
# are encoded and a small U-Net takes 60 steps).

# %%
# On Colab, install the course library; elsewhere this cell does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lesson_lib @ git+https://github.com/ddpm-course/ddpm-course"], check=True)

# %%
import torch

from lesson_lib.course import feedback

from lesson_lib.data.images import load_mnist
from lesson_lib.data.latents import encode_means, scale_factor as library_scale_factor
from lesson_lib.diffusion.latent import kl_to_standard_normal
from lesson_lib.diffusion.losses import l_simple
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.models.unet import UNet
from lesson_lib.pretrained import load_autoencoder


# %% [markdown]
# ## 1 · The KL term
#
# The encoder returns two tensors of the latent's shape: `mean` ($\mu$) and `logvar` ($\log\sigma^2$, clamped by the
# encoder to $[-30, 20]$). The autoencoder's objective is the reconstruction error of a decoded sample
# $z = \mu + \sigma e$ plus a small multiple of
#
# $$\mathrm{KL}\big(q(z \mid x)\,\big\|\,\mathcal N(0, I)\big) = \sum_i \tfrac12\big(\mu_i^2 + \sigma_i^2 - 1
# - \log\sigma_i^2\big)$$
#
# (Kingma & Welling, 2014, Appendix B): lesson 8's Gaussian KL with the prior $\mathcal N(0, 1)$ as the second
# Gaussian, summed over every element $i$ of one image's latent. Write `kl_term`: `mean` and `logvar` have any shape
# `(B, ...)`; return one number per image, a tensor of shape `(B,)` in `mean`'s dtype, in nats. Take
# $\sigma^2 = \exp(\text{logvar})$ and $\log\sigma^2 = \text{logvar}$ as they come.

# %%
def kl_term(mean, logvar):
    """KL( N(mean, diag exp(logvar)) || N(0, I) ) of each image in nats (Kingma & Welling, 2014, Appendix B):
    0.5 (mean^2 + sigma^2 - 1 - log sigma^2) summed over every latent element of the image.

    mean and logvar are tensors of one shape (B, ...); return a tensor of shape (B,) in mean's dtype."""
    ### BEGIN SOLUTION
    return (0.5 * (mean ** 2 + torch.exp(logvar) - 1 - logvar)).flatten(1).sum(1)
    ### END SOLUTION


# %% [markdown]
# A check you can run: eight test digits through the shipped autoencoder. Their KL is far from 0, because the
# posterior is nearly a point: its $\sigma$ is a tiny fraction of the spread of the means. The autoencoder was
# trained with the KL weighted by $10^{-6}$ (its card's `kl_weight`): the term keeps $\sigma$ off 0, and it does not
# make the latents $\mathcal N(0, I)$; that is the diffusion model's job.

# %%
autoencoder, shipped_scale = load_autoencoder("mnist_autoencoder")
test_images, _ = load_mnist("test")
with torch.no_grad():
    mean, logvar = autoencoder.encode(test_images[:8])
kl = kl_term(mean, logvar)
print("KL per digit (nats):", " ".join(f"{v:.0f}" for v in kl.tolist()))
library = kl_to_standard_normal(mean, logvar).flatten(1).sum(1)
print("the library's KL, summed per digit, agrees:", torch.allclose(kl, library))
print(f"median sigma {(0.5 * logvar).exp().median().item():.1e}; std of the means {mean.std().item():.2f}")
print("KL at the prior (mean 0, logvar 0):", kl_term(torch.zeros(1, 4, 7, 7), torch.zeros(1, 4, 7, 7)).item())
feedback.check("10", "kl_term", globals())  # what the grader will say about it


# %% [markdown]
# ## 2 · The scale factor
#
# The forward process assumes data of about unit variance: $x_T \sim \mathcal N(0, I)$ must drown the signal. Nothing
# in the autoencoder's objective holds its latents there (the KL, weighted by $10^{-6}$, barely pulls): this
# autoencoder's happen to come out near 1, another's need not (Stable Diffusion's factor is 0.18215). So the latents
# are multiplied by one number,
#
# $$s = 1 / \operatorname{std}(z) \quad\text{over every element of every training image's latent,}$$
#
# and a sample of the diffusion model is divided by $s$ before it is decoded. Rombach et al. estimate the std on the
# first batch of training; the course takes it over the whole set, since a batch's std differs from the set's by
# its sampling error and by whatever that batch happens to hold.
#
# Write `scale_factor`: `latents` is a float tensor `(N, c, h, w)` (float32 or float64), the encoded training set.
# Return one number, 1 over the standard deviation of all its elements together (all images, all channels), computed
# in float64. On a set of a million numbers it makes no difference whether the variance divides by $n$ or $n - 1$.

# %%
def scale_factor(latents):
    """1 / std over every element of ``latents`` (the whole encoded training set), in float64: the factor that
    gives the latents unit variance.

    latents is a float tensor (N, c, h, w); return one number (a Python float)."""
    ### BEGIN SOLUTION
    return 1.0 / latents.double().std().item()
    ### END SOLUTION


# %% [markdown]
# A check you can run: the posterior means of 2,000 training digits, ordered by class as a loader that does not
# shuffle hands them out. Their first batch of 64 holds only zeros, and its factor is off; one factor per channel
# would give each channel a different scale; the shipped card's factor comes from all 60,000 training digits.

# %%
images, digits = load_mnist("train")
order = digits[:2000].argsort(stable=True)                      # classes in blocks: all the zeros first
means = encode_means(autoencoder, images[:2000][order])
s = scale_factor(means)
print(f"whole set: {s:.4f} (the library's: {library_scale_factor(means):.4f}; the shipped card's: {shipped_scale:.4f})")
first = digits[:2000][order][:64].unique().tolist()
print(f"first batch of 64 (digits {first}): {1 / means[:64].double().std().item():.4f}")
print("one per channel:", " ".join(f"{1 / c.std().item():.4f}" for c in means.double().transpose(0, 1)))
print(f"std of the scaled latents: {(means.double() * s).std().item():.6f}")
feedback.check("10", "scale_factor", globals())  # what the grader will say about it


# %% [markdown]
# ## 3 · One training step on latents
#
# The diffusion model's loss is L_simple on latents instead of pixels (Rombach et al., Eq. 2; with a class label
# $y$ as the condition, Eq. 3):
#
# $$z_0 = s\,\mu(x_0),\qquad z_t = \sqrt{\bar\alpha_t}\, z_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon
# \quad\text{(Ho et al., Eq. 4)},\qquad L = \operatorname{mean}\big(\epsilon - \epsilon_\theta(z_t, t, y)\big)^2 .$$
#
# $z_0$ is the posterior mean, not a sample of it: the encoded training set is computed once and kept, and a sample
# would differ from the mean by about $\sigma$, whose median in exercise 1 is 1.5e-04 against a spread of 0.95.
# The autoencoder is frozen by now, so no gradient may flow into it, and nothing is decoded during training.
#
# Write `latent_loss`. `autoencoder.encode(x0)` returns `(mean, logvar)`; call the network as
# `eps_model(z_t, t, y)`; `t` (a long tensor `(B,)`) and `eps` (shaped like the latent) are given, so draw nothing;
# `alpha_bars[t]` is $\bar\alpha_t$ (float64: cast it to the latent's dtype). Return the loss as a one-number tensor
# that carries the network's graph, ready for `loss.backward()`.

# %%
def latent_loss(eps_model, autoencoder, x0, y, t, eps, alpha_bars, scale):
    """L_simple of latent diffusion for one batch (Rombach et al., 2022, Eq. 2): z0 = scale * the posterior mean of
    x0 (no gradient into the autoencoder), z_t from Ho et al.'s Eq. 4 with the given t and eps, and the mean over
    every entry of (eps - eps_model(z_t, t, y))^2.

    Return a one-number tensor through which loss.backward() reaches the eps model."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        mean, _ = autoencoder.encode(x0)
    z0 = scale * mean
    a = alpha_bars[t].to(z0.dtype).reshape(-1, *[1] * (z0.ndim - 1))
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
    return ((eps - eps_model(z_t, t, y)) ** 2).mean()
    ### END SOLUTION


# %% [markdown]
# A check you can run: a small class-conditional U-Net on the 4 x 7 x 7 latents of 256 digits, 60 steps of Adam
# with `latent_loss`, each on a fresh batch, $t$ and $\epsilon$. The loss falls, it is the library's L_simple on
# $s\,\mu(x_0)$, and its gradient reaches the U-Net and not the autoencoder.

# %%
torch.manual_seed(0)
unet = UNet(in_channels=4, image_size=7, base_channels=16, channel_mults=(1,), num_res_blocks=1,
            attention_resolutions=(), dropout=0.0, num_classes=10)
schedule = NoiseSchedule.linear(1000)
optimizer = torch.optim.Adam(unet.parameters(), lr=2e-3)
generator = torch.Generator().manual_seed(0)
losses = []
for step in range(60):
    batch = torch.randint(0, 256, (64,), generator=generator)
    t, eps = torch.randint(0, 1000, (64,), generator=generator), torch.randn(64, 4, 7, 7, generator=generator)
    loss = latent_loss(unet, autoencoder, images[batch], digits[batch], t, eps, schedule.alpha_bars, shipped_scale)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(f"loss over the first 10 steps {sum(losses[:10]) / 10:.2f}, over the last 10 {sum(losses[-10:]) / 10:.2f}")
mine = latent_loss(unet, autoencoder, images[batch], digits[batch], t, eps, schedule.alpha_bars, shipped_scale)
reference = l_simple(unet, schedule, shipped_scale * encode_means(autoencoder, images[batch]), t=t, eps=eps,
                     y=digits[batch])
print(f"after training, on the last batch: latent_loss {mine.item():.3f}, the library's L_simple "
      f"{reference.item():.3f}")
print("gradient in every U-Net weight:", all(p.grad is not None for p in unet.parameters()),
      "| in an autoencoder weight:", any(p.grad is not None for p in autoencoder.parameters()))
feedback.check("10", "latent_loss", globals())  # what the grader will say about it
