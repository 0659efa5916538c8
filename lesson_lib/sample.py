"""Sample from a trained model: a PNG grid, or the samples themselves (.npz).

Why one module of about 300 lines: ``generate`` (what the notebooks, the playground and
``evaluate`` call) and the command that wraps it share every default (:func:`defaults`,
:func:`timesteps_for`) and every refusal of a flag; one module keeps the command and the function
from drifting apart. The samplers themselves live in :mod:`lesson_lib.diffusion`.

    python -m lesson_lib.sample --checkpoint runs/mnist-cpu/checkpoint.pt --out samples.png
    python -m lesson_lib.sample --pretrained mnist_cond --sampler ddim --steps 50 --out digits.png
    python -m lesson_lib.sample --pretrained mnist_cond --label 3 --n 16 --guidance 2 --out threes.png
    python -m lesson_lib.sample --pretrained mnist_distilled_4 --n 1000 --out students.npz
    python -m lesson_lib.sample --pretrained mnist_consistency --steps 2 --out two_calls.png
    python -m lesson_lib.sample --pretrained mnist_cond --sampler dpmpp2m --steps 10 --out ten_calls.png
    python -m lesson_lib.sample --pretrained mnist_latent --guidance 2 --out latent_digits.png
    python -m lesson_lib.sample --pretrained mnist_sr --level 0.2 --out cascade.png

Class-conditional models get one row per class unless ``--label`` picks one. A shipped model
samples with its own defaults (its card's ``sampling``: a distilled student on the steps of its
own grid, a consistency model on one call); ``--sampler`` and ``--steps`` override them. ``--steps``
sets the number of timesteps for every sampler: DDIM visits 100 by default, DDPM all
T (Algorithm 2) by default and fewer as strided DDPM, multistep consistency sampling 1 by default
(always on the nested grid it was trained on). Each timestep costs one network call, except with
``--sampler heun`` (EDM's second-order solver of the probability-flow ODE: 2 calls per step but the
last, 2N - 1 in all); ``dpmpp2m`` (DPM-Solver++(2M)) is second order at one call per step. Both
visit DDIM's timesteps (100 by default). ``--guidance W`` is classifier-free guidance with the paper's weight
w (0 is the plain conditional model). An ``--out`` ending in ``.npz`` holds the samples as
uint8 ``images`` ((N, H, W) or (N, H, W, C)) and their ``labels``, to compute metrics of your
own. A shipped latent diffusion model (``mnist_latent``) is decoded by the autoencoder its card
names; a checkpoint of one by ``--autoencoder NAME``. A shipped super-resolution model (``mnist_sr``)
samples the whole cascade: the base model its card names draws the low-resolution digits, one per
label, and the SR model enlarges them, the conditioning augmented at ``--level`` s (default: its
card's; :func:`lesson_lib.diffusion.cascade.cascade_sample`, DDIM or DDPM in both stages). An
existing ``--out`` is replaced only with ``--overwrite``.
"""

import argparse
import io
import time

import numpy as np
import torch

from .arguments import choice
from .data.images import float_to_uint8, save_grid
from .cli import check_device, check_output_file, positive_int, run, seed_int
from .diffusion.cascade import cascade_sample
from .diffusion.distillation import sampler_timesteps
from .diffusion.flow_matching import FlowGrid, flow_sample
from .diffusion.guidance import ClassifierFreeGuidance
from .diffusion.sampling import consistency_sample, ddim_sample, ddpm_sample, ode_sample
from .diffusion.timesteps import spaced
from .files import atomic_write
from .pretrained import (available, cascade_base, decoding_by, latent_decoding, load_model, load_pretrained,
                         model_card)

DIFFUSION_SAMPLERS = ("ddpm", "ddim", "consistency", "heun", "dpmpp2m")
SAMPLERS = DIFFUSION_SAMPLERS + ("euler",)     # euler: a flow-matching model's (FLOW_SAMPLERS)
ODE_SAMPLERS = ("heun", "dpmpp2m")       # solvers of the probability-flow ODE (diffusion/ode.py), on DDIM's grid
FLOW_SAMPLERS = ("euler", "heun")        # solvers of a flow-matching model's ODE (diffusion/flow_matching.py)
GRIDS = ("linspace", "distillation")     # DDIM's default spacing, or the nested grid of a distilled student
DDIM_STEPS = 100          # the default of --steps for DDIM; DDPM's default is every step


