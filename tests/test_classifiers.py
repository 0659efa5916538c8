"""Tests for the course classifiers (models.classifiers, training.classifier_fit, evaluation.judges): architectures, training loop, shipped weights, judging samples. Their recipe runs in tests/test_recipes.py."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from lesson_lib import pretrained
from lesson_lib.evaluation.judges import class_accuracy, classify, load_classifier
from lesson_lib.files import sha256_of
from lesson_lib.models.classifiers import CIFAR10Classifier, MNISTClassifier, build_classifier
from lesson_lib.training.classifier_fit import fit_classifier, random_crop_flip

DATA_DIR = os.environ.get("DDPM_DATA_DIR")
needs_data = pytest.mark.skipif(not DATA_DIR, reason="set DDPM_DATA_DIR to the prepared datasets "
                                                     "(python shared/data/prepare.py DIR)")

def mnist_test_images(n):
    data = np.load(os.path.join(DATA_DIR, "mnist.npz"))
    x = torch.from_numpy(data["x_test"][:n]).float()[:, None] / 127.5 - 1
    return x, torch.from_numpy(data["y_test"][:n]).long()


@pytest.fixture(scope="module")
def mnist_classifier():
    return load_classifier("mnist")


def synthetic_dataset(n, channels, size, seed=0):
    """Ten fixed random templates plus noise: an easy 10-class problem in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(10, channels, size, size, generator=g) * 2 - 1
    y = torch.arange(n) % 10
    x = (templates[y] + 0.3 * torch.randn(n, channels, size, size, generator=g)).clamp(-1, 1)
    return x, y


# ----------------------------------------------------------------------------- architectures

def test_feature_and_logit_shapes():
    mnist, cifar = MNISTClassifier().eval(), CIFAR10Classifier().eval()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert mnist.features(x).shape == (3, 128) and mnist(x).shape == (3, 10)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert cifar.features(x).shape == (2, 512) and cifar(x).shape == (2, 10)
    assert mnist.feature_dim == 128 and cifar.feature_dim == 512
    # forward = head(features): logits are a function of the penultimate features only
    torch.testing.assert_close(cifar(x), cifar.head(cifar.features(x)) / 8)


def test_parameter_counts():
    assert sum(p.numel() for p in MNISTClassifier().parameters()) < 1_000_000   # < 2 MB in fp16
    assert 2_000_000 <= sum(p.numel() for p in CIFAR10Classifier().parameters()) <= 6_000_000


def test_classifiers_reject_bad_input():
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        MNISTClassifier()(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        CIFAR10Classifier()(torch.zeros(2, 3, 28, 28))
    with pytest.raises(TypeError, match="127.5"):
        CIFAR10Classifier()(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="dataset"):
        build_classifier("imagenet")


def test_random_crop_flip_gives_a_crop_of_the_padded_image_or_its_mirror():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 8, 8, generator=g)
    out = random_crop_flip(x, padding=2, generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    flipped = 0
    for i in range(len(x)):
        crops = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        if any(torch.equal(out[i], c) for c in crops):
            continue
        assert any(torch.equal(out[i], c.flip(2)) for c in crops), f"image {i} is not a crop"
        flipped += 1
    assert 0 < flipped < len(x)
    no_pad = random_crop_flip(x, padding=0, generator=g)
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(2)) for a, b in zip(no_pad, x))


# ----------------------------------------------------------------------------- training

@pytest.mark.parametrize("cls, channels, size, augment, lr", [
    (MNISTClassifier, 1, 28, False, 0.1),
    (CIFAR10Classifier, 3, 32, True, 0.4),
])
def test_training_loop_decreases_the_loss(cls, channels, size, augment, lr):
    torch.manual_seed(0)
    x, y = synthetic_dataset(10, channels, size)      # one image per class, 12 steps
    model = cls()
    result = fit_classifier(model, x, y, x, y, epochs=12, batch_size=10, lr=lr,
                            augment=augment, device="cpu", progress=False)
    losses = result["losses"]
    assert len(losses) == 12
    assert np.mean(losses[-2:]) < losses[0] - 0.3, losses
    assert 0 <= result["test_accuracy"] <= 1 and not model.training


