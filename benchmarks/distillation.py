"""Progressive distillation on MNIST: the ladder table of lesson 7's students.

    python benchmarks/distillation.py table --out runs/mnist_distilled-full --n 500   # FID / class accuracy vs calls

The students are made by their recipe (lesson_lib/recipes/distilled.py), not here:

    python -m lesson_lib.train --recipe mnist_distilled --export lesson_lib/weights   # resumable; 2 cores ~1 h

``table`` reads that run's folder (every ``student_N.pt``) and measures, for each number of network
calls, FID and class accuracy of the student on its own steps, of DDIM of their teacher (the shipped
``mnist_v_teacher``) on the same steps and (on 1, 2, 4, 8 steps) of DDIM of the shipped ``mnist_cond``
on the same grid, beside the real-vs-real floor at the same n (:func:`lesson_lib.recipes.distilled.ladder`).
It writes ``--out``/``--json`` too; ``docs/distillation_table.json`` (read by lesson 7) is such a file.

    OMP_NUM_THREADS=1 python benchmarks/distillation.py shipped --n 5000 --json docs/distillation_table_n5000.json

``shipped`` needs no run folder: it measures the shipped students ``mnist_distilled_{1,2,4,8}`` on their own
steps, the consistency model ``mnist_consistency`` (lesson 9) on 1, 2, 4 and 8 calls, DDIM of their teacher
``mnist_v_teacher`` on 1, 2, 4 and 8 steps, and DDIM of ``mnist_cond`` on 1, 2, 4, 8, 16 and 50 steps of the
same nested grid, every arm from the same x_T, with FID, KID, FID_inf, FID against n and class accuracy beside
the floor at the same n (benchmarks/sample_size.py; docs/benchmarks.md, section 10). Lesson 9's headline
figure reads the table. The samples of each arm are kept (``$SAMPLE_SIZE_CACHE``) under a key that holds the
first digits of the shipped weights' sha256, so a re-made model is sampled afresh. One column at other step
counts, the v teacher on the 128 steps it was distilled from (lesson 7's aim (b)):

    python benchmarks/distillation.py shipped --n 5000 --threads 2 --students --consistency-steps \
        --mnist-cond-steps --v-teacher-steps 128 --json docs/distillation_v_teacher128_n5000.json

When one model is re-made, ``--update`` measures its column again and keeps the table's other cells, e.g. the
students (whose samples are no longer those of the cache, since their sha256 changed):

    python benchmarks/distillation.py shipped --n 5000 --threads 2 --consistency-steps --v-teacher-steps \
        --mnist-cond-steps --update --json docs/distillation_table_n5000.json
"""

import argparse
import json
from pathlib import Path

import time

import torch

from lesson_lib.cards import hardware
from lesson_lib.pretrained import load_pretrained, model_card
from lesson_lib.recipes.consistency import sample_consistency
from lesson_lib.recipes.distilled import STUDENTS, ladder
from lesson_lib.training.distill import sample_student
from sample_size import FEATURES, Reference, cached, measure, rounded, verdict

MNIST_COND_STEPS = (1, 2, 4, 8, 16, 50)
CALLS = (1, 2, 4, 8)          # of the consistency model and of DDIM of the v teacher


def distillation_table(out="runs/mnist_distilled-full", n=500, calls=(1, 2, 4, 8, 16, 32, 64, 128),
                       json_name="table.json", threads=1):
    """The ladder of the run in ``out`` (printed, and written to out/``json_name``); returns it."""
    torch.set_num_threads(threads)
    result = ladder(out, n, calls, log=lambda line: print(line, flush=True))
    marker = Path(out) / "recipe.json"
    held = json.loads(marker.read_text()) if marker.exists() else {}
    result.update(recipe=held.get("recipe"), settings=held.get("settings"), hardware=hardware("cpu"),
                  torch=torch.__version__)
    (Path(out) / json_name).write_text(json.dumps(result, indent=2))
    return result


