import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Run the tiny networks of the tests on one thread.

    Their convolutions are far too small to gain from parallelism, and on a
    busy machine several OpenMP threads per process slow them down by
    orders of magnitude. The setting is restored afterwards.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
