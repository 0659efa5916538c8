"""DDIM inversion and spherical interpolation (Song et al., 2021, Secs. 5.3-5.4).

With eta = 0 a DDIM sampler is a deterministic map x_T -> x_0, a discretisation of the
probability-flow ODE. Run the same update with s > t and it climbs instead: it *encodes* an image
x_0 into the x_T that decodes back to it (up to the discretisation error, which shrinks with the
number of steps S). :func:`ddim_invert` does this with the one sampling loop
(:func:`lesson_lib.diffusion.sampling.sample`), an ascending timestep list and ``end=``; decoding is
plain DDIM on the same (descending) list.

A sampler starts from draws of N(0, I) in d dimensions, whose norm concentrates at sqrt(d). A
straight line between two such draws cuts through the inside of that shell: the midpoint of two
independent draws has norm about sqrt(d / 2). :func:`slerp` follows the great circle instead and
keeps the norm, so every point along it looks like a typical x_T to the decoder.

Encoded x_T are *not* such draws. They are the points the ODE maps to the given images, and they
keep the images' structure: lesson 6 measures, for two MNIST test sevens encoded on 20 steps, norms
of about 16 rather than sqrt(784) = 28, a pixel mean of 0.34 and a pixel standard deviation of 0.45
(N(0, I): 0 and 1), and a cosine of 0.45 between the two encodings (two draws: about 0). Slerp between two encodings keeps their own norm; the
sqrt(d / 2) figure holds for independent draws of N(0, I), not for them.

Inversion is exact only as far as the decoder is the inverse of the encoder: clipping x0_hat
(``clip_x0``) is not invertible, and strong classifier-free guidance changes the ODE between the
two directions' evaluation points, so both make the round trip fail.
"""

import torch

from ..arguments import float_tensor, number
from .sampling import sample
from .steps import ddim_step
from .timesteps import check_timestep_list

ANTIPODAL_COS = -1 + 1e-6        # cos theta below this: theta within about 0.0014 rad (0.08 degrees) of pi


def ddim_invert(denoise, schedule, x0, timesteps, cond=None, progress=False):
    """Encode ``x0`` into x_T with DDIM, eta = 0 (Song et al., Eq. 12 with s > t).

    ``timesteps`` is the descending list the decoder will use (e.g. ``timesteps.spaced(T, S)``);
    the encoder visits it in reverse: x0 is taken as the state at the list's last (lowest) entry,
    then each step climbs to the next entry up, the last one to ``timesteps[0]``. So pick a list that
    ends at 0 ("linspace", "leading", "quadratic"), where alpha-bar_0 ~= 1; then decoding with
    ``sample(denoise, schedule, x_T, timesteps, ddim_step, stochastic=False)`` returns (nearly) x0.

    ``denoise`` is a :class:`~lesson_lib.diffusion.denoiser.Denoiser` or a guidance wrapper;
    ``cond`` holds its keyword arguments (e.g. ``{"y": labels}``). Returns x_T."""
    float_tensor(x0, "x0")
    ts = check_timestep_list(timesteps, schedule.T)        # the decoder's list: strictly descending
    if len(ts) < 2:
        raise ValueError("timesteps must hold at least two timesteps to climb from the last to the first")
    up = ts[::-1]
    return sample(denoise, schedule, x0, up[:-1], ddim_step, end=up[-1], stochastic=False, cond=cond,
                  progress=progress, desc="DDIM inversion")


def slerp(z1, z2, alpha):
    """Spherical linear interpolation, per sample over all dimensions but the first (as in DDIM's
    ``sample_interpolation``):

        theta = arccos(<z1, z2> / (||z1|| ||z2||)),
        z(alpha) = sin((1 - alpha) theta) / sin(theta) z1 + sin(alpha theta) / sin(theta) z2.

    alpha = 0 gives z1, alpha = 1 gives z2; when ||z1|| = ||z2|| every z(alpha) has that same norm.
    ``alpha`` is a number or a tensor broadcastable to the batch (shape (B,)). Nearly parallel pairs
    (sin theta < 1e-7) fall back to the straight line.

    theta is undefined when z1 or z2 is the zero vector, and the great circle is when they are
    opposite (theta = pi: every great circle through both is as short as any other; sin theta = 0 in
    the equation); both raise a ValueError, nearly opposite pairs (cos theta < -1 + 1e-6) too."""
    float_tensor(z1, "z1")
    float_tensor(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if isinstance(alpha, torch.Tensor):
        float_tensor(alpha, "alpha")
    else:
        number(alpha, "alpha", hint="0 gives z1, 1 gives z2")
    a = torch.as_tensor(alpha, dtype=z1.dtype, device=z1.device).reshape(-1, *([1] * (z1.ndim - 1)))
    f1, f2 = z1.flatten(1), z2.flatten(1)
    n1, n2 = f1.norm(dim=1), f2.norm(dim=1)
    for name, norms in (("z1", n1), ("z2", n2)):
        if bool((norms == 0).any()):
            raise ValueError(f"{name} holds a zero vector (example {int((norms == 0).nonzero()[0])}): its angle to "
                             f"the other is undefined, and so is slerp; interpolate nonzero vectors")
    cos = (f1 * f2).sum(1) / (n1 * n2)
    if bool((cos < ANTIPODAL_COS).any()):
        raise ValueError(f"z1 and z2 are antipodal, or nearly (example {int((cos < ANTIPODAL_COS).nonzero()[0])}: "
                         f"cos theta = {cos.min().item():.8f}): no single great circle joins opposite vectors, so "
                         f"slerp is undefined there; interpolate other pairs, or use lerp")
    theta = cos.clamp(-1, 1).acos().reshape(-1, *([1] * (z1.ndim - 1)))
    sin = theta.sin()
    small = sin < 1e-7
    safe = torch.where(small, torch.ones_like(sin), sin)
    c1 = torch.where(small, 1 - a, ((1 - a) * theta).sin() / safe)
    c2 = torch.where(small, a, (a * theta).sin() / safe)
    return c1 * z1 + c2 * z2


def lerp(z1, z2, alpha):
    """The straight line (1 - alpha) z1 + alpha z2, for comparison with :func:`slerp`."""
    a = torch.as_tensor(alpha, dtype=z1.dtype, device=z1.device).reshape(-1, *([1] * (z1.ndim - 1)))
    return (1 - a) * z1 + a * z2
