"""Progressive distillation on MNIST: the students of lesson 7 and their ladder table.

    python benchmarks/distillation.py train --out runs/distill            # resumable; one core ~70 min
    python benchmarks/distillation.py table --out runs/distill --n 500     # FID / class accuracy vs calls
    python benchmarks/distillation.py export --out runs/distill           # writes lesson_lib/weights/mnist_distilled_*

The recipe (chosen for a 2-core CPU, see docs/benchmarks.md): the shipped ``mnist_cond`` (eps,
1.6M parameters) is too slow to distil here (one training step = two of its evaluations plus a
student's forward and backward), so its predictions are first distilled into a smaller
v-prediction U-Net (base_channels 16, 0.41M parameters) on the 64-step grid (``Distillation``
with ``teacher_steps=1``: the target is the shipped model's own x_hat, so the small network
learns the same denoiser, re-parameterised). That network is the teacher at 64 DDIM steps; it is
then halved 64 -> 32 -> ... -> 1 by :func:`lesson_lib.training.distill.progressive_distillation`.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lesson_lib.data.images import load_mnist  # noqa: E402
from lesson_lib.diffusion.distillation import Distillation  # noqa: E402
from lesson_lib.models.unet import UNet  # noqa: E402
from lesson_lib.pretrained import load_pretrained  # noqa: E402
from lesson_lib.training.distill import progressive_distillation  # noqa: E402
from lesson_lib.training.trainer import TrainConfig, Trainer  # noqa: E402

RECIPE = {"teacher_steps": 64, "base_channels": 16, "convert_steps": 500, "convert_lr": 1e-3,
          "halving_steps": 128, "halving_lr": 2e-4, "batch_size": 32, "weighting": "snr_trunc"}


def log(out, message):
    line = f"{time.strftime('%H:%M:%S')} {message}"
    print(line, flush=True)
    with open(Path(out) / "log.txt", "a") as f:
        f.write(line + "\n")


def small_teacher(shipped, base_channels):
    """The shipped model's architecture with fewer channels, v-prediction, no dropout."""
    config = dict(shipped.config, base_channels=base_channels, dropout=0.0, prediction="v")
    return UNet.from_config(config)


def convert(out, recipe, data, labels, shipped, schedule):
    """Distil the shipped eps model's x_hat into the small v-prediction teacher on its own grid."""
    torch.manual_seed(0)
    model = small_teacher(shipped, recipe["base_channels"])
    steps = recipe["convert_steps"]
    config = TrainConfig(batch_size=recipe["batch_size"], lr=recipe["convert_lr"], warmup_steps=50,
                         lr_decay_steps=steps, ema_decay=0.0, seed=1, log_every=25)
    trainer = Trainer(model, schedule, data, config, labels=labels, device="cpu",
                      checkpoint_path=Path(out) / "teacher_64.pt",
                      objective=Distillation(shipped, recipe["teacher_steps"], recipe["weighting"], teacher_steps=1))
    trainer.resume()
    trainer.run(steps, progress=False, checkpoint_every=50)
    log(out, f"teacher_64 (v, conversion): loss {trainer.history[0][1]:.4f} -> {trainer.history[-1][1]:.4f}")
    return trainer.model.eval()


def train(out, recipe):
    torch.set_num_threads(1)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "recipe.json").write_text(json.dumps(recipe, indent=2))
    data, labels = load_mnist("train", as_uint8=True)
    shipped, schedule = load_pretrained("mnist_cond")
    log(out, "start: conversion of mnist_cond into the small v teacher")
    teacher = convert(out, recipe, data, labels, shipped, schedule)
    config = TrainConfig(batch_size=recipe["batch_size"], lr=recipe["halving_lr"], seed=2, log_every=16)

    def done(n, trainer):
        log(out, f"student_{n}: loss {trainer.history[0][1]:.4f} -> {trainer.history[-1][1]:.4f} "
                 f"after {trainer.step} steps")

    progressive_distillation(teacher, schedule, data, labels, start_steps=recipe["teacher_steps"],
                             end_steps=1, train_steps=recipe["halving_steps"], config=config,
                             weighting=recipe["weighting"], checkpoint_dir=out, device="cpu",
                             on_student=done)
    log(out, "finished")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["train"])
    p.add_argument("--out", default="runs/distill")
    args = p.parse_args(argv)
    if args.what == "train":
        train(args.out, RECIPE)


if __name__ == "__main__":
    main()
