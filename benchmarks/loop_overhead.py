#!/usr/bin/env python3
"""What the sampling loop and the training loop cost around the network: host syncs and speed.

    python benchmarks/loop_overhead.py [--threads 1] [--rounds 3]

Host synchronisations: reading a tensor's value on the host (``int(t.min())``, ``bool(...)``)
makes the CPU wait until the GPU has finished everything queued. Counted here on the CPU with a
dispatch mode, per DDIM step and per training step of the course's ``mnist`` preset, with the
U-Net's input checks as they run on a GPU (there they read no values). Speed: training steps/s
(batch 32) and DDIM image-steps/s (batch 32) of the same preset on the CPU, median of --rounds.
Figures are recorded in docs/benchmarks.md with the hardware.
"""
import argparse
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lesson_lib.diffusion.losses import LSimple
from lesson_lib.diffusion.sampling import ddim_sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.models import base, unet
from lesson_lib.training.trainer import TrainConfig, Trainer


class CountSyncs(TorchDispatchMode):
    """Counts the ops that copy a tensor's value to the host."""

    def __init__(self):
        super().__init__()
        self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default or func.__name__.startswith("is_nonzero"):
            self.syncs += 1
        return func(*args, **(kwargs or {}))


def syncs_per_step(schedule):
    on_cpu = base._is_compiling
    base._is_compiling = lambda: True        # the U-Net's checks as on a GPU: no value reads
    try:
        model = unet.unet_preset("mnist", num_classes=10).eval()
        y = torch.arange(4)
        counts = []
        for steps in (5, 10):
            with CountSyncs() as mode:
                ddim_sample(model, schedule, (4, 1, 28, 28), steps=steps, progress=False, model_kwargs={"y": y})
            counts.append(mode.syncs)
        with CountSyncs() as mode:
            LSimple(schedule, 0.1)(model, model, torch.randn(8, 1, 28, 28), {"y": torch.arange(8)}, torch.Generator())
        return (counts[1] - counts[0]) / 5, mode.syncs
    finally:
        base._is_compiling = on_cpu


def speed(schedule, rounds):
    data = torch.randint(0, 256, (512, 1, 28, 28), dtype=torch.uint8)
    train, sample = [], []
    for _ in range(rounds):
        torch.manual_seed(0)
        trainer = Trainer(unet.unet_preset("mnist"), data, LSimple(schedule), TrainConfig(batch_size=32, lr=1e-4),
                          device="cpu")
        trainer.run(3, progress=False)
        start = time.perf_counter()
        trainer.run(18, progress=False)
        train.append(15 / (time.perf_counter() - start))
        model = trainer.model.eval()
        start = time.perf_counter()
        ddim_sample(model, schedule, (32, 1, 28, 28), steps=10, progress=False)
        sample.append(32 * 10 / (time.perf_counter() - start))
    return statistics.median(train), statistics.median(sample)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    schedule = NoiseSchedule.linear(1000)
    per_ddim_step, per_loss = syncs_per_step(schedule)
    print(f"host syncs as on a GPU: {per_ddim_step:.0f} per DDIM step, {per_loss} per L_simple evaluation")
    train, sample = speed(schedule, args.rounds)
    print(f"CPU, {args.threads} thread(s), torch {torch.__version__}: training {train:.2f} steps/s (batch 32), "
          f"DDIM sampling {sample:.1f} image-steps/s (batch 32), median of {args.rounds}")


if __name__ == "__main__":
    main()
