"""The ``simulate`` task end to end on a tiny generated water dataset: statistics with the noise
variance, noise and loss masks for kinematic particles, validation by rollouts, checkpoints,
``graphdl rollout`` (npz, metrics JSON, GIF/MP4, PNG) and the errors a user can cause."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from graphdl.cli import main as cli
from graphdl.data.graph import collate
from graphdl.errors import SpecError
from graphdl.train import checkpoint as C
from graphdl.train.runner import make_task, prepare, run

SIGMA = 6.7e-4


def _spec(tmp_path, *, layers: int = 2, latent: int = 16, extra_task: dict | None = None) -> str:
    data = {"graphdl": 1, "type": "mpm_water", "n_train": 2, "n_val": 1, "n_test": 1, "frames": 16,
            "blobs": [1, 1], "particles_per_blob": [30, 40]}
    (tmp_path / "water.yaml").write_text(yaml.safe_dump(data))
    mlp = {"hidden": [latent], "out_dim": latent, "out_norm": "layer"}
    spec = {
        "graphdl": 1, "name": "tiny_gns",
        "inputs": {"node.history": "trajectory(6, 2)", "node.pos": 2, "node.particle_type": "categorical(9)"},
        "graph": {"kind": "radius", "positions": "node.pos", "cutoff": 0.015, "self_loops": True},
        "model": {"layers": [
            {"type": "history_velocities", "input": "node.history", "output": "node.v"},
            {"type": "wall_distances", "input": "node.pos", "output": "node.w",
             "bounds": [[0.03125, 0.96875], [0.03125, 0.96875]], "radius": 0.015},
            {"type": "embedding", "input": "node.particle_type", "output": "node.t", "out_dim": 4},
            {"type": "concat", "inputs": ["node.v", "node.w", "node.t"], "output": "node.x"},
            {"type": "edge_displacement", "input": "node.pos", "output": "edge.x", "scale": 0.015},
            {"type": "mlp", "input": "node.x", "output": "node.h", **mlp},
            {"type": "mlp", "input": "edge.x", "output": "edge.h", **mlp},
            {"type": "graph_network", "node_input": "node.h", "edge_input": "edge.h",
             "edge_model": {"inputs": ["edge", "dst", "src"], **mlp}, "node_model": {"inputs": ["agg", "node"], **mlp},
             "repeat": layers, "residual": True},
            {"type": "mlp", "input": "node.h", "output": "node.acc", "hidden": [latent], "out_dim": 2}],
            "outputs": ["node.acc"]},
        "task": {"type": "simulate", "noise_std": SIGMA, "val_rollout": {"steps": 5, "starts": 2,
                                                                         "one_step_windows": 3},
                 "test_rollout": {"steps": 6, "starts": 1, "one_step_windows": 4}, "monitor": "mse5",
                 **(extra_task or {})},
        "dataset": {"spec": "water.yaml", "split": {"type": "source"}},
        "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "eval_batch_size": 2, "num_threads": 1,
                  "optimizer": {"type": "adam", "lr": 1e-4},
                  "schedule": {"type": "exponential_decay", "decay_steps": 100, "rate": 0.1, "min_lr": 1e-6}},
    }
    path = tmp_path / "gns.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHDL_CACHE", str(tmp_path / "cache"))


def test_run_trains_validates_by_rollouts_and_keeps_the_statistics(tmp_path):
    spec = _spec(tmp_path)
    m = run(spec, out=str(tmp_path / "run"))
    val = m["epochs"][0]["val"]
    for k in ("one_step_mse", "mse5", "mse_full", "baseline_mse5", "inside_box", "ekin_rel"):
        assert k in val and np.isfinite(val[k]), k
    assert "mse20" not in val  # 5-step validation rollouts have no MSE20
    assert m["task"]["monitor"] == "mse5" and m["best_epoch"] in (1, 2)
    test = m["final"]["test"]
    assert {"mse5", "mse_full", "baseline_mse_full"} <= set(test)
    assert os.path.exists(tmp_path / "run" / "test_rollout.npz")
    # the learning-rate schedule: (lr − min) 0.1^(s/100) + min after 6 steps
    assert m["epochs"][-1]["lr"] == pytest.approx((1e-4 - 1e-6) * 0.1 ** (6 / 100) + 1e-6, rel=1e-9)

    # statistics of the training split (never val/test) with the noise variance added
    exp = prepare(spec)
    ds = exp.data.load()
    train = [ds.graphs[i]["node.position"].double() for i in ds.splits["train"]]
    v = torch.cat([(x[:, 1:] - x[:, :-1]).reshape(-1, 2) for x in train])
    a = torch.cat([(x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]).reshape(-1, 2) for x in train])
    ck = C.load(tmp_path / "run" / "best.pt")
    t = ck["task"]
    assert torch.allclose(t["vel_mean"], v.mean(0), rtol=1e-12, atol=0)
    assert torch.allclose(t["vel_std"] ** 2, v.var(0, unbiased=False) + SIGMA ** 2, rtol=1e-10, atol=0)
    assert torch.allclose(t["acc_std"] ** 2, a.var(0, unbiased=False) + SIGMA ** 2, rtol=1e-10, atol=0)
    # ... copied into the model's history_velocities block (float32 buffers)
    stat = [k for k in ck["model"] if k.endswith("stat_std")]
    assert len(stat) == 1 and torch.allclose(ck["model"][stat[0]].double(), t["vel_std"], rtol=1e-6)


def test_noise_and_loss_skip_kinematic_particles(tmp_path):
    spec = _spec(tmp_path)
    exp = prepare(spec)
    ds = exp.data.load()
    task = make_task(exp, ds)
    ex = task.examples(ds.graphs, ds.splits["train"], training=True)
    task.fit(ex)
    batch = collate(ex[:2])
    types = batch["node.particle_type"].clone()
    types[::2] = 3  # every other particle kinematic
    batch = batch.replace(node__particle_type=types)
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, g):
            seen["hist"] = g["node.history"]
            return {"node.acc": torch.zeros(g.num_nodes, 2, dtype=torch.float32, requires_grad=True)}

    torch.manual_seed(0)
    loss = task.train_loss(Probe(), batch)
    clean = batch["node.window"][:, :-1]
    kin = types == 3
    assert torch.equal(seen["hist"][kin], clean[kin])  # no noise on kinematic particles
    assert (seen["hist"][~kin] != clean[~kin]).any()
    # the loss with a zero prediction: Σ_axes target² averaged over the moving particles only
    torch.manual_seed(0)
    from graphdl.simulate import core

    noise = core.random_walk_noise(clean, SIGMA) * (~kin)[:, None, None]
    target = (core.acceleration_target(batch["node.window"][:, -1], clean, noise).double() - task.acc_mean) / task.acc_std
    want = (target[~kin] ** 2).sum(-1).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)  # float32 targets


def test_rollout_command_writes_positions_metrics_and_animations(tmp_path, capsys):
    spec = _spec(tmp_path, layers=1)
    run(spec, out=str(tmp_path / "run"))
    ck = str(tmp_path / "run" / "best.pt")
    out = tmp_path / "ro"
    assert cli(["rollout", spec, "--checkpoint", ck, "--steps", "7", "--render", "gif", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "baseline (constant velocity + mean acc.)" in text
    z = np.load(out / "rollout_test.npz")
    assert z["predicted"].shape == z["truth"].shape and z["predicted"].shape[0] == 7
    metrics = json.loads((out / "rollout_test_metrics.json").read_text())
    assert metrics["trajectories"][0]["steps"] == 7 and "mse5" in metrics["mean"] and "mse5" in metrics["baseline"]
    assert (out / "rollout_test_0.gif").read_bytes()[:6] == b"GIF89a"
    assert (out / "rollout_test_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pytest.importorskip("imageio_ffmpeg")
    assert cli(["rollout", spec, "--checkpoint", ck, "--split", "val", "--steps", "4", "--render", "mp4",
                "--out", str(out)]) == 0
    assert (out / "rollout_val_0.mp4").read_bytes()[4:8] == b"ftyp"


def test_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SpecError, match=r"`monitor: mse20` needs validation rollouts of at least 20 steps, but "
                                        r"`val_rollout.steps` is 5"):
        prepare(_spec(tmp_path, extra_task={"monitor": "mse20"}))
    spec = _spec(tmp_path)
    text = Path(spec).read_text().replace("node.history: trajectory(6, 2)", "node.history: trajectory(6, 3)")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(SpecError, match=r"declare it under `inputs:` as `node.history: trajectory\(6, 2\)`"):
        run(str(bad), out=str(tmp_path / "r"))
    assert cli(["check", str(bad)]) == 2  # `graphdl check` sees it too, without generating data
    assert "node.history: trajectory(6, 2)" in capsys.readouterr().err
    assert cli(["rollout", spec, "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_step_context_reaches_the_model_standardised(tmp_path):
    """A DeepMind TFRecord with a per-frame global context: the task standardises it with the
    training split's statistics and the model reads frame t of it with the history ending at t."""
    from tfrecord.writer import TFRecordWriter

    rng = np.random.default_rng(0)
    meta = {"bounds": [[0.0, 1.0], [0.0, 1.0]], "dim": 2, "dt": 0.01, "default_connectivity_radius": 0.015,
            "sequence_length": 11, "context_mean": [0.0], "context_std": [1.0]}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    ctx_all = []
    for stem, count in (("train", 2), ("valid", 1), ("test", 1)):
        w = TFRecordWriter(str(tmp_path / f"{stem}.tfrecord"))
        for key in range(count):
            pos = (0.5 + 0.002 * rng.standard_normal((12, 6, 2)).cumsum(0)).astype(np.float32)
            ctx = (3.0 + 2.0 * rng.standard_normal((12, 1))).astype(np.float32)
            if stem == "train":
                ctx_all.append(ctx)
            w.write({"key": (key, "int"), "particle_type": (np.full(6, 5, np.int64).tobytes(), "byte")},
                    {"position": ([f.tobytes() for f in pos], "byte"), "step_context": ([c.tobytes() for c in ctx], "byte")})
        w.close()
    spec = yaml.safe_load(Path(_spec(tmp_path, layers=1)).read_text())
    spec["inputs"]["graph.step_context"] = 1
    layers = spec["model"]["layers"]
    layers.insert(3, {"type": "standardize", "input": "graph.step_context", "output": "graph.c", "statistic": "context"})
    layers[4]["inputs"].append("graph.c")  # the concat: broadcast to the particles
    spec["task"].update({"context": "graph.step_context"})
    spec["dataset"] = {"type": "deepmind_tfrecord", "path": str(tmp_path), "split": {"type": "source"}}
    spec["task"]["val_rollout"]["steps"] = 5
    path = tmp_path / "ctx.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run(str(path), out=str(tmp_path / "run"))
    ck = C.load(tmp_path / "run" / "best.pt")
    # statistics over the windows' input frames (frame t = s + C of each window s)
    frames = np.concatenate([c[5:11] for c in ctx_all]).astype(np.float64)
    assert ck["task"]["context_mean"].item() == pytest.approx(frames.mean(), rel=1e-9)
    assert ck["task"]["context_std"].item() == pytest.approx(frames.std(), rel=1e-9)
    key = next(k for k in ck["model"] if k.endswith("stat_mean") and ck["model"][k].numel() == 1)
    assert ck["model"][key].item() == pytest.approx(frames.mean(), rel=1e-6)


def test_trajectories_of_different_lengths_are_cut_for_batched_evaluation(tmp_path):
    exp = prepare(_spec(tmp_path))
    ds = exp.data.load()
    task = make_task(exp, ds)
    short = ds.graphs[2].replace(node__position=ds.graphs[2]["node.position"][:, :10])
    graphs = [ds.graphs[0], ds.graphs[1], short]
    ev = task.examples(graphs, [0, 2], training=False)
    assert [g["node.position"].size(1) for g in ev] == [10, 10]
    assert torch.equal(ev[0]["node.position"], ds.graphs[0]["node.position"][:, :10])
    assert collate(ev).num_graphs == 2
