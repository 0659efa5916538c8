"""Build the exercise notebooks from the solution notebooks.

Each ``solutions/NN_name.ipynb`` is the single source of truth for one lesson's exercises.
Inside its code cells, the parts a student must write are marked nbgrader-style::

    def linear_betas(T, beta_start=1e-4, beta_end=0.02):
        \"\"\"...\"\"\"
        ### BEGIN SOLUTION
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        ### END SOLUTION

``generate`` writes ``exercises/NN_name.ipynb`` with every such region replaced, at the
region's indentation, by::

        # YOUR CODE HERE
        raise NotImplementedError("Exercise: implement this (see the docstring above).")

and with all outputs and execution counts cleared; ``check`` fails (exit code 1) when an
exercise notebook differs from what ``generate`` would write. The output is byte-for-byte
reproducible, so ``check`` can run in CI::

    python -m lesson_lib.course.assignments generate [--solutions DIR] [--exercises DIR]
    python -m lesson_lib.course.assignments check    [--solutions DIR] [--exercises DIR]
"""

import argparse
import ast
import copy
import json
import re
import sys
from pathlib import Path

import nbformat

from . import pairing

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: implement this (see the docstring above).")'
NOTICE_ID = "generated-notice"

_MARKER = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>### (?:BEGIN|END) SOLUTION)[ \t]*$")


class RegionError(ValueError):
    """A solution notebook whose BEGIN/END SOLUTION markers do not pair up."""


def strip_solutions(source, where="this cell"):
    """Replace every ``### BEGIN SOLUTION ... ### END SOLUTION`` region of a cell's source by
    the ``# YOUR CODE HERE`` stub, indented like the BEGIN line. ``where`` names the cell in
    error messages."""
    out, begin_line, indent = [], None, ""
    for number, line in enumerate(source.split("\n"), start=1):
        match = _MARKER.match(line)
        if match is None and ("BEGIN SOLUTION" in line or "END SOLUTION" in line):
            raise RegionError(f"{where}, line {number}: write the marker alone on its line as "
                              f"'{BEGIN}' or '{END}', got {line.strip()!r}")
        if match and match["marker"] == BEGIN:
            if begin_line is not None:
                raise RegionError(f"{where}, line {number}: '{BEGIN}' inside the region opened on "
                                  f"line {begin_line}; close it with '{END}' first")
            begin_line, indent = number, match["indent"]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}{STUB}"]
        elif match:
            if begin_line is None:
                raise RegionError(f"{where}, line {number}: '{END}' without a '{BEGIN}' before it")
            begin_line = None
        elif begin_line is None:
            out.append(line)
    if begin_line is not None:
        raise RegionError(f"{where}, line {begin_line}: '{BEGIN}' has no matching '{END}'")
    return "\n".join(out)


def make_exercise(nb, solution_name):
    """The exercise version of solution notebook ``nb`` (a new notebook; ``nb`` is unchanged)."""
    nb = copy.deepcopy(nb)
    for index, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        where = f"{solution_name}, cell {index}"
        cell.source = strip_solutions(cell.source, where)
        if cell.source != "":
            try:
                ast.parse(cell.source)
            except SyntaxError as error:
                if not cell.source.lstrip().startswith(("%", "!")):
                    raise RegionError(f"{where}: the exercise cell is not valid Python after replacing "
                                      f"the solution regions ({error.msg}, line {error.lineno}); put "
                                      f"the markers around whole statements") from None
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)  # timings recorded by nbclient
    notice = nbformat.v4.new_markdown_cell(
        f"*Generated from `{solution_name}` by `python -m lesson_lib.course.assignments generate`. "
        f"Course maintainers: edit the solution notebook, not this file.*")
    if nb.get("nbformat_minor", 0) >= 5:
        notice["id"] = NOTICE_ID
    else:
        notice.pop("id", None)
    nb.cells.insert(0, notice)
    return nb


