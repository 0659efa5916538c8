#!/usr/bin/env python3
"""Likelihood in bits per dimension on MNIST: the shipped models, learned variances, baselines.

    OMP_NUM_THREADS=1 python benchmarks/likelihood.py table [--n 1000] [--K 16] [--json FILE]
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
histogram shared by all pixels. ``fid`` measures FID against the number of DDPM sampling
steps, learned vs fixed variances (conditional samples, n/10 per class; ``--models`` picks the arms). Recorded figures:
docs/benchmarks.md and the model card of ``mnist_learned_variance``.
"""
import argparse
import json
import os
import time

import torch

from lesson_lib.cards import hardware
from lesson_lib.data.images import load_mnist
from lesson_lib.diffusion.denoiser import Denoiser
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


def perfect_decoder_bpd(x0, schedule):
    """L_0 in bits/dim if x0_hat were the true x0, for sigma^2 = beta_1 and beta-tilde (clipped):
    what the decoder's fixed width costs even with a perfect mean."""
    return {variance: round(decoder_floor_bpd(x0, float(log_var)), 4)
            for variance, log_var in (("beta", schedule.betas[0].log()), ("beta_tilde", schedule.posterior_log_variance[0]))}


def table(args):
    torch.set_num_threads(args.threads)
    x_test, _ = load_mnist("test", data_dir=args.data)
    x0 = x_test[:args.n]
    train_u8, _ = load_mnist("train", data_dir=args.data, as_uint8=True)
    test_u8, _ = load_mnist("test", data_dir=args.data, as_uint8=True)
    per_pixel, histogram, per_pixel_per_image = baselines(train_u8, test_u8[:args.n])
    rows, curves = [], {}
    models = ["mnist_cond"] + [name for name in LEARNED if (WEIGHTS_DIR / f"{name}.pt").exists()]
    for name in models:
        model, schedule = load_pretrained(name)
        g = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        results = bits_per_dim(Denoiser(model, schedule, clip_x0=True), schedule, x0, args.K,
                               generator=g, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        for variance, r in results.items():
            # Paired with the per-pixel baseline on the same images (the question is whether the bound
            # beats it on these images); its standard error is mostly that of the timestep draws.
            gap = r.per_image.double().cpu() - per_pixel_per_image
            rows.append({"model": name, "variance": variance, "bits_per_dim": round(r.total, 4),
                         "standard_error": round(r.standard_error, 4), "prior": round(r.prior, 6),
                         "L_0": round(r.decoder, 4), "sum_L_t": round(r.diffusion, 4), "seconds": round(seconds, 1),
                         "minus_per_pixel": round(gap.mean().item(), 4),
                         "minus_per_pixel_se": round(gap.std().item() / len(gap) ** 0.5, 4)})
            centres, means, _ = mean_by_timestep(r.t, r.L_t, bins=20, T=schedule.T)
            curves[f"{name}/{variance}"] = {"t": [round(c, 1) for c in centres.tolist()],
                                            "L_t": [float(f"{m:.4g}") for m in means.tolist()]}
    zeros = (test_u8[:args.n] == 0).double().mean().item()
    perfect = perfect_decoder_bpd(x0, schedule)
    out = {"n": args.n, "K": args.K, "seed": args.seed, "split": "MNIST test (first n)",
           "hardware": hardware("cpu"), "torch": torch.__version__,
           "clip_x0": True, "conditioning": "unconditional (null class)", "rows": rows,
           "baselines": {"per_pixel_categorical": round(per_pixel, 4), "shared_histogram": round(histogram, 4)},
           "fraction_exact_zeros": round(zeros, 4), "L_0_perfect_x0_hat": perfect, "L_t_curves": curves}
    print(f"bits/dim on {args.n} MNIST test images, K = {args.K} stratified timesteps per image "
          f"(+ exact L_0 and prior), seed {args.seed}; {out['hardware']}")
    print(f"{'model':24s} {'variance':10s} {'bits/dim':>9s} {'+-SE':>7s} {'L_T':>9s} {'L_0':>7s} {'sum L_t':>8s} "
          f"{'- per-pixel (paired +-SE)':>26s}")
    for r in rows:
        print(f"{r['model']:24s} {r['variance']:10s} {r['bits_per_dim']:9.3f} {r['standard_error']:7.3f} "
              f"{r['prior']:9.2e} {r['L_0']:7.3f} {r['sum_L_t']:8.3f} "
              f"{r['minus_per_pixel']:+18.3f} +- {r['minus_per_pixel_se']:.3f}")
    print(f"{'per-pixel categorical':24s} {'':10s} {per_pixel:9.3f}   (fit on 60,000 train, pseudo-count 1)")
    print(f"{'shared 256-bin histogram':24s} {'':10s} {histogram:9.3f}")
    print(f"fraction of test pixels that are exactly 0: {zeros:.3f}")
    print("L_0 if x0_hat were the true x0 (decoder variance fixed): " +
          ", ".join(f"{k} {v:.3f}" for k, v in perfect.items()))
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
    """Write the stored measurements (``--json`` of ``table``, ``--fid-json`` of ``fid``) into the
    ``evaluation`` of each shipped learned-variance model's card; the weights are not touched."""
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
            "what": "negative log-likelihood bound in bits/dim on the MNIST test split (benchmarks/likelihood.py table) "
                    "and FID of strided-DDPM samples with the learned variance (benchmarks/likelihood.py fid)",
            "n": table["n"], "K": table["K"], "seed": table["seed"], "clip_x0": table["clip_x0"],
            "conditioning": table["conditioning"],
            "bits_per_dim": {r["variance"]: r["bits_per_dim"] for r in rows},
            "standard_error": {r["variance"]: r["standard_error"] for r in rows},
            "L_0": {r["variance"]: r["L_0"] for r in rows},
            "per_pixel_categorical_baseline": table["baselines"]["per_pixel_categorical"],
            "fid": {"n": fids["n"], "floor": fids["floor"], "seeds": sorted({r["seed"] for r in own}),
                    "by_steps": {str(S): [r["fid"] for r in own if r["steps"] == S]
                                 for S in sorted({r["steps"] for r in own})}},
        }
        card["description"] = DESCRIPTIONS[name] + " EMA weights stored in float16."
        print(name, write_card(path, card)["sha256"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("table", "fid", "cards"))
    parser.add_argument("--data", default=os.environ.get("DDPM_DATA_DIR"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--K", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--models", nargs="+", default=["mnist_cond", *LEARNED],
                        help="fid: the shipped models to sample (default all)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--fid-json", default="docs/likelihood_fid.json", help="cards: the stored FID measurement")
    args = parser.parse_args()
    {"table": table, "fid": fid, "cards": cards}[args.command](args)


if __name__ == "__main__":
    main()
