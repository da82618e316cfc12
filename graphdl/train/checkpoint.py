"""Checkpoints: the resolved spec, its digests and every state needed to continue a run.

A checkpoint is a plain dict saved with ``torch.save`` and read with
``torch.load(weights_only=True)`` (no pickled code, so loading one cannot run anything)::

    format: "graphdl.checkpoint", version: 1
    spec: the resolved spec (every default spelled out), digest: sha256 of it,
    model_digest: sha256 of the parts that define the model (inputs, graph, model, task)
    model / task / optimizer / scheduler: state_dicts
    rng: torch's CPU generator state (and cuda_rng), epoch: epochs completed,
    history, best, bad_epochs, stopped: the runner's bookkeeping

Files are written to a temporary file beside the target and moved over it with
``os.replace``, so a run killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch

from graphdl.data.cache import atomic_write
from graphdl.errors import CheckpointError
from graphdl.spec.loader import format_path

FORMAT = "graphdl.checkpoint"
VERSION = 1
MODEL_KEYS = ("inputs", "graph", "model", "task")
"""Sections of the resolved spec that define what a model computes (checked by ``predict``)."""


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def digest(data: Any) -> str:
    """sha256 of the canonical JSON of ``data``."""
    return hashlib.sha256(canonical(data).encode()).hexdigest()


def model_part(resolved: dict) -> dict:
    return {k: resolved.get(k) for k in MODEL_KEYS}


def save(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (tensors, dicts, lists, numbers, strings) atomically."""
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, "version": VERSION, **state}, f)


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint safely; a missing, corrupt or foreign file is a :class:`CheckpointError`."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint `{path}` does not exist")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, pickle of arbitrary objects, not a torch file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint `{path}` ({first}); it is corrupt or was not written "
                              f"by graphdl") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"`{path}` is not a graphdl checkpoint (no `format: {FORMAT}` entry)")
    if ck.get("version") != VERSION:
        raise CheckpointError(f"checkpoint `{path}` has format version {ck.get('version')}; this graphdl reads "
                              f"version {VERSION}")
    return ck


def differences(a: Any, b: Any, path: tuple = ()) -> list[tuple[str, Any, Any]]:
    """Paths where two resolved specs differ, as ``(path, value in a, value in b)``, deepest first.

    Mappings are compared key by key and lists item by item (an item only one side has is
    reported at its index as ``<absent>`` on the other side), so each entry names the
    innermost key whose values differ, never a whole layer list that merely starts alike.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a:
                out.append((format_path(path + (k,)), "<absent>", b[k]))
            elif k not in b:
                out.append((format_path(path + (k,)), a[k], "<absent>"))
            else:
                out += differences(a[k], b[k], path + (k,))
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += differences(x, y, path + (i,))
        for i in range(min(len(a), len(b)), max(len(a), len(b))):
            out.append((format_path(path + (i,)), a[i] if i < len(a) else "<absent>",
                        b[i] if i < len(b) else "<absent>"))
        return out
    if canonical(a) != canonical(b):
        return [(format_path(path) or "<spec>", a, b)]
    return []


def _text(v: Any) -> str:
    return v if isinstance(v, str) else canonical(v)


def _shown_pair(x: Any, y: Any, width: int = 60) -> tuple[str, str]:
    """Both values as text, cut to ``width`` around where they first differ (never at a shared prefix only)."""
    a, b = _text(x), _text(y)
    if len(a) <= width and len(b) <= width:
        return a, b
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    start = max(0, k - width // 3)

    def cut(t: str) -> str:
        part = t[start:start + width]
        return ("..." if start > 0 else "") + part + ("..." if start + width < len(t) else "")

    return cut(a), cut(b)


def check_compatible(ck: dict, resolved: dict, path: str, *, model_only: bool, spec_file: str = "the spec") -> None:
    """Refuse a checkpoint written for another spec, naming the first differences."""
    theirs = ck.get("spec") or {}
    if model_only:
        same = ck.get("model_digest") == digest(model_part(resolved))
        a, b = model_part(theirs), model_part(resolved)
    else:
        same = ck.get("digest") == digest(resolved)
        a, b = theirs, resolved
    if same:
        return
    diffs = differences(a, b)
    if not diffs:
        diffs = [("<digest>", ck.get("digest"), digest(resolved))]
    pairs = [(p, *_shown_pair(x, y)) for p, x, y in diffs[:3]]
    shown = "; ".join(f"{p} is {x} in the checkpoint but {y} in {spec_file}" for p, x, y in pairs)
    more = f" (and {len(diffs) - 3} more difference{'s' if len(diffs) > 4 else ''})" if len(diffs) > 3 else ""
    raise CheckpointError(f"checkpoint `{path}` was written for a different spec: {shown}{more}; use the spec it "
                          f"was trained with (the run directory keeps it as spec.yaml) or start a new run")


__all__ = ["MODEL_KEYS", "check_compatible", "differences", "digest", "load", "model_part", "save"]
