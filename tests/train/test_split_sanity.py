"""Splits that make no sense are errors; degenerate ones are a warning line (graphdl.train.splits)."""

from __future__ import annotations

import io

import pytest
from conftest import write_csv

from graphdl.errors import DataError, SpecError
from graphdl.train.progress import Progress
from graphdl.train.runner import run
from graphdl.train.splits import RandomSplit, ScaffoldSplit, check_split_sizes, murcko_scaffold


def _run(spec, tmp_path):
    buf = io.StringIO()
    metrics = run(spec, out=str(tmp_path / "r"), progress=Progress(buf, bars=False))
    return metrics, buf.getvalue()


def test_all_training_fractions_are_an_error_naming_the_sizes(tiny, tmp_path):
    spec = tiny(epochs=1, replace={"split: {type: random}": "split: {type: random, fractions: [1.0, 0.0, 0.0]}"})
    with pytest.raises(SpecError) as info:
        _run(spec, tmp_path)
    assert str(info.value).endswith(
        "dataset.split: the random split gives 48/0/0 graphs (train/val/test) from fractions [1.0, 0.0, 0.0], and "
        "val and test is empty (`val` is needed to select the best epoch on; `test` is needed to report); use "
        "fractions such as [0.8, 0.1, 0.1] (each share must hold at least one of the 48 graphs) (dataset `molecule_table`)")
    assert not (tmp_path / "r").exists()


def test_two_fractions_say_three(tiny, tmp_path):
    spec = tiny(epochs=1, replace={"split: {type: random}": "split: {type: random, fractions: [0.8, 0.1]}"})
    with pytest.raises(SpecError) as info:
        _run(spec, tmp_path)
    assert str(info.value).endswith(
        "dataset.split.fractions: `fractions` must be three non-negative numbers (train, val, test) summing to 1, "
        "found [0.8, 0.1]; e.g. `fractions: [0.8, 0.1, 0.1]`")


def test_tiny_val_and_test_get_a_warning(tiny, tmp_path, freesolv_rows):
    write_csv(tmp_path / "mols.csv", freesolv_rows[:59])
    spec = tiny(epochs=1, replace={"split: {type: random}": "split: {type: random, fractions: [0.98, 0.01, 0.01]}"})
    metrics, out = _run(spec, tmp_path)
    assert metrics["split"]["sizes"] == {"train": 57, "val": 1, "test": 1}
    assert ("warning: the random split gives 57/1/1 graphs (train/val/test): val and test hold fewer than 10 (r2 and "
            "correlations are undefined on one), so their metrics are noise; use larger val/test fractions or more "
            "data") in out.splitlines()


def test_scaffold_split_with_one_giant_group_is_refused(tiny, tmp_path, freesolv_rows):
    acyclic = [r for r in freesolv_rows if murcko_scaffold(r[0]) == ""][:17]
    rings = [r for r in freesolv_rows if murcko_scaffold(r[0]) != ""][:3]
    write_csv(tmp_path / "mols.csv", acyclic + rings)
    spec = tiny(epochs=1, replace={"split: {type: random}": "split: {type: scaffold}"})
    with pytest.raises(SpecError) as info:
        _run(spec, tmp_path)
    assert "the scaffold split gives 3/0/17 graphs (train/val/test) from fractions [0.8, 0.1, 0.1], and val is " \
           "empty" in str(info.value)
    assert "or a random split: scaffold groups are indivisible" in str(info.value)


def test_scaffold_sizes_far_from_the_fractions_are_a_warning():
    w = check_split_sizes(ScaffoldSplit(), {"train": 30, "val": 10, "test": 60}, 100)
    assert w == ["warning: the scaffold split gives 30/10/60 graphs (train/val/test), far from the fractions "
                 "[0.8, 0.1, 0.1] asked for: a scaffold group is larger than a share (acyclic molecules all share "
                 "the empty scaffold); check the sizes or use a random split"]
    assert check_split_sizes(ScaffoldSplit(), {"train": 78, "val": 11, "test": 11}, 100) == []
    assert check_split_sizes(RandomSplit(), {"train": 80, "val": 10, "test": 10}, 100) == []


def test_node_sizes_are_counted_in_nodes():
    with pytest.raises(DataError, match=r"gives 5/0/2 nodes"):
        check_split_sizes(RandomSplit(), {"train": 5, "val": 0, "test": 2}, 7, "nodes")
