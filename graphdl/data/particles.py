"""Particle trajectories for learned simulators: generated here (MLS-MPM water, charged N-body)
or read from the layouts users already have (DeepMind TFRecord, geoelements/gns ``.npz``,
LagrangeBench ``.h5``).

Every particle dataset is a :class:`~graphdl.data.registry.Dataset` with one graph per
trajectory (no edges; the simulator's task builds radius graphs per step) holding

* ``node.position`` — ``trajectory(T, D)``: the particle's positions at every frame,
  ``(N, T, D)`` float32;
* ``node.particle_type`` — ``categorical(K)``: its type (DeepMind's convention: 9 types,
  type 3 kinematic, i.e. a boundary or obstacle moved by the data, 5 water, 6 sand);
* ``graph.step_context`` — ``trajectory(T, k)`` when the data carry a global input per frame,

and ``meta`` with the ``metadata.json`` keys of DeepMind's layout: ``bounds`` (the walls,
``[[lo, hi], ...]`` per axis), ``dim``, ``dt`` (time between frames), ``sequence_length``,
``default_connectivity_radius``, ``vel_mean`` / ``vel_std`` / ``acc_mean`` / ``acc_std``
(per axis, in units of length per frame and per frame², over the training split), plus
``num_particle_types``, ``kinematic_types`` and ``periodic`` (per axis). ``splits`` holds
``train`` / ``val`` / ``test`` (DeepMind's ``valid`` is ``val``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import time
import zipfile
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from graphdl.data.cache import cache_root, check_sha256, load_npz, params_key, save_npz, sha256_arrays
from graphdl.data.graph import Graph
from graphdl.data.registry import Dataset, DatasetParams, DatasetType, register_dataset
from graphdl.errors import DataError
from graphdl.types import Categorical, Trajectory

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
NUM_PARTICLE_TYPES = 9
KINEMATIC_TYPE = 3
WATER_TYPE = 5


# ------------------------------------------------------------------------------ container
def trajectory_statistics(positions: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """Per-axis mean and std of velocities ``x_{t+1} − x_t`` and accelerations
    ``x_{t+1} − 2x_t + x_{t−1}`` over every particle and frame of ``positions``
    (each ``(T, N, D)``), accumulated in float64 (DeepMind's ``vel_mean`` ... ``acc_std``)."""
    sums = None
    for x in positions:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] < 3:
            continue
        v = (x[1:] - x[:-1]).reshape(-1, x.shape[-1])
        a = (x[2:] - 2 * x[1:-1] + x[:-2]).reshape(-1, x.shape[-1])
        part = np.stack([v.sum(0), (v * v).sum(0), a.sum(0), (a * a).sum(0)])
        counts = np.array([len(v), len(a)], dtype=np.float64)
        sums = (part, counts) if sums is None else (sums[0] + part, sums[1] + counts)
    if sums is None:
        raise DataError("no trajectory of the training split has 3 frames; velocity and acceleration statistics "
                        "need at least 3")
    (sv, svv, sa, saa), (nv, na) = sums
    vm, am = sv / nv, sa / na
    vs = np.sqrt(np.maximum(svv / nv - vm * vm, 0.0))
    acs = np.sqrt(np.maximum(saa / na - am * am, 0.0))
    return {"vel_mean": vm.tolist(), "vel_std": vs.tolist(), "acc_mean": am.tolist(), "acc_std": acs.tolist()}


