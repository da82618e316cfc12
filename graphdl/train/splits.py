"""Train / validation / test splits of a dataset, as lists of graph indices.

A spec's ``dataset.split`` picks one::

    split: {type: random, fractions: [0.8, 0.1, 0.1], seed: 0}
    split: {type: scaffold, fractions: [0.8, 0.1, 0.1]}     # Bemis–Murcko scaffolds, molecules only
    split: {type: file, path: splits.json}                   # another tool's split, exactly
    split: {type: column, column: split}                     # a column of the source table
    split: {type: source, val_fraction: 0.1}                 # the dataset's own train/test files
    split: {type: node_mask}                                  # node masks (transductive node tasks)
    split: {type: node_random, fractions: [0.8, 0.1, 0.1]}   # random nodes of every graph

Indices in files and columns are **source rows**: 0-based data rows of the source file, in
file order (a CSV's header is not a row). When a dataset skipped invalid rows
(``on_invalid: skip``), graph ``i`` comes from source row ``dataset.meta["rows"][i]``; a
split that names a skipped row is an error.

Split files are JSON ``{"train": [...], "val": [...], "test": [...]}``, or that object
wrapped in a one-element list — what ``chemprop train`` writes to ``splits.json``; entries may
also be chemprop's range strings (``"0-3,7"``). Sizes of random and scaffold splits follow
chemprop: ``n_train = ⌊f₀ n⌋``, ``n_val = ⌊(f₀ + f₁) n⌋ − n_train``, the rest is test.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from graphdl.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


class _SplitBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_fractions(v):
    """Runs before pydantic's tuple parsing, so a list of two says "three fractions", not "missing key 2"."""
    ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    if not ok or any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6:
        found = list(v) if isinstance(v, (list, tuple)) else v
        raise ValueError(f"`fractions` must be three non-negative numbers (train, val, test) summing to 1, "
                         f"found {found}; e.g. `fractions: [0.8, 0.1, 0.1]`")
    return v


class RandomSplit(_SplitBase):
    """A uniformly random permutation cut at the fractions; ``seed`` defaults to the run's seed."""

    type: Literal["random"] = "random"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int | None = None

    _v = field_validator("fractions", mode="before")(_check_fractions)


class ScaffoldSplit(_SplitBase):
    """Molecules grouped by Bemis–Murcko scaffold; whole groups go to one split.

    ``balanced`` (chemprop's ``scaffold_balanced``): groups larger than half the val or test
    size go first, in random order, then the rest in random order; each group fills train,
    then val, then test. Unbalanced: groups largest first, no randomness.
    """

    type: Literal["scaffold"] = "scaffold"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int | None = None
    balanced: bool = True

    _v = field_validator("fractions", mode="before")(_check_fractions)


class FileSplit(_SplitBase):
    """Row indices from a JSON file (relative to the spec)."""

    type: Literal["file"] = "file"
    path: str


class ColumnSplit(_SplitBase):
    """A column of the source table holding ``train``, ``val`` (or ``valid``) or ``test`` per row."""

    type: Literal["column"] = "column"
    column: str = "split"


class SourceSplit(_SplitBase):
    """The split the dataset itself ships (e.g. separate train and test files); when it has no
    validation part, ``val_fraction`` of train is drawn at random for it."""

    type: Literal["source"] = "source"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int | None = None


class NodeMaskSplit(_SplitBase):
    """Node-level split by boolean node fields of the dataset (transductive node tasks, e.g. a
    citation graph's ``train_mask``): every graph takes part, only masked nodes count."""

    type: Literal["node_mask"] = "node_mask"
    train: str = "node.train_mask"
    val: str = "node.val_mask"
    test: str = "node.test_mask"


class NodeRandomSplit(_SplitBase):
    """Node-level random split: all nodes of the dataset shuffled and cut at ``fractions``
    (written as node fields ``node.split_train`` / ``_val`` / ``_test``)."""

    type: Literal["node_random"] = "node_random"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int | None = None

    _v = field_validator("fractions", mode="before")(_check_fractions)


SplitSpec = Annotated[
    RandomSplit | ScaffoldSplit | FileSplit | ColumnSplit | SourceSplit | NodeMaskSplit | NodeRandomSplit,
    Field(discriminator="type"),
]


