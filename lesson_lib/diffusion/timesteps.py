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
"""

import math

import torch

SPACINGS = ("linspace", "leading", "trailing", "quadratic")


def _check(T, steps):
    for name, value in (("T", T), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {name}={value!r}")
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in 1..T={T}, got steps={steps}")


def all_steps(T):
    """T - 1, T - 2, ..., 0: every step, as Algorithm 2 of Ho et al. (2020)."""
    return list(range(T - 1, -1, -1))


def spaced(T, steps, spacing="linspace"):
    """``steps`` timesteps out of 0..T-1 in descending order, spread by ``spacing`` (see the
    table above). Returns a list of ints."""
    _check(T, steps)
    if spacing == "linspace":
        ts = torch.linspace(T - 1, 0, steps).round().long().unique_consecutive().tolist()
    elif spacing == "leading":
        ts = [i * (T // steps) for i in range(steps)][::-1]
    elif spacing == "trailing":
        ts = [round(T - i * T / steps) - 1 for i in range(steps)]
    elif spacing == "quadratic":
        ts = sorted({int(v) for v in torch.linspace(0, math.sqrt(0.8 * T), steps, dtype=torch.float64) ** 2},
                    reverse=True)
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got spacing={spacing!r}")
    return ts
