"""``graphdl predict``: a trained checkpoint applied to new molecules.

The spec rebuilds the model; the checkpoint must come from the same model spec (inputs,
graph, model and task sections; training settings may differ) and brings the weights and
the task's target normalisation. Molecules are featurized by the spec's dataset type, so
SMILES given here are turned into graphs exactly as the training data were.
"""

from __future__ import annotations

import csv
import os
from typing import TextIO

import torch

from graphdl.data.loader import GraphLoader
from graphdl.errors import DataError, SpecError
from graphdl.train import checkpoint as C
from graphdl.train.runner import make_task_from_fields, pick_device, prepare
from graphdl.types import parse_type


def read_smiles_csv(path: str, column: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or column not in reader.fieldnames:
                have = ", ".join(reader.fieldnames or []) or "none"
                raise DataError(f"`{path}` has no column `{column}` (columns: {have}); pass --smiles-column")
            return [row[column] for row in reader]
    except FileNotFoundError:
        raise DataError(f"CSV file `{path}` does not exist") from None


def predict(spec_path: str, checkpoint: str, smiles: list[str], *, device: str = "cpu",
            batch_size: int = 256, on_invalid: str = "error") -> tuple[list[str], list[list]]:
    """Predictions for ``smiles``: ``(header, rows)`` with the SMILES first.

    ``on_invalid``: ``error`` (default) stops at the first SMILES that cannot be featurized,
    naming it; ``skip`` keeps every row, an invalid one with empty predictions and the reason in
    an ``error`` column (empty for valid rows).
    """
    exp = prepare(spec_path)
    ck = C.load(checkpoint)
    C.check_compatible(ck, exp.resolved, checkpoint, model_only=True, spec_file=exp.spec.file)
    from_smiles = getattr(exp.data.cls, "from_smiles", None)
    if from_smiles is None:
        raise SpecError(f"dataset type `{exp.data.cls.name}` does not make graphs from SMILES, so `graphdl predict "
                        f"--smiles/--csv` cannot featurize inputs for this spec")
    if not smiles:
        raise DataError("nothing to predict: give --smiles S [S ...] or --csv FILE")
    errors: dict[int, str] = {}
    if on_invalid == "skip":
        graphs, keep = [], []
        for i, s in enumerate(smiles):
            try:
                graphs.append(exp.data.cls.featurize(exp.data.params, s, row=i))
                keep.append(i)
            except DataError as e:
                errors[i] = str(e)
    else:
        graphs = from_smiles(exp.data.params, smiles)
        keep = list(range(len(smiles)))
    dev = pick_device(device)
    fields = {k: parse_type(v) for k, v in ck.get("data_fields", {}).items()}
    task = make_task_from_fields(exp, fields, ck.get("target_names") or {})
    from graphdl.compile.compiler import build

    model = build(exp.plan)
    model.load_state_dict(ck["model"])
    task.load_state_dict(ck["task"])
    model.to(dev).eval()
    task.to(dev).eval()
    columns: dict[str, list] = {}
    offset = 0
    ctx = torch.enable_grad() if task.grad_in_eval else torch.no_grad()
    with ctx:
        for batch in GraphLoader(graphs, batch_size, seed=0):
            batch = batch.to(dev)
            cols = task.predictions(model(batch), batch)
            cols["index"] = cols["index"] + offset
            offset += batch.num_graphs
            for k, v in cols.items():
                columns.setdefault(k, []).extend(v.detach().cpu().tolist())
    index = [keep[i] for i in columns.pop("index", [])]
    node = columns.pop("node", None)
    names = list(columns) or [f"{c}_pred" for c in task.columns]
    header = ["smiles"] + (["node"] if node is not None else []) + names + (["error"] if on_invalid == "skip" else [])
    by_input: dict[int, list] = {}
    for j, i in enumerate(index):
        row = [smiles[i]] + ([node[j]] if node is not None else [])
        row += [f"{columns[k][j]:.6g}" if isinstance(columns[k][j], float) else columns[k][j] for k in columns]
        by_input.setdefault(i, []).append(row + ([""] if on_invalid == "skip" else []))
    rows = []
    for i in range(len(smiles)):  # input order; an invalid input keeps its row
        if i in errors:
            rows.append([smiles[i]] + ([""] if node is not None else []) + [""] * len(names) + [errors[i]])
        else:
            rows.extend(by_input.get(i, []))
    return header, rows


def write_csv(header: list[str], rows: list[list], out: TextIO | str) -> None:
    if isinstance(out, str):  # written beside and renamed: a failure leaves an earlier file intact
        from graphdl.data.cache import atomic_write

        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with atomic_write(out, "w") as f:
            write_csv(header, rows, f)
        return
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


__all__ = ["predict", "read_smiles_csv", "write_csv"]
