"""Tests of the exercise generator (lesson_lib/course/assignments.py)."""

import ast
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lesson_lib.course import assignments
from lesson_lib.course.assignments import BEGIN, END, STUB, RegionError

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"
EXERCISES = REPO / "exercises"


@functools.cache
def answered_exercises():
    """The exercises of this clone that hold a student's answers (none in the course's repository):
    the tests below read what generate writes instead of those."""
    return set(assignments.review(SOLUTIONS, EXERCISES)[1])


def run_cli(*args, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "lesson_lib.course.assignments", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def solution_notebook(*sources):
    """A small solution notebook: a markdown cell, then one code cell per source."""
    nb = nbformat.v4.new_notebook(metadata={"lesson_lib": {"lesson": "07"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# Lesson 7")]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index}"
    return nb


def test_repository_exercises_are_in_sync_with_solutions():
    assert sorted(SOLUTIONS.glob("*.ipynb")), "no solution notebooks"
    assert assignments.check(SOLUTIONS, EXERCISES) == []
    done = run_cli("check")
    assert done.returncode == 0, done.stderr
    assert "in sync" in done.stdout


def test_generation_is_byte_for_byte_reproducible(tmp_path):
    first, second = tmp_path / "a" / "exercises", tmp_path / "b" / "exercises"
    assignments.generate(SOLUTIONS, first)
    assignments.generate(SOLUTIONS, second)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in SOLUTIONS.glob("*.ipynb"))
    answered = answered_exercises()
    for name in names:
        text = (first / name).read_bytes()
        committed = text if EXERCISES / name in answered else (EXERCISES / name).read_bytes()
        assert text == (second / name).read_bytes() == committed
        assert text.endswith(b"\n")


def test_regions_are_replaced_at_their_indentation():
    source = "\n".join([
        "import torch",
        "",
        "def f(x):",
        '    """Docstring."""',
        f"    {BEGIN}",
        "    y = x + 1",
        "    return y",
        f"    {END}",
        "",
        "class A:",
        "    def g(self):",
        f"        {BEGIN}   ",
        "        return 2",
        f"        {END}",
        f"{BEGIN}",
        "z = 3",
        f"{END}",
        "print(f(1))",
    ])
    assert assignments.strip_solutions(source) == "\n".join([
        "import torch",
        "",
        "def f(x):",
        '    """Docstring."""',
        "    # YOUR CODE HERE",
        f"    {STUB}",
        "",
        "class A:",
        "    def g(self):",
        "        # YOUR CODE HERE",
        f"        {STUB}",
        "# YOUR CODE HERE",
        STUB,
        "print(f(1))",
    ])
    assert assignments.strip_solutions("x = 1\n") == "x = 1\n"


def test_exercise_clears_outputs_and_keeps_metadata():
    nb = solution_notebook(f"def f():\n    {BEGIN}\n    return 42\n    {END}", "print(f())")
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="42\n")]
    nb.cells[2].execution_count = 3
    nb.cells[2].metadata["execution"] = {"iopub.status.idle": "2024-01-01T00:00:00"}
    exercise = assignments.make_exercise(nb, "solutions/07_x.ipynb")
    assert exercise.metadata == nb.metadata
    assert exercise.cells[0].cell_type == "markdown" and "solutions/07_x.ipynb" in exercise.cells[0].source
    assert exercise.cells[1].source == "# Lesson 7"
    assert "return 42" not in exercise.cells[2].source and STUB in exercise.cells[2].source
    for cell in exercise.cells[2:]:
        assert cell.outputs == [] and cell.execution_count is None and "execution" not in cell.metadata
    assert nb.cells[2].outputs and "return 42" in nb.cells[1].source  # the solution is unchanged


@pytest.mark.parametrize("source, message", [
    (f"def f():\n    {BEGIN}\n    return 1", "has no matching"),
    (f"def f():\n    return 1\n    {END}", "without a"),
    (f"def f():\n    {BEGIN}\n    {BEGIN}\n    return 1\n    {END}", "inside the region opened on line 2"),
    (f"def f():\n    # {BEGIN} here\n    return 1\n    {END}", "alone on its line"),
    (f"x = [\n{BEGIN}\n1,\n{END}\n]", "not valid Python"),
])
def test_unbalanced_regions_name_the_notebook_and_cell(source, message):
    nb = solution_notebook("import torch", source)
    with pytest.raises(RegionError, match=message) as error:
        assignments.make_exercise(nb, "solutions/07_bad.ipynb")
    assert "solutions/07_bad.ipynb, cell 3" in str(error.value)


def test_generate_refuses_an_unbalanced_solution_and_writes_nothing(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(solution_notebook(f"def f():\n    {BEGIN}\n    return 1\n    {END}"),
                   str(solutions / "06_good.ipynb"))
    nbformat.write(solution_notebook(f"def f():\n    {BEGIN}\n    return 1"), str(solutions / "07_bad.ipynb"))
    done = run_cli("generate", "--solutions", solutions, "--exercises", exercises)
    assert done.returncode == 1
    assert "07_bad.ipynb, cell 2" in done.stderr and "has no matching" in done.stderr
    assert not exercises.exists()


def test_check_names_drifted_files_and_the_fix(tmp_path):
    solutions, exercises = tmp_path / "sol", tmp_path / "ex"
    shutil.copytree(SOLUTIONS, solutions)
    assignments.generate(solutions, exercises)
    assert assignments.check(solutions, exercises) == []
    first = sorted(exercises.glob("*.ipynb"))[0]
    first.write_text(first.read_text().replace("YOUR CODE HERE", "my answer"))
    # a change inside the answer regions only is a student's answers: reported, not failed (but --strict)
    assert assignments.check(solutions, exercises) == []
    assert "holds answers" in assignments.check(solutions, exercises, strict=True)[0]
    first.write_text(first.read_text().replace("import torch", "import torch  # changed outside the answers"))
    (exercises / "99_stale.ipynb").write_text("{}")
    done = run_cli("check", "--solutions", solutions, "--exercises", exercises)
    assert done.returncode == 1
    assert f"{first} is out of date" in done.stderr
    assert "99_stale.ipynb has no solution notebook" in done.stderr
    assert f"python -m lesson_lib.course.assignments generate --solutions {solutions} --exercises {exercises}" in done.stderr
    first.unlink()
    assert any("is missing" in problem for problem in assignments.check(solutions, exercises))
    (exercises / "99_stale.ipynb").unlink()
    assignments.generate(solutions, exercises)
    assert assignments.check(solutions, exercises) == []


def test_missing_solutions_folder_is_a_clear_error(tmp_path):
    done = run_cli("check", cwd=tmp_path)
    assert done.returncode == 1 and "no solutions folder" in done.stderr


def test_cells_without_ids_get_stable_ids(tmp_path):
    nb = solution_notebook(f"def f():\n    {BEGIN}\n    return 1\n    {END}")
    data = json.loads(nbformat.writes(nb))
    for cell in data["cells"]:
        del cell["id"]
    path = tmp_path / "07_x.ipynb"
    path.write_text(json.dumps(data))
    assert assignments.exercise_text(path) == assignments.exercise_text(path)


@pytest.mark.parametrize("solution", sorted(SOLUTIONS.glob("*.ipynb")), ids=lambda p: p.name)
def test_exercises_hide_every_solution(solution):
    solution_nb = nbformat.read(str(solution), as_version=4)
    if EXERCISES / solution.name in answered_exercises():     # a student's clone: what generate writes
        exercise_nb = nbformat.reads(assignments.exercise_text(solution), as_version=4)
    else:
        exercise_nb = nbformat.read(str(EXERCISES / solution.name), as_version=4)
    regions = sum(cell.source.count(BEGIN) for cell in solution_nb.cells if cell.cell_type == "code")
    assert regions >= 2
    assert solution_nb.metadata["lesson_lib"]["lesson"] == solution.name.split("_")[0]
    stubs = 0
    for cell in exercise_nb.cells:
        if cell.cell_type == "code":
            assert "SOLUTION" not in cell.source and not cell.outputs and cell.execution_count is None
            ast.parse(cell.source)
            stubs += cell.source.count(STUB)
    assert stubs == regions
    # every solution cell ran and was stored with its outputs
    assert all(cell.execution_count for cell in solution_nb.cells if cell.cell_type == "code")
