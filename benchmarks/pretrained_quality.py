#!/usr/bin/env python3
"""Quality of the models shipped with the course, measured the way lesson 4 and the model
cards report it: FID and KID on the course classifier's features, class accuracy, the
real-data floor at the same n, and samples/s on this machine.

    python benchmarks/pretrained_quality.py [--n 1000] [--steps 100] [--device cpu]

Needs the datasets (DDPM_DATA_DIR or a download). Recorded figures: docs/benchmarks.md and
each model card (lesson_lib/weights/NAME.json).
"""
import argparse

import torch

from lesson_lib.evaluate import evaluate, format_table
from lesson_lib.pretrained import available, load_pretrained, model_card


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100, help="DDIM steps")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    for name in available():
        card = model_card(name)
        model, schedule = load_pretrained(name, device=args.device)
        print(f"== {name}: {card['description']}")
        print(format_table(evaluate(model, schedule, card["dataset"], args.n, "ddim", args.steps,
                                    args.device, progress=False)))
        print()


if __name__ == "__main__":
    main()
