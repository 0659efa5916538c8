"""Sample from a trained model and write a PNG grid.

    python -m lesson_lib.sample --checkpoint runs/mnist-cpu/checkpoint.pt --out samples.png
    python -m lesson_lib.sample --pretrained mnist_cond --sampler ddim --steps 50 --out digits.png
    python -m lesson_lib.sample --pretrained mnist_cond --label 3 --n 16 --out threes.png

Class-conditional models get one row per class unless ``--label`` picks one.
"""

import argparse
import os
import time

import torch

from .data.images import save_grid
from .cli import positive_int, run
from .pretrained import available, load_model, load_pretrained
from .diffusion.sampling import ddim_sample, ddpm_sample


def generate(model, schedule, n, sampler="ddim", steps=100, labels=None, device="cpu", seed=0,
             progress=True, guidance=None):
    """``n`` images from ``model``: DDPM (Algorithm 2, all T steps) or DDIM (``steps`` steps).
    ``guidance`` wraps the denoiser (see :mod:`lesson_lib.diffusion.guidance`)."""
    shape = (n, model.in_channels, model.image_size, model.image_size)
    kwargs = dict(clip_x0=True, device=device, progress=progress, guidance=guidance,
                  generator=torch.Generator(device).manual_seed(seed),
                  model_kwargs=None if labels is None else {"y": labels.to(device)})
    if sampler == "ddpm":
        return ddpm_sample(model, schedule, shape, **kwargs)
    if sampler == "ddim":
        return ddim_sample(model, schedule, shape, steps=steps, **kwargs)
    raise ValueError(f"sampler must be 'ddpm' or 'ddim', got sampler={sampler!r}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lesson_lib.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a checkpoint written by python -m lesson_lib.train")
    src.add_argument("--pretrained", help=f"a model shipped with the course: {', '.join(available())}")
    p.add_argument("--out", default="samples.png", help="the grid, .png or .jpg (default samples.png)")
    p.add_argument("--n", type=positive_int, help="number of images: a multiple of the number of classes for a "
                   "class-conditional model (one row per class); default 8 per class, or 64")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    p.add_argument("--steps", type=positive_int, default=100, help="DDIM steps (DDPM always uses all T)")
    p.add_argument("--label", type=int, help="sample only this class")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA (--checkpoint only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.raw and args.pretrained:
        p.error("--raw needs --checkpoint: the shipped models hold only their EMA weights")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda, but this machine has no CUDA GPU; use --device cpu")
    if os.path.splitext(args.out)[1].lower() not in (".png", ".jpg", ".jpeg"):
        p.error(f"--out must end in .png, .jpg or .jpeg, got {args.out!r}")

    if args.pretrained:
        model, schedule = load_pretrained(args.pretrained, device=args.device)
    else:
        model, schedule = load_model(args.checkpoint, ema=not args.raw, device=args.device)
    k = model.num_classes
    nrow, labels = 8, None
    if k is not None and args.label is not None:
        if not 0 <= args.label < k:
            p.error(f"--label must lie in 0..{k - 1}, got {args.label}")
        n = args.n or 64
        labels = torch.full((n,), args.label)
    elif k is not None:
        n = args.n or 8 * k
        if n % k:
            p.error(f"--n {n} is not a multiple of the model's {k} classes (one row per class): "
                    f"use e.g. --n {(n // k or 1) * k} or --n {(n // k + 1) * k}, or pick one class with --label")
        nrow = n // k
        labels = torch.arange(k).repeat_interleave(nrow)
    else:
        n = args.n or 64
    start = time.perf_counter()
    x = generate(model, schedule, n, args.sampler, args.steps, labels, args.device, args.seed)
    seconds = time.perf_counter() - start
    save_grid(x, args.out, nrow=nrow)
    print(f"wrote {n} samples to {args.out} ({args.sampler}, {n / seconds:.1f} samples/s on {args.device})")


if __name__ == "__main__":
    run(main, None, "python -m lesson_lib.sample")
