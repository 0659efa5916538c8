#!/usr/bin/env python3
"""Lesson 10's table: what the downsampling factor f of latent diffusion costs and buys, on MNIST (and its speed on CIFAR-10).

    OMP_NUM_THREADS=1 python benchmarks/latent.py speed        --json docs/latent_table.json   # minutes
    OMP_NUM_THREADS=1 python benchmarks/latent.py speed --dataset cifar10 --json docs/latent_table.json   # minutes
    OMP_NUM_THREADS=1 python benchmarks/latent.py autoencoders --json docs/latent_table.json   # about 20 min
    OMP_NUM_THREADS=1 python benchmarks/latent.py generation   --json docs/latent_table.json   # about 1 h

For f in {1 (pixels), 2, 4}, with c = 4 latent channels at f = 2 and 4:

``speed``         training images/s of the diffusion U-Net at f (one optimisation step of L_simple, batch
                  128, class-conditional) and sampling images/s (DDIM-50 with classifier-free guidance, so
                  100 network calls per image, batch 100, plus the decoder at f > 1), on one CPU thread.
                  The U-Nets are one family: the pixel U-Net "mnist" (widths 32-64-64 at 28, 14, 7 pixels,
                  attention at 7) without its outer levels, so f = 2 keeps 64-64 at 14 and 7, and f = 4 keeps
                  64 at 7 (mnist_latent's). The training figure leaves out encoding, which happens once per
                  dataset (its images/s is reported beside it). With ``--dataset cifar10`` (section
                  ``speed_cifar10``): f in {1, 4} only, the U-Net of cifar10_latent (widths 64-128 at 8 and 4)
                  on 8x8x8 latents, decoded by the shipped cifar10_autoencoder, against the same U-Net with
                  two outer levels of width 64 (at 32 and 16 pixels) on 32x32x3 images.
``autoencoders``  an autoencoder for f = 2 and for f = 4 trained by the recipe mnist_autoencoder's settings for
                  ``--steps`` each (the same for both), measured as the recipe measures the shipped one
                  (PSNR, reconstruction FID against the floor at n = 2,000); the shipped f = 4 autoencoder's
                  card row beside them.
``generation``    a pixel U-Net (f = 1) and a latent U-Net on mnist_autoencoder's latents (f = 4), each trained
                  for ``--minutes`` of wall-clock on one thread from scratch with mnist_cond's settings, then
                  FID and class accuracy of ``--n`` DDIM-50 samples (no guidance) beside the floor at that n.
                  The latent arm's autoencoder took its own 48 min (its card), spent once for every latent
                  model decoded by it.

Each part writes its section into ``--json`` (a file of this benchmark: another is refused) and keeps the others.
"""

import argparse
import json
import os
import time

import torch

from lesson_lib.data.images import load_dataset
from lesson_lib.data.latents import encode_dataset, encode_means, latent_decoder
from lesson_lib.diffusion.guidance import ClassifierFreeGuidance
from lesson_lib.diffusion.losses import LSimple
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.evaluate import evaluate
from lesson_lib.models.autoencoder import autoencoder_preset
from lesson_lib.models.unet import UNet, unet_preset
from lesson_lib.pretrained import load_autoencoder
from lesson_lib.recipes import autoencoder as autoencoder_recipe
from lesson_lib.recipes.latent import CIFAR10_UNET, UNET as LATENT_UNET
from lesson_lib.sample import generate
from lesson_lib.training.trainer import TrainConfig, Trainer

FACTORS = (1, 2, 4)
LATENT_CHANNELS = 4
from tables import read_table, timed, write_section

MARK = "benchmarks/latent.py"


def unet_at(factor, dataset="mnist", **overrides):
    """The class-conditional diffusion U-Net of factor f (module docstring): the pixel preset without its outer levels."""
    if dataset == "cifar10":             # cifar10_latent's U-Net at f = 4; with two outer levels of width 64 at f = 1
        levels, channels = {1: ((1, 1, 1, 2), 3), 4: ((1, 2), 8)}[factor]
        return UNet(in_channels=channels, image_size=32 // factor, num_classes=10,
                    **{**CIFAR10_UNET, "channel_mults": levels, **overrides})
    if factor == 1:
        return unet_preset("mnist", num_classes=10, **overrides)
    levels = {2: (1, 1), 4: (1,)}[factor]
    return UNet(in_channels=LATENT_CHANNELS, image_size=28 // factor, num_classes=10,
                **{**LATENT_UNET, "channel_mults": levels, **overrides})


AUTOENCODER_LEVELS = {2: (1, 2), 4: (1, 2, 2)}
"""The channel multipliers of the MNIST autoencoder of factor f: one level per halving, plus the first."""


def autoencoder_at(factor):
    return autoencoder_preset("mnist", factor=factor, channel_mults=AUTOENCODER_LEVELS[factor])


