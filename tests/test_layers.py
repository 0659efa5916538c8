"""The shared layers (models/layers.py) and what the base class does for every network:
the recorded config, data_shape, and check_inputs."""

import inspect
import json

import pytest
import torch

from lesson_lib.models.autoencoder import AutoencoderKL
from lesson_lib.models.base import MODEL_CLASSES, Model
from lesson_lib.models.classifiers import CIFAR10Classifier, MNISTClassifier
from lesson_lib.models.dit import DiT
from lesson_lib.models.layers import ClassEmbedding
from lesson_lib.models.mlp import MLPDenoiser
from lesson_lib.models.noisy_classifier import NoisyClassifier, noisy_classifier_preset
from lesson_lib.models.unet import PRESETS, SuperResUNet, UNet, unet_preset
from lesson_lib.pretrained import available, load_autoencoder, load_noisy_classifier, load_pretrained, model_card


TINY_UNET = dict(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                 attention_resolutions=(4,), dropout=0.0)


# --- the config each class wrote by hand before Model recorded it ----------------------------

def handwritten_unet(in_channels=3, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                     attention_resolutions=(16,), dropout=0.1, num_classes=None, image_size=32, prediction="eps",
                     attention_heads=1, use_attention=True, use_skips=True, learn_sigma=False):
    return dict(in_channels=in_channels, base_channels=base_channels, channel_mults=[int(m) for m in channel_mults],
                num_res_blocks=num_res_blocks, attention_resolutions=[int(r) for r in attention_resolutions],
                dropout=dropout, num_classes=num_classes, image_size=image_size, prediction=prediction,
                attention_heads=attention_heads, use_attention=use_attention, use_skips=use_skips,
                learn_sigma=bool(learn_sigma))


def handwritten_mlp(dim=2, hidden=128, num_blocks=3, time_dim=32, prediction="eps"):
    return dict(dim=dim, hidden=hidden, num_blocks=num_blocks, time_dim=time_dim, prediction=prediction)


def handwritten_noisy_classifier(in_channels=1, image_size=28, base_channels=32, channel_mults=(1, 2, 2),
                                 num_res_blocks=1, num_classes=10, dropout=0.0, dataset="mnist"):
    return dict(in_channels=in_channels, image_size=image_size, base_channels=base_channels,
                channel_mults=[int(m) for m in channel_mults], num_res_blocks=num_res_blocks,
                num_classes=num_classes, dropout=dropout, dataset=dataset)


def handwritten_mnist_classifier(width=32, feature_dim=128, dropout=0.3, num_classes=10):
    return dict(width=width, feature_dim=feature_dim, dropout=dropout, num_classes=num_classes)


def handwritten_cifar10_classifier(widths=(64, 128, 256, 512), num_classes=10):
    return dict(widths=list(widths), num_classes=num_classes)


CASES = [
    (UNet, handwritten_unet, {}),
    *[(UNet, handwritten_unet, dict(preset)) for preset in PRESETS.values()],
    (UNet, handwritten_unet, dict(PRESETS["mnist"], num_classes=10, learn_sigma=True, prediction="v")),
    (UNet, handwritten_unet, dict(TINY_UNET, attention_heads=2, use_attention=False, use_skips=False)),
    (MLPDenoiser, handwritten_mlp, {}),
    (MLPDenoiser, handwritten_mlp, dict(dim=3, hidden=16, num_blocks=1, time_dim=8, prediction="x0")),
    (NoisyClassifier, handwritten_noisy_classifier, {}),
    (NoisyClassifier, handwritten_noisy_classifier, dict(base_channels=8, channel_mults=(1, 2), dropout=0.1)),
    (MNISTClassifier, handwritten_mnist_classifier, {}),
    (MNISTClassifier, handwritten_mnist_classifier, dict(width=8, feature_dim=16, dropout=0.1, num_classes=5)),
    (CIFAR10Classifier, handwritten_cifar10_classifier, {}),
    (CIFAR10Classifier, handwritten_cifar10_classifier, dict(widths=(8, 16, 32, 64), num_classes=7)),
]


