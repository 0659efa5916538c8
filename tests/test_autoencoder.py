"""Latent diffusion's first stage: the autoencoder, its objective, the latents and their scale.

* the KL term against a vector worked out by hand, and the objective's value on pinned outputs;
* encode/decode shapes for every f on MNIST and CIFAR-10 shapes, and the errors of bad arguments;
* the scale factor is 1 / std over the whole set, not over its first batch; held-out latents of a
  briefly trained autoencoder have std in [0.9, 1.1] once scaled;
* the latent sampler never clips, and with an orthogonal linear autoencoder and Gaussian data,
  sampling the latent Gaussian and decoding equals sampling the pixel Gaussian from the mapped x_T;
* the autoencoder trains with the Trainer (no schedule), resumes, ships and loads (hash-checked).
"""

import math
import os

import pytest
import torch

from lesson_lib import pretrained
from lesson_lib.data import latents
from lesson_lib.data.latents import encode_dataset, latent_decoder, scale_factor
from lesson_lib.diffusion.latent import AutoencoderLoss, kl_to_standard_normal
from lesson_lib.diffusion.oracles import GaussianData
from lesson_lib.diffusion.sampling import ddim_sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.evaluation.metrics import psnr
from lesson_lib.models.autoencoder import AutoencoderKL, autoencoder_preset
from lesson_lib.models.unet import UNet
from lesson_lib.sample import generate
from lesson_lib.training.trainer import TrainConfig, Trainer

DATA_DIR = os.environ.get("DDPM_DATA_DIR")
needs_data = pytest.mark.skipif(not DATA_DIR, reason="set DDPM_DATA_DIR to the prepared datasets")


def tiny(**overrides):
    torch.manual_seed(0)
    settings = dict(in_channels=1, image_size=8, factor=2, latent_channels=2, base_channels=8)
    return AutoencoderKL(**{**settings, **overrides})


# --- the KL term and the objective -----------------------------------------------------------

def test_the_kl_term_matches_a_vector_worked_out_by_hand():
    # 0.5 (mu^2 + sigma^2 - 1 - log sigma^2) with (mu, sigma^2) = (0, 1), (1, 1), (-2, 4), (0.5, 0.25):
    # 0, 0.5, 0.5 (4 + 4 - 1 - log 4) = 3.5 - log 2, 0.5 (0.25 + 0.25 - 1 + log 4) = log 2 - 0.25; sum 3.75
    mean = torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64)
    logvar = torch.tensor([0.0, 0.0, math.log(4.0), math.log(0.25)], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.5, 3.5 - math.log(2.0), math.log(2.0) - 0.25], dtype=torch.float64)
    torch.testing.assert_close(kl_to_standard_normal(mean, logvar), expected, rtol=0, atol=1e-15)
    assert kl_to_standard_normal(mean, logvar).sum().item() == pytest.approx(3.75, abs=1e-14)


class PinnedNet(torch.nn.Module):
    """An 'autoencoder' whose outputs are pinned, to check the objective's arithmetic."""

    latent_channels, factor = 4, 2

    def forward(self, x, noise):
        assert noise.shape == (1, 4, 1, 1)                      # one latent of c = 4, 2x2 / f = 1x1
        x_hat = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]]]])
        mean = torch.tensor([0.0, 1.0, -2.0, 0.5]).reshape(1, 4, 1, 1)
        logvar = torch.tensor([0.0, 0.0, math.log(4.0), math.log(0.25)]).reshape(1, 4, 1, 1)
        return x_hat, mean, logvar


@pytest.mark.parametrize("reconstruction, summed_error", [("l1", 2.5), ("l2", 2.25)])
def test_the_objective_is_the_summed_error_plus_the_weighted_kl_per_pixel(reconstruction, summed_error):
    net, x0 = PinnedNet(), torch.zeros(1, 1, 2, 2)
    loss = AutoencoderLoss(kl_weight=0.2, reconstruction=reconstruction)(net, net, x0, {}, torch.Generator())
    assert loss.item() == pytest.approx((summed_error + 0.2 * 3.75) / 4, abs=1e-6)
    assert AutoencoderLoss(0.2, reconstruction).config() == {"name": "autoencoder", "kl_weight": 0.2,
                                                              "reconstruction": reconstruction}