# ---------------------------------------------------------------------------- helpers
def _perm(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()


def _sizes(n: int, fractions) -> tuple[int, int]:
    n_train = int(fractions[0] * n)
    n_trainval = int((fractions[0] + fractions[1]) * n)
    return n_train, n_trainval - n_train


def random_split(n: int, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[int]]:
    """Indices ``0..n-1`` shuffled with ``seed`` and cut at ``fractions``."""
    order = _perm(n, seed)
    n_train, n_val = _sizes(n, fractions)
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


def murcko_scaffold(smiles: str) -> str:
    """The Bemis–Murcko scaffold SMILES of a molecule (``""`` for acyclic ones)."""
    from rdkit import Chem, rdBase
    from rdkit.Chem.Scaffolds import MurckoScaffold

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise DataError(f"scaffold split: cannot parse SMILES `{smiles}`")
        return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def scaffold_split(smiles: list[str], fractions=(0.8, 0.1, 0.1), seed: int = 0,
                   balanced: bool = True) -> dict[str, list[int]]:
    """Group molecules by scaffold and assign whole groups (see :class:`ScaffoldSplit`)."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(smiles):
        groups.setdefault(murcko_scaffold(s), []).append(i)
    n = len(smiles)
    n_train, n_val = _sizes(n, fractions)
    n_test = n - n_train - n_val
    sets = list(groups.values())
    if balanced:
        big = [s for s in sets if len(s) > n_val / 2 or len(s) > n_test / 2]
        small = [s for s in sets if not (len(s) > n_val / 2 or len(s) > n_test / 2)]
        gen = torch.Generator().manual_seed(int(seed))
        big = [big[i] for i in torch.randperm(len(big), generator=gen).tolist()]
        small = [small[i] for i in torch.randperm(len(small), generator=gen).tolist()]
        sets = big + small
    else:
        sets.sort(key=lambda s: (-len(s), s[0]))
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for s in sets:
        if len(out["train"]) + len(s) <= n_train:
            out["train"] += s
        elif len(out["val"]) + len(s) <= n_val:
            out["val"] += s
        else:
            out["test"] += s
    return out


def _parse_entry(v, where: str) -> list[int]:
    """A list of ints, or chemprop's range string ``"0-3,7"``."""
    if isinstance(v, str):
        out: list[int] = []
        for part in v.split(","):
            part = part.strip()
            if not part:
                continue
            a, dash, b = part.partition("-")
            try:
                out += list(range(int(a), int(b) + 1)) if dash else [int(a)]
            except ValueError:
                raise DataError(f"{where}: cannot read `{part}` as a row index or range `a-b`") from None
        return out
    if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        raise DataError(f"{where}: expected a list of integer row indices, found {type(v).__name__}")
    return list(v)


def read_split_file(path: str) -> dict[str, list[int]]:
    """Read a split JSON file (see the module docstring) into source-row lists."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"split file `{path}` does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"split file `{path}` is not valid JSON: {e}") from None
    if isinstance(data, list):
        if len(data) != 1:
            raise DataError(f"split file `{path}` holds a list of {len(data)} splits (chemprop replicates); "
                            f"graphdl runs one split: keep one element, or write the object itself")
        data = data[0]
    if not isinstance(data, dict):
        raise DataError(f"split file `{path}` must hold an object {{\"train\": [...], \"val\": [...], "
                        f"\"test\": [...]}}, found {type(data).__name__}")
    unknown = sorted(set(data) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(f"split file `{path}` has unknown key(s) {', '.join(unknown)}; expected train, val, test")
    if "train" not in data:
        raise DataError(f"split file `{path}` has no `train` list")
    return {k: _parse_entry(data.get(k, []), f"split file `{path}`, `{k}`") for k in SPLIT_NAMES}


def rows_to_positions(split: dict[str, list[int]], rows: list[int], num_rows: int | None, what: str) -> dict[str, list[int]]:
    """Map source rows to dataset positions, checking range, duplicates and overlaps."""
    pos_of = {r: i for i, r in enumerate(rows)}
    total = num_rows if num_rows is not None else (max(rows) + 1 if rows else 0)
    seen: dict[int, str] = {}
    out: dict[str, list[int]] = {}
    for name in SPLIT_NAMES:
        idx = []
        for r in split.get(name, []):
            if r < 0 or r >= total:
                raise DataError(f"{what}: `{name}` names row {r}, but the dataset has rows 0..{total - 1}; "
                                f"was the split made for another file?")
            if r in seen:
                where = "twice in" if seen[r] == name else f"in both `{seen[r]}` and"
                raise DataError(f"{what}: row {r} appears {where} `{name}`; each row may belong to one split once")
            seen[r] = name
            if r not in pos_of:
                raise DataError(f"{what}: `{name}` names row {r}, which the dataset skipped as invalid "
                                f"(`on_invalid: skip`); drop it from the split or fix the row")
            idx.append(pos_of[r])
        out[name] = idx
    return out


def make_split(spec, dataset, *, seed: int, base_dir: str = ".") -> dict[str, list[int]]:
    """Graph positions of each split for ``dataset`` (a :class:`~graphdl.data.registry.Dataset`)."""
    n = len(dataset)
    meta = dataset.meta or {}
    rows = list(meta.get("rows", range(n)))
    num_rows = meta.get("num_rows", None)
    if isinstance(spec, RandomSplit):
        return random_split(n, spec.fractions, seed if spec.seed is None else spec.seed)
    if isinstance(spec, ScaffoldSplit):
        smiles = meta.get("smiles")
        if smiles is None:
            raise DataError("a scaffold split needs molecules; this dataset records no SMILES (meta['smiles'])")
        return scaffold_split(list(smiles), spec.fractions, seed if spec.seed is None else spec.seed, spec.balanced)
    if isinstance(spec, FileSplit):
        path = spec.path if os.path.isabs(spec.path) else os.path.join(base_dir, spec.path)
        return rows_to_positions(read_split_file(path), rows, num_rows, f"split file `{spec.path}`")
    if isinstance(spec, ColumnSplit):
        columns = meta.get("columns") or {}
        if spec.column not in columns:
            have = ", ".join(f"`{c}`" for c in columns) or "none"
            raise DataError(f"split column `{spec.column}` is not a column of the dataset (columns: {have})")
        by_row: dict[str, list[int]] = {k: [] for k in SPLIT_NAMES}
        for r, v in enumerate(columns[spec.column]):
            key = str(v).strip().lower()
            key = {"valid": "val", "validation": "val"}.get(key, key)
            if key not in by_row:
                raise DataError(f"split column `{spec.column}`, row {r}: `{v}` is not train, val or test")
            by_row[key].append(r)
        # rows skipped as invalid are simply absent from the dataset
        keep = set(rows)
        by_row = {k: [r for r in v if r in keep] for k, v in by_row.items()}
        return rows_to_positions(by_row, rows, num_rows, f"split column `{spec.column}`")
    if isinstance(spec, SourceSplit):
        if not dataset.splits:
            raise DataError("`split: {type: source}` needs a dataset that ships its own split; this one does not "
                            "(use random, scaffold, file or column)")
        out = {k: list(dataset.splits.get(k, [])) for k in SPLIT_NAMES}
        if not out["val"] and spec.val_fraction > 0:
            train = out["train"]
            order = _perm(len(train), seed if spec.seed is None else spec.seed)
            n_val = int(spec.val_fraction * len(train))
            out["val"] = [train[i] for i in order[:n_val]]
            out["train"] = [train[i] for i in sorted(order[n_val:])]
        return out
    if isinstance(spec, NodeMaskSplit):
        return _node_split(dataset, node_masks(spec))
    if isinstance(spec, NodeRandomSplit):
        sizes = [g.num_nodes for g in dataset.graphs]
        total = sum(sizes)
        order = torch.tensor(_perm(total, seed if spec.seed is None else spec.seed))
        n_train, n_val = _sizes(total, spec.fractions)
        which = torch.empty(total, dtype=torch.long)
        which[order[:n_train]] = 0
        which[order[n_train:n_train + n_val]] = 1
        which[order[n_train + n_val:]] = 2
        keys = node_masks(spec)
        for g, part in zip(dataset.graphs, torch.split(which, sizes)):
            for k, name in enumerate(SPLIT_NAMES):
                g.fields[keys[name]] = (part == k).unsqueeze(1)
        return _node_split(dataset, keys)
    raise TypeError(f"unknown split spec {spec!r}")  # pragma: no cover


MIN_EVAL = 10
"""Fewer validation or test rows than this draw a warning: metrics on so few are noise."""


def check_split_sizes(spec, sizes: dict[str, int], total: int, unit: str = "graphs") -> list[str]:
    """Refuse a split the run cannot use; return warning lines for degenerate ones.

    The run trains on train, selects its best epoch on val and reports test, so each must hold
    at least one row. Warnings: val or test with fewer than :data:`MIN_EVAL` rows (one row
    leaves r² and correlations undefined), and group splits (scaffold) whose sizes are far from
    the requested fractions because one group is larger than a whole share.

    Raises:
        DataError: one line naming the sizes, the fractions asked for and the fix.
    """
    shown = "/".join(str(sizes[k]) for k in SPLIT_NAMES)
    fractions = getattr(spec, "fractions", None)
    asked = f" from fractions {list(fractions)}" if fractions is not None else ""
    empty = [k for k in SPLIT_NAMES if sizes[k] == 0]
    if empty:
        need = {"train": "train on", "val": "select the best epoch on", "test": "report"}
        why = "; ".join(f"`{k}` is needed to {need[k]}" for k in empty)
        fix = ("use fractions such as [0.8, 0.1, 0.1] (each share must hold at least one of the "
               f"{total} {unit})" if fractions is not None else "give every split at least one row")
        if isinstance(spec, ScaffoldSplit):
            fix += ", or a random split: scaffold groups are indivisible"
        raise DataError(f"the {spec.type} split gives {shown} {unit} (train/val/test){asked}, and {' and '.join(empty)} "
                        f"is empty ({why}); {fix}")
    warnings = []
    few = [k for k in ("val", "test") if sizes[k] < MIN_EVAL]
    if few:
        one = " (r2 and correlations are undefined on one)" if any(sizes[k] == 1 for k in few) else ""
        warnings.append(f"warning: the {spec.type} split gives {shown} {unit} (train/val/test): "
                        f"{' and '.join(few)} hold{'s' if len(few) == 1 else ''} fewer than {MIN_EVAL}{one}, so "
                        f"their metrics are noise; use larger val/test fractions or more data")
    if isinstance(spec, ScaffoldSplit) and fractions is not None and total:
        off = max(abs(sizes[k] / total - f) for k, f in zip(SPLIT_NAMES, fractions))
        if off > 0.1:
            warnings.append(f"warning: the scaffold split gives {shown} {unit} (train/val/test), far from the "
                            f"fractions {list(fractions)} asked for: a scaffold group is larger than a share "
                            f"(acyclic molecules all share the empty scaffold); check the sizes or use a random split")
    return warnings


def node_masks(spec) -> dict[str, str] | None:
    """For node-level splits, the boolean node field of each split; ``None`` for graph splits."""
    if isinstance(spec, NodeMaskSplit):
        return {"train": spec.train, "val": spec.val, "test": spec.test}
    if isinstance(spec, NodeRandomSplit):
        return {name: f"node.split_{name}" for name in SPLIT_NAMES}
    return None


def _node_split(dataset, keys: dict[str, str]) -> dict[str, list[int]]:
    """Graphs with at least one node in each split (all of them, for one big graph)."""
    out: dict[str, list[int]] = {}
    for name in SPLIT_NAMES:
        key = keys[name]
        idx = []
        for i, g in enumerate(dataset.graphs):
            if key not in g.fields:
                raise DataError(f"node split: graph {i} has no field `{key}` (a boolean node mask); "
                                f"fields: {', '.join(sorted(g.fields))}")
            if bool(g[key].any()):
                idx.append(i)
        out[name] = idx
    return out


def split_to_rows(split: dict[str, list[int]], dataset) -> dict[str, list[int]]:
    """Dataset positions back to source rows (to write a split file another tool can read)."""
    rows = list((dataset.meta or {}).get("rows", range(len(dataset))))
    return {k: [rows[i] for i in v] for k, v in split.items()}


__all__ = [
    "ColumnSplit",
    "check_split_sizes",
    "NodeMaskSplit",
    "NodeRandomSplit",
    "node_masks",
    "FileSplit",
    "RandomSplit",
    "ScaffoldSplit",
    "SourceSplit",
    "SplitSpec",
    "make_split",
    "murcko_scaffold",
    "random_split",
    "read_split_file",
    "rows_to_positions",
    "scaffold_split",
    "split_to_rows",
]
