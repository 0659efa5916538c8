#!/usr/bin/env python3
"""One prepared GPU session: throughput of every U-Net preset beside its diffusers twin,
then a class-conditional model trained against the clock and judged while it trains by the
course's classifier, saved as a shippable model with its model card, and evaluated (FID and
KID against the real-data floor, class accuracy, samples/s).

    python benchmarks/gpu_session.py --dataset mnist --data DIR --out OUT --train-seconds 150
    python benchmarks/gpu_session.py --dataset cifar10 --data DIR --out OUT --train-seconds 420 --skip-throughput

DIR is a dataset mirror holding mnist.npz or cifar10.npz. Everything measured goes to OUT as
it happens, so a run cut short still reports:

    results.json                    rewritten after every measurement
    DATASET_samples_NNNNs.png       10 samples per class at each snapshot (wall-clock seconds)
    DATASET_cond.pt, DATASET_cond.json   fp16 EMA weights and their model card: copy both into
                                    lesson_lib/weights/ to ship the model

Snapshots come at 15 s and then each time the elapsed time doubles: the class accuracy of
100 samples (DDIM, 50 steps) under the course classifier says when the samples become
recognisable. Figures from a run are recorded in docs/benchmarks.md.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import compare  # noqa: E402

from lesson_lib.evaluation.judges import class_accuracy, load_classifier
from lesson_lib.data.images import load_dataset, save_grid
from lesson_lib.evaluate import evaluate
from lesson_lib.pretrained import export_model, write_card
from lesson_lib.training.profiles import CLASS_DROPOUT, training_settings
from lesson_lib.sample import generate
from lesson_lib.diffusion.losses import LSimple
from lesson_lib.diffusion.schedules import NoiseSchedule
from lesson_lib.training.trainer import TrainConfig, Trainer
from lesson_lib.course.inspection import count_parameters
from lesson_lib.models.unet import PRESETS, unet_preset

DATASETS = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


def session_settings(dataset):
    """The gpu profile's settings (lesson_lib.training.profiles), fitted to a run of a few minutes.

    MNIST's are used as they are. CIFAR-10's profile is a 100,000-step run (EMA 0.9999,
    5,000 warm-up steps, batch 128); in minutes a shorter EMA horizon and warm-up, and a
    larger batch that keeps the GPU busy, suit better.
    """
    s = training_settings(dataset, "gpu")
    if dataset == "cifar10":
        s.update(batch_size=256, lr=3e-4, warmup_steps=500, ema_decay=0.9995)
    return s


def description(dataset, preset, hflip):
    return (f"Class-conditional DDPM on {DATASETS[dataset]} (U-Net preset {preset!r}, 10 classes + a learned "
            f"null class, label dropout {CLASS_DROPOUT}, so it also serves classifier-free guidance"
            f"{'; random horizontal flips' if hflip else ''}). EMA weights stored in float16.")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    p.add_argument("--data", required=True, help="dataset mirror directory")
    p.add_argument("--out", required=True)
    p.add_argument("--train-seconds", type=float, default=120)
    p.add_argument("--device", default="cuda")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--bench-seconds", type=float, default=2.0)
    p.add_argument("--n-eval", type=int, default=2000, help="samples for the final FID/KID")
    p.add_argument("--batch-size", type=int, help="default: session_settings(dataset)'s")
    p.add_argument("--base-channels", type=int, help="override the preset's width (e.g. tiny CPU rehearsals)")
    p.add_argument("--chunk", type=int, default=100, help="steps between clock checks")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    dev, name = args.device, f"{args.dataset}_cond"
    results = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "torch": torch.__version__,
               "command": " ".join(["python benchmarks/gpu_session.py"] + sys.argv[1:])}

    def save():
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
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

    # 2. A class-conditional model, trained for a fixed wall-clock budget.
    s = session_settings(args.dataset)
    images, labels, classes = load_dataset(args.dataset, "train", data_dir=args.data, as_uint8=True)
    schedule = NoiseSchedule.linear(1000)
    overrides = {} if args.base_channels is None else {"base_channels": args.base_channels}
    model = unet_preset(s["preset"], num_classes=len(classes), **{**s["unet"], **overrides})
    config = TrainConfig(batch_size=args.batch_size or s["batch_size"], lr=s["lr"], warmup_steps=s["warmup_steps"],
                         ema_decay=s["ema_decay"], hflip=s.get("hflip", False),
                         log_every=min(100, args.chunk))
    trainer = Trainer(model, images, LSimple(schedule, class_dropout=CLASS_DROPOUT), config, cond={"y": labels},
                      device=dev)
    classifier = load_classifier(args.dataset, device=dev)
    y = torch.arange(len(classes)).repeat_interleave(10)                 # one row of 10 per class
    snapshots, start, next_eval = [], time.perf_counter(), 15.0
    while True:
        trainer.run(trainer.step + args.chunk, progress=False)
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= next_eval or elapsed >= args.train_seconds:
            x = generate(trainer.ema.model, schedule, len(y), "ddim", 50, y, dev, progress=False)
            acc = class_accuracy(x, y, args.dataset, classifier=classifier)
            snapshots.append({"seconds": round(elapsed, 1), "step": trainer.step,
                              "images_seen": trainer.step * config.batch_size,
                              "loss": trainer.history[-1][1], "class_accuracy": acc["accuracy"]})
            print(snapshots[-1], flush=True)
            save_grid(x, os.path.join(args.out, f"{args.dataset}_samples_{round(elapsed):04d}s.png"), nrow=10)
            results["training"] = snapshots
            results["examples_per_second"] = trainer.examples_per_second
            save()
            next_eval = elapsed * 2
        if elapsed >= args.train_seconds:
            break
    wall_time = round(time.perf_counter() - start, 1)

    # 3. The shippable model: fp16 EMA weights (lesson_lib.pretrained.export_model).
    path = export_model(trainer, os.path.join(args.out, f"{name}.pt"))

    # 4. Quality, as `python -m lesson_lib.evaluate` measures it: FID/KID on the course
    #    classifier's features beside the real-data floor, class accuracy, samples/s.
    q = evaluate(trainer.ema.model, schedule, args.dataset, n=args.n_eval, sampler="ddim", steps=100,
                 device=dev, data_dir=args.data, batch_size=500, progress=False)
    results["quality"] = q
    print(q, flush=True)
    save()

    # 5. The model card, in the format of lesson_lib/weights/*.json.
    card = {
        "kind": "diffusion", "name": name, "dataset": args.dataset,
        "description": description(args.dataset, s["preset"], config.hflip),
        "model_config": dict(model.config), "parameters": count_parameters(model),
        "schedule": "linear, T=1000, beta 1e-4 -> 0.02", "prediction": model.prediction,
        "train_config": dataclasses.asdict(config),
        "steps": trainer.step, "examples_seen": trainer.step * config.batch_size, "wall_time_s": wall_time,
        "hardware": f"{results['device']}" + (" (one GPU), bf16 autocast, channels-last, eager mode"
                                              if dev == "cuda" else ""),
        "torch": torch.__version__, "command": results["command"],
        "evaluation": {
            "sampler": "DDIM, 100 steps, eta=0, x0 clipped to [-1, 1], conditional on the class (no guidance)",
            "n": q["n"], "fid": round(q["fid"], 3), "kid": round(q["kid_mean"], 5),
            "fid_floor_train_vs_test": round(q["fid_floor"], 3), "kid_floor": round(q["kid_floor"], 5),
            "class_accuracy": round(q["class_accuracy"], 3), "mean_confidence": round(q["confidence"], 3),
            "feature_network": q["feature_network"], "samples_per_second": round(q["samples_per_s"], 1),
        },
        "training_curve": snapshots,
    }
    write_card(path, card)
    print(f"wrote {path} and its model card", flush=True)


if __name__ == "__main__":
    main()
