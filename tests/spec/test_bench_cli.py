"""`graphdl bench SPEC`: the three phases timed, on random graphs and on a spec's dataset."""

import json
from pathlib import Path

import pytest
import torch

from graphdl.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_bench_random_graphs_writes_every_phase(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", str(ROOT / "specs" / "gin.yaml"), "--nodes", "8", "--batch-size", "4",
                 "--repeat", "2", "--warmup", "0", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 random graphs of 8 nodes" in text and "train step" in text
    info = json.loads(out.read_text())
    assert set(info["ms"]) == {"prepare", "forward", "train step"}
    assert all(v["median"] > 0 for k, v in info["ms"].items() if k != "prepare")
    assert info["graphs"] == 4 and info["nodes"] == 32 and info["parameters"] > 0


def test_bench_uses_the_spec_dataset(tmp_path, capsys):
    assert main(["bench", str(ROOT / "specs" / "nbody" / "linear.yaml"), "--batch-size", "3",
                 "--repeat", "1", "--warmup", "0"]) == 0
    assert "3 graphs of dataset nbody_charged" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_bench_cuda_without_a_gpu_is_one_clear_line(capsys):
    assert main(["bench", str(ROOT / "specs" / "gin.yaml"), "--device", "cuda", "--repeat", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err and "--device cpu" in err
