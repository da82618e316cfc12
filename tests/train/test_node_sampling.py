"""Node classification on one graph with neighbour-sampled mini-batches (``train.loader: neighbor``).

The graph is a small degree-corrected SBM (2,000 nodes, ~16,000 edges, 4 blocks; generated into a
scratch cache in well under a second). With ``fanouts: all`` a seed's sampled neighbourhood holds
every in-edge its two SAGE layers read, so:

* evaluation on sampled neighbourhoods (``eval: sampled``) and over the whole graph (``eval: full``)
  give the same predictions, to float32 round-off;
* two processes (``--nproc 2``), each taking half of every batch's seed nodes, train the parameters
  of one process, to float32 round-off.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch

from graphdl.errors import SpecError
from graphdl.train.progress import Progress
from graphdl.train.runner import prepare, run

DATA = """\
graphdl: 1
type: dc_sbm
name: sbm_tiny
num_nodes: 2000
num_edges: 16000
num_blocks: 4
features: 8
noise: 2.0
seed: 0
"""

SPEC = """\
graphdl: 1
name: sage-tiny
inputs: {{node.feat: 8}}
model:
  layers:
    - {{type: sage, input: node.feat, output: node.h, out_dim: 16, aggr: mean}}
    - {{type: relu, input: node.h}}
    - {{type: sage, input: node.h, output: node.logits, out_dim: 4, aggr: mean}}
  outputs: [node.logits]
task: {{type: classification, target: node.y, num_classes: 4, metrics: [accuracy]}}
dataset:
  spec: data.yaml
  split: {{type: node_random, fractions: [0.5, 0.25, 0.25]}}
train:
  epochs: 2
  batch_size: 256
  seed: 0
  optimizer: {{type: adam, lr: 1.0e-2}}
  loader: {{type: neighbor, fanouts: {fanouts}, batch_size: 256, eval: {eval}}}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("sampling")
    (d / "data.yaml").write_text(DATA)
    for name, fanouts, ev in [("full", "all", "full"), ("sampled", "all", "sampled"), ("drawn", "[5, 3]", "full")]:
        (d / f"{name}.yaml").write_text(SPEC.format(fanouts=fanouts, eval=ev))
    mp = pytest.MonkeyPatch()
    mp.setenv("GRAPHDL_CACHE", str(d / "cache"))
    yield d
    mp.undo()


def _run(spec, out, **kw) -> dict:
    return run(str(spec), out=str(out), progress=Progress(io.StringIO(), bars=False), **kw)


