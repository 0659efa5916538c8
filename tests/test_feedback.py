"""The feedback cell of the exercise notebooks (lesson_lib.course.feedback): it runs the
grader's checks of one exercise in the student's process and prints one line per check, with
the grader's points and reason; a student's mistake never crashes it."""

import nbformat
import pytest
import torch

from grading_helpers import definitions
from lesson_lib.course import feedback, grader
from lesson_lib.course.checks import load_checks
from lesson_lib.diffusion.schedules import cosine_beta_schedule, linear_beta_schedule


def _lines(capsys, *args, **kwargs):
    feedback.check(*args, **kwargs)
    return capsys.readouterr().out.splitlines()


def test_a_right_implementation_gets_every_point(capsys):
    ns = {"linear_betas": linear_beta_schedule}
    assert _lines(capsys, "01", "linear_betas", ns) == ["✓ linear_betas_matches_reference (1/1)"]
    lines = _lines(capsys, "01", "cosine_betas", {"cosine_betas": cosine_beta_schedule})
    assert lines == ["✓ cosine_betas_matches_reference (1/1)", "✓ cosine_betas_clips_at_max_beta (1/1)"]


def test_a_wrong_implementation_gets_the_judges_hint(capsys):
    ns = {"alpha_bars_from_betas": lambda betas: torch.cumsum(betas, 0)}
    line, = _lines(capsys, "01", "alpha_bars_from_betas", ns)
    assert line.startswith("✗ alpha_bars_are_cumulative_product (0/1): alpha_bars_from_betas(betas) for ")
    assert line.endswith("alpha-bar_t = prod_{s<=t} alpha_s with alpha_s = 1 - beta_s (Ho et al., Eq. 4).")


def test_each_check_counts_its_own_points(capsys):
    """A clip-free cosine schedule passes nothing that needs the clip (T = 1 gives beta = 1)."""
    def cosine_betas(T, s=0.008, max_beta=0.999):
        return cosine_beta_schedule(T, s=s, max_beta=1.0)
    first, second = _lines(capsys, "01", ["cosine_betas"], {"cosine_betas": cosine_betas})
    assert first.startswith("✗ cosine_betas_matches_reference (0/1): ")
    assert second.startswith("✗ cosine_betas_clips_at_max_beta (0/1): ") and "max_beta" in second


def test_missing_stub_and_crashing_functions_each_get_a_line(capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError("Exercise: implement this (see the docstring above).")

    def crashes(betas):
        return betas / 0 + [][1]

    lines = _lines(capsys, "01", ["linear_betas", "cosine_betas", "alpha_bars_from_betas"],
                   {"cosine_betas": stub, "alpha_bars_from_betas": crashes})
    assert lines[0] == ("✗ linear_betas_matches_reference (0/1): function linear_betas is not defined yet "
                        "(run its cell first)")
    assert lines[1].startswith("✗ cosine_betas_matches_reference (0/1): not implemented yet")
    assert lines[3].startswith("✗ alpha_bars_are_cumulative_product (0/1): IndexError: list index out of range")
    assert "in crashes" in lines[3]


def test_an_answer_of_the_wrong_type_is_reported_not_raised(capsys):
    line, = _lines(capsys, "01", "linear_betas", {"linear_betas": lambda *a, **k: "0.0001, ..., 0.02"})
    assert line == ("✗ linear_betas_matches_reference (0/1): linear_betas(1000) returned str, "
                    "expected a torch.Tensor")


def test_the_notebooks_random_state_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    feedback.run("01", "q_sample", {"q_sample": lambda *a: None})
    assert torch.equal(torch.rand(3), expected)


def test_run_returns_rows_and_every_check_of_a_lesson_by_default():
    rows = feedback.run(5, ns=definitions("solutions", "05"))
    assert [r["name"] for r in rows] == [c.name for c in load_checks("05")]
    assert all(r["status"] == "passed" and r["points"] == r["max_points"] for r in rows)
    assert sum(r["points"] for r in rows) == 10


def test_mistakes_in_the_call_itself_raise():
    with pytest.raises(ValueError, match="no check of lesson 01 uses linear_beta"):
        feedback.run("01", "linear_beta", {})
    with pytest.raises(ValueError, match="lesson must be a lesson number"):
        feedback.run("lesson one", None, {})
    with pytest.raises(ValueError, match="no checks for lesson '99'"):
        feedback.run("99", None, {})


def _notebook(path, source):
    nb = nbformat.v4.new_notebook(metadata={"lesson_lib": {"lesson": "01"}})
    nb.cells = [nbformat.v4.new_code_cell("import torch"), nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, str(path))


def test_it_says_what_the_grader_says(tmp_path):
    """Same statuses and points as the grader's report for one submission with every kind of
    answer (right, wrong, missing, not implemented, crashing), and the same reason wherever
    the reason does not depend on the run's random inputs."""
    source = '''
def linear_betas(T, beta_start=1e-4, beta_end=0.02):
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)

def cosine_betas(T, s=0.008, max_beta=0.999):
    raise NotImplementedError("Exercise: implement this (see the docstring above).")

def alpha_bars_from_betas(betas):
    return torch.cumsum(betas, 0)

def q_sample(x0, t, alpha_bars, eps):
    return "x_t"
'''
    _notebook(tmp_path / "01_forward_process.ipynb", source)
    ns = {}
    exec("import torch\n" + source, ns)
    mine = {r["name"]: r for r in feedback.run("01", None, ns)}
    report = grader.grade(tmp_path / "01_forward_process.ipynb", sandbox="off", seed=0)
    theirs = {r["name"]: r for r in report["checks"]}
    assert list(mine) == list(theirs)
    for name, row in theirs.items():
        assert (mine[name]["status"], mine[name]["points"]) == (row["status"], row["points"]), name
    for name in ("linear_betas_matches_reference", "posterior_at_first_step", "q_sample_matches_equation_4"):
        assert mine[name]["reason"].startswith(theirs[name]["reason"].split(" (")[0].split(" not defined")[0])


def test_a_judge_that_trips_over_an_odd_answer_says_so(monkeypatch):
    """As in the grader: a judge error other than AssertionError is "an unexpected form"."""
    from lesson_lib.course import checks

    def judge(case, answer):
        return answer["x"]  # a KeyError for an answer without "x"

    odd = checks.Check("odd_answer", 2, ("f",), "f answers a dict with x", None,
                       lambda ns, case: ns["f"](), judge)
    monkeypatch.setattr(checks, "load_checks", lambda lesson: [odd])
    row, = feedback.run("01", "f", {"f": lambda: {"y": 1}})
    assert (row["status"], row["points"]) == ("failed", 0)
    assert row["reason"] == "the answer has an unexpected form (KeyError: 'x')"
    row, = feedback.run("01", "f", {"f": lambda: {"x": 1}})
    assert (row["status"], row["points"]) == ("passed", 2)