def particle_dataset(splits: Mapping[str, Sequence[tuple]], meta: dict, *, num_types: int = NUM_PARTICLE_TYPES,
                     source: str = "the data") -> Dataset:
    """The :class:`Dataset` of trajectories ``splits[name] = [(positions (T, N, D), types (N,)[, context (T, k)]), ...]``.

    Checks shapes, finiteness and type ranges once (one line naming the split, trajectory and
    what is wrong), computes the velocity / acceleration statistics of the training split when
    ``meta`` lacks them, and fills ``meta``'s derived keys (``dim``, ``sequence_length``).
    """
    graphs: list[Graph] = []
    index: dict[str, list[int]] = {}
    dims, lengths, ctx_dims = set(), [], set()
    for split in SPLITS:
        index[split] = []
        for k, item in enumerate(splits.get(split, ())):
            pos, types = np.asarray(item[0]), np.asarray(item[1])
            ctx = np.asarray(item[2]) if len(item) > 2 and item[2] is not None else None
            where = f"{source}: {split} trajectory {k}"
            if pos.ndim != 3:
                raise DataError(f"{where}: positions must have shape (frames, particles, dim), found {pos.shape}")
            if types.shape != (pos.shape[1],):
                raise DataError(f"{where}: particle types must have shape ({pos.shape[1]},) (one per particle), "
                                f"found {types.shape}")
            if not np.issubdtype(types.dtype, np.integer):
                raise DataError(f"{where}: particle types must be integers, found {types.dtype}")
            if types.size and (types.min() < 0 or types.max() >= num_types):
                raise DataError(f"{where}: particle type {int(types.min() if types.min() < 0 else types.max())} is "
                                f"outside 0..{num_types - 1}; set `num_particle_types`")
            if not np.isfinite(pos).all():
                raise DataError(f"{where}: positions hold NaN or infinite values")
            if pos.shape[0] < 3:
                raise DataError(f"{where}: {pos.shape[0]} frames; a simulator needs at least 3")
            dims.add(pos.shape[2])
            lengths.append(pos.shape[0])
            fields = {"node.position": torch.from_numpy(np.ascontiguousarray(pos.transpose(1, 0, 2), np.float32)),
                      "node.particle_type": torch.from_numpy(types.astype(np.int64))}
            if ctx is not None:
                if ctx.ndim == 1:
                    ctx = ctx[:, None]
                if ctx.shape[0] != pos.shape[0]:
                    raise DataError(f"{where}: step context has {ctx.shape[0]} frames, positions {pos.shape[0]}")
                ctx_dims.add(ctx.shape[1])
                fields["graph.step_context"] = torch.from_numpy(np.ascontiguousarray(ctx, np.float32))[None]
            index[split].append(len(graphs))
            graphs.append(Graph(None, pos.shape[1], fields, validate=False))
    if not graphs:
        raise DataError(f"{source} holds no trajectory")
    if len(dims) != 1:
        raise DataError(f"{source}: trajectories of different spatial dimensions {sorted(dims)}")
    if len(ctx_dims) > 1 or (ctx_dims and len([g for g in graphs if "graph.step_context" in g]) != len(graphs)):
        raise DataError(f"{source}: some trajectories have a step context and others not (or of other widths)")
    dim = dims.pop()
    meta = dict(meta)
    meta.setdefault("dim", dim)
    if meta["dim"] != dim:
        raise DataError(f"{source}: metadata says dim {meta['dim']} but the positions have {dim} coordinates")
    meta["sequence_length"] = min(lengths)
    meta["frames_per_trajectory"] = lengths
    meta.setdefault("num_particle_types", num_types)
    meta.setdefault("kinematic_types", [KINEMATIC_TYPE])
    meta.setdefault("periodic", [False] * dim)
    if "bounds" not in meta:
        raise DataError(f"{source}: the metadata has no `bounds` (the walls, [[lo, hi], ...] per axis)")
    if "vel_mean" not in meta:
        train = [g["node.position"].numpy().transpose(1, 0, 2) for g in (graphs[i] for i in index["train"])]
        meta.update(trajectory_statistics(train))
    fields = {"node.position": Trajectory(min(lengths), dim), "node.particle_type": Categorical(num_types)}
    if ctx_dims:
        fields["graph.step_context"] = Trajectory(min(lengths), ctx_dims.pop())
    return Dataset(graphs=graphs, fields=fields, targets=["node.position"], splits=index, meta=meta)


# ---------------------------------------------------------------------------- generated
class WaterParams(DatasetParams):
    """``type: mpm_water``: 2D MLS-MPM water blobs dropped in a box (see :mod:`graphdl.data.mpm`)."""

    type: str = "mpm_water"
    n_train: NonNegativeInt = 24
    n_val: NonNegativeInt = 3
    n_test: NonNegativeInt = 3
    frames: PositiveInt = 400
    seed: int = 0
    n_grid: PositiveInt = 64
    frame_dt: PositiveFloat = 0.0025
    substeps: PositiveInt = 10
    bulk_modulus: PositiveFloat = 400.0
    gravity: float = 9.8
    bound: PositiveInt = 3
    blobs: tuple[PositiveInt, PositiveInt] = (1, 2)
    particles_per_blob: tuple[PositiveInt, PositiveInt] = (100, 250)
    speed: float = 1.0
    connectivity_radius: PositiveFloat = 0.015
    sha256: str | None = None

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("blobs", "particles_per_blob"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"`{name}` is a [min, max] range, found [{lo}, {hi}]")
        if self.frames < 3:
            raise ValueError(f"`frames` must be at least 3, found {self.frames}")
        if self.bound < 2 or 2 * self.bound + 4 > self.n_grid:
            raise ValueError(f"`bound` ({self.bound} cells) must be >= 2 and leave room inside a grid of {self.n_grid}")
        return self

    def config(self):
        from graphdl.data.mpm import MPMConfig

        return MPMConfig(self.n_grid, self.frame_dt, self.substeps, self.bulk_modulus, self.gravity, self.bound)

    def generation(self) -> dict:
        d = self.model_dump(exclude={"graphdl", "type", "name", "description", "sha256", "connectivity_radius"})
        d["version"] = 1
        return d


