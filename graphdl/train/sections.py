"""The experiment sections of a spec: ``task``, ``dataset`` and ``train``.

::

    task:                          # see graphdl.train.tasks
      type: regression
      target: graph.y
      metrics: [rmse, mae, r2]
    dataset:
      spec: ../../datasets/freesolv.yaml     # a dataset spec file (relative to this spec) ...
      # type: molecule_table                 # ... or the dataset's parameters inline
      # path: my_molecules.csv
      split: {type: random, fractions: [0.8, 0.1, 0.1]}
      limit: null                            # use only the first N graphs (quick trials)
    train:
      epochs: 50
      batch_size: 50
      seed: 0
      optimizer: {type: adam, lr: 1.0e-3, weight_decay: 0.0}
      schedule: {type: noam, warmup_epochs: 2, start_factor: 0.1, final_factor: 0.1}
      early_stopping: {patience: 20, min_delta: 0.0}
      grad_clip: null

Importing this module registers the three sections with the spec loader (which imports it
when it exists), so ``graphdl check`` validates them like the rest of a spec.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    create_model,
    field_validator,
)

from graphdl.errors import did_you_mean
from graphdl.spec.model import register_section
from graphdl.train.splits import RandomSplit, SplitSpec
from graphdl.train.tasks import TASKS, TaskParams


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------- optimizer
class Adam(_Section):
    type: Literal["adam"] = "adam"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8


class AdamW(_Section):
    type: Literal["adamw"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8


class SGD(_Section):
    type: Literal["sgd"] = "sgd"
    lr: PositiveFloat = 1e-2
    momentum: NonNegativeFloat = 0.9
    weight_decay: NonNegativeFloat = 0.0
    nesterov: bool = False


OptimizerSpec = Annotated[Adam | AdamW | SGD, Field(discriminator="type")]


# -------------------------------------------------------------------------- schedules
class Constant(_Section):
    """The optimizer's ``lr`` throughout."""

    type: Literal["constant"] = "constant"


class Noam(_Section):
    """Chemprop's schedule, per step: linear warm-up from ``start_factor·lr`` to ``lr`` over
    ``warmup_epochs``, then exponential decay to ``final_factor·lr`` at the last step."""

    type: Literal["noam"] = "noam"
    warmup_epochs: NonNegativeFloat = 2.0
    start_factor: PositiveFloat = 0.1
    final_factor: PositiveFloat = 0.1


class Cosine(_Section):
    """Per step: optional linear warm-up, then a half cosine from ``lr`` to ``final_factor·lr``."""

    type: Literal["cosine"] = "cosine"
    warmup_epochs: NonNegativeFloat = 0.0
    final_factor: NonNegativeFloat = 0.0


class Step(_Section):
    """Multiply ``lr`` by ``gamma`` every ``step_epochs`` epochs."""

    type: Literal["step"] = "step"
    step_epochs: PositiveInt = 30
    gamma: PositiveFloat = 0.1


class Exponential(_Section):
    """Multiply ``lr`` by ``gamma`` after every epoch."""

    type: Literal["exponential"] = "exponential"
    gamma: PositiveFloat = 0.95


class Plateau(_Section):
    """Multiply ``lr`` by ``factor`` when the monitored validation metric has not improved for
    ``patience`` epochs, down to ``min_lr``."""

    type: Literal["plateau"] = "plateau"
    factor: PositiveFloat = 0.5
    patience: int = Field(10, ge=0)
    min_lr: NonNegativeFloat = 1e-6


class ExponentialDecay(_Section):
    """Per step ``s``: ``lr(s) = (lr − min_lr) · rate^(s / decay_steps) + min_lr`` (GNS: 1e-4 →
    1e-6, ``rate`` 0.1 per 5M steps; TensorFlow's ``exponential_decay`` plus a floor)."""

    type: Literal["exponential_decay"] = "exponential_decay"
    decay_steps: PositiveInt = 5_000_000
    rate: PositiveFloat = 0.1
    min_lr: NonNegativeFloat = 1e-6


ScheduleSpec = Annotated[Constant | Noam | Cosine | Step | Exponential | Plateau | ExponentialDecay,
                         Field(discriminator="type")]


