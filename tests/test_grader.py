"""Tests of the autograder (lesson_lib/course/grader.py and the modules it uses) and of the
lesson checks it runs. The hostile submissions have their own file, tests/test_grader_hostile.py.

Every end-to-end grading starts at least one worker process, which imports torch (about
2 s), so hostile behaviours that do not interfere with each other share one notebook.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from lesson_lib.course import grader, notebook, session
from grading_helpers import definitions, expect_rejected
from lesson_lib.course.checks import available_lessons, load_checks

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((REPO / "solutions").glob("*.ipynb"))
EXERCISES = sorted((REPO / "exercises").glob("*.ipynb"))

LINEAR_OK = """
import torch
def linear_betas(T, beta_start=1e-4, beta_end=0.02):
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
"""
COSINE_OK = """
import math
import torch
def cosine_betas(T, s=0.008, max_beta=0.999):
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)
"""
ALPHA_BARS_OK = """
import torch
def alpha_bars_from_betas(betas):
    return torch.cumprod(1 - betas, dim=0)
"""


def write_notebook(path, *sources, lesson="01"):
    """A notebook with one code cell per source (dedented), tagged with ``lesson``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["lesson_lib"] = {"lesson": lesson}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(source).strip("\n")) for source in sources]
    nbformat.write(nb, str(path))
    return path


def by_name(report):
    return {result["name"]: result for result in report["checks"]}


# --- reading the definitions, choosing the lesson (no worker) ------------------------------

def test_only_definitions_are_kept():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in [
        "import torch\nfrom math import pi as PI\nT = 1000\nNAME: str = 'x'\nbetas = make_betas(T)",
        "%matplotlib inline\n!pip install nothing\ndef f(x):\n    return x\nprint(f(1))",
        "%%bash\nrm -rf /",
        "class Model:\n    pass\nfor i in range(10**12):\n    pass\nraise SystemExit",
        "def broken(:\n    pass",
    ]]
    nb.cells.insert(1, nbformat.v4.new_markdown_cell("def not_code(): pass"))
    submission = notebook.read_definitions(nb)
    assert submission["names"] == {"torch", "PI", "T", "NAME", "f", "Model"}
    assert [cell["label"] for cell in submission["cells"]] == ["cell 1", "cell 3", "cell 5"]
    assert [note.split(":")[0] for note in submission["notes"]] == ["cell 3", "cell 4 is a %%bash cell, not Python",
                                                                   "cell 6 could not be parsed, so nothing in it was graded"]
    kept = notebook.definitions(notebook.parse_cell(submission["cells"][2]["source"])[0])
    assert [type(node).__name__ for node in kept] == ["ClassDef"]  # the loop and raise are dropped


def _read(metadata=None):
    """What notebook.read_submission says of a notebook with this metadata (for resolve_lesson)."""
    lesson, note = notebook.metadata_lesson(nbformat.v4.new_notebook(metadata=metadata or {}))
    return {"metadata_lesson": lesson, "metadata_note": note}


def test_lesson_comes_from_option_file_name_or_metadata(tmp_path):
    tagged = _read({"lesson_lib": {"lesson": "02"}})
    plain = _read()
    assert grader.resolve_lesson("1", plain, "x.ipynb") == ("01", [])
    lesson, warnings = grader.resolve_lesson(None, tagged, "01_x.ipynb")
    assert lesson == "01" and warnings == ["the notebook metadata says lesson 02, but lesson 01 (from the file "
                                           "name) was graded"]
    assert grader.resolve_lesson(None, tagged, "alice.ipynb") == ("02", [])
    assert grader.resolve_lesson(None, plain, tmp_path / "01_forward_process.ipynb") == ("01", [])
    odd = _read({"lesson_lib": {"lesson": [1, {"x": 10 ** 100}]}})
    assert grader.resolve_lesson(None, odd, "03_y.ipynb") == (
        "03", ["the notebook metadata lesson_lib.lesson is not a lesson number; it was ignored"])
    with pytest.raises(grader.UsageError, match="unknown lesson 99"):
        grader.resolve_lesson("99", plain, "x.ipynb")
    with pytest.raises(grader.UsageError, match="pass --lesson"):
        grader.resolve_lesson(None, plain, "alice.ipynb")
    with pytest.raises(grader.UsageError, match="must be a number"):
        grader.resolve_lesson("one", plain, "x.ipynb")
    for bad in ("1bb", "b", "01-b", "1234"):
        with pytest.raises(grader.UsageError, match="must be a number"):
            grader.resolve_lesson(bad, plain, "x.ipynb")