def generate_water(p: WaterParams) -> dict[str, np.ndarray]:
    """Simulate every trajectory of every split at once; arrays ``{split}_position``
    ``(Σ N, frames, 2)`` float32, ``{split}_counts`` (particles per trajectory) and the
    parameters as JSON. Trajectory ``k`` of a split draws its blobs from
    ``default_rng([seed, split number, k])``, so adding trajectories keeps the others."""
    from graphdl.data.mpm import MPMState, simulate, water_blobs

    cfg = p.config()
    sizes = {"train": p.n_train, "val": p.n_val, "test": p.n_test}
    xs, vs, traj, counts = [], [], [], {}
    for s_i, split in enumerate(SPLITS):
        counts[split] = []
        for k in range(sizes[split]):
            rng = np.random.default_rng([p.seed, s_i, k])
            n_blobs = int(rng.integers(p.blobs[0], p.blobs[1] + 1))
            x, v = water_blobs(rng, cfg, n_blobs, tuple(p.particles_per_blob), p.speed)
            traj.append(np.full(len(x), len(counts[split]) + sum(len(counts[s]) for s in SPLITS[:s_i])))
            xs.append(x)
            vs.append(v)
            counts[split].append(len(x))
    n_traj = sum(sizes.values())
    out: dict[str, np.ndarray] = {}
    if n_traj:
        state = MPMState(np.concatenate(xs), np.concatenate(vs), np.concatenate(traj), n_traj)
        pos = simulate(state, cfg, p.frames)  # (T, P, 2)
        start = 0
        for split in SPLITS:
            n = sum(counts[split])
            out[f"{split}_position"] = np.ascontiguousarray(pos[:, start:start + n].transpose(1, 0, 2), np.float32)
            start += n
    for split in SPLITS:
        out.setdefault(f"{split}_position", np.zeros((0, p.frames, 2), np.float32))
        out[f"{split}_counts"] = np.asarray(counts[split], np.int64)
    out["params"] = np.array(json.dumps(p.generation(), sort_keys=True))
    return out


def _load_or_generate(name: str, gen: dict, make, expected: str | None, cache_dir) -> tuple[dict, dict]:
    path = cache_root(cache_dir) / name / f"{name}_{params_key(gen)}.npz"
    generated, seconds = False, 0.0
    if path.exists():
        arrays = load_npz(path)
        digest = sha256_arrays(arrays)
    else:
        log.info("generating %s into %s", name, path)
        t0 = time.perf_counter()
        arrays = make()
        seconds = time.perf_counter() - t0
        digest = save_npz(path, arrays)
        generated = True
    check_sha256(digest, expected, path=path, spec=f"dataset `{name}`", generated=generated)
    return arrays, {"cache_file": str(path), "sha256": digest, "generated": generated, "generation_seconds": seconds}


@register_dataset("mpm_water")
class MPMWater(DatasetType):
    """2D water (MLS-MPM) trajectories generated here and cached with a checksum
    (``datasets/water_drop_2d.yaml``); particle type 5 (water), no kinematic particles."""

    Params = WaterParams

    @classmethod
    def fields(cls, params: WaterParams):
        return {"node.position": Trajectory(params.frames, 2), "node.particle_type": Categorical(NUM_PARTICLE_TYPES)}

    @classmethod
    def load(cls, params: WaterParams, *, cache_dir=None, base_dir=None) -> Dataset:
        from graphdl.data.mpm import effective_bounds

        arrays, record = _load_or_generate("mpm_water", params.generation(), lambda: generate_water(params),
                                           params.sha256, cache_dir)
        splits = {}
        for split in SPLITS:
            pos, counts = arrays[f"{split}_position"], arrays[f"{split}_counts"]
            ends = np.cumsum(counts)
            splits[split] = [(pos[e - n:e].transpose(1, 0, 2), np.full(n, WATER_TYPE, np.int64))
                             for n, e in zip(counts.tolist(), ends.tolist())]
        cfg = params.config()
        meta = {**record, "bounds": effective_bounds(cfg), "dt": params.frame_dt,
                "default_connectivity_radius": params.connectivity_radius, "params": params.generation(),
                "simulator": f"MLS-MPM water, grid {cfg.n_grid}, {cfg.substeps} substeps per frame"}
        return particle_dataset(splits, meta, source=f"dataset `{params.name or 'mpm_water'}`")


