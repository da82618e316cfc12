"""`graphdl check` on an experiment spec matches inputs and task against the dataset's fields, reading no data."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphdl.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _variant(tmp_path, old, new, name="s.yaml"):
    src = ROOT / "specs" / "molecular" / "gine_freesolv.yaml"
    text = src.read_text().replace("../../datasets/freesolv.yaml", str(ROOT / "datasets" / "freesolv.yaml"))
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


def test_a_width_the_featurizer_does_not_make_is_refused_at_its_line(tmp_path, capsys, monkeypatch):
    import graphdl.data.molecules as mol

    def no_reading(*a, **k):
        raise AssertionError("graphdl check read the data")

    monkeypatch.setattr(mol.FreeSolv, "load", classmethod(no_reading))
    spec = _variant(tmp_path, "node.h: 72", "node.h: 16")
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"{spec}:10:11: inputs.node.h: the spec declares `node.h: 16` but dataset `freesolv` gives "
                   "`node.h: 72`; write `node.h: 72`")


def test_a_task_target_the_dataset_lacks_is_refused(tmp_path, capsys):
    spec = _variant(tmp_path, "target: graph.y", "target: graph.logp")
    assert main(["check", str(spec)]) == 2
    assert "task: task target `graph.logp` is not a field of the dataset" in capsys.readouterr().err


def test_ok_says_what_was_matched(capsys):
    assert main(["check", str(ROOT / "specs" / "molecular" / "gine_freesolv.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("parameters; inputs and task match the dataset)")


@pytest.mark.parametrize("spec", sorted((ROOT / "specs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_spec_passes_check(spec, capsys):
    assert main(["check", str(spec)]) == 0, capsys.readouterr().err
