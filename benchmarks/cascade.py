#!/usr/bin/env python3
"""Lesson 12's table: what conditioning augmentation buys a two-stage cascade on MNIST (14 -> 28 px).

    OMP_NUM_THREADS=1 python benchmarks/cascade.py no_augmentation --json docs/cascade_table.json  # about 1 h
    OMP_NUM_THREADS=1 python benchmarks/cascade.py table           --json docs/cascade_table.json  # about 1 h

``no_augmentation``  trains the SR model of recipe mnist_sr's full settings with the level fixed at 0 (no
                     augmentation, no level embedding), for the same steps, and keeps its EMA weights in the
                     run folder ``--out`` (default runs/cascade_no_augmentation) for ``table``.
``table``            the five rows, each over ``--n`` samples (DDIM-50 per stage, x0 clipped), measured as
                     mnist_sr's card is (:func:`lesson_lib.recipes.cascade.figures`: FID against as many
                     training digits, class accuracy by the course classifier, consistency = the mean squared
                     difference between the output shrunk to 14 px and its 14-px input), with the seconds of
                     sampling per image on one thread:
                     1. SR of real 14-px test digits by mnist_sr at s = 0 (the upper bound);
                     2. the cascade without augmentation (mnist_base14, then the model of ``no_augmentation``);
                     3. the cascade with augmentation, mnist_sr sampled at s in {0, 0.1, 0.2, 0.3, 0.5};
                     4. the direct 28-px model mnist_cond (DDIM-50, no guidance);
                     and the real-data floor at n (training against test digits).

Each part writes its section into ``--json`` (a file of this benchmark: another is refused) and keeps the others.
"""

import argparse
import json
import os
import time

import torch

from lesson_lib.data.images import load_dataset
from lesson_lib.diffusion.cascade import downsample
from lesson_lib.evaluation.fid import real_floor
from lesson_lib.pretrained import load_pretrained, model_from_state, model_payload
from lesson_lib.recipes import cascade
from lesson_lib.sample import generate

from tables import read_table, write_section

MARK = "benchmarks/cascade.py"
LEVELS = (0.0, 0.1, 0.2, 0.3, 0.5)


def no_augmentation(out, log=print):
    settings = {**cascade.SETTINGS["sr"]["full"], "level": 0.0, "random_level": False, "log_every": 10 ** 9}
    images, _, _ = load_dataset("mnist", "train", as_uint8=True)
    os.makedirs(out, exist_ok=True)
    trainer = cascade.build_sr(settings, images, checkpoint_path=os.path.join(out, "checkpoint.pt"))
    trainer.resume()
    start = time.perf_counter()
    trainer.run(settings["steps"], progress=False, checkpoint_every=settings["checkpoint_every"])
    torch.save(model_payload(trainer), os.path.join(out, "model.pt"))
    row = {"steps": trainer.step, "train_seconds_this_call": round(time.perf_counter() - start),
           "settings": "mnist_sr's full settings with level 0 (no augmentation)"}
    log(json.dumps(row))
    return row


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def table(out, n=2000, steps=50, batch_size=500, log=print):
    base, base_schedule = load_pretrained("mnist_base14")
    sr, schedule = load_pretrained("mnist_sr")
    plain, _ = model_from_state(torch.load(os.path.join(out, "model.pt"), weights_only=True))
    test, test_labels, _ = load_dataset("mnist", "test", as_uint8=True)
    rows = []

    def add(name, x, labels, x_low, seconds):
        row = {"row": name, **cascade.figures(x, labels, downsample(x) if x_low is None else x_low, None, "cpu"),
               "seconds_per_image": round(seconds / n, 3)}
        if x_low is None:
            row["consistency_mse"] = None               # a direct model has no low-resolution input
        rows.append(row)
        log(json.dumps(row))

    x_low, labels = cascade.low_resolution(test[:n]), test_labels[:n]
    x, seconds = timed(lambda: cascade.super_resolve(sr, schedule, x_low, 0.0, steps, batch_size))
    add("SR of real 14-px test digits (s = 0)", x, labels, x_low, seconds)
    (x, x_low, labels), seconds = timed(lambda: cascade.cascade_samples(base, base_schedule, plain, schedule, n, 0.0,
                                                                        steps, batch_size))
    add("cascade, SR trained without augmentation", x, labels, x_low, seconds)
    for level in LEVELS:
        (x, x_low, labels), seconds = timed(lambda: cascade.cascade_samples(base, base_schedule, sr, schedule, n, level,
                                                                            steps, batch_size))
        add(f"cascade, SR with augmentation, sampled at s = {level:g}", x, labels, x_low, seconds)
    direct, direct_schedule = load_pretrained("mnist_cond")
    labels = torch.arange(10).repeat(n // 10 + 1)[:n]
    x, seconds = timed(lambda: torch.cat([generate(direct, direct_schedule, len(labels[i:i + batch_size]), "ddim", steps,
                                                   {"y": labels[i:i + batch_size]}, "cpu", i, False)
                                          for i in range(0, n, batch_size)]))
    add("direct 28-px model (mnist_cond)", x, labels, None, seconds)
    floor = real_floor("mnist", n)
    return {"rows": rows, "n": n, "fid_floor": round(floor["fid"], 3), "sampler": f"DDIM-{steps} per stage, x0 clipped"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("no_augmentation", "table"))
    p.add_argument("--json", required=True, help="the table file (created, or this benchmark's own to update)")
    p.add_argument("--out", default="runs/cascade_no_augmentation", help="the no-augmentation SR model's run folder")
    p.add_argument("--n", type=int, default=2000, help="table: samples per row")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    read_table(args.json, MARK)                   # refuse another benchmark's file before any work
    section = no_augmentation(args.out) if args.part == "no_augmentation" else table(args.out, args.n)
    write_section(args.json, MARK, args.part, section)
    print(f"wrote the {args.part} section of {args.json}")


if __name__ == "__main__":
    main()