def _probs(out) -> dict[int, list[float]]:
    with open(out / "test_predictions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {int(r["node"]): [float(r[f"block_prob{c}"]) for c in range(4)] for r in rows}


@pytest.fixture(scope="module")
def full(tiny):
    """One process, ``fanouts: all``, evaluation over the whole graph (the reference of both tests)."""
    return _run(tiny / "full.yaml", tiny / "full")


def test_sampled_and_full_graph_evaluation_agree_for_fanouts_all(tiny, full):
    sampled = _run(tiny / "sampled.yaml", tiny / "sampled")
    assert full["split"]["sizes"] == sampled["split"]["sizes"] == {"train": 1000, "val": 500, "test": 500}
    # the two runs train identically (same loader); only where evaluation runs differs. The same
    # float32 terms summed in another order: a mean over ≤ 100 in-edges of O(1) features moves by a
    # few ulps (1e-7 relative each); through two layers and a softmax a probability or a per-node
    # loss moves by ≤ ~1e-6. Probabilities are written with 6 significant digits: a step of 1e-6 in
    # [0.1, 1), so round-off that crosses a rounding boundary shows as one whole step (measured: 1e-6).
    for e_full, e_sampled in zip(full["epochs"], sampled["epochs"]):
        assert e_sampled["train"]["loss"] == e_full["train"]["loss"]
        assert e_sampled["val"]["loss"] == pytest.approx(e_full["val"]["loss"], rel=1e-5)
    assert sampled["final"]["test"]["loss"] == pytest.approx(full["final"]["test"]["loss"], rel=1e-5)
    a, b = _probs(tiny / "full"), _probs(tiny / "sampled")
    assert sorted(a) == sorted(b) and len(a) == 500  # every test node once, by its id in the graph
    gap = max(abs(x - y) for n in a for x, y in zip(a[n], b[n]))
    assert gap <= 2e-6
    # the model learned something (4 balanced blocks: chance is 0.25)
    assert full["final"]["test"]["accuracy"] > 0.5


def test_two_processes_split_the_seed_nodes_and_train_what_one_trains(tiny, full):
    one = full
    two = _run(tiny / "full.yaml", tiny / "two", nproc=2)
    p1 = torch.load(tiny / "full" / "last.pt", weights_only=True)
    p2 = torch.load(tiny / "two" / "last.pt", weights_only=True)
    assert p2["world_size"] == 2
    # float32 round-off as in tests/train/test_ddp.py: T = 8 Adam steps (2 epochs of 1000/256 → 4),
    # lr 1e-2, a relative gradient change δ ≤ 1e-4 from per-rank partial sums, |θ| ≤ 4 (ulp 4.8e-7):
    # |Δθ| ≤ T·(lr·δ + ulp) ≈ 8·(1e-6 + 4.8e-7) ≈ 1.2e-5
    gap = max((p1["model"][k] - p2["model"][k]).abs().max().item() for k in p1["model"])
    assert gap <= 8 * (1e-2 * 1e-4 + 4.8e-7)
    for e1, e2 in zip(one["epochs"], two["epochs"]):
        assert e2["train"]["loss"] == pytest.approx(e1["train"]["loss"], rel=1e-5)
    assert two["final"]["test"]["accuracy"] == pytest.approx(one["final"]["test"]["accuracy"], abs=1 / 500)


def test_torchrun_runs_what_nproc_runs(tiny, full):
    """The same run under ``torchrun --standalone --nproc-per-node 2`` (its rendezvous, its
    environment): every process finds its rank there and joins the others; rank 0 alone writes."""
    import os
    import subprocess
    import sys

    two = tiny / "two"
    if not (two / "last.pt").exists():
        _run(tiny / "full.yaml", two, nproc=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "graphdl.cli", "run", str(tiny / "full.yaml"), "--out", str(tiny / "torchrun"),
                           "--no-progress"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1  # one rank prints
    a = torch.load(two / "last.pt", weights_only=True)
    b = torch.load(tiny / "torchrun" / "last.pt", weights_only=True)
    assert b["world_size"] == 2
    # the same ranks, batches and threads: the same float32 operations in the same order
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_drawn_fanouts_train_and_stay_within_the_batch_bound(tiny):
    m = _run(tiny / "drawn.yaml", tiny / "drawn", steps_per_epoch=2)
    assert len(m["epochs"]) == 2 and m["final"]["test"]["accuracy"] > 0.25


@pytest.mark.parametrize("edit, message", [
    ({"fanouts": "[15]"}, r"train\.loader\.fanouts: 1 fanout\(s\) for a model with 2 message-passing layer\(s\) "
                          r"\(model\.layers\[0\] \(sage\), model\.layers\[2\] \(sage\)\); give one fanout per layer"),
    ({"fanouts": "[15, 0]"}, r"a fanout is a positive number of in-edges per node, or -1 for all of them; found 0"),
])
def test_bad_fanouts_are_one_line_at_the_spec(tiny, edit, message):
    path = tiny / "bad.yaml"
    path.write_text(SPEC.format(**{"fanouts": "all", "eval": "full", **edit}))
    with pytest.raises(SpecError, match=message):
        prepare(str(path))


def test_a_graph_split_is_refused_for_neighbour_sampling(tiny):
    path = tiny / "graph_split.yaml"
    path.write_text(SPEC.format(fanouts="all", eval="full").replace("type: node_random", "type: random"))
    with pytest.raises(SpecError, match=r"neighbour sampling trains on nodes of one graph; the `random` split "
                                        r"selects graphs; use `split: \{type: node_random\}`"):
        _run(path, tiny / "graph_split")


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_trains_the_cpu_parameters(tiny, full):
    """``--device cuda`` unchanged: batches sampled on the CPU, pinned, copied without blocking; the
    parameters are the CPU run's to float32 round-off (same bound as two processes: the GPU sums
    in another order, TF32 is off for float32 matmuls by default)."""
    cuda = _run(tiny / "full.yaml", tiny / "cuda", device="cuda")
    p1 = torch.load(tiny / "full" / "last.pt", weights_only=True)
    p2 = torch.load(tiny / "cuda" / "last.pt", weights_only=True, map_location="cpu")
    gap = max((p1["model"][k] - p2["model"][k]).abs().max().item() for k in p1["model"])
    assert gap <= 8 * (1e-2 * 1e-4 + 4.8e-7)
    assert cuda["final"]["test"]["accuracy"] == pytest.approx(full["final"]["test"]["accuracy"], abs=1 / 500)
    if torch.cuda.device_count() >= 2:  # nccl: one GPU per process
        _run(tiny / "full.yaml", tiny / "cuda2", device="cuda", nproc=2)
        p3 = torch.load(tiny / "cuda2" / "last.pt", weights_only=True, map_location="cpu")
        assert max((p1["model"][k] - p3["model"][k]).abs().max().item() for k in p1["model"]) <= 8 * (1e-2 * 1e-4
                                                                                                  + 4.8e-7)
