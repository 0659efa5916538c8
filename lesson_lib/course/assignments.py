"""Build the exercise notebooks from the solution notebooks, and give students a place for their work.

Each ``solutions/NN_name.ipynb`` is the single source of truth for one lesson's exercises. Inside
its code cells, the parts a student must write are marked nbgrader-style::

    def linear_betas(T, beta_start=1e-4, beta_end=0.02):
        \"\"\"...\"\"\"
        ### BEGIN SOLUTION
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        ### END SOLUTION

``generate`` writes ``exercises/NN_name.ipynb`` with every such region replaced, at the region's
indentation, by ``# YOUR CODE HERE`` and ``raise NotImplementedError("Exercise: ...")``, and with
all outputs and execution counts cleared, byte-for-byte reproducibly. ``check`` (the tests run it)
fails when an exercise differs from that, except by a student's answers inside the regions (and
outputs): those it reports without failing, so that the tests pass on a student's clone.
``check --strict`` fails on them too: the course's own exercises never hold answers.

Nothing a student wrote is overwritten. Students work in ``exercises/my_work/`` (ignored by git),
which ``start`` fills, never writing over a copy, and which nothing else touches. ``generate``
replaces an exercise only if it is what ``generate`` wrote, from this solution or an earlier one:
each exercise records the sha256 of its cells (:func:`cells_sha256`), so an edit shows, and an
edited exercise or script is refused unless ``--force``; a folder of solutions is refused even then::

    python -m lesson_lib.course.assignments start    [LESSON ...] [--exercises DIR]
    python -m lesson_lib.course.assignments generate [--solutions DIR] [--exercises DIR] [--force]
    python -m lesson_lib.course.assignments check    [--solutions DIR] [--exercises DIR] [--strict]

Why one module of about 430 lines: writing an exercise, recognising one (as written, edited or
answered) and the commands that act on them share one definition of what an exercise is; split
apart, each part would re-derive it.
"""

import argparse
import ast
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

import nbformat

from . import flags, pairing

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: implement this (see the docstring above).")'
NOTICE_ID = "generated-notice"
MY_WORK = "my_work"           # the students' folder inside exercises/ (in .gitignore)
COMMAND = "python -m lesson_lib.course.assignments"

_MARKER = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>### (?:BEGIN|END) SOLUTION)[ \t]*$")
_STUB_LINES = re.compile(r"^[ \t]*# YOUR CODE HERE\n[ \t]*" + re.escape(STUB) + "$", re.MULTILINE)
_LINK = re.compile(r"https?://[^\s\"'()\\]+")


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


def lesson_of(name):
    """The lesson id at the start of a notebook's name, or of what a student types:
    ``01_forward_process.ipynb`` -> "01", ``1b`` -> "01b" (numbers get two digits)."""
    head = re.match(r"[^_.]*", Path(name).name)[0]
    number = re.fullmatch(r"(\d+)([a-z]?)", head)
    return f"{int(number[1]):02d}{number[2]}" if number else head


def start_command(exercises_dir, lessons):
    """The command that copies ``lessons`` (e.g. "01 01b") of ``exercises_dir`` into my_work."""
    folder = "" if Path(exercises_dir) == Path("exercises") else f" --exercises {exercises_dir}"
    return f"{COMMAND} start {lessons}{folder}"


def my_work_path(exercise):
    """The student's own copy of an exercise notebook: ``exercises/NN.ipynb`` -> ``exercises/my_work/NN.ipynb``."""
    return Path(exercise).parent / MY_WORK / Path(exercise).name


def cells_sha256(nb):
    """The sha256 of a notebook's cells: their types and sources, not their outputs or metadata
    (which running a notebook changes), and with links left out (``python -m lesson_lib.course.colab
    sync`` rewrites them in place when the course moves). A notebook whose cells hash to what its
    notice records is, edits aside, what ``generate`` wrote."""
    cells = [[cell.cell_type, _LINK.sub("<link>", cell.source)] for cell in nb.cells]
    return hashlib.sha256(json.dumps(cells).encode("utf-8")).hexdigest()


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
    name = Path(solution_name).name
    notice = nbformat.v4.new_markdown_cell(
        f"*Generated from `{solution_name}` by `{COMMAND} generate`, which may replace this file. "
        f"Students: work in your own copy, `exercises/{MY_WORK}/{name}`, which `{COMMAND} start "
        f"{lesson_of(name)}` makes and which neither updates nor tests ever touch (grade it with "
        f"`lesson-lib-grade exercises/{MY_WORK}/{name}`). "
        f"Course maintainers: edit the solution notebook, not this file.*")
    if nb.get("nbformat_minor", 0) >= 5:
        notice["id"] = NOTICE_ID
    else:
        notice.pop("id", None)
    nb.cells.insert(0, notice)
    notice.metadata["lesson_lib"] = {"cells_sha256": cells_sha256(nb)}
    return nb


