"""Progressive distillation on MNIST: the students of lesson 7 and their ladder table.

    python benchmarks/distillation.py train --out runs/distill --threads 2   # resumable; 2 cores ~1 h
    python benchmarks/distillation.py table --out runs/distill --n 500     # FID / class accuracy vs calls
    python benchmarks/distillation.py export --out runs/distill           # writes lesson_lib/weights/mnist_distilled_*

The recipe (chosen for a 2-core CPU, see docs/benchmarks.md): the shipped ``mnist_cond`` predicts
eps, whose x_hat is useless at few steps (lesson 7, section 2), so it is first re-parameterised as a
v-prediction network of the same architecture that starts from its weights: ``Distillation`` with
``teacher_steps=1`` on the 128-step grid, whose target is ``mnist_cond``'s own x_hat, so the network
learns the same denoiser with another output. That network is the teacher on 128 DDIM steps; it is
then halved 128 -> 64 -> ... -> 1 by :func:`lesson_lib.training.distill.progressive_distillation`.
``--base-channels 16`` trains a smaller v network from scratch instead; the earlier recipe built that
way also used ``--teacher-steps 64 --convert-steps 1500`` and lr 1e-3 / 2e-4 (docs/benchmarks.md, section 8).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lesson_lib.data.images import load_mnist  # noqa: E402
from lesson_lib.diffusion.distillation import Distillation  # noqa: E402
from lesson_lib.models.unet import UNet  # noqa: E402
from lesson_lib.pretrained import load_pretrained  # noqa: E402
from lesson_lib.training.distill import progressive_distillation  # noqa: E402
from lesson_lib.training.trainer import TrainConfig, Trainer  # noqa: E402

RECIPE = {"teacher_steps": 128, "base_channels": 32, "convert_steps": 1000, "convert_lr": 2e-4,
          "halving_steps": 512, "halving_lr": 1e-4, "batch_size": 32, "weighting": "snr_trunc"}


def log(out, message):
    line = f"{time.strftime('%H:%M:%S')} {message}"
    print(line, flush=True)
    with open(Path(out) / "log.txt", "a") as f:
        f.write(line + "\n")


def v_teacher(shipped, base_channels):
    """The shipped model's architecture as v-prediction without dropout. At the shipped width it
    starts from the shipped weights (the features carry over; only the output's meaning changes,
    which the conversion teaches); at another width it starts from scratch."""
    config = dict(shipped.config, base_channels=base_channels, dropout=0.0, prediction="v")
    model = UNet.from_config(config)
    if base_channels == shipped.config["base_channels"]:
        model.load_state_dict(shipped.state_dict())
    return model


def convert(out, recipe, data, labels, shipped, schedule):
    """Distil the shipped eps model's x_hat into the v-prediction teacher on its own grid."""
    torch.manual_seed(0)
    model = v_teacher(shipped, recipe["base_channels"])
    steps = recipe["convert_steps"]
    config = TrainConfig(batch_size=recipe["batch_size"], lr=recipe["convert_lr"], warmup_steps=50,
                         lr_decay_steps=steps, ema_decay=0.0, seed=1, log_every=25)
    objective = Distillation(schedule, shipped, recipe["teacher_steps"], recipe["weighting"], teacher_steps=1)
    trainer = Trainer(model, data, objective, config, cond={"y": labels}, device="cpu",
                      checkpoint_path=Path(out) / f"teacher_{recipe['teacher_steps']}.pt")
    trainer.resume()
    trainer.run(steps, progress=False, checkpoint_every=50)
    log(out, f"teacher_{recipe['teacher_steps']} (v, conversion): loss {trainer.history[0][1]:.4f} -> {trainer.history[-1][1]:.4f}")
    return trainer.model.eval()


def train(out, recipe, threads=1):
    torch.set_num_threads(threads)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "recipe.json").write_text(json.dumps(dict(recipe, threads=threads), indent=2))
    data, labels = load_mnist("train", as_uint8=True)
    shipped, schedule = load_pretrained("mnist_cond")
    log(out, "start: conversion of mnist_cond into the v teacher")
    teacher = convert(out, recipe, data, labels, shipped, schedule)
    config = TrainConfig(batch_size=recipe["batch_size"], lr=recipe["halving_lr"], seed=2, log_every=16)

    def done(n, trainer):
        log(out, f"student_{n}: loss {trainer.history[0][1]:.4f} -> {trainer.history[-1][1]:.4f} "
                 f"after {trainer.step} steps")

    progressive_distillation(teacher, schedule, data, {"y": labels}, start_steps=recipe["teacher_steps"],
                             end_steps=1, train_steps=recipe["halving_steps"], config=config,
                             weighting=recipe["weighting"], checkpoint_dir=out, device="cpu",
                             on_student=done)
    log(out, "finished")


