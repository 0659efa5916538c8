"""Sample from a trained model and write a PNG grid.

    python -m lesson_lib.sample --checkpoint runs/mnist-cpu/checkpoint.pt --out samples.png
    python -m lesson_lib.sample --pretrained mnist_cond --sampler ddim --steps 50 --out digits.png
    python -m lesson_lib.sample --pretrained mnist_cond --label 3 --n 16 --out threes.png

Class-conditional models get one row per class unless ``--label`` picks one. ``--steps`` sets
the number of timesteps for both samplers: DDIM visits 100 by default, DDPM all T (Algorithm 2)
by default and fewer as strided DDPM. An existing ``--out`` is replaced only with ``--overwrite``.
"""

import argparse
import time

import torch

from .arguments import choice
from .data.images import save_grid
from .cli import check_device, check_output_file, positive_int, run, seed_int
from .pretrained import available, load_model, load_pretrained
from .diffusion.sampling import ddim_sample, ddpm_sample
from .diffusion.timesteps import spaced

SAMPLERS = ("ddpm", "ddim")
DDIM_STEPS = 100          # the default of --steps for DDIM; DDPM's default is every step


def generate(model, schedule, n, sampler="ddim", steps=None, labels=None, device="cpu", seed=0,
             progress=True, guidance=None):
    """``n`` images from ``model``: DDPM (Algorithm 2: all T steps, or ``steps`` of them strided,
    ``spaced(T, steps)``) or DDIM (``steps`` steps, default 100). ``guidance`` wraps the denoiser
    (see :mod:`lesson_lib.diffusion.guidance`)."""
    choice(sampler, "sampler", SAMPLERS)
    shape = (n, model.in_channels, model.image_size, model.image_size)
    kwargs = dict(clip_x0=True, device=device, progress=progress, guidance=guidance,
                  generator=torch.Generator(device).manual_seed(seed),
                  model_kwargs=None if labels is None else {"y": labels.to(device)})
    if sampler == "ddpm":
        timesteps = None if steps is None else spaced(schedule.T, steps)
        return ddpm_sample(model, schedule, shape, timesteps=timesteps, **kwargs)
    return ddim_sample(model, schedule, shape, steps=DDIM_STEPS if steps is None else steps, **kwargs)


def check_steps(parser, steps, schedule):
    """``--steps`` must not exceed the model's number of timesteps T."""
    if steps is not None and steps > schedule.T:
        parser.error(f"--steps must be at most T = {schedule.T}, the model's number of timesteps, got --steps {steps}")


def load(parser, args):
    """The model and schedule named by --pretrained or --checkpoint; a wrong name or file is a
    one-line error that names the flag."""
    if args.pretrained:
        if args.pretrained not in available():
            parser.error(f"--pretrained must be one of {', '.join(available())}, got --pretrained {args.pretrained!r}")
        return load_pretrained(args.pretrained, device=args.device)
    try:
        return load_model(args.checkpoint, ema=not getattr(args, "raw", False), device=args.device)
    except (ValueError, OSError) as error:
        parser.error(f"--checkpoint {args.checkpoint!r}: {error}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lesson_lib.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a checkpoint written by python -m lesson_lib.train")
    src.add_argument("--pretrained", help=f"a model shipped with the course: {', '.join(available())}")
    p.add_argument("--out", default="samples.png", help="the grid, .png or .jpg (default samples.png), in an "
                   "existing folder")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (else refused)")
    p.add_argument("--n", type=positive_int, help="number of images: a multiple of the number of classes for a "
                   "class-conditional model (one row per class); default 8 per class, or 64")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    p.add_argument("--steps", type=positive_int, help=f"timesteps to visit, at most T: DDIM default {DDIM_STEPS}; "
                   "DDPM default all T, fewer gives strided DDPM (spaced(T, steps), each step with its own beta)")
    p.add_argument("--label", type=int, help="sample only this class (a class-conditional model)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA (--checkpoint only)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.raw and args.pretrained:
        p.error("--raw needs --checkpoint: the shipped models hold only their EMA weights")
    check_device(p, args.device)
    check_output_file(p, args.out, overwrite=args.overwrite)      # before minutes of sampling, not after

    model, schedule = load(p, args)
    check_steps(p, args.steps, schedule)
    k = model.num_classes
    nrow, labels = 8, None
    if args.label is not None and k is None:
        p.error("--label needs a class-conditional model; this one is unconditional: leave --label out")
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