class NBodyTrajParams(DatasetParams):
    """``type: nbody_trajectories``: the charged N-body system of ``graphdl.data.nbody`` saved at
    every ``frame_stride`` steps as trajectories for a learned simulator (no walls: ``bounds``
    is the box holding every particle of the training split, for wall features that stay 1)."""

    type: str = "nbody_trajectories"
    n_particles: PositiveInt = 5
    n_train: NonNegativeInt = 200
    n_val: NonNegativeInt = 20
    n_test: NonNegativeInt = 20
    frames: PositiveInt = 100
    frame_stride: PositiveInt = 10
    dt: PositiveFloat = 0.001
    seed: int = 7
    clip: PositiveFloat | None = 100.0
    connectivity_radius: PositiveFloat = 100.0
    sha256: str | None = None

    def generation(self) -> dict:
        d = self.model_dump(exclude={"graphdl", "type", "name", "description", "sha256", "connectivity_radius"})
        d["version"] = 1
        return d


@register_dataset("nbody_trajectories")
class NBodyTrajectories(DatasetType):
    """Charged-particle trajectories (EGNN paper's system) for the ``simulate`` task; the
    connectivity radius is large by default, so the radius graph is the complete graph."""

    Params = NBodyTrajParams

    @classmethod
    def fields(cls, params: NBodyTrajParams):
        return {"node.position": Trajectory(params.frames, 3), "node.particle_type": Categorical(2)}

    @classmethod
    def load(cls, params: NBodyTrajParams, *, cache_dir=None, base_dir=None) -> Dataset:
        from graphdl.data import nbody

        def make():
            sizes = [params.n_train, params.n_val, params.n_test]
            pos, vel, q = nbody.initial_conditions(sum(sizes), params.n_particles, seed=params.seed)
            xs, _ = nbody.simulate(pos, vel, q, n_steps=(params.frames - 1) * params.frame_stride, dt=params.dt,
                                   clip=params.clip, save_every=params.frame_stride)
            xs = xs.reshape(sum(sizes), params.frames, params.n_particles, 3)
            out = {"position": xs.astype(np.float32), "charges": q.astype(np.int64)}
            out["params"] = np.array(json.dumps(params.generation(), sort_keys=True))
            return out

        arrays, record = _load_or_generate("nbody_trajectories", params.generation(), make, params.sha256, cache_dir)
        pos, q = arrays["position"], arrays["charges"]
        bounds_src = pos[:params.n_train] if params.n_train else pos
        lo, hi = bounds_src.min((0, 1, 2)) - 1.0, bounds_src.max((0, 1, 2)) + 1.0
        splits, start = {}, 0
        for split, n in zip(SPLITS, (params.n_train, params.n_val, params.n_test)):
            # type 0: charge −1, type 1: charge +1
            splits[split] = [(pos[i], (q[i] > 0).astype(np.int64)) for i in range(start, start + n)]
            start += n
        meta = {**record, "bounds": np.stack([lo, hi], 1).tolist(), "dt": params.dt * params.frame_stride,
                "default_connectivity_radius": params.connectivity_radius, "kinematic_types": [],
                "params": params.generation(), "particle_types": {"0": "charge -1", "1": "charge +1"}}
        return particle_dataset(splits, meta, num_types=2, source="dataset `nbody_trajectories`")


# ------------------------------------------------------------------------------ readers
class ReaderParams(DatasetParams):
    """A directory holding ``metadata.json`` and one file per split (``train``, ``valid``, ``test``)."""

    path: str
    num_particle_types: PositiveInt = NUM_PARTICLE_TYPES
    kinematic_types: list[int] = Field(default_factory=lambda: [KINEMATIC_TYPE])
    splits: dict[Literal["train", "val", "test"], str] | None = None
    """Split -> file stem (default ``train``, ``valid``, ``test``; a missing file is an empty split)."""


