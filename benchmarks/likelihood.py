#!/usr/bin/env python3
"""Likelihood in bits per dimension on MNIST: the shipped models, learned variances, baselines.

    OMP_NUM_THREADS=1 python benchmarks/likelihood.py table [--n 1000] [--K 32] [--models ...] [--no-extremes] [--json FILE]
    python benchmarks/likelihood.py merge PART.json ... --json FILE    # tables measured one model at a time
    OMP_NUM_THREADS=1 python benchmarks/likelihood.py fid [--n 256] [--steps 10 25 50] [--seeds 0 1] [--models ...]
    python benchmarks/likelihood.py cards     # the stored table and FID into the shipped cards' evaluation

The learned-variance models are made by their recipes (lesson_lib/recipes/likelihood.py), not here:

    python -m lesson_lib.train --recipe mnist_learned_variance --export lesson_lib/weights   # L_hybrid, 35 min
    python -m lesson_lib.train --recipe mnist_vlb --export lesson_lib/weights                # L_vlb, 50 min

``table`` prints the bound on ``--n`` MNIST test images (the first n, unconditional: the null
class) with K stratified timesteps per image (:func:`lesson_lib.diffusion.likelihood.bits_per_dim`),
for sigma^2 = beta, beta-tilde and the learned variance, with the prior, L_0 and sum L_t
terms and the standard error over images, next to two baselines fit on the 60,000 training
images: an independent categorical per pixel (Laplace pseudo-count 1) and one 256-bin
histogram shared by all pixels. x0_hat is not clipped (the bound the objectives train); the
same network evaluations are scored again with x0_hat clipped to [-1, 1] (improved-diffusion's
default) for the comparison. It also stores the least L_0 of any decoder mean at the two fixed
widths (``decoder_floor_bpd``) and the six extreme images of the best row scored with every
timestep. ``fid`` measures FID against the number of DDPM sampling
steps, learned vs fixed variances (conditional samples, n/10 per class; ``--models`` picks the arms). Recorded figures:
docs/benchmarks.md and the model card of ``mnist_learned_variance``.
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch

from lesson_lib.cards import hardware
from lesson_lib.data.images import load_mnist
from lesson_lib.diffusion.denoiser import ClipX0, Denoiser
from lesson_lib.diffusion.likelihood import bits_per_dim, decoder_floor_bpd, mean_by_timestep
from lesson_lib.pretrained import WEIGHTS_DIR, load_pretrained, write_card
from lesson_lib.recipes.likelihood import DESCRIPTIONS

LEARNED = tuple(DESCRIPTIONS)          # the shipped learned-variance models: mnist_learned_variance, mnist_vlb


# --- baselines ---------------------------------------------------------------------------------

def baselines(train_u8, test_u8, pseudo_count=1.0):
    """Bits per dimension on the test images of (a) an independent categorical per pixel and (b)
    one 256-bin histogram for all pixels, both fit on the training images with a Laplace
    pseudo-count. Also returns (a) per image, for paired comparisons with a model's bound."""
    tr = train_u8.reshape(train_u8.shape[0], -1).long()
    te = test_u8.reshape(test_u8.shape[0], -1).long()
    D = tr.shape[1]
    counts = torch.zeros(D, 256, dtype=torch.float64)
    counts.scatter_add_(1, tr.T.contiguous(), torch.ones_like(tr.T, dtype=torch.float64))
    p_pixel = (counts + pseudo_count) / (counts.sum(1, keepdim=True) + 256 * pseudo_count)
    per_pixel_per_image = -p_pixel.log2().gather(1, te.T.contiguous()).mean(0)
    per_pixel = per_pixel_per_image.mean().item()
    shared = counts.sum(0) + pseudo_count
    p_shared = shared / shared.sum()
    histogram = -p_shared.log2()[te].mean().item()
    return per_pixel, histogram, per_pixel_per_image


