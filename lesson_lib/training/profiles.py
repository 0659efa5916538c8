"""Training profiles: the same code at three sizes.

=========  ==========================================================================
profile    for
=========  ==========================================================================
``ci``     continuous integration and ``pytest --nbval``: 2 CPU cores, seconds to a few
           minutes; tiny models whose samples are blobs, but every code path runs.
``cpu``    a laptop without a GPU: recognisable MNIST digits in about 25 minutes on 2 cores (37 on one).
``gpu``    a CUDA GPU (Colab's T4 or better): the course presets at full size.
=========  ==========================================================================

The profile is chosen automatically (``gpu`` when CUDA is present, else ``cpu``) and the
environment variable ``DDPM_PROFILE`` overrides it. Only sizes and step counts differ:
every profile runs the same :class:`~lesson_lib.training.trainer.Trainer`.
"""

import os

import torch

PROFILES = ("ci", "cpu", "gpu")

# Per dataset and profile: the U-Net preset and its overrides, then the training settings.
# Every model is class-conditional with a null class (label dropout 0.1), so that the same
# checkpoints serve classifier-free guidance.
TRAINING = {
    "mnist": {
        "ci": dict(preset="mnist", unet=dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                                             attention_resolutions=(14,)),
                   steps=300, batch_size=32, lr=2e-3, warmup_steps=50, ema_decay=0.99),
        "cpu": dict(preset="mnist", unet={}, steps=3000, batch_size=64, lr=1e-3, warmup_steps=200,
                    ema_decay=0.999),
        "gpu": dict(preset="mnist", unet={}, steps=6000, batch_size=256, lr=1e-3, warmup_steps=200,
                    ema_decay=0.999),
    },
    "cifar10": {
        "ci": dict(preset="cifar10", unet=dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                                               attention_resolutions=(16,)),
                   steps=200, batch_size=32, lr=2e-3, warmup_steps=50, ema_decay=0.99, hflip=True),
        "cpu": dict(preset="cifar10", unet=dict(base_channels=32), steps=3000, batch_size=32, lr=5e-4,
                    warmup_steps=200, ema_decay=0.999, hflip=True),
        "gpu": dict(preset="cifar10", unet={}, steps=100_000, batch_size=128, lr=2e-4, warmup_steps=5000,
                    ema_decay=0.9999, hflip=True),
    },
}
CLASS_DROPOUT = 0.1


def current_profile(profile=None):
    """``profile`` if given, else ``$DDPM_PROFILE``, else "gpu" with CUDA and "cpu" without."""
    profile = profile or os.environ.get("DDPM_PROFILE") or ("gpu" if torch.cuda.is_available() else "cpu")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES} (from the argument or $DDPM_PROFILE), "
                         f"got {profile!r}")
    return profile


def training_settings(dataset, profile=None):
    """The settings for ``dataset`` ("mnist" or "cifar10") under a profile (see the table above)."""
    if dataset not in TRAINING:
        raise ValueError(f"no training settings for dataset {dataset!r}; choose one of {sorted(TRAINING)}")
    return dict(TRAINING[dataset][current_profile(profile)])