def test_a_lesson_between_two_others_has_a_letter(tmp_path):
    """Lesson 1b (between 1 and 2): from --lesson, the file name or the metadata, as "01b"."""
    tagged = _read({"lesson_lib": {"lesson": "01b"}})
    plain = _read()
    assert grader.resolve_lesson("1b", plain, "x.ipynb") == ("01b", [])
    assert grader.resolve_lesson(" 01B ", plain, "x.ipynb") == ("01b", [])
    assert grader.resolve_lesson(None, plain, tmp_path / "01b_reverse_process.ipynb") == ("01b", [])
    assert grader.resolve_lesson(None, tagged, "01b_reverse_process.ipynb") == ("01b", [])
    assert grader.resolve_lesson(None, tagged, "alice.ipynb") == ("01b", [])
    assert grader.resolve_lesson(None, plain, "01_forward_process.ipynb") == ("01", [])
    lesson, warnings = grader.resolve_lesson(None, tagged, "01_forward_process.ipynb")
    assert lesson == "01" and warnings == ["the notebook metadata says lesson 01b, but lesson 01 (from the file "
                                           "name) was graded"]
    assert available_lessons().index("01b") == available_lessons().index("01") + 1
    with pytest.raises(grader.UsageError, match="unknown lesson 01c"):
        grader.resolve_lesson(None, plain, "01c_other.ipynb")


@pytest.mark.parametrize("lesson", available_lessons())
def test_checks_are_registered_with_points_and_docstrings(lesson):
    checks = load_checks(lesson)
    assert checks, f"lesson {lesson} has no checks"
    assert 8 <= sum(check.points for check in checks) <= 12
    for check in checks:
        assert 1 <= check.points <= 3 and check.uses and check.description
    assert len({check.name for check in checks}) == len(checks)


# --- the checks themselves, in this process: pass on the solution, catch common bugs --------

@pytest.mark.parametrize("lesson", available_lessons())
def test_every_check_passes_on_the_solution(lesson):
    namespace = definitions("solutions", lesson)
    for check in load_checks(lesson):
        check.fn(namespace)


@pytest.mark.parametrize("lesson", available_lessons())
def test_every_check_reaches_the_untouched_exercise(lesson):
    namespace = definitions("exercises", lesson)
    for check in load_checks(lesson):
        assert all(name in namespace for name in check.uses)
        with pytest.raises(NotImplementedError):
            check.fn(namespace)


def _documented_points():
    """Lesson -> points, from the table in docs/grading.md."""
    text = (REPO / "docs" / "grading.md").read_text(encoding="utf-8")
    return {m[1]: int(m[2]) for m in re.finditer(r"^\|\s*(\d+[a-z]?)\s*\|.*\|\s*(\d+)\s*\|\s*$", text, re.M)}


@pytest.mark.parametrize("lesson", available_lessons())
def test_points_are_those_docs_grading_states(lesson):
    assert _documented_points().get(lesson) == sum(check.points for check in load_checks(lesson))


