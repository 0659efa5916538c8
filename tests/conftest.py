"""Shared test settings.

Every test here uses tiny tensors, for which one thread is faster than two: on a 2-core
machine, two threads contending with another process make small ops up to 7x slower.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Every test module starts on one thread, whatever a module before it set, and puts it back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
