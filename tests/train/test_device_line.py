"""A device the machine lacks, asked for in the spec, is refused at the spec's line before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graphdl.cli import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_a_cuda_device_in_the_spec_names_the_spec_line(tiny, capsys):
    spec = tiny(epochs=1, replace={"  seed: 0\n": "  seed: 0\n  device: cuda\n"})
    assert main(["run", spec, "--out", str(Path(spec).parent / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {spec}:") and "train.device: `device: cuda` is asked for but torch sees no CUDA" \
        in err and err.endswith("write `device: cpu` (or `auto`), or pass `--device cpu`")
    assert not (Path(spec).parent / "r").exists()
