"""The task/dataset/train sections as `graphdl check` sees them, and the learning-rate schedules."""

import math

import pytest
import torch

from graphdl.errors import SpecError
from graphdl.spec.model import parse_spec_text
from graphdl.train import sections as S
from graphdl.train.optim import CosineFactor, NoamFactor, make_schedule

BASE = """graphdl: 1
inputs: {node.h: 4}
model:
  layers: [{type: linear, out_dim: 1, output: graph.y, input: node.h}]
"""


def parse(extra):
    return parse_spec_text(BASE + extra, "s.yaml")


def test_valid_sections_parse_with_defaults():
    s = parse("task: {type: regression}\ndataset: {spec: d.yaml}\ntrain: {epochs: 7}\n")
    assert s.sections["task"].metrics == ["rmse", "mae", "r2"]
    assert s.sections["dataset"].split.type == "random"
    tr = s.sections["train"]
    assert tr.epochs == 7 and tr.batch_size == 50 and tr.optimizer.type == "adam" and tr.schedule.type == "constant"


@pytest.mark.parametrize("extra, message", [
    ("train: {epochs: 5, batchsize: 3}\n", r"s.yaml:5:\d+: train.batchsize: unknown key `batchsize`.*did you mean "
                                           r"`batch_size`\?"),
    ("train: {epochs: 0}\n", r"train.epochs: expected greater than 0, found `0`"),
    ("train: {schedule: {type: noam, warmup: 2}}\n", r"train.schedule.warmup: unknown key `warmup`"),
    ("task: {type: classificaton}\n", r"task.type: unknown task type `classificaton`; did you mean `classification`\?"),
    ("task: {target: graph.y}\n", r"`task` needs a `type:`"),
    ("dataset: {split: {type: random}}\n", r"`dataset` needs `spec:`"),
    ("dataset: {spec: a.yaml, type: freesolv}\n", r"give either `spec:` .* or an inline `type:`, not both"),
    ("dataset: {type: freesolv, targets: [expr]}\n", r"dataset.targets\[0\]: expected 'expt' or 'calc'"),
    ("dataset: {spec: d.yaml, split: {type: random, fractions: [0.8, 0.3, 0.1]}}\n",
     r"dataset.split.fractions: `fractions` must be three non-negative numbers .* summing to 1"),
])
def test_section_errors(extra, message):
    with pytest.raises(SpecError, match=message):
        parse(extra)


def test_inline_dataset_section_carries_split_and_limit():
    s = parse("dataset: {type: molecule_table, path: x.csv, targets: [y], limit: 10, split: {type: scaffold}}\n")
    d = s.sections["dataset"]
    assert d.limit == 10 and d.split.type == "scaffold" and d.targets == ["y"]
    assert S.dataset_parts(d)[1]["path"] == "x.csv"


def test_noam_and_cosine_factors():
    f = NoamFactor(warmup=10, total=110, start=0.1, final=0.1)
    assert f(0) == pytest.approx(0.1) and f(5) == pytest.approx(0.55) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 ** 0.5) and f(110) == pytest.approx(0.1)
    c = CosineFactor(warmup=0, total=100, final=0.0)
    assert c(0) == pytest.approx(1.0) and c(50) == pytest.approx(0.5) and c(100) == pytest.approx(0.0, abs=1e-12)


def test_schedule_steps_the_optimizer_lr():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=1.0)
    sched = make_schedule(S.Noam(warmup_epochs=1, start_factor=0.5, final_factor=0.25), opt, epochs=3,
                          steps_per_epoch=2, monitor_higher=False)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.scheduler.step()
    assert lrs == pytest.approx([0.5, 0.75, 1.0, 0.25 ** 0.25, 0.25 ** 0.5, 0.25 ** 0.75])
    plateau = make_schedule(S.Plateau(patience=0, factor=0.5), opt, epochs=3, steps_per_epoch=2,
                            monitor_higher=False)
    assert plateau.on_metric and not plateau.per_step
    assert math.isclose(S.Plateau().factor, 0.5)
