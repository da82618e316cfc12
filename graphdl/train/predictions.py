"""The predictions CSV of a split (``test_predictions.csv``): source row, SMILES when known, targets, predictions."""

from __future__ import annotations

import csv

from graphdl.data.cache import atomic_write


def write_predictions(path: str, table: dict[str, list], dataset) -> None:
    """Write ``table`` (a task's columns, with ``index`` = dataset positions) atomically to ``path``."""
    meta = dataset.meta or {}
    rows_of = meta.get("rows")
    smiles = meta.get("smiles")
    mol_of = meta.get("molecule_of_graph")  # several graphs (conformers) per molecule
    if smiles is not None and mol_of is not None:
        smiles = [smiles[m] for m in mol_of]
    index = table.pop("index")
    header = ["row"] + (["node"] if "node" in table else []) + (["smiles"] if smiles is not None else [])
    node = table.pop("node", None)
    header += list(table)
    with atomic_write(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for j, i in enumerate(index):
            row: list = [rows_of[i] if rows_of is not None else i]
            if node is not None:
                row.append(node[j])
            if smiles is not None:
                row.append(smiles[i])
            row += [f"{v:.6g}" if isinstance(v, float) else v for k, v in ((k, table[k][j]) for k in table)]
            w.writerow(row)


__all__ = ["write_predictions"]