def speed(batch=128, train_steps=20, sample_batch=100, dataset="mnist", log=print):
    schedule, rows = NoiseSchedule.linear(1000), []
    images, labels, _ = load_dataset(dataset, "train", as_uint8=True)
    for f in FACTORS if dataset == "mnist" else (1, 4):
        torch.manual_seed(0)
        model = unet_at(f, dataset)
        shape = model.data_shape
        data = torch.randn(2048, *shape)
        trainer = Trainer(model, data, LSimple(schedule, class_dropout=0.1),
                          TrainConfig(batch_size=batch, lr=1e-3, warmup_steps=1, log_every=10 ** 9, seed=0),
                          cond={"y": labels[:2048]})
        step_s = timed(lambda: trainer.run(trainer.step + 1, progress=False), train_steps)
        decode, encode_per_s = None, None
        if f > 1:
            autoencoder = autoencoder_at(f).eval() if dataset == "mnist" else load_autoencoder("cifar10_autoencoder")[0]
            decode = latent_decoder(autoencoder, 1.0)
            encode_per_s = 2000 / timed(lambda: encode_means(autoencoder, images[:2000]), 1)
        y = torch.arange(10).repeat_interleave(sample_batch // 10)
        sample_s = timed(lambda: generate(model.eval(), schedule, sample_batch, "ddim", 50, cond={"y": y},
                                          progress=False, clip_x0=f == 1, decode=decode,
                                          guidance=lambda d: ClassifierFreeGuidance(d, w=2.0)), 1)
        row = {"factor": f, "shape": list(shape), "parameters": sum(p.numel() for p in model.parameters()),
               "train_images_per_s": round(batch / step_s, 1), "sample_images_per_s": round(sample_batch / sample_s, 2),
               "encode_images_per_s": None if encode_per_s is None else round(encode_per_s, 1)}
        rows.append(row)
        log(json.dumps(row))
    for row in rows:
        row["train_speedup"] = round(row["train_images_per_s"] / rows[0]["train_images_per_s"], 1)
        row["sample_speedup"] = round(row["sample_images_per_s"] / rows[0]["sample_images_per_s"], 1)
    return {"rows": rows, "batch": batch, "sample_batch": sample_batch, "sampler": "DDIM-50, CFG w = 2 (100 calls)"}


def autoencoders(steps=2000, n=2000, log=print):
    train, _, _ = load_dataset("mnist", "train", as_uint8=True)
    test, _, _ = load_dataset("mnist", "test", as_uint8=True)
    rows = []
    for f in (2, 4):
        settings = dict(autoencoder_recipe.SETTINGS["mnist"]["full"], log_every=10 ** 9)
        settings["autoencoder"] = {"factor": f, "channel_mults": AUTOENCODER_LEVELS[f]}
        trainer = autoencoder_recipe.build(settings, train)
        start = time.perf_counter()
        trainer.run(steps, progress=False)
        seconds = time.perf_counter() - start
        figures = autoencoder_recipe.reconstruction_figures(trainer.ema.model, "mnist", train, test, n)
        row = {"factor": f, "latent_shape": list(trainer.model.latent_shape), "steps": steps,
               "train_seconds": round(seconds), **{k: round(v, 4) if isinstance(v, float) else v
                                                   for k, v in figures.items()}}
        rows.append(row)
        log(json.dumps(row))
    return {"rows": rows, "settings": "recipe mnist_autoencoder's full settings but the factor and the steps"}


def generation(minutes=15.0, n=1000, log=print):
    images, labels, _ = load_dataset("mnist", "train", as_uint8=True)
    autoencoder, scale = load_autoencoder("mnist_autoencoder")
    latents = encode_dataset(autoencoder, images, labels, scale=scale)
    schedule, rows = NoiseSchedule.linear(1000), []
    for f, data, decode in ((1, images, None), (4, latents.data, latent_decoder(autoencoder, scale))):
        torch.manual_seed(0)
        trainer = Trainer(unet_at(f), data, LSimple(schedule, class_dropout=0.1),
                          TrainConfig(batch_size=128, lr=1e-3, warmup_steps=200, ema_decay=0.999, seed=0,
                                      log_every=10 ** 9, max_seconds=60 * minutes), cond={"y": labels})
        trainer.run(10 ** 9, progress=False)
        q = evaluate(trainer.ema.model, schedule, "mnist", n=n, steps=50, batch_size=250, progress=False,
                     clip_x0=f == 1, decode=decode)
        row = {"factor": f, "minutes": minutes, "steps": trainer.step, "images_seen": trainer.step * 128,
               "n": n, "fid": round(q["fid"], 3), "fid_floor": round(q["fid_floor"], 3),
               "class_accuracy": round(q["class_accuracy"], 3)}
        rows.append(row)
        log(json.dumps(row))
    return {"rows": rows, "sampler": "DDIM-50, no guidance", "feature_network": q["feature_network"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("speed", "autoencoders", "generation"))
    p.add_argument("--json", required=True, help="the table file (created, or this benchmark's own to update)")
    p.add_argument("--steps", type=int, default=2000, help="autoencoders: training steps of each")
    p.add_argument("--minutes", type=float, default=15.0, help="generation: wall-clock minutes of training per arm")
    p.add_argument("--n", type=int, default=None, help="samples / test images to measure (default 2000, generation 1000)")
    p.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist",
                   help="speed: mnist (f = 1, 2, 4) or cifar10 (f = 1, 4; written as the section speed_cifar10)")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    read_table(args.json, MARK)                   # refuse another benchmark's file before any work
    if args.dataset != "mnist" and args.part != "speed":
        p.error(f"--dataset {args.dataset} goes with the speed part only; the other parts measure MNIST")
    name = args.part if args.dataset == "mnist" else f"{args.part}_{args.dataset}"
    if args.part == "speed":
        section = speed(dataset=args.dataset)
    elif args.part == "autoencoders":
        section = autoencoders(args.steps, args.n or 2000)
    else:
        section = generation(args.minutes, args.n or 1000)
    write_section(args.json, MARK, name, section)
    print(f"wrote the {name} section of {args.json}")


if __name__ == "__main__":
    main()
