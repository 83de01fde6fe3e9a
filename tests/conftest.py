"""Shared pytest fixtures."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: on the shared 2-core CI box OpenMP spin-waiting under oversubscription
    makes two threads up to 20x slower than one for these small networks."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
