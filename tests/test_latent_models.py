"""The shipped latent diffusion models (lesson 10): a latent model's card names its autoencoder and scale,
the command lines decode its samples (never clipping x0_hat), and the shipped autoencoder's scale factor
holds on held-out digits."""

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


def test_a_latent_card_names_its_autoencoder_and_a_positive_scale():
    card = pretrained.model_card("mnist_latent")
    assert card["latent"] == {"autoencoder": "mnist_autoencoder",
                              "scale_factor": pretrained.model_card("mnist_autoencoder")["scale_factor"]}
    check_card(card)
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


def test_the_sample_command_decodes_a_latent_model_to_digits(tmp_path, capsys):
    out = tmp_path / "latent.npz"
    args = argparse.Namespace(pretrained="mnist_latent", sampler=None, steps=None)
    assert sample.defaults(args) == ("ddim", 50, "linspace")
    sample.main(["--pretrained", "mnist_latent", "--n", "10", "--steps", "4", "--guidance", "2", "--out", str(out),
                 "--device", "cpu"])
    assert "ddim, 4 steps, guidance w = 2" in capsys.readouterr().out
    with np.load(out) as saved:
        assert saved["images"].shape == (10, 28, 28) and saved["images"].dtype == np.uint8
        assert saved["images"].std() > 20                  # decoded digits, not a flat latent read as an image


@needs_data
def test_the_shipped_autoencoder_scales_held_out_latents_to_unit_std():
    autoencoder, scale = pretrained.load_autoencoder("mnist_autoencoder")
    test, labels, _ = load_dataset("mnist", "test", data_dir=DATA_DIR, as_uint8=True)
    latents = encode_dataset(autoencoder, test[:1000], labels[:1000], scale=scale)
    assert 0.9 <= float(latents.data.std()) <= 1.1
    assert latents.data.shape == (1000, 4, 7, 7) and latents.cond["y"].tolist() == labels[:1000].tolist()
