"""Training tests run single-threaded: the machine is shared and tiny ops gain nothing from threads."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
