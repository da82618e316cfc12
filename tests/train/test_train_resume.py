"""Kill a real `graphdl run` mid-epoch, `--resume` it, and get the uninterrupted run's metrics."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from graphdl.errors import CheckpointError


def graphdl(*args, wait=True):
    cmd = [sys.executable, "-m", "graphdl.cli", *args, "--trust"]  # the spec imports sleep_block.py
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_kill_mid_epoch_then_resume_matches_uninterrupted_run(tiny, tmp_path, sleep_block):
    sleep_block(tmp_path)
    spec = tiny(epochs=6, replace={
        "graphdl: 1\n": "graphdl: 1\nimport: [sleep_block.py]\n",
        "  layers:\n": "  layers:\n    - {type: test_sleep}\n",
    })
    ref, out = tmp_path / "ref", tmp_path / "killed"

    done = graphdl("run", spec, "--out", str(ref))
    assert done.returncode == 0, done.stderr

    proc = graphdl("run", spec, "--out", str(out), wait=False)
    last = out / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert last.exists(), "the run wrote no checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # killed during epoch 2 (each epoch sleeps >= 5 batches x 0.04 s after its checkpoint)
    assert not (out / "metrics.json").exists()
    ck = torch.load(last, weights_only=True)
    assert ck["epoch"] < 6

    resumed = graphdl("run", spec, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} after epoch {ck['epoch']}" in resumed.stdout
    a = json.loads((ref / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert b == a
    assert (out / "metrics.json").read_bytes() == (ref / "metrics.json").read_bytes()

    # resuming a finished run trains nothing more and reports the same metrics
    again = graphdl("run", spec, "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    assert not [line for line in again.stdout.splitlines() if line.startswith("epoch ")]
    assert (out / "metrics.json").read_bytes() == (ref / "metrics.json").read_bytes()


def test_resume_with_another_spec_is_refused(tiny, tmp_path):
    from graphdl.errors import CheckpointError
    from graphdl.train.progress import Progress
    from graphdl.train.runner import run

    out = str(tmp_path / "r")
    run(tiny(epochs=2), out=out, progress=Progress(io.StringIO()))
    other = tiny(epochs=2, name="other.yaml", replace={"hidden: 16, depth: 2": "hidden: 32, depth: 2"})
    with pytest.raises(CheckpointError, match=r"was written for a different spec: model\.layers\[0\]\.hidden is 16 in "
                                              r"the checkpoint but 32 in .*other\.yaml"):
        run(other, out=out, resume=True, progress=Progress(io.StringIO()))
    with pytest.raises(CheckpointError, match=r"train\.epochs is 2 in the checkpoint but 5"):
        run(tiny(epochs=2), out=out, resume=True, epochs=5, progress=Progress(io.StringIO()))


# ------------------------------------------------------------------- spec differences named
def _layers(*out_dims):
    return {"model": {"layers": [{"bias": True, "input": "node.h", "out_dim": d, "output": None, "type": "linear"}
                                 for d in out_dims]}}


@pytest.mark.parametrize("theirs, ours, expected", [
    # same first layer, one more layer: the extra layer is named by its index, not the whole list
    (_layers(32), _layers(32, 8),
     'model.layers[1] is <absent> in the checkpoint but {"bias":true,"input":"node.h","out_dim":8,"output":null,'
     '"typ... in s.yaml'),
    # a value deep inside a long list: the innermost key, both values
    (_layers(32, 32, 16), _layers(32, 32, 64), "model.layers[2].out_dim is 16 in the checkpoint but 64 in s.yaml"),
])
def test_check_compatible_names_the_first_differing_key_and_both_values(theirs, ours, expected):
    from graphdl.train.checkpoint import check_compatible

    with pytest.raises(CheckpointError) as info:
        check_compatible({"spec": theirs, "digest": "x"}, ours, "best.pt", model_only=False, spec_file="s.yaml")
    assert str(info.value) == (f"checkpoint `best.pt` was written for a different spec: {expected}; use the spec "
                               "it was trained with (the run directory keeps it as spec.yaml) or start a new run")


def test_long_values_are_cut_around_where_they_differ():
    from graphdl.train.checkpoint import _shown_pair

    a = {"layers": "x" * 100 + "A" + "y" * 100}
    b = {"layers": "x" * 100 + "B" + "y" * 100}
    x, y = _shown_pair(a, b)
    assert x != y and "A" in x and "B" in y and x.startswith("...") and y.startswith("...")
    assert len(x) <= 66 and len(y) <= 66
