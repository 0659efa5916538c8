"""What the lesson benchmarks share: the table files they write (docs/latent_table.json, docs/dit_table.json, ...): one JSON
file per benchmark, one section per part, each section stamped with the hardware and torch version.

A file is marked with the benchmark that writes it; another benchmark's file (or any other file) is refused,
so that a mistyped ``--json`` never replaces a table it did not make."""

import json
import os
import time

import torch

from lesson_lib.cards import hardware
from lesson_lib.files import atomic_write


def read_table(path, mark):
    """The table in ``path`` written by benchmark ``mark`` ({"benchmark": mark} when there is none yet)."""
    if not os.path.exists(path):
        return {"benchmark": mark}
    with open(path) as f:
        table = json.load(f)
    if table.get("benchmark") != mark:
        raise SystemExit(f"--json {path} was not written by {mark}; name a new file")
    return table


def write_section(path, mark, name, section):
    """Write ``section`` as part ``name`` of benchmark ``mark``'s table in ``path``, keeping its other parts."""
    table = read_table(path, mark)
    table[name] = {**section, "hardware": hardware("cpu"), "torch": torch.__version__}
    atomic_write(path, lambda f: f.write((json.dumps(table, indent=1) + "\n").encode()))


def timed(fn, repeats):
    """Seconds per call of ``fn()``, averaged over ``repeats`` calls after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats
