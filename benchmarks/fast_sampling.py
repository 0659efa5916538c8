#!/usr/bin/env python3
"""Fewer steps without retraining: the DDIM table on the shipped MNIST model.

    OMP_NUM_THREADS=1 python benchmarks/fast_sampling.py --table ddim [--n 500] [--steps 10 20 50]
        [--etas 0 0.5 1] [--no-strided] [--json docs/fast_sampling_table.json]
    OMP_NUM_THREADS=1 python benchmarks/fast_sampling.py --table ddim --n 5000 --steps 2 3 5 10 20 \\
        --json docs/fast_sampling_table_n5000.json
    OMP_NUM_THREADS=1 python benchmarks/fast_sampling.py --table ddim --model mnist_vlb --n 5000 --steps 5 10 \\
        --etas --json docs/likelihood_fid_n5000_mnist_vlb.json   # lesson 8: strided DDPM, learned variance

``--table ddim`` (Song et al. 2021, Table 1 analogue): for every step count S and every eta,
``n`` samples of ``mnist_cond`` (or ``--model``; n/10 per class) with DDIM (Eq. 12) on the course's default
spacing (``timesteps.spaced(T, S, "linspace")``), plus one row per S of strided DDPM (Nichol &
Dhariwal 2021: ancestral steps on the same sub-sequence with beta_{t->s} = 1 - alpha-bar_t /
alpha-bar_s). Every cell starts from the same x_T (and stochastic cells draw their step noise
from the same seed), so cells differ only by the sampler. x0_hat is clipped to [-1, 1] in every
cell (as ``lesson_lib.sample`` does). Each cell reports FID and KID against n MNIST test images on
the course classifier's features (:mod:`lesson_lib.evaluation.fid`), next to the real-data floor
(n train vs n test images), FID at smaller n and FID_inf, class accuracy, and samples/s on this
machine (benchmarks/sample_size.py measures; the samples of each cell are kept there, so a run cut
short resumes).

``--table ode`` (lesson 13): FID, class accuracy and the distance to a 1000-step solution against the
number of network calls, for DDIM, DPM-Solver++(2M) and Heun from the same x_T:

    OMP_NUM_THREADS=1 python benchmarks/fast_sampling.py --table ode --n 1000 --json docs/ode_table.json
    OMP_NUM_THREADS=1 python benchmarks/fast_sampling.py --table ode --n 1000 --nfe 10 20 --no-clip \
        --json docs/ode_table_noclip.json          # the same cells without clipping x0_hat
    OMP_NUM_THREADS=1 python benchmarks/fast_sampling.py --table ode --n 5000 --nfe 10 20 --solvers ddim dpmpp2m \
        --json docs/ode_table_n5000.json           # the cells of lesson 13's aim at an n that separates them

Other tables plug in as one function ``table_NAME(model, schedule, args, log) -> dict`` and one
entry in ``TABLES`` (e.g. the distillation ladder of a run of the recipe ``mnist_distilled``); the
command line, the JSON writer and the header are shared.

Recorded figures: docs/benchmarks.md, docs/fast_sampling_table.json (n = 200, read by lesson 6; rows of
FID and samples/s only, written before this script measured more) and docs/fast_sampling_table_n5000.json, with
its longer chains in docs/fast_sampling_strided50_n5000.json, docs/mnist_cond_ddim50_n5000.json (eta = 0, 0.5
and 1) and docs/mnist_cond_ddim100_n5000.json (eta = 0); lesson 8's variances at n = 5,000 in
docs/likelihood_fid_n5000_MODEL.json.
"""
import argparse
import json
import time

import torch

from lesson_lib.cards import hardware
from lesson_lib.diffusion.ode import SOLVERS as ODE_SOLVERS
from lesson_lib.diffusion.sampling import ddim_sample, ddpm_sample, ode_sample
from lesson_lib.diffusion.timesteps import spaced
from lesson_lib.pretrained import load_pretrained
from lesson_lib.recipes.distilled import ladder
from sample_size import FEATURES, Reference, cached, measure, rounded, verdict


