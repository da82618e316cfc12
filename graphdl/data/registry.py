"""Dataset types: a dataset spec's ``type:`` picks a registered loader.

A dataset spec (``datasets/*.yaml``) looks like::

    graphdl: 1
    type: molecule_table        # a registered dataset type
    ...                          # that type's parameters (validated by its pydantic model)

A dataset type is a class with a pydantic ``Params`` model (``extra="forbid"``) and a
``load(params, *, cache_dir, base_dir) -> Dataset`` classmethod, and should say which fields
it makes without loading (``fields(params)``, used by ``graphdl check``). Register it with
``@register_dataset("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

from pydantic import BaseModel, ConfigDict

from graphdl.data.graph import Graph
from graphdl.errors import SpecError, did_you_mean
from graphdl.types import FieldType


class DatasetParams(BaseModel):
    """Base of every dataset type's parameters."""

    model_config = ConfigDict(extra="forbid")

    graphdl: int = 1
    type: str
    name: str | None = None
    description: str | None = None


@dataclass
class Dataset:
    """Graphs with typed fields, ready for a model.

    Attributes:
        graphs: one :class:`Graph` per example (targets are fields too, e.g. ``graph.y``).
        fields: type of every field the graphs carry (inputs and targets).
        targets: keys of the target fields.
        splits: named index lists (``train``/``val``/``test``) when the source defines them.
        meta: anything worth recording (source file, checksum, row ids, SMILES...).
    """

    graphs: list[Graph]
    fields: dict[str, FieldType]
    targets: list[str] = field(default_factory=list)
    splits: dict[str, list[int]] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i):
        return self.graphs[i]


class DatasetType:
    """Base class of dataset loaders."""

    name: ClassVar[str]
    Params: ClassVar[type[DatasetParams]] = DatasetParams

    @classmethod
    def load(cls, params: DatasetParams, *, cache_dir: str, base_dir: str) -> Dataset:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def fields(cls, params: DatasetParams) -> dict[str, FieldType] | None:
        """The type of every field the dataset will carry, known from ``params`` alone (no data is
        read), so that ``graphdl check`` can match a spec's ``inputs:`` and task against it.
        ``None`` when the type cannot say without loading (then only ``graphdl run`` checks)."""
        return None

    @classmethod
    def field_docs(cls, params: DatasetParams) -> dict[str, str]:
        """What each field means (channels, units), for ``graphdl describe --dataset``."""
        return {}


DATASETS: dict[str, type[DatasetType]] = {}


def register_dataset(name: str) -> Callable[[type[DatasetType]], type[DatasetType]]:
    def deco(cls: type[DatasetType]) -> type[DatasetType]:
        if name in DATASETS and DATASETS[name] is not cls:
            raise ValueError(f"dataset type `{name}` is already registered by {DATASETS[name]}")
        cls.name = name
        DATASETS[name] = cls
        return cls

    return deco


def dataset_type(name: str, *, mark=None, path: str = "type") -> type[DatasetType]:
    if name not in DATASETS:
        raise SpecError(f"unknown dataset type `{name}`{did_you_mean(name, DATASETS)}", mark=mark, path=path)
    return DATASETS[name]