def is_generated(nb):
    """Whether notebook ``nb`` holds exactly the cells that ``generate`` wrote (from whichever
    version of its solution): the sha256 its notice records matches its cells. Running it does not
    count as an edit (outputs are not hashed); writing in it does."""
    recorded = nb.cells[0].metadata.get("lesson_lib", {}).get("cells_sha256") if nb.cells else None
    return recorded is not None and recorded == cells_sha256(nb)


def answers_pattern(generated):
    """A regex that matches the text ``generated`` (a cell's source, or a whole script) with every
    ``# YOUR CODE HERE`` stub replaced by anything: the generated exercise with a student's answers."""
    parts = _STUB_LINES.split(generated)
    return re.compile("(?s:.*?)".join(re.escape(part) for part in parts))


def holds_only_answers(nb, generated):
    """Whether notebook ``nb`` is the generated exercise ``generated`` with, at most, answers written
    in its answer regions (and outputs): the same cells in the same order, the same text elsewhere."""
    if [cell.cell_type for cell in nb.cells] != [cell.cell_type for cell in generated.cells]:
        return False
    return all(answers_pattern(gen.source).fullmatch(cell.source) is not None if gen.cell_type == "code"
               else cell.source == gen.source
               for cell, gen in zip(nb.cells, generated.cells))


def _read(path):
    """The notebook at ``path``, or None when it cannot be read as one (then it counts as edited)."""
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception:              # invalid JSON, or not a notebook: whatever it is, it is not ours
        return None


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


def _refuse_solutions_folder(solutions_dir, exercises_dir):
    """Generating into a folder of solutions would replace every solution with stubs: refuse."""
    if Path(exercises_dir).resolve() == Path(solutions_dir).resolve():
        raise ValueError(f"the exercises folder {exercises_dir} (--exercises) is the solutions folder; "
                         f"generate would replace every solution with stubs: pass the exercises folder")
    for path in sorted(Path(exercises_dir).glob("*.ipynb")):
        nb = _read(path)
        if nb is not None and any(_MARKER.match(line) for cell in nb.cells if cell.cell_type == "code"
                                  for line in cell.source.split("\n")):
            raise ValueError(f"the exercises folder {exercises_dir} (--exercises) holds solution notebooks "
                             f"({path.name} has '{BEGIN}' regions), which generate would replace with stubs: "
                             f"pass the exercises folder")


def _replaceable(path, text):
    """Whether ``generate`` may write ``text`` over the exercise at ``path``: nothing is there, or
    it already has the new cells (outputs and metadata aside), or it is an unedited generated one."""
    if not path.exists():
        return True
    existing = _read(path)
    if existing is None:
        return False
    new = nbformat.reads(text, as_version=4)
    same_cells = [(c.cell_type, c.source) for c in existing.cells] == [(c.cell_type, c.source) for c in new.cells]
    return same_cells or is_generated(existing)


def _script_replaceable(path):
    """Whether the script beside exercise ``path`` may be rewritten: it is missing, or it is its
    notebook's twin, so it holds nothing that the notebook does not (and the notebook is checked)."""
    script = pairing.script_path(path)
    if not script.exists():
        return True
    return path.exists() and script.read_text(encoding="utf-8") == pairing.script_text(path)


def generate(solutions_dir="solutions", exercises_dir="exercises", force=False):
    """Write one exercise notebook per solution notebook; returns the paths written.

    Every solution is processed and every target checked before anything is written, so a bad
    solution or an edited exercise changes nothing. An exercise (or its script) that is not what
    generate wrote is refused (FileExistsError naming them) unless ``force``; a folder of
    solutions as ``exercises_dir`` is refused (ValueError), even with ``force``."""
    exercises_dir = Path(exercises_dir)
    _refuse_solutions_folder(solutions_dir, exercises_dir)
    texts = {exercises_dir / path.name: exercise_text(path) for path in _solution_paths(solutions_dir)}
    edited = [] if force else \
        [p for p, text in texts.items() if not _replaceable(p, text)] + \
        [pairing.script_path(p) for p in texts if not _script_replaceable(p)]
    if edited:
        lessons = " ".join(sorted({lesson_of(p.name) for p in edited}))
        raise FileExistsError(
            f"not overwriting {len(edited)} edited file(s), which generate did not write (a student's "
            f"answers?): {', '.join(map(str, sorted(edited)))}; keep them first with "
            f"{start_command(exercises_dir, lessons)} (copies them to {exercises_dir / MY_WORK}), then run "
            f"generate again with --force")
    exercises_dir.mkdir(parents=True, exist_ok=True)
    for path, text in texts.items():
        path.write_bytes(text.encode("utf-8"))
    if _course_solutions(solutions_dir):
        flags.PUBLISHED.write_text(_published_text(solutions_dir), encoding="utf-8")
    return list(texts)


