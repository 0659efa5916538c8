"""Checking arguments where they enter, with errors that name the argument, what it got and the fix.

Every public function and command line of the course checks its arguments once, on the way in,
with these helpers, so that a wrong call fails at once with a message a student can act on,
instead of deep inside torch or, worse, silently (a NaN that spreads through a run, a negative
clip value that disables clipping). None of them reads a GPU tensor's values, so none makes the
host wait for the device; checks that must read values run once per call, never per step.
"""

import math
import numbers

import torch


def integer(value, name, minimum=None, maximum=None, hint=""):
    """``value`` as an int, which must be a whole number (not a bool, not 2.5) in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number, got {name}={value!r}" + (f"; {hint}" if hint else ""))
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = (f"at least {minimum}" if maximum is None else
                  f"at most {maximum}" if minimum is None else f"between {minimum} and {maximum}")
        raise ValueError(f"{name} must be {bounds}, got {name}={value}" + (f"; {hint}" if hint else ""))
    return value


def number(value, name, minimum=None, maximum=None, strict_minimum=False, strict_maximum=False, hint=""):
    """``value`` as a finite float in the given range (``strict_*``: the bound itself is excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {name}={value!r}" + (f"; {hint}" if hint else ""))
    value = float(value)
    too_low = minimum is not None and (value <= minimum if strict_minimum else value < minimum)
    too_high = maximum is not None and (value >= maximum if strict_maximum else value > maximum)
    if not math.isfinite(value) or too_low or too_high:
        low = "" if minimum is None else ("(" if strict_minimum else "[") + f"{minimum:g}"
        high = "" if maximum is None else f"{maximum:g}" + (")" if strict_maximum else "]")
        where = (f"in {low}, {high}" if minimum is not None and maximum is not None else
                 f"{'>' if strict_minimum else '>='} {minimum:g}" if minimum is not None else
                 f"{'<' if strict_maximum else '<='} {maximum:g}" if maximum is not None else "finite")
        raise ValueError(f"{name} must be a finite number {where}, got {name}={value!r}"
                         + (f"; {hint}" if hint else ""))
    return value


def float_tensor(value, name, ndim=None, finite=True):
    """A floating-point tensor (of ``ndim`` dimensions); ``finite`` also rejects NaN and inf (this
    reads the values: call it once per call of a public function, not per step)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        fix = " (images in 0..255: x.float() / 127.5 - 1)" if value.dtype == torch.uint8 else ""
        raise TypeError(f"{name} must be a float tensor, got dtype {value.dtype}; convert it{fix}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if finite and value.numel() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or inf; it must be finite")
    return value
