#!/usr/bin/env python3
"""Sample size: what small-n FID hides, and the measurements of lessons 4-8 at large n.

    OMP_NUM_THREADS=1 python benchmarks/sample_size.py figure [--png docs/fid_against_n.png]

FID is biased upwards at small n, and by how much depends on the samples: the bias grows with
the spread (the covariance) of the features, so samples less diverse than the data can score *below*
the real-vs-real floor at small n. This module measures a set of samples so that neither effect
can hide anything, and the other benchmarks (``fast_sampling.py``, ``distillation.py shipped``,
``guidance.py --large``) measure with it:

* FID and KID at the full n, against n test images drawn at random from the test split (as
  :func:`lesson_lib.evaluation.fid.compute_metrics` draws them), beside the floor at the same n
  (n training against n test images, as :func:`~lesson_lib.evaluation.fid.real_floor` draws them);
* FID at smaller n (random subsets, several draws) beside the floor at each, and FID_inf
  (:func:`~lesson_lib.evaluation.fid.fid_infinity`, Chong & Forsyth 2020), for the samples and
  for the floor;
* Tr(Sigma) of the samples' features over that of the test images (below 1: less diverse);
* class accuracy by the course's clean MNIST classifier (the same network gives the features).

The samples of every arm are kept under ``runs/sample_size/`` (or ``$SAMPLE_SIZE_CACHE``; one file per
arm, n and seed in its name), so a run cut short resumes where it stopped and ``figure`` re-reads them: it draws
FID against n for three arms of the distillation ladder and the floor (docs/fid_against_n.png).
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch

from lesson_lib.data.images import load_mnist
from lesson_lib.evaluation.fid import (extract_features, feature_statistics, fid_against_n, fid_from_features,
                                       fid_infinity, kid)
from lesson_lib.evaluation.judges import class_accuracy, load_classifier

CACHE = Path(os.environ.get("SAMPLE_SIZE_CACHE", "runs/sample_size"))   # the samples of every arm
SMALL_N = (100, 200, 500, 1000, 2000, 5000)    # FID against n: subsets of every arm at these n (those <= its n)
DRAWS = 5                                      # random subsets per n (FID against n and FID_inf)
FEATURES = "course MNIST classifier (penultimate layer, d = 128)"


class Reference:
    """Features of the MNIST test split (all 10,000) and of 10,000 random training images, computed
    once. ``test_subset(n, seed)`` and ``floor(n, seed)`` pick exactly the images that
    ``compute_metrics`` and ``real_floor`` draw for that n and seed (``fid.reference_images``), so the
    figures equal theirs."""

    def __init__(self, data_dir=None, device="cpu", pool=10_000, seed=0):
        self.judge = load_classifier("mnist", device=device)
        self.seed, self.device = seed, device
        test, _ = load_mnist("test", data_dir=data_dir)
        train, _ = load_mnist("train", data_dir=data_dir)
        self.test = extract_features(test, self.judge, device=device).double()
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:pool]
        self.train = extract_features(train[order], self.judge, device=device).double()   # real_floor's train order
        self.test_trace = feature_statistics(self.test)[1].trace().item()

    def _order(self, seed):
        return torch.randperm(len(self.test), generator=torch.Generator().manual_seed(seed))

    def test_subset(self, n, seed=None):
        """The n test images compute_metrics(real_images=None, seed=seed) compares samples with."""
        return self.test[self._order(self.seed if seed is None else seed)[:n]]

    def floor(self, n):
        """The real-vs-real floor at n, as real_floor("mnist", n, seed=self.seed): FID, KID, FID at smaller n,
        FID_inf."""
        train, test = self.train[:n], self.test[self._order(self.seed + 1)[:n]]
        kid_mean, _ = kid(train, test, max(2, min(1000, n // 2)), 100, self.seed)
        curve = fid_against_n(self.train, self.test, [m for m in SMALL_N if m <= n] or [n], DRAWS, self.seed)
        return dict(n=n, fid=fid_from_features(train, test), kid=kid_mean,
                    fid_by_n={m: _mean_sd(v) for m, v in curve.items()},
                    fid_infinity=fid_infinity(self.train[:n], self.test, draws=DRAWS, seed=self.seed)["fid_infinity"])


def _mean_sd(values):
    t = torch.tensor(values, dtype=torch.float64)
    return [t.mean().item(), t.std().item() if len(t) > 1 else 0.0]


def measure(images, labels, reference, seconds=None):
    """Every figure of one arm (see the module docstring); ``labels`` are the classes the images were
    sampled for (None for an unconditional arm: no accuracy)."""
    n = len(images)
    features = extract_features(images, reference.judge, device=reference.device).double()
    real = reference.test_subset(n)
    kid_mean, _ = kid(features, real, max(2, min(1000, n // 2)), 100, reference.seed)
    curve = fid_against_n(features, reference.test, [m for m in SMALL_N if m <= n] or [n], DRAWS, reference.seed)
    result = dict(n=n, fid=fid_from_features(features, real), kid=kid_mean,
                  fid_infinity=fid_infinity(features, reference.test, draws=DRAWS, seed=reference.seed)["fid_infinity"],
                  fid_by_n={m: _mean_sd(v) for m, v in curve.items()},
                  trace_ratio=feature_statistics(features)[1].trace().item() / reference.test_trace)
    if labels is not None:
        result["accuracy"] = class_accuracy(images, labels, classifier=reference.judge, device=reference.device)["accuracy"]
    if seconds is not None:
        result["samples_per_s"] = n / seconds
    return result


def cached(key, make):
    """``make() -> (images, labels)`` once per key: the images of an arm are kept in runs/sample_size/KEY.pt
    with the seconds they took, and read back on the next call. Returns (images, labels, seconds)."""
    path = CACHE / f"{key}.pt"
    if path.exists():
        held = torch.load(path, weights_only=True)
        return held["images"], held["labels"], held["seconds"]
    start = time.perf_counter()
    images, labels = make()
    seconds = time.perf_counter() - start
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save({"images": images, "labels": labels, "seconds": seconds}, path.with_suffix(".part"))
    path.with_suffix(".part").replace(path)
    return images, labels, seconds


def rounded(value, digits=4):
    """Floats rounded for the JSON tables (the sampling noise at these n is far larger)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def verdict(arm, floor):
    """One line: FID and FID_inf against the floor's, KID, at the arm's n."""
    return (f"FID {arm['fid']:.3f} ({arm['fid'] / floor['fid']:.1f}x the floor {floor['fid']:.3f}), "
            f"KID {arm['kid']:.5f} (floor {floor['kid']:.5f}), FID_inf {arm['fid_infinity']:.3f} "
            f"(floor {floor['fid_infinity']:.3f}), Tr ratio {arm['trace_ratio']:.2f}"
            + (f", accuracy {arm['accuracy']:.3f}" if "accuracy" in arm else "") + f"  (n = {arm['n']})")


