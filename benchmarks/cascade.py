#!/usr/bin/env python3
"""Lesson 12's table: what conditioning augmentation buys a two-stage cascade on MNIST (14 -> 28 px).

    OMP_NUM_THREADS=1 python benchmarks/cascade.py no_augmentation --json docs/cascade_table.json  # about 1 h
    OMP_NUM_THREADS=1 python benchmarks/cascade.py table           --json docs/cascade_table.json  # about 1 h
    # or side by side, on the same --json: table --rows levels --levels 0 0.1 0.2, table --rows real direct, ...

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

Each part writes its section into ``--json`` (a file of this benchmark: another is refused) and keeps the others;
``table`` writes each row as it finishes (``complete`` says when all eight are in), and the first 20 samples of each
row into ``--samples`` (docs/cascade_samples.npz: the lesson shows the arms side by side, the no-augmentation model
not being shipped).
"""

import argparse
import json
import os
import time

import numpy as np
import torch

from lesson_lib.data.images import load_dataset
from lesson_lib.diffusion.cascade import downsample
from lesson_lib.evaluation.fid import real_floor
from lesson_lib.files import atomic_write
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


ROWS = ("real", "no_augmentation", "levels", "direct")
"""The row groups of part ``table``, in the table's order; ``--rows`` runs a subset (the rows without the
no-augmentation model can run while it trains)."""
ORDER = ("SR of real", "cascade, SR trained without", "cascade, SR with", "direct")


def in_order(rows):
    """``rows`` in the table's order: by group (:data:`ORDER`), the levels by s."""
    return sorted(rows, key=lambda row: ([row["row"].startswith(o) for o in ORDER].index(True), row["row"]))


SHOWN = 20
"""Samples kept per row for the lesson's side-by-side grid: the first 20 (the classes 0-9 twice). Every cascade row
draws its base samples from the same seeds, so its first 20 share one 14-px input."""