def timesteps_for(schedule, sampler, steps, grid="linspace"):
    """The timestep list a sampler visits: every step (DDPM, ``steps`` None), ``spaced(T, steps)``
    (DDIM and the ODE solvers, ``steps`` 100 by default), or the nested grid a distilled student was
    trained on (``grid="distillation"``)."""
    choice(sampler, "sampler", SAMPLERS)
    choice(grid, "grid", GRIDS)
    if sampler == "ddpm" and steps is None:
        return None
    if sampler == "consistency":                 # a consistency model knows only its training grid
        return sampler_timesteps(schedule.T, 1 if steps is None else steps)
    steps = DDIM_STEPS if steps is None else steps
    return sampler_timesteps(schedule.T, steps) if grid == "distillation" else spaced(schedule.T, steps)


def generate(model, schedule, n, sampler="ddim", steps=None, cond=None, device="cpu", seed=0,
             progress=True, guidance=None, clip_x0=True, decode=None, grid="linspace"):
    """``n`` samples of ``model.data_shape``: DDPM (Algorithm 2: all T steps, or ``steps`` of them
    strided), DDIM (``steps`` steps, default 100), multistep consistency sampling (``steps`` calls,
    default 1) or an ODE solver ("heun", "dpmpp2m"; ``steps`` steps, default 100), on the timesteps
    of :func:`timesteps_for`.
    ``cond`` is the conditioning passed to the model (``{"y": labels}``, ``{"low_res": images}``),
    ``guidance`` wraps the denoiser (see :mod:`lesson_lib.diffusion.guidance`), ``clip_x0`` clips
    x0_hat (True for images in [-1, 1]; False in a latent space) and ``decode`` maps the samples
    to images at the end (a latent model's decoder)."""
    if cond is not None and not isinstance(cond, dict):
        raise TypeError(f"cond must be a dict of the model's conditioning, e.g. cond={{'y': labels}}, got "
                        f"cond={type(cond).__name__}")
    if isinstance(schedule, FlowGrid) or sampler == "euler":
        return _generate_flow(model, schedule, n, sampler, steps, cond, device, seed, progress, guidance, decode)
    timesteps = timesteps_for(schedule, sampler, steps, grid)
    shape = (n, *model.data_shape)
    kwargs = dict(clip_x0=clip_x0, device=device, progress=progress, guidance=guidance,
                  generator=torch.Generator(device).manual_seed(seed),
                  model_kwargs={key: value.to(device) for key, value in (cond or {}).items()})
    if sampler == "ddpm":
        x = ddpm_sample(model, schedule, shape, timesteps=timesteps, **kwargs)
    elif sampler == "consistency":
        if guidance is not None:
            raise ValueError("guidance does not apply to a consistency model: it was distilled without it; "
                             "leave --guidance out")
        kwargs.pop("guidance")
        x = consistency_sample(model, schedule, shape, timesteps=timesteps, **kwargs)
    elif sampler in ODE_SAMPLERS:
        x = ode_sample(model, schedule, shape, timesteps=timesteps, solver=sampler, **kwargs)
    else:
        x = ddim_sample(model, schedule, shape, timesteps=timesteps, **kwargs)
    return x if decode is None else decode(x)


def _generate_flow(model, grid, n, sampler, steps, cond, device, seed, progress, guidance, decode):
    """:func:`generate` for a flow-matching model (its schedule is a FlowGrid): Euler or Heun on the
    flow's uniform grid, ``steps`` steps (default 50); x0_hat is never clipped (the velocity is read
    as it is)."""
    if not isinstance(grid, FlowGrid):
        raise ValueError(f"sampler {sampler!r} integrates a flow-matching model, and this model was trained as a "
                         f"diffusion model; use one of ddpm, ddim, consistency, heun, dpmpp2m")
    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"a flow-matching model is sampled by integrating its velocity: sampler must be one of "
                         f"{FLOW_SAMPLERS}, got sampler={sampler!r}")
    x = flow_sample(model, (n, *model.data_shape), steps=50 if steps is None else steps, solver=sampler, T=grid.T,
                    guidance=guidance, model_kwargs={key: value.to(device) for key, value in (cond or {}).items()},
                    device=device,
                    generator=torch.Generator(device).manual_seed(seed), progress=progress)
    return x if decode is None else decode(x)