def test_the_objective_refuses_bad_arguments_and_conditioning():
    with pytest.raises(ValueError, match="kl_weight must be a finite number >= 0"):
        AutoencoderLoss(kl_weight=-1e-6)
    with pytest.raises(ValueError, match="reconstruction must be one of 'l1', 'l2'"):
        AutoencoderLoss(reconstruction="lpips")
    net = PinnedNet()
    with pytest.raises(ValueError, match="takes no conditioning.*pass no cond"):
        AutoencoderLoss()(net, net, torch.zeros(1, 1, 2, 2), {"y": torch.zeros(1, dtype=torch.long)}, torch.Generator())


# --- the network -----------------------------------------------------------------------------

@pytest.mark.parametrize("factor", [1, 2, 4])
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_encode_and_decode_shapes_for_each_factor(factor, channels, size):
    torch.manual_seed(0)
    model = AutoencoderKL(in_channels=channels, image_size=size, factor=factor, latent_channels=3, base_channels=8)
    x = torch.rand(2, channels, size, size) * 2 - 1
    mean, logvar = model.encode(x)
    side = size // factor                     # MNIST 28 -> 28, 14, 7; CIFAR-10 32 -> 32, 16, 8
    assert mean.shape == logvar.shape == (2, 3, side, side) and model.latent_shape == (3, side, side)
    assert model.decode(mean).shape == x.shape
    x_hat, m, lv = model(x, torch.randn(2, 3, side, side))
    assert x_hat.shape == x.shape and torch.equal(m, mean) and torch.equal(lv, logvar)
    assert model.prediction is None and model.data_shape == (channels, size, size)


def test_the_presets_and_a_rebuild_from_the_config():
    assert autoencoder_preset("mnist").latent_shape == (4, 7, 7)
    assert autoencoder_preset("cifar10").latent_shape == (8, 8, 8)
    model = tiny()
    again = AutoencoderKL.from_config(model.config)
    assert again.config == model.config and again.latent_shape == model.latent_shape


@pytest.mark.parametrize("kwargs, message", [
    (dict(factor=3), r"factor must be one of 1, 2, 4 \(the downsampling factor f.*got factor=3"),
    (dict(factor=8), "factor must be one of 1, 2, 4"),
    (dict(factor=2.0), "factor must be one of 1, 2, 4"),
    (dict(image_size=30, factor=4), r"image_size=30 is not divisible by factor=4.*7.5 pixels a side; choose "
                                    r"factor in \(1, 2\), or pad or resize the images to a multiple of 4"),
    (dict(factor=4, channel_mults=(1, 2)),
     r"channel_mults must have log2\(factor\) \+ 1 = 3 entries.*or leave it None"),
    (dict(latent_channels=0), "latent_channels must be at least 1"),
])
def test_bad_arguments_name_the_argument_and_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderKL(**{**dict(in_channels=1, image_size=28), **kwargs})


def test_bad_inputs_name_the_argument():
    model = tiny()
    with pytest.raises(ValueError, match=r"x must have 1 channel\(s\)"):
        model.encode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible by factor=2"):
        model.encode(torch.zeros(1, 1, 7, 7))
    with pytest.raises(ValueError, match=r"z must have 2 channel\(s\) \(its latent_channels\)"):
        model.decode(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="noise must have the latent's shape"):
        model(torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 8))


# --- latents and their scale -----------------------------------------------------------------

