"""Cascaded diffusion (diffusion/cascade.py, models/unet.py:SuperResUNet): the resampling, the
conditioning augmentation, the SR model's input, and the exact cascade on Gaussian data.

The oracle: x ~ N(mu, Sigma) on 4x4 "images", downsampled by area to 2x2: z = D x with D the 4x16
averaging matrix. With augmentation at level s (alpha-bar a = alpha-bar_k, k = round(s T)) the SR
model sees u = sqrt(a) D x + sqrt(1 - a) e, and p(x | u) is Gaussian in closed form:

    K = Sigma A^T (A Sigma A^T + (1 - a) I)^-1,   A = sqrt(a) D
    E[x | u] = mu + K (u - A mu),   Cov[x | u] = Sigma - K A Sigma

Its exact denoiser (x_0 ~ N(m, S): eps = sqrt(1 - a_t) (a_t S + (1 - a_t) I)^-1 (x_t - sqrt(a_t) m))
stands in for the SR network, and run through the course's sampler it must reproduce that mean and
covariance; the exact base model (x_low ~ N(D mu, D Sigma D^T)) followed by it must reproduce N(mu, Sigma).
"""

import pytest
import torch

from lesson_lib.diffusion.cascade import (AugmentedLSimple, LowResCondition, aug_steps, augment, cascade_sample,
                                          downsample, upsample)
from lesson_lib.diffusion.sampling import ddim_sample, ddpm_sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.models.unet import SuperResUNet, UNet
from lesson_lib.training.trainer import TrainConfig, Trainer


SCHEDULE = NoiseSchedule.from_name("linear", 1000)
TINY = dict(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), dropout=0.0)


# --- resampling ---------------------------------------------------------------------------------

def averaging_matrix(size, factor):
    """D (size^2 / factor^2, size^2): row (i, j) averages the factor x factor block at (i, j), written out."""
    low = size // factor
    D = torch.zeros(low * low, size * size, dtype=torch.float64)
    for i in range(low):
        for j in range(low):
            for a in range(factor):
                for b in range(factor):
                    D[i * low + j, (factor * i + a) * size + factor * j + b] = 1 / factor ** 2
    return D


def test_downsample_is_the_block_average():
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = x.flatten(1) @ averaging_matrix(4, 2).T
    torch.testing.assert_close(downsample(x).flatten(1), expected, rtol=0, atol=1e-15)
    assert downsample(torch.ones(2, 3, 28, 28)).shape == (2, 3, 14, 14)


def test_upsample_is_bilinear_with_half_pixel_centres():
    # align_corners=False: output pixel i samples the input at (i + 0.5) / 2 - 0.5, clamped to the edge.
    row = torch.tensor([[[[0.0, 4.0]]]], dtype=torch.float64)
    torch.testing.assert_close(upsample(row, (1, 4)), torch.tensor([[[[0.0, 1.0, 3.0, 4.0]]]], dtype=torch.float64))
    assert upsample(torch.zeros(2, 1, 14, 14), 28).shape == (2, 1, 28, 28)


def test_resampling_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"divisible by factor=2"):
        downsample(torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"^x must be a batch of images"):
        downsample(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"^size must be a positive int"):
        upsample(torch.zeros(1, 1, 2, 2), (0, 4))


# --- the augmentation -----------------------------------------------------------------------------

def test_the_level_is_a_fraction_of_T():
    assert [int(aug_steps(s, 1000)) for s in (0, 0.1, 0.2, 0.3, 0.5, 1)] == [0, 100, 200, 300, 500, 1000]
    assert aug_steps(torch.tensor([0.0, 0.25]), 100).tolist() == [0, 25]
    with pytest.raises(ValueError, match=r"level must be"):
        aug_steps(1.5, 1000)


def test_augmentation_at_level_zero_is_the_identity():
    x = torch.randn(5, 1, 14, 14, generator=torch.Generator().manual_seed(1))
    z, k = augment(x, 0.0, SCHEDULE, torch.Generator().manual_seed(2))
    assert torch.equal(z, x) and k.tolist() == [0] * 5
    cond = LowResCondition(SCHEDULE, 0.0)(x, 14, torch.Generator().manual_seed(2))
    assert torch.equal(cond["low_res"], x)                   # upsampling to the same size changes nothing


