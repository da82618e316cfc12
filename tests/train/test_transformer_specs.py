"""The transformer experiment specs: they check, describe and train (on small data here), the
text dataset splits by position, and each benchmark script runs on a smoke setting."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from graphdl.cli import main
from graphdl.compile import compile_spec
from graphdl.data.text import CharText, CharTextParams, pydoc_topics_text, text_sha256
from graphdl.errors import DataError
from graphdl.spec.model import parse_spec
from graphdl.train.runner import run

ROOT = Path(__file__).resolve().parents[2]
LM = ROOT / "specs" / "transformer" / "char_lm.yaml"
GRAPHORMER = ROOT / "specs" / "transformer" / "graphormer_freesolv.yaml"


@pytest.mark.parametrize("spec", [LM, GRAPHORMER], ids=["char_lm", "graphormer"])
def test_specs_check_and_describe_with_their_lowerings(spec, capsys):
    assert main(["check", str(spec)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    assert main(["describe", str(spec)]) == 0
    text = capsys.readouterr().out
    assert text.count("transformer_encoder_layer") == 4
    if spec == LM:
        assert "graph: causal + self-loops" in text and "dense SDPA is_causal" in text
        assert "node.tok:categorical(103) -> node.h:256" in text
    else:
        assert "graph: complete + self-loops" in text
        assert "edge bias as additive mask" in text and "node.h:128, edge.spd:8, edge.bond:8 -> node.h:128" in text


def test_pydoc_topics_dataset_is_split_by_position():
    p = CharTextParams.model_validate(yaml.safe_load((ROOT / "datasets" / "pydoc_topics.yaml").read_text()))
    ds = CharText.load(p)
    text = pydoc_topics_text()
    assert text_sha256(text) == p.sha256 and len(text) == 464970
    vocab = ds.meta["vocabulary"]
    assert len(vocab) == 103 and ds.fields["node.tok"] == ds.fields["node.y"]
    cut = ds.meta["cut"]
    assert cut == int(0.9 * len(text))
    starts = ds.meta["start"]
    decode = "".join

    def chars(i, key):
        return decode(vocab[int(t)] for t in ds.graphs[i][key])

    for part in ("train", "val"):
        for i in ds.splits[part]:
            a, n = starts[i], ds.graphs[i].num_nodes
            assert chars(i, "node.tok") == text[a:a + n] and chars(i, "node.y") == text[a + 1:a + n + 1]
            assert (a + n < cut) if part == "train" else (a >= cut)  # no target crosses the cut
    covered = sum(ds.graphs[i].num_nodes for i in ds.splits["train"] + ds.splits["val"])
    assert covered == len(text) - 2  # every character but the last of each part is an input
    assert ds.splits["test"] == ds.splits["val"]
    assert {ds.graphs[i].num_nodes for i in ds.splits["train"][:-1]} == {256}


def test_char_text_checks_its_checksum(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("hello world, hello graphs\n", encoding="utf-8")
    ds = CharText.load(CharTextParams(type="char_text", path="t.txt", context=4, val_fraction=0.25),
                       base_dir=str(tmp_path))
    assert len(ds.splits["train"]) == 5 and len(ds.splits["val"]) == 2
    with pytest.raises(DataError, match="has sha256 .* but the dataset spec records 00ff"):
        CharText.load(CharTextParams(type="char_text", path="t.txt", sha256="00ff"), base_dir=str(tmp_path))
    with pytest.raises(ValueError, match="exactly one of"):
        CharTextParams(type="char_text")


def _small_lm(tmp_path: Path, vocab: int = 62) -> Path:
    """The char_lm spec with a small model on the first 6,000 characters (62 distinct ones)."""
    (tmp_path / "ds.yaml").write_text("graphdl: 1\ntype: char_text\nsource: pydoc_topics\ncontext: 64\n"
                                      "max_characters: 6000\n")
    spec = {"extends": str(LM), "inputs": {"node.tok": f"categorical({vocab})"},
            "model": {"layers": [
                {"type": "embedding", "input": "node.tok", "output": "node.h", "out_dim": 32},
                {"type": "sinusoidal_pe", "add_to": "node.h"},
                {"type": "transformer_encoder_layer", "repeat": 2, "input": "node.h", "heads": 4, "ff_dim": 64,
                 "dropout": 0.0, "activation": "gelu", "norm_first": True},
                {"type": "layer_norm", "input": "node.h"},
                {"type": "linear", "input": "node.h", "output": "node.logits", "out_dim": vocab}],
                "outputs": ["node.logits"]},
            "task": {"type": "classification", "target": "node.y", "num_classes": vocab,
                     "metrics": ["bits_per_token", "accuracy"]},
            "dataset": {"spec": "ds.yaml", "split": {"type": "source"}},
            "train": {"epochs": 2, "batch_size": 8}}
    path = tmp_path / "lm_small.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_graphdl_run_trains_the_language_model_spec(tmp_path):
    metrics = run(str(_small_lm(tmp_path)), out=str(tmp_path / "run"))
    val = [e["val"]["bits_per_token"] for e in metrics["epochs"]]
    assert val[1] < val[0] < math.log2(62) + 1  # learning, from about uniform
    final = metrics["final"]["test"]
    # bits = nats / ln 2; the loss is averaged over float32 batches: float32 round-off of a value ~4
    assert abs(final["bits_per_token"] - final["loss"] / math.log(2)) <= 1e-6
    resolved = yaml.safe_load((tmp_path / "run" / "spec.yaml").read_text())
    assert resolved["inputs"] == {"node.tok": "categorical(62)"} and resolved["graph"]["kind"] == "causal"
    assert parse_spec(str(tmp_path / "run" / "spec.yaml")).inputs["node.tok"].num_classes == 62


def test_graphdl_run_trains_the_graphormer_spec(tmp_path):
    metrics = run(str(GRAPHORMER), out=str(tmp_path / "run"), epochs=1, limit=40)
    assert metrics["split"]["sizes"] == {"train": 32, "val": 4, "test": 4}
    assert math.isfinite(metrics["final"]["test"]["rmse"])


def test_lm_spec_builds_the_full_model():
    model = compile_spec(str(LM))
    assert sum(p.numel() for p in model.parameters()) == 3_212_391
    assert model.blocks[0].table.weight.shape == (103, 256)


# ------------------------------------------------------------------------------ benchmarks
def _script(name, *args, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, check=False)


def test_transformer_speed_script_smoke(tmp_path):
    out = tmp_path / "speed.json"
    proc = _script("transformer.py", "--batch", "2", "--tokens", "16", "--dim", "32", "--heads", "4", "--ff", "64",
                   "--layers", "1", "--iters", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["max_abs_diff"] <= 1e-5  # float32 round-off of O(1) outputs
    assert {"train", "inference", "lowering"} <= set(res)
    assert "dense is" in proc.stdout and "ratio" in proc.stdout


def test_char_lm_script_smoke(tmp_path):
    out = tmp_path / "lm.json"
    proc = _script("char_lm.py", "--spec", str(_small_lm(tmp_path)), "--epochs", "1", "--max-steps", "3",
                   "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["parity_float64"] <= 1e-10
    runs = res["runs"]
    assert set(runs) == {"graphdl", "torch", "torch seed 1"}
    # same weights, batches and optimiser: after 3 float32 steps the two agree far below the seed gap
    assert abs(runs["graphdl"]["val_bits_per_char"][0] - runs["torch"]["val_bits_per_char"][0]) <= 1e-3


def test_graphormer_freesolv_script_smoke(tmp_path):
    proc = _script("graphormer_freesolv.py", "--seeds", "0", "--epochs", "1", "--out", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    for name in ("graphormer", "dmpnn"):
        row = res["runs"][name]["0"]
        assert row["sizes"] == [513, 64, 65] and math.isfinite(row["rmse"])


def test_verify_reports_permutation_as_not_applicable_for_order_reading_models(tmp_path, capsys):
    """A causal LM is not meant to be permutation equivariant: `graphdl verify` says why and exits 0
    when the other checks pass; a complete-graph encoder with a positional encoding likewise."""
    assert main(["verify", str(_small_lm(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "permutation" in out and "n/a (causal graph: node order is sequence order)" in out
    spec = {"graphdl": 1, "inputs": {"node.h": 8}, "graph": {"kind": "complete", "self_loops": True},
            "model": {"layers": [{"type": "sinusoidal_pe", "add_to": "node.h"},
                                 {"type": "transformer_encoder_layer", "heads": 2, "ff_dim": 8}]}}
    path = tmp_path / "enc.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["verify", str(path)]) == 0
    assert "n/a (sinusoidal_pe read(s) node order)" in capsys.readouterr().out
    spec["model"]["layers"] = spec["model"]["layers"][1:]  # without positions: a set function, checked
    path.write_text(yaml.safe_dump(spec))
    assert main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "n/a" not in out and out.strip().endswith("equivariant")