class Identity(torch.nn.Module):
    """An 'autoencoder' whose latent is the input itself (posterior mean x, sigma ~ 0)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def encode(self, x):
        return self.weight * x, torch.full_like(x, -30.0)

    def decode(self, z):
        return self.weight * z


def test_the_scale_factor_is_one_over_the_std_of_the_whole_set_not_of_its_first_batch():
    g = torch.Generator().manual_seed(0)
    first = 0.5 * torch.randn(100, 2, 3, 3, generator=g, dtype=torch.float64)     # one quiet batch ...
    rest = 2.0 * torch.randn(900, 2, 3, 3, generator=g, dtype=torch.float64)      # ... and a wider rest
    images = torch.cat([first, rest]).float()
    data = encode_dataset(Identity(), images, batch_size=100)
    whole = 1 / images.double().std().item()
    assert data.scale_factor == pytest.approx(whole, rel=1e-12)
    assert abs(data.scale_factor - 1 / images[:100].double().std().item()) > 1.0   # the first batch's is far off
    assert data.data.double().std().item() == pytest.approx(1.0, abs=1e-6)
    assert scale_factor(images) == data.scale_factor and data.cond == {}
    held_out = encode_dataset(Identity(), images[:100], scale=data.scale_factor)  # the training set's factor
    assert held_out.scale_factor == data.scale_factor
    torch.testing.assert_close(held_out.data, data.data[:100])
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        encode_dataset(Identity(), images, scale=0.0)
    with pytest.raises(ValueError, match="zero variance"):
        scale_factor(torch.ones(10))


def test_latents_are_cached_and_encoded_again_for_other_weights(tmp_path, monkeypatch):
    images = torch.rand(40, 1, 8, 8) * 2 - 1
    labels = torch.arange(40) % 10
    model, cache = tiny(), tmp_path / "latents.pt"
    first = encode_dataset(model, images, labels, cache=cache)
    assert cache.exists() and torch.equal(first.cond["y"], labels) and first.data.shape == (40, 2, 4, 4)
    calls = []
    encode = latents.encode_means
    monkeypatch.setattr(latents, "encode_means", lambda *a, **k: calls.append(1) or encode(*a, **k))
    again = encode_dataset(model, images, labels, cache=cache)                     # read back
    assert calls == [] and torch.equal(again.data, first.data)
    with torch.no_grad():
        model.encoder.conv_in.bias.add_(0.5)                                       # other weights: again
    changed = encode_dataset(model, images, labels, cache=cache)
    assert calls == [1] and not torch.equal(changed.data, first.data)
    encode_dataset(model, images[:20], cache=cache)                                # other images: again
    assert calls == [1, 1]


@needs_data
def test_held_out_latents_of_a_briefly_trained_autoencoder_have_unit_std_once_scaled():
    from lesson_lib.data.images import load_mnist
    train, _ = load_mnist("train", data_dir=DATA_DIR, as_uint8=True)
    test, _ = load_mnist("test", data_dir=DATA_DIR, as_uint8=True)
    torch.manual_seed(0)
    model = AutoencoderKL(in_channels=1, image_size=28, factor=4, latent_channels=2, base_channels=8)
    config = TrainConfig(batch_size=32, lr=2e-3, ema_decay=0.0, log_every=10)
    trainer = Trainer(model, train[:2000], AutoencoderLoss(1e-6), config, device="cpu")
    trainer.run(60, progress=False)
    assert trainer.history[-1][1] < 0.5 * trainer.history[0][1]                    # it learned something
    with torch.no_grad():       # the KL hardly fixes the latent's scale: make the means 5 times larger
        model.encoder.out[-1].weight[:2] *= 5
        model.encoder.out[-1].bias[:2] *= 5
    scaled = encode_dataset(model, train[:2000])
    assert 1 / scaled.scale_factor > 2                                             # so the scaling matters
    held_out = encode_dataset(model, test[:1000], scale=scaled.scale_factor)
    assert 0.9 <= held_out.data.std().item() <= 1.1


# --- sampling in the latent space ------------------------------------------------------------

class LatentGaussian(GaussianData):
    """Gaussian data standing for latents: the exact denoiser, with the data_shape generate() reads."""

    @property
    def data_shape(self):
        return (self.in_channels,)


def test_the_latent_sampler_never_clips():
    schedule = NoiseSchedule.linear(1000)
    model = LatentGaussian(schedule, mean=3.0, std=0.5, dim=4)          # latents far outside [-1, 1]
    decode = latent_decoder(Identity(), scale=0.5)                     # images = latents / 0.5
    kept = generate(model, schedule, 256, steps=50, progress=False, clip_x0=False, decode=decode)
    assert kept.mean().item() == pytest.approx(6.0, abs=0.15)
    assert kept.std().item() == pytest.approx(1.0, abs=0.1)
    clipped = generate(model, schedule, 256, steps=50, progress=False, clip_x0=True, decode=decode)
    assert clipped.mean().item() < 3.0                                   # what clipping would have done


def test_a_latent_unet_samples_and_decodes_to_images():
    autoencoder = autoencoder_preset("mnist", base_channels=8)
    torch.manual_seed(0)
    unet = UNet(in_channels=4, image_size=7, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                attention_resolutions=(), dropout=0.0)
    images = generate(unet, NoiseSchedule.linear(1000), 3, steps=2, progress=False, clip_x0=False,
                      decode=latent_decoder(autoencoder, 0.7))
    assert images.shape == (3, 1, 28, 28) and torch.isfinite(images).all()


def test_latent_sampling_through_an_orthogonal_decoder_equals_pixel_sampling_of_the_mapped_noise():
    """encode = Q^T x, decode = Q z with Q orthogonal: Gaussian data N(mu, s^2 I) has latents N(Q^T mu, s^2 I),
    and DDIM of the exact latent denoiser from z_T, decoded, is DDIM of the exact pixel denoiser from Q z_T."""
    D, s = 6, 0.7
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0]
    mu = torch.tensor([3.0, -2.5, 0.0, 1.5, -0.5, 2.0], dtype=torch.float64)       # outside [-1, 1] too
    schedule = NoiseSchedule.linear(1000)
    z_T = torch.randn(64, D, generator=g, dtype=torch.float64)
    z_0 = ddim_sample(GaussianData(schedule, mean=Q.T @ mu, std=s, dim=D), schedule, x_T=z_T, steps=20, progress=False)
    x_0 = ddim_sample(GaussianData(schedule, mean=mu, std=s, dim=D), schedule, x_T=z_T @ Q.T, steps=20, progress=False)
    torch.testing.assert_close(z_0 @ Q.T, x_0, rtol=0, atol=1e-6)
    assert (x_0.abs() > 1).any()                                           # nothing was clipped on the way
    clipped = ddim_sample(GaussianData(schedule, mean=Q.T @ mu, std=s, dim=D), schedule, x_T=z_T, steps=20,
                          progress=False, clip_x0=True)
    assert (clipped @ Q.T - x_0).abs().max() > 0.1                           # clipping in latent space breaks it


# --- training, shipping, loading -------------------------------------------------------------

def test_the_trainer_trains_an_autoencoder_without_a_schedule_and_resumes(tmp_path):
    images = (torch.rand(64, 1, 8, 8) * 255).to(torch.uint8)
    config = TrainConfig(batch_size=16, lr=1e-3, ema_decay=0.9, log_every=2)
    trainer = Trainer(tiny(), images, AutoencoderLoss(1e-6), config, checkpoint_path=tmp_path / "ae.pt")
    assert trainer.schedule is None
    trainer.run(4, progress=False, checkpoint_every=2)
    resumed = Trainer(tiny(), images, AutoencoderLoss(1e-6), config, checkpoint_path=tmp_path / "ae.pt")
    assert resumed.resume() and resumed.step == 4
    trainer.run(6, progress=False)
    resumed.run(6, progress=False)
    assert trainer.history == resumed.history                       # the same batches and the same noise
    with pytest.raises(ValueError, match="training objective"):
        Trainer(tiny(), images, AutoencoderLoss(1e-3), config, checkpoint_path=tmp_path / "ae.pt").resume()


def test_an_autoencoder_ships_and_loads_hash_checked(tmp_path):
    images = (torch.rand(32, 1, 8, 8) * 255).to(torch.uint8)
    trainer = Trainer(tiny(), images, AutoencoderLoss(1e-6), TrainConfig(batch_size=8, ema_decay=0.5), device="cpu")
    trainer.run(2, progress=False)
    payload = pretrained.model_payload(trainer)
    assert payload["betas"] is None and payload["model_class"] == "AutoencoderKL"
    card = {"name": "tiny_ae", "kind": "autoencoder", "description": "a test", "dataset": "mnist",
            "parameters": sum(p.numel() for p in trainer.model.parameters()), "torch": torch.__version__,
            "hardware": "CPU", "wall_time_s": 0.1, "command": "none", "recipe": "none", "evaluation": {"n": 0},
            "architecture": "AutoencoderKL", "model_config": dict(trainer.model.config),
            "latent_shape": list(trainer.model.latent_shape), "scale_factor": 0.8}
    pretrained.save_artifact(payload, tmp_path / "tiny_ae.pt", card)
    autoencoder, scale = pretrained.load_autoencoder("tiny_ae", weights_dir=tmp_path)
    assert scale == 0.8 and not autoencoder.training and autoencoder.card["kind"] == "autoencoder"
    expected = AutoencoderKL.from_config(trainer.model.config)
    expected.load_state_dict({k: v.half().float() for k, v in trainer.ema.model.state_dict().items()})
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    torch.testing.assert_close(autoencoder.decode(autoencoder.encode(x)[0]), expected.decode(expected.encode(x)[0]))
    assert pretrained.available("autoencoder", tmp_path) == ["tiny_ae"]
    with pytest.raises(ValueError, match="not a diffusion model"):
        pretrained.load_pretrained("tiny_ae", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="lacks scale_factor"):
        pretrained.save_artifact(payload, tmp_path / "other.pt", dict(card, scale_factor=None))
    corrupted = bytearray((tmp_path / "tiny_ae.pt").read_bytes())
    corrupted[-1] ^= 1
    (tmp_path / "tiny_ae.pt").write_bytes(bytes(corrupted))
    with pytest.raises(RuntimeError, match="does not match its model card"):
        pretrained.load_autoencoder("tiny_ae", weights_dir=tmp_path)


# --- PSNR, and the reconstruction figures ------------------------------------------------------

def test_psnr_matches_its_closed_form():
    x = torch.zeros(2, 1, 4, 4)
    reference = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.2)])
    # MSE 0.01 and 0.04 on a range of 2: 10 log10(4 / 0.01) = 26.0206 dB, 10 log10(4 / 0.04) = 20 dB
    torch.testing.assert_close(psnr(x, reference), torch.tensor([10 * math.log10(400), 20.0], dtype=torch.float64))
    assert psnr(x * 127.5, reference * 127.5, data_range=255.0)[1].item() == pytest.approx(20.0)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, reference[:1])


@needs_data
def test_a_perfect_autoencoder_scores_the_real_data_floor_exactly():
    from lesson_lib.data.images import load_mnist
    from lesson_lib.recipes.autoencoder import reconstruction_figures
    train, _ = load_mnist("train", data_dir=DATA_DIR, as_uint8=True)
    test, _ = load_mnist("test", data_dir=DATA_DIR, as_uint8=True)
    figures = reconstruction_figures(Identity(), "mnist", train[:500], test[:200], n=100, data_dir=DATA_DIR)
    assert figures["reconstruction_fid"] == figures["fid_floor_train_vs_test"]      # the floor's two image sets
    assert figures["reconstruction_kid"] == figures["kid_floor"] and figures["psnr_db"] == math.inf
    assert figures["scaled_latent_std_test"] == pytest.approx(1.0, abs=0.1)
