"""What every script in ``benchmarks/`` shares: the machine line, ``--device``/``--json``, timers.

A benchmark's number means nothing without the machine it ran on, so each script prints
:func:`banner` (host CPU, cores, torch and peer versions, intra-op threads, device, load
average) with its table and writes the same facts under ``"machine"`` in its ``--json``
file (:func:`write_json`). On CUDA a timer must wait for the queued kernels:
:func:`timed` calls ``torch.cuda.synchronize`` before starting and before stopping the
clock; on CPU it is a plain ``perf_counter`` difference.

    ap = argparse.ArgumentParser()
    add_arguments(ap)                      # --device (default cpu) and --json FILE
    args = ap.parse_args()
    device = resolve_device(args.device)   # DataError on "cuda" without a GPU
    print(banner(device, peers=("torch_geometric",)))
    ...
    write_json(args.json, {"rows": rows}, device, peers=("torch_geometric",))
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from graphdl.errors import DataError


def load_average() -> str:
    """The 1, 5 and 15 minute load averages of ``/proc/loadavg`` ("n/a" where there is none)."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


_CACHED_BY_MALLOPT = False


def cache_cpu_allocations() -> bool:
    """Make glibc keep large freed blocks for reuse instead of returning them to the OS.

    By default glibc serves every block above its mmap threshold (at most 32 MB) with a fresh
    ``mmap`` and unmaps it on free, so each large tensor (an ``(E, C)`` edge tensor of 500k × 64
    float32 is 128 MB) is page-faulted in again on first touch: ~50 ms of a 66 ms ``index_select``
    on this project's machine. ``mallopt(M_MMAP_MAX, 0)`` puts large blocks on the heap and
    ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)`` keeps freed heap memory, as caching allocators
    (jemalloc, tcmalloc, which PyTorch's CPU tuning guide recommends) do; the same as starting
    Python with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``. Cost: memory freed by
    tensors stays with the process (its peak is kept). Affects every library in the process.

    Returns False where it does not apply (not glibc).
    """
    global _CACHED_BY_MALLOPT
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(name)
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    ok = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    _CACHED_BY_MALLOPT = _CACHED_BY_MALLOPT or ok
    return ok


def cpu_allocator() -> str:
    """How large CPU allocations are served in this process (part of :func:`machine`)."""
    preload = os.environ.get("LD_PRELOAD", "")
    for lib in ("jemalloc", "tcmalloc", "mimalloc"):
        if lib in preload:
            return f"{lib} (LD_PRELOAD)"
    if _CACHED_BY_MALLOPT or os.environ.get("MALLOC_MMAP_MAX_") == "0":
        return "glibc, large blocks kept for reuse (M_MMAP_MAX 0)"
    return "glibc default (blocks > 32 MB are fresh mmaps, page-faulted on first touch)"


def machine(device: torch.device | str = "cpu", peers: Iterable[str] = ()) -> dict:
    """The facts a timing depends on: CPU, cores, versions (torch, graphdl, each peer
    distribution named in ``peers``), intra-op threads, device name and the load average now."""
    device = torch.device(device)
    info = {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "graphdl": _version("graphdl"),
        "peers": {p: _version(p) for p in peers}, "threads": torch.get_num_threads(),
        "device": str(device), "load_average": load_average(), "allocator": cpu_allocator(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def banner(device: torch.device | str = "cpu", peers: Iterable[str] = ()) -> str:
    """:func:`machine` as two printable lines (the header of every benchmark table)."""
    m = machine(device, peers)
    peer = "".join(f", {k} {v}" for k, v in m["peers"].items())
    dev = m["device"] + (f" ({m['device_name']}, CUDA {m['cuda']})" if "device_name" in m else "")
    return (f"machine: {m['cpu']}, {m['cores']} cores; device {dev}; {m['threads']} torch threads; "
            f"CPU allocator: {m['allocator']}\n"
            f"versions: python {m['python']}, torch {m['torch']}{peer}; load average {m['load_average']}")


def add_arguments(ap: argparse.ArgumentParser, *, device: str | None = "cpu", json_file: bool = True) -> None:
    """Add ``--device`` (default ``device``; None: no flag) and ``--json FILE`` to a parser."""
    if device is not None:
        ap.add_argument("--device", default=device, help=f"cpu or cuda[:N] (default {device})")
    if json_file:
        ap.add_argument("--json", metavar="FILE", default=None, help="also write the results (and machine) as JSON")


def resolve_device(name: str | None) -> torch.device:
    """``torch.device(name)``; :class:`~graphdl.errors.DataError` (one line) when CUDA is asked
    for on a machine without it."""
    device = torch.device(name or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"--device {name}: this machine has no CUDA device (torch {torch.__version__}); "
                        "run with --device cpu")
    return device


def synchronize(device: torch.device | str) -> None:
    """Wait for the queued work of ``device`` (CUDA); nothing on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds ``fn()`` takes, with the device synchronised before and after (CUDA)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def write_json(path: str | os.PathLike | None, results: dict, device: torch.device | str = "cpu",
               peers: Iterable[str] = ()) -> None:
    """Write ``{"machine": machine(device, peers), **results}`` to ``path`` (nothing if None)."""
    if path is None:
        return
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(device, peers), **results}, indent=2, default=str) + "\n")


__all__ = ["add_arguments", "banner", "load_average", "machine", "resolve_device", "synchronize", "timed",
           "write_json"]
