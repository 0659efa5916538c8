#!/usr/bin/env python3
"""Lesson 13's measured tables beside the NFE table of ``fast_sampling.py --table ode``:

    OMP_NUM_THREADS=1 python benchmarks/ode_flow.py --part flow [--n 2000]        # about 20 min on one thread
    python benchmarks/ode_flow.py --part fastest [--threads 2]                     # about 2 min

``--part flow``: flow matching against L_simple with everything else equal. ``mnist_latent_flow`` (the
velocity, Euler and Heun on the flow) and ``mnist_latent`` (eps, DDIM and DPM-Solver++(2M) on the
probability-flow ODE) share the autoencoder, the U-Net, the data, the Trainer and the training budget;
only the objective differs. For every budget of network calls in ``--nfe``, ``--n`` class-balanced
samples of each sampler from the same x_T (the same seed draws the same starting noise for both
models; Heun on the flow corrects every step, so it takes NFE / 2 steps), decoded, without
guidance, each with FID and KID against ``--n`` MNIST test images on the course classifier's
features beside the real-data floor at the same n, and class accuracy
(:func:`sample_size.measure`).

``--part fastest``: the shortest routes from noise to 64 digits on this CPU (``--threads``, 2 by
default: the "2 cores" of the aim), each one call of :func:`lesson_lib.course.playground.draw`,
that is of ``lesson_lib.sample.generate``: seconds for 64 digits (mean of 5 calls after a warm-up),
class accuracy of ``--accuracy-n`` samples of the same route, and their ratio, the expected
seconds until 64 digits of the asked-for class (drawing again for the misses).

Both parts write their section of ``--json`` (default docs/ode_flow_table.json, read by lesson 13).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sample_size import FEATURES, Reference, measure, rounded, verdict  # noqa: E402
from tables import read_table, timed, write_section  # noqa: E402

from lesson_lib.course.playground import draw  # noqa: E402
from lesson_lib.evaluation.judges import class_accuracy  # noqa: E402

MARK = "benchmarks/ode_flow.py"
FLOW_ARMS = (("mnist_latent_flow", "euler"), ("mnist_latent_flow", "heun"), ("mnist_latent", "ddim"),
             ("mnist_latent", "dpmpp2m"))
ROUTES = (("mnist_consistency", "consistency", 1, 0.0), ("mnist_distilled_1", "ddim", 1, 0.0),
          ("mnist_distilled_2", "ddim", 2, 0.0), ("mnist_latent_flow", "euler", 4, 0.0),
          ("mnist_latent_flow", "euler", 4, 2.0), ("mnist_latent_flow", "euler", 8, 2.0),
          ("mnist_latent", "dpmpp2m", 8, 2.0), ("mnist_cond", "dpmpp2m", 8, 2.0))


def steps_for(sampler, nfe):
    """Steps within ``nfe`` network calls: Heun on the flow takes 2 a step, the others 1."""
    return nfe // 2 if sampler == "heun" else nfe


def part_flow(args, log):
    reference = Reference(args.data)
    floor = reference.floor(args.n)
    log(f"real-data floor at n = {args.n}: FID {floor['fid']:.3f}")
    labels = torch.arange(10).repeat(args.n // 10)
    rows = []
    for nfe in args.nfe:
        for name, sampler in FLOW_ARMS:
            S = steps_for(sampler, nfe)
            if S < 1:
                continue
            images, _, seconds = draw(name, sampler, S, 0.0, args.seed, labels=labels)
            row = dict(model=name, sampler=sampler, S=S, nfe=nfe, **measure(images, labels, reference, seconds))
            rows.append(rounded(row))
            log(f"{name:>17} {sampler:>8}  NFE={nfe:<3} S={S:<3} {verdict(row, floor)}")
    return dict(n=args.n, seed=args.seed, guidance=0.0, floor_fid=round(floor["fid"], 3), floor=rounded(floor),
                feature_network=FEATURES, x_T="the same for every arm (one seed)", rows=rows)


def part_fastest(args, log):
    torch.set_num_threads(args.threads)
    labels = torch.arange(64) % 10
    many = torch.arange(args.accuracy_n) % 10
    rows = []
    for name, sampler, steps, w in ROUTES:
        seconds = timed(lambda: draw(name, sampler, steps, w, args.seed, labels=labels), 5)
        images, _, _ = draw(name, sampler, steps, w, args.seed + 1, labels=many)
        accuracy = class_accuracy(images, many)["accuracy"]
        rows.append(dict(model=name, sampler=sampler, steps=steps, w=w, seconds_per_64=round(seconds, 3),
                         accuracy=round(accuracy, 4), seconds_per_64_correct=round(seconds / accuracy, 3)))
        log(f"{name:>17} {sampler:>11} {steps:>2} steps, w = {w:g}: {seconds:.3f} s for 64, accuracy "
            f"{accuracy:.3f} (n = {args.accuracy_n}), {seconds / accuracy:.3f} s per 64 correct")
    return dict(threads=args.threads, accuracy_n=args.accuracy_n, timing="mean of 5 calls after one warm-up",
                rows=rows)


PARTS = {"flow": part_flow, "fastest": part_fastest}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=sorted(PARTS), required=True)
    p.add_argument("--n", type=int, default=2000, help="--part flow: samples per arm (a multiple of 10)")
    p.add_argument("--nfe", type=int, nargs="+", default=[2, 4, 8, 16, 50], help="--part flow: network-call budgets")
    p.add_argument("--accuracy-n", type=int, default=1000, help="--part fastest: samples per route for the accuracy")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (flow: 1, fastest: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="directory holding mnist.npz (else $DDPM_DATA_DIR)")
    p.add_argument("--json", default="docs/ode_flow_table.json")
    args = p.parse_args(argv)
    if args.n < 10 or args.n % 10:
        p.error(f"--n must be a positive multiple of 10 (n/10 samples per class), got --n {args.n}")
    read_table(args.json, MARK)                   # another benchmark's file is refused before any work
    args.threads = args.threads or (2 if args.part == "fastest" else 1)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    section = PARTS[args.part](args, log=lambda line: print(line, flush=True))
    section["wall_time_s"] = round(time.perf_counter() - start)
    write_section(args.json, MARK, args.part, section)
    print(f"wrote part {args.part} of {args.json}")


if __name__ == "__main__":
    main()