def defaults(args):
    """The sampler, steps and grid to use: the flags, else the shipped model's card, else DDIM."""
    card = model_card(args.pretrained).get("sampling", {}) if args.pretrained else {}
    sampler = args.sampler or card.get("sampler", "ddim")
    steps = args.steps if args.steps is not None else card.get("steps") if args.sampler in (None, card.get("sampler")) \
        else None
    return sampler, steps, card.get("grid", "linspace") if steps == card.get("steps") else "linspace"


def check_steps(parser, steps, schedule, sampler=None):
    """``--steps`` must not exceed the model's number of timesteps T, and ``--sampler`` must suit the model:
    Euler and Heun on the flow for a flow-matching model, the diffusion samplers for the others."""
    flow = isinstance(schedule, FlowGrid)
    if sampler is not None and flow and sampler not in FLOW_SAMPLERS:
        parser.error(f"--sampler must be one of {', '.join(FLOW_SAMPLERS)} for a flow-matching model, got --sampler "
                     f"{sampler}")
    if sampler is not None and not flow and sampler not in DIFFUSION_SAMPLERS:
        parser.error(f"--sampler {sampler} integrates a flow-matching model; this model is a diffusion model: "
                     f"choose one of {', '.join(DIFFUSION_SAMPLERS)}")
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


def cfg(parser, model, w):
    """The guidance wrapper for ``--guidance w`` (None for no flag)."""
    if w is None:
        return None
    if model.num_classes is None:
        parser.error("--guidance needs a class-conditional model (classifier-free guidance mixes the "
                     "conditional and the unconditional prediction); this one is unconditional")
    if not -1 <= w < float("inf"):
        parser.error(f"--guidance must be a weight w >= -1 (0: the conditional model, -1: the unconditional one, "
                     f"1 to 4: stronger guidance), got --guidance {w:g}")
    return lambda denoise: ClassifierFreeGuidance(denoise, w=w)


def decoding(parser, args, model):
    """How the samples become images: ``{}`` for a model of pixels; for a latent model the decoder of
    the autoencoder its card names (``--pretrained``) or ``--autoencoder`` names (``--checkpoint``)."""
    if args.pretrained:
        if args.autoencoder:
            parser.error("--autoencoder goes with --checkpoint: a shipped latent model names its own autoencoder")
        return latent_decoding(args.pretrained, args.device)
    if args.autoencoder is None:
        if model.data_shape[0] not in (1, 3):
            shape = "x".join(map(str, model.data_shape))
            parser.error(f"this checkpoint's model makes {shape} data, not images: it is a latent diffusion model; "
                         f"pass --autoencoder NAME, the shipped autoencoder it was trained on "
                         f"({', '.join(available('autoencoder'))})")
        return {}
    if args.autoencoder not in available("autoencoder"):
        parser.error(f"--autoencoder must be one of {', '.join(available('autoencoder'))}, got {args.autoencoder!r}")
    latent_shape = tuple(model_card(args.autoencoder)["latent_shape"])
    if tuple(model.data_shape) != latent_shape:
        parser.error(f"--autoencoder {args.autoencoder} makes latents of shape {latent_shape}, but this checkpoint's "
                     f"model samples {tuple(model.data_shape)}: pass the autoencoder it was trained on")
    return decoding_by(args.autoencoder, args.device)


def cascade_stage(parser, args):
    """For a shipped super-resolution model (its card's settings name the ``base`` model it follows): the
    base model, its schedule and the augmentation level to sample at (``--level``, else the card's). Else
    None, and ``--level`` is refused."""
    base = cascade_base(args.pretrained) if args.pretrained else None
    if base is None:
        if args.level is not None:
            parser.error("--level is the conditioning augmentation of a cascade's super-resolution model "
                         "(--pretrained mnist_sr); leave it out for this model")
        return None
    if args.level is not None and not 0 <= args.level <= 1:
        parser.error(f"--level must lie in [0, 1] (a fraction of the schedule: 0 = no augmentation, 0.2 is usual), "
                     f"got --level {args.level:g}")
    level = args.level if args.level is not None else model_card(args.pretrained)["sampling"].get("level", 0.0)
    return (*load_pretrained(base, device=args.device), level)


