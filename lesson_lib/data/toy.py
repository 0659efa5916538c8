"""Two-dimensional datasets, small enough to train a diffusion model on in seconds.

Each function returns a float32 tensor of shape ``(n, 2)``, scaled to roughly unit
standard deviation per coordinate (the same scale as the N(0, I) prior that the forward
process ends in), and draws from its own ``torch.Generator`` when ``seed`` is given, so
that a figure reproduces.
"""

import math

import torch


def _generator(seed):
    return None if seed is None else torch.Generator().manual_seed(seed)


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of points, got n={n!r}")


def swiss_roll(n, noise=0.5, seed=None):
    """The 2-D swiss roll used by Sohl-Dickstein et al. (2015): the spiral
    (u cos u, u sin u) for u uniform in [1.5 pi, 4.5 pi], plus Gaussian noise of std
    ``noise`` (in the spiral's own units), then divided by 7 to reach roughly unit scale."""
    _check_n(n)
    g = _generator(seed)
    u = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
    x = torch.stack([u * torch.cos(u), u * torch.sin(u)], dim=1)
    x = x + noise * torch.randn(n, 2, generator=g)
    return (x / 7.0).float()


def moons(n, noise=0.05, seed=None):
    """Two interleaving half circles (as in scikit-learn's ``make_moons``), centred and scaled."""
    _check_n(n)
    g = _generator(seed)
    upper = torch.rand(n, generator=g) < 0.5
    theta = math.pi * torch.rand(n, generator=g)
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    pts = torch.stack([x, y], dim=1) + noise * torch.randn(n, 2, generator=g)
    return ((pts - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])).float()


def eight_gaussians(n, radius=2.0, std=0.1, seed=None):
    """Eight Gaussian blobs of std ``std`` evenly spaced on a circle of radius ``radius``:
    a test of whether a sampler finds every mode."""
    _check_n(n)
    g = _generator(seed)
    k = torch.randint(0, 8, (n,), generator=g)
    angle = k * (2 * math.pi / 8)
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    scale = math.sqrt(radius ** 2 / 2 + std ** 2)  # the std of each coordinate
    return ((centres + std * torch.randn(n, 2, generator=g)) / scale).float()


def checkerboard(n, seed=None):
    """Points uniform on the black squares of a 4 x 4 checkerboard over [-2, 2]^2, scaled by
    1/1.15 to unit standard deviation: sharp edges a model must learn."""
    _check_n(n)
    g = _generator(seed)
    x1 = 4 * torch.rand(n, generator=g) - 2
    x2 = torch.rand(n, generator=g) + 2 * torch.randint(0, 2, (n,), generator=g) - 2
    x2 = x2 + (torch.floor(x1) % 2)
    return torch.stack([x1, x2], dim=1).float() / 1.15


DATASETS = {"swiss_roll": swiss_roll, "moons": moons,
            "eight_gaussians": eight_gaussians, "checkerboard": checkerboard}


def make_2d(name, n, seed=None):
    """``make_2d("swiss_roll", 10_000, seed=0)``: a dataset by name (see ``DATASETS``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown 2-D dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](n, seed=seed)