def draw(model, schedule, n, sampler, S, eta, seed, device, batch=50, clip=True):
    """``n`` class-balanced samples of one cell, in batches; x_T and the step noise come from ``seed``,
    so every cell starts from the same x_T. ``clip`` clips x0_hat to [-1, 1] at every step."""
    labels = torch.arange(10).repeat(n // 10 + 1)[:n]
    gen = torch.Generator(device).manual_seed(seed)
    x_T = torch.randn((n, model.in_channels, model.image_size, model.image_size), generator=gen, device=device)
    out = []
    for i in range(0, n, batch):
        kwargs = dict(x_T=x_T[i:i + batch], clip_x0=clip, device=device, progress=False,
                      generator=torch.Generator(device).manual_seed(seed + 1 + i),
                      model_kwargs={"y": labels[i:i + batch].to(device)})
        if sampler == "ddim":
            out.append(ddim_sample(model, schedule, steps=S, eta=eta, **kwargs).cpu())
        elif sampler in ODE_SOLVERS:
            out.append(ode_sample(model, schedule, steps=S, solver=sampler, **kwargs).cpu())
        else:
            out.append(ddpm_sample(model, schedule, timesteps=spaced(schedule.T, S, "linspace"), **kwargs).cpu())
    return torch.cat(out)


def table_ddim(model, schedule, args, log=print, partial=lambda result: None):
    """One row per (sampler, S, eta), every figure of :func:`sample_size.measure` (FID and KID at n, FID at
    smaller n, FID_inf, class accuracy) beside the floor at the same n; the samples of each cell are kept
    (sample_size.cached), so a run cut short resumes."""
    reference = Reference(args.data, args.device)
    floor = reference.floor(args.n)
    log(f"real-data floor at n = {args.n}: FID {floor['fid']:.3f}, KID {floor['kid']:.5f}, "
        f"FID_inf {floor['fid_infinity']:.3f}")
    cells = [cell for S in args.steps for cell in                  # S by S, so a cut-short run has whole S
             [("ddim", S, eta) for eta in args.etas] + ([] if args.no_strided else [("strided_ddpm", S, None)])]
    labels = torch.arange(10).repeat(args.n // 10 + 1)[:args.n]
    rows = []
    result = dict(table="ddim", floor_fid=round(floor["fid"], 3), floor=rounded(floor), spacing="linspace",
                  clip_x0=True, rows=rows)
    for sampler, S, eta in cells:
        key = f"{args.model}-{sampler}{S}-eta{eta}-n{args.n}-seed{args.seed}-batch{args.batch}"
        images, _, seconds = cached(key, lambda: (draw(model, schedule, args.n, sampler, S, eta, args.seed,
                                                       args.device, batch=args.batch), labels))
        row = dict(sampler=sampler, S=S, eta=eta, **measure(images, labels, reference, seconds))
        rows.append(rounded(row))
        partial(result)
        log(f"{sampler:>13}  S={S:<5} eta={'-' if eta is None else eta:<4} {verdict(row, floor)}")
    return result


def calls(solver, S):
    """Network calls of ``S`` steps of ``solver``: S, or 2S - 1 for Heun (its last step is not corrected)."""
    return 2 * S - 1 if solver == "heun" else S


def table_ode(model, schedule, args, log=print, partial=lambda result: None):
    """Lesson 13's NFE table: for every budget of network calls in ``--nfe``, DDIM (eta = 0: Euler on
    the probability-flow ODE), DPM-Solver++(2M) (NFE steps) and Heun (the most steps within the
    budget, 2S - 1 calls), all from the same x_T on the course's default spacing, with every figure of
    :func:`sample_size.measure`, and the root-mean-square distance of the first ``--reference-n``
    samples to DDIM-1000 from the same x_T (the ODE's solution, nearly)."""
    reference = Reference(args.data, args.device)
    floor = reference.floor(args.n)
    log(f"real-data floor at n = {args.n}: FID {floor['fid']:.3f}")
    labels = torch.arange(10).repeat(args.n // 10 + 1)[:args.n]
    m, clip = args.reference_n, not args.no_clip
    tag = "" if clip else "-noclip"
    exact, _, _ = cached(f"{args.model}-ddim1000-eta0.0-n{m}-seed{args.seed}-batch{args.batch}{tag}",
                         lambda: (draw(model, schedule, m, "ddim", 1000, 0.0, args.seed, args.device, batch=args.batch,
                                       clip=clip), labels[:m]))
    rows = []
    result = dict(table="ode", floor_fid=round(floor["fid"], 3), floor=rounded(floor), spacing="linspace",
                  clip_x0=clip, reference=f"DDIM-1000 from the same x_T, first {m} samples", rows=rows)
    for nfe in args.nfe:
        for solver in args.solvers:
            S = (nfe + 1) // 2 if solver == "heun" else nfe
            if S < 2:
                continue
            key = f"{args.model}-{solver}{S}-eta0.0-n{args.n}-seed{args.seed}-batch{args.batch}{tag}"
            images, _, seconds = cached(key, lambda: (draw(model, schedule, args.n, solver, S, 0.0, args.seed,
                                                           args.device, batch=args.batch, clip=clip), labels))
            distance = (images[:m] - exact).pow(2).flatten(1).mean(1).sqrt().mean().item()
            row = dict(solver=solver, S=S, nfe=calls(solver, S), rms_to_ddim1000=distance,
                       **measure(images, labels, reference, seconds))
            rows.append(rounded(row))
            partial(result)
            log(f"{solver:>8}  NFE={calls(solver, S):<3} S={S:<3} distance {distance:.4f}  {verdict(row, floor)}")
    return result


def table_distillation(model, schedule, args, log=print, partial=lambda result: None):
    """The distillation ladder of lesson 7 (:func:`lesson_lib.recipes.distilled.ladder`): FID and class
    accuracy against network calls for each student of the run in ``--run`` and for DDIM of its teacher
    at the same steps. ``model`` is not used: the students come from the run's checkpoints."""
    return dict(table="distillation", **ladder(args.run, args.n, data_dir=args.data, log=log))


TABLES = {"ddim": table_ddim, "ode": table_ode, "distillation": table_distillation}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", choices=sorted(TABLES), default="ddim")
    p.add_argument("--model", default="mnist_cond",
                   help="the shipped class-conditional MNIST model to sample (a learned-variance model's strided-DDPM "
                        "rows use its own variance: lesson 8)")
    p.add_argument("--n", type=int, default=500, help="samples per cell (a multiple of 10)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 1000], help="step counts S")
    p.add_argument("--etas", type=float, nargs="*", default=[0.0, 0.5, 1.0], help="DDIM eta values (none: strided DDPM only)")
    p.add_argument("--no-strided", action="store_true", help="leave out the strided-DDPM rows")
    p.add_argument("--nfe", type=int, nargs="+", default=[4, 6, 8, 10, 15, 20, 35, 50],
                   help="--table ode: budgets of network calls")
    p.add_argument("--solvers", nargs="+", choices=("ddim", "dpmpp2m", "heun"), default=["ddim", "dpmpp2m", "heun"],
                   help="--table ode: the solvers to run at every budget")
    p.add_argument("--no-clip", action="store_true",
                   help="--table ode: integrate the ODE as it is, without clipping x0_hat to [-1, 1] at each step")
    p.add_argument("--reference-n", type=int, default=100,
                   help="--table ode: samples compared with DDIM-1000 from the same x_T")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=50,
                   help="samples per network call (50 is the fastest on one CPU thread; the step noise is seeded per batch)")
    p.add_argument("--run", default="runs/mnist_distilled-full",
                   help="--table distillation: the run folder of the recipe mnist_distilled")
    p.add_argument("--data", default=None, help="directory holding mnist.npz (else $DDPM_DATA_DIR)")
    p.add_argument("--json", default=None, help="also write the table and its settings here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.n < 10 or args.n % 10:
        p.error(f"--n must be a positive multiple of 10 (n/10 samples per class), got --n {args.n}")
    torch.set_num_threads(args.threads)
    machine = hardware(args.device)
    start = time.perf_counter()
    print(f"table {args.table}: n = {args.n} per cell, seed {args.seed}, {machine}", flush=True)
    model, schedule = load_pretrained(args.model, device=args.device)

    def write(result, complete=False):
        result.update(n=args.n, seed=args.seed, batch=args.batch, model=args.model, hardware=machine, complete=complete,
                      feature_network=FEATURES, torch=torch.__version__, wall_time_s=round(time.perf_counter() - start))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
                f.write("\n")
        return result

    result = TABLES[args.table](model, schedule, args, log=lambda s: print(s, flush=True), partial=write)
    return write(result, complete=True)


if __name__ == "__main__":
    main()
