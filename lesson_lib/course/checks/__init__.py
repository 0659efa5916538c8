"""Automatic checks for the exercise notebooks, one module per lesson.

``lesson_lib/course/checks/lesson01.py`` holds the checks for the lesson-1 exercises, and so on.
Each check has three parts, because the student's code and the code that scores it must never
share a process (student code could otherwise rewrite the comparison, or read the expected
answer from the caller's frame):

* ``case()`` builds the check's inputs. It runs in the grader, after the grader has seeded
  torch with a fresh seed for this run, so a submission cannot answer from a table of fixed
  inputs. It returns plain data: tensors, numbers, strings, lists and dicts.
* ``probe(ns, case)`` runs in the sandboxed worker. It calls the student's functions (found in
  the namespace ``ns``) on the case's inputs and returns what they gave back, again as plain
  data. It never decides anything: whatever it returns is only evidence.
* the decorated function, the *judge*, ``judge(case, answer)``, runs in the grader. It computes
  the reference answer with lesson_lib and raises ``AssertionError`` with a helpful message when
  the student's answer is wrong.

::

    @check(points=1, uses=["linear_betas"], case=lambda: {"calls": [[[1000], {}]]},
           probe=call_each("linear_betas"))
    def linear_betas_matches_reference(case, answer):
        \"\"\"linear_betas(T) equals the linear schedule of Ho et al. (2020).\"\"\"
        for (args, kwargs), got in pairs(case["calls"], answer):
            expect_close(got, linear_beta_schedule(*args), f"linear_betas({args[0]})")

The grader (:mod:`lesson_lib.course.grader`) gives 0 points, without calling the check, when a
function in ``uses`` is missing. This module itself does not import torch, so that listing the
lessons (and the grader's usage errors) work in a Python without it.
"""

import dataclasses
import importlib
import pkgutil
import re

LESSON_ID = re.compile(r"(\d{1,3})([a-z]?)")   # 01, 2, 01b: a number, then an optional letter


@dataclasses.dataclass(frozen=True)
class Check:
    """One registered check (see the module docstring for its three parts)."""

    name: str
    points: int
    uses: tuple
    description: str
    case: object
    probe: object
    judge: object

    def make_case(self, seed):
        """The check's inputs, drawn from ``seed`` without disturbing torch's global generator."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.case() if self.case is not None else {}

    def fn(self, ns, seed=0):
        """Run all three parts in this process, the probe's answer passed through the same
        encoding the worker uses. For tests only: the grader never runs student code in its own
        process."""
        import torch

        from lesson_lib.course import protocol

        case = self.make_case(seed)
        sent = protocol.decode_value(protocol.encode_value(case))
        torch.manual_seed(seed + 1)
        answer = protocol.decode_value(protocol.encode_value(self.probe(ns, sent)))
        self.judge(case, answer)


_REGISTRY = {}  # module name -> list of Check, in definition order


def check(points, uses, probe, case=None):
    """Register the decorated judge as a check worth ``points`` (1 to 3) that needs the student
    functions named in ``uses``; ``case`` builds its inputs and ``probe`` calls the student's
    code on them. The judge's docstring's first line describes the check."""
    if isinstance(points, bool) or not isinstance(points, int) or not 1 <= points <= 3:
        raise ValueError(f"points must be an integer from 1 to 3, got points={points!r}")
    if isinstance(uses, str):
        raise TypeError(f"uses must be a list of function names, got the string {uses!r}; "
                        f"write uses=[{uses!r}]")

    def register(judge):
        if not judge.__doc__:
            raise ValueError(f"check {judge.__name__} needs a docstring: it is shown to instructors")
        description = judge.__doc__.strip().splitlines()[0]
        _REGISTRY.setdefault(judge.__module__, []).append(
            Check(judge.__name__, points, tuple(uses), description, case, probe, judge))
        return judge

    return register


def lesson_id(value):
    """``1``, ``"1"``, ``"01"`` -> ``"01"``; ``"1b"`` -> ``"01b"`` (a lesson inserted between two
    others has a letter); None for anything else."""
    match = LESSON_ID.fullmatch(str(value).strip().lower()) if not isinstance(value, bool) else None
    return f"{int(match.group(1)):02d}{match.group(2)}" if match else None


def available_lessons():
    """The lessons that have checks, e.g. ``["01", "02"]`` (found without importing them)."""
    return sorted(m.name[len("lesson"):] for m in pkgutil.iter_modules(__path__)
                  if m.name.startswith("lesson"))


def load_checks(lesson):
    """The checks of ``lesson`` (e.g. ``"01"``), in the order they are defined (imports torch)."""
    if lesson not in available_lessons():
        raise ValueError(f"no checks for lesson {lesson!r}; lessons with checks: "
                         f"{', '.join(available_lessons())}")
    module = importlib.import_module(f"{__name__}.lesson{lesson}")
    return list(_REGISTRY.get(module.__name__, []))


def explain(checks, rows):
    """Help a student read a list of results (``rows``, one dict per check of ``checks``, in the
    order they are defined, each with ``status`` and ``reason``), in place:

    * an *error* (the student's code raised) names the check's topic, which the exception's
      own message does not;
    * a failure after an earlier failure of the same function names that check in
      ``see_first``: one mistake often fails several checks, and the later hint may point at
      the wrong fix until the first is fixed."""
    failed = []
    for check, row in zip(checks, rows):
        if row["status"] == "error":
            row["reason"] = f"{row['reason']} [this check: {check.description}]"
        if row["status"] in ("failed", "error", "timeout", "crashed"):
            earlier = next((c.name for c in failed if set(c.uses) & set(check.uses)), None)
            if earlier:
                row["see_first"] = earlier
            failed.append(check)
    return rows
