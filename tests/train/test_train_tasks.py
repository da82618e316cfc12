"""Task types beyond graph regression: classification (binary, multiclass), node regression,
multi-target regression, and the task registry's errors."""

import io

import pytest

from graphdl.errors import SpecError
from graphdl.spec.loader import trusted_imports
from graphdl.train.progress import Progress
from graphdl.train.runner import run
from graphdl.train.tasks import TASKS, Regression, Task, register_task

PLUGIN = '''
import torch
from graphdl.data.graph import Graph
from graphdl.data.registry import Dataset, DatasetParams, DatasetType, register_dataset
from graphdl.types import Scalar


@register_dataset("test_synthetic")
class Synthetic(DatasetType):
    """Random paths of 3-8 nodes. graph.label: 1 when the feature sum is positive; graph.cls: the
    number of nodes mod 3; node.deg: each node's degree; graph.two: (sum, mean) of features."""

    class Params(DatasetParams):
        size: int = 60

    @classmethod
    def load(cls, p, *, cache_dir=None, base_dir="."):
        gen = torch.Generator().manual_seed(0)
        graphs = []
        for i in range(p.size):
            n = 3 + i % 6
            src = torch.arange(n - 1)
            ei = torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])])
            x = torch.randn(n, 4, generator=gen)
            deg = torch.bincount(ei[1], minlength=n).float().unsqueeze(1)
            s = x[:, 0].sum()
            k = torch.arange(n) % 3
            masks = {"node.train_mask": (k == 0) | (k == 1), "node.val_mask": k == 2, "node.test_mask": k == 2}
            graphs.append(Graph(ei, n, {"node.h": x, "node.deg": deg, **masks,
                                        "graph.label": (s > 0).float().reshape(1, 1),
                                        "graph.cls": torch.tensor([[n % 3]]).float(),
                                        "graph.two": torch.stack([s, x[:, 0].mean()]).reshape(1, 2)}))
        fields = {"node.h": Scalar(4), "node.deg": Scalar(1), "graph.label": Scalar(1), "graph.cls": Scalar(1),
                  "graph.two": Scalar(2)}
        return Dataset(graphs, fields, ["graph.label"], None, {"target_names": {"graph.two": ["sum", "mean"]}})
'''

SPEC = """\
graphdl: 1
import: [{plugin}]
name: synth
inputs: {{node.h: 4}}
model:
  layers:
    - {{type: linear, out_dim: 16}}
    - {{type: relu}}
    - {{type: linear, out_dim: 16}}
{head}
task: {task}
dataset: {{type: test_synthetic, split: {split}}}
train: {{epochs: 3, batch_size: 8, seed: 0}}
"""