def _course_solutions(solutions_dir):
    """Whether ``solutions_dir`` is this course's own solutions/ folder (beside lesson_lib), whose
    digests ship with the package; another folder (a test's, a fork's draft) leaves them alone."""
    return Path(solutions_dir).resolve() == Path(flags.PUBLISHED).resolve().parents[3] / "solutions"


def _published_text(solutions_dir):
    """The text of the digests of the published solutions' graded functions (the grader flags a
    submission that hands one in verbatim; :func:`lesson_lib.course.flags.copies_of_the_solution`)."""
    return json.dumps(flags.published_digests(solutions_dir), indent=1, sort_keys=True) + "\n"


def review(solutions_dir="solutions", exercises_dir="exercises"):
    """``(problems, answered)``: one line for every exercise notebook directly in ``exercises_dir``
    that is missing, out of date or has no solution notebook; and the exercises that differ from
    what generate writes only by a student's answers (see :func:`holds_only_answers`)."""
    exercises_dir = Path(exercises_dir)
    problems, answered, expected = [], [], set()
    for path in _solution_paths(solutions_dir):
        target = exercises_dir / path.name
        expected.add(target.name)
        if not target.exists():
            problems.append(f"{target} is missing (generated from {path})")
            continue
        text = exercise_text(path)
        if target.read_bytes() == text.encode("utf-8"):
            continue
        existing = _read(target)
        if existing is not None and holds_only_answers(existing, nbformat.reads(text, as_version=4)):
            answered.append(target)
        elif _replaceable(target, text):
            problems.append(f"{target} is out of date with {path}")
        else:
            problems.append(f"{target} is out of date with {path}, and holds edits that generate did not "
                            f"write; keep them first ({start_command(exercises_dir, lesson_of(target.name))} "
                            f"copies it to {exercises_dir / MY_WORK}), then generate with --force")
    if _course_solutions(solutions_dir) and (not flags.PUBLISHED.exists() or
                                             flags.PUBLISHED.read_text(encoding="utf-8") != _published_text(solutions_dir)):
        problems.append(f"{flags.PUBLISHED} (the digests of the published solutions) is out of date with "
                        f"{solutions_dir}")
    if exercises_dir.is_dir():
        for target in sorted(exercises_dir.glob("*.ipynb")):
            if target.name not in expected:
                problems.append(f"{target} has no solution notebook in {solutions_dir}; delete it "
                                f"or add the solution")
    return problems, answered


def answers_note(target):
    """What ``check`` says of an exercise that holds a student's answers."""
    copy = my_work_path(target)
    where = (f"{copy} already exists, so copy them by hand" if copy.exists() else
             start_command(target.parent, lesson_of(target.name)))
    return f"{target} holds answers: copy them to {copy.parent} ({where}) before regenerating"


def check(solutions_dir="solutions", exercises_dir="exercises", strict=False):
    """A list of problems, one line each, naming every exercise notebook that is missing,
    out of date, or has no solution notebook; empty when everything is in sync. An exercise
    that differs only by a student's answers is a problem only when ``strict``."""
    problems, answered = review(solutions_dir, exercises_dir)
    return problems + ([answers_note(target) for target in answered] if strict else [])


def answers_only_twins(notebook):
    """Whether ``exercises/NN.ipynb`` and its script are each the generated exercise with, at most,
    a student's answers in it: then the two may differ (the student wrote in one of them) and
    :mod:`~lesson_lib.course.pairing` leaves them be. False for any other notebook."""
    notebook = Path(notebook)
    solution = notebook.parent.parent / "solutions" / notebook.name
    script = pairing.script_path(notebook)
    if notebook.parent.name != "exercises" or not solution.exists() or not script.exists():
        return False
    text = exercise_text(solution)
    existing = _read(notebook)
    return (existing is not None and holds_only_answers(existing, nbformat.reads(text, as_version=4))
            and answers_pattern(pairing.script_of_text(text)).fullmatch(script.read_text(encoding="utf-8"))
            is not None)