def write_samples(x, labels, path):
    """The samples as uint8 images ((N, H, W) or (N, H, W, C)) and their labels, in an .npz file."""
    images = float_to_uint8(x.cpu()).permute(0, 2, 3, 1).numpy()
    images = images[..., 0] if images.shape[-1] == 1 else images
    arrays = {"images": images, "labels": (labels if labels is not None else torch.full((len(x),), -1)).numpy()}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lesson_lib.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a checkpoint written by python -m lesson_lib.train")
    src.add_argument("--pretrained", help=f"a model shipped with the course: {', '.join(available())}")
    p.add_argument("--out", default="samples.png", help="the grid (.png, .jpg) or the samples (.npz); default "
                   "samples.png, in an existing folder")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (else refused)")
    p.add_argument("--n", type=positive_int, help="number of images: a multiple of the number of classes for a "
                   "class-conditional model (one row per class); default 8 per class, or 64")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: the shipped model's own (else ddim)")
    p.add_argument("--steps", type=positive_int, help=f"timesteps to visit, at most T: DDIM default {DDIM_STEPS} "
                   "(a shipped model: its own), the same for heun (2 calls per step) and dpmpp2m; DDPM default all T, "
                   "fewer gives strided DDPM (spaced(T, steps), each step with its own beta)")
    p.add_argument("--label", type=int, help="sample only this class (a class-conditional model)")
    p.add_argument("--guidance", type=float, metavar="W", help="classifier-free guidance weight w "
                   "(eps = (1 + w) eps(x, y) - w eps(x, null); 0 is the plain conditional model)")
    p.add_argument("--level", type=float, metavar="S", help="a cascade's super-resolution model (mnist_sr): the "
                   "augmentation level s in [0, 1] its low-resolution input is noised at (default: its card's)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA (--checkpoint only)")
    p.add_argument("--autoencoder", metavar="NAME", help="with --checkpoint of a latent diffusion model: the shipped "
                   "autoencoder whose latents it was trained on (its card's scale factor is used)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.raw and args.pretrained:
        p.error("--raw needs --checkpoint: the shipped models hold only their EMA weights")
    check_device(p, args.device)
    check_output_file(p, args.out, extensions=(".png", ".jpg", ".jpeg", ".npz"), overwrite=args.overwrite)

    model, schedule = load(p, args)
    sampler, steps, grid = defaults(args)
    check_steps(p, steps, schedule, sampler)
    cascade = cascade_stage(p, args)
    if cascade is not None and (sampler not in ("ddim", "ddpm") or args.guidance is not None):
        p.error("a cascade samples both stages with --sampler ddim or ddpm, without --guidance")
    k = model.num_classes if cascade is None else cascade[0].num_classes
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
            near = sorted({(n // k or 1) * k, (n // k + 1) * k})
            p.error(f"--n {n} is not a multiple of the model's {k} classes (one row per class): "
                    f"use e.g. {' or '.join(f'--n {m}' for m in near)}, or pick one class with --label")
        nrow = n // k
        labels = torch.arange(k).repeat_interleave(nrow)
    else:
        n = args.n or 64
    guidance = cfg(p, model, args.guidance)
    decoding_args = decoding(p, args, model)
    start = time.perf_counter()
    if cascade is None:
        x = generate(model, schedule, n, sampler, steps, None if labels is None else {"y": labels}, args.device,
                     args.seed, guidance=guidance, grid=grid, **decoding_args)
    else:
        base, base_schedule, level = cascade
        x = cascade_sample(base, model, base_schedule, n, labels=labels, level=level, sr_schedule=schedule,
                           sampler=ddim_sample if sampler == "ddim" else ddpm_sample, seed=args.seed,
                           device=args.device, timesteps=timesteps_for(schedule, sampler, steps), clip_x0=True)
    seconds = time.perf_counter() - start
    if args.out.lower().endswith(".npz"):
        write_samples(x, labels, args.out)
    else:
        save_grid(x, args.out, nrow=nrow)
    what = f"{sampler}, {steps or schedule.T} steps" + (f", guidance w = {args.guidance:g}" if guidance else "")
    what += "" if cascade is None else f" per stage, augmentation level s = {cascade[2]:g}"
    print(f"wrote {n} samples to {args.out} ({what}, {n / seconds:.1f} samples/s on {args.device})")


if __name__ == "__main__":
    run(main, None, "python -m lesson_lib.sample")
