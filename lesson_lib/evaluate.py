"""Put numbers on a model's samples: FID, KID, class accuracy, next to the real-data floor.

    python -m lesson_lib.evaluate --pretrained mnist_cond --n 1000 --sampler ddim --steps 50
    python -m lesson_lib.evaluate --checkpoint runs/mnist-gpu/checkpoint.pt --dataset mnist --n 5000

``--steps`` sets the timesteps of both samplers, as in :mod:`lesson_lib.sample` (DDIM 100 by
default, DDPM all T by default and fewer as strided DDPM). A shipped latent diffusion model's samples
are decoded by the autoencoder its card names before they are measured (a checkpoint of one: pass
``--autoencoder NAME``).

FID and KID use the course's own classifier features (see docs/metrics.md), so they are
comparable between runs of this course, not with papers' Inception FID. FID is biased
upwards at small n: compare runs at the same n, and read each figure against the floor
(train vs test images at the same n), printed beside it.
"""

import argparse
import os
import time

import torch
from tqdm.auto import tqdm

from .arguments import choice, integer
from .cli import check_device, positive_int, run
from .data.images import load_dataset
from .evaluation.judges import class_accuracy
from .evaluation.fid import DATASETS, compute_metrics, real_floor
from .pretrained import available, cascade_base, model_card
from .sample import DDIM_STEPS, SAMPLERS, cfg, check_steps, decoding, defaults, generate, load

IMAGE_SHAPES = {"mnist": (1, 28), "cifar10": (3, 32)}      # (channels, size) of each dataset's images


def check_reference(dataset, n, data_dir=None, name="n"):
    """Fail before any sampling when the reference data are missing or smaller than ``n``: the
    floor needs n training and n test images. ``name`` is what the messages call n."""
    choice(dataset, "dataset", DATASETS)
    test, _, _ = load_dataset(dataset, "test", data_dir=data_dir, as_uint8=True)
    if n > len(test):
        raise ValueError(f"{name}={n} is larger than the {len(test)} {dataset} test images the floor is measured "
                         f"against; choose {name} <= {len(test)}")


