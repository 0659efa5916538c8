#!/usr/bin/env python3
"""Lesson 11's table: what the DiT's patch size and conditioning cost and buy, and the DiT against the U-Net, on MNIST.

    OMP_NUM_THREADS=1 python benchmarks/dit.py cost      --json docs/dit_table.json   # a minute
    OMP_NUM_THREADS=1 python benchmarks/dit.py patches   --json docs/dit_table.json   # about 50 min
    OMP_NUM_THREADS=1 python benchmarks/dit.py prediction --json docs/dit_table.json --steps 1000  # about 25 min
    OMP_NUM_THREADS=1 python benchmarks/dit.py wallclock --json docs/dit_table.json   # about 20 min, after cost

Every arm is class-conditional and trained by recipe mnist_dit's settings (L_simple, label dropout 0.1, AdamW,
EMA 0.999) on one CPU thread, and measured as the latent benchmark measures its arms: FID and class accuracy of
``--n`` DDIM-50 samples (no guidance, every class equally often) beside the real-data floor at that n.

``cost``       parameters, forward GFLOPs per image (:meth:`Model.forward_gflops`), training images/s (one
               step of batch 128) and sampling network calls/s (batch 250) of each arm below and of the course
               U-Net ("mnist", 10 classes), on one thread.
``patches``    DiT-T/7, DiT-T/4 and DiT-T/2 (16, 49, 196 tokens; the same blocks) and DiT-T/4 with in-context
               conditioning, each trained for ``--steps`` steps of batch ``--batch`` from the same seed: the paper's
               claim that a smaller patch (more Gflops, almost no more parameters) lowers FID at equal steps, and
               its comparison of adaLN-Zero with in-context conditioning at (almost) equal Gflops.
``prediction`` DiT-T/4 predicting eps (the paper's choice) and predicting v (mnist_dit's), each trained for
               ``--steps`` steps of batch 128 with mnist_dit's settings from the same seed, then read through
               the course classifier: the class accuracy of x0_hat on ``--n`` noised test digits at t = 200, 500
               and 800 (what the network knows of the digit at each noise level), and of n DDIM-50 samples.
``wallclock``  DiT-T/4 with mnist_dit's full settings beside the U-Net (mnist_cond's settings) trained for 15 min
               of wall-clock on one thread of this CPU, read from lesson 10's table (docs/latent_table.json, its
               pixel arm): equal time, and parameters within 15% (1.87M and 1.62M). The DiT gets the U-Net's
               steps times the ratio of the two training speeds in ``cost`` (measured side by side), so the
               figure does not depend on what else the machine runs while the DiT trains.

Each part writes its section into ``--json`` (a file of this benchmark: another is refused) and keeps the others.
Run at most one part per core: the training arms are timed.
"""

import argparse
import json
import os

import torch

from lesson_lib.data.images import load_dataset, uint8_to_float
from lesson_lib.diffusion.denoiser import Denoiser
from lesson_lib.diffusion.forward import q_sample
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.evaluate import evaluate
from lesson_lib.evaluation.judges import class_accuracy
from lesson_lib.recipes import mnist_cond
from lesson_lib.sample import generate

from tables import read_table, timed, write_section

MARK = "benchmarks/dit.py"
ARMS = {                      # name: (preset, conditioning)
    "DiT-T/7": ("DiT-T/7", "adaln-zero"),
    "DiT-T/4": ("DiT-T/4", "adaln-zero"),
    "DiT-T/2": ("DiT-T/2", "adaln-zero"),
    "DiT-T/4 in-context": ("DiT-T/4", "in-context"),
}
LATENT_TABLE = "docs/latent_table.json"


def settings_of(arm, **changes):
    """mnist_dit's full settings for ``arm`` (a key of ARMS), with ``changes``."""
    preset, conditioning = ARMS[arm]
    full = mnist_cond.SETTINGS_DIT["full"]
    return {**full, "preset": preset, "unet": {**full["unet"], "conditioning": conditioning}, "log_every": 10 ** 9,
            **changes}


def measure(model, n, log):
    """FID, KID and class accuracy of n DDIM-50 samples, beside the floor (evaluate's figures, rounded)."""
    q = evaluate(model.eval(), NoiseSchedule.linear(1000), "mnist", n=n, steps=50, batch_size=250, progress=False)
    figures = {"n": n, "fid": round(q["fid"], 3), "fid_floor": round(q["fid_floor"], 3),
               "kid": round(q["kid_mean"], 5), "class_accuracy": round(q["class_accuracy"], 3),
               "feature_network": q["feature_network"]}
    log(json.dumps(figures))
    return figures


def cost(log=print):
    images, labels, _ = load_dataset("mnist", "train", as_uint8=True)
    images, labels = images[:2048], labels[:2048]
    arms = {arm: settings_of(arm) for arm in ARMS}
    arms["U-Net (mnist_cond)"] = {**mnist_cond.SETTINGS["full"], "log_every": 10 ** 9, "max_seconds": 0}
    rows = []
    for name, settings in arms.items():
        trainer = mnist_cond.build({**settings, "batch_size": 128}, images, labels)
        model = trainer.model
        step_s = timed(lambda: trainer.run(trainer.step + 1, progress=False), 10)
        y = torch.arange(10).repeat(25)
        with torch.no_grad():
            call_s = timed(lambda: generate(model.eval(), NoiseSchedule.linear(1000), 250, "ddim", 5, cond={"y": y},
                                            progress=False), 1) / 5
        row = {"arm": name, "tokens": getattr(model, "num_tokens", None),
               "parameters": sum(p.numel() for p in model.parameters()),
               "gflops": round(model.forward_gflops(), 3), "train_images_per_s": round(128 / step_s, 1),
               "sampling_calls_per_s": round(250 / call_s, 1)}
        rows.append(row)
        log(json.dumps(row))
        model.train()
    return {"rows": rows, "batch": 128, "sample_batch": 250}


