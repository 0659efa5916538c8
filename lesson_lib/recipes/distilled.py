"""mnist_v_teacher and mnist_distilled_{1,2,4,8}: the teacher and the students of lesson 7, by
progressive distillation (Salimans & Ho 2022), as two recipes.

``mnist_v_teacher``. The shipped ``mnist_cond`` predicts eps, whose x0_hat is useless at few steps
(lesson 7, section 2), so it is first re-parameterised (:func:`convert`) as a v-prediction network of
the same architecture that starts from its weights: :class:`~lesson_lib.diffusion.distillation.Distillation`
with ``teacher_steps=1`` on the 128-step grid, whose target is ``mnist_cond``'s own x0_hat, so the
network learns the same denoiser with another output. That network is the teacher on 128 DDIM steps.
Its export (:func:`export_teacher`) measures DDIM of it on the students' steps.

``mnist_distilled``. The shipped ``mnist_v_teacher`` is halved 128 -> 64 -> ... -> 1 by
:func:`lesson_lib.training.distill.progressive_distillation` (one Trainer per halving, each resumable),
as lesson 9's consistency model is distilled from it: every model of the family comes from the one
shipped teacher. The export ships the students on 8, 4, 2 and 1 steps with the ladder's figures: FID
and class accuracy of each student on its own steps, beside DDIM of the teacher and of ``mnist_cond``
on the same steps of the same grid, and the real-data floor. :func:`ladder` measures the whole ladder
of a run folder (benchmarks/distillation.py prints it). Times: docs/benchmarks.md, section 8.
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

TEACHER = "mnist_v_teacher"
STUDENTS = (8, 4, 2, 1)
TEACHER_SETTINGS = {
    # convert_steps on a learning-rate schedule of lr_decay_steps: the shipped teacher's run was planned for
    # 1,000 steps and stopped at 750 for the time available, its learning rate not yet annealed to 0
    "full": dict(teacher_steps=128, base_channels=32, convert_steps=750, lr_decay_steps=1000, lr=2e-4, batch_size=32,
                 weighting="snr_trunc", threads=1, evaluation=dict(n=2000, batch=250, seed=0, steps=STUDENTS)),
    "ci": dict(teacher_steps=16, base_channels=32, convert_steps=2, lr_decay_steps=2, lr=2e-4, batch_size=4,
               weighting="snr_trunc", n_train=256, evaluation=dict(n=10, batch=10, seed=0, steps=(16, 1))),
}
SETTINGS = {
    "full": dict(teacher=TEACHER, teacher_steps=128, train_steps=512, lr=1e-4, batch_size=32, weighting="snr_trunc",
                 seed=2, threads=2, evaluation=dict(n=500, batch=250, seed=0)),
    "ci": dict(teacher=TEACHER, teacher_steps=16, train_steps=1, lr=1e-4, batch_size=4, weighting="snr_trunc", seed=2,
               n_train=256, evaluation=dict(n=10, batch=10, seed=0)),
}
SCHEDULE = "linear, T=1000, beta 1e-4 -> 0.02"


def v_teacher(shipped, base_channels):
    """The shipped model's architecture as v-prediction without dropout. At the shipped width it
    starts from the shipped weights (the features carry over; only the output's meaning changes,
    which the conversion teaches); at another width it starts from scratch."""
    model = UNet.from_config(dict(shipped.config, base_channels=base_channels, dropout=0.0, prediction="v"))
    if base_channels == shipped.config["base_channels"]:
        model.load_state_dict(shipped.state_dict())
    return model


def convert(run):
    """``mnist_cond`` re-parameterised as the v teacher on the ``teacher_steps`` grid (:func:`v_teacher`,
    then ``Distillation(..., teacher_steps=1)``: one DDIM step of mnist_cond is the target, so the
    student learns its x0_hat), ``convert_steps`` steps on a learning rate annealed to 0 over
    ``lr_decay_steps``. Resumes from ``teacher_N.pt`` in the run folder; returns the Trainer (no EMA:
    ``trainer.model`` is the teacher)."""
    s = run.settings
    if not 0 < s["convert_steps"] <= s["lr_decay_steps"]:
        raise ValueError(f"convert_steps must lie in 1..lr_decay_steps ({s['lr_decay_steps']}), "
                         f"got convert_steps={s['convert_steps']}")
    images, labels = run.images("train")
    shipped, schedule = load_pretrained("mnist_cond")
    torch.manual_seed(0)
    config = TrainConfig(batch_size=s["batch_size"], lr=s["lr"], warmup_steps=50, lr_decay_steps=s["lr_decay_steps"],
                         ema_decay=0.0, seed=1, log_every=25)
    objective = Distillation(schedule, shipped, s["teacher_steps"], s["weighting"], teacher_steps=1)
    trainer = Trainer(v_teacher(shipped, s["base_channels"]), images, objective, config, cond={"y": labels},
                      device=run.device, checkpoint_path=run.path(f"teacher_{s['teacher_steps']}.pt"))
    run.resume(trainer, "conversion into the v teacher")
    run.train(trainer, s["convert_steps"], checkpoint_every=min(50, s["convert_steps"]))
    trainer.model.eval()
    return trainer


def halve(run):
    """The shipped v teacher (``teacher``) halved from ``teacher_steps`` down to 1 step. Returns
    ``(teacher, {steps: trainer of that student})``."""
    s = run.settings
    teacher, schedule = load_pretrained(s["teacher"])
    teacher = teacher.float().eval()
    images, labels = run.images("train")
    with run.clock():
        halvings = progressive_distillation(
            teacher, schedule, images, {"y": labels}, start_steps=s["teacher_steps"], end_steps=1,
            train_steps=s["train_steps"], config=TrainConfig(batch_size=s["batch_size"], lr=s["lr"], seed=s["seed"],
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


def load_students(folder):
    """Every finished student (``student_N.pt``) of a run folder of ``mnist_distilled``, with its trained
    weights (no EMA in distillation): ``{steps: model}``."""
    return {int(path.stem.split("_")[1]): model_from_state(load_checkpoint(path), ema=False)[0]
            for path in sorted(Path(folder).glob("student_*.pt")) if not path.stem.endswith(".prev")}


def ladder(folder, n=500, calls=(1, 2, 4, 8, 16, 32, 64, 128), shipped_calls=(1, 2, 4, 8), data_dir=None,
           log=print):
    """The distillation ladder of a run folder of ``mnist_distilled``: for each number of network calls
    in ``calls``, FID and class accuracy of the run's student on its own steps (where it has one), of DDIM
    of the shipped v teacher on the same steps and (at ``shipped_calls``) of DDIM of ``mnist_cond``,
    beside the real-data floor at the same n. Returns ``{"n", "floor", "rows"}``, a row ``{"calls",
    "student", "ddim", "ddim_mnist_cond"}`` (None where not sampled)."""
    students = load_students(folder)
    if not students:
        raise FileNotFoundError(f"{folder} holds no student_N.pt: run the recipe first "
                                f"(python -m lesson_lib.train --recipe mnist_distilled --out {folder})")
    teacher, schedule = load_pretrained(TEACHER)
    shipped, _ = load_pretrained("mnist_cond")
    floor = real_floor("mnist", n, data_dir=data_dir)["fid"]
    rows = []
    for steps in calls:
        arms = {"student": students[steps]} if steps in students else {}
        arms["ddim"] = teacher
        if steps in shipped_calls:
            arms["ddim_mnist_cond"] = shipped
        row = ladder_row(arms, schedule, steps, n, data_dir=data_dir)
        rows.append({"calls": steps, **{key: row.get(key) for key in ("student", "ddim", "ddim_mnist_cond")}})
        log("  ".join(f"{key} FID {value['fid']:7.3f} acc {value['accuracy']:.3f}" for key, value in row.items())
            + f"   ({steps} calls; floor {floor:.3f})")
    return {"n": n, "floor": floor, "rows": rows}


def export_teacher(run, converted, weights_dir, overwrite=False):
    """Ship the v teacher (the Trainer of :func:`convert`) as ``mnist_v_teacher``, with FID and class
    accuracy of DDIM on each of the evaluation's ``steps`` of the nested grid, every arm from the same
    x_T, beside the floor at the same n. Returns the card."""
    s, e = run.settings, run.settings["evaluation"]
    payload = model_payload(converted, ema=False)                # no EMA in the conversion: the trained weights
    model, schedule = model_from_state(payload, device=converted.device)   # as it ships: fp16 weights
    floor = real_floor("mnist", e["n"], data_dir=run.data_dir)["fid"]
    ddim = [ladder_row({"ddim": model}, schedule, k, e["n"], e["batch"], e["seed"], run.data_dir)["ddim"]
            for k in e["steps"]]
    description = (f"Class-conditional MNIST v-prediction U-Net (base_channels {s['base_channels']}), mnist_cond "
                   f"re-parameterised to predict v: started from mnist_cond's weights and trained on the "
                   f"{s['teacher_steps']}-step nested grid (lesson_lib.diffusion.distillation.sampler_timesteps) to "
                   f"give mnist_cond's x0_hat; the teacher that progressive distillation (Salimans & Ho 2022) halves "
                   f"into mnist_distilled_N; sampled with DDIM; fp16 weights.")
    card = run.card(TEACHER, "diffusion", description, model, {"n": e["n"], "fid_floor": floor, "ddim": ddim},
                    weights_dir, model_config=dict(model.config), prediction=model.prediction, schedule=SCHEDULE,
                    sampling={"sampler": "ddim", "steps": s["teacher_steps"], "grid": "distillation"}, settings=s,
                    objective=converted.objective.config())
    return [run.save(payload, weights_dir, TEACHER, card, overwrite)]


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
                       f"(Salimans & Ho 2022) of the shipped {s['teacher']} (a v-prediction U-Net re-parameterised "
                       f"from mnist_cond) from its {s['teacher_steps']} steps; fp16 weights.")
        card = run.card(f"mnist_distilled_{steps}", "diffusion", description, model,
                        {"n": e["n"], "fid_floor": floor, **row}, weights_dir,
                        model_config=dict(model.config), prediction=model.prediction, schedule=SCHEDULE,
                        sampling={"sampler": "ddim", "steps": steps, "grid": "distillation"}, settings=s,
                        objective=trainer.objective.config())
        cards.append(run.save(payload, weights_dir, f"mnist_distilled_{steps}", card, overwrite))
    return cards


TEACHER_RECIPE = Recipe(TEACHER, "mnist", (TEACHER,), TEACHER_SETTINGS, convert, export_teacher,
                        "mnist_v_teacher: mnist_cond re-parameterised to predict v, the teacher of lessons 7 and 9, "
                        "about 49 min on one CPU thread")
RECIPE = Recipe("mnist_distilled", "mnist", tuple(f"mnist_distilled_{n}" for n in STUDENTS), SETTINGS, halve,
                export,
                "mnist_distilled_{8,4,2,1}: progressive distillation of mnist_v_teacher, 47 min on two CPU threads")
