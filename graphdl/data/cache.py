"""Where generated datasets live, how they are written, and how they are checked.

* :func:`cache_root` — ``$GRAPHDL_CACHE`` if set, else ``~/.cache/graphdl``.
* :func:`atomic_write` — write to a temporary file beside the target, then ``os.replace``:
  a crash or a concurrent reader never sees a half-written file.
* :func:`save_npz` / :func:`load_npz` — ``.npz`` archives written byte-for-byte
  reproducibly (sorted entries, fixed zip timestamps, no compression), so the same
  arrays always give the same file.
* :func:`sha256_arrays` — a checksum of array *contents* (name, dtype, shape, bytes),
  independent of the container; :func:`sha256_file` — of a file's bytes.
* :func:`check_sha256` — compare with the checksum a dataset spec records, and fail with
  a :class:`~graphdl.errors.DataError` that says which file and how to fix it.

Generated datasets record ``sha256_arrays`` of what they cache: it survives a change of
numpy's file format, yet any change of a number changes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import numpy as np

from graphdl.errors import DataError

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``override``, else ``$GRAPHDL_CACHE``, else ``~/.cache/graphdl``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("GRAPHDL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/graphdl").expanduser()


def params_key(params: Mapping, length: int = 16) -> str:
    """A short stable hash of generation parameters, to name a cache file after them."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """Checksum of named arrays: sorted names, each with its dtype, shape and C-order bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name], order="C")
        if a.dtype.hasobject:
            raise TypeError(f"array `{name}` has dtype object; checksums need plain dtypes")
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> str:
    """Write ``arrays`` to ``path`` atomically and reproducibly; return :func:`sha256_arrays`."""
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            a = np.asarray(arrays[name], order="C")
            if a.dtype.hasobject:
                raise TypeError(f"array `{name}` has dtype object; store strings as fixed-width `U`")
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, a, allow_pickle=False)
    return sha256_arrays(arrays)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` (no pickles); a corrupt file is a :class:`DataError`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(
            f"cached file {path} cannot be read ({e}); delete it and it will be generated again"
        ) from None


def check_sha256(
    actual: str,
    expected: str | None,
    *,
    path: str | os.PathLike,
    spec: str = "the dataset spec",
    generated: bool = False,
) -> None:
    """Raise a :class:`DataError` when ``expected`` is given and differs from ``actual``.

    ``generated`` says whether the data were just made (then deleting the cache will not help:
    the generator itself gives other numbers here) or read from the cache.
    """
    if expected is None:
        return
    expected = expected.strip().lower().removeprefix("sha256:")
    if actual == expected:
        return
    if generated:
        raise DataError(
            f"data generated into {path} have sha256 {actual}, but {spec} records sha256 {expected}: "
            f"this machine's generator (library versions, parameters) gives different numbers; "
            f"if that is expected, set `sha256: {actual}` in the spec (or remove the field)"
        )
    raise DataError(
        f"cached file {path} has sha256 {actual}, but {spec} records sha256 {expected}: "
        f"the file is stale or was changed; delete it to generate it again, or, if the new data "
        f"are intended, set `sha256: {actual}` in the spec (or remove the field)"
    )


__all__ = [
    "atomic_write",
    "cache_root",
    "check_sha256",
    "load_npz",
    "params_key",
    "save_npz",
    "sha256_arrays",
    "sha256_file",
]
