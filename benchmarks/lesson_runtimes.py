#!/usr/bin/env python3
"""How long each lesson notebook takes to run, in one profile, on this machine.

    python benchmarks/lesson_runtimes.py --profile ci [--lessons 00 03 04] [--threads 1]

Executes each notebook in ``notebooks/`` from a fresh kernel (the stored copy is not changed),
with ``DDPM_PROFILE`` set to ``--profile``, and prints a Markdown table: wall time of the whole
notebook and of its slowest cell. ``--lessons`` picks notebooks by the prefix of their file name
(``00``, ``01b``, ``04``); without it every lesson runs. ``--threads`` sets ``OMP_NUM_THREADS``
for the kernel (default: leave it as it is). Datasets are read from ``$DDPM_DATA_DIR`` when set.

The figures depend on the machine and on what else runs on it: README.md and docs/benchmarks.md
record them with the hardware they were measured on.
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def lesson_notebooks(prefixes=None):
    """The lesson notebooks, sorted by name; only those whose name starts with one of ``prefixes``."""
    found = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    if prefixes:
        found = [p for p in found if any(p.name.startswith(f"{prefix}_") for prefix in prefixes)]
        missing = [x for x in prefixes if not any(p.name.startswith(f"{x}_") for p in found)]
        if missing:
            raise SystemExit(f"--lessons: no notebook in {NOTEBOOKS} starts with {missing}; "
                             f"choose from {[p.name.split('_')[0] for p in sorted(NOTEBOOKS.glob('[0-9]*.ipynb'))]}")
    return found


def time_notebook(path, profile, threads=None, timeout=3600):
    """Run ``path`` from a fresh kernel in ``profile``; (total seconds, slowest cell's seconds, its index)."""
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, DDPM_PROFILE=profile, MPLBACKEND="Agg")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cell_times = {}

    class Timed(NotebookClient):
        async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
            start = time.perf_counter()
            result = await super().async_execute_cell(cell, cell_index, *args, **kwargs)
            cell_times[cell_index] = time.perf_counter() - start
            return result

    client = Timed(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update(env)            # the kernel inherits this process's environment
    try:
        start = time.perf_counter()
        client.execute()
        total = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(saved)
    slowest = max(cell_times, key=cell_times.get)
    return total, cell_times[slowest], slowest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("ci", "cpu", "gpu"), default="ci")
    parser.add_argument("--lessons", nargs="*", help="notebook name prefixes, e.g. 00 03 04 (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the kernel")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    args = parser.parse_args(argv)

    rows = []
    for path in lesson_notebooks(args.lessons):
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        total, slowest, index = time_notebook(path, args.profile, args.threads, args.timeout)
        rows.append((path.name, total, slowest, index))
    print(f"profile {args.profile}; {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
          f"OMP_NUM_THREADS={args.threads or os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print()
    print("| notebook | wall time | slowest cell |")
    print("|---|---:|---:|")
    for name, total, slowest, index in rows:
        print(f"| {name} | {total / 60:.1f} min ({total:.0f} s) | cell {index}: {slowest:.0f} s |")


if __name__ == "__main__":
    main()