def load_run(out):
    """The v teacher (``teacher_{N}.pt``) and every finished student of ``out``: {steps: (model, state)}."""
    from lesson_lib.pretrained import model_from_state
    from lesson_lib.training.checkpoint import load_checkpoint
    models = {}
    for path in sorted(Path(out).glob("*_*.pt")):
        n = int(path.stem.split("_")[1])
        state = load_checkpoint(path, map_location="cpu")
        models[n] = (model_from_state(state, ema=False)[0], state)
    return models


def evaluate(model, schedule, steps, n, seed=0, batch=250):
    """FID (classifier features, against n test images) and class accuracy of n samples of
    ``model`` with DDIM on ``steps`` steps of the nested grid, labels 0..9 in turn."""
    from lesson_lib.evaluation.fid import compute_metrics
    from lesson_lib.evaluation.judges import class_accuracy
    from lesson_lib.training.distill import sample_student
    labels = torch.arange(n) % 10
    generator = torch.Generator().manual_seed(seed)
    images = torch.cat([sample_student(model, schedule, steps, (len(y), 1, 28, 28), y, generator)
                        for y in labels.split(batch)])
    return {"steps": steps, "fid": compute_metrics(images)["fid"],
            "accuracy": class_accuracy(images, labels)["accuracy"]}, images


def distillation_table(out="runs/distill", n=500, baseline_steps=(1, 2, 4, 8, 16, 32, 64, 128),
                       shipped_steps=(1, 2, 4, 8), json_name="table.json", threads=1):
    """The distillation ladder: FID and class accuracy against the number of network calls, for
    each student (at its own steps), for DDIM of the same teacher at the same steps and (at
    ``shipped_steps``) for DDIM of the shipped mnist_cond on the same grid, with the real-vs-real
    floor at the same n. Every sampler starts from the same x_T. Prints a table and returns its
    rows (also out/``json_name``)."""
    from lesson_lib.evaluation.fid import real_floor
    torch.set_num_threads(threads)
    models = load_run(out)
    shipped, schedule = load_pretrained("mnist_cond")
    floor = real_floor("mnist", n)["fid"]
    teacher = models[max(models)][0]
    rows = []
    for steps in baseline_steps:
        if steps in models:
            student = evaluate(models[steps][0], schedule, steps, n)[0] if steps != max(models) else None
            ddim = evaluate(teacher, schedule, steps, n)[0]
            original = evaluate(shipped, schedule, steps, n)[0] if steps in shipped_steps else None
            rows.append({"calls": steps, "student": student, "ddim": ddim, "ddim_mnist_cond": original})
            print(f"{steps:>5}  student {_fmt(student)}   DDIM {_fmt(ddim)}   DDIM of mnist_cond {_fmt(original)}   "
                  f"floor {floor:.3f}", flush=True)
    result = {"n": n, "floor": floor, "rows": rows, "recipe": json.loads((Path(out) / "recipe.json").read_text()),
              "hardware": f"2-core x86_64 CPU, {threads} thread(s)", "torch": torch.__version__}
    (Path(out) / json_name).write_text(json.dumps(result, indent=2))
    return result


def _fmt(row):
    return "      -        -" if row is None else f"FID {row['fid']:7.3f} acc {row['accuracy']:.3f}"


def _wall_time(out):
    """From the first to the last line of out/log.txt (conversion and every halving), as text."""
    stamps = [line.split()[0] for line in (Path(out) / "log.txt").read_text().splitlines() if line.strip()]
    seconds = [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in (t.split(":") for t in (stamps[0], stamps[-1]))]
    return f"{((seconds[1] - seconds[0]) % 86400) / 60:.0f} min (conversion and all halvings, from {out}/log.txt)"