@pytest.mark.parametrize("cls, handwritten, kwargs", CASES)
def test_the_recorded_config_is_the_one_written_by_hand_before(cls, handwritten, kwargs):
    model = cls(**kwargs)
    expected = handwritten(**kwargs)
    assert model.config == expected
    assert list(model.config) == list(expected)                 # same order: the same JSON
    assert json.dumps(model.config) == json.dumps(expected)
    assert cls.from_config(json.loads(json.dumps(model.config))).config == model.config


def test_positional_arguments_are_recorded_by_name():
    model = UNet(1, 8, (1, 2), 1, (4,), 0.0, 10, 8)
    assert model.config == handwritten_unet(1, 8, (1, 2), 1, (4,), 0.0, 10, 8)
    assert MLPDenoiser(3, 16).config == handwritten_mlp(3, 16)


def test_every_model_class_records_every_constructor_argument():
    for name, cls in MODEL_CLASSES.items():
        if cls.__module__.startswith("lesson_lib.") and "__init__" in vars(cls):
            assert list(cls().config) == list(inspect.signature(cls).parameters), name


def test_a_subclass_records_its_own_arguments_and_refuses_unnamed_ones():
    class Doubled(MLPDenoiser):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

    model = Doubled(3.0, hidden=8, num_blocks=1)
    assert model.config == {"factor": 3.0, "hidden": 8, "num_blocks": 1}
    assert Doubled.from_config(model.config).config == model.config
    with pytest.raises(TypeError, match=r"\*args.*give every argument a name"):
        class Loose(MLPDenoiser):  # noqa: F841
            def __init__(self, *args):
                super().__init__(*args)


def test_data_shape():
    assert UNet(**TINY_UNET).data_shape == (1, 8, 8)
    assert unet_preset("cifar10").data_shape == (3, 32, 32)
    assert MLPDenoiser(dim=3).data_shape == (3,)
    assert noisy_classifier_preset("mnist_ci").data_shape == (1, 28, 28)
    assert MNISTClassifier().data_shape == (1, 28, 28) and CIFAR10Classifier().data_shape == (3, 32, 32)
    assert UNet(**TINY_UNET).learn_sigma is False and MLPDenoiser().learn_sigma is False
    assert UNet(**TINY_UNET, learn_sigma=True).learn_sigma is True


# --- check_inputs: every error names the argument --------------------------------------------

BAD_INPUTS = [
    (dict(x=torch.zeros(2, 3, 8, 8)), ValueError, r"^x must have shape \(batch, 1, H, W\), got \(2, 3, 8, 8\)"),
    (dict(x=torch.zeros(2, 8, 8)), ValueError, r"^x must have shape"),
    (dict(x=torch.zeros(2, 1, 8, 8, dtype=torch.uint8)), TypeError, r"^x must be a float tensor.*127\.5"),
    (dict(x=[[0.0]]), TypeError, r"^x must be a torch.Tensor"),
    (dict(t=torch.tensor([0.5, 1.0])), TypeError, r"^t must be a tensor of integer timesteps"),
    (dict(t=3), TypeError, r"^t must be a tensor of integer timesteps"),
    (dict(t=torch.tensor([1])), ValueError, r"^t must have shape \(batch,\) = \(2,\), got \(1,\)"),
    (dict(t=torch.tensor([-1, 3])), ValueError, r"^timesteps must be >= 0"),
    (dict(y=torch.tensor([1.0, 2.0])), ValueError, r"^y must be an integer tensor of shape \(2,\)"),
    (dict(y=torch.tensor([1, 2, 3])), ValueError, r"^y must be an integer tensor of shape \(2,\)"),
    (dict(y=torch.tensor([0, 11])), ValueError, r"^y must lie in 0\.\.9 \(or 10 for the null class\)"),
    (dict(y=torch.tensor([-1, 0])), ValueError, r"^y must lie in 0\.\.9"),
]


