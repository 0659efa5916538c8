"""Which timesteps a sampler visits: lists of code timesteps, in the order they are visited.

A sampler on S < T steps visits a sub-sequence tau_S > ... > tau_1 of 0..T-1 and steps from
each entry to the next one (to -1, the data, after the last). Every step computes from
alpha-bar at both ends (see :mod:`lesson_lib.diffusion.steps`), so a list of integers is all
a respaced sampler needs: the steps never assume a stride of T // S.

For T = 1000 and S = 10 the spacings give:

=============  ================================  ==============================================
``spacing``    timesteps                         used by
=============  ================================  ==============================================
"linspace"     999, 888, 777, ..., 111, 0        this course's DDIM default; diffusers "linspace"
"leading"      900, 800, ..., 100, 0             DDIM's code ("uniform"); diffusers' default
"trailing"     999, 899, ..., 199, 99            Lin et al. (2023): always start at t = T - 1
"quadratic"    800, 632, 483, ..., 9, 0          DDIM's CIFAR-10 runs, int(linspace(0, sqrt(0.8T), S)^2)
=============  ================================  ==============================================

Every spacing gives exactly S distinct timesteps. For "quadratic" that needs one amendment: near
0 consecutive squares fall less than one timestep apart once S - 1 > sqrt(0.8 T) (S > 29 for
T = 1000), and DDIM's code then repeats timesteps (a step from t to t costs a network call and
does nothing). Here each entry is raised to one above the entry below it where needed, so the
list starts 0, 1, 2, ... and is quadratic above; for S <= 29 at T = 1000 it is DDIM's exactly.

:func:`check_timestep_list` is the one check of a list a loop will visit: whole numbers in 0..T-1,
strictly descending for sampling, or strictly ascending for DDIM inversion.
"""

import math

import torch

from ..arguments import choice, integer
from .schedules import check_timesteps

SPACINGS = ("linspace", "leading", "trailing", "quadratic")


def _check(T, steps):
    for name, value in (("T", T), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {name}={value!r}")
    if T < 1:
        raise ValueError(f"T must be at least 1 (the schedule's number of timesteps), got T={T}")
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in 1..T={T}, got steps={steps}")


def all_steps(T):
    """T - 1, T - 2, ..., 0: every step, as Algorithm 2 of Ho et al. (2020)."""
    return list(range(T - 1, -1, -1))


def spaced(T, steps, spacing="linspace"):
    """Exactly ``steps`` distinct timesteps out of 0..T-1 in descending order, spread by
    ``spacing`` (see the table above). Returns a list of ints."""
    _check(T, steps)
    if spacing == "linspace":
        ts = torch.linspace(T - 1, 0, steps).round().long().unique_consecutive().tolist()
    elif spacing == "leading":
        ts = [i * (T // steps) for i in range(steps)][::-1]
    elif spacing == "trailing":
        ts = [round(T - i * T / steps) - 1 for i in range(steps)]
    elif spacing == "quadratic":
        ts = _distinct_upwards([int(v) for v in torch.linspace(0, math.sqrt(0.8 * T), steps, dtype=torch.float64) ** 2])
    else:
        choice(spacing, "spacing", SPACINGS)
    return ts


def _distinct_upwards(ascending):
    """Raise each entry of an ascending list to at least one above the previous one, and return
    the result in descending order. The largest entry stays below T: it is at most
    max(int(0.8 T), S - 1)."""
    ts = []
    for t in ascending:
        ts.append(max(t, ts[-1] + 1) if ts else t)
    return ts[::-1]


def check_timestep_list(timesteps, T, end=-1, name="timesteps"):
    """``timesteps`` as a list of ints, checked once per call (it reads the values): whole numbers
    in 0..T-1 and, followed by ``end`` (where the last step goes), strictly monotone. That is
    descending for sampling (``end = -1``, the data) or ascending for DDIM inversion (``end``
    above the last entry). A repeated entry would be a step from t to t, an entry out of order a
    step back towards the noise."""
    end = integer(end, "end", minimum=-1, maximum=T - 1, hint="-1 is the data; a timestep above the last entry "
                                                               "climbs (DDIM inversion)")
    try:
        values = timesteps if isinstance(timesteps, torch.Tensor) else torch.as_tensor(list(timesteps))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a list of whole-number timesteps such as spaced(T, 10), got "
                        f"{name}={timesteps!r:.60}") from None
    if values.numel() == 0:
        raise ValueError(f"{name} must hold at least one timestep, got {name}={timesteps!r}; e.g. spaced(T, steps)")
    if values.ndim != 1:
        raise ValueError(f"{name} must be a flat list of timesteps, got shape {tuple(values.shape)}")
    check_timesteps(values, T, name)
    ts = values.tolist()
    path = ts + [end]
    if all(a > b for a, b in zip(path, path[1:])) or all(a < b for a, b in zip(path, path[1:])):
        return ts
    shown = f"{ts[:8]}{'...' if len(ts) > 8 else ''}"
    if end == -1:
        raise ValueError(f"{name} must be strictly descending, the order a sampler visits them (from noise to "
                         f"data), got {name}={shown}; e.g. spaced(T, steps), or sorted(set(ts), reverse=True)")
    raise ValueError(f"{name} followed by end={end} must be strictly descending (sampling down to end) or "
                     f"strictly ascending (DDIM inversion, climbing to end), got {name}={shown}")