@pytest.mark.parametrize("level", [0.1, 0.3, 0.5])
def test_augmented_variance_is_alpha_bar_var_plus_one_minus_alpha_bar(level):
    std, n = 0.4, 200_000
    x = std * torch.randn(n, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    z, k = augment(x, level, SCHEDULE, torch.Generator().manual_seed(4))
    a = float(SCHEDULE.alpha_bars_with_0[round(level * 1000)])
    assert int(k[0]) == round(level * 1000) and a < 1
    expected = a * std ** 2 + 1 - a
    assert abs(float(z.var()) / expected - 1) < 0.01          # 4n values: relative standard error 0.16%
    # the same z, to rounding, from the formula with the noise drawn again from the same seed
    e = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(z, a ** 0.5 * x + (1 - a) ** 0.5 * e)


def test_the_noise_is_drawn_once_per_sample_and_the_same_at_every_step():
    """Every step of the SR chain sees the same z (per sample), and the samples' z differ."""
    seen = []

    class Spy(torch.nn.Module):
        prediction, num_classes, in_channels, image_size, embed_aug_level = "eps", None, 1, 4, True
        data_shape = (1, 4, 4)

        def forward(self, x, t, low_res=None, aug_level=None):
            seen.append((low_res.clone(), aug_level.clone()))
            return torch.zeros_like(x)

    class Base(Spy):
        image_size, data_shape = 2, (1, 2, 2)

        def forward(self, x, t):
            return torch.zeros_like(x)

    cascade_sample(Base(), Spy(), SCHEDULE, 3, level=0.3, steps=5, progress=False)
    assert len(seen) == 5
    for low_res, k in seen[1:]:
        assert torch.equal(low_res, seen[0][0]) and k.tolist() == [300] * 3
    first = seen[0][0]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])


# --- the SR model's input ---------------------------------------------------------------------------

def test_the_sr_model_reads_image_and_low_res_channels():
    model = SuperResUNet(**TINY)
    assert model.conv_in.in_channels == 2 and model.in_channels == 1 and model.cond_channels == 1
    rgb = SuperResUNet(**dict(TINY, in_channels=3))
    assert rgb.conv_in.in_channels == 6 and rgb.data_shape == (3, 8, 8)
    assert SuperResUNet(**dict(TINY, in_channels=3), cond_channels=1).conv_in.in_channels == 4
    # the plain U-Net is unchanged: the same config keys and state dict
    plain = UNet(**TINY)
    assert plain.conv_in.in_channels == 1 and "cond_channels" not in plain.config
    assert set(model.state_dict()) - set(plain.state_dict()) == {k for k in model.state_dict()
                                                                  if k.startswith("aug_embedding.")}
    assert SuperResUNet.from_config(model.config).config == model.config


def test_the_sr_model_uses_low_res_and_the_level():
    torch.manual_seed(0)
    model = SuperResUNet(**TINY).eval()
    for p in model.parameters():                              # leave the zero initialisation
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 500])
    low, k = torch.randn(2, 1, 8, 8), torch.tensor([0, 200])
    out = model(x, t, low_res=low, aug_level=k)
    assert out.shape == x.shape
    assert not torch.allclose(out, model(x, t, low_res=low + 1, aug_level=k))
    assert not torch.allclose(out, model(x, t, low_res=low, aug_level=k + 100))


def test_the_sr_model_errors_name_the_argument():
    model = SuperResUNet(**TINY)
    x, t = torch.zeros(2, 1, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"^low_res must be a float tensor of shape \(2, 1, 8, 8\)"):
        model(x, t, aug_level=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"^low_res must be"):
        model(x, t, low_res=torch.zeros(2, 1, 4, 4), aug_level=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"^aug_level must be a long tensor of shape \(2,\)"):
        model(x, t, low_res=x, aug_level=torch.tensor([0.2, 0.2]))
    with pytest.raises(ValueError, match=r"embed_aug_level=False"):
        SuperResUNet(**TINY, embed_aug_level=False)(x, t, low_res=x, aug_level=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"^cond_channels must be a positive int"):
        SuperResUNet(**TINY, cond_channels=0)


