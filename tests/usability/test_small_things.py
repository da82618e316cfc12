"""Small things a new user met: describe's block column, a closed pipe, the WL hints, device lines, labels."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from graphdl.cli import main
from graphdl.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def test_describe_shows_block_type_and_label(capsys):
    assert main(["describe", str(ROOT / "specs" / "molecular" / "gine_freesolv.yaml")]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert any(" linear (embed) " in r for r in rows)  # type first, the label beside it
    assert any(r.split()[:3] == ["1", "model.layers[1]#0", "gine"] for r in rows)


def test_describe_json_into_a_closed_pipe_is_quiet():
    proc = subprocess.run(f"'{sys.executable}' -m graphdl.cli describe --json '{ROOT}/specs/gin.yaml' | head -c 10",
                          shell=True, capture_output=True, text=True, timeout=120)
    assert proc.stdout == '{\n  "name"'
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr


def test_wl_unknown_family_hint_reads_as_one_sentence(capsys):
    assert main(["wl", "check", str(ROOT / "specs" / "wl" / "gin.yaml"), "--pairs", "cls"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: `cls` is neither a pair family nor an existing pair file (families: 3wl, aggregators, cfi, "
                   "csl, molecular, random, regular, srg); did you mean `csl`?")


def _table(tmp_path, rows, targets):
    from graphdl.data.molecules import MoleculeTable

    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["smiles", *targets])
        w.writerows(rows)
    return lambda **kw: MoleculeTable.load(MoleculeTable.Params(type="molecule_table", path="t.csv",
                                                                targets=targets, **kw), base_dir=str(tmp_path))


def test_missing_label_hints_do_not_loop(tmp_path):
    single = _table(tmp_path, [["CCO", "1.0"], ["CC", ""]], ["y"])
    with pytest.raises(DataError) as info:
        single()
    msg = str(info.value)
    assert "missing_targets: mask" not in msg  # masking cannot help a row's only label
    assert "(a row without its label cannot be trained on)" in msg and "`on_invalid: skip`" in msg
    with pytest.raises(DataError, match=r"every target is missing \(a row needs at least one label\); fix the row or "
                                        r"set `on_invalid: skip`"):
        single(missing_targets="mask")
    multi = _table(tmp_path, [["CCO", "1.0", "2.0"], ["CC", "", "3.0"]], ["a", "b"])
    with pytest.raises(DataError, match=r"an empty cell is a missing label only with `missing_targets: mask`"):
        multi()
    assert len(multi(missing_targets="mask")) == 2


def test_the_wl_table_has_a_legend():
    from graphdl.wl.check import LEGEND, format_table

    assert format_table([]).splitlines()[-1] == LEGEND
    assert LEGEND.startswith("model: pairs the trained model separates") and "unreliable:" in LEGEND


