"""A failed run never damages an earlier one (graphdl.train.rundir).

A finished run in `runs/keep`, then runs that fail at every stage before training (spec error,
missing CSV, invalid SMILES row, wrong task target, empty split) and a run killed during its
first epoch: the directory stays byte-identical, with and without --overwrite.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphdl.errors import GraphDLError
from graphdl.train.progress import Progress
from graphdl.train.rundir import ARTEFACTS, RunDirError, staging_dir
from graphdl.train.runner import run


def snapshot(d: Path) -> dict[str, str]:
    """Every file below ``d`` (relative path -> sha256 of its bytes)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def kept(tiny, tmp_path):
    """A finished two-epoch run in tmp_path/keep, and a note of its bytes."""
    out = tmp_path / "keep"
    (out).mkdir()
    (out / "notes.txt").write_text("mine, not graphdl's")  # a user's own file beside the artefacts
    run(tiny(epochs=2), out=str(out), progress=Progress(io.StringIO()))
    before = snapshot(out)
    assert set(ARTEFACTS) <= set(before)
    return out, before


BAD = {
    "spec error": ({"hidden: 16, depth: 2": "hidden: -16, depth: 2"}, None, "hidden"),
    "missing csv": ({"path: mols.csv": "path: missing.csv"}, None, "missing.csv"),
    "invalid smiles row": ({"path: mols.csv": "path: bad.csv"}, "C1CC,1.0\n", "row"),
    "wrong task target": ({"target: graph.y": "target: graph.nope"}, None, "graph.nope"),
    "empty split": ({"split: {type: random}": "split: {type: random, fractions: [0.0, 0.5, 0.5]}"}, None, "split"),
}


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("case", list(BAD))
def test_a_run_failing_before_training_leaves_the_old_run_byte_identical(tiny, tmp_path, kept, case, overwrite):
    out, before = kept
    replace, bad_row, word = BAD[case]
    if bad_row is not None:
        text = (tmp_path / "mols.csv").read_text()
        (tmp_path / "bad.csv").write_text(text + bad_row)
    spec = tiny(epochs=2, name="bad.yaml", replace=replace)
    with pytest.raises(GraphDLError) as info:
        run(spec, out=str(out), overwrite=overwrite, progress=Progress(io.StringIO()))
    if overwrite:  # the flag says what to do with the old run, so the run's own fault is reported
        assert not isinstance(info.value, RunDirError) and word in str(info.value)
    assert snapshot(out) == before
    assert not os.path.exists(staging_dir(str(out)))


def test_without_a_flag_a_run_directory_is_refused_and_says_how(tiny, kept):
    out, before = kept
    with pytest.raises(RunDirError) as info:
        run(tiny(epochs=1), out=str(out), progress=Progress(io.StringIO()))
    assert str(info.value) == (f"{out} holds a finished run (best epoch 2); nothing was changed. Pass --overwrite "
                               "to replace it when the new run finishes, --resume to continue it, or --out with "
                               "another directory")
    with pytest.raises(RunDirError, match="pass one of them"):
        run(tiny(epochs=1), out=str(out), resume=True, overwrite=True, progress=Progress(io.StringIO()))
    assert snapshot(out) == before


def test_overwrite_replaces_every_artefact_once_finished_and_keeps_foreign_files(tiny, kept):
    out, before = kept
    run(tiny(epochs=1), out=str(out), overwrite=True, progress=Progress(io.StringIO()))
    after = snapshot(out)
    assert after["notes.txt"] == before["notes.txt"]
    assert set(after) == set(before)
    for name in ("spec.yaml", "metrics.json", "last.pt", "best.pt"):
        assert after[name] != before[name], name
    assert not os.path.exists(staging_dir(str(out)))


def _graphdl(*args, wait=True):
    cmd = [sys.executable, "-m", "graphdl.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_issue_commands_good_then_bad_run_in_the_same_directory(tiny, tmp_path):
    """The reported sequence: run good.yaml into runs/keep, then bad.yaml (a missing CSV) into it."""
    keep = tmp_path / "runs" / "keep"
    good = tiny(epochs=2, name="good.yaml")
    done = _graphdl("run", good, "--out", str(keep), "--epochs", "2")
    assert done.returncode == 0, done.stderr
    before = snapshot(keep)
    bad = tiny(epochs=2, name="bad.yaml", replace={"path: mols.csv": "path: missing.csv"})
    for extra in ([], ["--overwrite"]):
        failed = _graphdl("run", bad, "--out", str(keep), *extra)
        assert failed.returncode == 2
        assert len(failed.stderr.strip().splitlines()) == 1
        assert snapshot(keep) == before


def test_a_run_killed_in_its_first_epoch_leaves_the_old_run_byte_identical(tiny, tmp_path, kept, sleep_block):
    out, before = kept
    sleep_block(tmp_path)
    slow = tiny(epochs=3, name="slow.yaml", replace={
        "graphdl: 1\n": "graphdl: 1\nimport: [sleep_block.py]\n",
        "  layers:\n": "  layers:\n    - {type: test_sleep, seconds: 0.2}\n",
    })
    proc = _graphdl("run", slow, "--out", str(out), "--overwrite", "--trust", wait=False)
    staging = Path(staging_dir(str(out)))
    deadline = time.time() + 120
    while not (staging / "spec.yaml").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert (staging / "spec.yaml").exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
    assert not (staging / "last.pt").exists()  # still in epoch 1 (6 batches x 0.2 s)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert snapshot(out) == before
    # the next --overwrite clears what the killed one left and finishes normally
    run(tiny(epochs=1), out=str(out), overwrite=True, progress=Progress(io.StringIO()))
    assert not staging.exists() and snapshot(out)["metrics.json"] != before["metrics.json"]
