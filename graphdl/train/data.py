"""The dataset of an experiment spec: find its type and parameters, load it, trim it.

``dataset: {spec: file.yaml}`` loads a dataset spec file (positions kept, so a bad key is
reported at ``file:line:col``); an inline ``dataset: {type: ..., ...}`` was validated with the
experiment spec. Relative paths inside dataset parameters are relative to the file that
wrote them; the resolved parameters carry them absolute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from graphdl.data.registry import DATASETS, Dataset, DatasetParams, DatasetType
from graphdl.errors import SpecError, did_you_mean
from graphdl.spec.loader import load_spec
from graphdl.spec.model import validate_model
from graphdl.train.sections import dataset_parts, load_dataset_types

PATH_KEYS = ("path", "nodes", "edges", "graphs")
"""Dataset parameters holding file paths (made absolute in the resolved spec)."""


@dataclass
class DatasetRef:
    """A dataset type with validated parameters, before loading."""

    cls: type[DatasetType]
    params: DatasetParams
    base_dir: str
    split: object
    limit: int | None

    def resolved(self) -> dict:
        """Parameters with every default and absolute paths (for the resolved spec)."""
        data = self.params.model_dump(mode="json")
        for k in PATH_KEYS:
            if isinstance(data.get(k), str) and not os.path.isabs(data[k]):
                data[k] = os.path.abspath(os.path.join(self.base_dir, data[k]))
        return data

    def load(self, cache_dir: str | None = None) -> Dataset:
        ds = self.cls.load(self.params, cache_dir=cache_dir, base_dir=self.base_dir)
        if self.limit is not None and self.limit < len(ds):
            ds = limit_dataset(ds, self.limit)
        return ds


def resolve_dataset(section, doc, spec_dir: str) -> DatasetRef:
    """The dataset a validated ``dataset`` section names (errors point into the spec files)."""
    load_dataset_types()
    spec_file, inline, split, limit = dataset_parts(section)
    if inline is not None:
        cls = DATASETS[inline["type"]]
        params = cls.Params.model_validate(inline)
        return DatasetRef(cls, params, spec_dir, split, limit)
    path = spec_file if os.path.isabs(spec_file) else os.path.join(spec_dir, spec_file)
    if not os.path.exists(path):
        raise doc.error(("dataset", "spec"), f"dataset spec `{spec_file}` not found (looked at {os.path.relpath(path)})")
    ddoc = load_spec(path)
    data = ddoc.data
    if not isinstance(data, dict) or "type" not in data:
        raise ddoc.error((), "a dataset spec needs `type:` (a dataset type, e.g. `molecule_table`)")
    name = data["type"]
    if not isinstance(name, str) or name not in DATASETS:
        raise ddoc.error(("type",), f"unknown dataset type `{name}`{did_you_mean(str(name), DATASETS)}")
    cls = DATASETS[name]
    params = validate_model(cls.Params, data, ddoc, (), f"dataset type `{name}`")
    return DatasetRef(cls, params, os.path.dirname(os.path.abspath(path)), split, limit)


def limit_dataset(ds: Dataset, n: int) -> Dataset:
    """``n`` graphs of ``ds`` (``--limit``, a quick trial): the first ``n``, or, for a dataset that ships
    its own split, the first graphs of each part in proportion to its size (at least one each), so
    that a limited run still has train, validation and test graphs. Per-graph metadata lists follow."""
    if ds.splits:
        total = sum(len(v) for v in ds.splits.values())
        keep_of = {k: v[:max(1, round(n * len(v) / total))] if v else [] for k, v in ds.splits.items()}
        keep = [i for v in keep_of.values() for i in v]
        pos = {i: j for j, i in enumerate(keep)}
        splits = {k: [pos[i] for i in v] for k, v in keep_of.items()}
    else:
        keep, splits = list(range(min(n, len(ds)))), None
    meta = dict(ds.meta)
    for k, v in ds.meta.items():
        if isinstance(v, list) and len(v) == len(ds) and k != "skipped":
            meta[k] = [v[i] for i in keep]
    return Dataset([ds.graphs[i] for i in keep], ds.fields, ds.targets, splits, meta)


def check_inputs(inputs: dict, fields: dict, doc, name: str) -> None:
    """Every declared input field exists among ``fields`` with the same type: the dataset's fields,
    or what the task feeds the model (``Task.model_inputs``, e.g. ``simulate``'s position history).

    Raises:
        SpecError: at the input's line in the spec, naming what the dataset makes instead.
    """
    for k, t in inputs.items():
        if k not in fields:
            have = ", ".join(f"`{f}`: {v}" for f, v in fields.items())
            raise doc.error(("inputs", k), f"the spec declares input `{k}` but dataset `{name}` has no such field "
                                           f"(it has {have})", key=True)
        if fields[k] != t:
            raise doc.error(("inputs", k), f"the spec declares `{k}: {t}` but dataset `{name}` gives "
                                           f"`{k}: {fields[k]}`; write `{k}: {fields[k]}`")


__all__ = ["DatasetRef", "SpecError", "check_inputs", "limit_dataset", "resolve_dataset"]
