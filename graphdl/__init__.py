"""graphdl: declarative graph and equivariant neural networks.

Write a YAML spec, get a checked, typed ``torch.nn.Module``::

    import graphdl
    model = graphdl.compile_spec("specs/gin.yaml")
    print(model.describe())
    out = model(batch)          # {"graph.y": tensor, ...}
"""

from graphdl.compile import GraphModel, compile_spec, plan_spec
from graphdl.data.graph import Batch, Graph, collate
from graphdl.errors import (
    CheckpointError,
    DataError,
    GraphDLError,
    InferenceError,
    KernelUnavailableError,
    SpecError,
)
from graphdl.nn.base import Block, BlockParams, BuildContext, Signature, register_block
from graphdl.spec.loader import load_spec, trusted_imports
from graphdl.spec.model import parse_spec
from graphdl.types import VECTOR, Categorical, FieldTable, Frame, Irreps, Scalar, Trajectory, parse_type

__version__ = "0.1.0"


def load(path, *, device="cpu", trust=None):
    """A trained run (directory or checkpoint) as a :class:`~graphdl.train.trained.TrainedModel`:
    ``graphdl.load("runs/fs").predict(["CCO"])`` gives predictions in the targets' units."""
    from graphdl.train.trained import load as _load

    return _load(path, device=device, trust=trust)


__all__ = [
    "Batch", "Block", "BlockParams", "BuildContext", "Categorical", "CheckpointError", "DataError", "FieldTable",
    "Frame", "Graph", "GraphDLError", "GraphModel", "InferenceError", "Irreps", "KernelUnavailableError",
    "Scalar", "Signature", "SpecError", "Trajectory", "VECTOR", "collate", "compile_spec", "load", "load_spec",
    "parse_spec",
    "parse_type", "plan_spec", "register_block", "trusted_imports",
]
