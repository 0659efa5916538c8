"""Put numbers on a model's samples: FID, KID, class accuracy, next to the real-data floor.

    python -m lesson_lib.evaluate --pretrained mnist_cond --n 1000 --sampler ddim --steps 50
    python -m lesson_lib.evaluate --checkpoint runs/mnist-gpu/checkpoint.pt --dataset mnist --n 5000

FID and KID use the course's own classifier features (see docs/metrics.md), so they are
comparable between runs of this course, not with papers' Inception FID. FID is biased
upwards at small n: compare runs at the same n, and read each figure against the floor
(train vs test images at the same n), printed beside it.
"""

import argparse
import time

import torch

from .evaluation.judges import class_accuracy
from .evaluation.fid import compute_metrics, real_floor
from .pretrained import load_model, load_pretrained, model_card
from .sample import generate


def evaluate(model, schedule, dataset, n=1000, sampler="ddim", steps=100, device="cpu", data_dir=None,
             batch_size=250, seed=0, progress=True):
    """Sample ``n`` images and measure them; returns a dict of figures (see the module docstring)."""
    k = model.num_classes
    labels = None if k is None else torch.arange(k).repeat(n // k + 1)[:n]
    start = time.perf_counter()
    batches = []
    for i in range(0, n, batch_size):
        y = None if labels is None else labels[i:i + batch_size]
        m = min(batch_size, n - i)
        batches.append(generate(model, schedule, m, sampler, steps, y, device, seed + i, progress).cpu())
    seconds = time.perf_counter() - start
    x = torch.cat(batches)
    result = {"n": n, "sampler": sampler if sampler == "ddpm" else f"ddim-{steps}",
              "samples_per_s": n / seconds}
    result.update(compute_metrics(x, dataset=dataset, data_dir=data_dir, device=device))
    floor = real_floor(dataset, n, data_dir=data_dir, device=device)
    result["fid_floor"], result["kid_floor"] = floor["fid"], floor["kid_mean"]
    if labels is not None:
        acc = class_accuracy(x, labels, dataset, device=device)
        result["class_accuracy"], result["confidence"] = acc["accuracy"], acc["mean_confidence"]
    return result


def format_table(r):
    rows = [("FID", f"{r['fid']:.3f}", f"{r['fid_floor']:.3f}"),
            ("KID", f"{r['kid_mean']:.5f}", f"{r['kid_floor']:.5f}")]
    if "class_accuracy" in r:
        rows.append(("class accuracy", f"{r['class_accuracy']:.3f}", ""))
        rows.append(("mean confidence", f"{r['confidence']:.3f}", ""))
    rows.append(("samples/s", f"{r['samples_per_s']:.1f}", ""))
    lines = [f"{'metric':<16} {'model':>10} {'floor':>10}", "-" * 38]
    lines += [f"{a:<16} {b:>10} {c:>10}" for a, b, c in rows]
    lines.append(f"n = {r['n']}, sampler {r['sampler']}, features {r['feature_network']}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint")
    src.add_argument("--pretrained")
    p.add_argument("--dataset", choices=["mnist", "cifar10"], help="required with --checkpoint")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--data-dir")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.pretrained:
        model, schedule = load_pretrained(args.pretrained, device=args.device)
        dataset = args.dataset or model_card(args.pretrained)["dataset"]
    else:
        if not args.dataset:
            p.error("--dataset is required with --checkpoint")
        model, schedule = load_model(args.checkpoint, device=args.device)
        dataset = args.dataset
    print(format_table(evaluate(model, schedule, dataset, args.n, args.sampler, args.steps, args.device,
                                args.data_dir)))


if __name__ == "__main__":
    main()
