"""Every notebook has a text twin: a jupytext "percent" script beside it, for review.

A notebook is JSON with its outputs inside, so a one-word change to a lesson shows up in a diff
among kilobytes of base64 figures. Beside every ``notebooks/``, ``solutions/`` and ``exercises/``
notebook lies ``NAME.py``, the same cells as a plain Python script (jupytext's percent format:
``# %%`` opens a code cell, ``# %% [markdown]`` a text cell whose lines start with ``# ``), and no
outputs. A change to a lesson is reviewed in the script; the notebook carries the outputs a reader
sees without running anything.

The script is a function of the notebook's cells (their type, source and tags) and nothing else:
no outputs, no execution timestamps, no jupytext version, so the same notebook gives the same
script on every machine::

    python -m lesson_lib.course.pairing sync  [FOLDER ...]   # write each script from its notebook
    python -m lesson_lib.course.pairing check [FOLDER ...]   # exit 1 and name each script that differs

``tests/test_pairing.py`` runs ``check`` on every notebook. One pair may differ: an exercise whose
notebook and script each hold the generated exercise plus a student's answers (the student wrote
in one of them; see :func:`lesson_lib.course.assignments.answers_only_twins`). ``check`` accepts it
and ``sync`` leaves it alone, since syncing could write over answers. To edit the script and carry the
change into the notebook instead, ``jupytext --sync FILE`` updates whichever of the two is older
(``jupytext.toml`` at the repository root pairs them with the same settings), then re-run the
notebook so its outputs match. ``python -m lesson_lib.course.assignments generate`` writes each
exercise's script with the exercise.
"""

import argparse
import copy
import sys
from pathlib import Path

from .colab import FOLDERS, notebooks

FORMAT = "py:percent"
# The same settings as jupytext.toml: only cell tags survive, nothing of the notebook's metadata.
METADATA = {"notebook_metadata_filter": "-all", "cell_metadata_filter": "tags,-all"}


def _jupytext():
    try:
        import jupytext
    except ImportError:
        raise SystemExit("the paired scripts need jupytext: pip install 'lesson_lib[test]' "
                         "(or pip install jupytext)") from None
    return jupytext


def script_path(notebook):
    """``folder/NAME.ipynb`` -> ``folder/NAME.py``."""
    return Path(notebook).with_suffix(".py")


def _script(nb):
    jupytext = _jupytext()
    nb = copy.deepcopy(nb)
    nb.metadata = {"jupytext": dict(METADATA)}
    return jupytext.writes(nb, fmt=FORMAT)


def script_text(notebook):
    """The percent script of the notebook at ``notebook`` (a path), as a string."""
    return _script(_jupytext().read(str(notebook)))


def script_of_text(text):
    """The percent script of a notebook given as its JSON text (e.g. one not written yet)."""
    return _script(_jupytext().reads(text, fmt="ipynb"))


def _an_exercise_with_answers(notebook):
    # Imported here, not at the top, because assignments imports this module (to write the
    # exercises' scripts).
    from .assignments import answers_only_twins
    return answers_only_twins(notebook)


def problems(notebook):
    """What is wrong with the notebook's script: [] when it exists and matches (or the pair is an
    exercise holding a student's answers), else one message."""
    script = script_path(notebook)
    if not script.exists():
        return [f"{script} is missing"]
    if script.read_text(encoding="utf-8") != script_text(notebook) and not _an_exercise_with_answers(notebook):
        return [f"{script} differs from {Path(notebook).name}"]
    return []


def sync(notebook):
    """Write the notebook's script; returns True when the file changed."""
    script, text = script_path(notebook), script_text(notebook)
    if script.exists() and script.read_text(encoding="utf-8") == text:
        return False
    script.write_text(text, encoding="utf-8")
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lesson_lib.course.pairing",
                                     description="Keep every notebook's jupytext percent script (NAME.py) "
                                                 "in step with the notebook (NAME.ipynb).")
    parser.add_argument("command", choices=("sync", "check"),
                        help="sync: write each script from its notebook; check: exit 1 if any script differs")
    parser.add_argument("folders", nargs="*", default=list(FOLDERS),
                        help="folders of notebooks (default: notebooks solutions exercises)")
    args = parser.parse_args(argv)
    paths = notebooks(args.folders)
    if not paths:
        parser.error(f"no notebooks found in {' '.join(args.folders)}")
    failed = 0
    for path in paths:
        if args.command == "sync":
            if problems(path) and sync(path):            # never over an exercise holding answers
                print(f"wrote {script_path(path)}")
        else:
            for message in problems(path):
                print(f"{message}; run python -m lesson_lib.course.pairing sync", file=sys.stderr)
                failed += 1
    if args.command == "check" and not failed:
        print(f"{len(paths)} notebooks match their scripts")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
