#!/usr/bin/env python3
"""One prepared GPU session: throughput of every U-Net preset, then a class-conditional
MNIST model trained against the clock, with samples judged by the course's MNIST classifier.

    python benchmarks/gpu_session.py --data DIR --out OUT [--train-seconds 120]

DIR holds mnist.npz (the offline mirror layout). Everything measured goes to OUT as it
happens (results.json is rewritten after each step), so a run cut short still reports.
Results from one run are recorded in docs/benchmarks.md.
"""
import argparse
import json
import os
import time

import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import measure_diffusers, measure_preset  # noqa: E402

from lesson_lib import checkpoint
from lesson_lib.classifiers import class_accuracy, load_classifier
from lesson_lib.datasets import load_mnist, save_grid
from lesson_lib.fid import compute_metrics, real_floor
from lesson_lib.sampling import ddim_sample
from lesson_lib.schedules import NoiseSchedule
from lesson_lib.training import TrainConfig, Trainer
from lesson_lib.unet import PRESETS, count_parameters, unet_preset


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--train-seconds", type=float, default=120)
    p.add_argument("--device", default="cuda")
    p.add_argument("--bench-seconds", type=float, default=2.0)
    p.add_argument("--n-eval", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--chunk", type=int, default=100, help="steps between clock checks")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    dev = args.device
    results = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "torch": torch.__version__}

    def save():
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    # 1. Throughput of each preset (and of an equal-size diffusers U-Net when installed).
    results["throughput"] = {}
    for name in PRESETS:
        try:
            results["throughput"][name] = measure_preset(name, dev, batch_size=128 if dev == "cuda" else 8, seconds=args.bench_seconds)
        except Exception as e:                                    # keep going; report it
            results["throughput"][name] = {"error": repr(e)}
        print(name, results["throughput"][name], flush=True)
        save()
    try:
        results["throughput"]["diffusers"] = measure_diffusers(dev, batch_size=128 if dev == "cuda" else 8, seconds=args.bench_seconds)
    except Exception as e:
        results["throughput"]["diffusers"] = {"error": repr(e)}
    print("diffusers", results["throughput"]["diffusers"], flush=True)
    save()

    # 2. A class-conditional MNIST model, trained for a fixed wall-clock budget.
    images, labels = load_mnist("train", data_dir=args.data, as_uint8=True)
    test_images, test_labels = load_mnist("test", data_dir=args.data)
    schedule = NoiseSchedule.linear(1000)
    model = unet_preset("mnist", num_classes=10)
    config = TrainConfig(batch_size=args.batch_size, lr=1e-3, warmup_steps=200, ema_decay=0.999,
                         class_dropout=0.1, log_every=min(100, args.chunk))
    trainer = Trainer(model, schedule, images, config, labels=labels, device=dev)
    classifier = load_classifier("mnist", device=dev)
    y_eval = torch.arange(10, device=dev).repeat_interleave(10)
    snapshots, start = [], time.perf_counter()
    next_eval = 15.0
    while True:
        trainer.run(trainer.step + args.chunk, progress=False)
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= next_eval or elapsed >= args.train_seconds:
            x = ddim_sample(trainer.ema.model, schedule, (100, 1, 28, 28), steps=50, clip_x0=True,
                            model_kwargs={"y": y_eval}, device=dev, progress=False)
            acc = class_accuracy(x, y_eval, "mnist", classifier=classifier)
            snapshots.append({"seconds": round(elapsed, 1), "step": trainer.step,
                              "images_seen": trainer.step * config.batch_size,
                              "loss": trainer.history[-1][1], "class_accuracy": acc["accuracy"]})
            print(snapshots[-1], flush=True)
            save_grid(x, os.path.join(args.out, "mnist_samples.png"), nrow=10)
            results["mnist_training"] = snapshots
            save()
            next_eval = elapsed * 2
        if elapsed >= args.train_seconds:
            break
    results["mnist_examples_per_second"] = trainer.examples_per_second

    # 3. The shipped checkpoint: EMA weights in fp16, config, schedule and a model card.
    ema = {k: (v.half() if v.is_floating_point() else v) for k, v in trainer.ema.model.state_dict().items()}
    checkpoint.save_checkpoint({"ema": ema, "model_config": dict(model.config),
                                "betas": schedule.betas, "step": trainer.step,
                                "train_config": vars(config) if not hasattr(config, "__dataclass_fields__")
                                else {k: getattr(config, k) for k in config.__dataclass_fields__},
                                "history": [list(h) for h in trainer.history],
                                "wall_time_s": round(time.perf_counter() - start, 1),
                                "hardware": results["device"]},
                               os.path.join(args.out, "mnist_cond.pt"))

    # 4. Quality: FID on the course classifier's features, class accuracy, samples/s.
    n = args.n_eval
    y = torch.arange(10, device=dev).repeat(n // 10)
    sync()
    t0 = time.perf_counter()
    x = torch.cat([ddim_sample(trainer.ema.model, schedule, (min(500, n), 1, 28, 28), steps=100, clip_x0=True,
                               model_kwargs={"y": y[i:i + min(500, n)]}, device=dev, progress=False)
                   for i in range(0, n, min(500, n))])
    sync()
    results["mnist_sampling_ddim100_per_second"] = n / (time.perf_counter() - t0)
    results["mnist_quality"] = {
        "n": n,
        "metrics": compute_metrics(x, dataset="mnist", data_dir=args.data, device=dev),
        "floor": real_floor("mnist", n, data_dir=args.data, device=dev),
        "class_accuracy": class_accuracy(x, y, "mnist", classifier=classifier),
    }
    print(results["mnist_quality"], flush=True)
    save()


if __name__ == "__main__":
    main()
