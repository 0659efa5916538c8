"""Shared by the grader tests: a notebook's definitions as the grader runs them, a check that
must reject a wrong implementation, and the same over several of the checks' seeds."""
import textwrap
import types
from pathlib import Path

import nbformat
import pytest

from lesson_lib.course import notebook, worker
from lesson_lib.course.checks import load_checks

REPO = Path(__file__).resolve().parent.parent
_CACHE = {}


def definitions(folder, lesson):
    """The definitions of lesson ``lesson``'s notebook in ``folder`` ("solutions" or
    "exercises"), run in this process (trusted code) as the grader runs them; a fresh dict."""
    key = (folder, lesson)
    if key not in _CACHE:
        path = next((REPO / folder).glob(f"{lesson}_*.ipynb"))
        nb = nbformat.read(str(path), as_version=4)
        assert nb.metadata["lesson_lib"]["lesson"] == lesson
        namespace = types.ModuleType("submission").__dict__
        kept = notebook.read_definitions(nb)
        assert worker._exec_definitions(kept["cells"], namespace, kept["constants"]) == []
        _CACHE[key] = namespace
    return dict(_CACHE[key])


def expect_rejected(lesson, check_name, source, error=AssertionError):
    """Run ``source`` (a wrong implementation) over the solution's definitions and expect the
    check ``check_name`` to fail with ``error`` and a non-empty message; returns pytest's
    ExceptionInfo so a caller can look at the message."""
    namespace = definitions("solutions", lesson)
    exec(textwrap.dedent(source), namespace)
    check = next(c for c in load_checks(lesson) if c.name == check_name)
    with pytest.raises(error) as failure:
        check.fn(namespace)
    assert str(failure.value)
    return failure


def solution_with(lesson, source):
    """The solution's definitions of ``lesson`` with ``source`` run over them (a student's answer replacing some)."""
    namespace = definitions("solutions", lesson)
    exec(textwrap.dedent(source), namespace)
    return namespace


def rejected_on_seeds(lesson, check_name, source, seeds=(0, 1, 2), error=AssertionError):
    """The check rejects ``source`` (over the solution's other definitions) on every seed, each time with a
    message; returns the messages."""
    namespace, check = solution_with(lesson, source), next(c for c in load_checks(lesson) if c.name == check_name)
    messages = []
    for seed in seeds:
        with pytest.raises(error) as failure:
            check.fn(namespace, seed=seed)
        assert str(failure.value)
        messages.append(str(failure.value))
    return messages


def passes_on_seeds(lesson, check_name, source="", seeds=(0, 1, 2)):
    """The check accepts ``source`` (over the solution's other definitions) on every seed."""
    namespace, check = solution_with(lesson, source), next(c for c in load_checks(lesson) if c.name == check_name)
    for seed in seeds:
        check.fn(namespace, seed=seed)
