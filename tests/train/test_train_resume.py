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


def graphdl(*args, wait=True):
    cmd = [sys.executable, "-m", "graphdl.cli", *args, "--trust"]  # the spec imports sleep_block.py
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_kill_mid_epoch_then_resume_matches_uninterrupted_run(tiny, tmp_path):
    (tmp_path / "sleep_block.py").write_text(SLEEP_BLOCK)
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
