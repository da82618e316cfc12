"""Test-wide settings: deterministic, single-threaded torch per xdist worker, float64 helpers."""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one thread each avoids oversubscription
    torch.set_num_threads(1)


def pytest_configure(config):
    """Load DGL through graphdl's loader in pytest-xdist's controller.

    The controller rebuilds a warning raised in a worker by importing the module that defines
    the warning's class; for a DGL warning that is ``import dgl`` outside any test, without the
    stub for DGL's missing sampling library (graphdl/interop/dgl.py), and the run crashes with
    an INTERNALERROR. Loading DGL here first makes that import a lookup.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import warnings

    from graphdl.interop.dgl import dgl_installed, load_dgl

    if dgl_installed():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_dgl()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
