"""The instructor's commands never lose a report or a file: every student's report is written
as soon as that student is graded, an existing report folder or JSON file is not replaced
without --overwrite, and a report never replaces the notebook it grades."""

from pathlib import Path

import pytest

import nbformat

from lesson_lib.course import batch, grader, reader

REPO = Path(__file__).resolve().parent.parent
SOLUTION = next((REPO / "solutions").glob("01_*.ipynb"))
EXERCISE = next((REPO / "exercises").glob("01_*.ipynb"))


@pytest.fixture
def submissions(tmp_path):
    folder = tmp_path / "submissions"
    (folder / "carol").mkdir(parents=True)
    (folder / "carol" / "01_forward_process.ipynb").write_bytes(SOLUTION.read_bytes())
    (folder / "01_dave.ipynb").write_bytes(EXERCISE.read_bytes())
    return folder


def test_each_report_is_written_before_the_class_is_compared(submissions, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the similarity step broke")
    monkeypatch.setattr(batch, "similar_pairs", broken)
    out = tmp_path / "reports"
    with pytest.raises(RuntimeError):
        batch.grade_folder(submissions, out, timeout=10, seed=1)
    assert sorted(p.name for p in out.glob("*.json")) == ["01_dave.json", "carol__01_forward_process.json"]
    assert "total" in (out / "carol__01_forward_process.txt").read_text()


def test_the_batch_refuses_what_would_lose_files(submissions, tmp_path, capsys):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "last_week.csv").write_text("keep me")
    assert batch.main([str(submissions), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "last_week.csv").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert batch.main([str(empty), "--out", str(tmp_path / "new")]) == 2
    assert "no .ipynb files" in capsys.readouterr().err and not (tmp_path / "new").exists()
    (tmp_path / "a_file").write_text("x")
    assert batch.main([str(submissions), "--out", str(tmp_path / "a_file")]) == 2
    assert (tmp_path / "a_file").read_text() == "x"


def test_the_grader_never_writes_over_the_notebook_or_an_old_report(tmp_path, capsys):
    notebook = tmp_path / "01_forward_process.ipynb"
    notebook.write_bytes(SOLUTION.read_bytes())
    for argv, what in (([str(notebook), "--json", str(notebook)], "the submission itself"),
                       ([str(notebook), "--json", str(notebook), "--overwrite"], "the submission itself")):
        with pytest.raises(SystemExit) as exit_:
            grader.main(argv)
        assert exit_.value.code == 2 and what in capsys.readouterr().err
        assert notebook.read_bytes() == SOLUTION.read_bytes()
    old = tmp_path / "report.json"
    old.write_text("an older report")
    with pytest.raises(SystemExit):
        grader.main([str(notebook), "--json", str(old)])
    assert "--overwrite" in capsys.readouterr().err and old.read_text() == "an older report"


def test_a_file_that_is_not_a_notebook_says_what_it_is(tmp_path):
    pdf = tmp_path / "01_answers.ipynb"
    pdf.write_bytes(b"%PDF-1.7 a printed notebook")
    script = tmp_path / "01_answers.py"
    script.write_text("import torch\n")
    assert "it is a PDF, not a Jupyter notebook" in grader.grade(pdf, seed=1)["notes"][0]
    assert "it is a .py file, not a Jupyter notebook" in grader.grade(script, seed=1)["notes"][0]


def test_a_notebook_that_needs_too_much_memory_to_parse_scores_zero(tmp_path):
    """Parsing happens in the reader's process, under a memory limit: here 256 MB for a
    notebook of 4 MB of code (a list of a million numbers, about 300 MB of syntax tree)."""
    nb = nbformat.v4.new_notebook(metadata={"lesson_lib": {"lesson": "01"}})
    nb.cells = [nbformat.v4.new_code_cell("x = [" + "1, " * 1_000_000 + "]")]
    path = tmp_path / "01_big.ipynb"
    nbformat.write(nb, str(path))
    read = reader.read_submission(path, memory_mb=256)
    assert read["error"].startswith("could not read the notebook: it needs more memory than the grader's reader")


def test_spreadsheet_formulas_become_text():
    assert [batch._cell(v) for v in ("=1+1", "+1", "-cmd", "@SUM(A1)", "\tx", "alice", 12, -3)] == \
        ["'=1+1", "'+1", "'-cmd", "'@SUM(A1)", "'\tx", "alice", "12", "-3"]
