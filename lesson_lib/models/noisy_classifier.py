"""A time-conditioned classifier f_phi(y | x_t, t): the guide of classifier guidance.

Classifier guidance (Dhariwal & Nichol, 2021) steers a diffusion model with the gradient
grad_x log f_phi(y | x_t, t) at every step. The samples along the reverse chain are noisy, so
the classifier must be trained on noisy images, x_t = q_sample(x_0, t) with t uniform (see
:class:`lesson_lib.diffusion.losses.NoisyCrossEntropy`), and told how noisy they are. A clean
classifier sees nothing it was trained on until the last few steps.

The network is the U-Net's down path, built from the same layers
(:mod:`lesson_lib.models.layers`), with a classification head, as the guided-diffusion
classifier is the U-Net's encoder:

    x_t --conv_in--> [ResBlock x num_res_blocks, Downsample] per level --> GroupNorm, SiLU
        --> mean over the pixels --> Linear --> logits (B, num_classes)
    t   --> TimeEmbedding (sinusoid -> MLP) --> added inside every ResBlock

With the MNIST defaults (32 channels, levels 28 -> 14 -> 7, one ResBlock each) it has about
0.2M parameters and costs about 70 MFLOP per image, so it trains on a CPU.
"""

from torch import nn
import torch.nn.functional as F

from .base import Model
from .layers import Downsample, ResBlock, TimeEmbedding, group_norm


class NoisyClassifier(Model):
    """``classifier(x_t, t)`` returns class logits (B, num_classes) for noisy images.

    Args:
        in_channels: image channels (1 for MNIST).
        image_size: height = width of the images it classifies; inputs of another size are
            refused (a classifier for another dataset cannot guide this one).
        base_channels: width of the first level; level i has ``base_channels * channel_mults[i]``.
        channel_mults: one multiplier per resolution level (``len - 1`` halvings).
        num_res_blocks: ResBlocks per level.
        num_classes: number of classes (no null class: a classifier always answers).
        dropout: dropout inside every ResBlock.
        dataset: the dataset it was trained on (recorded, and checked by guidance).
    """

    prediction = None

    def __init__(self, in_channels=1, image_size=28, base_channels=32, channel_mults=(1, 2, 2),
                 num_res_blocks=1, num_classes=10, dropout=0.0, dataset="mnist"):
        super().__init__()
        channel_mults = [int(m) for m in channel_mults]
        if in_channels < 1 or base_channels < 1 or num_res_blocks < 1 or num_classes < 2:
            raise ValueError(f"in_channels, base_channels and num_res_blocks must be >= 1 and "
                             f"num_classes >= 2, got {in_channels}, {base_channels}, {num_res_blocks}, "
                             f"{num_classes}")
        if not channel_mults or min(channel_mults) < 1:
            raise ValueError(f"channel_mults must be a non-empty list of positive ints, got {channel_mults}")
        self.in_channels, self.image_size = in_channels, image_size
        self.num_classes, self.dataset = num_classes, dataset
        time_dim = 4 * base_channels
        self.time_embedding = TimeEmbedding(base_channels, time_dim)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        ch = base_channels
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, base_channels * mult, time_dim, dropout))
                ch = base_channels * mult
            if level != len(channel_mults) - 1:
                self.down.append(Downsample(ch))
        self.norm = group_norm(ch)
        self.head = nn.Linear(ch, num_classes)

    def forward(self, x, t):
        """Logits of f_phi(y | x_t, t), shape (B, num_classes)."""
        self.check_inputs(x, t)     # x of shape (B, *data_shape): no other image size
        emb = self.time_embedding(t)
        h = self.conv_in(x)
        for block in self.down:
            h = block(h, emb)
        h = F.silu(self.norm(h)).mean(dim=(2, 3))
        return self.head(h)


PRESETS = {
    # The shipped MNIST guide: 28 -> 14 -> 7, one ResBlock per level.
    "mnist": dict(in_channels=1, image_size=28, base_channels=32, channel_mults=(1, 2, 2),
                  num_res_blocks=1, num_classes=10, dataset="mnist"),
    # The ci profile's: a quarter of the width, for notebooks on 2 CPU cores.
    "mnist_ci": dict(in_channels=1, image_size=28, base_channels=8, channel_mults=(1, 2),
                     num_res_blocks=1, num_classes=10, dataset="mnist"),
}


def noisy_classifier_preset(name, **overrides):
    """``NoisyClassifier(**PRESETS[name], **overrides)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown noisy-classifier preset {name!r}; choose one of {sorted(PRESETS)}")
    return NoisyClassifier(**{**PRESETS[name], **overrides})

