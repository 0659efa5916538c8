"""What the lesson modules' checks share: probes that call the student's functions, and the
judges' assertions, each failing with a message that names what is wrong and ends with a hint.

A judge runs in the grader on plain data that a worker under the student's control sent, so it
must fail *every* answer that is not right: a list of the wrong length (:func:`pairs`, never
``zip``), a missing field (:func:`field`), NaN or infinity (:func:`as_number`,
:func:`expect_close`), a tensor of another type, shape or dtype (:func:`expect_tensor`).
"""

import math

from lesson_lib.course.protocol import type_name

# --- probes -------------------------------------------------------------------------------

def call_each(name):
    """A probe that calls the student's function ``name`` once per ``[args, kwargs]`` in
    ``case["calls"]`` (tensors cloned first) and answers with the list of results."""

    def probe(ns, case):
        return [ns[name](*[_fresh(a) for a in args], **{k: _fresh(v) for k, v in kwargs.items()})
                for args, kwargs in case["calls"]]

    probe.__name__ = f"call_each_{name}"
    return probe


def _fresh(value):
    return value.clone() if hasattr(value, "clone") else value


def pairs(expected, answer):
    """``zip(expected, answer)``, after making sure the answer is a list of the same length
    (a worker that sends something else gets a clear failure, not a crash)."""
    if not isinstance(answer, (list, tuple)) or len(answer) != len(expected):
        raise AssertionError(f"the answer should hold {len(expected)} results, got {type_name(answer)}")
    return zip(expected, answer)


def field(answer, key):
    """``answer[key]``, failing with a message (not a KeyError) when the answer has no such field."""
    if not isinstance(answer, dict) or key not in answer:
        raise AssertionError(f"the answer has no field {key!r}")
    return answer[key]


