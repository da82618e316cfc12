"""Test-wide settings: deterministic, single-threaded torch per xdist worker, float64 helpers."""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one thread each avoids oversubscription
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