def decoder_floors(x0, schedule):
    """The least L_0 any decoder mean reaches on ``x0`` at the fixed widths sigma^2 = beta_1 and
    beta-tilde (clipped), with the mean free (the edge bins' mean beyond the edge) and with it
    clipped to [-1, 1] (the mean on the true level): :func:`decoder_floor_bpd`."""
    return {variance: {"unclipped": round(decoder_floor_bpd(x0, float(log_var)), 4),
                       "clipped": round(decoder_floor_bpd(x0, float(log_var), clip_x0=True), 4)}
            for variance, log_var in (("beta", schedule.betas[0].log()), ("beta_tilde", schedule.posterior_log_variance[0]))}


class Recorded:
    """A denoiser that keeps what it returned, so that a second :func:`bits_per_dim` with the same
    seed (the same timesteps and noise, so the same x_t in the same order) can score the same
    network evaluations with x0_hat clipped: ``replay(schedule, True)``. Both bounds then differ by
    the clipping alone, and the network runs once."""

    def __init__(self, denoise):
        self.denoise, self.model, self.calls = denoise, denoise.model, []

    def __call__(self, x_t, t, **cond):
        pred = self.denoise(x_t, t, **cond)
        self.calls.append((x_t, pred))
        return pred

    def replay(self, schedule, clip_x0):
        calls = iter(self.calls)

        def denoise(x_t, t, **cond):
            seen, pred = next(calls)
            if not torch.equal(seen, x_t):
                raise RuntimeError("the replay saw another x_t: run bits_per_dim with the recorded seed and sizes")
            return pred
        return ClipX0(denoise, schedule, clip_x0)


def _row(name, variance, r, per_pixel_per_image):
    # Paired with the per-pixel baseline on the same images (the question is whether the bound
    # beats it on these images); its standard error is mostly that of the timestep draws.
    gap = r.per_image.double().cpu() - per_pixel_per_image
    return {"model": name, "variance": variance, "bits_per_dim": round(r.total, 4),
            "standard_error": round(r.standard_error, 4), "prior": round(r.prior, 6),
            "L_0": round(r.decoder, 4), "sum_L_t": round(r.diffusion, 4),
            "minus_per_pixel": round(gap.mean().item(), 4),
            "minus_per_pixel_se": round(gap.std().item() / len(gap) ** 0.5, 4)}


