"""Checking arguments where they enter, with errors that name the argument, what it got and the fix.

Every public function and command line of the course checks its arguments once, on the way in,
with these helpers, so that a wrong call fails at once with a message a student can act on,
instead of deep inside torch or, worse, silently (a NaN that spreads through a run, a negative
clip value that disables clipping). :func:`integer`, :func:`number` and :func:`choice` check
Python values; :func:`float_tensor`, :func:`images` and :func:`labels` check tensors, and those
that read a tensor's values (finite? in range?) make the host wait for a GPU, so they run once
per call of a public function, never per step.
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


def choice(value, name, options, hint=""):
    """``value``, which must be one of ``options`` (compared with ==, e.g. strings)."""
    if isinstance(value, torch.Tensor) or value not in options:
        listed = ", ".join(repr(option) for option in options)
        raise ValueError(f"{name} must be one of {listed}, got {name}={value!r}" + (f"; {hint}" if hint else ""))
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


def images(x, name, ndim=None):
    """Float images in [-1, 1] (the course's convention), finite; a sampler's overshoot of a few
    units is allowed, 0..255 is not. A uint8 tensor or values in 0..255 get the fix
    ``x.float() / 127.5 - 1``. Reads the values once (one host sync)."""
    float_tensor(x, name, ndim, finite=False)
    if not x.numel():
        raise ValueError(f"{name} is empty; it must hold at least one image")
    low, high = torch.stack(torch.aminmax(x.detach())).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or inf; images must be finite")
    if low < -10 or high > 10:
        raise ValueError(f"{name} must hold images in [-1, 1], got values in [{low:.4g}, {high:.4g}]; "
                         f"rescale images in 0..255 with x.float() / 127.5 - 1")
    return x


def labels(y, num_classes, name="y", allow_null=False, batch=None, hint=""):
    """Class labels: a 1-D integer tensor (of ``batch`` entries) with values in 0..num_classes-1,
    or also ``num_classes`` itself (the null class, "no label", of classifier-free guidance) when
    ``allow_null``. Reads the values once (one host sync)."""
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        got = f"dtype {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise TypeError(f"{name} must be an integer tensor of class labels such as torch.tensor([3, 7]), got "
                        f"{got}" + (f"; {hint}" if hint else ""))
    if y.ndim != 1 or (batch is not None and y.shape[0] != batch):
        want = "one label per example" + ("" if batch is None else f", shape ({batch},)")
        raise ValueError(f"{name} must be 1-D with {want}, got shape {tuple(y.shape)}" + (f"; {hint}" if hint else ""))
    top = num_classes if allow_null else num_classes - 1
    if y.numel():
        low, high = torch.stack(torch.aminmax(y)).tolist()
        if low < 0 or high > top:
            null = f" (or {num_classes} for the null class)" if allow_null else ""
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}{null}, got values in {low}..{high}"
                             + (f"; {hint}" if hint else ""))
    return y
