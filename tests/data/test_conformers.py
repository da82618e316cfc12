"""MMFF conformer dataset: labels, skipped molecules, determinism, cache and layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("rdkit")

from rdkit import Chem
from rdkit.Chem import AllChem

from graphdl.data import cache
from graphdl.data import conformers as cf
from graphdl.errors import DataError
from graphdl.testing.tolerance import central_difference_bound, roundoff
from graphdl.types import VECTOR, Scalar

ROOT = Path(__file__).resolve().parents[2]

SMALL = [
    ("freesolv", "CCO"),
    ("freesolv", "CC(=O)Nc1ccc(O)cc1"),
    ("freesolv", "not a smiles"),  # parse
    ("solubility", "FS(F)(F)(F)(F)F"),  # in-set elements, no MMFF94 parameters
    ("solubility", "O[Sn](C)(C)C"),  # no MMFF94 parameters for tin
    ("solubility", "C[Si](C)(C)C"),  # MMFF has silicon, the one-hot does not
    ("solubility", "OCC"),  # ethanol again: a duplicate
    ("solubility", "ClCCBr"),
    ("solubility", "c1ccncc1"),
]


@pytest.fixture(scope="module")
def small_arrays():
    return cf.generate_conformers(SMALL, n_conformers=3, noise_std=0.02, seed=1, progress=False)


def _ethanol():
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    params = AllChem.ETKDGv3()
    params.randomSeed = 7
    AllChem.EmbedMolecule(mol, params)
    return mol


def test_mmff_forces_are_minus_energy_gradient():
    mol = _ethanol()
    x = mol.GetConformer().GetPositions() + 0.03 * np.random.default_rng(0).standard_normal((9, 3))
    e, f = cf.mmff_energy_forces(mol, x)
    assert f.shape == (9, 3) and np.abs(f).max() > 1.0  # non-trivial away from a minimum
    # central differences at h and 2h: error ≤ round-off c·eps·|E|/h (measured c ≈ 4 from the
    # h → 0 noise; c = 64) + truncation h²/6·|E‴| (Richardson estimate from D(2h) − D(h), ×2);
    # ≈ 1.5e-7 at h = 1e-5
    # (the old atol 1e-4 + 1e-5·|F| was ~1e3 times looser)
    h = 1e-5
    fd = {}
    for step in (h, 2 * h):
        fd[step] = np.zeros_like(x)
        for i in range(9):
            for k in range(3):
                xp, xm = x.copy(), x.copy()
                xp[i, k] += step
                xm[i, k] -= step
                ep, em = cf.mmff_energy_forces(mol, xp)[0], cf.mmff_energy_forces(mol, xm)[0]
                fd[step][i, k] = -(ep - em) / (2 * step)
    bound = central_difference_bound(fd[h], fd[2 * h], h, abs(e), factor=64)
    assert (np.abs(f - fd[h]) <= bound).all(), np.abs(f - fd[h]).max()
    assert (2 * bound < 1e-3 * np.abs(f)).all()  # a force off by 1e-3 of itself would fail
    # translation invariance of the energy: forces sum to zero up to the round-off of 9 terms
    # (measured 0.4 eps·max|F|; factor 64)
    np.testing.assert_allclose(f.sum(0), 0.0, atol=roundoff(f, 64))
    # E(x + t) = E(x) up to round-off (measured 3 eps·|E|; factor 64)
    assert cf.mmff_energy_forces(mol, x + 1.5)[0] == pytest.approx(e, abs=roundoff(e, 64))


def test_skipped_molecules_are_counted(small_arrays):
    a = small_arrays
    reasons = dict(zip(a["skipped_smiles"].tolist(), a["skipped_reason"].tolist()))
    assert reasons == {
        "not a smiles": "parse",
        "FS(F)(F)(F)(F)F": "mmff",
        "O[Sn](C)(C)C": "mmff",
        "C[Si](C)(C)C": "element",
        "OCC": "duplicate",
    }
    canon = [
        Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in ("CCO", "CC(=O)Nc1ccc(O)cc1", "ClCCBr", "c1ccncc1")
    ]
    assert a["smiles"].tolist() == canon
    assert len(a["skipped_source"]) == 5


def test_ragged_layout_and_labels(small_arrays):
    a = small_arrays
    m = len(a["smiles"])
    assert a["atom_ptr"].shape == a["bond_ptr"].shape == a["conf_ptr"].shape == (m + 1,)
    n_atoms = np.diff(a["atom_ptr"])
    assert n_atoms.tolist() == [9, 20, 8, 11]  # explicit hydrogens
    conf_counts = np.diff(a["conf_ptr"])
    assert conf_counts.tolist() == [3, 3, 3, 3]
    assert a["pos"].shape == a["forces"].shape == (int((n_atoms * conf_counts).sum()), 3)
    assert a["energy"].shape == (int(conf_counts.sum()),)
    # labels agree with a fresh MMFF evaluation of the stored coordinates
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1"))
    start = 3 * 9 + 20  # second conformer of the second molecule
    e, f = cf.mmff_energy_forces(mol, a["pos"][start : start + 20])
    # the same float64 computation on the same coordinates: equal up to round-off (exact here); factor 64
    assert e == pytest.approx(a["energy"][4], abs=roundoff(e, 64))
    np.testing.assert_allclose(f, a["forces"][start : start + 20], atol=roundoff(f, 64))


def test_generation_is_deterministic(small_arrays, tmp_path):
    again = cf.generate_conformers(SMALL, n_conformers=3, noise_std=0.02, seed=1, progress=False)
    for k in small_arrays:
        np.testing.assert_array_equal(again[k], small_arrays[k])
    other = cf.generate_conformers(SMALL[:2], n_conformers=3, noise_std=0.02, seed=1, progress=False)
    # a molecule's conformers do not depend on the other molecules of the run
    np.testing.assert_array_equal(other["pos"], small_arrays["pos"][: len(other["pos"])])
    assert cache.save_npz(tmp_path / "a.npz", again) == cache.sha256_arrays(small_arrays)


def test_noise_and_minimisation_options():
    mols = [("freesolv", "CCCC")]
    etkdg = cf.generate_conformers(mols, n_conformers=2, noise_std=0.0, seed=3, progress=False)
    noisy = cf.generate_conformers(mols, n_conformers=2, noise_std=0.05, seed=3, progress=False)
    relaxed = cf.generate_conformers(
        mols, n_conformers=2, noise_std=0.0, minimize=True, seed=3, progress=False
    )
    rms = lambda f: float(np.sqrt((f**2).sum(1).mean()))
    assert rms(relaxed["forces"]) < 0.05  # minima have ~zero forces
    assert rms(etkdg["forces"]) > 1.0
    assert 0.02 < np.abs(noisy["pos"] - etkdg["pos"]).std() < 0.08
    assert (relaxed["energy"] < etkdg["energy"]).all()


def test_molecule_splits_and_energy_reference(small_arrays):
    splits = cf.molecule_splits(10, cf.SplitFractions(train=0.6, val=0.2, test=0.2), seed=0)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(10))
    a = small_arrays
    off, info = cf.energy_reference(a, "molecule_mean", np.arange(4))
    rel = a["energy"] - off
    # means of 3 float64 energies minus their mean: round-off of |E| ≤ 70 (measured 1e-15; factor 64)
    np.testing.assert_allclose(rel.reshape(4, 3).mean(1), 0.0, atol=roundoff(a["energy"], 64))
    off, info = cf.energy_reference(a, "atom_linear", np.array([0, 1, 2]))
    assert info["kind"] == "atom_linear" and set(info["atom_energies"]) == set(cf.ELEMENTS)
    counts = cf.element_counts(a)
    assert counts[0].tolist() == [6, 2, 0, 1, 0, 0, 0, 0, 0, 0]  # C2H6O
    np.testing.assert_allclose(  # a 10-term float64 dot product: round-off (exact here; factor 64)
        off.reshape(4, 3)[:, 0], counts @ np.array(list(info["atom_energies"].values())), rtol=0,
        atol=roundoff(counts @ np.abs(np.array(list(info["atom_energies"].values()))), 64)
    )
    with pytest.raises(DataError, match="train split is empty"):
        cf.energy_reference(a, "atom_linear", np.array([], dtype=int))


def _patch_sources(monkeypatch):
    monkeypatch.setattr(cf, "source_smiles", lambda sources: [m for m in SMALL if m[0] in sources])


def test_dataset_layout(tmp_path, monkeypatch):
    _patch_sources(monkeypatch)
    p = cf.MMFFConformersParams(
        n_conformers=2, seed=1, progress=False, molecule_split={"train": 0.5, "val": 0.25, "test": 0.25}
    )
    ds = cf.MMFFConformers.load(p, cache_dir=str(tmp_path), base_dir=str(tmp_path))
    assert ds.meta["n_molecules"] == 4 and len(ds) == 8
    assert ds.meta["skipped"] == {"parse": 1, "mmff": 2, "element": 1, "embed": 0, "duplicate": 1}
    assert ds.fields == {
        "node.pos": VECTOR,
        "node.atom": Scalar(10),
        "node.forces": VECTOR,
        "edge.bond_order": Scalar(1),
        "graph.energy": Scalar(1),
        "graph.energy_mmff": Scalar(1),
    }
    assert ds.targets == ["graph.energy", "node.forces"]
    # splits hold out whole molecules
    mol = np.array(ds.meta["molecule_of_graph"])
    seen = [set(mol[ds.splits[k]].tolist()) for k in ("train", "val", "test")]
    assert seen[0].isdisjoint(seen[1]) and seen[0].isdisjoint(seen[2]) and seen[1].isdisjoint(seen[2])
    assert sorted(i for v in ds.splits.values() for i in v) == list(range(8))
    g = ds[0]  # ethanol: 9 atoms, 8 bonds
    assert g.num_nodes == 9 and g.num_edges == 16 and bool((g.dst[1:] >= g.dst[:-1]).all())
    assert g["node.atom"].sum(0)[:4].tolist() == [6.0, 2.0, 0.0, 1.0]
    assert g["node.forces"].dtype == torch.float32
    # graph.energy = raw MMFF energy minus the per-element reference fitted on train molecules
    ref = ds.meta["energy_reference"]["atom_energies"]
    expect = g["graph.energy_mmff"].item() - sum(
        ref[e] * n for e, n in zip(cf.ELEMENTS, g["node.atom"].sum(0).tolist())
    )
    # both energies stored in float32: ≤ eps32/2·(|E_mmff| + |E|) (measured ≤ 1e-6); factor 4
    assert g["graph.energy"].item() == pytest.approx(expect, abs=roundoff(g["graph.energy_mmff"], 4))
    assert "rebuild" in ds.meta["graph"]


def test_cache_reuse_and_checksum_mismatch(tmp_path, monkeypatch):
    _patch_sources(monkeypatch)
    p = cf.MMFFConformersParams(n_conformers=1, progress=False, sources=["freesolv"])
    _, rec = cf.load_or_generate(p, tmp_path)
    assert rec["generated"] and rec["rdkit_version"]
    _, rec2 = cf.load_or_generate(p, tmp_path)
    assert not rec2["generated"] and rec2["sha256"] == rec["sha256"]
    with pytest.raises(DataError) as err:
        cf.load_or_generate(p.model_copy(update={"sha256": "f" * 64}), tmp_path)
    assert rec["cache_file"] in str(err.value) and "delete" in str(err.value)


def test_params_and_shipped_spec():
    with pytest.raises(ValueError, match="sum to 1"):
        cf.MMFFConformersParams(molecule_split={"train": 0.5, "val": 0.1, "test": 0.1})
    with pytest.raises(ValueError):
        cf.MMFFConformersParams(sources=["qm9"])
    with pytest.raises(ValueError):
        cf.MMFFConformersParams(n_conformer=3)
    spec = yaml.safe_load((ROOT / "datasets" / "mmff_conformers.yaml").read_text())
    p = cf.MMFFConformersParams(**spec)
    assert p.sources == ["freesolv", "solubility"] and p.n_conformers == 4


def test_strained_conformers_are_dropped(small_arrays):
    a = dict(small_arrays)
    a["energy"] = a["energy"].copy()
    a["energy"][4] += 500.0  # second conformer of the second molecule (20 atoms)
    out, n = cf.drop_strained_conformers(a, 100.0)
    assert n == 1 and np.diff(out["conf_ptr"]).tolist() == [3, 2, 3, 3]
    assert len(out["energy"]) == 11 and len(out["pos"]) == len(a["pos"]) - 20
    start = 3 * 9 + 20
    np.testing.assert_array_equal(out["pos"][:start], a["pos"][:start])
    np.testing.assert_array_equal(out["pos"][start:], a["pos"][start + 20 :])
    assert cf.drop_strained_conformers(a, None)[1] == 0
    assert cf.drop_strained_conformers(small_arrays, 100.0)[0] is small_arrays