BUGS = [  # (lesson, check, a wrong implementation that the check must reject)
    ("01", "linear_betas_matches_reference", """
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            return torch.linspace(beta_start, beta_end, T)  # float32
     """),
    ("01", "linear_betas_matches_reference", """
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            return beta_start + (beta_end - beta_start) * torch.arange(T, dtype=torch.float64) / (T - 1)
     """),  # NaN at T = 1
    ("01", "cosine_betas_matches_reference", """
        def cosine_betas(T, s=0.008, max_beta=0.999):
            f = torch.cos(torch.arange(T + 1, dtype=torch.float64) / T * math.pi / 2) ** 2
            return (1 - f[1:] / f[:-1]).clamp(max=max_beta)  # no offset s
     """),
    ("01", "cosine_betas_clips_at_max_beta", """
        def cosine_betas(T, s=0.008, max_beta=0.999):
            f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
            return 1 - f[1:] / f[:-1]  # not clipped
     """),
    ("01", "alpha_bars_are_cumulative_product", """
        def alpha_bars_from_betas(betas):
            return torch.cumprod(betas, dim=0)
     """),
    ("01", "alpha_bars_are_cumulative_product", """
        def alpha_bars_from_betas(betas):
            return torch.cumprod(betas.neg_().add_(1), dim=0)  # modifies its input
     """),
    ("01", "q_sample_matches_equation_4", """
        def q_sample(x0, t, alpha_bars, eps):
            a = alpha_bars[t].float()[:, None]
            return a * x0 + (1 - a) * eps  # no square roots
     """),
    ("01", "q_sample_matches_equation_4", """
        def q_sample(x0, t, alpha_bars, eps):
            a = alpha_bars[t - 1].float()[:, None]  # off by one
            return a.sqrt() * x0 + (1 - a).sqrt() * eps
     """),
    ("01", "q_sample_broadcasts_over_images", """
        def q_sample(x0, t, alpha_bars, eps):
            a = alpha_bars[t].float()[:, None]  # only right for (B, D) data
            return a.sqrt() * x0 + (1 - a).sqrt() * eps
     """),
    ("01", "posterior_matches_equations_6_7", """
        def posterior_mean_variance(x0, x_t, t, betas, alpha_bars):
            shape = (-1,) + (1,) * (x0.ndim - 1)
            prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
            beta, a, a_prev = (v[t].reshape(shape) for v in (betas, alpha_bars, prev))
            mean = a_prev.sqrt() * beta / (1 - a) * x0 + (1 - beta).sqrt() * (1 - a_prev) / (1 - a) * x_t
            return mean.float(), beta  # beta_t instead of beta-tilde_t
     """),
    ("01", "posterior_at_first_step", """
        def posterior_mean_variance(x0, x_t, t, betas, alpha_bars):
            shape = (-1,) + (1,) * (x0.ndim - 1)
            beta, a, a_prev = (v.reshape(shape) for v in (betas[t], alpha_bars[t], alpha_bars[t - 1]))
            mean = a_prev.sqrt() * beta / (1 - a) * x0 + (1 - beta).sqrt() * (1 - a_prev) / (1 - a) * x_t
            return mean.float(), (1 - a_prev) / (1 - a) * beta  # alpha_bars[-1] at t = 0
     """),
    ("02", "reverse_step_matches_algorithm_2", """
        def reverse_step(eps_model, x_t, t, betas, alpha_bars, z):
            eps = eps_model(x_t, torch.full((x_t.shape[0],), t))
            b, a = betas[t].item(), alpha_bars[t].item()
            mean = (x_t - b / (1 - a) ** 0.5 * eps) / (1 - b) ** 0.5
            return mean if t == 0 else mean + b * z  # sigma_t = beta_t
     """),
    ("02", "reverse_step_last_step_adds_no_noise", """
        def reverse_step(eps_model, x_t, t, betas, alpha_bars, z):
            eps = eps_model(x_t, torch.full((x_t.shape[0],), t))
            b, a = betas[t].item(), alpha_bars[t].item()
            return (x_t - b / (1 - a) ** 0.5 * eps) / (1 - b) ** 0.5 + b ** 0.5 * z
     """),
    ("02", "reverse_step_handles_images_and_timesteps", """
        def reverse_step(eps_model, x_t, t, betas, alpha_bars, z):
            eps = eps_model(x_t, torch.tensor([t]))  # one t for the batch
            b, a = betas[t].item(), alpha_bars[t].item()
            mean = (x_t - b / (1 - a) ** 0.5 * eps) / (1 - b) ** 0.5
            return mean if t == 0 else mean + b ** 0.5 * z
     """),
    ("02", "training_step_returns_l_simple", """
        def training_step(model, optimizer, x0, alpha_bars):
            t = torch.randint(0, len(alpha_bars), (x0.shape[0],))
            eps = torch.randn_like(x0)
            a = alpha_bars[t].float()[:, None]
            loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps, reduction="sum")
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            return loss.item()
     """),
    ("02", "training_step_updates_parameters", """
        def training_step(model, optimizer, x0, alpha_bars):
            t = torch.randint(0, len(alpha_bars), (x0.shape[0],))
            eps = torch.randn_like(x0)
            a = alpha_bars[t].float()[:, None]
            loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)
            loss.backward(); optimizer.step()  # gradients are never zeroed
            return loss.item()
     """),
    ("02", "training_step_draws_t_and_eps", """
        def training_step(model, optimizer, x0, alpha_bars):
            t = torch.randint(0, len(alpha_bars) - 1, (x0.shape[0],))  # never T - 1
            eps = torch.randn_like(x0)
            a = alpha_bars[t].float()[:, None]
            loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            return loss.item()
     """),
]


