"""Automatic checks for the exercise notebooks, one module per lesson.

``lesson_lib/course/checks/lesson01.py`` holds the checks for the lesson-1 exercises, and so on.
A check is a plain function that receives the student's namespace (a dict of the
functions their notebook defines) and raises ``AssertionError`` with a helpful message
when something is wrong. The :func:`check` decorator registers it with its points and
the names of the functions it needs::

    @check(points=1, uses=["linear_betas"])
    def linear_betas_matches_reference(ns):
        \"\"\"linear_betas(T) equals the linear schedule of Ho et al. (2020).\"\"\"
        expect_close(ns["linear_betas"](1000), linear_beta_schedule(1000), "linear_betas(1000)")

The grader (:mod:`lesson_lib.course.grader`) gives 0 points, without calling the check, when a
function in ``uses`` is missing, and runs every check in a separate, resource-limited
process. This module itself does not import torch, so that listing the lessons is cheap.
"""

import dataclasses
import importlib
import pkgutil

import torch


@dataclasses.dataclass(frozen=True)
class Check:
    """One registered check: ``fn(ns)`` passes or raises ``AssertionError``."""

    name: str
    points: int
    uses: tuple
    description: str
    fn: object


_REGISTRY = {}  # module name -> list of Check, in definition order


def check(points, uses):
    """Register the decorated function as a check worth ``points`` (1 to 3) that needs the
    student functions named in ``uses``. Its docstring's first line describes it."""
    if isinstance(points, bool) or not isinstance(points, int) or not 1 <= points <= 3:
        raise ValueError(f"points must be an integer from 1 to 3, got points={points!r}")
    if isinstance(uses, str):
        raise TypeError(f"uses must be a list of function names, got the string {uses!r}; "
                        f"write uses=[{uses!r}]")

    def register(fn):
        if not fn.__doc__:
            raise ValueError(f"check {fn.__name__} needs a docstring: it is shown to instructors")
        description = fn.__doc__.strip().splitlines()[0]
        _REGISTRY.setdefault(fn.__module__, []).append(
            Check(fn.__name__, points, tuple(uses), description, fn))
        return fn

    return register


def available_lessons():
    """The lessons that have checks, e.g. ``["01", "02"]`` (found without importing them)."""
    return sorted(m.name[len("lesson"):] for m in pkgutil.iter_modules(__path__)
                  if m.name.startswith("lesson"))


def load_checks(lesson):
    """The checks of ``lesson`` (e.g. ``"01"``), in the order they are defined."""
    if lesson not in available_lessons():
        raise ValueError(f"no checks for lesson {lesson!r}; lessons with checks: "
                         f"{', '.join(available_lessons())}")
    module = importlib.import_module(f"{__name__}.lesson{lesson}")
    return list(_REGISTRY.get(module.__name__, []))


# --- assertion helpers shared by the lesson modules ------------------------------------

def expect_tensor(value, what, shape=None, dtype=None):
    """Fail unless ``value`` is a tensor (of ``shape`` and ``dtype``, when given)."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{what} returned {type(value).__name__}, expected a torch.Tensor")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise AssertionError(f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if dtype is not None and value.dtype != dtype:
        raise AssertionError(f"{what} has dtype {value.dtype}, expected {dtype}")


def expect_close(actual, expected, what, rtol=1e-5, atol=1e-8, hint="", check_dtype=True):
    """Fail unless tensor ``actual`` matches ``expected`` in shape, dtype and value; the
    message names the worst entry and ends with ``hint``."""
    import torch

    expect_tensor(actual, what, shape=expected.shape,
                  dtype=expected.dtype if check_dtype else None)
    actual_, expected_ = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(actual_).all() and torch.isfinite(expected_).all():
        raise AssertionError(f"{what} contains NaN or inf. {hint}".strip())
    error = (actual_ - expected_).abs()
    bad = error > atol + rtol * expected_.abs()
    if bad.any():
        worst = int(torch.argmax(torch.where(bad, error, torch.zeros_like(error))))
        index = _unravel(worst, tuple(expected_.shape))
        raise AssertionError(
            f"{what} is wrong at {int(bad.sum())} of {bad.numel()} entries; e.g. at index {index} "
            f"got {actual_.flatten()[worst].item():.6g}, expected {expected_.flatten()[worst].item():.6g}. "
            f"{hint}".strip())


def expect_sgd_step(before, after, grads, previous_grads, lr, step):
    """One plain SGD step: ``after == before - lr * grads`` for every parameter.

    ``before`` is a copy of the model taken before the student's step, ``after`` the model
    after it, ``grads`` the gradients of L_simple at ``before`` for the t and eps the step
    used, ``previous_grads`` those of the previous step (or None): a step that matches
    their sum forgot ``optimizer.zero_grad()``.
    """
    old, new = list(before.parameters()), list(after.parameters())
    if all(torch.equal(p, q) for p, q in zip(old, new)):
        raise AssertionError(f"training step {step} did not change the parameters: call "
                             f"loss.backward() and then optimizer.step()")
    if previous_grads is not None and all(
            torch.allclose(q, p - lr * (g + h), rtol=1e-4, atol=1e-6)
            for p, q, g, h in zip(old, new, grads, previous_grads)):
        raise AssertionError("the second training step used the sum of both steps' gradients: "
                             "call optimizer.zero_grad() before loss.backward()")
    for (name, _), p, q, g in zip(before.named_parameters(), old, new, grads):
        expect_close(q, (p - lr * g).detach(), f"parameter {name} after training step {step}",
                     rtol=1e-4, atol=1e-6, hint="One step must be: zero the gradients, compute "
                     "L_simple, loss.backward(), optimizer.step().")


def expect_fresh_t_and_eps(t, eps, t2, eps2, T):
    """The t and eps of two training steps: t uniform over 0..T-1, eps standard normal, and
    both drawn afresh at every call."""
    B = len(t)
    counts = torch.bincount(t, minlength=T)
    if counts.min() < 0.7 * B / T or counts.max() > 1.3 * B / T:
        raise AssertionError(f"with T = {T} and a batch of {B}, each timestep should be drawn about "
                             f"{B // T} times, but the counts are {counts.tolist()}: draw t uniformly "
                             f"from 0..T-1 (torch.randint(0, T, ...))")
    if abs(eps.mean().item()) > 0.05 or abs(eps.std().item() - 1) > 0.05:
        raise AssertionError(f"the noise eps (recovered from x_t) has mean {eps.mean().item():.3f} and "
                             f"std {eps.std().item():.3f}; it must be standard normal (torch.randn_like(x0))")
    if torch.equal(t, t2) or torch.allclose(eps, eps2):
        raise AssertionError("training_step drew the same t or eps on two calls; draw fresh ones every "
                             "call (do not re-seed the generator inside training_step)")


def _unravel(flat, shape):
    """The index into ``shape`` of the ``flat``-th entry (row-major), as an int or tuple."""
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    index = tuple(reversed(index))
    return index[0] if len(index) == 1 else index
