"""Train the noisy classifier f_phi(y | x_t, t) that guides lesson 5, and ship it.

    OMP_NUM_THREADS=1 python -m lesson_lib.training.noisy_classifier_fit --data /path/to/data \
        --out lesson_lib/weights/mnist_noisy_classifier.pt

It is the course's one training loop (:class:`~lesson_lib.training.trainer.Trainer`, AdamW with
warm-up, EMA, resumable checkpoints) with another objective:
:class:`~lesson_lib.diffusion.losses.NoisyCrossEntropy`, cross-entropy on x_t = q_sample(x_0, t)
with t uniform. The schedule is the one of the shipped ``mnist_cond`` model (linear, T = 1000),
because the classifier must know what "timestep t" means for the model it guides.

After training, the accuracy of the EMA weights on held-out test images is measured at a grid
of timesteps (:func:`lesson_lib.evaluation.judges.accuracy_against_t`) and written to the
model card with what it trained on, how long, on what, and this command.
"""

import argparse
import platform
import time

import torch

from ..data.images import load_mnist
from ..diffusion.losses import NoisyCrossEntropy
from ..diffusion.schedules import NoiseSchedule
from ..evaluation.judges import accuracy_against_t
from ..models.noisy_classifier import noisy_classifier_preset
from ..pretrained import export_model, write_card
from .trainer import TrainConfig, Trainer

ACCURACY_TIMESTEPS = (0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999)
"""The code timesteps at which the card reports test accuracy."""


def train(steps=1500, batch_size=128, lr=1e-3, seed=0, preset="mnist", data_dir=None, device="cpu",
          checkpoint_path=None, progress=True, n_train=None):
    """Train a noisy MNIST classifier under the linear T = 1000 schedule; returns the Trainer
    (sample from / evaluate ``trainer.ema.model``)."""
    images, labels = load_mnist("train", data_dir=data_dir, as_uint8=True)
    if n_train is not None:
        images, labels = images[:n_train], labels[:n_train]
    schedule = NoiseSchedule.linear(1000)
    config = TrainConfig(batch_size=batch_size, lr=lr, warmup_steps=min(100, steps // 5 + 1),
                         ema_decay=0.995, seed=seed, log_every=50)
    trainer = Trainer(noisy_classifier_preset(preset), images, NoisyCrossEntropy(schedule), config,
                      cond={"y": labels}, device=device, checkpoint_path=checkpoint_path)
    trainer.resume()
    trainer.run(steps, progress=progress, checkpoint_every=500 if checkpoint_path else 0)
    return trainer


def cpu_name():
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="directory holding mnist.npz (else $DDPM_DATA_DIR)")
    p.add_argument("--out", default="lesson_lib/weights/mnist_noisy_classifier.pt")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-eval", type=int, default=2000, help="test images per timestep on the card")
    p.add_argument("--checkpoint", default=None, help="resumable training checkpoint (optional)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    start = time.perf_counter()
    trainer = train(args.steps, args.batch_size, args.lr, args.seed, data_dir=args.data,
                    device=args.device, checkpoint_path=args.checkpoint)
    train_seconds = time.perf_counter() - start
    classifier = trainer.ema.model.eval()
    test_x, test_y = load_mnist("test", data_dir=args.data)
    accuracy = accuracy_against_t(classifier, trainer.schedule, test_x[:args.n_eval], test_y[:args.n_eval],
                                  ACCURACY_TIMESTEPS, seed=0, device=args.device)
    export_model(trainer, args.out)
    model = trainer.model
    card = {
        "kind": "noisy_classifier",
        "name": "mnist_noisy_classifier",
        "dataset": "mnist",
        "description": "Time-conditioned MNIST classifier f_phi(y | x_t, t) for classifier guidance: the "
                       "U-Net's down path (32-64-64 channels, one ResBlock per level) with a linear head on "
                       "the pooled features, trained with cross-entropy on q_sample(x0, t), t uniform. EMA "
                       "weights stored in float16.",
        "architecture": type(model).__name__,
        "model_config": dict(model.config),
        "parameters": sum(q.numel() for q in model.parameters()),
        "schedule": "linear, T=1000, beta 1e-4 -> 0.02 (the schedule of mnist_cond)",
        "objective": trainer.objective.config(),
        "trained_on": "MNIST train split, 60,000 images (uint8 -> [-1, 1]), no augmentation",
        "steps": trainer.step,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "examples_seen": trainer.step * args.batch_size,
        "seed": args.seed,
        "wall_time_s": round(train_seconds, 1),
        "hardware": f"CPU ({cpu_name()}), {torch.get_num_threads()} torch thread(s)" if args.device == "cpu"
                    else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "command": "OMP_NUM_THREADS=1 python -m lesson_lib.training.noisy_classifier_fit --data DIR "
                   f"--steps {args.steps} --batch-size {args.batch_size} --lr {args.lr} --seed {args.seed}",
        "accuracy_against_t": {
            "test_images": f"the first {args.n_eval} of the MNIST test split, one noise draw (seed 0) per t",
            "timesteps": list(ACCURACY_TIMESTEPS),
            "accuracy": [round(a, 4) for a in accuracy],
        },
        "final_loss": trainer.history[-1][1] if trainer.history else None,
    }
    write_card(args.out, card)
    print("t        " + " ".join(f"{t:>6d}" for t in ACCURACY_TIMESTEPS))
    print("accuracy " + " ".join(f"{a:6.3f}" for a in accuracy))
    print(f"trained {trainer.step} steps in {train_seconds:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
