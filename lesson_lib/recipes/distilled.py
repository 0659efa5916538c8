"""mnist_distilled_{1,2,4,8}: the students of lesson 7, by progressive distillation (Salimans & Ho 2022).

The shipped ``mnist_cond`` predicts eps, whose x0_hat is useless at few steps (lesson 7, section 2), so
it is first re-parameterised as a v-prediction network of the same architecture that starts from its
weights: :class:`~lesson_lib.diffusion.distillation.Distillation` with ``teacher_steps=1`` on the
128-step grid, whose target is ``mnist_cond``'s own x0_hat, so the network learns the same denoiser
with another output. That network is the teacher on 128 DDIM steps; it is then halved
128 -> 64 -> ... -> 1 by :func:`lesson_lib.training.distill.progressive_distillation` (one Trainer per
halving, each resumable). ``export`` ships the students on 8, 4, 2 and 1 steps with the ladder's
figures: FID and class accuracy of each student on its own steps, beside DDIM of the v teacher and of
``mnist_cond`` on the same steps of the same grid, and the real-data floor. The shipped run took 61
minutes on two CPU threads (docs/benchmarks.md, section 8). :func:`ladder` measures the whole ladder
of a run folder (benchmarks/distillation.py and benchmarks/fast_sampling.py print it).
"""

from pathlib import Path

import torch

from ..diffusion.distillation import Distillation
from ..evaluation.fid import compute_metrics, real_floor
from ..evaluation.judges import class_accuracy
from ..models.unet import UNet
from ..pretrained import load_pretrained, model_from_state, model_payload
from ..training.checkpoint import load_checkpoint
from ..training.distill import progressive_distillation, sample_student
from ..training.trainer import TrainConfig, Trainer
from .run import Recipe

SETTINGS = {
    "full": dict(teacher_steps=128, base_channels=32, convert_steps=1000, convert_lr=2e-4, halving_steps=512,
                 halving_lr=1e-4, batch_size=32, weighting="snr_trunc", threads=2,
                 evaluation=dict(n=500, batch=250, seed=0)),
    "ci": dict(teacher_steps=16, base_channels=32, convert_steps=2, convert_lr=2e-4, halving_steps=1,
               halving_lr=1e-4, batch_size=4, weighting="snr_trunc", n_train=256,
               evaluation=dict(n=10, batch=10, seed=0)),
}
STUDENTS = (8, 4, 2, 1)
SCHEDULE = "linear, T=1000, beta 1e-4 -> 0.02"


def v_teacher(shipped, base_channels):
    """The shipped model's architecture as v-prediction without dropout. At the shipped width it
    starts from the shipped weights (the features carry over; only the output's meaning changes,
    which the conversion teaches); at another width it starts from scratch."""
    model = UNet.from_config(dict(shipped.config, base_channels=base_channels, dropout=0.0, prediction="v"))
    if base_channels == shipped.config["base_channels"]:
        model.load_state_dict(shipped.state_dict())
    return model


def train(run):
    """Returns ``(teacher, {steps: trainer of that student})``."""
    s = run.settings
    images, labels = run.images("train")
    shipped, schedule = load_pretrained("mnist_cond")
    torch.manual_seed(0)
    steps = s["convert_steps"]
    config = TrainConfig(batch_size=s["batch_size"], lr=s["convert_lr"], warmup_steps=50, lr_decay_steps=steps,
                         ema_decay=0.0, seed=1, log_every=25)
    objective = Distillation(schedule, shipped, s["teacher_steps"], s["weighting"], teacher_steps=1)
    convert = Trainer(v_teacher(shipped, s["base_channels"]), images, objective, config, cond={"y": labels},
                      device=run.device, checkpoint_path=run.path(f"teacher_{s['teacher_steps']}.pt"))
    run.resume(convert, "conversion into the v teacher")
    run.train(convert, steps, checkpoint_every=min(50, steps))
    teacher = convert.model.eval()
    with run.clock():
        halvings = progressive_distillation(
            teacher, schedule, images, {"y": labels}, start_steps=s["teacher_steps"], end_steps=1,
            train_steps=s["halving_steps"], config=TrainConfig(batch_size=s["batch_size"], lr=s["halving_lr"], seed=2,
                                                               log_every=16),
            weighting=s["weighting"], checkpoint_dir=run.folder, device=run.device, progress=run.progress)
    for _, trainer in halvings:
        run.own_files.update(trainer.own_files)
    return teacher, dict(halvings)