def table(args):
    torch.set_num_threads(args.threads)
    x_test, _ = load_mnist("test", data_dir=args.data)
    x0 = x_test[:args.n]
    train_u8, _ = load_mnist("train", data_dir=args.data, as_uint8=True)
    test_u8, _ = load_mnist("test", data_dir=args.data, as_uint8=True)
    per_pixel, histogram, per_pixel_per_image = baselines(train_u8, test_u8[:args.n])
    rows, curves, per_image = [], {}, {}
    models = [name for name in ["mnist_cond", *LEARNED] if name in args.models and (WEIGHTS_DIR / f"{name}.pt").exists()]
    for name in models:
        model, schedule = load_pretrained(name)
        start = time.perf_counter()
        recorded = Recorded(Denoiser(model, schedule))            # the bound as the objectives train it
        results = bits_per_dim(recorded, schedule, x0, args.K, generator=torch.Generator().manual_seed(args.seed),
                               batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        clipped = bits_per_dim(recorded.replay(schedule, True), schedule, x0, args.K,
                               generator=torch.Generator().manual_seed(args.seed), batch_size=args.batch_size)
        del recorded
        for variance, r in results.items():
            row = _row(name, variance, r, per_pixel_per_image)
            c = _row(name, variance, clipped[variance], per_pixel_per_image)
            row["clipped"] = {k: c[k] for k in ("bits_per_dim", "standard_error", "L_0", "sum_L_t",
                                                "minus_per_pixel", "minus_per_pixel_se")}
            row["seconds"], row["n"] = round(seconds, 1), args.n
            rows.append(row)
            per_image[(name, variance)] = r.per_image
            centres, means, _ = mean_by_timestep(r.t, r.L_t, bins=20, T=schedule.T)
            _, squares, _ = mean_by_timestep(r.t, r.L_t.double() ** 2, bins=20, T=schedule.T)
            curves[f"{name}/{variance}"] = {"t": [round(c, 1) for c in centres.tolist()],
                                            "L_t": [float(f"{m:.4g}") for m in means.tolist()],
                                            "L_t_rms": [float(f"{m:.4g}") for m in squares.sqrt().tolist()]}
        print(f"{name}: {seconds:.0f} s", flush=True)
    best = min(rows, key=lambda r: r["bits_per_dim"])
    extremes = None
    if args.extremes:
        extremes = _extremes(args, x0, best, per_image)
        print("extremes of", best["model"], best["variance"], extremes)
    zeros = (test_u8[:args.n] == 0).double().mean().item()
    edges = ((test_u8[:args.n] == 0) | (test_u8[:args.n] == 255)).double().mean().item()
    _, schedule = load_pretrained(models[0])
    floors = decoder_floors(x0, schedule)
    out = {"n": args.n, "K": args.K, "seed": args.seed, "split": "MNIST test (first n)",
           "hardware": hardware("cpu"), "torch": torch.__version__,
           "clip_x0": False, "clipped": "the same network evaluations scored with x0_hat clipped to [-1, 1]",
           "conditioning": "unconditional (null class)", "rows": rows,
           "baselines": {"per_pixel_categorical": round(per_pixel, 4), "shared_histogram": round(histogram, 4)},
           "fraction_exact_zeros": round(zeros, 4), "fraction_edge_pixels": round(edges, 4),
           "L_0_floor": floors, "extremes": extremes, "L_t_curves": curves}
    report(out)
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


def _extremes(args, x0, best, per_image):
    # The images with the three lowest and three highest K-timestep estimates of the best arm, scored
    # again with every timestep (T network evaluations each) and another seed: how much of their
    # spread is the images and how much the K draws.
    model, schedule = load_pretrained(best["model"])
    order = per_image[(best["model"], best["variance"])].argsort()
    pick = torch.cat([order[:3], order[-3:]])
    exact = bits_per_dim(Denoiser(model, schedule), schedule, x0[pick], None, variances=[best["variance"]],
                         generator=torch.Generator().manual_seed(args.seed + 1), batch_size=args.batch_size)
    extremes = {"model": best["model"], "variance": best["variance"], "index": pick.tolist(),
                "K_estimate": [round(v, 3) for v in per_image[(best["model"], best["variance"])][pick].tolist()],
                "all_timesteps": [round(v, 3) for v in exact[best["variance"]].per_image.tolist()],
                "seed": args.seed + 1}
    return extremes


def report(out):
    """Print a stored or fresh table."""
    rows, floors, zeros, edges = out["rows"], out["L_0_floor"], out["fraction_exact_zeros"], out["fraction_edge_pixels"]
    per_pixel, histogram = out["baselines"]["per_pixel_categorical"], out["baselines"]["shared_histogram"]
    print(f"bits/dim on {out['n']} MNIST test images, K = {out['K']} stratified timesteps per image "
          f"(+ exact L_0 and prior), seed {out['seed']}; x0_hat not clipped (clipped: the same evaluations); "
          f"{out['hardware']}")
    print(f"{'model':24s} {'variance':10s} {'bits/dim':>9s} {'+-SE':>7s} {'L_T':>9s} {'L_0':>7s} {'sum L_t':>8s} "
          f"{'- per-pixel (paired +-SE)':>26s} {'clipped: bits/dim':>18s} {'L_0':>7s} {'sum L_t':>8s}")
    for r in rows:
        c = r["clipped"]
        print(f"{r['model']:24s} {r['variance']:10s} n = {r.get('n', out['n'])} {r['bits_per_dim']:9.3f} {r['standard_error']:7.3f} "
              f"{r['prior']:9.2e} {r['L_0']:7.3f} {r['sum_L_t']:8.3f} "
              f"{r['minus_per_pixel']:+18.3f} +- {r['minus_per_pixel_se']:.3f} "
              f"{c['bits_per_dim']:18.3f} {c['L_0']:7.3f} {c['sum_L_t']:8.3f}")
    print(f"{'per-pixel categorical':24s} {'':10s} {per_pixel:9.3f}   (fit on 60,000 train, pseudo-count 1)")
    print(f"{'shared 256-bin histogram':24s} {'':10s} {histogram:9.3f}")
    print(f"fraction of test pixels that are exactly 0: {zeros:.3f}; at 0 or 255 (the open edge bins): {edges:.3f}")
    print("least L_0 of any decoder mean at a fixed width: " +
          ", ".join(f"{k} {v['unclipped']:.3f} (mean clipped to [-1, 1]: {v['clipped']:.3f})" for k, v in floors.items()))


def merge(args):
    """Join tables measured one model at a time (``table --models NAME --json PART``) into one: the same K
    and seed; each row keeps its own n (the first n test images; its paired difference is on those), and the
    table's n, baselines and floors are those of the part with the most images; the extremes are those of
    the part whose best row is best overall."""
    parts = [json.load(open(f)) for f in args.parts]
    for part in parts:
        for r in part["rows"]:
            r.setdefault("n", part["n"])
    out = dict(max(parts, key=lambda part: part["n"]))
    for key in ("K", "seed"):
        if any(part[key] != out[key] for part in parts):
            raise SystemExit(f"merge: the parts differ in {key}; measure them with the same --K and --seed")
    order = ["mnist_cond", *LEARNED]
    out["rows"] = sorted((r for part in parts for r in part["rows"]), key=lambda r: order.index(r["model"]))
    out["L_t_curves"] = {k: v for part in parts for k, v in part["L_t_curves"].items()}
    best = min(out["rows"], key=lambda r: r["bits_per_dim"])
    out["extremes"] = next((part["extremes"] for part in parts if part["extremes"]
                            and (part["extremes"]["model"], part["extremes"]["variance"]) == (best["model"], best["variance"])), None)
    if out["extremes"] is None:
        raise SystemExit("merge: no part holds the extremes of the best row; measure its model without --no-extremes")
    report(out)
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


def fid(args):
    """FID (course feature network, n samples against n test images, with the real-vs-real floor
    at the same n) of DDPM samples on S evenly spaced steps (strided DDPM, respaced betas), for
    sigma^2 = beta and beta-tilde of mnist_cond and for the learned variance, per seed."""
    from lesson_lib.diffusion.sampling import ddpm_sample
    from lesson_lib.diffusion.timesteps import spaced
    from lesson_lib.evaluation.fid import compute_metrics, real_floor
    torch.set_num_threads(args.threads)
    floor = real_floor("mnist", args.n, data_dir=args.data)["fid"]
    print(f"FID floor (train vs test, n = {args.n}): {floor:.3f}", flush=True)
    labels = torch.arange(args.n) % 10
    rows = []
    arms = [("mnist_cond", "beta"), ("mnist_cond", "beta_tilde")] + [(name, "learned") for name in LEARNED]
    for name, variance in [arm for arm in arms if arm[0] in args.models]:
        model, schedule = load_pretrained(name)
        for steps in args.steps:
            for seed in args.seeds:
                start = time.perf_counter()
                g = torch.Generator().manual_seed(seed)
                # A learned-variance model's steps use its own frac; `variance` is then not read.
                x = ddpm_sample(model, schedule, (args.n, 1, 28, 28), timesteps=spaced(schedule.T, steps),
                                variance="beta" if variance == "learned" else variance, generator=g,
                                model_kwargs={"y": labels}, clip_x0=True, progress=False)
                m = compute_metrics(x, dataset="mnist", data_dir=args.data, seed=seed)
                rows.append({"model": name, "variance": variance, "steps": steps, "seed": seed,
                             "fid": round(float(m["fid"]), 3), "seconds": round(time.perf_counter() - start, 1)})
                print(rows[-1], flush=True)
    out = {"n": args.n, "floor": round(floor, 3), "rows": rows, "clip_x0": True,
           "hardware": hardware("cpu"), "torch": torch.__version__}
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


def cards(args):
    """Write the stored measurements (``--json`` of ``table``, ``--fid-json`` of ``fid``, and where it exists
    ``docs/likelihood_fid_n5000_NAME.json``) into the ``evaluation`` of each shipped learned-variance model's
    card; the weights are not touched."""
    table = json.load(open(args.json or "docs/likelihood_table.json"))
    fids = json.load(open(args.fid_json))
    for name in LEARNED:
        path = WEIGHTS_DIR / f"{name}.pt"
        if not path.exists():
            continue
        card = json.loads(path.with_suffix(".json").read_text())
        rows = [r for r in table["rows"] if r["model"] == name]
        own = [r for r in fids["rows"] if r["model"] == name]
        card["evaluation"] = {
            "what": "negative log-likelihood bound in bits/dim on the MNIST test split, x0_hat not clipped, as the "
                    "objectives train it (benchmarks/likelihood.py table; bits_per_dim_clipped: the same network "
                    "evaluations with x0_hat clipped to [-1, 1]) and FID of strided-DDPM samples with the learned "
                    "variance, x0_hat clipped while sampling (benchmarks/likelihood.py fid)",
            "n": rows[0].get("n", table["n"]), "K": table["K"], "seed": table["seed"], "clip_x0": table["clip_x0"],
            "conditioning": table["conditioning"],
            "bits_per_dim": {r["variance"]: r["bits_per_dim"] for r in rows},
            "standard_error": {r["variance"]: r["standard_error"] for r in rows},
            "L_0": {r["variance"]: r["L_0"] for r in rows},
            "sum_L_t": {r["variance"]: r["sum_L_t"] for r in rows},
            "bits_per_dim_clipped": {r["variance"]: r["clipped"]["bits_per_dim"] for r in rows},
            "L_0_clipped": {r["variance"]: r["clipped"]["L_0"] for r in rows},
            "minus_per_pixel_paired": {r["variance"]: r["minus_per_pixel"] for r in rows},
            "per_pixel_categorical_baseline": table["baselines"]["per_pixel_categorical"],
            "per_pixel_categorical_baseline_n": table["n"],
            "fid": {"n": fids["n"], "floor": fids["floor"], "seeds": sorted({r["seed"] for r in own}),
                    "by_steps": {str(S): [r["fid"] for r in own if r["steps"] == S]
                                 for S in sorted({r["steps"] for r in own})}},
        }
        large_path = Path(f"docs/likelihood_fid_n5000_{name}.json")     # benchmarks/fast_sampling.py --model NAME
        if large_path.exists():
            large = json.loads(large_path.read_text())
            card["evaluation"]["fid_n5000"] = {
                "what": "the same sampler at n = 5,000, one x_T seed, references drawn at random from the test split, "
                        "with FID extrapolated to infinite n (benchmarks/fast_sampling.py --model; docs/benchmarks.md §10)",
                "n": large["n"], "floor": large["floor"]["fid"], "floor_fid_infinity": large["floor"]["fid_infinity"],
                "by_steps": {str(r["S"]): {"fid": r["fid"], "fid_infinity": r["fid_infinity"], "kid": r["kid"],
                                           "accuracy": r["accuracy"]} for r in large["rows"]}}
        card["description"] = DESCRIPTIONS[name] + " EMA weights stored in float16."
        print(name, write_card(path, card)["sha256"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("table", "merge", "fid", "cards"))
    parser.add_argument("parts", nargs="*", help="merge: the tables to join")
    parser.add_argument("--data", default=os.environ.get("DDPM_DATA_DIR"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--K", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--models", nargs="+", default=["mnist_cond", *LEARNED],
                        help="table, fid: the shipped models to measure (default all)")
    parser.add_argument("--no-extremes", dest="extremes", action="store_false",
                        help="table: skip scoring the best row's extreme images with every timestep")
    parser.add_argument("--json", default=None)
    parser.add_argument("--fid-json", default="docs/likelihood_fid.json", help="cards: the stored FID measurement")
    args = parser.parse_args()
    {"table": table, "merge": merge, "fid": fid, "cards": cards}[args.command](args)


if __name__ == "__main__":
    main()
