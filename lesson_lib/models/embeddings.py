"""The sinusoidal time embedding.

A network shared across all T noise levels must be told which level it is denoising. DDPM
(Ho et al., 2020, Appendix B) feeds the timestep through the positional encoding of the
Transformer (Vaswani et al., 2017, Sec. 3.5): for frequencies

    omega_i = max_period^(-i / (dim/2)),   i = 0, ..., dim/2 - 1,

the embedding of t is [ sin(t omega_0), ..., sin(t omega_{dim/2-1}), cos(t omega_0), ... ].
Low i vary fast with t, high i slowly, so nearby timesteps get similar but distinct codes.
Models then pass this through a small MLP (see :class:`lesson_lib.models.layers.TimeEmbedding`,
:mod:`lesson_lib.models.mlp`).
"""

import math

import torch


def sinusoidal_embedding(t, dim, max_period=10000):
    """Embed timesteps ``t`` (shape ``(B,)``, integer or float) as ``(B, dim)`` float32 features.

    ``dim`` must be even: half sines, half cosines, at geometrically spaced frequencies
    from 1 down to 1/max_period.
    """
    if dim % 2 or dim < 2:
        raise ValueError(f"dim must be a positive even number (half sin, half cos), got dim={dim}")
    if t.ndim != 1:
        raise ValueError(f"t must have shape (batch,), got shape {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
