"""Every judge against answers that a worker under the student's control can send.

The worker runs student code, so it can send *any* plain data as a check's answer: a probe
replaced by one that answers ``[]``, NaN where numbers belong, a field left out, the inputs
echoed back. Each judge must fail every such answer (an AssertionError with a reason), and must
pass the honest one. The honest answer comes from the solution notebook's functions, run by the
check's own probe in this process (trusted code: the tests run only the course's solutions).

Also: every check with inputs draws them from the run's seed, so no table of answers to fixed
inputs can pass it. (A check without inputs asks a question with one answer, such as which
variance is exact for a single point: knowing the answer is the point.)
"""

import math

import pytest
import torch

from lesson_lib.course import protocol
from lesson_lib.course.checks import available_lessons, load_checks

from grading_helpers import definitions

SEEDS = (0, 1)


def _answer(check, lesson, seed):
    """(case, the answer the solution gives), as the grader would see them."""
    case = check.make_case(seed)
    sent = protocol.decode_value(protocol.encode_value(case))
    torch.manual_seed(seed + 1)
    answer = protocol.decode_value(protocol.encode_value(check.probe(definitions("solutions", lesson), sent)))
    return case, answer


def _map(value, tensor=None, number=None):
    """``value`` with every tensor passed through ``tensor`` and every float through ``number``."""
    if isinstance(value, torch.Tensor):
        return tensor(value) if tensor else value
    if type(value) is float:
        return number(value) if number else value
    if isinstance(value, list):
        return [_map(v, tensor, number) for v in value]
    if isinstance(value, tuple):
        return tuple(_map(v, tensor, number) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, tensor, number) for k, v in value.items()}
    return value


def _float_filled(fill):
    return lambda t: torch.full_like(t, fill) if t.is_floating_point() else t


class _Reading(dict):
    """A dict that remembers which keys a judge read."""

    def __init__(self, data, read):
        super().__init__(data)
        self.read = read

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def _keys_read(check, case, answer):
    """The keys the judge reads from the answer's dict (or from the first dict of a list)."""
    read = set()
    if isinstance(answer, dict):
        check.judge(case, _Reading(answer, read))
    elif isinstance(answer, list) and answer and isinstance(answer[0], dict):
        check.judge(case, [_Reading(answer[0], read)] + answer[1:])
    return read


def _without_a_field(value, read):
    """Each variant of ``value`` with one field the judge reads removed (one level down in lists)."""
    if isinstance(value, dict):
        for key in sorted(read):
            yield f"without {key!r}", {k: v for k, v in value.items() if k != key}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        for key in sorted(read):
            yield f"without {key!r} in the first item", [{k: v for k, v in value[0].items() if k != key}] + value[1:]


def _tensors(value):
    """Every tensor inside ``value`` (lists, tuples and dicts searched)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _echo(answer, case):
    """The answer with each tensor replaced by an input of the same shape and dtype, when the
    case has one: what a function that only peeks at its caller's frames can return."""
    inputs = list(_tensors(case))

    def swap(t):
        return next((i.clone() for i in inputs if i.shape == t.shape and i.dtype == t.dtype), t)
    return _map(answer, tensor=swap)


def _adversaries(answer, read, case):
    yield "an empty list", []
    yield "an empty dict", {}
    yield "None", None
    yield "NaN", math.nan
    yield "NaN tensors", _map(answer, tensor=_float_filled(math.nan))
    yield "infinite tensors", _map(answer, tensor=_float_filled(math.inf))
    yield "NaN numbers", _map(answer, number=lambda v: math.nan)
    yield "NaN everywhere", _map(answer, tensor=_float_filled(math.nan), number=lambda v: math.nan)
    yield "zeros", _map(answer, tensor=torch.zeros_like, number=lambda v: 0.0)
    yield "the inputs echoed", _echo(answer, case)
    if isinstance(answer, list) and answer:
        yield "the last item dropped", answer[:-1]
        yield "only the first item", answer[:1]
        yield "the first item twice", [answer[0]] * len(answer)
    yield from _without_a_field(answer, read)


def _same_where_read(a, b, read):
    """Whether ``a`` and ``b`` agree on everything the judge reads (the keys in ``read`` of a
    dict, or of a list's first dict; all of anything else)."""
    if read and isinstance(a, dict) and isinstance(b, dict):
        return all(k in a and k in b and _same(a[k], b[k]) for k in read)
    if read and isinstance(a, list) and isinstance(b, list) and a and b and isinstance(a[0], dict):
        return len(a) == len(b) and _same_where_read(a[0], b[0], read) and _same(a[1:], b[1:])
    return _same(a, b)


def _same(a, b):
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.nan_to_num(), b.nan_to_num())
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


CHECKS = [(lesson, check) for lesson in available_lessons() for check in load_checks(lesson)]


@pytest.mark.parametrize("lesson, check", CHECKS, ids=[f"{l}-{c.name}" for l, c in CHECKS])
def test_a_judge_fails_every_answer_a_worker_could_forge(lesson, check):
    case, honest = _answer(check, lesson, 0)
    check.judge(case, honest)                              # the honest answer passes
    read = _keys_read(check, case, honest)
    for what, forged in _adversaries(honest, read, case):
        if _same_where_read(forged, honest, read):
            continue                                       # e.g. "zeros" when the answer is zero
        try:
            check.judge(case, protocol.decode_value(protocol.encode_value(forged)))
        except AssertionError as error:
            assert str(error), (check.name, what)
        else:
            pytest.fail(f"{check.name} passed a forged answer: {what}")


@pytest.mark.parametrize("lesson, check", CHECKS, ids=[f"{l}-{c.name}" for l, c in CHECKS])
def test_inputs_change_with_the_seed(lesson, check):
    if check.case is None:
        pytest.skip("a question without inputs")
    a, b = (protocol.encode_value(check.make_case(seed)) for seed in SEEDS)
    assert a != b, f"{check.name}: the same inputs for every seed could be answered from a table"
