"""Shared test settings.

Every test here uses tiny tensors, for which one thread is faster than two: on a 2-core
machine, two threads contending with another process make small ops up to 7x slower.
"""

import torch

torch.set_num_threads(1)