BUGS += [  # the questions of lessons 1 and 2: a guess or a half measurement does not pass
    ("01", "signal_left_measures_both_schedules", """
        def signal_left(t, T=1000):
            return {"linear": 0.078, "cosine": 0.49, "more": "cosine"}  # the answer at t = 500 only
     """),
    ("01", "signal_left_measures_both_schedules", """
        def signal_left(t, T=1000):
            linear = alpha_bars_from_betas(linear_betas(T))[t].item()
            cosine = alpha_bars_from_betas(cosine_betas(T))[t].item()
            return {"linear": linear, "cosine": cosine, "more": "cosine"}  # always the same name
     """),
    ("01", "signal_left_measures_both_schedules", """
        def signal_left(t, T=1000):
            linear = alpha_bars_from_betas(linear_betas(T))[t - 1].item()  # off by one
            cosine = alpha_bars_from_betas(cosine_betas(T))[t - 1].item()
            return {"linear": linear, "cosine": cosine, "more": "linear" if linear > cosine else "cosine"}
     """),
    ("01", "signal_left_measures_both_schedules", """
        def signal_left(t, T=1000):
            linear = alpha_bars_from_betas(linear_betas(T))[t]  # numbers as 0-dim tensors are fine...
            cosine = alpha_bars_from_betas(cosine_betas(T))[t]
            return {"linear": linear, "cosine": cosine, "more": "cosine" if linear > cosine else "linear"}  # ...the name is not
     """),
    ("02", "sigma_squared_fits_the_data", """
        def sigma_squared(t, betas, alpha_bars, data):
            return betas[t].item()  # beta_t for both
     """),
    ("02", "sigma_squared_fits_the_data", """
        def sigma_squared(t, betas, alpha_bars, data):
            tilde = ((1 - alpha_bars[t - 1]) / (1 - alpha_bars[t]) * betas[t]).item()
            return tilde if data == "standard normal" else betas[t].item()  # the two swapped
     """),
    ("02", "sigma_squared_fits_the_data", """
        def sigma_squared(t, betas, alpha_bars, data):
            if data == "standard normal":
                return betas[t].item()
            return ((1 - alpha_bars[t]) / (1 - alpha_bars[t + 1]) * betas[t + 1]).item()  # off by one
     """),
]


@pytest.mark.parametrize("lesson, check_name, source", BUGS, ids=[f"{b[1]}-{i}" for i, b in enumerate(BUGS)])
def test_checks_reject_common_bugs(lesson, check_name, source):
    expect_rejected(lesson, check_name, source, error=Exception)


