"""mnist_consistency: the consistency model of lesson 9, by consistency distillation (Song et al. 2023)
of ``mnist_v_teacher``, the teacher that progressive distillation halves in lesson 7.

The student starts as a copy of the v teacher (no dropout, as the distilled students), whose x0_hat is
already f_theta with the boundary condition exact at the data
(:func:`lesson_lib.diffusion.consistency.boundary_scalings`). It is trained by one Trainer with
:class:`~lesson_lib.diffusion.consistency.ConsistencyDistillation`: the nested grid of ``intervals``
intervals, one DDIM step of the teacher per pair, a target network with EMA rate ``mu``, the
pseudo-Huber distance, the learning rate annealed linearly to 0. The sampled weights are the Trainer's
EMA (``ema_decay``), which is another average than the target's. ``export`` measures FID and class
accuracy on 1, 2, 4 and 8 calls (multistep consistency sampling on the nested grid) beside DDIM of the
teacher on the same steps from the same x_T and the real-data floor at the same n; the figures at
n = 5,000 are benchmarks/consistency.py's.
"""

import torch

from ..diffusion.consistency import ConsistencyDistillation
from ..diffusion.distillation import sampler_timesteps
from ..diffusion.sampling import consistency_sample
from ..evaluation.fid import compute_metrics, real_floor
from ..evaluation.judges import class_accuracy
from ..pretrained import load_pretrained, model_from_state, model_payload
from ..training.distill import sample_student, student_from
from ..training.trainer import TrainConfig, Trainer
from .run import Recipe

SETTINGS = {
    "full": dict(teacher="mnist_v_teacher", intervals=32, mu=0.95, distance="pseudo_huber", train_steps=4000,
                 lr=1e-4, batch_size=32, ema_decay=0.995, seed=3, threads=2, checkpoint_every=250,
                 evaluation=dict(n=500, batch=250, seed=0, calls=(1, 2, 4, 8))),
    "ci": dict(teacher="mnist_v_teacher", intervals=8, mu=0.95, distance="pseudo_huber", train_steps=2,
               lr=1e-4, batch_size=4, ema_decay=0.9, seed=3, checkpoint_every=1, n_train=256,
               evaluation=dict(n=10, batch=10, seed=0, calls=(1, 2))),
}
NAME = "mnist_consistency"
SCHEDULE = "linear, T=1000, beta 1e-4 -> 0.02"


def sample_consistency(model, schedule, calls, shape, labels=None, generator=None, clip_x0=True):
    """``calls`` network calls of multistep consistency sampling on the nested grid
    (:func:`~lesson_lib.diffusion.distillation.sampler_timesteps`: [999] for 1, [999, 499] for 2, ...),
    the same times as a distilled student on as many steps. Returns images in [-1, 1]."""
    device = next(model.parameters()).device
    return consistency_sample(model, schedule, shape, timesteps=sampler_timesteps(schedule.T, calls), clip_x0=clip_x0,
                              model_kwargs=None if labels is None else {"y": labels.to(device)}, device=device,
                              generator=generator, progress=False)


def figures(models, schedule, calls, n, batch=250, seed=0, data_dir=None):
    """FID and class accuracy of ``n`` samples (labels 0..9 in turn, every arm from the same x_T) of each
    arm in ``models``: ``{key: (sampler, model)}`` with sampler "consistency" or "ddim"."""
    labels = torch.arange(n) % 10
    row = {}
    for key, (sampler, model) in models.items():
        draw = sample_consistency if sampler == "consistency" else sample_student
        generator = torch.Generator().manual_seed(seed)
        images = torch.cat([draw(model, schedule, calls, (len(y), *model.data_shape), y, generator).cpu()
                            for y in labels.split(batch)])
        row[key] = {"calls": calls, "fid": round(compute_metrics(images, data_dir=data_dir)["fid"], 4),
                    "accuracy": round(class_accuracy(images, labels)["accuracy"], 4)}
    return row


def train(run):
    s = run.settings
    images, labels = run.images("train")
    teacher, schedule = load_pretrained(s["teacher"])
    teacher = teacher.float()
    torch.manual_seed(s["seed"])
    student = student_from(teacher)
    objective = ConsistencyDistillation(schedule, student, teacher, s["intervals"], s["mu"], s["distance"])
    config = TrainConfig(batch_size=s["batch_size"], lr=s["lr"], warmup_steps=0, lr_decay_steps=s["train_steps"],
                         ema_decay=s["ema_decay"], seed=s["seed"], log_every=25)
    trainer = Trainer(student, images, objective, config, cond={"y": labels}, device=run.device,
                      checkpoint_path=run.path("consistency.pt"))
    run.resume(trainer, "consistency distillation")
    run.train(trainer, s["train_steps"], checkpoint_every=s["checkpoint_every"])
    return trainer


def export(run, trainer, weights_dir, overwrite=False):
    s, e = run.settings, run.settings["evaluation"]
    payload = model_payload(trainer)
    model, schedule = model_from_state(payload, device=trainer.device)        # the shipped fp16 weights
    teacher, _ = load_pretrained(s["teacher"], device=trainer.device)
    floor = real_floor("mnist", e["n"], data_dir=run.data_dir)["fid"]
    rows = [figures({"consistency": ("consistency", model), "ddim_teacher": ("ddim", teacher)}, schedule, k,
                    e["n"], e["batch"], e["seed"], run.data_dir) for k in e["calls"]]
    description = ("Class-conditional MNIST consistency model (Song et al. 2023): a copy of mnist_v_teacher "
                   f"trained by consistency distillation on the {s['intervals']}-interval nested grid (one DDIM "
                   f"step of the teacher per pair, target EMA rate {s['mu']}, pseudo-Huber distance); x0_hat of "
                   "its v-prediction is the consistency function f(x_t, t), sampled on 1 to 8 calls by multistep "
                   "consistency sampling (lesson_lib.diffusion.sampling.consistency_sample); EMA weights in fp16.")
    card = run.card(NAME, "diffusion", description, model, {"n": e["n"], "fid_floor": round(floor, 4), "rows": rows},
                    weights_dir, model_config=dict(model.config), prediction=model.prediction, schedule=SCHEDULE,
                    sampling={"sampler": "consistency", "steps": 1, "grid": "distillation"}, settings=s,
                    objective=trainer.objective.config(), steps=trainer.step,
                    examples_seen=trainer.step * trainer.config.batch_size)
    return [run.save(payload, weights_dir, NAME, card, overwrite)]


RECIPE = Recipe("mnist_consistency", "mnist", (NAME,), SETTINGS, train, export,
                "mnist_consistency: consistency distillation of mnist_v_teacher")
