"""Train an image DDPM from the command line (the headless version of lesson 4).

    python -m lesson_lib.train --config mnist                  # profile chosen automatically
    python -m lesson_lib.train --config cifar10 --profile gpu --out runs/cifar10
    python -m lesson_lib.train --config mnist --steps 10000     # continue a finished run further

The run folder holds ``checkpoint.pt`` (written atomically every ``--checkpoint-every``
steps and at the end) and ``samples_stepN.png`` grids. Running the same command again
resumes from the checkpoint exactly where it stopped; a checkpoint from other settings is
refused with the list of differences. Settings come from :mod:`lesson_lib.training.profiles`.
"""

import argparse
import os
import signal

import torch

from .cli import non_negative_int, positive_int, run
from .data.images import load_dataset, save_grid
from .training.profiles import CLASS_DROPOUT, PROFILES, current_profile, training_settings
from .diffusion.sampling import ddim_sample
from .diffusion.schedules import NoiseSchedule
from .training.trainer import TrainConfig, Trainer
from .models.unet import unet_preset


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
                         class_dropout=CLASS_DROPOUT, hflip=settings.get("hflip", False),
                         log_every=min(100, settings["steps"] // 10 or 1), compile=compile)
    trainer = Trainer(model, NoiseSchedule.linear(1000), images, config, labels=labels, device=device,
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


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lesson_lib.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, choices=["mnist", "cifar10"], help="which dataset and model")
    p.add_argument("--profile", choices=PROFILES, help="default: $DDPM_PROFILE, else gpu with CUDA, else cpu")
    p.add_argument("--out", help="run folder (default: runs/CONFIG-PROFILE)")
    p.add_argument("--steps", type=positive_int, help="train until this step (default: the profile's)")
    p.add_argument("--data-dir", help="a dataset mirror (default: $DDPM_DATA_DIR, else download)")
    p.add_argument("--checkpoint-every", type=non_negative_int, default=1000,
                   help="steps between checkpoints; 0 = only at the end (default 1000)")
    p.add_argument("--sample-every", type=non_negative_int, default=2000, help="0 = only at the end")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    args = p.parse_args(argv)

    profile = current_profile(args.profile)
    cuda = torch.cuda.is_available()
    if (args.device or "").startswith("cuda") and not cuda:
        p.error("--device cuda, but this machine has no CUDA GPU; use --device cpu")
    if profile == "gpu" and not cuda and not (args.device or "").startswith("cpu"):
        p.error("the gpu profile trains for hours on a GPU and would take weeks here: this machine has no "
                "CUDA GPU. Use --profile cpu (about 15 minutes on a laptop), or add --device cpu to insist")
    out = args.out or os.path.join("runs", f"{args.config}-{profile}")
    os.makedirs(out, exist_ok=True)
    trainer, steps = build(args.config, profile, args.data_dir, args.steps,
                           os.path.join(out, "checkpoint.pt"), args.device, args.compile)
    n_params = sum(q.numel() for q in trainer.model.parameters())
    print(f"{args.config}, profile {profile}: {n_params / 1e6:.2f}M parameters on {trainer.device}, "
          f"{steps} steps of batch {trainer.config.batch_size}; run folder {out}")
    if trainer.resume():
        print(f"resumed from {trainer.checkpoint_path} at step {trainer.step}")

    def save_samples(t):
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
    trainer.save()                    # also with --checkpoint-every 0, and after an interruption
    if trainer.stop_requested:
        print(f"interrupted at step {trainer.step}: saved {trainer.checkpoint_path}; run the same command "
              f"again to resume")
        raise SystemExit(130)
    save_samples(trainer)
    print(f"done: step {trainer.step}, loss {trainer.history[-1][1]:.4f}; "
          f"checkpoint {trainer.checkpoint_path}, samples {out}/samples_step{trainer.step}.png")


if __name__ == "__main__":
    run(main, None, "python -m lesson_lib.train")