def keep_samples(path, name, x, x_low):
    """Add the first :data:`SHOWN` samples of row ``name`` (and, once, their 14-px inputs) to the uint8 file ``path``."""
    to_uint8 = lambda images: ((images[:SHOWN].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    kept = dict(np.load(path)) if os.path.exists(path) else {}
    kept[name] = to_uint8(x)
    if x_low is not None and name.startswith("cascade"):
        kept["base 14-px samples"] = to_uint8(x_low)
    atomic_write(path, lambda f: np.savez_compressed(f, **kept))


def table(out, n=2000, steps=50, batch_size=500, rows=ROWS, levels=LEVELS, done=(), save=lambda section: None,
          samples=None, log=print):
    """The rows named by ``rows`` (groups of :data:`ROWS`), each passed to ``save`` with the rows before it as it
    finishes (the group "levels" at each of ``levels``); ``done`` holds rows of an earlier call, kept unless measured
    again (a row is named by its "row").
    With ``samples``, each row's first samples go into that file (:func:`keep_samples`)."""
    table_rows = {row["row"]: row for row in done}

    def add(name, x, labels, x_low, seconds):
        if samples:
            keep_samples(samples, name, x, x_low)
        row = {"row": name, **cascade.figures(x, labels, downsample(x) if x_low is None else x_low, None, "cpu"),
               "seconds_per_image": round(seconds / n, 3)}
        if x_low is None:
            row["consistency_mse"] = None               # a direct model has no low-resolution input
        table_rows[name] = row
        log(json.dumps(row))
        save(section())

    def section():
        return {"rows": in_order(table_rows.values()), "n": n, "fid_floor": floor,
                "sampler": f"DDIM-{steps} per stage, x0 clipped"}

    floor = round(real_floor("mnist", n)["fid"], 3)
    base, base_schedule = load_pretrained("mnist_base14")
    sr, schedule = load_pretrained("mnist_sr")
    if "real" in rows:
        test, test_labels, _ = load_dataset("mnist", "test", as_uint8=True)
        x_low, labels = cascade.low_resolution(test[:n]), test_labels[:n]
        x, seconds = timed(lambda: cascade.super_resolve(sr, schedule, x_low, 0.0, steps, batch_size))
        add("SR of real 14-px test digits (s = 0)", x, labels, x_low, seconds)
    if "no_augmentation" in rows:
        plain, _ = model_from_state(torch.load(os.path.join(out, "model.pt"), weights_only=True))
        (x, x_low, labels), seconds = timed(lambda: cascade.cascade_samples(base, base_schedule, plain, schedule, n,
                                                                            0.0, steps, batch_size))
        add("cascade, SR trained without augmentation", x, labels, x_low, seconds)
    if "levels" in rows:
        for level in levels:
            (x, x_low, labels), seconds = timed(lambda: cascade.cascade_samples(base, base_schedule, sr, schedule, n,
                                                                                level, steps, batch_size))
            add(f"cascade, SR with augmentation, sampled at s = {level:g}", x, labels, x_low, seconds)
    if "direct" in rows:
        direct, direct_schedule = load_pretrained("mnist_cond")
        labels = torch.arange(10).repeat(n // 10 + 1)[:n]
        x, seconds = timed(lambda: torch.cat([generate(direct, direct_schedule, len(labels[i:i + batch_size]), "ddim",
                                                       steps, {"y": labels[i:i + batch_size]}, "cpu", i, False)
                                              for i in range(0, n, batch_size)]))
        add("direct 28-px model (mnist_cond)", x, labels, None, seconds)
    return section()


def rows_at(path, n, mine=()):
    """The table rows in ``path`` measured at the same ``n``, with the rows ``mine`` put in place of theirs (by name):
    two calls for different ``--rows`` may run side by side on the same file, each keeping the other's rows."""
    kept = read_table(path, MARK).get("table", {})
    rows = {row["row"]: row for row in (kept.get("rows", []) if kept.get("n") == n else [])}
    rows.update({row["row"]: row for row in mine})
    return in_order(rows.values())


def save_rows(path, section):
    """Write part ``table`` of ``path``: ``section`` with the rows other calls have written there kept."""
    rows = rows_at(path, section["n"], section["rows"])
    write_section(path, MARK, "table", dict(section, rows=rows, complete=len(rows) == 3 + len(LEVELS)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("no_augmentation", "table"))
    p.add_argument("--json", required=True, help="the table file (created, or this benchmark's own to update)")
    p.add_argument("--out", default="runs/cascade_no_augmentation", help="the no-augmentation SR model's run folder")
    p.add_argument("--n", type=int, default=2000, help="table: samples per row")
    p.add_argument("--samples", default="docs/cascade_samples.npz",
                   help="table: where each row's first 20 samples go (uint8, for lesson 12's grid)")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=ROWS,
                   help="table: the row groups to measure (the others already in --json at the same n are kept)")
    p.add_argument("--levels", nargs="+", type=float, choices=LEVELS, default=LEVELS,
                   help="table: the levels s of the row group 'levels' (two calls can share the table's levels)")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    read_table(args.json, MARK)                   # refuse another benchmark's file before any work
    if args.part == "no_augmentation":
        section = no_augmentation(args.out)
    else:
        if "no_augmentation" in args.rows and not os.path.exists(os.path.join(args.out, "model.pt")):
            raise SystemExit(f"--rows no_augmentation needs {os.path.join(args.out, 'model.pt')}: run the part "
                             f"no_augmentation first (or leave that row out with --rows)")
        section = table(args.out, args.n, rows=args.rows, levels=args.levels, done=rows_at(args.json, args.n),
                        save=lambda part: save_rows(args.json, part), samples=args.samples)
        save_rows(args.json, section)
        print(f"wrote the table section of {args.json}")
        return
    write_section(args.json, MARK, args.part, section)
    print(f"wrote the {args.part} section of {args.json}")


if __name__ == "__main__":
    main()