@pytest.mark.parametrize("bad, error, match", BAD_INPUTS)
def test_check_inputs_names_the_argument(bad, error, match):
    model = UNet(**TINY_UNET, num_classes=10)
    inputs = dict(x=torch.zeros(2, 1, 8, 8), t=torch.tensor([0, 999]), y=torch.tensor([0, 10]))
    model.check_inputs(**inputs)                                        # the null class, 10, is a label
    with pytest.raises(error, match=match):
        model.check_inputs(**{**inputs, **bad})


def test_check_inputs_of_the_other_networks():
    t = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"^this UNet is unconditional.*without class labels y.*num_classes="):
        UNet(**TINY_UNET)(torch.zeros(2, 1, 8, 8), t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"^this MLPDenoiser is unconditional.*without class labels y$"):
        MLPDenoiser()(torch.zeros(2, 2), t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"^x must have shape \(batch, 2\).*data of shape \(B, 2\)"):
        MLPDenoiser()(torch.zeros(2, 3), t)
    guide = noisy_classifier_preset("mnist_ci")
    with pytest.raises(ValueError, match=r"^x must have shape \(batch, 1, 28, 28\), got \(2, 1, 32, 32\)"):
        guide(torch.zeros(2, 1, 32, 32), t)                            # a classifier takes one size only
    with pytest.raises(TypeError, match=r"^t must be a tensor of integer timesteps"):
        guide(torch.zeros(2, 1, 28, 28), t.float())


def test_check_inputs_reads_no_values_off_the_cpu():
    """On a GPU, reading t.min() or y.max() would make the host wait at every step: off the CPU
    only shapes and dtypes are checked. A meta tensor has no values, so reading one would raise."""
    model = UNet(**TINY_UNET, num_classes=10)
    meta = dict(x=torch.zeros(2, 1, 8, 8, device="meta"), t=torch.tensor([-1, 0], device="meta"),
                y=torch.tensor([0, 99], device="meta"))
    model.check_inputs(**meta)                                          # no value read, no error
    with pytest.raises(ValueError, match="^y must be an integer tensor"):
        model.check_inputs(**{**meta, "y": torch.zeros(2, device="meta")})


# --- the class embedding and its null class ----------------------------------------------------

def test_the_class_embedding_has_a_null_class_row():
    table = ClassEmbedding(10, 6)
    assert isinstance(table, torch.nn.Embedding) and table.weight.shape == (11, 6)
    assert table.null_labels(3).tolist() == [10, 10, 10]
    assert torch.equal(table(torch.tensor([10], dtype=torch.int32)), table.weight[10:])
    model = UNet(**TINY_UNET, num_classes=10)
    assert model.state_dict()["class_embedding.weight"].shape == (11, 4 * 8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 500])
    assert torch.equal(model(x, t), model(x, t, torch.tensor([10, 10])))   # no label = the null class


# --- the shipped models still load, and compute what they computed ---------------------------

# mean and mean |.| of model(x, t, y) on the input below, recorded before the layers moved to
# models/layers.py (the move changed no output bit); the students' when they were re-made from the shipped teacher.
PINNED = {"mnist_cond": (0.158656, 0.9426), "mnist_distilled_1": (0.290718, 0.703427),
          "mnist_distilled_2": (0.325555, 0.718248), "mnist_distilled_4": (0.371719, 0.755082),
          "mnist_distilled_8": (0.380271, 0.755872), "mnist_learned_variance": (-0.274201, 0.838451),
          "mnist_vlb": (-0.322699, 0.976074), "mnist_v_teacher": (0.384756, 0.744103),
          "mnist_consistency": (0.346006, 0.762249), "mnist_latent": (0.209885, 0.906263),
          "mnist_dit": (0.390018, 0.766962), "mnist_latent_flow": (0.469115, 1.207396),
          "mnist_base14": (0.276856, 1.023578), "mnist_sr": (0.115843, 0.935486),
          "cifar10_latent": (0.010946, 0.550572)}
