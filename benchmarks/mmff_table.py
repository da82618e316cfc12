"""Energy and force errors of MMFF94 potentials trained from specs, next to trivial baselines.

Usage::

    python benchmarks/mmff_table.py                            # baselines only
    python benchmarks/mmff_table.py --runs /tmp/mmff/egnn      # + the runs' metrics.json (each a run dir)

Baselines on the held-out *test molecules* of ``datasets/mmff_conformers.yaml`` (the split of
the specs, ``split: {type: source}``), in the dataset's units:

* mean energy: every test conformer predicted as the mean training ``graph.energy`` (which is
  already the MMFF energy minus a per-element linear fit, so this baseline knows composition);
* zero forces: ``F̂ = 0`` (the force MAE is then the mean |F| component).

Runs are read from their ``metrics.json`` (``final.test``) and ``timing.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def baselines(dataset_spec: str = os.path.join(ROOT, "datasets", "mmff_conformers.yaml"),
              max_molecules: int | None = None) -> dict:
    """``{name: {energy_mae, energy_rmse, force_mae, force_rmse}}`` on the test molecules
    (of the first ``max_molecules`` molecules only when given: a smoke run; the recorded
    checksum of the full set then does not apply)."""
    from graphdl.data import conformers as cf
    from graphdl.spec.loader import load_spec

    data = dict(load_spec(dataset_spec).data)
    data.pop("graphdl", None)
    if max_molecules is not None:
        data.update(max_molecules=max_molecules, sha256=None)
    ds = cf.MMFFConformers.load(cf.MMFFConformersParams(**{**data, "progress": False}))
    train, test = ds.splits["train"], ds.splits["test"]
    e_train = torch.cat([ds.graphs[i]["graph.energy"].reshape(-1) for i in train]).double()
    e_test = torch.cat([ds.graphs[i]["graph.energy"].reshape(-1) for i in test]).double()
    f_test = torch.cat([ds.graphs[i]["node.forces"].reshape(-1) for i in test]).double()
    de = e_test - e_train.mean()
    return {
        "sizes": {"train": len(train), "test": len(test), "test_molecules": len(ds.meta["molecule_splits"]["test"])},
        "mean energy / zero forces": {
            "energy_mae": float(de.abs().mean()), "energy_rmse": float(de.pow(2).mean().sqrt()),
            "force_mae": float(f_test.abs().mean()), "force_rmse": float(f_test.pow(2).mean().sqrt()),
        },
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="*", default=[], help="run directories (graphdl run --out DIR)")
    ap.add_argument("--max-molecules", type=int, default=None, help="baselines on the first N molecules (a smoke run)")
    from graphdl import benchmarking

    benchmarking.add_arguments(ap, device=None)  # tabulates files and a baseline: no device work to place
    args = ap.parse_args(argv)
    print(benchmarking.banner())
    base = baselines(max_molecules=args.max_molecules)
    rows = [("model", "epochs", "wall s", "test energy MAE", "test energy RMSE", "test force MAE", "test force RMSE")]
    b = base["mean energy / zero forces"]
    rows.append(("baseline: mean energy, zero forces", "-", "-", f"{b['energy_mae']:.2f}", f"{b['energy_rmse']:.2f}",
                 f"{b['force_mae']:.2f}", f"{b['force_rmse']:.2f}"))
    for d in args.runs:
        with open(os.path.join(d, "metrics.json")) as f:
            m = json.load(f)
        with open(os.path.join(d, "timing.json")) as f:
            t = json.load(f)
        te = m["final"]["test"]
        rows.append((m["spec"], f"{len(m['epochs'])} (best {m['best_epoch']})", f"{t['total_seconds']:.0f}",
                     f"{te['energy_mae']:.2f}", f"{te['energy_rmse']:.2f}", f"{te['force_mae']:.2f}",
                     f"{te['force_rmse']:.2f}"))
    print(f"MMFF94 conformers, test molecules held out ({base['sizes']}); energies kcal/mol, forces kcal/mol/Å")
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for r in rows[1:]:
        print("| " + " | ".join(r) + " |")
    benchmarking.write_json(args.json, {"args": vars(args), "baselines": base, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
