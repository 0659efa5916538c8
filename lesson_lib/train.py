"""Train an image DDPM from the command line (the headless version of lesson 4).

    python -m lesson_lib.train --config mnist                  # profile chosen automatically
    python -m lesson_lib.train --config cifar10 --profile gpu --out runs/cifar10
    python -m lesson_lib.train --config mnist --steps 10000     # continue a finished run further
    torchrun --nproc_per_node 4 -m lesson_lib.train --config cifar10 --profile gpu   # on 4 GPUs

With ``torchrun`` every process trains its share of the same global batch on its own GPU
(:mod:`lesson_lib.training.distributed`); the first one prints, writes the checkpoints and the
sample grids, and a run resumes with the same number of processes.

The run folder holds ``checkpoint.pt`` (written atomically every ``--checkpoint-every``
steps and at the end, the one before kept as ``checkpoint.prev.pt``) and ``samples_stepN.png``
grids. Running the same command again resumes from the checkpoint exactly where it stopped.
Settings come from :mod:`lesson_lib.training.profiles`.

Nothing is overwritten that this run did not write: ``--out`` must be a new or empty folder (a
fresh run) or the folder of the same run (resumed); a folder of other files, or a checkpoint
from other settings, is refused before training starts, as is a folder that cannot be written.

``--recipe NAME`` instead of ``--config`` makes a shipped model (:mod:`lesson_lib.recipes`), under
``--profile full`` (the settings that made the shipped weights; the default) or ``ci`` (seconds):

    python -m lesson_lib.train --recipe mnist_noisy_classifier --export lesson_lib/weights
    python -m lesson_lib.train --recipe mnist_cond --profile ci --out runs/try --export /tmp/weights

The same command again resumes the run in ``--out`` (default: runs/NAME-PROFILE). ``--export
WEIGHTS_DIR`` ships its models there with their cards after training, and refuses to replace a
file this run did not write unless ``--overwrite``.
"""

import argparse
import os
import signal

import torch

from .cli import check_device, non_negative_int, positive_int, run
from .data.images import load_dataset, save_grid
from .training.checkpoint import ConfigMismatchError, checkpoint_exists
from .training.profiles import CLASS_DROPOUT, PROFILES, current_profile, training_settings
from .diffusion.losses import LSimple
from .diffusion.sampling import ddim_sample
from .diffusion.schedules import NoiseSchedule
from .training.trainer import TrainConfig, Trainer
from .models.unet import unet_preset
from .recipes import PROFILES as RECIPE_PROFILES, RECIPES, run_recipe