def test_no_zero_grad_gets_a_specific_hint():
    source = next(src for _, name, src in BUGS if name == "training_step_updates_parameters")
    expect_rejected("02", "training_step_updates_parameters", source).match("zero_grad")


# --- end to end: solutions, untouched exercises -------------------------------------------

@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_every_solution_scores_full_marks(path):
    report = grader.grade(path)  # a fresh seed every time: the solutions pass on any inputs
    assert report["total"] == report["max"] >= 8, grader.format_report(report)
    assert all(result["status"] == "passed" for result in report["checks"])


@pytest.mark.parametrize("path", EXERCISES, ids=[p.name for p in EXERCISES])
def test_every_untouched_exercise_scores_zero(path):
    report = grader.grade(path)
    assert report["total"] == 0 and report["max"] >= 8, grader.format_report(report)
    for result in report["checks"]:
        assert result["status"] == "not implemented"
        assert result["reason"].startswith("not implemented yet")


def test_solutions_and_exercises_are_paired():
    assert SOLUTIONS and [p.name for p in SOLUTIONS] == [p.name for p in EXERCISES]


# --- end to end: broken and hostile submissions --------------------------------------------

def test_syntax_error_and_imported_reference(tmp_path):
    path = write_notebook(tmp_path / "sub.ipynb",
                          "def linear_betas(T:\n    return None",
                          "from lesson_lib.diffusion.schedules import cosine_beta_schedule as cosine_betas",
                          ALPHA_BARS_OK)
    report = grader.grade(path)
    results = by_name(report)
    linear = results["linear_betas_matches_reference"]
    assert linear["status"] == "missing" and "function linear_betas not defined" in linear["reason"]
    assert "cell 1 could not be parsed" in linear["reason"]
    assert any("cell 1 could not be parsed" in note for note in report["notes"])
    cosine = results["cosine_betas_matches_reference"]
    assert cosine["status"] == "missing" and "imported from lesson_lib.diffusion.schedules" in cosine["reason"]
    assert results["alpha_bars_are_cumulative_product"]["status"] == "passed"
    assert results["q_sample_matches_equation_4"]["reason"].startswith("function q_sample not defined")
    assert report["total"] == 1


def test_failing_imports_and_top_level_code_do_not_stop_grading(tmp_path):
    path = write_notebook(
        tmp_path / "sub.ipynb",
        "import nonexistent_module_for_grader_tests",
        "raise RuntimeError('top-level raise')",
        "import sys\nsys.exit(1)",
        "while True:\n    pass",          # top-level code never runs
        "print('x' * 10**9)",
        LINEAR_OK,
        """
        def q_sample(x0, t, alpha_bars, eps):
            return nonexistent_module_for_grader_tests.q_sample(x0, t, alpha_bars, eps)
        """)
    report = grader.grade(path, timeout=20)
    results = by_name(report)
    assert results["linear_betas_matches_reference"]["status"] == "passed"
    assert any("nonexistent_module_for_grader_tests" in note and "ModuleNotFoundError" in note
               for note in report["notes"])
    q_sample = results["q_sample_matches_equation_4"]
    assert q_sample["status"] == "error" and q_sample["reason"].startswith("NameError")
    assert "cell 7" in q_sample["reason"]
    assert report["total"] == 1


def test_infinite_loop_times_out_and_grading_continues(tmp_path):
    path = write_notebook(tmp_path / "sub.ipynb",
                          "def linear_betas(T, beta_start=1e-4, beta_end=0.02):\n    while True:\n        pass",
                          COSINE_OK)
    report = grader.grade(path, timeout=1)
    results = by_name(report)
    assert results["linear_betas_matches_reference"]["status"] == "timeout"
    assert results["linear_betas_matches_reference"]["reason"] == "timed out after 1s"
    assert results["cosine_betas_matches_reference"]["status"] == "passed"
    assert results["cosine_betas_clips_at_max_beta"]["status"] == "passed"
    assert report["total"] == 2


