"""Shared by the network tests: weights moved off their initialisation."""

import torch


def perturb(model, scale=0.05, seed=0):
    """Add noise to every weight, so the zero-initialised layers are no longer zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model
