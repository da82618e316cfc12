"""``protein_chains``: the 50 chains mdanalysistests 2.11.0 ships, read with gemmi; checksums,
split, frames, and one-line errors for missing backbone atoms, changed files and a missing package."""

from __future__ import annotations

import gzip
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("gemmi", reason="protein extra: gemmi")

from graphdl.data.proteins import AMINO_ACIDS, ProteinChains, package_dir, read_chain  # noqa: E402
from graphdl.errors import DataError  # noqa: E402
from graphdl.ops.frames import frame_parts  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "datasets" / "protein_chains.yaml"


def _params(**over):
    data = yaml.safe_load(SPEC.read_text())
    data.update(over)
    return ProteinChains.Params.model_validate(data)


@pytest.fixture(scope="module")
def dataset():
    return ProteinChains.load(_params(), base_dir=str(SPEC.parent))


def test_fifty_chains_6860_residues_split_by_name(dataset):
    assert len(dataset) == 50 and dataset.meta["residues"] == 6860
    names = [c["file"] for c in dataset.meta["chains"]]
    assert names == sorted(names) and names[0] == "1ahsA.pdb.gz" and names[-1] == "4gcnA.pdb.gz"
    assert dataset.splits == {"train": list(range(40)), "test": list(range(40, 50))}
    sizes = [g.num_nodes for g in dataset.graphs]
    assert min(sizes) == 79 and max(sizes) == 173
    assert "MDAnalysisTests" not in sys.modules  # located, never imported


def test_fields_and_frames(dataset):
    g = dataset.graphs[0]
    assert set(g.fields) == {"node.aa", "node.residue_index", "node.pos_backbone", "node.frame"}
    assert torch.equal(g["node.aa"].sum(1), torch.ones(g.num_nodes))
    # 1ahsA starts at THR 126 (the file's first residue)
    assert int(g["node.residue_index"][0]) == 126 and int(g["node.aa"][0].argmax()) == AMINO_ACIDS.index("THR")
    r, t = frame_parts(g["node.frame"].double())
    assert (r.transpose(-1, -2) @ r - torch.eye(3, dtype=torch.float64)).abs().max() < 1e-6  # float32 storage
    x = g["node.pos_backbone"].view(-1, 3, 3)
    assert torch.equal(t.float(), x[:, 1])
    # backbone geometry of real proteins: N-CA 1.46 Å, CA-C 1.52 Å, consecutive CA 3.8 Å (trans)
    assert abs(float((x[:, 0] - x[:, 1]).norm(dim=-1).median()) - 1.46) < 0.03
    assert abs(float((x[:, 2] - x[:, 1]).norm(dim=-1).median()) - 1.52) < 0.03
    assert abs(float((x[1:, 1] - x[:-1, 1]).norm(dim=-1).median()) - 3.80) < 0.05


def test_the_package_directory_is_found_without_import():
    d = package_dir("MDAnalysisTests", "2.11.0")
    assert os.path.isdir(os.path.join(d, "data", "dssp"))
    with pytest.raises(DataError, match=r"`pip install no_such_pkg_graphdl==1.0`"):
        package_dir("no_such_pkg_graphdl", "1.0")


def _first_residues(last: int = 131) -> str:
    """The ATOM lines of residues 126..``last`` of 1ahsA."""
    d = os.path.join(importlib.util.find_spec("MDAnalysisTests").submodule_search_locations[0], "data", "dssp")
    with gzip.open(os.path.join(d, "1ahsA.pdb.gz"), "rt") as f:
        return "".join(ln for ln in f if ln.startswith("ATOM") and int(ln[22:26]) <= last)


def test_missing_backbone_atom_is_one_clear_line(tmp_path):
    text = _first_residues()
    lines = [ln for ln in text.splitlines(True) if not (ln.startswith("ATOM") and ln[12:16].strip() == "C"
                                                        and ln[22:26].strip() == "128")]
    (tmp_path / "broken.pdb").write_text("".join(lines))
    with pytest.raises(DataError) as e:
        read_chain(str(tmp_path / "broken.pdb"))
    msg = str(e.value)
    assert msg == ("broken.pdb: residue PRO 128 of chain A has no C atom (backbone frames need N, CA and C); "
                   "remove the residue or use a complete model")
    # the good part reads, as a directory dataset
    (tmp_path / "good.pdb").write_text(text)
    p = ProteinChains.Params.model_validate({"type": "protein_chains", "path": str(tmp_path), "pattern": "good*"})
    ds = ProteinChains.load(p, base_dir=".")
    assert len(ds) == 1 and ds.graphs[0].num_nodes == 6


def test_changed_file_fails_its_checksum(tmp_path):
    (tmp_path / "a.pdb").write_text(_first_residues())
    p = ProteinChains.Params.model_validate({"type": "protein_chains", "path": str(tmp_path),
                                             "files": {"a.pdb": "0" * 64}})
    with pytest.raises(DataError, match="`a.pdb` has SHA-256 [0-9a-f]{64}, the dataset spec records 0000"):
        ProteinChains.load(p, base_dir=".")


def test_params_name_one_source():
    with pytest.raises(ValueError, match="exactly one source"):
        ProteinChains.Params.model_validate({"type": "protein_chains", "pattern": "*"})