HOSTILE = """
import os, shutil, sys
import torch

CALLS = 0

def linear_betas(T, beta_start=1e-4, beta_end=0.02):
    # deletes the files around it, then answers correctly
    try:
        for name in os.listdir("."):
            os.remove(name) if os.path.isfile(name) else shutil.rmtree(name, ignore_errors=True)
        shutil.rmtree(os.path.dirname(os.getcwd()), ignore_errors=True)  # the grader's folder
        os.remove(PRECIOUS)
    except OSError:  # already gone: linear_betas is called several times
        pass
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)

def cosine_betas(T, s=0.008, max_beta=0.999):
    sys.exit(3)

def alpha_bars_from_betas(betas):
    os._exit(1)  # kills the worker after the grader's folder was deleted

def q_sample(x0, t, alpha_bars, eps):
    for _ in range(3):
        print("x" * 100_000_000)  # 300 MB of output
        print("y" * 10_000_000, file=sys.stderr)
    a = alpha_bars[t].to(x0.dtype).reshape(-1, *[1] * (x0.ndim - 1))
    return a.sqrt() * x0 + (1 - a).sqrt() * eps

def posterior_mean_variance(x0, x_t, t, betas, alpha_bars):
    global CALLS
    CALLS += 1
    if CALLS == 1:
        return bytearray(100 * 2**30)  # 100 GB
    return torch.ones(100 * 2**30, dtype=torch.uint8)  # 100 GB
"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One notebook whose functions misbehave in ways that do not interfere with each other,
    graded once (each worker start costs about 2 s): returns (report, precious file)."""
    folder = tmp_path_factory.mktemp("hostile")
    precious = folder / "precious.txt"
    precious.write_text("instructor data")
    path = write_notebook(folder / "sub.ipynb", f"PRECIOUS = {str(precious)!r}", HOSTILE)
    return grader.grade(path), precious


def test_deleting_files_still_ends_with_a_score(hostile):
    report, precious = hostile
    assert by_name(report)["linear_betas_matches_reference"]["status"] == "passed"
    # in the bubblewrap sandbox the worker cannot even see precious.txt; without it, the worker's
    # audit hooks refuse to delete anything outside its own folder (see docs/grading.md)
    assert precious.exists()


def test_the_sandboxed_worker_sees_only_its_own_folder(tmp_path):
    """Where bubblewrap works, the worker starts in an empty folder of its own, even when the
    course is installed under /tmp (whose read-only mount points a walk of /tmp would meet)."""
    from lesson_lib.course import sandbox
    if not sandbox.bubblewrap():
        pytest.skip("bubblewrap is not installed or cannot create namespaces here")
    path = write_notebook(tmp_path / "sub.ipynb", """
        import os
        def linear_betas(T, beta_start=1e-4, beta_end=0.02):
            raise RuntimeError(f"folder {os.getcwd()} holds {sorted(os.listdir('.'))}")
        """)
    reason = by_name(grader.grade(path, sandbox="required"))["linear_betas_matches_reference"]["reason"]
    assert f"folder {sandbox.WORK_INSIDE} holds []" in reason


def test_sys_exit_inside_a_function_is_an_error(hostile):
    for name in ("cosine_betas_matches_reference", "cosine_betas_clips_at_max_beta"):
        result = by_name(hostile[0])[name]
        assert result["status"] == "error" and result["reason"].startswith("the code called sys.exit(3)")


def test_os_exit_inside_a_function_loses_only_that_check(hostile):
    results = by_name(hostile[0])
    crashed = results["alpha_bars_are_cumulative_product"]
    assert crashed["status"] == "crashed" and "exited with code 1" in crashed["reason"]
    assert results["q_sample_matches_equation_4"]["status"] == "passed"  # in a new worker