def ladder_row(models, schedule, steps, n, batch=250, seed=0, data_dir=None):
    """FID and class accuracy of ``n`` samples (labels 0..9 in turn, the same x_T for each model) of
    every model in ``models`` (a dict) with DDIM on ``steps`` steps of the nested grid."""
    labels = torch.arange(n) % 10
    row = {}
    for key, model in models.items():
        generator = torch.Generator().manual_seed(seed)
        images = torch.cat([sample_student(model, schedule, steps, (len(y), *model.data_shape), y, generator).cpu()
                            for y in labels.split(batch)])
        row[key] = {"steps": steps, "fid": compute_metrics(images, data_dir=data_dir)["fid"],
                    "accuracy": class_accuracy(images, labels)["accuracy"]}
    return row


def load_run(folder):
    """The v teacher (``teacher_N.pt``) and every finished student (``student_N.pt``) of a run folder,
    with their trained weights (no EMA in distillation): ``{steps: model}``."""
    models = {}
    for path in sorted(Path(folder).glob("*_*.pt")):
        if not path.stem.endswith(".prev"):
            models[int(path.stem.split("_")[1])] = model_from_state(load_checkpoint(path), ema=False)[0]
    return models


def ladder(folder, n=500, calls=(1, 2, 4, 8, 16, 32, 64, 128), shipped_calls=(1, 2, 4, 8), data_dir=None,
           log=print):
    """The distillation ladder of a run folder: for each number of network calls in ``calls`` that the
    run has, FID and class accuracy of the student on its own steps, of DDIM of the v teacher on the
    same steps and (at ``shipped_calls``) of DDIM of ``mnist_cond``, beside the real-data floor at the
    same n. Returns ``{"n", "floor", "rows"}``, a row ``{"calls", "student", "ddim", "ddim_mnist_cond"}``
    (None where not sampled)."""
    models = load_run(folder)
    if not models:
        raise FileNotFoundError(f"{folder} holds no teacher_N.pt or student_N.pt: run the recipe first "
                                f"(python -m lesson_lib.train --recipe mnist_distilled --out {folder})")
    teacher = max(models)
    shipped, schedule = load_pretrained("mnist_cond")
    floor = real_floor("mnist", n, data_dir=data_dir)["fid"]
    rows = []
    for steps in [c for c in calls if c in models]:
        arms = {"student": models[steps]} if steps != teacher else {}
        arms["ddim"] = models[teacher]
        if steps in shipped_calls:
            arms["ddim_mnist_cond"] = shipped
        row = ladder_row(arms, schedule, steps, n, data_dir=data_dir)
        rows.append({"calls": steps, **{key: row.get(key) for key in ("student", "ddim", "ddim_mnist_cond")}})
        log("  ".join(f"{key} FID {value['fid']:7.3f} acc {value['accuracy']:.3f}" for key, value in row.items())
            + f"   ({steps} calls; floor {floor:.3f})")
    return {"n": n, "floor": floor, "rows": rows}


def export(run, trained, weights_dir, overwrite=False):
    teacher, students = trained
    s, e = run.settings, run.settings["evaluation"]
    shipped, schedule = load_pretrained("mnist_cond", device=next(teacher.parameters()).device)
    floor = real_floor("mnist", e["n"], data_dir=run.data_dir)["fid"]
    cards = []
    for steps in STUDENTS:
        trainer = students[steps]
        payload = model_payload(trainer, ema=False)              # no EMA in a halving: the trained weights
        model, _ = model_from_state(payload, device=trainer.device)
        row = ladder_row({"student": model, "ddim_same_steps": teacher, "ddim_mnist_cond_same_steps": shipped},
                         schedule, steps, e["n"], e["batch"], e["seed"], run.data_dir)
        description = (f"Class-conditional MNIST student sampled with DDIM on {steps} step(s) of the nested grid "
                       f"(lesson_lib.diffusion.distillation.sampler_timesteps), by progressive distillation "
                       f"(Salimans & Ho 2022) from {s['teacher_steps']} steps of a v-prediction U-Net (base_channels "
                       f"{s['base_channels']}) that was re-parameterised from mnist_cond's predictions on that grid; "
                       f"fp16 weights.")
        card = run.card(f"mnist_distilled_{steps}", "diffusion", description, model,
                        {"n": e["n"], "fid_floor": floor, **row}, weights_dir,
                        model_config=dict(model.config), prediction=model.prediction, schedule=SCHEDULE,
                        sampling={"sampler": "ddim", "steps": steps, "grid": "distillation"}, settings=s,
                        objective=trainer.objective.config())
        cards.append(run.save(payload, weights_dir, f"mnist_distilled_{steps}", card, overwrite))
    return cards


RECIPE = Recipe("mnist_distilled", "mnist", tuple(f"mnist_distilled_{n}" for n in STUDENTS), SETTINGS, train, export,
                "mnist_distilled_{8,4,2,1}: progressive distillation of mnist_cond, 61 min on two CPU threads")