class EarlyStopping(_Section):
    """Stop when the monitored validation metric has not improved by more than ``min_delta``
    for ``patience`` epochs (the best epoch's weights are the ones evaluated)."""

    patience: PositiveInt = 20
    min_delta: NonNegativeFloat = 0.0


# ---------------------------------------------------------------------------- loader
class GraphBatches(_Section):
    """Whole graphs, ``train.batch_size`` of them per batch (the default)."""

    type: Literal["graphs"] = "graphs"


class NeighborSampling(_Section):
    """GraphSAGE neighbour sampling on one large graph (node tasks): ``fanouts`` in-edges drawn per
    node at each hop, one entry per message-passing layer (``-1``, or ``fanouts: all``: every
    in-edge); ``batch_size`` seed nodes per batch (default ``train.batch_size``); evaluation
    ``full`` (whole graph) or ``sampled`` (with ``eval_fanouts``, default ``fanouts``)."""

    type: Literal["neighbor"] = "neighbor"
    fanouts: list[int] | Literal["all"]
    batch_size: int | None = Field(None, ge=1)
    eval: Literal["full", "sampled"] = "full"
    eval_fanouts: list[int] | Literal["all"] | None = None

    @field_validator("fanouts", "eval_fanouts")
    @classmethod
    def _fanouts(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("give one fanout per message-passing layer, e.g. `fanouts: [15, 10]`")
            bad = [k for k in v if k < 1 and k != -1]
            if bad:
                raise ValueError(f"a fanout is a positive number of in-edges per node, or -1 for all of them; "
                                 f"found {bad[0]}")
        return v


LoaderSpec = Annotated[GraphBatches | NeighborSampling, Field(discriminator="type")]


class TrainSection(_Section):
    """How to train: epochs, batches, optimizer, schedule, early stopping, seed, device.

    ``eval_every: k`` evaluates the validation set after every k-th epoch and after the last one
    (the EGNN paper's ``test_interval``); the best checkpoint, early stopping (``patience``
    still counts epochs) and a metric-driven schedule act on those epochs only."""

    epochs: PositiveInt = 50
    steps_per_epoch: PositiveInt | None = None
    """An epoch is this many training steps (batches drawn from endless shuffled passes over the
    training examples) instead of one pass: validation, checkpoints and per-epoch schedules then
    act every ``steps_per_epoch`` steps (GNS trains for millions of steps over a few thousand
    windows)."""
    batch_size: PositiveInt = 50
    eval_batch_size: PositiveInt | None = None
    eval_every: PositiveInt = 1
    seed: int = 0
    optimizer: OptimizerSpec = Field(default_factory=Adam)
    schedule: ScheduleSpec = Field(default_factory=Constant)
    early_stopping: EarlyStopping | None = None
    grad_clip: PositiveFloat | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: PositiveInt | None = None
    cpu_allocator: Literal["default", "cache"] = "default"
    """``cache``: glibc keeps large freed blocks for reuse instead of mapping every block above
    32 MB afresh, which the kernel then page-faults in on first touch
    (:func:`graphdl.benchmarking.cache_cpu_allocations`). CPU training with large edge tensors
    runs up to ~2.8x faster (GatedGCN, 500k edges: 925 → 334 ms per step); memory that tensors
    free stays with the process. The same as starting with ``MALLOC_MMAP_MAX_=0
    MALLOC_TRIM_THRESHOLD_=2147483647``; no effect on other C libraries' allocators."""
    loader: LoaderSpec | None = None
    """How examples become batches (:mod:`graphdl.train.loaders`): whole graphs (``None`` or
    ``{type: graphs}``), or neighbour-sampled subgraphs of one large graph (``{type: neighbor,
    fanouts: [15, 10], batch_size: 1024}``)."""


# ----------------------------------------------------------------------------- task
class TaskSection(TaskParams):
    """What the model is trained against: a task ``type`` (regression, classification, ...)
    with its target field, loss and metrics; each type validates its own parameters."""

    @classmethod
    def resolve_model(cls, data: Any, doc, path: tuple) -> type[BaseModel]:
        if not isinstance(data, dict):
            return cls  # validate_model reports "expected a mapping"
        if "type" not in data:
            raise doc.error(path, f"`task` needs a `type:` ({', '.join(f'`{t}`' for t in sorted(TASKS))})")
        name = data["type"]
        if not isinstance(name, str) or name not in TASKS:
            raise doc.error(path + ("type",), f"unknown task type `{name}`{did_you_mean(str(name), TASKS)}")
        return TASKS[name].Params

    @classmethod
    def schema_models(cls) -> list[type[BaseModel]]:
        """Every task type's parameters (for the JSON Schema)."""
        return [TASKS[n].Params for n in sorted(TASKS)]


# -------------------------------------------------------------------------- dataset
_DATA_LOADED = False


def load_dataset_types() -> None:
    """Import the modules of ``graphdl.data`` so their dataset types register themselves."""
    global _DATA_LOADED
    if _DATA_LOADED:
        return
    _DATA_LOADED = True
    import graphdl.data as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        try:
            importlib.import_module(f"graphdl.data.{mod.name}")
        except ImportError:  # a module whose optional dependency is missing registers nothing
            pass
    importlib.import_module("graphdl.wl.dataset")  # `wl_pairs` lives with the WL package


class DatasetSection(_Section):
    """``spec``: a dataset spec file (relative to this spec); or the dataset's parameters
    inline with their ``type:``. ``split``: how to split; ``limit``: keep the first N graphs."""

    spec: str | None = None
    split: SplitSpec = Field(default_factory=RandomSplit)
    limit: PositiveInt | None = None

    @classmethod
    def resolve_model(cls, data: Any, doc, path: tuple) -> type[BaseModel]:
        if not isinstance(data, dict) or "type" not in data:
            if isinstance(data, dict) and "spec" not in data:
                raise doc.error(path, "`dataset` needs `spec:` (a dataset spec file, e.g. "
                                      "`../../datasets/freesolv.yaml`) or the dataset's own `type:` and parameters")
            return cls
        if "spec" in data:
            raise doc.error(path + ("type",), "give either `spec:` (a dataset spec file) or an inline `type:`, not both")
        from graphdl.data.registry import DATASETS

        load_dataset_types()
        name = data["type"]
        if not isinstance(name, str) or name not in DATASETS:
            raise doc.error(path + ("type",), f"unknown dataset type `{name}`{did_you_mean(str(name), DATASETS)}")
        return _inline_model(DATASETS[name])

    @classmethod
    def schema_models(cls) -> list[type[BaseModel]]:
        """A dataset spec file reference, or any registered dataset type inline (JSON Schema)."""
        from graphdl.data.registry import DATASETS

        load_dataset_types()
        return [cls] + [_inline_model(DATASETS[n]) for n in sorted(DATASETS)]


_INLINE: dict[type, type[BaseModel]] = {}


def _inline_model(dtype) -> type[BaseModel]:
    """The dataset type's parameters plus ``split`` and ``limit``, validated as one mapping."""
    if dtype not in _INLINE:
        model = create_model(
            f"DatasetSection_{dtype.name}", __base__=dtype.Params,
            split=(SplitSpec, Field(default_factory=RandomSplit)),
            limit=(PositiveInt | None, None),
        )
        _INLINE[dtype] = model
    return _INLINE[dtype]


def dataset_parts(section: BaseModel) -> tuple[str | None, dict | None, Any, int | None]:
    """``(spec file, inline params, split, limit)`` of a validated dataset section."""
    data = section.model_dump()
    split = section.split
    limit = data.get("limit")
    if isinstance(section, DatasetSection):
        return section.spec, None, split, limit
    params = {k: v for k, v in data.items() if k not in ("split", "limit")}
    return None, params, split, limit


register_section("task", TaskSection)
register_section("dataset", DatasetSection)
register_section("train", TrainSection)

__all__ = [
    "DatasetSection",
    "EarlyStopping",
    "OptimizerSpec",
    "ScheduleSpec",
    "TaskSection",
    "TrainSection",
    "dataset_parts",
    "load_dataset_types",
]