def evaluate(model, schedule, dataset, n=1000, sampler="ddim", steps=None, device="cpu", data_dir=None,
             batch_size=250, seed=0, progress=True, guidance=None, clip_x0=True, decode=None, grid="linspace"):
    """Sample ``n`` images and measure them; returns a dict of figures (see the module docstring).

    ``steps``, ``guidance``, ``clip_x0``, ``decode`` and ``grid`` as in
    :func:`lesson_lib.sample.generate` (DDIM 100 by default, DDPM all T). A class-conditional
    model draws every class equally often. One progress bar counts the images."""
    n = integer(n, "n", minimum=2, hint="FID needs at least two images; read it at n >= 1000")
    batch_size = integer(batch_size, "batch_size", minimum=1)
    check_reference(dataset, n, data_dir)
    k = model.num_classes
    labels = None if k is None else torch.arange(k).repeat(n // k + 1)[:n]
    start = time.perf_counter()
    batches = []
    with tqdm(total=n, desc=f"sampling ({sampler})", unit="img", disable=not progress) as bar:
        for i in range(0, n, batch_size):
            cond = None if labels is None else {"y": labels[i:i + batch_size]}
            m = min(batch_size, n - i)
            batches.append(generate(model, schedule, m, sampler, steps, cond, device, seed + i, False, guidance=guidance,
                                    clip_x0=clip_x0, decode=decode, grid=grid).cpu())
            bar.update(m)
    seconds = time.perf_counter() - start
    x = torch.cat(batches)
    if steps is None and sampler == "ddim":
        steps = DDIM_STEPS
    result = {"n": n, "sampler": sampler if steps is None else f"{sampler}-{steps}",
              "samples_per_s": n / seconds}
    result.update(compute_metrics(x, dataset=dataset, data_dir=data_dir, device=device))
    floor = real_floor(dataset, n, data_dir=data_dir, device=device)
    result["fid_floor"], result["kid_floor"] = floor["fid"], floor["kid_mean"]
    if labels is not None:
        acc = class_accuracy(x, labels, dataset, device=device)
        result["class_accuracy"], result["confidence"] = acc["accuracy"], acc["mean_confidence"]
    return result


def small_n_notes(r):
    """What a reader must know to read the figures at this n (empty when nothing)."""
    notes = []
    if r["n"] < 1000:
        notes.append(f"n = {r['n']} is small: FID is biased upwards and noisy at small n, so compare it only "
                     f"with the floor and with runs at the same n (use --n 1000 or more for a verdict)")
    if r["fid"] < r["fid_floor"]:
        notes.append("the FID is below the real-data floor: at this n that is noise, not samples better than "
                     "real images")
    if r["kid_mean"] < 0:
        notes.append("the KID is negative: the unbiased estimator can dip below 0 when two sets are "
                     "indistinguishable at this n; read it as 0")
    return notes


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
    lines += [f"note: {note}" for note in small_n_notes(r)]
    return "\n".join(lines)


def check_dataset_fits(parser, dataset, model):
    """``--dataset`` must be the one the model makes images of (their channels and size)."""
    channels, size = IMAGE_SHAPES[dataset]
    theirs = (model.in_channels, model.image_size)
    if theirs != (channels, size):
        parser.error(f"--dataset {dataset} holds {channels}x{size}x{size} images but the model makes "
                     f"{theirs[0]}x{theirs[1]}x{theirs[1]}; pass the dataset it was trained on")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lesson_lib.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a checkpoint written by python -m lesson_lib.train")
    src.add_argument("--pretrained", help=f"a model shipped with the course: {', '.join(available())}")
    p.add_argument("--dataset", choices=DATASETS, help="required with --checkpoint")
    p.add_argument("--n", type=positive_int, default=1000, help="samples (and real images for the floor)")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: the shipped model's own (else ddim)")
    p.add_argument("--steps", type=positive_int, help=f"timesteps to visit, at most T: DDIM default {DDIM_STEPS}; "
                   "DDPM default all T, fewer gives strided DDPM (spaced(T, steps), each step with its own beta)")
    p.add_argument("--guidance", type=float, metavar="W", help="classifier-free guidance weight w (0: none)")
    p.add_argument("--autoencoder", metavar="NAME", help="with --checkpoint of a latent diffusion model: the shipped "
                   "autoencoder whose latents it was trained on")
    p.add_argument("--data-dir", help="the folder of mnist.npz / cifar10.npz (default: $DDPM_DATA_DIR)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    check_device(p, args.device)
    if args.n < 2:
        p.error("--n must be at least 2 (FID needs two images; read it at n >= 1000)")
    if args.pretrained and args.pretrained not in available():
        p.error(f"--pretrained must be one of {', '.join(available())}, got --pretrained {args.pretrained!r}")
    if args.pretrained:
        card = model_card(args.pretrained)
        smaller = card.get("latent") is None and card.get("model_config", {}).get("image_size", 0) < \
            IMAGE_SHAPES[card["dataset"]][1]                    # the cascade's base model: digits shrunk to 14 px
        if cascade_base(args.pretrained) or smaller:            # the SR model: its card names its base
            p.error(f"--pretrained {args.pretrained} is a stage of lesson 12's cascade, which this command does not "
                    f"sample; its card holds its FID, class accuracy and consistency (n = 2,000), benchmarks/cascade.py "
                    f"measures the whole cascade, and python -m lesson_lib.sample --pretrained mnist_sr draws it")
        dataset = card["dataset"]
        if args.dataset not in (None, dataset):
            p.error(f"--dataset {args.dataset}, but {args.pretrained} was trained on {dataset}; leave --dataset out")
    elif not args.dataset:
        p.error("--dataset is required with --checkpoint")
    else:
        dataset = args.dataset
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        p.error(f"--data-dir {args.data_dir!r} is not a folder; give the folder that holds {dataset}.npz")
    try:
        check_reference(dataset, args.n, args.data_dir, "--n")          # before minutes of sampling, not after
    except FileNotFoundError as error:
        p.error(f"--data-dir: {error}")
    model, schedule = load(p, args)
    decoding_args = decoding(p, args, model)
    if not decoding_args:              # a latent model's samples are latents until decoded
        check_dataset_fits(p, dataset, model)
    sampler, steps, grid = defaults(args)
    check_steps(p, steps, schedule, sampler)
    print(format_table(evaluate(model, schedule, dataset, args.n, sampler, steps, args.device, args.data_dir,
                                guidance=cfg(p, model, args.guidance), grid=grid, **decoding_args)))


if __name__ == "__main__":
    run(main, None, "python -m lesson_lib.evaluate")
