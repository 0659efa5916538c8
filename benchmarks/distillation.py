"""Progressive distillation on MNIST: the ladder table of lesson 7's students.

    python benchmarks/distillation.py table --out runs/mnist_distilled-full --n 500   # FID / class accuracy vs calls

The students are made by their recipe (lesson_lib/recipes/distilled.py), not here:

    python -m lesson_lib.train --recipe mnist_distilled --export lesson_lib/weights   # resumable; 2 cores ~1 h

``table`` reads that run's folder (the v teacher ``teacher_128.pt`` and every ``student_N.pt``) and
measures, for each number of network calls, FID and class accuracy of the student on its own steps,
of DDIM of the teacher on the same steps and (on 1, 2, 4, 8 steps) of DDIM of the shipped ``mnist_cond``
on the same grid, beside the real-vs-real floor at the same n (:func:`lesson_lib.recipes.distilled.ladder`).
It writes ``--out``/``--json`` too; ``docs/distillation_table.json`` (read by lesson 7) is such a file.
"""

import argparse
import json
from pathlib import Path

import torch

from lesson_lib.cards import hardware
from lesson_lib.recipes.distilled import ladder


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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["table"])
    p.add_argument("--out", default="runs/mnist_distilled-full", help="the run folder of the recipe mnist_distilled")
    p.add_argument("--n", type=int, default=500, help="samples per FID")
    p.add_argument("--calls", type=int, nargs="+", default=None,
                   help="only these rows of the ladder (default: every student and the teacher)")
    p.add_argument("--json", default="table.json", help="file name under --out for the table")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    distillation_table(args.out, args.n, **({} if args.calls is None else {"calls": args.calls}),
                       json_name=args.json, threads=args.threads)


if __name__ == "__main__":
    main()