# ----------------------------------------------------------------------------- the figure

FIGURE_ARMS = (("student", 1, "1-step student (mnist_distilled_1)"),
               ("student", 8, "8-step student (mnist_distilled_8)"),
               ("ddim_mnist_cond", 4, "mnist_cond, DDIM on 4 steps"))


def figure(table_path="docs/distillation_table_n5000.json", png="docs/fid_against_n.png"):
    """FID against n (log-log) for three arms of the distillation ladder at n = 5,000 and the real-vs-real floor,
    each point the mean of the random subsets, with the spread of the draws as error bars."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = json.loads(Path(table_path).read_text())
    rows = {row["calls"]: row for row in table["rows"]}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    curves = [(table["floor"], "real-vs-real floor (train vs test)", dict(color="k", ls="--", marker="o"))]
    curves += [(rows[calls][key], label, dict(marker="s")) for key, calls, label in FIGURE_ARMS
               if rows.get(calls, {}).get(key)]
    for arm, label, style in curves:
        ns = sorted(int(n) for n in arm["fid_by_n"])
        means = [arm["fid_by_n"][str(n)][0] for n in ns]
        sds = [arm["fid_by_n"][str(n)][1] for n in ns]
        ax.errorbar(ns, means, yerr=sds, label=label, capsize=2, **style)
        bx.plot(ns, [m / table["floor"]["fid_by_n"][str(n)][0] for m, n in zip(means, ns)], label=label, **style)
    ax.set_xscale("log"); ax.set_yscale("log")
    ax.set_xlabel("sample count n (log scale)"); ax.set_ylabel("FID, course MNIST features (log scale)")
    ax.set_title("FID against n: the floor falls as 1/n, a model levels off")
    bx.set_xscale("log")
    bx.set_xlabel("sample count n (log scale)"); bx.set_ylabel("FID / floor FID at the same n")
    for a in (ax, bx):
        a.set_xticks(SMALL_N, [str(n) for n in SMALL_N])
        a.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    bx.axhline(1, color="gray", lw=0.8)
    bx.set_title("the same in units of the floor")
    for a in (ax, bx):
        a.legend(fontsize=8)
    fig.suptitle(f"MNIST, {table['n']} samples per arm, subsets of n ({DRAWS} random draws per point); "
                 f"{table['hardware']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    return png


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["figure"])
    p.add_argument("--table", default="docs/distillation_table_n5000.json",
                   help="the distillation ladder at n = 5,000 (python benchmarks/distillation.py shipped)")
    p.add_argument("--png", default="docs/fid_against_n.png")
    args = p.parse_args(argv)
    print(figure(args.table, args.png))


if __name__ == "__main__":
    main()