def test_the_sr_model_trains_with_augmentation_through_the_trainer():
    images = torch.rand(16, 1, 8, 8) * 2 - 1
    model = SuperResUNet(**TINY)
    objective = AugmentedLSimple(NoiseSchedule.from_name("linear", 100), level=0.3, random_level=True)
    trainer = Trainer(model, images, objective, TrainConfig(batch_size=8, lr=1e-3, seed=0, log_every=1),
                      cond={"low_res": downsample(images)})
    first = trainer.train_step()
    for _ in range(20):
        last = trainer.train_step()
    assert torch.isfinite(torch.tensor([first, last])).all() and last < first
    with pytest.raises(ValueError, match=r"cond=\{'low_res': downsample\(images\)\}"):
        objective(model, model, images[:2], {}, torch.Generator().manual_seed(0))


# --- the exact cascade on Gaussian data --------------------------------------------------------------

SIZE, FACTOR = 4, 2
D = averaging_matrix(SIZE, FACTOR)                                   # (4, 16)
_L = torch.randn(16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
SIGMA = 0.5 * _L @ _L.T / 16 + 0.05 * torch.eye(16, dtype=torch.float64)
MU = torch.linspace(-0.5, 0.5, 16, dtype=torch.float64)
# upsample() as a matrix (16, 4): column j is the upsampled j-th basis image
UP = upsample(torch.eye(4, dtype=torch.float64).view(4, 1, 2, 2), SIZE).view(4, 16).T


def conditional(a):
    """K, and Cov[x | u] of u = sqrt(a) D x + sqrt(1 - a) e (the closed form in the module docstring)."""
    A = a ** 0.5 * D
    K = SIGMA @ A.T @ torch.linalg.inv(A @ SIGMA @ A.T + (1 - a) * torch.eye(4, dtype=torch.float64))
    return K, A, SIGMA - K @ A @ SIGMA


def gaussian_eps(x_t, t, schedule, mean, cov):
    """E[eps | x_t] for x_0 ~ N(mean (B, d), cov (d, d)), flat x_t (B, d), at one timestep (the sampler's)."""
    assert (t == t[0]).all()
    a = schedule.alpha_bars[t[0]]
    M = (1 - a).sqrt() * torch.linalg.inv(a * cov + (1 - a) * torch.eye(len(cov), dtype=cov.dtype))
    return (x_t - a.sqrt() * mean) @ M.T


class ExactBase(torch.nn.Module):
    """The exact denoiser of the low-resolution data N(D mu, D Sigma D^T) on 2x2 images."""

    prediction, num_classes, in_channels, image_size = "eps", None, 1, SIZE // FACTOR
    data_shape = (1, SIZE // FACTOR, SIZE // FACTOR)

    def forward(self, x, t):
        eps = gaussian_eps(x.flatten(1).double(), t, SCHEDULE, (D @ MU)[None], D @ SIGMA @ D.T)
        return eps.view(x.shape).to(x.dtype)


class ExactSuperRes(torch.nn.Module):
    """The exact denoiser of p(x | u): u recovered from the upsampled low_res, its level from aug_level.
    ``ignore_cond`` returns the unconditional eps of N(mu, Sigma): the test must then fail."""

    prediction, num_classes, in_channels, image_size, embed_aug_level = "eps", None, 1, SIZE, True
    data_shape = (1, SIZE, SIZE)

    def __init__(self, ignore_cond=False):
        super().__init__()
        self.ignore_cond = ignore_cond

    def forward(self, x, t, low_res=None, aug_level=None):
        if self.ignore_cond:
            return gaussian_eps(x.flatten(1).double(), t, SCHEDULE, MU[None], SIGMA).view(x.shape).to(x.dtype)
        u = torch.linalg.lstsq(UP, low_res.flatten(1).double().T).solution.T            # (B, 4): upsampling is injective
        a = float(SCHEDULE.alpha_bars_with_0[int(aug_level[0])])
        assert (aug_level == aug_level[0]).all()
        K, A, cov = conditional(a)
        mean = MU + (u - A @ MU) @ K.T
        return gaussian_eps(x.flatten(1).double(), t, SCHEDULE, mean, cov).view(x.shape).to(x.dtype)


def assert_gaussian(samples, mean, cov, n):
    """The sample mean and covariance of ``samples`` (n, d) match N(mean, cov) within 5 standard errors
    (plus 2e-3 for the sampler's discretisation)."""
    d = samples - samples.mean(0)
    var = cov.diagonal()
    assert ((samples.mean(0) - mean).abs() <= 5 * (var / n).sqrt() + 2e-3).all(), \
        f"means differ by up to {float((samples.mean(0) - mean).abs().max()):.3g}"
    err = (d.T @ d / (n - 1) - cov).abs()
    assert (err <= 5 * ((torch.outer(var, var) + cov ** 2) / n).sqrt() + 2e-3).all(), \
        f"covariances differ by up to {float(err.max()):.3g}"


N = 4000


def conditional_samples(level, model, sampler=ddim_sample, **kwargs):
    """SR samples for one fixed low-resolution image c, each with its own augmentation noise."""
    c = (D @ (MU + torch.linalg.cholesky(SIGMA) @ torch.randn(16, dtype=torch.float64,
                                                                generator=torch.Generator().manual_seed(6))))
    low = c.view(1, 1, 2, 2).expand(N, 1, 2, 2)
    generator = torch.Generator().manual_seed(7)
    cond = LowResCondition(SCHEDULE, level)(low, SIZE, generator)
    x_T = torch.randn(N, 1, SIZE, SIZE, dtype=torch.float64, generator=generator)
    x = sampler(model, SCHEDULE, x_T=x_T, model_kwargs=cond, generator=generator, progress=False, **kwargs)
    return x.flatten(1), c


@pytest.mark.parametrize("level", [0.0, 0.2])
def test_the_exact_conditional_denoiser_reproduces_the_closed_form_conditional(level):
    samples, c = conditional_samples(level, ExactSuperRes(), steps=200)
    a = float(SCHEDULE.alpha_bars_with_0[round(level * 1000)])
    K, A, cov = conditional(a)
    # u = sqrt(a) c + sqrt(1 - a) e: over e the samples are N(mu + K (sqrt(a) c - A mu), cov + (1 - a) K K^T)
    mean = MU + K @ (a ** 0.5 * c - A @ MU)
    assert_gaussian(samples, mean, cov + (1 - a) * K @ K.T, N)
    if level == 0:
        # Dx = c holds on every sample: the SR output downsamples back to its condition
        assert float((samples @ D.T - c).abs().max()) < 1e-3


def test_the_oracle_check_fails_when_the_conditioning_is_ignored():
    samples, c = conditional_samples(0.0, ExactSuperRes(ignore_cond=True), steps=200)
    K, A, cov = conditional(1.0)
    with pytest.raises(AssertionError, match="differ"):
        assert_gaussian(samples, MU + K @ (c - A @ MU), cov, N)


def test_ddpm_with_every_step_also_reproduces_the_conditional():
    samples, c = conditional_samples(0.0, ExactSuperRes(), sampler=ddpm_sample)
    K, A, cov = conditional(1.0)
    assert_gaussian(samples, MU + K @ (c - A @ MU), cov, N)


@pytest.mark.parametrize("level", [0.0, 0.3])
def test_the_exact_cascade_reproduces_the_data(level):
    """Base then SR, both exact, at any level: p(x) = integral of p(x | u) p(u)."""
    x_high, x_low, cond = cascade_sample(ExactBase(), ExactSuperRes(), SCHEDULE, N, level=level, steps=200,
                                         progress=False, return_stages=True)
    assert_gaussian(x_low.flatten(1), D @ MU, D @ SIGMA @ D.T, N)
    assert_gaussian(x_high.flatten(1), MU, SIGMA, N)
    assert cond["aug_level"].tolist() == [round(level * 1000)] * N

