"""``graphdl rollout``: roll a trained simulator out over a split and write positions, metrics and animations.

Registered in :mod:`graphdl.cli`. Writes to ``--out`` (default: the checkpoint's directory):

* ``rollout_<split>.npz``: ``predicted`` and ``truth`` ``(K, N, D)`` of every trajectory of the
  split (particles of all trajectories side by side; ``graph`` ``(N,)`` says whose),
  ``initial`` ``(N, D)``, ``particle_type``, ``trajectory_ids`` (dataset indices);
* ``rollout_<split>_metrics.json``: per trajectory and mean — ``one_step_mse``, ``mse5``,
  ``mse20``, ``mse_full``, ``ekin_mse``, ``ekin_rel``, ``inside_box`` — for the model and for
  the constant-velocity + mean-acceleration baseline;
* with ``--render gif|mp4``: ``rollout_<split>_<i>.gif|mp4`` (truth beside prediction) and
  ``rollout_<split>_<i>.png`` (a strip of frames) for trajectory ``--trajectory i``.
"""

from __future__ import annotations

import argparse
import json
import os

EPILOG = """examples:
  graphdl run specs/gns/water_drop_2d.yaml --out runs/gns      train the CPU preset first (about 30 min, one core)
  graphdl rollout specs/gns/water_drop_2d.yaml --checkpoint runs/gns/best.pt --render gif
  graphdl rollout specs/gns/water_drop_2d.yaml --checkpoint runs/gns/best.pt --split val --steps 100 --render mp4 --out rollouts
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "rollout", help="roll a trained simulator out and write positions, metrics and animations",
        description="Rebuild the model of SPEC, load CHECKPOINT (refused if trained from another model spec),\n"
                    "roll it out autoregressively from the first C + 1 frames of every trajectory of a split.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC", help="the experiment spec the checkpoint was trained from")
    p.add_argument("--checkpoint", required=True, metavar="PT", help="best.pt or last.pt of a run")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--steps", type=int, metavar="K", help="rollout steps (default: to the end of each trajectory)")
    p.add_argument("--render", choices=["gif", "mp4"], help="also write an animation and a PNG strip")
    p.add_argument("--trajectory", type=int, default=0, metavar="I", help="which trajectory of the split to render")
    p.add_argument("--every", type=int, metavar="E", help="render every E-th step (default: at most 100 frames)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: the checkpoint's)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    p.set_defaults(func=cmd_rollout)


def rollout_split(spec, checkpoint: str, *, split: str = "test", steps: int | None = None, out: str | None = None,
                  render: str | None = None, trajectory: int = 0, every: int | None = None,
                  device: str = "cpu") -> dict:
    """Roll out every trajectory of ``split`` and write the files listed in the module docstring.

    Returns the metrics (``{"mean": {...}, "baseline": {...}, "trajectories": [...]}``).

    Raises:
        CheckpointError: the checkpoint was trained from another model spec.
        DataError, SpecError: a bad spec, dataset or option (one line).
    """
    import numpy as np
    import torch

    from graphdl.compile.compiler import build
    from graphdl.errors import DataError, SpecError
    from graphdl.simulate import core
    from graphdl.train import checkpoint as C
    from graphdl.train.runner import _spec_dir, make_task, pick_device, prepare
    from graphdl.train.splits import make_split
    from graphdl.train.tasks.simulate import RolloutSpec, Simulate, save_rollout

    exp = prepare(spec)
    if exp.task_params.type != "simulate":
        raise SpecError(f"`graphdl rollout` needs a `task: {{type: simulate}}` spec; {exp.spec.file} has task "
                        f"`{exp.task_params.type}`")
    if steps is not None and steps < 1:
        raise SpecError(f"--steps must be a positive integer, found {steps}")
    dev = pick_device(device)
    ck = C.load(checkpoint)
    C.check_compatible(ck, exp.resolved, checkpoint, model_only=True, spec_file=exp.spec.file)
    dataset = exp.data.load()
    task = make_task(exp, dataset)
    assert isinstance(task, Simulate)
    index = make_split(exp.data.split, dataset, seed=exp.train.seed, base_dir=_spec_dir(exp.spec))[split]
    if not index:
        raise DataError(f"the {split} split of dataset `{exp.data.cls.name}` is empty")
    model = build(exp.plan)
    model.load_state_dict(ck["model"])
    task.load_state_dict(ck["task"])
    model.to(dev).eval()
    task.to(dev).eval()
    graphs = task.examples(dataset.graphs, index, training=False)
    spec_r = RolloutSpec(steps=steps, starts=1, one_step_windows=None)
    per_traj: list[dict] = []
    rollouts = []
    for k, g in enumerate(graphs):
        g = g.to(dev)
        t_len = g[task.p.position].size(1)
        if t_len < task.frames + 1:
            raise DataError(f"{split} trajectory {k} has {t_len} frames; a rollout needs at least C + 2 = "
                            f"{task.frames + 1}")
        r_m, r_b = task.rollout_batch(model, g, spec_r)
        one = task.one_step_batch(model, g, None)
        row: dict = {"trajectory": int(index[k]), "particles": g.num_nodes, "steps": int(r_m[0].pred.size(0))}
        for r, prefix in ((r_m[0], ""), (r_b[0], "baseline_")):
            for name, v in core.rollout_metrics(r, task.dt).items():
                row[prefix + name] = float(v[0])
            if task.bounds is not None:
                row[prefix + "inside_box"] = float(core.inside_box(r.pred, task.bounds, float(task.radius or 0.0)))
        row["one_step_mse"] = float(one[""].mean())
        row["baseline_one_step_mse"] = float(one["baseline_"].mean())
        per_traj.append(row)
        rollouts.append(r_m[0])
    keys = [k for k in per_traj[0] if k not in ("trajectory", "particles", "steps")]
    mean = {k: float(np.mean([r[k] for r in per_traj if k in r])) for k in keys}
    result = {"spec": exp.name, "checkpoint": os.path.abspath(checkpoint), "split": split,
              "noise_std": task.p.noise_std, "dt": task.dt,
              "mean": {k: v for k, v in mean.items() if not k.startswith("baseline_")},
              "baseline": {k.removeprefix("baseline_"): v for k, v in mean.items() if k.startswith("baseline_")},
              "trajectories": per_traj}
    out = out or os.path.dirname(os.path.abspath(checkpoint))
    os.makedirs(out, exist_ok=True)
    both = _concat(rollouts, torch)
    save_rollout(os.path.join(out, f"rollout_{split}.npz"), both,
                 torch.tensor([int(i) for i in index]), {"dt": task.dt, "bounds": task.bounds, "split": split})
    from graphdl.data.cache import atomic_write

    with atomic_write(os.path.join(out, f"rollout_{split}_metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    if render is not None:
        from graphdl.simulate.render import animate, strip

        if not 0 <= trajectory < len(rollouts):
            raise DataError(f"--trajectory {trajectory} is not one of the {len(rollouts)} trajectories of {split}")
        r = rollouts[trajectory]
        types = r.types.cpu().numpy() if r.types is not None else None
        base = os.path.join(out, f"rollout_{split}_{trajectory}")
        animate(f"{base}.{render}", r.truth.cpu().numpy(), r.pred.cpu().numpy(), types, task.bounds, fmt=render,
                every=every, title=exp.name)
        strip(f"{base}.png", r.truth.cpu().numpy(), r.pred.cpu().numpy(), types, task.bounds)
        result["files"] = [f"{base}.{render}", f"{base}.png"]
    return result


def _concat(rollouts, torch):
    """One :class:`~graphdl.simulate.core.Rollout` of several (padded to the shortest rollout length)."""
    from graphdl.simulate.core import Rollout

    k = min(r.pred.size(0) for r in rollouts)
    batch = torch.cat([torch.full_like(r.batch, i) for i, r in enumerate(rollouts)])
    types = torch.cat([r.types for r in rollouts]) if all(r.types is not None for r in rollouts) else None
    return Rollout(torch.cat([r.pred[:k] for r in rollouts], 1), torch.cat([r.truth[:k] for r in rollouts], 1),
                   torch.cat([r.start for r in rollouts]), batch, len(rollouts), types)


def cmd_rollout(args: argparse.Namespace) -> int:
    res = rollout_split(args.spec, args.checkpoint, split=args.split, steps=args.steps, out=args.out,
                        render=args.render, trajectory=args.trajectory, every=args.every, device=args.device)
    m, b = res["mean"], res["baseline"]
    show = ["one_step_mse", "mse5", "mse20", "mse_full", "ekin_rel", "inside_box"]
    print(f"{res['split']}: {len(res['trajectories'])} trajectories")
    for name, d in (("model", m), ("baseline (constant velocity + mean acc.)", b)):
        print(f"  {name}: " + "  ".join(f"{k} {d[k]:.3g}" for k in show if k in d))
    for f in res.get("files", []):
        print(f"wrote {f}")
    return 0


__all__ = ["add_parser", "cmd_rollout", "rollout_split"]
