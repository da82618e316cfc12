"""The EGNN paper's charged N-body table (Satorras et al. 2021, Table 2), reproduced from specs.

Usage::

    python benchmarks/nbody_table.py --train                 # train what is missing, then tabulate
    python benchmarks/nbody_table.py --runs runs/nbody       # tabulate finished runs only
    python benchmarks/nbody_table.py --train --specs specs/nbody --device cuda   # the paper's recipe

Each model is one spec: ``<specs>/<model>.yaml`` for egnn, radial_field, gnn, tfn,
se3_transformer and linear (``specs/nbody/budget/`` holds the CPU-budget variants: fewer
epochs, cosine learning-rate decay; ``specs/nbody/`` the paper's constant-rate recipe; the
linear baseline has no budget variant and is read from ``specs/nbody/linear.yaml``).
A run lands in ``<runs>/<model>/`` (metrics.json, best.pt, learning_curve.png, ...), exactly
as ``graphdl run <spec> --out <runs>/<model>`` writes it; ``--train`` skips models whose
metrics.json exists. The table is printed as markdown, written to ``<runs>/table.md`` and
``<runs>/table.json``, and the validation curves of every model to ``<runs>/curves.png``
with the paper's test MSE as dashed lines.

The test MSE is the mean over particles and coordinates of (x̂ − x)² at the best validation
epoch, as in the paper's code (``nn.MSELoss`` on positions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Test MSE of Table 2 (3,000 training trajectories), Satorras, Hoogeboom & Welling, ICML 2021.
PAPER = {
    "linear": 0.0819,
    "se3_transformer": 0.0244,
    "tfn": 0.0155,
    "gnn": 0.0107,
    "radial_field": 0.0104,
    "egnn": 0.0071,
}
LABELS = {"linear": "Linear", "se3_transformer": "SE(3)-Transformer", "tfn": "Tensor Field Network",
          "gnn": "GNN", "radial_field": "Radial Field", "egnn": "EGNN"}


def spec_for(model: str, specs: str) -> str:
    path = os.path.join(specs, f"{model}.yaml")
    if not os.path.exists(path) and model == "linear":
        path = os.path.join(os.path.dirname(__file__), os.pardir, "specs", "nbody", "linear.yaml")
    return os.path.normpath(path)


def train_missing(models: list[str], specs: str, runs: str, device: str | None, epochs: int | None = None,
                  limit: int | None = None) -> None:
    from graphdl.train.runner import run

    for m in models:
        out = os.path.join(runs, m)
        if os.path.exists(os.path.join(out, "metrics.json")):
            print(f"{m}: {out}/metrics.json exists; not retrained")
            continue
        spec = spec_for(m, specs)
        print(f"{m}: graphdl run {spec} --out {out}" + (f" --device {device}" if device else ""), flush=True)
        run(spec, out=out, device=device, epochs=epochs, limit=limit)


def collect(models: list[str], runs: str) -> list[dict]:
    rows = []
    for m in models:
        path = os.path.join(runs, m, "metrics.json")
        if not os.path.exists(path):
            rows.append({"model": m, "missing": True})
            continue
        with open(path) as f:
            data = json.load(f)
        timing = {}
        tpath = os.path.join(runs, m, "timing.json")
        if os.path.exists(tpath):
            with open(tpath) as f:
                timing = json.load(f)
        curve = [(e["epoch"], e["val"]["mse"]) for e in data["epochs"] if e.get("val") and "mse" in e["val"]]
        rows.append({
            "model": m,
            "epochs": len(data["epochs"]),
            "best_epoch": data["best_epoch"],
            "parameters": data["parameters"],
            "val_mse": data["final"]["val"]["mse"],
            "test_mse": data["final"]["test"]["mse"],
            "paper_mse": PAPER[m],
            "minutes": timing.get("total_seconds", float("nan")) / 60,
            "curve": curve,
        })
    return rows


def ordering(rows: list[dict], key: str) -> list[str]:
    have = [r for r in rows if not r.get("missing")]
    return [r["model"] for r in sorted(have, key=lambda r: r[key])]


def table(rows: list[dict]) -> str:
    lines = ["| model | epochs | best epoch | parameters | wall (min) | val MSE | test MSE | paper test MSE | ours / paper |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("missing"):
            lines.append(f"| {LABELS[r['model']]} | not run | | | | | | {PAPER[r['model']]:.4f} | |")
            continue
        lines.append(f"| {LABELS[r['model']]} | {r['epochs']} | {r['best_epoch']} | {r['parameters']:,} | "
                     f"{r['minutes']:.1f} | {r['val_mse']:.4f} | **{r['test_mse']:.4f}** | {r['paper_mse']:.4f} | "
                     f"{r['test_mse'] / r['paper_mse']:.2f} |")
    ours, paper = ordering(rows, "test_mse"), ordering(rows, "paper_mse")
    lines.append("")
    lines.append("ordering, best first: ours " + " < ".join(ours) + "; paper " + " < ".join(paper)
                 + ("  (same)" if ours == paper else "  (differs)"))
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, r in enumerate(r for r in rows if not r.get("missing") and r["curve"]):
        color = f"C{i}"
        ep, mse = zip(*r["curve"])
        ax.plot(ep, mse, color=color, label=f"{LABELS[r['model']]} (test {r['test_mse']:.4f})")
        ax.axhline(r["paper_mse"], color=color, linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MSE")
    ax.set_title("Charged N-body: validation MSE (dashed: the paper's test MSE)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Reproduces Table 2 of the EGNN paper; see the module docstring.")
    ap.add_argument("--runs", default="runs/nbody", help="folder holding one run folder per model")
    ap.add_argument("--specs", default="specs/nbody/budget", help="folder of the model specs (default: CPU budget)")
    ap.add_argument("--models", default=",".join(PAPER), help="comma-separated subset of " + ",".join(PAPER))
    ap.add_argument("--train", action="store_true", help="train the models whose run folder has no metrics.json")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: the spec's `train.device`)")
    ap.add_argument("--epochs", type=int, default=None, help="override the specs' epochs (a smoke run)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N graphs (a smoke run)")
    a = ap.parse_args(argv)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in PAPER]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; expected some of {', '.join(PAPER)}", file=sys.stderr)
        return 2
    if a.train:
        train_missing(models, a.specs, a.runs, a.device, a.epochs, a.limit)
    rows = collect(models, a.runs)
    if all(r.get("missing") for r in rows):
        print(f"error: no finished runs under {a.runs}/<model>/metrics.json; pass --train to train them",
              file=sys.stderr)
        return 2
    text = table(rows)
    print(text)
    os.makedirs(a.runs, exist_ok=True)
    with open(os.path.join(a.runs, "table.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(a.runs, "table.json"), "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "curve"} for r in rows], f, indent=2)
    plot(rows, os.path.join(a.runs, "curves.png"))
    print(f"wrote {a.runs}/table.md, table.json, curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