def call_described(args, kwargs=None):
    """``(1000, s=0.02)`` -> ``"1000, s=0.02"``, to name a call in a message."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
    return ", ".join(parts)


# --- assertion helpers shared by the judges -----------------------------------------------

def expect_tensor(value, what, shape=None, dtype=None):
    """Fail unless ``value`` is a tensor (of ``shape`` and ``dtype``, when given)."""
    import torch

    if type(value) is not torch.Tensor:
        raise AssertionError(f"{what} returned {type_name(value)}, expected a torch.Tensor")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise AssertionError(f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if dtype is not None and value.dtype != dtype:
        raise AssertionError(f"{what} has dtype {value.dtype}, expected {dtype}")


def as_number(value, what, hint=""):
    """``value`` as a finite Python float. A student may answer with an int or a float, or a
    tensor holding one number (``x.sum()``; numpy and scipy scalars arrive as floats, see
    :func:`lesson_lib.course.protocol.encode_value`). Anything else, NaN or infinity fails:
    NaN compares false with everything, so an unchecked ``abs(got - want) > tol`` would pass it."""
    import torch

    if type(value) in (int, float):
        number = float(value)
    elif type(value) is torch.Tensor and value.numel() == 1 and value.dtype != torch.bool \
            and not value.is_complex():
        number = float(value.reshape(()).item())
    else:
        raise AssertionError(f"{what} is {type_name(value)}, expected a number")
    if not math.isfinite(number):
        raise AssertionError(f"{what} is {number}, expected a finite number. {hint}".strip())
    return number


def as_integer(value, what):
    """``value`` as a Python int: an int, or an integer tensor holding one number."""
    import torch

    if type(value) is int:
        return value
    if type(value) is torch.Tensor and value.numel() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool and not value.is_complex():
        return int(value.reshape(()).item())
    raise AssertionError(f"{what} is {type_name(value)}, expected an int")


def expect_number(value, expected, what, rtol=1e-6, atol=1e-12, hint=""):
    """Fail unless ``value`` is a finite number within ``atol + rtol * |expected|`` of ``expected``."""
    number = as_number(value, what, hint)
    if not abs(number - expected) <= atol + rtol * abs(expected):
        raise AssertionError(f"{what} = {number:.6g}, expected {expected:.6g}. {hint}".strip())
    return number


def expect_finite(value, what, hint=""):
    """Fail unless tensor ``value`` holds no NaN or infinity (evidence a judge computes with)."""
    import torch

    expect_tensor(value, what)
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise AssertionError(f"{what} contains NaN or inf. {hint}".strip())


def expect_close(actual, expected, what, rtol=1e-5, atol=1e-8, hint="", check_dtype=True):
    """Fail unless tensor ``actual`` matches ``expected`` in shape, dtype and value; the
    message names the worst entry and ends with ``hint``. Where ``expected`` is finite,
    ``actual`` must be finite too (a NaN is never close to a number)."""
    import torch

    expect_tensor(actual, what, shape=expected.shape,
                  dtype=expected.dtype if check_dtype else None)
    actual_, expected_ = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(actual_)[torch.isfinite(expected_)].all():
        raise AssertionError(f"{what} contains NaN or inf. {hint}".strip())
    error = (actual_ - expected_).abs()
    bad = ~torch.isclose(actual_, expected_, rtol=rtol, atol=atol, equal_nan=True)
    if bad.any():
        worst = int(torch.argmax(torch.where(bad, error, torch.zeros_like(error))))
        index = _unravel(worst, tuple(expected_.shape))
        raise AssertionError(
            f"{what} is wrong at {int(bad.sum())} of {bad.numel()} entries; e.g. at index {index} "
            f"got {actual_.flatten()[worst].item():.6g}, expected {expected_.flatten()[worst].item():.6g}. "
            f"{hint}".strip())


def expect_sgd_step(before, after, grads, previous_grads, lr, step):
    """One plain SGD step: ``after == before - lr * grads`` for every parameter.

    ``before`` is the model as it was before the student's step (rebuilt here, in the
    grader), ``after`` the parameters the worker reported after the step (a dict from
    parameter name to tensor), ``grads`` the gradients of L_simple at ``before`` for the t and
    eps the step used, ``previous_grads`` those of the previous step (or None): a step that
    matches their sum forgot ``optimizer.zero_grad()``.
    """
    import torch

    names = [name for name, _ in before.named_parameters()]
    old = [p.detach() for p in before.parameters()]
    new = [field(after, name) for name in names]
    for name, p, q in zip(names, old, new):
        expect_tensor(q, f"parameter {name} after training step {step}", shape=p.shape, dtype=p.dtype)
    if all(torch.equal(p, q) for p, q in zip(old, new)):
        raise AssertionError(f"training step {step} did not change the parameters: call "
                             f"loss.backward() and then optimizer.step()")
    if previous_grads is not None and all(
            torch.allclose(q, p - lr * (g + h), rtol=1e-4, atol=1e-6)
            for p, q, g, h in zip(old, new, grads, previous_grads)):
        raise AssertionError("the second training step used the sum of both steps' gradients: "
                             "call optimizer.zero_grad() before loss.backward()")
    for name, p, q, g in zip(names, old, new, grads):
        expect_close(q, (p - lr * g).detach(), f"parameter {name} after training step {step}",
                     rtol=1e-4, atol=1e-6, hint="One step must be: zero the gradients, compute "
                     "L_simple, loss.backward(), optimizer.step().")


def expect_fresh_t_and_eps(t, eps, t2, eps2, T):
    """The t and eps of two training steps: t uniform over 0..T-1, eps standard normal, and
    both drawn afresh at every call."""
    import torch

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


def naming(mistake, hint):
    """``hint``, after the name of the usual mistake the answer is, when it is one (``mistake`` None: the hint)."""
    return f"That is {mistake}. {hint}" if mistake else hint


def tolerance(x):
    """``(rtol, atol)`` for comparing an answer in ``x``'s dtype: float32 or float64 arithmetic."""
    import torch
    return (1e-5, 1e-6) if x.dtype == torch.float32 else (1e-10, 1e-12)


def shape_of(x):
    """``x``'s shape and dtype as a hint names them: "shape (2, 3), float32"."""
    return f"shape {tuple(x.shape)}, {str(x.dtype).replace('torch.', '')}"