def test_fit_classifier_rejects_bad_arguments():
    x, y = synthetic_dataset(10, 1, 28)
    with pytest.raises(ValueError, match="epochs"):
        fit_classifier(MNISTClassifier(), x, y, epochs=0, batch_size=4, lr=0.1)
    with pytest.raises(ValueError, match="same length"):
        fit_classifier(MNISTClassifier(), x, y[:5], epochs=1, batch_size=4, lr=0.1)


# ----------------------------------------------------------------------------- shipped weights

def test_shipped_mnist_weights_are_small_fp16_and_documented():
    path = pretrained.WEIGHTS_DIR / "mnist_classifier.pt"
    info = json.loads(path.with_suffix(".json").read_text())
    assert path.stat().st_size < 2_000_000
    assert info["sha256"] == sha256_of(path)
    assert info["evaluation"]["test_accuracy"] >= 0.99 and info["feature_dim"] == 128
    for key in ("epochs", "hardware", "wall_time_s", "torch", "recipe", "command"):
        assert key in info
    state = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())


def test_load_classifier_returns_float32_eval_model(mnist_classifier):
    assert isinstance(mnist_classifier, MNISTClassifier) and not mnist_classifier.training
    assert all(p.dtype == torch.float32 for p in mnist_classifier.parameters())
    assert mnist_classifier.name.startswith("MNISTClassifier[")


def test_corrupted_weights_raise_a_clear_error(tmp_path):
    for suffix in (".pt", ".json"):
        shutil.copy(pretrained.WEIGHTS_DIR / f"mnist_classifier{suffix}", tmp_path)
    load_classifier("mnist", weights_dir=tmp_path)            # the intact copy loads
    path = tmp_path / "mnist_classifier.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="corrupted or was replaced.*python -m lesson_lib.train --recipe mnist_classifier"):
        load_classifier("mnist", weights_dir=tmp_path)


def test_missing_weights_name_the_training_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m lesson_lib.train --recipe cifar10_classifier"):
        load_classifier("cifar10", weights_dir=tmp_path)


def test_save_then_load_round_trips_through_fp16(tmp_path):
    model = MNISTClassifier().eval()
    card = dict(name="mnist_classifier", kind="classifier", description="untrained", dataset="mnist", parameters=1,
                torch=torch.__version__, hardware="here", wall_time_s=0.0, command="none", recipe="mnist_classifier",
                evaluation={}, architecture="MNISTClassifier", feature_dim=128, dtype="float16")
    sidecar = pretrained.save_artifact(pretrained.fp16_weights(model.state_dict()), tmp_path / "mnist_classifier.pt", card)
    loaded = load_classifier("mnist", weights_dir=tmp_path)
    assert sidecar["sha256"] == loaded.info["sha256"]
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    torch.testing.assert_close(loaded.features(x), model.features(x), rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match=r"\.pt"):
        pretrained.save_artifact(pretrained.fp16_weights(model.state_dict()), tmp_path / "weights.bin", card)


@needs_data
def test_shipped_mnist_classifier_accuracy(mnist_classifier):
    x, y = mnist_test_images(2000)
    logits = mnist_classifier(x)
    assert (logits.argmax(1) == y).float().mean().item() >= 0.985


# ----------------------------------------------------------------------------- judging samples

@needs_data
def test_classify_and_class_accuracy(mnist_classifier):
    x, y = mnist_test_images(500)
    labels, confidence = classify(x, "mnist", classifier=mnist_classifier, batch_size=128)
    probs = mnist_classifier(x).softmax(dim=1)
    assert torch.equal(labels, probs.argmax(1))
    torch.testing.assert_close(confidence, probs.max(1).values)
    assert ((confidence > 0.1) & (confidence <= 1)).all()
    result = class_accuracy(x, y, "mnist", classifier=mnist_classifier)
    assert result["accuracy"] == pytest.approx((labels == y).float().mean().item())
    assert result["mean_confidence"] == pytest.approx(confidence.mean().item(), rel=1e-6)
    assert result["n"] == 500 and result["accuracy"] > 0.97
    wrong = class_accuracy(x, (y + 1) % 10, "mnist", classifier=mnist_classifier)
    assert wrong["accuracy"] < 0.05
    # with no classifier given, the shipped one is loaded
    assert class_accuracy(x[:50], y[:50], "mnist") == class_accuracy(x[:50], y[:50], "mnist",
                                                                      classifier=mnist_classifier)
    with pytest.raises(ValueError, match="one label per image"):
        class_accuracy(x, y[:10], "mnist", classifier=mnist_classifier)
