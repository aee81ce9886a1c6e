"""Settings shared by the test suite and the docstring examples."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Run the tiny networks of the tests on ``ANOMSEG_TEST_THREADS`` threads
    (default 1).

    Their convolutions are far too small to gain from parallelism, and on a
    busy machine several OpenMP threads per process slow them down by orders
    of magnitude. The suite must pass at 1 and at 2 threads, whose different
    floating-point summation orders change every trained network a little:
    CI runs it at both. The setting is restored afterwards.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("ANOMSEG_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)