PINNED_GUIDE = [-2.33311, -1.3719, -0.14596, -0.91996, 1.29006, -2.71694, -0.98369, -3.05881, 3.0576, -1.40878]


def pinned_input(shape=(1, 28, 28)):
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, *shape, generator=g), torch.tensor([5, 700]), torch.tensor([3, 10])


def pinned_conditioning(model, x, y):
    """The labels ``y``; for a super-resolution model (not class-conditional) a fixed upsampled low-resolution
    input and augmentation levels (0: none, and k = 200) instead."""
    if not hasattr(model, "cond_channels"):
        return {"y": y}
    g = torch.Generator().manual_seed(1)
    return {"low_res": torch.randn(x.shape[0], model.cond_channels, *x.shape[2:], generator=g),
            "aug_level": torch.tensor([0, 200])}


def test_shipped_diffusion_models_load_and_match_their_pinned_output():
    assert sorted(PINNED) == available("diffusion")
    for name, (mean, abs_mean) in PINNED.items():
        model, _ = load_pretrained(name)                 # strict load_state_dict, from the stored config
        x, t, y = pinned_input(model.data_shape)         # a latent model's input is its latent
        stored = model_card(name)["model_config"]
        assert {k: model.config[k] for k in stored} == stored, name
        with torch.no_grad():
            out = model(x, t, **pinned_conditioning(model, x, y)).double()
        assert out.mean().item() == pytest.approx(mean, abs=2e-5), name
        assert out.abs().mean().item() == pytest.approx(abs_mean, abs=2e-5), name


def test_the_shipped_noisy_classifier_loads_and_matches_its_pinned_output():
    guide, _ = load_noisy_classifier()
    assert guide.config == model_card("mnist_noisy_classifier")["model_config"]
    x, t, _ = pinned_input()
    with torch.no_grad():
        logits = guide(x, t)
    torch.testing.assert_close(logits[0].double(), torch.tensor(PINNED_GUIDE, dtype=torch.float64),
                               atol=5e-5, rtol=0)


# mean and mean |.| of the posterior means, mean log-variance, mean and mean |.| of the decoded means of the
# input below, recorded when each autoencoder shipped
PINNED_AUTOENCODERS = {"mnist_autoencoder": [-0.417469, 0.772567, -13.593243, -0.156665, 0.657378],
                       "cifar10_autoencoder": [-0.050501, 0.500837, -16.077149, -0.01988, 0.242137]}


@pytest.mark.parametrize("name", list(PINNED_AUTOENCODERS))
def test_the_shipped_autoencoders_load_and_match_their_pinned_output(name):
    """The autoencoders are built from the shared ResBlock (without a timestep): a change to the layers
    that changed their output would silently change every latent model decoded by them."""
    autoencoder, _ = load_autoencoder(name)
    assert autoencoder.config == model_card(name)["model_config"]
    x = pinned_input((autoencoder.in_channels, autoencoder.image_size, autoencoder.image_size))[0].clamp(-1, 1)
    with torch.no_grad():
        mean, logvar = autoencoder.encode(x)
        decoded = autoencoder.decode(mean)
    measured = [mean.double().mean(), mean.double().abs().mean(), logvar.double().mean(), decoded.double().mean(),
                decoded.double().abs().mean()]
    assert [float(v) for v in measured] == pytest.approx(PINNED_AUTOENCODERS[name], abs=5e-5)


def test_every_class_is_a_model():
    for cls in (UNet, SuperResUNet, DiT, AutoencoderKL, MLPDenoiser, NoisyClassifier, MNISTClassifier, CIFAR10Classifier):
        assert issubclass(cls, Model) and MODEL_CLASSES[cls.__name__] is cls
