#!/usr/bin/env python3
"""One prepared GPU session: throughput of every U-Net preset beside its diffusers twin, then how
fast a class-conditional model trained against the clock gets good, judged while it trains by the
course's classifier, and its quality at the end (FID and KID against the real-data floor, class
accuracy, samples/s).

    python benchmarks/gpu_session.py --dataset mnist --data DIR --out OUT --train-seconds 150
    python benchmarks/gpu_session.py --dataset cifar10 --data DIR --out OUT --train-seconds 420 --skip-throughput

DIR is a dataset mirror holding mnist.npz or cifar10.npz. The run is built by the recipe
``mnist_cond`` (:func:`lesson_lib.recipes.mnist_cond.build`; for MNIST with its settings, for CIFAR-10
with :func:`session_settings`) and stopped by the Trainer's own clock (``max_seconds``). This script
measures; it ships nothing: the shipped ``mnist_cond`` is made by
``python -m lesson_lib.train --recipe mnist_cond --export lesson_lib/weights``. Everything measured
goes to OUT as it happens, so a run cut short still reports:

    results.json                    rewritten after every measurement
    DATASET_samples_NNNNs.png       10 samples per class at each snapshot (wall-clock seconds)

Snapshots come at 15 s and then each time the elapsed time doubles: the class accuracy of
100 samples (DDIM, 50 steps) under the course classifier says when the samples become
recognisable. Figures from a run are recorded in docs/benchmarks.md.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import compare  # noqa: E402

from lesson_lib.cards import hardware
from lesson_lib.data.images import load_dataset, save_grid
from lesson_lib.evaluate import evaluate
from lesson_lib.evaluation.judges import class_accuracy, load_classifier
from lesson_lib.models.unet import PRESETS
from lesson_lib.recipes import mnist_cond
from lesson_lib.sample import generate
from lesson_lib.training.profiles import training_settings


def session_settings(dataset):
    """The settings of the run: the recipe mnist_cond's for MNIST; for CIFAR-10 the gpu profile's
    (lesson_lib.training.profiles), fitted to a run of a few minutes.

    CIFAR-10's profile is a 100,000-step run (EMA 0.9999, 5,000 warm-up steps, batch 128); in
    minutes a shorter EMA horizon and warm-up, and a larger batch that keeps the GPU busy, suit better.
    """
    if dataset == "mnist":
        return dict(mnist_cond.SETTINGS["full"])
    s = training_settings(dataset, "gpu")
    return dict(preset=s["preset"], unet=s["unet"], batch_size=256, lr=3e-4, warmup_steps=500, ema_decay=0.9995,
                hflip=s.get("hflip", False), class_dropout=mnist_cond.SETTINGS["full"]["class_dropout"], seed=0,
                log_every=100, max_seconds=0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["cifar10", "mnist"], default="mnist")
    p.add_argument("--data", required=True, help="dataset mirror directory")
    p.add_argument("--out", required=True)
    p.add_argument("--train-seconds", type=float, default=120)
    p.add_argument("--device", default="cuda")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--bench-seconds", type=float, default=2.0)
    p.add_argument("--n-eval", type=int, default=2000, help="samples for the final FID/KID")
    p.add_argument("--batch-size", type=int, help="default: session_settings(dataset)'s")
    p.add_argument("--base-channels", type=int, help="override the preset's width (e.g. tiny CPU rehearsals)")
    p.add_argument("--chunk", type=int, default=100, help="steps between clock checks for a snapshot")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    dev = args.device
    results = {"device": hardware(dev), "torch": torch.__version__,
               "command": " ".join(["python benchmarks/gpu_session.py"] + sys.argv[1:])}

    def save():
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    # 1. Throughput of each preset beside its diffusers twin (when diffusers is installed).
    if not args.skip_throughput:
        results["throughput"] = {}
        for preset in PRESETS:
            try:
                results["throughput"][preset] = compare(preset, dev, batch_size=128 if dev == "cuda" else 8,
                                                        seconds=args.bench_seconds, rounds=2)
            except Exception as e:                                # keep going; report it
                results["throughput"][preset] = {"error": repr(e)}
            print(preset, results["throughput"][preset], flush=True)
            save()

    # 2. A class-conditional model, trained for a fixed wall-clock budget (the Trainer's max_seconds).
    s = session_settings(args.dataset)
    s.update(max_seconds=args.train_seconds, log_every=min(s["log_every"], args.chunk))
    if args.batch_size:
        s["batch_size"] = args.batch_size
    if args.base_channels:
        s["unet"] = dict(s["unet"], base_channels=args.base_channels)
    images, labels, classes = load_dataset(args.dataset, "train", data_dir=args.data, as_uint8=True)
    trainer = mnist_cond.build(s, images, labels, device=dev)
    classifier = load_classifier(args.dataset, device=dev)
    y = torch.arange(len(classes)).repeat_interleave(10)                 # one row of 10 per class
    snapshots, start, next_eval = [], time.perf_counter(), [15.0]

    def snapshot(t, final=False):
        """At 15 s, then each time the elapsed time doubles: class accuracy and a grid of samples."""
        elapsed = time.perf_counter() - start
        if (elapsed < next_eval[0] and not final) or (snapshots and snapshots[-1]["step"] == t.step):
            return
        x = generate(t.ema.model, t.schedule, len(y), "ddim", 50, {"y": y}, dev, progress=False)
        acc = class_accuracy(x, y, args.dataset, classifier=classifier)
        snapshots.append({"seconds": round(elapsed, 1), "step": t.step, "images_seen": t.step * s["batch_size"],
                          "loss": t.history[-1][1] if t.history else None, "class_accuracy": acc["accuracy"]})
        print(snapshots[-1], flush=True)
        save_grid(x, os.path.join(args.out, f"{args.dataset}_samples_{round(elapsed):04d}s.png"), nrow=10)
        results["training"], results["examples_per_second"] = snapshots, t.examples_per_second
        save()
        next_eval[0] = elapsed * 2

    trainer.run(10 ** 9, progress=False, callback_every=args.chunk, callback=snapshot)
    snapshot(trainer, final=True)
    results["wall_time_s"] = round(time.perf_counter() - start, 1)

    # 3. Quality, as `python -m lesson_lib.evaluate` measures it: FID/KID on the course
    #    classifier's features beside the real-data floor, class accuracy, samples/s.
    q = evaluate(trainer.ema.model, trainer.schedule, args.dataset, n=args.n_eval, sampler="ddim", steps=100,
                 device=dev, data_dir=args.data, batch_size=500, progress=False)
    results["quality"] = q
    print(q, flush=True)
    save()


if __name__ == "__main__":
    main()
