"""The shipped latent diffusion models (lesson 10, MNIST and CIFAR-10): a latent model's card names its
autoencoder and scale, the command lines decode its samples (never clipping x0_hat), and each shipped
autoencoder's scale factor holds on held-out images."""

import argparse
import os

import numpy as np
import pytest
import torch

from lesson_lib import pretrained, sample
from lesson_lib.cards import check_card
from lesson_lib.data.images import load_dataset
from lesson_lib.data.latents import encode_dataset

DATA_DIR = os.environ.get("DDPM_DATA_DIR")
needs_data = pytest.mark.skipif(not DATA_DIR, reason="set DDPM_DATA_DIR to the prepared datasets")


LATENT_MODELS = {"mnist_latent": "mnist_autoencoder", "cifar10_latent": "cifar10_autoencoder"}


@pytest.mark.parametrize("name", list(LATENT_MODELS))
def test_a_shipped_latent_card_names_its_autoencoder_and_its_scale(name):
    card = pretrained.model_card(name)
    assert card["latent"] == {"autoencoder": LATENT_MODELS[name],
                              "scale_factor": pretrained.model_card(LATENT_MODELS[name])["scale_factor"]}
    check_card(card)


def test_cifar10_latent_is_measured_at_the_n_of_its_reconstruction_floor():
    """Lesson 10 compares cifar10_latent's FIDs with cifar10_autoencoder's reconstruction FID "at the same n"."""
    evaluation = pretrained.model_card("cifar10_latent")["evaluation"]
    rows = [evaluation[key] for key in evaluation if key.startswith("guidance_")]
    assert len(rows) == 3 and {row["n"] for row in rows} == {evaluation["reconstruction_n"]} == {5000}
    autoencoder = pretrained.model_card("cifar10_autoencoder")["evaluation"]
    assert (autoencoder["n"], autoencoder["reconstruction_fid"]) == (5000, evaluation["reconstruction_fid"])


def test_a_card_with_a_malformed_latent_is_refused():
    card = pretrained.model_card("mnist_latent")
    for bad in ({"autoencoder": "mnist_autoencoder"}, {"autoencoder": 3, "scale_factor": 1.0},
                {"autoencoder": "mnist_autoencoder", "scale_factor": 0.0}, "mnist_autoencoder"):
        with pytest.raises(ValueError, match="latent must be a dict of autoencoder"):
            check_card({**card, "latent": bad})


def test_latent_decoding_is_empty_for_pixels_and_decodes_without_clipping_for_latents():
    assert pretrained.latent_decoding("mnist_cond") == {}
    decoding = pretrained.latent_decoding("mnist_latent")
    assert decoding["clip_x0"] is False
    autoencoder, scale = pretrained.load_autoencoder("mnist_autoencoder")
    z = torch.randn(2, *autoencoder.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(decoding["decode"](z), autoencoder.decode(z / scale))


@pytest.mark.parametrize("name, shape, steps", [("mnist_latent", (10, 28, 28), 50), ("cifar10_latent", (10, 32, 32, 3), 25)])
def test_the_sample_command_decodes_a_latent_model_to_images(name, shape, steps, tmp_path, capsys):
    out = tmp_path / "latent.npz"
    args = argparse.Namespace(pretrained=name, sampler=None, steps=None)
    assert sample.defaults(args) == ("ddim", steps, "linspace")            # the card's own sampling
    sample.main(["--pretrained", name, "--n", "10", "--steps", "4", "--guidance", "2", "--out", str(out),
                 "--device", "cpu"])
    assert "ddim, 4 steps, guidance w = 2" in capsys.readouterr().out
    with np.load(out) as saved:
        assert saved["images"].shape == shape and saved["images"].dtype == np.uint8
        assert saved["images"].std() > 20                  # decoded images, not a flat latent read as an image


@needs_data
@pytest.mark.parametrize("dataset, shape", [("mnist", (4, 7, 7)), ("cifar10", (8, 8, 8))])
def test_the_shipped_autoencoders_scale_held_out_latents_to_unit_std(dataset, shape):
    autoencoder, scale = pretrained.load_autoencoder(f"{dataset}_autoencoder")
    test, labels, _ = load_dataset(dataset, "test", data_dir=DATA_DIR, as_uint8=True)
    latents = encode_dataset(autoencoder, test[:1000], labels[:1000], scale=scale)
    assert 0.9 <= float(latents.data.std()) <= 1.1
    assert latents.data.shape == (1000, *shape) and latents.cond["y"].tolist() == labels[:1000].tolist()


def _latent_checkpoint(path, image_size=7):
    """A briefly trained class-conditional U-Net on 4 x image_size x image_size latents, saved as a checkpoint."""
    from lesson_lib.diffusion.losses import LSimple
    from lesson_lib.diffusion.schedules import NoiseSchedule
    from lesson_lib.models.unet import UNet
    from lesson_lib.training.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model = UNet(in_channels=4, image_size=image_size, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                 attention_resolutions=(), dropout=0.0, num_classes=10)
    trainer = Trainer(model, torch.randn(32, 4, image_size, image_size), LSimple(NoiseSchedule.linear(1000)),
                      TrainConfig(batch_size=8, log_every=10 ** 9), cond={"y": torch.arange(32) % 10},
                      checkpoint_path=path)
    trainer.run(2, progress=False)
    trainer.save()
    return path


def test_a_latent_checkpoint_samples_through_the_autoencoder_it_names(tmp_path, capsys):
    checkpoint = str(_latent_checkpoint(tmp_path / "latent.pt"))
    out = tmp_path / "own.npz"
    sample.main(["--checkpoint", checkpoint, "--autoencoder", "mnist_autoencoder", "--n", "10", "--steps", "2",
                 "--out", str(out), "--device", "cpu"])
    with np.load(out) as saved:
        assert saved["images"].shape == (10, 28, 28)
    capsys.readouterr()
    refused = [(["--checkpoint", checkpoint], "it is a latent diffusion model; pass --autoencoder NAME"),
               (["--pretrained", "mnist_latent", "--autoencoder", "mnist_autoencoder"], "--autoencoder goes with --checkpoint"),
               (["--checkpoint", checkpoint, "--autoencoder", "nope"], "--autoencoder must be one of cifar10_autoencoder, mnist_autoencoder"),
               (["--checkpoint", str(_latent_checkpoint(tmp_path / "eight.pt", 8)), "--autoencoder", "mnist_autoencoder"],
                "makes latents of shape (4, 7, 7), but this checkpoint's model samples (4, 8, 8)")]
    for flags, message in refused:
        with pytest.raises(SystemExit):
            sample.main([*flags, "--n", "10", "--steps", "2", "--out", str(tmp_path / "x.png"), "--device", "cpu"])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
