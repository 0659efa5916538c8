"""Reading a submission in a separate process, so that no notebook can exhaust the grader.

A notebook is untrusted data, and parsing it can take a lot of memory: a few megabytes of deeply
nested code need gigabytes of syntax tree, and one JSON file can hold hundreds of megabytes of
outputs. So the grader never parses a submission in its own process. :func:`read_submission`
runs :func:`summary` in a child process (``python -m lesson_lib.course.reader NOTEBOOK``) limited
to :data:`READER_MEMORY_MB` of memory and :data:`READER_SECONDS` of CPU time, which answers with
plain data only: the kept cells, the names, the notes, and the flags and fingerprints of every
function (:mod:`lesson_lib.course.notebook`, :mod:`lesson_lib.course.flags`). A notebook that
exhausts the child is graded 0 with that reason; the grader's own memory stays what it was.

This module does not import torch.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from lesson_lib.course import flags
from lesson_lib.course.notebook import defined_names, metadata_lesson, read_definitions, read_notebook

READER_MEMORY_MB = 3072         # address space of the process that parses a notebook
READER_SECONDS = 120            # and its CPU time


def summary(path):
    """Everything the grader needs from the notebook at ``path``, as plain data: ``error``
    (None, or why it cannot be read), ``metadata_lesson`` and ``metadata_note``
    (:func:`metadata_lesson`), and from :func:`read_definitions` the ``cells``, ``names``,
    ``notes`` and ``failed`` (cell -> the names it seems to define), with the flags and
    fingerprints of every function (:mod:`lesson_lib.course.flags`)."""
    nb, error = read_notebook(path)
    if error:
        return {"error": error}
    lesson, note = metadata_lesson(nb)
    submission = read_definitions(nb)
    return {"error": None, "metadata_lesson": lesson, "metadata_note": note, "cells": submission["cells"],
            "constants": submission["constants"], "names": sorted(submission["names"]), "notes": submission["notes"],
            "failed": {label: defined_names(source) for label, source in submission["failed"].items()},
            "flags": flags.by_function(submission), "helpers": flags.helpers(submission),
            "fingerprints": flags.fingerprints(submission)}


def _limits(memory_mb):
    def apply():
        try:
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
            resource.setrlimit(resource.RLIMIT_CPU, (READER_SECONDS, READER_SECONDS))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ImportError, ValueError, OSError):
            pass
    return apply


def read_submission(path, memory_mb=READER_MEMORY_MB):
    """:func:`summary` of the notebook at ``path``, computed in a child process limited to
    ``memory_mb`` of memory and :data:`READER_SECONDS` of time, so that no notebook can exhaust
    the grader. Never raises for a bad file: ``error`` then says why."""
    command = [sys.executable, "-s", "-B", "-m", "lesson_lib.course.reader", os.path.abspath(path)]
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=package_root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        done = subprocess.run(command, capture_output=True, timeout=READER_SECONDS + 10, env=env,
                              stdin=subprocess.DEVNULL, cwd=package_root,
                              preexec_fn=_limits(memory_mb) if os.name == "posix" else None)
    except subprocess.TimeoutExpired:
        return {"error": f"could not read the notebook: parsing it took more than {READER_SECONDS} s"}
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        if "MemoryError" in tail[0] or done.returncode == -signal.SIGKILL:
            why = f"it needs more memory than the grader's reader allows ({memory_mb} MB)"
        elif done.returncode == -getattr(signal, "SIGXCPU", -1):
            why = f"parsing it took more than {READER_SECONDS} s of CPU time"
        elif done.returncode < 0:
            why = f"Python's parser crashed on it ({signal.Signals(-done.returncode).name})"
        else:
            why = tail[0][-200:]
        return {"error": f"could not read the notebook: {why}"}
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {"error": "could not read the notebook: the reader's answer was not valid JSON"}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(summary(sys.argv[1])))
