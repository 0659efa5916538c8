"""Feedback in the exercise notebook: what the grader would say about one exercise.

The cell under each exercise runs::

    from lesson_lib.course import feedback
    feedback.check("01", "linear_betas", globals())

and prints one line per check of lesson 01 that uses ``linear_betas``, with the check's name,
its points and, when it fails, the grader's reason (the judge's hint)::

    ✓ linear_betas_matches_reference (1/1)
    ✗ q_sample_broadcasts_over_images (0/1): q_sample for x0 of shape (5, 3, 8, 8) ... Reshape ...
    ✗ posterior_matches_equations_6_7 (0/2): function posterior_mean_variance is not defined yet

These are the grader's own checks (:mod:`lesson_lib.course.checks`), run through
:meth:`Check.fn <lesson_lib.course.checks.Check.fn>`: the same inputs (from ``seed``), the same
probe, the same judge and the same points. Only the inputs differ from a real grading run,
which draws a fresh seed.

This is for the student's own feedback, in the student's own process. It is not grading:
here the student's code and the judge share one process, so nothing stops a notebook from
fooling it. Grades come only from the sandboxed grader (``lesson-lib-grade
NOTEBOOK.ipynb``, see :mod:`lesson_lib.course.grader`), which never runs student code beside
the judge.

A mistake in the student's code never crashes the cell: it becomes a ✗ line with the
exception's type and message (there is no time limit here: a function that never returns
hangs the cell, as it would any other). Mistakes in the call itself (an unknown lesson, a name that no
check uses) raise ``ValueError``, because the notebook, not the student's answer, is wrong.

``check`` prints and returns None (so a notebook shows only the lines); :func:`run` returns the
same results as a list of dicts for code that wants them.
"""

from pathlib import Path

__all__ = ["check", "run", "format_row"]

_LIBRARY = str(Path(__file__).resolve().parents[1])  # lesson_lib/: frames there are not the student's


def _lesson_id(lesson):
    """``1``, ``"1"``, ``"01"`` -> ``"01"``; ``"1b"`` -> ``"01b"``."""
    from lesson_lib.course.checks import lesson_id

    found = lesson_id(lesson)
    if found is None:
        raise ValueError(f"lesson must be a lesson number such as \"01\" (or \"01b\"), got lesson={lesson!r}")
    return found


def _selected(lesson, names):
    from lesson_lib.course.checks import load_checks

    checks = load_checks(lesson)
    if names is None:
        return checks
    names = [names] if isinstance(names, str) else list(names)
    used = {name for c in checks for name in c.uses}
    unknown = [name for name in names if name not in used]
    if unknown:
        raise ValueError(f"no check of lesson {lesson} uses {', '.join(unknown)}; the checked names are "
                         f"{', '.join(sorted(used))}")
    return [c for c in checks if set(c.uses) & set(names)]


def _in_judge(error, judge):
    """Whether ``error`` was raised while the judge ran (else while the case or probe ran)."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is judge.__code__:
            return True
        tb = tb.tb_next
    return False


def _raised_in_student_code(error):
    """Whether the innermost frame of ``error`` lies outside lesson_lib (the student's code,
    or torch called by it)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and not str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_LIBRARY)


def _reason(check, error):
    """The grader's reason for ``error`` (the same wording as the grader and its worker)."""
    message = str(error)
    if _in_judge(error, check.judge):
        if isinstance(error, AssertionError):
            return message or "assertion failed"
        return f"the answer has an unexpected form ({type(error).__name__}: {message[:200]})"
    if isinstance(error, NotImplementedError):
        return "not implemented yet (replace the raise NotImplementedError line with your code)"
    if isinstance(error, AssertionError) and not _raised_in_student_code(error):
        return message or "assertion failed"  # the probe's own assertion: a hint, as in the grader
    return f"{type(error).__name__}{': ' + message if message else ''}{_where(error)}"


def _where(error):
    """`` (line 3, in q_sample)`` for the innermost frame of ``error`` outside lesson_lib and
    torch (the student's code), or ``""``."""
    import torch

    skip = (_LIBRARY, str(Path(torch.__file__).resolve().parent))
    where = ""
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if not str(Path(code.co_filename).resolve()).startswith(skip):
            where = f" (line {tb.tb_lineno}, in {code.co_name})"
        tb = tb.tb_next
    return where


def run(lesson, names=None, ns=None, seed=0):
    """Run the checks of ``lesson`` that use any of ``names`` (a name or a list of names; None:
    every check of the lesson) on the functions in the namespace ``ns`` (a notebook's
    ``globals()``), in this process. Returns one dict per check: ``name``, ``points``,
    ``max_points``, ``status`` (as in the grader's report: "passed", "failed", "error",
    "missing" or "not implemented") and ``reason``.
    Torch's global random state is left as it was."""
    import torch

    from lesson_lib.course import protocol
    from lesson_lib.course.checks import explain

    lesson = _lesson_id(lesson)
    ns = {} if ns is None else ns
    rows = []
    for check in _selected(lesson, names):
        row = {"name": check.name, "points": 0, "max_points": check.points, "status": "failed", "reason": ""}
        missing = [name for name in check.uses if name not in ns]
        if missing:
            row.update(status="missing", reason=f"function {missing[0]} is not defined yet (run its cell first)")
        else:
            try:
                with torch.random.fork_rng(devices=[]):
                    check.fn(ns, seed=seed)
            except Exception as error:  # the student's mistake: a line of feedback, never a crash
                status = ("not implemented" if isinstance(error, NotImplementedError) and not
                          _in_judge(error, check.judge) else "failed" if isinstance(error, AssertionError)
                          or _in_judge(error, check.judge) else "error")
                row.update(status=status, reason=_reason(check, error))
            else:
                row.update(status="passed", points=check.points)
        rows.append(row)
    explain(_selected(lesson, names), rows)
    for row in rows:
        earlier = row.pop("see_first", None)
        if earlier:
            row["reason"] = f"({earlier} failed too: fix it first, it may be the same mistake) {row['reason']}"
        row["reason"] = protocol.printable(row["reason"], 800)
    return rows


def format_row(row):
    """``"✓ name (1/1)"`` or ``"✗ name (0/2): reason"``."""
    mark = "✓" if row["status"] == "passed" else "✗"
    line = f"{mark} {row['name']} ({row['points']}/{row['max_points']})"
    return line if row["status"] == "passed" else f"{line}: {row['reason']}"


def check(lesson, names=None, ns=None, seed=0):
    """Print what the grader would say about ``names`` in ``ns``: one line per check (see
    :func:`run` for the arguments). For the student's own feedback; grading runs in the
    sandboxed grader, never here. Returns None."""
    for row in run(lesson, names, ns, seed):
        print(format_row(row))
