"""NaN and inf never pass silently: training stops with the epoch, the batch and the block.

The poison blocks below fail deterministically on the data (not on a call counter), so the
runner's replay of the epoch (graphdl.train.nonfinite.search) meets the same failure.
"""

from __future__ import annotations

import io
import re

import pytest
import torch

from graphdl.errors import NonFiniteError
from graphdl.spec.loader import trusted_imports
from graphdl.train.nonfinite import Watch
from graphdl.train.progress import Progress
from graphdl.train.runner import run

POISON = '''
import torch
from graphdl.nn.base import Block, BlockParams, Signature
from graphdl.nn.base import register_block
from graphdl.types import Scalar


class _P(BlockParams):
    min_nodes: int = 2
    mode: str = "forward"      # forward: nan in the output; backward: nan only in the gradient; eval: nan in eval


@register_block("test_poison")
class Poison(Block):
    """NaN for the nodes of graphs with fewer than `min_nodes` nodes (sqrt of a negative number)."""

    Params = _P

    @classmethod
    def infer(cls, p, fields, ctx):
        return Signature({"node.h": fields["node.h"]}, {"node.h": fields["node.h"]})

    def forward(self, g, f):
        h = f["node.h"]
        sizes = (g.ptr[1:] - g.ptr[:-1])[g.batch].to(h.dtype)[:, None]
        if self.p.mode == "backward":  # sqrt(0) = 0 forward, but its derivative is inf (times 0: nan)
            return {"node.h": h + torch.sqrt(h * 0)}
        if self.p.mode == "eval" and self.training:
            return {"node.h": h}
        return {"node.h": h * torch.sqrt(sizes - self.p.min_nodes)}
'''


@pytest.fixture
def poisoned(tiny, tmp_path):
    (tmp_path / "poison.py").write_text(POISON)

    def make(layer: str, after_dmpnn: bool = False, **kw) -> str:
        where = ("    - {type: dmpnn, hidden: 16, depth: 2, dropout: 0.1}\n" if after_dmpnn else "  layers:\n")
        return tiny(replace={"graphdl: 1\n": "graphdl: 1\nimport: [poison.py]\n",
                             where: f"{where}    - {layer}\n"}, **kw)

    return make


def _run(spec, out):
    with trusted_imports():
        return run(spec, out=str(out), progress=Progress(io.StringIO(), bars=False))


def test_a_block_writing_nan_stops_training_naming_epoch_batch_and_block(poisoned, tmp_path):
    spec = poisoned("{type: test_poison, min_nodes: 4}", epochs=3)  # one molecule has 3 heavy atoms
    with pytest.raises(NonFiniteError) as info:
        _run(spec, tmp_path / "r")
    msg = str(info.value)
    assert re.fullmatch(r"training stopped in epoch 1, batch \d of 5: model\.layers\[0\] \(test_poison\) wrote nan "
                        r"into `node\.h`; no epoch finished\. Lower `train\.optimizer\.lr`, set `train\.grad_clip`, "
                        r"or check that batch's inputs", msg), msg
    assert "\n" not in msg


def test_a_nan_gradient_names_the_parameter(poisoned, tmp_path):
    spec = poisoned("{type: test_poison, mode: backward}", after_dmpnn=True, epochs=2)
    with pytest.raises(NonFiniteError) as info:
        _run(spec, tmp_path / "r")
    msg = str(info.value)
    assert re.search(r"training stopped in epoch 1, batch 1 of 5: the gradient of model\.layers\[\d\] \(\w+\) "
                     r"parameter `[\w.]+` is nan \(the forward pass and the loss are finite\)", msg), msg


def test_nan_in_validation_stops_with_the_validation_batch(poisoned, tmp_path):
    spec = poisoned("{type: test_poison, min_nodes: 100, mode: eval}", epochs=2)  # every graph, in eval only
    with pytest.raises(NonFiniteError) as info:
        _run(spec, tmp_path / "r")
    assert re.fullmatch(r"the validation loss is nan after epoch 1; batch 1 of 1: model\.layers\[0\] \(test_poison\) "
                        r"wrote nan into `node\.h`", str(info.value)), str(info.value)
    assert not (tmp_path / "r" / "last.pt").exists()  # an epoch whose validation failed is not recorded


def test_the_watch_costs_no_host_sync_until_read():
    w = Watch("cpu")
    for i, v in enumerate([1.0, 2.0, float("inf"), float("nan")]):
        w.step(i, torch.tensor(v))
    assert int(w.first) == 2  # the first bad step, not the last
    m = torch.nn.Linear(2, 2)
    assert w.failed(m) == 2
    w2 = Watch("cpu")
    w2.step(0, torch.tensor(1.0))
    assert w2.failed(m) is None
    with torch.no_grad():
        m.weight[0, 0] = float("nan")
    assert w2.failed(m) == -1
