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
from graphdl.types import VECTOR, FieldTable, Frame, Index, Irreps, Scalar, parse_type

__version__ = "0.1.0"

__all__ = [
    "Batch", "Block", "BlockParams", "BuildContext", "CheckpointError", "DataError", "FieldTable",
    "Frame", "Graph", "GraphDLError", "GraphModel", "Index", "InferenceError", "Irreps", "KernelUnavailableError",
    "Scalar", "Signature", "SpecError", "VECTOR", "collate", "compile_spec", "load_spec", "parse_spec",
    "parse_type", "plan_spec", "register_block", "trusted_imports",
]