GRAPH_HEAD = """    - {{type: readout, reduce: sum, input: node.h, output: graph.h}}
    - {{type: linear, input: graph.h, output: graph.out, out_dim: {d}}}"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """One plugin file for the module: a dataset type registers once per process."""
    path = tmp_path_factory.mktemp("plugin") / "synthetic.py"
    path.write_text(PLUGIN)
    return str(path)


@pytest.fixture
def go(tmp_path, plugin):
    def run_spec(head, task, split="{type: random}"):
        spec = tmp_path / "s.yaml"
        spec.write_text(SPEC.format(head=head, task=task, plugin=plugin, split=split))
        with trusted_imports():  # the spec imports the plugin module written by the test
            return run(str(spec), out=str(tmp_path / "r"), progress=Progress(io.StringIO()), overwrite=True), tmp_path / "r"

    return run_spec


def rows(path):
    import csv

    return list(csv.DictReader(open(path / "test_predictions.csv")))


def test_binary_classification(go):
    m, out = go(GRAPH_HEAD.format(d=1), "{type: classification, target: graph.label}")
    assert set(m["final"]["test"]) == {"loss", "accuracy", "roc_auc"}
    assert m["task"]["monitor"] == "accuracy"
    r = rows(out)
    assert set(r[0]) == {"row", "label", "label_prob"} and 0 <= float(r[0]["label_prob"]) <= 1
    acc = sum((float(x["label_prob"]) > 0.5) == (x["label"] == "1") for x in r) / len(r)
    assert acc == pytest.approx(m["final"]["test"]["accuracy"])


def test_multiclass_classification(go):
    m, out = go(GRAPH_HEAD.format(d=3),
                "{type: classification, target: graph.cls, num_classes: 3, metrics: [accuracy]}")
    r = rows(out)
    assert {"cls", "cls_pred", "cls_prob0", "cls_prob1", "cls_prob2"} <= set(r[0])
    acc = sum(x["cls"] == x["cls_pred"] for x in r) / len(r)
    assert acc == pytest.approx(m["final"]["test"]["accuracy"])


def test_node_regression(go):
    m, out = go("    - {type: linear, input: node.h, output: node.out, out_dim: 1}",
                "{type: regression, target: node.deg, metrics: [mae]}")
    r = rows(out)
    assert set(r[0]) == {"row", "node", "deg", "deg_pred"}
    # one row per node of the test graphs (paths of 3..8 nodes)
    assert len(r) > m["split"]["sizes"]["test"] * 2
    mae = sum(abs(float(x["deg"]) - float(x["deg_pred"])) for x in r) / len(r)
    # the CSV keeps 6 significant digits (%.6g): each residual is off by ≤ 5e-6·(|ŷ| + |y|), so the metric by
    # at most that; ×2
    tol = 1e-5 * max(abs(float(x["deg"])) + abs(float(x["deg_pred"])) for x in r)
    assert mae == pytest.approx(m["final"]["test"]["mae"], abs=tol)


NODE_HEAD = "    - {type: linear, input: node.h, output: node.out, out_dim: 1}"


def test_node_random_split_counts_only_its_nodes(go):
    m, out = go(NODE_HEAD, "{type: regression, target: node.deg, metrics: [mae]}",
                "{type: node_random, fractions: [0.6, 0.2, 0.2]}")
    sizes = m["split"]["sizes"]
    total = sum(3 + i % 6 for i in range(60))  # nodes of the 60 synthetic paths
    assert sum(sizes.values()) == total and sizes["train"] == int(0.6 * total)
    r = rows(out)
    assert len(r) == sizes["test"]
    mae = sum(abs(float(x["deg"]) - float(x["deg_pred"])) for x in r) / len(r)
    # the CSV keeps 6 significant digits (%.6g): each residual is off by ≤ 5e-6·(|ŷ| + |y|), so the metric by
    # at most that; ×2
    tol = 1e-5 * max(abs(float(x["deg"])) + abs(float(x["deg_pred"])) for x in r)
    assert mae == pytest.approx(m["final"]["test"]["mae"], abs=tol)


def test_node_mask_split(go):
    m, out = go(NODE_HEAD, "{type: regression, target: node.deg, metrics: [mae]}", "{type: node_mask}")
    # masks by node index mod 3: 0 and 1 train, 2 val and test
    assert all(int(x["node"]) % 3 == 2 for x in rows(out))
    assert m["split"]["sizes"]["val"] == m["split"]["sizes"]["test"] == len(rows(out))
    with pytest.raises(SpecError, match=r"a `node_mask` split selects nodes, but the task target `graph.label` is not "
                                        r"a node field"):
        go(GRAPH_HEAD.format(d=1), "{type: classification, target: graph.label}", "{type: node_mask}")


def test_multi_target_regression_reports_each_column(go):
    m, out = go(GRAPH_HEAD.format(d=2), "{type: regression, target: graph.two, metrics: [rmse, mae]}")
    assert {"rmse", "rmse/sum", "rmse/mean", "mae/sum"} <= set(m["final"]["test"])
    assert m["final"]["test"]["rmse"] == pytest.approx((m["final"]["test"]["rmse/sum"] +
                                                        m["final"]["test"]["rmse/mean"]) / 2)
    assert {"sum", "sum_pred", "mean", "mean_pred"} <= set(rows(out)[0])


@pytest.mark.parametrize("task, message", [
    ("{type: regression, target: graph.nope}", r"task: task target `graph.nope` is not a field of the dataset"),
    ("{type: regression, target: node.deg}", r"task target `node.deg` is a node field but the model output "
                                             r"`graph.out` is a graph field; add a readout"),
    ("{type: regression, target: graph.label, metrics: [rsme]}", r"task.metrics: unknown regression metric `rsme`; "
                                                                 r"did you mean `rmse`\?"),
    ("{type: classification, target: graph.cls, num_classes: 3}", r"model output `graph.out` has 1 channels; the task "
                                                                   r"needs 3 logits"),
    ("{type: regression, target: graph.label, monitor: r2, metrics: [mae]}", r"`task.monitor: r2` is not one of"),
    ("{type: regression, target: graph.label, loss: mse2}", r"task.loss: expected 'mse', 'mae', 'huber' or "
                                                            r"'smooth_l1'"),
])
def test_task_errors(go, task, message):
    with pytest.raises(SpecError, match=message):
        go(GRAPH_HEAD.format(d=1), task)


def test_registering_a_new_task_kind():
    @register_task("test_scaled_regression")
    class Scaled(Regression):
        """A task registered from outside: the runner drives it through the Task methods only."""

    assert TASKS["test_scaled_regression"] is Scaled and issubclass(Scaled, Task)
    with pytest.raises(ValueError, match="already registered"):
        register_task("regression")(Scaled)
    del TASKS["test_scaled_regression"]