def patches(steps=1000, batch=64, n=1000, log=print):
    images, labels, _ = load_dataset("mnist", "train", as_uint8=True)
    rows = []
    for arm in ARMS:
        trainer = mnist_cond.build(settings_of(arm, batch_size=batch, max_seconds=0), images, labels)
        trainer.run(steps, progress=False)
        model = trainer.ema.model
        row = {"arm": arm, "tokens": model.num_tokens, "parameters": sum(p.numel() for p in model.parameters()),
               "gflops": round(model.forward_gflops(), 3), "steps": steps, "batch": batch, **measure(model, n, log)}
        rows.append(row)
        log(json.dumps(row))
    return {"rows": rows, "sampler": "DDIM-50, no guidance",
            "settings": f"mnist_dit's full settings but the preset, the conditioning, {steps} steps of batch {batch}"}


def prediction(steps=1000, n=1000, log=print):
    images, labels, _ = load_dataset("mnist", "train", as_uint8=True)
    test, test_labels, _ = load_dataset("mnist", "test", as_uint8=True)
    x0, y = uint8_to_float(test[:n]), test_labels[:n].long()
    schedule, rows = NoiseSchedule.linear(1000), []
    for target in ("eps", "v"):
        settings = settings_of("DiT-T/4", batch_size=128, max_seconds=0)
        settings["unet"] = {**settings["unet"], "prediction": target}
        trainer = mnist_cond.build(settings, images, labels)
        trainer.run(steps, progress=False)
        model = trainer.ema.model.eval()
        row = {"prediction": target, "steps": steps, "batch": 128}
        generator = torch.Generator().manual_seed(0)
        for t in (200, 500, 800):
            x_t = q_sample(schedule, x0, torch.full((n,), t), torch.randn(x0.shape, generator=generator))
            with torch.no_grad():
                x0_hat = Denoiser(model, schedule, clip_x0=True)(x_t, torch.full((n,), t), y=y).x0
            row[f"x0_hat_accuracy_t{t}"] = round(class_accuracy(x0_hat, y, "mnist")["accuracy"], 3)
        row.update(measure(model, n, log))
        rows.append(row)
        log(json.dumps(row))
    return {"rows": rows, "n_test_digits": n, "sampler": "DDIM-50, no guidance"}


def wallclock(cost_rows, n=1000, log=print):
    with open(LATENT_TABLE) as f:
        unet = next(row for row in json.load(f)["generation"]["rows"] if row["factor"] == 1)
    if unet["n"] != n:
        raise SystemExit(f"{LATENT_TABLE}'s U-Net arm measured n={unet['n']}; run with --n {unet['n']}")
    speed = {row["arm"]: row["train_images_per_s"] for row in cost_rows}
    ratio = speed["DiT-T/4"] / speed["U-Net (mnist_cond)"]
    steps = round(unet["steps"] * ratio)
    images, labels, _ = load_dataset("mnist", "train", as_uint8=True)
    trainer = mnist_cond.build(settings_of("DiT-T/4", max_seconds=0), images, labels)
    trainer.run(steps, progress=False)
    dit = {"arm": "DiT-T/4 (mnist_dit's settings)", "minutes": unet["minutes"], "steps": trainer.step,
           "speed_ratio_to_the_unet": round(ratio, 2),
           "images_seen": trainer.step * trainer.config.batch_size,
           "parameters": sum(p.numel() for p in trainer.model.parameters()), **measure(trainer.ema.model, n, log)}
    unet = {"arm": "U-Net 'mnist' (mnist_cond's settings)", "parameters": 1624577,
            **{k: unet[k] for k in ("minutes", "steps", "images_seen", "n", "fid", "fid_floor", "class_accuracy")},
            "from": f"{LATENT_TABLE}, generation, factor 1"}
    log(json.dumps(dit))
    return {"rows": [dit, unet], "sampler": "DDIM-50, no guidance"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("cost", "patches", "prediction", "wallclock"))
    p.add_argument("--json", required=True, help="the table file (created, or this benchmark's own to update)")
    p.add_argument("--steps", type=int, default=1000, help="patches, prediction: training steps of each arm")
    p.add_argument("--batch", type=int, default=64, help="patches: batch size of each arm")
    p.add_argument("--n", type=int, default=1000, help="samples to measure each arm by")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    read_table(args.json, MARK)                   # refuse another benchmark's file before any work
    if args.part == "cost":
        section = cost()
    elif args.part == "patches":
        section = patches(args.steps, args.batch, args.n)
    elif args.part == "prediction":
        section = prediction(args.steps, args.n)
    else:
        cost_section = read_table(args.json, MARK).get("cost")
        if not cost_section:
            raise SystemExit(f"run the cost part first: wallclock reads its training speeds from {args.json}")
        section = wallclock(cost_section["rows"], args.n)
    write_section(args.json, MARK, args.part, section)
    print(f"wrote the {args.part} section of {args.json}")


if __name__ == "__main__":
    main()
