"""Every notebook's jupytext percent script (NAME.py beside NAME.ipynb) is in step with it."""
import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest

from lesson_lib.course import colab, pairing

ROOT = Path(__file__).resolve().parents[1]
ALL = colab.notebooks(colab.FOLDERS, root=ROOT)


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_matches_notebook(path):
    assert not pairing.problems(path), (f"{pairing.problems(path)}: run python -m lesson_lib.course.pairing sync "
                                       f"(or jupytext --sync {path.parent.name}/{path.name})")


def test_every_script_has_a_notebook():
    scripts = sorted(p for folder in colab.FOLDERS for p in (ROOT / folder).glob("[0-9]*.py"))
    orphans = [p for p in scripts if not p.with_suffix(".ipynb").exists()]
    assert scripts and not orphans, f"scripts without a notebook: {orphans}"


@pytest.fixture
def copy_of_lesson(tmp_path):
    path = tmp_path / "notebooks" / "01_forward_process.ipynb"
    path.parent.mkdir()
    shutil.copy(ROOT / "notebooks" / path.name, path)
    shutil.copy(ROOT / "notebooks" / "01_forward_process.py", path.with_suffix(".py"))
    return path


def test_a_changed_cell_is_caught_and_sync_repairs_it(copy_of_lesson):
    nb = nbformat.read(copy_of_lesson, as_version=4)
    nb.cells[0].source += "\n\nOne more sentence."
    nbformat.write(nb, copy_of_lesson)
    assert pairing.problems(copy_of_lesson) == [f"{pairing.script_path(copy_of_lesson)} differs from "
                                                f"{copy_of_lesson.name}"]
    assert pairing.sync(copy_of_lesson) and not pairing.sync(copy_of_lesson)
    assert not pairing.problems(copy_of_lesson)
    assert "# One more sentence." in pairing.script_path(copy_of_lesson).read_text()


def test_outputs_and_run_metadata_do_not_reach_the_script(copy_of_lesson):
    before = pairing.script_text(copy_of_lesson)
    nb = nbformat.read(copy_of_lesson, as_version=4)
    assert any(cell.get("outputs") for cell in nb.cells), "the lesson's outputs are stored"
    for cell in nb.cells:
        cell.metadata["execution"] = {"iopub.status.idle": "2030-01-01T00:00:00Z"}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata["kernelspec"] = {"name": "other", "display_name": "Other", "language": "python"}
    nbformat.write(nb, copy_of_lesson)
    assert pairing.script_text(copy_of_lesson) == before


def test_the_script_holds_every_cell(copy_of_lesson):
    nb = nbformat.read(copy_of_lesson, as_version=4)
    back = jupytext.reads(pairing.script_text(copy_of_lesson), fmt="py:percent")
    cells = lambda notebook: [(c.cell_type, c.source.rstrip("\n")) for c in notebook.cells]  # noqa: E731
    assert cells(back) == cells(nb), "every cell, up to trailing blank lines"


def test_a_missing_script_is_named(copy_of_lesson):
    pairing.script_path(copy_of_lesson).unlink()
    assert pairing.problems(copy_of_lesson) == [f"{pairing.script_path(copy_of_lesson)} is missing"]
    assert pairing.main(["check", str(copy_of_lesson.parent)]) == 1


def test_an_exercise_holding_a_students_answers_is_accepted_and_left_alone(tmp_path):
    """A student who answers in exercises/NN.ipynb (or in its script) leaves the pair differing: the
    check accepts that, as `assignments check` does, and sync does not write over either side; any
    change outside the answer regions is still caught."""
    from lesson_lib.course import assignments
    for folder in ("solutions", "exercises"):
        (tmp_path / folder).mkdir()
        for suffix in (".ipynb", ".py"):
            shutil.copy(ROOT / folder / f"01_forward_process{suffix}", tmp_path / folder)
    exercise = tmp_path / "exercises" / "01_forward_process.ipynb"
    nb = nbformat.read(exercise, as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.replace(assignments.STUB, "return 42")
    nbformat.write(nb, exercise)
    script = pairing.script_path(exercise).read_text()
    assert pairing.problems(exercise) == []
    assert pairing.main(["sync", str(exercise.parent)]) == 0
    assert pairing.script_path(exercise).read_text() == script
    nb.cells[1].source += "\n\nA note of mine."
    nbformat.write(nb, exercise)
    assert pairing.problems(exercise) == [f"{pairing.script_path(exercise)} differs from {exercise.name}"]