def shipped_table(n=5000, seed=0, batch=100, data_dir=None, json_path=None, students=STUDENTS,
                  consistency_steps=CALLS, v_teacher_steps=CALLS, mnist_cond_steps=MNIST_COND_STEPS, update=False,
                  log=print):
    """The ladder of the shipped students and of DDIM of mnist_cond on the nested grid, at n samples per arm
    (labels 0..9 in turn, one generator seeded with ``seed`` per arm, so every arm starts from the same x_T).
    Each ``*_steps`` (and ``students``) names the step counts of one column; an empty one leaves it out.
    With ``update``, the table already in ``json_path`` (the same n and seed) keeps the cells not measured
    now, and the ones measured replace theirs (e.g. after a model is re-made)."""
    start = time.perf_counter()
    held = json.loads(Path(json_path).read_text()) if update else None
    if held is not None and (held["n"], held["seed"]) != (n, seed):
        raise ValueError(f"--update: {json_path} holds n = {held['n']}, seed {held['seed']}, not n = {n}, seed {seed}; "
                         f"give the same --n and --seed, or another --json")
    reference = Reference(data_dir)
    floor = reference.floor(n)
    log(f"real-vs-real floor at n = {n}: FID {floor['fid']:.3f}, KID {floor['kid']:.5f}, "
        f"FID_inf {floor['fid_infinity']:.3f}")
    labels = torch.arange(n) % 10
    arms = [("student", steps, f"mnist_distilled_{steps}") for steps in sorted(students)]
    arms += [("consistency", steps, "mnist_consistency") for steps in consistency_steps]
    arms += [("ddim_v_teacher", steps, "mnist_v_teacher") for steps in v_teacher_steps]
    arms += [("ddim_mnist_cond", steps, "mnist_cond") for steps in mnist_cond_steps]
    rows = {} if held is None else {row["calls"]: row for row in held["rows"]}
    result = dict(table="distillation and consistency, shipped models", n=n, seed=seed, batch=batch, floor=floor, rows=[],
                  grid="nested (lesson_lib.diffusion.distillation.sampler_timesteps), DDIM eta = 0, x0 clipped",
                  feature_network=FEATURES, judge="the same network's class prediction",
                  hardware=hardware("cpu"), torch=torch.__version__)
    if held is not None:
        result["updated"] = held.get("updated", []) + [{"arms": [f"{key} {steps}" for key, steps, _ in arms],
                                                        "hardware": result["hardware"], "torch": torch.__version__}]
        result["hardware"], result["torch"] = held["hardware"], held["torch"]
    for key, steps, name in arms:
        model, schedule = load_pretrained(name)
        draw = sample_consistency if key == "consistency" else sample_student

        def make():
            generator = torch.Generator().manual_seed(seed)
            return torch.cat([draw(model, schedule, steps, (len(y), *model.data_shape), y, generator).cpu()
                              for y in labels.split(batch)]), labels

        # the keys of the first arms measured (mnist_cond's) carry no hash; every other arm's does
        tag = "" if key == "ddim_mnist_cond" else "-" + model_card(name)["sha256"][:8]
        images, _, seconds = cached(f"{name}{tag}-{'consistency' if key == 'consistency' else 'nested'}{steps}"
                                    f"-n{n}-seed{seed}", make)
        arm = dict(model=name, steps=steps, **measure(images, labels, reference, seconds))
        rows.setdefault(steps, {"calls": steps, **dict.fromkeys(("student", "consistency", "ddim_v_teacher",
                                                                 "ddim_mnist_cond"))})[key] = arm
        log(f"{key:>16} {steps:>2} steps: {verdict(arm, floor)}")
        result.update(rows=[rows[c] for c in sorted(rows)],
                      wall_time_s=time.perf_counter() - start + (0 if held is None else held["wall_time_s"]))
        if json_path:
            Path(json_path).write_text(json.dumps(rounded(result), indent=1) + "\n")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["table", "shipped"])
    p.add_argument("--out", default="runs/mnist_distilled-full", help="the run folder of the recipe mnist_distilled")
    p.add_argument("--n", type=int, default=None, help="samples per FID (table: default 500; shipped: a multiple of "
                   "10, default 5000)")
    p.add_argument("--seed", type=int, default=0, help="shipped: the seed of x_T (the same for every arm)")
    p.add_argument("--data", default=None, help="shipped: directory holding mnist.npz (else $DDPM_DATA_DIR)")
    p.add_argument("--students", type=int, nargs="*", default=sorted(STUDENTS),
                   help=f"shipped: the students, by their steps (default: {' '.join(map(str, sorted(STUDENTS)))}; none: "
                   "leave them out)")
    for column, steps in (("consistency", CALLS), ("v-teacher", CALLS), ("mnist-cond", MNIST_COND_STEPS)):
        p.add_argument(f"--{column}-steps", type=int, nargs="*", default=list(steps),
                       help=f"shipped: the calls of the {column} column on the nested grid (default: "
                       f"{' '.join(map(str, steps))}; none: leave it out)")
    p.add_argument("--calls", type=int, nargs="+", default=None,
                   help="only these rows of the ladder (default: every student and the teacher)")
    p.add_argument("--json", default="table.json", help="table: file name under --out for the table; "
                   "shipped: the path of the table (e.g. docs/distillation_table_n5000.json)")
    p.add_argument("--update", action="store_true", help="shipped: keep the cells of the table already in --json "
                   "that are not measured now (the same --n and --seed)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.what == "shipped":
        torch.set_num_threads(args.threads)
        n = 5000 if args.n is None else args.n
        if n < 10 or n % 10:
            p.error(f"--n must be a positive multiple of 10 (n/10 samples per class), got --n {n}")
        if args.update and not (args.json.endswith(".json") and Path(args.json).is_file()):
            p.error(f"--update keeps the cells of an existing table: --json must name one, got --json {args.json}")
        if set(args.students) - set(STUDENTS):
            p.error(f"--students: the shipped students take {sorted(STUDENTS)} steps, got {args.students}")
        return shipped_table(n, args.seed, data_dir=args.data, json_path=None if args.json == "table.json" else args.json,
                             students=args.students, consistency_steps=args.consistency_steps,
                             v_teacher_steps=args.v_teacher_steps, mnist_cond_steps=args.mnist_cond_steps,
                             update=args.update, log=lambda line: print(line, flush=True))
    distillation_table(args.out, 500 if args.n is None else args.n, **({} if args.calls is None else {"calls": args.calls}),
                       json_name=args.json, threads=args.threads)


if __name__ == "__main__":
    main()