def export(out="runs/distill", names=(8, 4, 2, 1), weights_dir=None):
    """Write the students on ``names`` steps to lesson_lib/weights/mnist_distilled_{N} (fp16,
    hash-checked cards), with the table's figures when out/table.json exists."""
    from lesson_lib.pretrained import save_artifact
    models = load_run(out)
    table = json.loads((Path(out) / "table.json").read_text()) if (Path(out) / "table.json").exists() else None
    recipe = json.loads((Path(out) / "recipe.json").read_text())
    weights_dir = Path(weights_dir or Path(__file__).resolve().parents[1] / "lesson_lib" / "weights")
    for n in names:
        model, state = models[n]
        fp16 = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
        artifact = {"model_class": state["model_class"], "model_config": state["model_config"],
                    "betas": state["betas"], "ema": {"model": fp16}, "step": state["step"],
                    "train_config": state["train_config"], "objective": state["objective"],
                    "history": state["history"]}
        row = None if table is None else next((r for r in table["rows"] if r["calls"] == n), None)
        card = {"kind": "diffusion", "name": f"mnist_distilled_{n}", "dataset": "mnist",
                "description": (f"Class-conditional MNIST student sampled with DDIM on {n} step(s) of the nested "
                                f"grid (lesson_lib.diffusion.distillation.sampler_timesteps), by progressive "
                                f"distillation (Salimans & Ho 2022) from {recipe['teacher_steps']} steps of a "
                                f"v-prediction U-Net (base_channels {recipe['base_channels']}) that was "
                                f"re-parameterised from mnist_cond's predictions on that grid; fp16 weights."),
                "model_config": state["model_config"], "prediction": state["model_config"]["prediction"],
                "sampling_steps": n, "schedule": "linear, T=1000, beta 1e-4 -> 0.02",
                "recipe": recipe, "objective": state["objective"],
                "hardware": f"2-core x86_64 CPU shared with other jobs, {recipe.get('threads', 1)} thread(s)", "torch": torch.__version__,
                "training_wall_time": _wall_time(out),
                "command": f"python benchmarks/distillation.py train --out {out} --convert-steps "
                           f"{recipe['convert_steps']} --halving-steps {recipe['halving_steps']} --base-channels "
                           f"{recipe['base_channels']} --teacher-steps {recipe['teacher_steps']} --threads "
                           f"{recipe.get('threads', 1)} && "
                           f"python benchmarks/distillation.py table --out {out} && "
                           f"python benchmarks/distillation.py export --out {out}",
                "evaluation": None if row is None else {"n": table["n"], "fid_floor": table["floor"],
                                                         "student": row["student"], "ddim_same_steps": row["ddim"],
                                                         "ddim_mnist_cond_same_steps": row.get("ddim_mnist_cond")}}
        save_artifact(artifact, weights_dir / f"mnist_distilled_{n}.pt", card)
        print(f"wrote mnist_distilled_{n}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["train", "table", "export"])
    p.add_argument("--out", default="runs/distill")
    p.add_argument("--n", type=int, default=500, help="samples per FID (table)")
    p.add_argument("--calls", type=int, nargs="+", default=None,
                   help="only these rows of the ladder (table; default: every student and the teacher)")
    p.add_argument("--json", default="table.json", help="file name under --out for the table (table)")
    p.add_argument("--convert-steps", type=int, default=RECIPE["convert_steps"],
                   help="training steps of the conversion of mnist_cond into the v teacher (train)")
    p.add_argument("--halving-steps", type=int, default=RECIPE["halving_steps"],
                   help="training steps per halving (train)")
    p.add_argument("--base-channels", type=int, default=RECIPE["base_channels"],
                   help="width of the v teacher; the shipped width (32) starts from mnist_cond's weights (train)")
    p.add_argument("--teacher-steps", type=int, default=RECIPE["teacher_steps"],
                   help="DDIM steps of the first teacher, a power of 2 (train)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (train, table)")
    args = p.parse_args(argv)
    if args.what == "train":
        train(args.out, dict(RECIPE, convert_steps=args.convert_steps, halving_steps=args.halving_steps,
                             base_channels=args.base_channels, teacher_steps=args.teacher_steps), args.threads)
    elif args.what == "table":
        distillation_table(args.out, args.n, **({} if args.calls is None else {"baseline_steps": args.calls}),
                           json_name=args.json, threads=args.threads)
    else:
        export(args.out)


if __name__ == "__main__":
    main()