_SPLIT_STEMS = {"train": "train", "val": "valid", "test": "test"}


def _read_metadata(root: str) -> dict:
    path = os.path.join(root, "metadata.json")
    if not os.path.exists(path):
        raise DataError(f"{root} has no metadata.json (bounds, dt, default_connectivity_radius, ...); it is part of "
                        f"every DeepMind / gns / LagrangeBench dataset directory")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} must hold a JSON object")
    if "periodic_boundary_conditions" in meta:  # LagrangeBench's name
        meta["periodic"] = [bool(b) for b in meta["periodic_boundary_conditions"]]
    for key in ("vel_mean", "vel_std", "acc_mean", "acc_std"):  # recomputed on the training split
        meta.pop(key, None)
    return meta


def _split_files(p: ReaderParams, base_dir: str | None, ext: str) -> tuple[str, dict[str, str]]:
    root = p.path if os.path.isabs(p.path) else os.path.join(base_dir or os.getcwd(), p.path)
    if not os.path.isdir(root):
        raise DataError(f"dataset directory {root} not found")
    stems = {**_SPLIT_STEMS, **(p.splits or {})}
    files = {s: os.path.join(root, stems[s] + ext) for s in SPLITS}
    if not os.path.exists(files["train"]):
        raise DataError(f"{root} has no {stems['train']}{ext} (the training split)")
    return root, {s: f for s, f in files.items() if os.path.exists(f)}


