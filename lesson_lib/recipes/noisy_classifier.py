"""mnist_noisy_classifier: the noisy classifier f_phi(y | x_t, t) that guides lesson 5 (Dhariwal & Nichol 2021).

The course's one training loop (:class:`~lesson_lib.training.trainer.Trainer`: AdamW with warm-up, EMA,
resumable checkpoints) with another objective, :class:`~lesson_lib.diffusion.losses.NoisyCrossEntropy`:
cross-entropy on x_t = q_sample(x_0, t) with t uniform. The schedule is the one of the shipped
``mnist_cond`` (linear, T = 1000), because the classifier must know what "timestep t" means for the
model it guides. ``export`` measures the accuracy of the shipped weights on held-out test images at a
grid of timesteps (:func:`lesson_lib.evaluation.judges.accuracy_against_t`).
"""

from ..diffusion.losses import NoisyCrossEntropy
from ..diffusion.schedules import NoiseSchedule
from ..evaluation.judges import accuracy_against_t
from ..models.noisy_classifier import noisy_classifier_preset
from ..pretrained import model_from_state, model_payload
from ..training.trainer import TrainConfig, Trainer
from .run import Recipe

ACCURACY_TIMESTEPS = (0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999)
"""The code timesteps at which the card reports test accuracy."""

SETTINGS = {
    "full": dict(preset="mnist", steps=3000, batch_size=128, lr=1e-3, seed=0, ema_decay=0.995, log_every=50,
                 checkpoint_every=500, threads=1, n_eval=2000),
    "ci": dict(preset="mnist", steps=4, batch_size=8, lr=1e-3, seed=0, ema_decay=0.995, log_every=2,
               checkpoint_every=2, n_train=256, n_eval=20),
}
DESCRIPTION = ("Time-conditioned MNIST classifier f_phi(y | x_t, t) for classifier guidance: the U-Net's down path "
               "(32-64-64 channels, one ResBlock per level) with a linear head on the pooled features, trained with "
               "cross-entropy on q_sample(x0, t), t uniform. EMA weights stored in float16.")


def train(run):
    s = run.settings
    images, labels = run.images("train")
    config = TrainConfig(batch_size=s["batch_size"], lr=s["lr"], warmup_steps=min(100, s["steps"] // 5 + 1),
                         ema_decay=s["ema_decay"], seed=s["seed"], log_every=s["log_every"])
    trainer = Trainer(noisy_classifier_preset(s["preset"]), images, NoisyCrossEntropy(NoiseSchedule.linear(1000)),
                      config, cond={"y": labels}, device=run.device, checkpoint_path=run.path("checkpoint.pt"))
    run.resume(trainer)
    run.train(trainer, s["steps"], checkpoint_every=s["checkpoint_every"])
    return trainer


def export(run, trainer, weights_dir, overwrite=False):
    s = run.settings
    payload = model_payload(trainer)
    classifier, schedule = model_from_state(payload, device=trainer.device)
    test_x, test_y = run.images("test", as_uint8=False)
    accuracy = accuracy_against_t(classifier, schedule, test_x[:s["n_eval"]], test_y[:s["n_eval"]],
                                  ACCURACY_TIMESTEPS, seed=0)
    evaluation = {
        "accuracy_against_t": {
            "test_images": f"the first {s['n_eval']} of the MNIST test split, one noise draw (seed 0) per t",
            "timesteps": list(ACCURACY_TIMESTEPS), "accuracy": [round(a, 4) for a in accuracy]},
        "final_loss": trainer.history[-1][1] if trainer.history else None}
    card = run.card("mnist_noisy_classifier", "noisy_classifier", DESCRIPTION, classifier, evaluation, weights_dir,
                    architecture=type(classifier).__name__, model_config=dict(classifier.config),
                    schedule="linear, T=1000, beta 1e-4 -> 0.02 (the schedule of mnist_cond)",
                    objective=trainer.objective.config(),
                    trained_on=f"MNIST train split, {len(trainer.loader.images):,} images (uint8 -> [-1, 1]), "
                               f"no augmentation",
                    steps=trainer.step, batch_size=s["batch_size"], lr=s["lr"],
                    examples_seen=trainer.step * s["batch_size"], seed=s["seed"], settings=s)
    return [run.save(payload, weights_dir, "mnist_noisy_classifier", card, overwrite)]


RECIPE = Recipe("mnist_noisy_classifier", "mnist", ("mnist_noisy_classifier",), SETTINGS, train, export,
                "lesson 5's guide f_phi(y | x_t, t): cross-entropy on x_t, 3,000 steps on one CPU thread")