def _copy_new(source, target):
    """Copy ``source`` to ``target`` unless ``target`` exists; True if copied. The file is created
    with ``open(..., "x")``, which fails on an existing file, so nothing is ever written over."""
    data = source.read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "xb") as f:
            f.write(data)
    except FileExistsError:
        return False
    return True


def start(lessons=(), exercises_dir="exercises"):
    """Copy the exercise notebooks of ``lessons`` (all when empty), and their scripts, into
    ``exercises_dir/my_work``, the students' own folder, never over a file already there.
    Returns ``[(path, copied)]``, ``copied`` False where a copy was there and left untouched.

    A notebook and its script are copied together or not at all: a fresh script beside a copy
    being worked on would be taken, by jupytext's pairing, for a newer version of it."""
    exercises_dir = Path(exercises_dir)
    notebooks = sorted(exercises_dir.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no exercise notebooks in {exercises_dir}; run from the repository root "
                                f"or pass --exercises DIR")
    wanted = {lesson_of(lesson) for lesson in lessons}
    unknown = wanted - {lesson_of(nb.name) for nb in notebooks}
    if unknown:
        raise ValueError(f"no exercise for lesson {', '.join(sorted(unknown))}; the lessons are "
                         f"{' '.join(lesson_of(nb.name) for nb in notebooks)}")
    done = []
    for notebook in notebooks:
        if wanted and lesson_of(notebook.name) not in wanted:
            continue
        sources = [path for path in (notebook, pairing.script_path(notebook)) if path.exists()]
        targets = [exercises_dir / MY_WORK / source.name for source in sources]
        if any(target.exists() for target in targets):
            done += [(target, False) for target in targets if target.exists()]
        else:
            done += [(target, _copy_new(source, target)) for source, target in zip(sources, targets)]
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Build exercises/*.ipynb from solutions/*.ipynb by replacing every "
                    f"'{BEGIN}' ... '{END}' region with a NotImplementedError stub; copy them into "
                    f"exercises/{MY_WORK}/ for a student to work in.")
    parser.add_argument("command", choices=["start", "generate", "check"],
                        help=f"start: copy exercises into exercises/{MY_WORK} (never over a copy); generate: "
                             f"write the exercise notebooks; check: exit 1 if they are out of date")
    parser.add_argument("lessons", nargs="*", metavar="LESSON",
                        help="start only: the lessons to copy, e.g. 01 01b (default: all)")
    parser.add_argument("--solutions", default="solutions", help="folder of solution notebooks (default: solutions)")
    parser.add_argument("--exercises", default="exercises", help="folder of exercise notebooks (default: exercises)")
    parser.add_argument("--force", action="store_true",
                        help="generate: replace exercises even where they hold edits (a student's answers)")
    parser.add_argument("--strict", action="store_true",
                        help="check: fail on exercises that hold answers too (for the course's own CI)")
    args = parser.parse_args(argv)
    if args.lessons and args.command != "start":
        parser.error(f"lessons are for start only, got {' '.join(args.lessons)}")
    fix = f"{COMMAND} generate"
    if (args.solutions, args.exercises) != ("solutions", "exercises"):
        fix += f" --solutions {args.solutions} --exercises {args.exercises}"
    try:
        if args.command == "start":
            for path, copied in start(args.lessons, args.exercises):
                print(f"{path}: {'your copy; work here' if copied else 'already there, left untouched'}")
            print(f"updates (generate) and tests never touch {Path(args.exercises) / MY_WORK}")
            return 0
        if args.command == "generate":
            for path in generate(args.solutions, args.exercises, force=args.force):
                pairing.sync(path)              # the exercise's percent script, for review
                print(f"wrote {path} and {pairing.script_path(path).name}")
            return 0
        problems, answered = review(args.solutions, args.exercises)
    except (RegionError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    notes = [answers_note(target) for target in answered]
    if args.strict:
        problems, notes = problems + notes, []
    for note in notes:
        print(note, file=sys.stderr)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"to fix, run: {fix}", file=sys.stderr)
        return 1
    print(f"exercises in {args.exercises} are in sync with {args.solutions}"
          + (f" (apart from the answers in {len(answered)})" if answered else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