def test_gigantic_output_is_dropped(hostile):
    results = by_name(hostile[0])
    assert results["q_sample_matches_equation_4"]["status"] == "passed"
    assert results["q_sample_broadcasts_over_images"]["status"] == "passed"


def test_huge_memory_is_an_error(hostile):
    for name in ("posterior_matches_equations_6_7", "posterior_at_first_step"):
        result = by_name(hostile[0])[name]
        assert result["status"] == "error" and result["reason"].startswith("ran out of memory"), result


def test_hostile_submission_total(hostile):
    report = hostile[0]
    assert (report["total"], report["max"]) == (4, 12)
    assert report["notes"] == []


@pytest.mark.parametrize("definitions, status, reason", [
    ("class Model:\n    while True:\n        pass", "timeout", "timed out after 1s while running the notebook's"),
    ("import os\ndef f(x=os._exit(1)):\n    pass", "crashed", "exited with code 1"),
], ids=["hang", "exit"])
def test_definitions_that_hang_or_kill_the_worker(tmp_path, monkeypatch, definitions, status, reason):
    monkeypatch.setattr(session, "MIN_SETUP_SECONDS", 1)
    path = write_notebook(tmp_path / "sub.ipynb", LINEAR_OK, definitions, COSINE_OK)
    report = grader.grade(path, timeout=1)
    runnable = [r for r in report["checks"] if r["status"] != "missing"]
    assert len(runnable) == 3 and report["total"] == 0
    for result in runnable:  # the definitions run before any check, so every check is lost
        assert result["status"] == status and reason in result["reason"]


def test_unreadable_notebook_scores_zero_with_a_reason(tmp_path):
    path = tmp_path / "01_garbage.ipynb"
    path.write_text("{ this is not json")
    report = grader.grade(path)
    assert report["lesson"] == "01" and report["total"] == 0
    assert all(r["status"] == "error" and "could not read the notebook" in r["reason"]
               for r in report["checks"])


# --- the command line -----------------------------------------------------------------------

def test_command_line_prints_a_table_and_writes_json(tmp_path):
    path = write_notebook(tmp_path / "alice.ipynb", LINEAR_OK)
    out = tmp_path / "alice.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "lesson_lib.course.grader", str(path), "--lesson", "01",
                           "--json", str(out), "--timeout", "20"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "linear_betas_matches_reference" in done.stdout and "1/12" in done.stdout
    report = json.loads(out.read_text())
    assert (report["lesson"], report["total"], report["max"]) == ("01", 1, 12)
    assert [r["name"] for r in report["checks"]] == [c.name for c in load_checks("01")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.ipynb", "alice.json"]  # no temp files left


def test_usage_errors_exit_with_code_2(tmp_path, capsys):
    path = write_notebook(tmp_path / "sub.ipynb")
    assert grader.main([str(tmp_path / "missing.ipynb")]) == 2
    assert "no such notebook" in capsys.readouterr().err
    assert grader.main([str(path), "--lesson", "99"]) == 2
    assert "unknown lesson 99" in capsys.readouterr().err
    plain = nbformat.v4.new_notebook()
    nbformat.write(plain, str(tmp_path / "alice.ipynb"))
    assert grader.main([str(tmp_path / "alice.ipynb")]) == 2
    for bad in (["--memory-mb", "100"], ["--timeout", "0"], ["--json", str(tmp_path / "no" / "x.json")]):
        with pytest.raises(SystemExit) as exit_:
            grader.main([str(path)] + bad)
        assert exit_.value.code == 2


def test_nothing_to_run_needs_no_worker_and_exits_0(tmp_path, capsys):
    path = write_notebook(tmp_path / "sub.ipynb", "x = compute_something()", lesson="02")
    out = tmp_path / "report.json"
    assert grader.main([str(path), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["total"] == 0 and report["max"] == 12
    assert all(r["status"] == "missing" for r in report["checks"])
    assert "total" in capsys.readouterr().out