def build(dataset, profile=None, data_dir=None, steps=None, checkpoint_path=None, device=None,
          compile=False):
    """The model, schedule and :class:`Trainer` for ``dataset`` under a profile; returns
    ``(trainer, steps)``. Lesson 4 calls this too, so the notebook and the command line
    train exactly the same thing."""
    settings = training_settings(dataset, profile)
    images, labels, classes = load_dataset(dataset, "train", data_dir=data_dir, as_uint8=True)
    torch.manual_seed(0)                 # the initial weights too: the same command, the same model
    model = unet_preset(settings["preset"], num_classes=len(classes), **settings["unet"])
    config = TrainConfig(batch_size=settings["batch_size"], lr=settings["lr"],
                         warmup_steps=settings["warmup_steps"], ema_decay=settings["ema_decay"],
                         hflip=settings.get("hflip", False),
                         log_every=min(100, settings["steps"] // 10 or 1), compile=compile)
    objective = LSimple(NoiseSchedule.linear(1000), class_dropout=CLASS_DROPOUT)
    trainer = Trainer(model, images, objective, config, cond={"y": labels}, device=device,
                      checkpoint_path=checkpoint_path)
    return trainer, steps or settings["steps"]


def sample_grid(trainer, path, per_class=8, steps=50):
    """Save a grid of EMA samples, one row per class (DDIM, ``steps`` steps)."""
    k = trainer.num_classes
    y = torch.arange(k, device=trainer.device).repeat_interleave(per_class)
    shape = (len(y), *trainer.loader.images.shape[1:])
    x = ddim_sample(trainer.ema.model, trainer.schedule, shape, steps=steps, clip_x0=True,
                    model_kwargs={"y": y}, device=trainer.device, progress=False)
    save_grid(x, path, nrow=per_class)


CHECKPOINT = "checkpoint.pt"


def check_out_folder(parser, out):
    """``--out`` is a new or empty folder (a fresh run) or one holding a checkpoint (a run to
    resume): never a file, and never a folder of other files, which a fresh run could overwrite."""
    if not out:
        parser.error("--out is empty; name the run folder, e.g. --out runs/mnist")
    if os.path.exists(out) and not os.path.isdir(out):
        parser.error(f"--out {out} is a file, not a folder; choose a folder for the run (a new one, or "
                     f"the folder of the run to resume)")
    if os.path.isdir(out) and not checkpoint_exists(os.path.join(out, CHECKPOINT)):
        others = sorted(name for name in os.listdir(out) if not name.startswith("."))
        if others:
            parser.error(f"--out {out} holds other files ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) "
                         f"but no {CHECKPOINT} to resume, and a fresh run could overwrite them; choose a new "
                         f"or empty folder")


def one_line(error):
    """An error message on one line (a checkpoint's error may list its differences on several)."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lesson_lib.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["mnist", "cifar10"], help="which dataset and model")
    p.add_argument("--recipe", help=f"instead of --config: make a shipped model; one of {', '.join(RECIPES)}")
    p.add_argument("--profile", choices=PROFILES + ("full",),
                   help="--config: ci, cpu or gpu (default: $DDPM_PROFILE, else gpu with CUDA, else cpu); "
                        "--recipe: full (the shipped settings, default) or ci")
    p.add_argument("--out", help="run folder (default: runs/CONFIG-PROFILE or runs/RECIPE-PROFILE)")
    p.add_argument("--export", metavar="WEIGHTS_DIR", help="--recipe: ship its models and cards to this folder")
    p.add_argument("--overwrite", action="store_true", help="--export: replace files this run did not write")
    p.add_argument("--steps", type=positive_int, help="train until this step (default: the profile's)")
    p.add_argument("--data-dir", help="a dataset mirror (default: $DDPM_DATA_DIR, else download)")
    p.add_argument("--checkpoint-every", type=non_negative_int,
                   help="steps between checkpoints; 0 = only at the end (default 1000)")
    p.add_argument("--sample-every", type=non_negative_int, help="0 = only at the end (default 2000)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    args = p.parse_args(argv)
    if args.config and args.recipe:
        p.error("--config and --recipe are two kinds of run: give --config mnist|cifar10 to train a model of "
                "lesson 4, or --recipe NAME to make a shipped model, not both")
    if args.recipe is not None:
        return main_recipe(p, args)
    if not args.config:
        p.error(f"--config or --recipe is required: --config mnist|cifar10 trains a model of lesson 4, --recipe NAME "
                f"makes a shipped model ({', '.join(RECIPES)})")
    for flag, value in (("--export", args.export), ("--overwrite", args.overwrite)):
        if value:
            p.error(f"{flag} goes with --recipe; a --config run keeps its model in --out (export it with "
                    f"lesson_lib.pretrained.export_model)")
    if args.profile == "full":
        p.error("--profile full is a recipe's; --config takes --profile ci, cpu or gpu")
    args.checkpoint_every = 1000 if args.checkpoint_every is None else args.checkpoint_every
    args.sample_every = 2000 if args.sample_every is None else args.sample_every

    profile = current_profile(args.profile)
    if args.device is not None:
        check_device(p, args.device)
    if profile == "gpu" and not torch.cuda.is_available() and not (args.device or "").startswith("cpu"):
        p.error("the gpu profile trains for hours on a GPU and would take weeks here: this machine has no "
                "CUDA GPU. Use --profile cpu (MNIST: about 25 minutes on 2 CPU cores), or add --device cpu to insist")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        p.error(f"--data-dir {args.data_dir} is not a folder; pass the folder of the dataset mirror, or leave "
                f"--data-dir out to use $DDPM_DATA_DIR or a download")
    out = args.out if args.out is not None else os.path.join("runs", f"{args.config}-{profile}")
    check_out_folder(p, out)

    # Everything that can be refused is refused here, before the first step (and before any write).
    trainer, steps = build(args.config, profile, args.data_dir, args.steps,
                           os.path.join(out, CHECKPOINT), args.device, args.compile)
    try:
        resumed = trainer.resume()
    except ConfigMismatchError as error:
        differ = ", ".join(error.keys[:4]) + (", ..." if len(error.keys) > 4 else "")
        p.error(f"--out {out} holds the checkpoint of another run (its {differ} differ from this command's); "
                f"choose another --out for this run, or repeat that run's command to resume it")
    except ValueError as error:
        p.error(f"--out {out}: {trainer.checkpoint_path} cannot be resumed ({one_line(error)}); choose "
                f"another --out for a fresh run")
    try:
        trainer.check_checkpoint_path()          # creates the folder; fails if it cannot be written
    except OSError as error:
        p.error(f"--out {out}: {one_line(error)}")
    main_process = trainer.distributed.is_main
    n_params = sum(q.numel() for q in trainer.model.parameters())
    processes = f" x {trainer.distributed.world} processes" if trainer.distributed.world > 1 else ""
    if main_process:
        print(f"{args.config}, profile {profile}: {n_params / 1e6:.2f}M parameters on {trainer.device}{processes}, "
              f"{steps} steps of batch {trainer.config.batch_size}; run folder {out}")
    if resumed and main_process:
        print(f"resumed from {trainer.checkpoint_path} at step {trainer.step}")

    def save_samples(t):
        if t.distributed.is_main:
            sample_grid(t, os.path.join(out, f"samples_step{t.step}.png"))

    def stop(signum, frame):          # Ctrl-C, or the SIGTERM of a closing Colab or a job scheduler
        trainer.stop_requested = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.run(steps, checkpoint_every=args.checkpoint_every,
                    callback_every=args.sample_every, callback=save_samples)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not args.checkpoint_every:     # run() saved at the end (after an interruption too) otherwise
        trainer.save()
    if trainer.stop_requested or trainer.step < steps:
        if main_process:
            print(f"interrupted at step {trainer.step}: saved {trainer.checkpoint_path}; run the same command "
                  f"again to resume")
        raise SystemExit(130)
    save_samples(trainer)
    if main_process:
        print(f"done: step {trainer.step}, loss {trainer.history[-1][1]:.4f}; "
              f"checkpoint {trainer.checkpoint_path}, samples {out}/samples_step{trainer.step}.png")


def main_recipe(p, args):
    """``--recipe NAME``: run (or resume) the recipe in --out, then ship its models to --export."""
    if args.recipe not in RECIPES:
        p.error(f"--recipe {args.recipe!r} is not a recipe; the recipes are: {', '.join(RECIPES)}")
    given = [flag for flag, value in (("--steps", args.steps), ("--checkpoint-every", args.checkpoint_every),
                                      ("--sample-every", args.sample_every), ("--compile", args.compile))
             if value not in (None, False)]
    if given:
        p.error(f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with --config; a recipe's steps and "
                f"checkpoints are its settings (lesson_lib/recipes/)")
    profile = args.profile or "full"
    if profile not in RECIPE_PROFILES:
        p.error(f"--recipe runs under --profile full (the settings that made the shipped weights) or ci (seconds), "
                f"got --profile {profile}")
    if args.device is not None:
        check_device(p, args.device)
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        p.error(f"--data-dir {args.data_dir} is not a folder; pass the folder of the dataset mirror, or leave "
                f"--data-dir out to use $DDPM_DATA_DIR or a download")
    recipe = RECIPES[args.recipe]
    out = args.out if args.out is not None else os.path.join("runs", f"{args.recipe}-{profile}")
    print(f"recipe {recipe.name}, profile {profile}: {recipe.summary}; makes {', '.join(recipe.ships)}; "
          f"run folder {out}", flush=True)
    try:
        run, _, cards = run_recipe(args.recipe, profile, out, args.export, args.overwrite, args.data_dir,
                                   args.device, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print(f"interrupted: {out} keeps the last checkpoint; run the same command again to resume")
        raise SystemExit(130) from None
    shipped = f"; shipped {', '.join(card['name'] for card in cards)} to {args.export}" if cards else \
        "; add --export WEIGHTS_DIR to ship its models"
    print(f"done: {run.seconds():.0f} s of training in {out}{shipped}")


if __name__ == "__main__":
    run(main, None, "python -m lesson_lib.train")
