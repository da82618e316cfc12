"""Readers of the particle layouts users have: DeepMind TFRecord + metadata.json, geoelements/gns
``.npz``, LagrangeBench ``.h5``. Each test writes a small file in the format's own layout."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

from graphdl.data.particles import (
    DeepMindTFRecord,
    GnsNpz,
    LagrangeBenchH5,
    ReaderParams,
    trajectory_statistics,
)
from graphdl.errors import DataError
from graphdl.types import Categorical, Trajectory

META = {"bounds": [[0.1, 0.9], [0.1, 0.9]], "sequence_length": 7, "default_connectivity_radius": 0.015, "dim": 2,
        "dt": 0.0025, "vel_mean": [0.0, 0.0], "vel_std": [1.0, 1.0], "acc_mean": [0.0, 0.0], "acc_std": [1.0, 1.0]}


def _trajectories(seed: int, count: int, frames: int = 8):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        n = 5 + k
        pos = (0.5 + 0.01 * rng.standard_normal((frames, n, 2)).cumsum(0)).astype(np.float32)
        types = np.where(np.arange(n) == 0, 3, 5).astype(np.int64)  # particle 0 kinematic
        out.append((pos, types))
    return out


def _write_meta(root, meta=META):
    (root / "metadata.json").write_text(json.dumps(meta))


def _check(ds, data):
    assert ds.fields["node.position"] == Trajectory(8, 2)
    assert ds.fields["node.particle_type"] == Categorical(9)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [len(data[s]) for s in ("train", "val", "test")]
    for split, items in data.items():
        for i, (pos, types) in zip(ds.splits[split], items):
            g = ds.graphs[i]
            assert torch.equal(g["node.position"], torch.from_numpy(pos.transpose(1, 0, 2)))
            assert torch.equal(g["node.particle_type"], torch.from_numpy(types))
    assert ds.meta["bounds"] == META["bounds"] and ds.meta["dt"] == META["dt"]
    # statistics are recomputed on the training split (not trusted from the file)
    want = trajectory_statistics([p for p, _ in data["train"]])
    for k in ("vel_mean", "vel_std", "acc_mean", "acc_std"):
        assert np.allclose(ds.meta[k], want[k], rtol=1e-12, atol=0)
    assert ds.meta["vel_std"] != [1.0, 1.0]


def _data():
    return {"train": _trajectories(0, 2), "val": _trajectories(1, 1), "test": _trajectories(2, 1)}


def test_deepmind_tfrecord_sequence_examples(tmp_path):
    from tfrecord.writer import TFRecordWriter

    data = _data()
    for split, stem in (("train", "train"), ("val", "valid"), ("test", "test")):
        w = TFRecordWriter(str(tmp_path / f"{stem}.tfrecord"))
        for key, (pos, types) in enumerate(data[split]):
            # DeepMind's SequenceExample: context key (int64) and particle_type (one bytes value of
            # int64s); sequence `position`: one bytes value of float32 (N x dim) per frame
            w.write({"key": (key, "int"), "particle_type": (types.tobytes(), "byte")},
                    {"position": ([frame.tobytes() for frame in pos], "byte")})
        w.close()
    _write_meta(tmp_path)
    ds = DeepMindTFRecord.load(ReaderParams(type="deepmind_tfrecord", path=str(tmp_path)))
    _check(ds, data)


def _save_gns_npz(path, items, as_gns_data=False):
    objs = []
    for pos, types in items:
        o = np.empty(2, dtype=object)
        o[0], o[1] = pos, types
        objs.append(o)
    if as_gns_data:
        arr = np.empty(len(objs), dtype=object)
        for i, o in enumerate(objs):
            arr[i] = (o[0], o[1])
        np.savez(path, gns_data=arr)
    else:
        np.savez(path, **{f"simulation_trajectory_{i}": o for i, o in enumerate(objs)})


@pytest.mark.parametrize("as_gns_data", [False, True])
def test_gns_npz(tmp_path, as_gns_data):
    data = _data()
    for split, stem in (("train", "train"), ("val", "valid"), ("test", "test")):
        _save_gns_npz(tmp_path / f"{stem}.npz", data[split], as_gns_data)
    _write_meta(tmp_path)
    _check(GnsNpz.load(ReaderParams(type="gns_npz", path=str(tmp_path))), data)


def test_gns_npz_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    raw = pickle.dumps(np.array([Evil()], dtype=object), protocol=3)  # as numpy writes them
    header = {"descr": "|O", "fortran_order": False, "shape": (1,)}
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(tmp_path / "train.npz", "w") as zf:
        zf.writestr("simulation_trajectory_0.npy", buf.getvalue() + raw)
    _write_meta(tmp_path)
    with pytest.raises(DataError, match=r"refusing to load `builtins.print` \(only numpy arrays are allowed\)"):
        GnsNpz.load(ReaderParams(type="gns_npz", path=str(tmp_path)))


def test_lagrangebench_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    data = _data()
    for split, stem in (("train", "train"), ("val", "valid"), ("test", "test")):
        with h5py.File(tmp_path / f"{stem}.h5", "w") as f:
            for i, (pos, types) in enumerate(data[split]):
                f.create_dataset(f"{i:05d}/position", data=pos)
                f.create_dataset(f"{i:05d}/particle_type", data=types)
    _write_meta(tmp_path, {**META, "periodic_boundary_conditions": [False, False]})
    ds = LagrangeBenchH5.load(ReaderParams(type="lagrangebench_h5", path=str(tmp_path)))
    _check(ds, data)
    assert ds.meta["periodic"] == [False, False]


def test_reader_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match="dataset directory .* not found"):
        GnsNpz.load(ReaderParams(type="gns_npz", path=str(tmp_path / "nope")))
    _save_gns_npz(tmp_path / "train.npz", _trajectories(0, 1))
    with pytest.raises(DataError, match="has no metadata.json"):
        GnsNpz.load(ReaderParams(type="gns_npz", path=str(tmp_path)))
    _write_meta(tmp_path)
    bad = [(np.full((8, 5, 2), np.nan, np.float32), np.full(5, 5))]
    _save_gns_npz(tmp_path / "train.npz", bad)
    with pytest.raises(DataError, match="train trajectory 0: positions hold NaN"):
        GnsNpz.load(ReaderParams(type="gns_npz", path=str(tmp_path)))
    _save_gns_npz(tmp_path / "train.npz", [(np.zeros((8, 5, 2), np.float32), np.full(5, 12))])
    with pytest.raises(DataError, match=r"particle type 12 is outside 0..8; set `num_particle_types`"):
        GnsNpz.load(ReaderParams(type="gns_npz", path=str(tmp_path)))
