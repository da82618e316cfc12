"""Splits: random and scaffold sizes and determinism, split files (chemprop's too), columns, errors."""

import json

import pytest

from graphdl.data.registry import Dataset
from graphdl.errors import DataError
from graphdl.train.splits import (
    ColumnSplit,
    FileSplit,
    RandomSplit,
    ScaffoldSplit,
    SourceSplit,
    make_split,
    murcko_scaffold,
    random_split,
    read_split_file,
    scaffold_split,
)


def fake(n, **meta):
    return Dataset([None] * n, {}, [], None, meta)


def test_random_split_sizes_disjoint_deterministic():
    s = random_split(642, (0.8, 0.1, 0.1), seed=0)
    assert [len(s[k]) for k in ("train", "val", "test")] == [513, 64, 65]
    assert sorted(s["train"] + s["val"] + s["test"]) == list(range(642))
    assert s == random_split(642, (0.8, 0.1, 0.1), seed=0)
    assert s != random_split(642, (0.8, 0.1, 0.1), seed=1)


def test_random_split_seed_defaults_to_run_seed():
    ds = fake(50)
    assert make_split(RandomSplit(), ds, seed=3) == random_split(50, seed=3)
    assert make_split(RandomSplit(seed=7), ds, seed=3) == random_split(50, seed=7)


def test_scaffold_split_keeps_scaffolds_together():
    smiles = ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1O", "C1CCCCC1C", "C1CCCCC1O", "CCO", "CCCO", "CC(C)O",
              "c1ccncc1C", "c1ccncc1N", "C1CC1C", "C1CC1N", "c1ccc2ccccc2c1", "c1ccc2ccccc2c1O", "CCN", "CCCC"]
    s = scaffold_split(smiles, (0.5, 0.25, 0.25), seed=0)
    assert sorted(s["train"] + s["val"] + s["test"]) == list(range(len(smiles)))
    where = {i: k for k, v in s.items() for i in v}
    groups = {}
    for i, smi in enumerate(smiles):
        groups.setdefault(murcko_scaffold(smi), set()).add(where[i])
    assert all(len(v) == 1 for v in groups.values()), groups
    assert murcko_scaffold("c1ccccc1CCO") == "c1ccccc1" and murcko_scaffold("CCO") == ""
    assert s == scaffold_split(smiles, (0.5, 0.25, 0.25), seed=0)
    unbalanced = scaffold_split(smiles, (0.5, 0.25, 0.25), balanced=False)
    assert set(unbalanced["train"]) >= {5, 6, 7, 14, 15}  # the acyclic group (largest) goes to train first


def test_split_file_plain_and_chemprop_wrapped(tmp_path):
    plain = tmp_path / "a.json"
    plain.write_text(json.dumps({"train": [3, 0], "val": [1], "test": [2, 4]}))
    wrapped = tmp_path / "splits.json"  # what `chemprop train` writes
    wrapped.write_text(json.dumps([{"train": "0,3", "val": [1], "test": "2-2,4"}]))
    assert read_split_file(str(plain)) == {"train": [3, 0], "val": [1], "test": [2, 4]}
    assert read_split_file(str(wrapped)) == {"train": [0, 3], "val": [1], "test": [2, 4]}
    ds = fake(5)
    assert make_split(FileSplit(path=str(plain)), ds, seed=0) == {"train": [3, 0], "val": [1], "test": [2, 4]}


def test_split_file_rows_map_through_skipped_rows(tmp_path):
    # source rows 0..5, row 2 was skipped as invalid: graph positions shift after it
    ds = fake(5, rows=[0, 1, 3, 4, 5], num_rows=6)
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"train": [0, 5], "val": [3], "test": [1]}))
    assert make_split(FileSplit(path=str(f)), ds, seed=0) == {"train": [0, 4], "val": [2], "test": [1]}
    f.write_text(json.dumps({"train": [0, 2], "val": [3], "test": [1]}))
    with pytest.raises(DataError, match=r"`train` names row 2, which the dataset skipped as invalid"):
        make_split(FileSplit(path=str(f)), ds, seed=0)


@pytest.mark.parametrize("content, message", [
    ({"train": [0, 1], "val": [1], "test": []}, r"row 1 appears in both `train` and `val`"),
    ({"train": [0, 9], "val": [], "test": []}, r"`train` names row 9, but the dataset has rows 0\.\.4"),
    ({"train": [0], "valid": [1]}, r"unknown key\(s\) valid; expected train, val, test"),
    ({"val": [1]}, r"has no `train` list"),
    ([{"train": [0]}, {"train": [1]}], r"holds a list of 2 splits"),
    ({"train": [0.5]}, r"expected a list of integer row indices"),
    ({"train": "0-x"}, r"cannot read `0-x`"),
])
def test_split_file_errors(tmp_path, content, message):
    f = tmp_path / "s.json"
    f.write_text(json.dumps(content))
    with pytest.raises(DataError, match=message):
        make_split(FileSplit(path=str(f)), fake(5), seed=0)


def test_split_file_missing_or_not_json(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_split_file(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("{train: [")
    with pytest.raises(DataError, match="is not valid JSON"):
        read_split_file(str(tmp_path / "bad.json"))


def test_column_split():
    ds = fake(4, columns={"split": ["train", "VALID", "test", "train"]})
    assert make_split(ColumnSplit(), ds, seed=0) == {"train": [0, 3], "val": [1], "test": [2]}
    bad = fake(2, columns={"split": ["train", "holdout"]})
    with pytest.raises(DataError, match=r"row 1: `holdout` is not train, val or test"):
        make_split(ColumnSplit(), bad, seed=0)
    with pytest.raises(DataError, match=r"split column `fold` is not a column of the dataset \(columns: `split`\)"):
        make_split(ColumnSplit(column="fold"), ds, seed=0)


def test_source_split_carves_validation_from_train():
    ds = Dataset([None] * 10, {}, [], {"train": list(range(8)), "test": [8, 9]}, {})
    s = make_split(SourceSplit(val_fraction=0.25), ds, seed=0)
    assert len(s["val"]) == 2 and len(s["train"]) == 6 and s["test"] == [8, 9]
    assert sorted(s["train"] + s["val"]) == list(range(8))
    with pytest.raises(DataError, match="needs a dataset that ships its own split"):
        make_split(SourceSplit(), fake(3), seed=0)


def test_scaffold_split_needs_smiles():
    with pytest.raises(DataError, match="scaffold split needs molecules"):
        make_split(ScaffoldSplit(), fake(3), seed=0)
