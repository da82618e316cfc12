"""Fixtures of the runner tests: a tiny molecule CSV and a tiny experiment spec over it."""

import csv
import os
import textwrap

import pytest

from graphdl.data.molecules import FreeSolv

TINY_SPEC = """\
graphdl: 1
name: tiny
inputs: {{node.h: 72, edge.e: 14}}
model:
  layers:
    - {{type: dmpnn, hidden: 16, depth: 2, dropout: 0.1}}
    - {{type: readout, reduce: sum, input: node.h, output: graph.h}}
    - {{type: mlp, input: graph.h, output: graph.y, hidden: [16], out_dim: 1}}
task: {{type: regression, target: graph.y}}
dataset:
  type: molecule_table
  path: mols.csv
  targets: [y]
  split: {{type: random}}
train:
  epochs: {epochs}
  batch_size: 8
  seed: 0
  schedule: {{type: noam, warmup_epochs: 1}}
{extra}"""


@pytest.fixture(scope="session")
def freesolv_rows():
    ds = FreeSolv.load(FreeSolv.Params(type="freesolv"))
    return [(s, float(g["graph.y"][0, 0])) for s, g in zip(ds.meta["smiles"], ds.graphs)]


def write_csv(path, rows, header=("smiles", "y")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def tiny(tmp_path, freesolv_rows):
    """Write ``mols.csv`` (48 FreeSolv molecules) and return ``make(epochs, extra, name, replace) -> spec path``."""
    write_csv(tmp_path / "mols.csv", freesolv_rows[:48])

    def make(epochs: int = 3, extra: str = "", name: str = "tiny.yaml", replace: dict | None = None) -> str:
        text = TINY_SPEC.format(epochs=epochs, extra=textwrap.dedent(extra))
        for old, new in (replace or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        path = tmp_path / name
        path.write_text(text)
        return os.fspath(path)

    return make


SLEEP_BLOCK = '''
import time
from graphdl.nn.base import Block, BlockParams, Signature, register_block

@register_block("test_sleep")
class Sleep(Block):
    """Slows every forward pass down so that a test can kill the run in the middle of an epoch."""

    class Params(BlockParams):
        seconds: float = 0.04

    @classmethod
    def infer(cls, p, fields, ctx):
        return Signature({}, {})

    def forward(self, g, f):
        time.sleep(self.p.seconds)
        return {}
'''


@pytest.fixture
def sleep_block():
    """``write(dir)``: put ``sleep_block.py`` (block ``test_sleep``, a slow no-op) into ``dir``."""

    def write(d) -> None:
        (d / "sleep_block.py").write_text(SLEEP_BLOCK)

    return write
