"""Protein chains from PDB files: residue types, residue indices, backbone atoms and frames.

The dataset type ``protein_chains`` reads single-chain PDB (or mmCIF) files, ``.gz`` or
not, either from a directory next to the dataset spec (``path:``) or from a directory that an
installed Python package ships (``package:`` + ``directory:``; the package is located with
``importlib.util.find_spec`` and never imported, so its import-time code does not run).
``datasets/protein_chains.yaml`` uses the 50 chains (79–173 residues, 6,860 in all) that
``mdanalysistests`` 2.11.0 ships under ``MDAnalysisTests/data/dssp/`` beside their DSSP strings.

Reader: gemmi (https://gemmi.readthedocs.io), chosen over Biopython and biotite because it is
one small compiled wheel without dependencies, reads PDB, mmCIF and gzip directly and fast,
resolves alternate locations and hetero residues the way crystallographers expect (it is
developed with CCP4/Global Phasing), and is maintained; it is an optional dependency (the
``protein`` extra), imported only when such a dataset is loaded.

Each chain becomes one graph (no edges: the model's ``graph:`` makes them) with

* ``node.aa`` (21): one-hot residue type (the 20 standard amino acids in alphabetical order
  of their three-letter codes, then ``UNK`` for anything else that is an amino acid);
* ``node.residue_index`` (1): the author residue number (chain breaks show as jumps);
* ``node.pos_backbone`` (``3x1o``): N, CA, C positions in Å;
* ``node.frame`` (``frame``): backbone frames from N, CA, C (AF2 Algorithm 21).

Only the first model and the first conformer of each atom (gemmi's alternative-location
pruning) are read; residues that are not amino acids (waters, ligands) are skipped. A residue
without one of N, CA, C, or with coincident backbone atoms, is a :class:`DataError` naming
the file, the residue and the fix. Every file's SHA-256 is recorded in the dataset spec and
checked on load.

Split (``split: {type: source}``): files sorted by name, the first ``n_train`` train and the
rest test.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import os

import torch
from pydantic import Field, PositiveInt, model_validator

from graphdl.data.graph import Graph
from graphdl.data.registry import Dataset, DatasetParams, DatasetType, register_dataset
from graphdl.errors import DataError
from graphdl.ops.frames import frames_from_backbone
from graphdl.types import FRAME, Irreps, Scalar

AMINO_ACIDS = ("ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
               "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL")
"""The 20 standard residues; index 20 (``UNK``) is any other amino acid."""

FIELDS = {
    "node.aa": Scalar(len(AMINO_ACIDS) + 1),
    "node.residue_index": Scalar(1),
    "node.pos_backbone": Irreps(((3, 1, -1),)),
    "node.frame": FRAME,
}

_MIN_BOND = 0.1  # Å: backbone atoms closer than this are a broken file, not a residue


class ProteinChainsParams(DatasetParams):
    """``path`` (a directory, relative to the dataset spec) or ``package`` + ``directory``;
    ``files``: name → SHA-256 of every file (all of them are read, in name order) or
    ``pattern`` (a glob, every match read, no checksums); ``n_train``: the first files by
    name that form the training split (the rest is the test split)."""

    type: str = "protein_chains"
    path: str | None = None
    package: str | None = None
    package_version: str | None = None
    directory: str = "."
    files: dict[str, str] | None = None
    pattern: str | None = None
    n_train: int = Field(0, ge=0)
    max_residues: PositiveInt | None = None
    dtype: str = "float32"

    @model_validator(mode="after")
    def _source(self):
        if (self.path is None) == (self.package is None):
            raise ValueError("name exactly one source: `path:` (a directory next to the dataset spec) or "
                             "`package:` (an installed package shipping the files) with `directory:`")
        if (self.files is None) == (self.pattern is None):
            raise ValueError("name the files with `files:` (name: sha256) or `pattern:` (a glob), exactly one")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"`dtype` must be float32 or float64, found `{self.dtype}`")
        return self


def package_dir(package: str, version: str | None = None) -> str:
    """Directory of an installed package, found without importing it.

    Raises:
        DataError: the package is not installed (the message says what to install).
    """
    pip_name = package.lower()
    pin = f"=={version}" if version else ""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the dataset reads files shipped by the Python package `{package}`, which is not installed; "
                        f"`pip install {pip_name}{pin}` (or `pip install graphdl[protein]`)")
    return list(spec.submodule_search_locations)[0]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_chain(path: str, *, dtype=torch.float32) -> tuple[Graph, dict]:
    """One PDB/mmCIF file (first model, first chain) → a graph of residues (see the module docstring).

    Raises:
        DataError: unreadable file, no protein chain, a residue without N, CA or C, or
            coincident backbone atoms (naming the file and residue).
    """
    try:
        import gemmi
    except ImportError:
        raise DataError("reading PDB files needs gemmi; `pip install gemmi` (or `pip install graphdl[protein]`)") from None
    name = os.path.basename(path)
    try:
        st = gemmi.read_structure(path)
    except (RuntimeError, ValueError, OSError) as e:
        raise DataError(f"{name}: cannot read the structure ({e}); check the file is PDB or mmCIF") from None
    st.remove_alternative_conformations()
    if len(st) == 0 or len(st[0]) == 0:
        raise DataError(f"{name}: no model or chain in the file; give a file with one protein chain")
    chain = st[0][0]
    aa, index, xyz, labels = [], [], [], []
    for res in chain:
        info = gemmi.find_tabulated_residue(res.name)
        if info is None or not info.is_amino_acid():
            continue
        atoms = {}
        for atom in res:
            atoms.setdefault(atom.name, atom.pos)
        label = f"{res.name} {res.seqid.num}{res.seqid.icode.strip()}"
        missing = [a for a in ("N", "CA", "C") if a not in atoms]
        if missing:
            raise DataError(f"{name}: residue {label} of chain {chain.name} has no {', '.join(missing)} atom "
                            f"(backbone frames need N, CA and C); remove the residue or use a complete model")
        aa.append(AMINO_ACIDS.index(res.name) if res.name in AMINO_ACIDS else len(AMINO_ACIDS))
        index.append(res.seqid.num)
        xyz.append([[atoms[a].x, atoms[a].y, atoms[a].z] for a in ("N", "CA", "C")])
        labels.append(label)
    if not aa:
        raise DataError(f"{name}: chain {chain.name} has no amino acids; give a protein chain")
    x = torch.tensor(xyz, dtype=torch.float64)  # (N, 3 atoms, 3)
    d_nca = (x[:, 0] - x[:, 1]).norm(dim=-1)
    d_cca = (x[:, 2] - x[:, 1]).norm(dim=-1)
    bend = torch.linalg.cross(x[:, 2] - x[:, 1], x[:, 0] - x[:, 1], dim=-1).norm(dim=-1)
    bad = (d_nca < _MIN_BOND) | (d_cca < _MIN_BOND) | (bend < _MIN_BOND * _MIN_BOND)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise DataError(f"{name}: residue {labels[i]} has coincident or collinear N, CA, C atoms (N-CA "
                        f"{float(d_nca[i]):.2f} Å, C-CA {float(d_cca[i]):.2f} Å): no frame; fix or remove the residue")
    frame = frames_from_backbone(x[:, 0], x[:, 1], x[:, 2])
    n = len(aa)
    fields = {
        "node.aa": torch.nn.functional.one_hot(torch.tensor(aa), len(AMINO_ACIDS) + 1).to(dtype),
        "node.residue_index": torch.tensor(index, dtype=dtype).unsqueeze(-1),
        "node.pos_backbone": x.reshape(n, 9).to(dtype),
        "node.frame": frame.to(dtype),
    }
    seq = "".join("ARNDCQEGHILKMFPSTWYVX"[a] for a in aa)
    return Graph(None, n, fields, validate=True), {"file": name, "chain": chain.name, "residues": n, "sequence": seq}


@register_dataset("protein_chains")
class ProteinChains(DatasetType):
    """Single protein chains from PDB files (see the module docstring); one graph per chain."""

    Params = ProteinChainsParams

    @classmethod
    def fields(cls, p: ProteinChainsParams) -> dict:
        return dict(FIELDS)

    @classmethod
    def source_dir(cls, p: ProteinChainsParams, base_dir: str | None) -> str:
        if p.path is not None:
            root = p.path if os.path.isabs(p.path) else os.path.join(base_dir or ".", p.path)
        else:
            root = os.path.join(package_dir(p.package, p.package_version), p.directory)
        if not os.path.isdir(root):
            raise DataError(f"protein_chains: `{root}` is not a directory; "
                            + ("fix `path:`" if p.path is not None else
                               f"is `{p.package}` the version the spec names ({p.package_version or 'any'})?"))
        return root

    @classmethod
    def load(cls, p: ProteinChainsParams, *, cache_dir=None, base_dir=None) -> Dataset:
        root = cls.source_dir(p, base_dir)
        if p.files is not None:
            names = sorted(p.files)
        else:
            names = sorted(f for f in os.listdir(root) if fnmatch.fnmatch(f, p.pattern))
        if not names:
            raise DataError(f"protein_chains: no file in `{root}` matches `{p.pattern}`")
        if p.n_train > len(names):
            raise DataError(f"protein_chains: `n_train: {p.n_train}` but there are {len(names)} files")
        dtype = getattr(torch, p.dtype)
        graphs, chains = [], []
        for name in names:
            path = os.path.join(root, name)
            if not os.path.isfile(path):
                raise DataError(f"protein_chains: `{name}` is missing from `{root}`"
                                + (f"; install `{p.package}=={p.package_version}`" if p.package_version else ""))
            if p.files is not None:
                digest = _sha256(path)
                if digest != p.files[name]:
                    raise DataError(f"protein_chains: `{name}` has SHA-256 {digest}, the dataset spec records "
                                    f"{p.files[name]}; the file changed (another `{p.package or p.path}` version?): "
                                    f"install the recorded version or update the checksum")
            g, info = read_chain(path, dtype=dtype)
            if p.max_residues is not None and g.num_nodes > p.max_residues:
                raise DataError(f"protein_chains: `{name}` has {g.num_nodes} residues, more than `max_residues: "
                                f"{p.max_residues}`; raise the limit or drop the file")
            graphs.append(g)
            chains.append(info)
        splits = {"train": list(range(p.n_train)), "test": list(range(p.n_train, len(names)))}
        meta = {"source": root, "chains": chains, "residues": sum(c["residues"] for c in chains),
                "reader": "gemmi"}
        return Dataset(graphs=graphs, fields=dict(FIELDS), targets=["node.frame"], splits=splits, meta=meta)


__all__ = ["AMINO_ACIDS", "FIELDS", "ProteinChains", "ProteinChainsParams", "package_dir", "read_chain"]