def render(nb):
    """The notebook as text, in nbformat's fixed layout (sorted keys, indent 1), with a
    trailing newline, so that the same notebook always gives the same bytes."""
    text = nbformat.writes(nb, version=nbformat.NO_CONVERT)
    return text if text.endswith("\n") else text + "\n"


def exercise_text(solution_path):
    """The exact text that ``generate`` writes for one solution notebook."""
    solution_path = Path(solution_path)
    data = json.loads(solution_path.read_text(encoding="utf-8"))
    if (data.get("nbformat"), data.get("nbformat_minor", 0)) >= (4, 5):
        for index, cell in enumerate(data.get("cells", []), start=1):
            cell.setdefault("id", f"cell-{index}")  # else nbformat would invent random ids
    nb = nbformat.reads(json.dumps(data), as_version=4)
    name = f"{solution_path.parent.name}/{solution_path.name}"
    return render(make_exercise(nb, name))


def _solution_paths(solutions_dir):
    solutions_dir = Path(solutions_dir)
    if not solutions_dir.is_dir():
        raise FileNotFoundError(f"no solutions folder at {solutions_dir}; run from the repository "
                                f"root or pass --solutions DIR")
    return sorted(solutions_dir.glob("*.ipynb"))


def generate(solutions_dir="solutions", exercises_dir="exercises"):
    """Write one exercise notebook per solution notebook; returns the paths written.
    Every solution is processed before anything is written, so a bad one changes nothing."""
    exercises_dir = Path(exercises_dir)
    texts = {exercises_dir / path.name: exercise_text(path) for path in _solution_paths(solutions_dir)}
    exercises_dir.mkdir(parents=True, exist_ok=True)
    for path, text in texts.items():
        path.write_bytes(text.encode("utf-8"))
    return list(texts)


def check(solutions_dir="solutions", exercises_dir="exercises"):
    """A list of problems, one line each, naming every exercise notebook that is missing,
    out of date, or has no solution notebook; empty when everything is in sync."""
    exercises_dir = Path(exercises_dir)
    problems, expected = [], set()
    for path in _solution_paths(solutions_dir):
        target = exercises_dir / path.name
        expected.add(target.name)
        if not target.exists():
            problems.append(f"{target} is missing (generated from {path})")
        elif target.read_bytes() != exercise_text(path).encode("utf-8"):
            problems.append(f"{target} is out of date with {path}")
    if exercises_dir.is_dir():
        for target in sorted(exercises_dir.glob("*.ipynb")):
            if target.name not in expected:
                problems.append(f"{target} has no solution notebook in {solutions_dir}; delete it "
                                f"or add the solution")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lesson_lib.course.assignments",
        description="Build exercises/*.ipynb from solutions/*.ipynb by replacing every "
                    f"'{BEGIN}' ... '{END}' region with a NotImplementedError stub.")
    parser.add_argument("command", choices=["generate", "check"],
                        help="generate: write the exercise notebooks; check: exit 1 if they are out of date")
    parser.add_argument("--solutions", default="solutions", help="folder of solution notebooks (default: solutions)")
    parser.add_argument("--exercises", default="exercises", help="folder of exercise notebooks (default: exercises)")
    args = parser.parse_args(argv)
    fix = "python -m lesson_lib.course.assignments generate"
    if (args.solutions, args.exercises) != ("solutions", "exercises"):
        fix += f" --solutions {args.solutions} --exercises {args.exercises}"
    try:
        if args.command == "generate":
            for path in generate(args.solutions, args.exercises):
                pairing.sync(path)              # the exercise's percent script, for review
                print(f"wrote {path} and {pairing.script_path(path).name}")
            return 0
        problems = check(args.solutions, args.exercises)
    except (RegionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"to fix, run: {fix}", file=sys.stderr)
        return 1
    print(f"exercises in {args.exercises} are in sync with {args.solutions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