@register_dataset("deepmind_tfrecord")
class DeepMindTFRecord(DatasetType):
    """DeepMind's ``learning_to_simulate`` layout: ``metadata.json`` and ``{train,valid,test}.tfrecord``
    of ``SequenceExample`` records (context ``key`` int64 and ``particle_type`` (one bytes
    value: int64 array); sequence ``position`` (one bytes value per frame: float32 ``N × dim``)
    and, when ``metadata.json`` has ``context_mean``, ``step_context``). Read with the
    ``tfrecord`` package (``pip install tfrecord``), without TensorFlow."""

    Params = ReaderParams

    @classmethod
    def load(cls, params: ReaderParams, *, cache_dir=None, base_dir=None) -> Dataset:
        try:
            from tfrecord.reader import sequence_loader
        except ImportError:
            raise DataError("reading DeepMind TFRecord data needs the `tfrecord` package (no TensorFlow): "
                            "pip install tfrecord") from None
        root, files = _split_files(params, base_dir, ".tfrecord")
        meta = _read_metadata(root)
        dim = int(meta.get("dim", 0)) or None
        splits: dict[str, list] = {}
        for split, path in files.items():
            items = []
            try:
                records = list(sequence_loader(path, None))
            except Exception as e:  # noqa: BLE001 - the package raises plain errors on corrupt records
                raise DataError(f"{path}: not a readable TFRecord of SequenceExamples ({type(e).__name__}: {e})") from None
            for k, (context, seq) in enumerate(records):
                where = f"{path} record {k}"
                if "particle_type" not in context or "position" not in seq:
                    raise DataError(f"{where}: expected context `particle_type` and sequence `position` (DeepMind's "
                                    f"layout), found context {sorted(context)} and sequence {sorted(seq)}")
                types = np.frombuffer(_one_bytes(context["particle_type"], where), dtype=np.int64)
                frames = [np.frombuffer(_one_bytes(f, where), dtype=np.float32) for f in seq["position"]]
                n = len(types)
                d = dim or (frames[0].size // max(n, 1))
                if any(f.size != n * d for f in frames):
                    raise DataError(f"{where}: a position frame does not hold {n} particles × {d} coordinates")
                pos = np.stack(frames).reshape(len(frames), n, d)
                ctx = None
                if "step_context" in seq:
                    ctx = np.stack([np.frombuffer(_one_bytes(f, where), dtype=np.float32) for f in seq["step_context"]])
                items.append((pos, types, ctx))
            splits[split] = items
        return particle_dataset(splits, {**meta, "source": root, "kinematic_types": params.kinematic_types},
                                num_types=params.num_particle_types, source=root)


def _one_bytes(value, where: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise DataError(f"{where}: expected one bytes value per feature, found {type(value).__name__}")


class _NumpyOnly(pickle.Unpickler):
    """Unpickles numpy arrays, dtypes and tuples of them, nothing else (no code runs)."""

    ALLOWED: ClassVar[set] = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}  # protocol-2 files: bytes as text

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load `{module}.{name}` (only numpy arrays are allowed)")


def _read_npy(raw: bytes, where: str) -> np.ndarray:
    """One ``.npy`` member; object arrays (the gns layout) through :class:`_NumpyOnly`."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    except ValueError as e:
        raise DataError(f"{where}: not a .npy array ({e})") from None
    if not dtype.hasobject:
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)
    try:
        arr = _NumpyOnly(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
        raise DataError(f"{where}: {e}") from None
    return np.asarray(arr, dtype=object).reshape(shape)


@register_dataset("gns_npz")
class GnsNpz(DatasetType):
    """The ``.npz`` layout of the geoelements/gns PyTorch port: ``metadata.json`` and
    ``{train,valid,test}.npz``, each mapping a name (``simulation_trajectory_0``, ...) to the
    pair ``(positions (T, N, D), particle_type (N,))`` stored as an object array (or one
    ``gns_data`` array of such pairs). The pickled pairs are read by an unpickler that admits
    numpy arrays only, so a file cannot run code."""

    Params = ReaderParams

    @classmethod
    def load(cls, params: ReaderParams, *, cache_dir=None, base_dir=None) -> Dataset:
        root, files = _split_files(params, base_dir, ".npz")
        meta = _read_metadata(root)
        splits: dict[str, list] = {}
        for split, path in files.items():
            try:
                zf = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as e:
                raise DataError(f"{path}: not an .npz archive ({e})") from None
            items = []
            with zf:
                for name in zf.namelist():
                    where = f"{path}:{name.removesuffix('.npy')}"
                    arr = _read_npy(zf.read(name), where)
                    pairs = list(arr) if name.removesuffix(".npy") == "gns_data" else [arr]
                    for j, pair in enumerate(pairs):
                        pair = tuple(pair.tolist()) if isinstance(pair, np.ndarray) and pair.dtype.names else pair
                        if len(pair) < 2:
                            raise DataError(f"{where}[{j}]: expected (positions, particle_type), found {len(pair)} item(s)")
                        items.append((np.asarray(pair[0], np.float32), np.asarray(pair[1]).astype(np.int64)))
            splits[split] = items
        return particle_dataset(splits, {**meta, "source": root, "kinematic_types": params.kinematic_types},
                                num_types=params.num_particle_types, source=root)


@register_dataset("lagrangebench_h5")
class LagrangeBenchH5(DatasetType):
    """LagrangeBench's layout: ``metadata.json`` and ``{train,valid,test}.h5``, one group per
    trajectory (``00000``, ``00001``, ...) with ``position`` ``(T, N, D)`` and
    ``particle_type`` ``(N,)``. Read with ``h5py`` (``pip install h5py``). LagrangeBench's
    periodic boxes are recorded in ``meta['periodic']``."""

    Params = ReaderParams

    @classmethod
    def load(cls, params: ReaderParams, *, cache_dir=None, base_dir=None) -> Dataset:
        try:
            import h5py
        except ImportError:
            raise DataError("reading LagrangeBench .h5 data needs h5py: pip install h5py") from None
        root, files = _split_files(params, base_dir, ".h5")
        meta = _read_metadata(root)
        splits: dict[str, list] = {}
        for split, path in files.items():
            try:
                f = h5py.File(path, "r")
            except OSError as e:
                raise DataError(f"{path}: not an HDF5 file ({e})") from None
            with f:
                items = []
                for key in sorted(f.keys()):
                    g = f[key]
                    if not isinstance(g, h5py.Group) or "position" not in g:
                        raise DataError(f"{path}: group `{key}` has no `position` dataset (LagrangeBench's layout: "
                                        f"`00000/position`, `00000/particle_type`)")
                    pos = np.asarray(g["position"][...], np.float32)
                    types = (np.asarray(g["particle_type"][...]) if "particle_type" in g
                             else np.zeros(pos.shape[1], np.int64))
                    items.append((pos, types.astype(np.int64)))
            splits[split] = items
        return particle_dataset(splits, {**meta, "source": root, "kinematic_types": params.kinematic_types},
                                num_types=params.num_particle_types, source=root)


__all__ = ["DeepMindTFRecord", "GnsNpz", "LagrangeBenchH5", "MPMWater", "NBodyTrajectories", "particle_dataset",
           "trajectory_statistics"]
