"""Accuracy table of a trained GNS run: full test rollouts beside the constant-velocity (+ mean
acceleration) baseline, as in the README.

Usage::

    graphdl run specs/gns/water_drop_2d.yaml --out runs/gns_water        # CPU preset
    python benchmarks/gns_table.py --run runs/gns_water [--render gif]

Rolls the best checkpoint out over every test trajectory from its first C + 1 frames to its
end (``graphdl rollout``), and prints one-step MSE, MSE₅, MSE₂₀, full-rollout MSE, the
kinetic-energy error and the fraction of predicted positions inside the walls (± R), with the
ratio baseline / model (> 1: the model is better). ``timing.json`` of the run gives the wall.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def table(run_dir: str, *, split: str = "test", render: str | None = None, steps: int | None = None) -> str:
    from graphdl.simulate.commands import rollout_split

    spec = os.path.join(run_dir, "spec.yaml")
    res = rollout_split(spec, os.path.join(run_dir, "best.pt"), split=split, steps=steps, render=render,
                        out=run_dir)
    m, b = res["mean"], res["baseline"]
    rows = [("one-step MSE", "one_step_mse"), ("MSE5", "mse5"), ("MSE20", "mse20"), ("full-rollout MSE", "mse_full"),
            ("kinetic energy, relative error", "ekin_rel"), ("inside the walls (± R)", "inside_box")]
    head = f"{split}: {len(res['trajectories'])} trajectories, {res['trajectories'][0]['steps']} rollout steps each"
    lines = [head,
             "| metric | GNS | constant velocity + mean acc. | baseline / GNS |", "|---|---|---|---|"]
    for name, key in rows:
        if key in m and key in b:
            ratio = b[key] / m[key] if m[key] else float("inf")
            lines.append(f"| {name} | {m[key]:.3g} | {b[key]:.3g} | {ratio:.3g} |")
    timing = os.path.join(run_dir, "timing.json")
    if os.path.exists(timing):
        with open(timing) as f:
            lines.append(f"training wall: {json.load(f)['total_seconds'] / 60:.1f} min")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a run directory of `graphdl run` (spec.yaml, best.pt)")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--render", choices=["gif", "mp4"], default=None)
    args = ap.parse_args(argv)
    print(table(args.run, split=args.split, render=args.render, steps=args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
