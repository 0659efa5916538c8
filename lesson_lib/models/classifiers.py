"""The course's own dataset classifiers: the networks behind FID/KID features and class accuracy.

FID and KID (:mod:`lesson_lib.evaluation.fid`) compare generated and real images in the
feature space of a pretrained network. The papers use Inception-V3 trained on ImageNet, whose
weights must be downloaded; the course runs offline, so it trains one small classifier per
dataset and uses its penultimate layer as the feature space instead.

    MNISTClassifier     three conv layers with BatchNorm, a 128-unit fully connected layer (the
                        features), dropout; >= 99% test accuracy.
    CIFAR10Classifier   a ResNet-ish net in the style of fast CIFAR-10 training (Page, 2018),
                        widths 64-128-256-512, 512 features, about 3M parameters, >= 85% test acc.

Both take images in [-1, 1] of shape (B, C, H, W), expose ``features(x)`` -> (B, feature_dim),
the penultimate layer, and ``forward(x)`` -> logits (B, 10). How they are trained is in
:mod:`lesson_lib.training.classifier_fit` (the loop) and :mod:`lesson_lib.recipes.classifiers` (the
settings and the command); the shipped weights are loaded by
:func:`lesson_lib.evaluation.judges.load_classifier`.
"""

import torch
import torch.nn as nn

from .base import Model

DATASETS = ("mnist", "cifar10")


def _check_dataset(dataset):
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got dataset={dataset!r}")


# ----------------------------------------------------------------------------- architectures

def conv_bn(c_in, c_out):
    """3x3 convolution (same padding, no bias: BatchNorm has one) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """x + f(x) with f two conv_bn layers of the same width (He et al., 2016)."""

    def __init__(self, channels):
        super().__init__()
        self.f = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x):
        return x + self.f(x)


class _Classifier(Model):
    """Shared behaviour: check the input; ``forward`` = ``head(features(x))``. A classifier
    predicts no noise (``prediction = None``) and has 10 classes."""

    prediction = None
    num_classes = 10
    logit_scale = 1.0

    def _check_input(self, x):
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a float tensor in [-1, 1]; got "
                            f"{type(x).__name__} {getattr(x, 'dtype', '')}. Convert uint8 images "
                            f"with x.float() / 127.5 - 1")
        c, s = self.in_channels, self.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"{type(self).__name__} expects images of shape (B, {c}, {s}, {s}); "
                             f"got x of shape {tuple(x.shape)}")

    def forward(self, x):
        """Class logits, (B, 10)."""
        return self.logit_scale * self.head(self.features(x))


class MNISTClassifier(_Classifier):
    """A small CNN for 28x28 digits with a 128-unit penultimate layer.

    Two conv blocks, conv-BN-ReLU + max-pool at 28x28 (32 channels) and at 14x14 (64 channels),
    a conv-BN-ReLU at 7x7, then the 64 x 7 x 7 map is flattened into a fully connected layer of
    128 ReLU units: these are the ``features``. Dropout and a linear layer give the 10 logits.
    About 460k parameters (0.9 MB in fp16); >= 99% test accuracy after 4 epochs on a CPU.
    """

    in_channels = 1
    image_size = 28

    def __init__(self, width=32, feature_dim=128, dropout=0.3, num_classes=10):
        super().__init__()
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            conv_bn(1, width), nn.MaxPool2d(2),              # 28 -> 14
            conv_bn(width, 2 * width), nn.MaxPool2d(2),      # 14 -> 7
            conv_bn(2 * width, 2 * width),
        )
        self.fc = nn.Sequential(nn.Linear(2 * width * 7 * 7, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def features(self, x):
        """The penultimate features, (B, 128): the fully connected ReLU layer."""
        self._check_input(x)
        return self.fc(self.body(x).flatten(1))


class CIFAR10Classifier(_Classifier):
    """A ResNet-ish net for 32x32 colour images, after the fast CIFAR-10 "ResNet-9" of Page (2018).

    prep: conv 64 at 32x32;
    stage 1: conv 128, max-pool to 16x16, residual block (128);
    stage 2: conv 256, max-pool to 8x8, residual block (256);
    stage 3: conv 512, max-pool to 4x4;
    global average pooling (the 512 ``features``) and a linear layer to the 10 logits, scaled
    by 1/8 as in Page (2018): without it the first large SGD steps on the 512-wide linear layer
    blow the logits up. About 3M parameters.
    """

    in_channels = 3
    image_size = 32
    logit_scale = 0.125

    def __init__(self, widths=(64, 128, 256, 512), num_classes=10):
        super().__init__()
        self.num_classes = num_classes
        w0, w1, w2, w3 = widths
        self.feature_dim = w3
        self.body = nn.Sequential(
            conv_bn(3, w0),
            conv_bn(w0, w1), nn.MaxPool2d(2), Residual(w1),   # 32 -> 16
            conv_bn(w1, w2), nn.MaxPool2d(2), Residual(w2),   # 16 -> 8
            conv_bn(w2, w3), nn.MaxPool2d(2),                 # 8 -> 4
        )
        self.head = nn.Linear(w3, num_classes)

    def features(self, x):
        """The penultimate features, (B, 512): the last stage's output, averaged over space."""
        self._check_input(x)
        return self.body(x).mean(dim=(2, 3))


ARCHITECTURES = {"mnist": MNISTClassifier, "cifar10": CIFAR10Classifier}


def build_classifier(dataset):
    """A freshly initialised classifier for ``dataset`` ("mnist" or "cifar10")."""
    _check_dataset(dataset)
    return ARCHITECTURES[dataset]()

