"""Equivariance checks driven by declared field types: rotations, reflections, translations, permutations.

For a model ``f`` and a group element ``g`` acting on every field by its declared type, the
error of output field ``k`` is ``max |f(g·x)_k − g·f(x)_k| / max(1, max |f(x)_k|)``:

* ``Scalar`` / ``0e``: invariant; ``0o``: sign flips under reflections;
* ``1o`` (a vector, stored ``(N, 3)`` as x, y, z): ``v ↦ R v``; positions also ``x ↦ R x + t``;
* other irreps: block-diagonal Wigner matrices ``D(R)`` (e3nn's real basis, l = 1 is x, y, z),
  computed in the working dtype so float64 checks reach ~1e-14 (e3nn's own
  ``D_from_matrix`` keeps float32 constants and stops near 1e-7);
* ``frame`` (rigid frames ``(N, 4, 3)``, :class:`~graphdl.types.Frame`): ``(R, t) ↦ (Q R, Q t + s)``
  under a proper rotation ``Q`` and translation ``s``; frames always translate. A reflection
  is *not a symmetry of frames* (it would make them left-handed): for a model with a frame
  input or output the reflection check is not applicable and reported as ``None``;
* a stacked field (``frame[8]``, one value per iteration, ``(N, T, ...)``): each slice as its type;
* node permutations within each graph: node fields are permuted, edge fields follow their
  edge, graph fields are unchanged.

Which vector fields are *positions* (they translate): the spec's ``graph.positions``, the
keys passed as ``positions``, and inputs whose name starts with ``pos``. A ``1o`` *output*
passes the translation check if it is either unchanged (a displacement or force) or moved by
``t`` (a position); the smaller of the two errors is reported.

Public helpers: :func:`equivariance_errors`, :func:`assert_equivariant`,
:func:`assert_permutation_equivariant`, :func:`random_graph_for`, :func:`irreps_matrix`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from graphdl.data.graph import Graph
from graphdl.types import (
    Categorical,
    FieldType,
    Frame,
    Irreps,
    Scalar,
    Stacked,
    Trajectory,
    parse_type,
    split_key,
)

CHECKS = ("rotation", "reflection", "translation", "permutation")


# ----------------------------------------------------------------------------- group
def random_rotation(dtype=torch.float64, generator: torch.Generator | None = None, improper: bool = False) -> Tensor:
    """A uniformly random rotation (``det = +1``), or ``−R`` (``det = −1``) when ``improper``."""
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=generator))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.det(q) < 0:
        q = -q
    return (-q if improper else q).to(dtype)


def _wigner(l: int, q: Tensor) -> Tensor:
    """``D_l(Q)`` for a proper rotation, solved from real spherical harmonics in Q's dtype."""
    from e3nn import o3

    if l == 0:
        return torch.ones(1, 1, dtype=q.dtype)
    if l == 1:
        return q
    g = torch.Generator().manual_seed(l)
    x = torch.randn(4 * (2 * l + 1), 3, dtype=torch.float64, generator=g).to(q.dtype)
    y = o3.spherical_harmonics(l, x, normalize=True)
    yr = o3.spherical_harmonics(l, x @ q.T, normalize=True)
    return torch.linalg.lstsq(y, yr).solution.T  # Y(Qx) = D Y(x)


def irreps_matrix(t: Irreps, rot: Tensor) -> Tensor:
    """Block-diagonal representation matrix of ``t`` for an orthogonal ``rot`` (det ±1)."""
    det = torch.det(rot)
    improper = bool(det < 0)
    q = -rot if improper else rot
    blocks = []
    for mul, l, p in t.terms:
        d = _wigner(l, q) * (p if improper else 1)
        blocks += [d] * mul
    return torch.block_diag(*blocks)


def _has_frames(t: FieldType) -> bool:
    return isinstance(t, Frame) or (isinstance(t, Stacked) and _has_frames(t.inner))


def _act(x: Tensor, t: FieldType, rot: Tensor, shift: Tensor | None, frame_shift: Tensor | None = None) -> Tensor:
    """``g · x`` for a field of type ``t``; ``shift`` translates positions, ``frame_shift`` frames."""
    if isinstance(t, (Scalar, Categorical, Trajectory)) or (isinstance(t, Irreps) and t.invariant):
        return x  # a Trajectory's coordinates are channels in the data's fixed frame (see graphdl.types)
    if isinstance(t, Stacked):
        rows, count = x.shape[:2]
        flat = x.reshape((rows * count,) + tuple(x.shape[2:]))
        return _act(flat, t.inner, rot, shift, frame_shift).reshape(x.shape)
    if isinstance(t, Frame):
        r = rot @ x[..., :3, :]
        tr = x[..., 3, :] @ rot.T
        if frame_shift is not None:
            tr = tr + frame_shift
        return torch.cat([r, tr.unsqueeze(-2)], -2)
    if isinstance(t, Irreps):
        y = x @ (rot.T if t.is_vector else irreps_matrix(t, rot).T.to(x.dtype))
        if shift is None:
            return y
        if all(l == 1 and p == -1 for _, l, p in t.terms):  # several points (`3x1o`: N, CA, C)
            return y + shift.repeat(t.dim // 3)
        return y + shift
    raise NotImplementedError(f"equivariance checks do not handle field type {t} yet")


# ------------------------------------------------------------------------ model glue
@dataclass
class _Target:
    inputs: dict[str, FieldType]
    outputs: dict[str, FieldType]
    call: Callable[[Graph], dict[str, Tensor]]
    positions: set[str]


def _target(model, positions) -> _Target:
    from graphdl.nn.base import Block

    pos = set(positions or ())
    if isinstance(model, Block):
        ins, outs = dict(model.sig.reads), dict(model.sig.writes)

        def call(g):
            return model(g, {k: g.fields[k] for k in ins})
    else:
        ins, outs = dict(model.input_fields), dict(model.output_fields)
        pos.add(model.spec.graph.positions)
        call = model
    pos |= {k for k in ins if split_key(k)[1].startswith("pos")}
    return _Target(ins, outs, call, {k for k in pos if k in ins})


def random_graph_for(fields: Mapping[str, FieldType], sizes=(4, 5, 7), *, degree: int = 3, scale: float = 1.0,
                     dtype=torch.float64, seed: int = 0) -> Graph:
    """A batch of random graphs holding every field of ``fields`` (key -> type, or a spec type like ``"1o"``).

    Each node gets ``degree`` random in-edges from its own graph (no self-loops). Positions
    (``1o``) are ``scale · N(0, 1)``.
    """
    g = torch.Generator().manual_seed(seed)
    sizes = list(sizes)
    n = sum(sizes)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    ptr = torch.tensor([0] + sizes).cumsum(0)
    dst = torch.arange(n).repeat_interleave(degree)
    size = torch.tensor(sizes)[batch[dst]]
    off = torch.randint(1, 1 << 30, (dst.numel(),), generator=g) % (size - 1).clamp_min(1) + 1
    src = ptr[batch[dst]] + (dst - ptr[batch[dst]] + off) % size
    keep = src != dst
    pairs = torch.unique(torch.stack([src[keep], dst[keep]]), dim=1)
    e = pairs.size(1)
    data = {}
    for k, t in fields.items():
        t = parse_type(t)
        space = split_key(k)[0]
        rows = {"node": n, "edge": e, "graph": len(sizes)}[space]
        if isinstance(t, Categorical):
            data[k] = torch.randint(0, t.num_classes, (rows,), generator=g)
            continue
        if _has_frames(t):
            data[k] = _random_frames((rows,) + t.shape()[:-2], g, scale).to(dtype)
            continue
        std = scale if isinstance(t, Irreps) and t.is_vector else 1.0
        data[k] = torch.randn((rows,) + t.shape(), generator=g, dtype=torch.float64).to(dtype) * std
    return Graph(pairs, n, data, batch=batch, num_graphs=len(sizes))


def _random_frames(lead: tuple, gen: torch.Generator, scale: float) -> Tensor:
    """Uniformly random proper rotations and ``scale · N(0, 1)`` translations, ``(*lead, 4, 3)``."""
    n = int(torch.tensor(lead).prod()) if lead else 1
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, dtype=torch.float64, generator=gen))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    q = q * torch.det(q).sign().view(-1, 1, 1)
    t = torch.randn(n, 1, 3, dtype=torch.float64, generator=gen) * scale
    return torch.cat([q, t], 1).reshape(tuple(lead) + (4, 3))


def _permute(g: Graph, perm: Tensor) -> tuple[Graph, Tensor]:
    """Relabel nodes (new node a = old node perm[a]); returns the graph and new-edge -> old-edge ids."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    fields = {k: (v[perm] if k.startswith("node.") else v) for k, v in g.fields.items()}
    fields["edge.__id"] = torch.arange(g.num_edges)
    out = Graph(inv[g.edge_index], g.num_nodes, fields, batch=g.batch, num_graphs=g.num_graphs, validate=False)
    ids = out.fields.pop("edge.__id")
    return out, ids


def _within_graph_perm(g: Graph, gen: torch.Generator) -> Tensor:
    key = g.batch.to(torch.float64) * 2 + torch.rand(g.num_nodes, generator=gen, dtype=torch.float64)
    return torch.argsort(key)


def _err(a: Tensor, b: Tensor) -> float:
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    return float((a - b).abs().max()) / scale if a.numel() else 0.0


def equivariance_errors(model, graph: Graph, *, checks=CHECKS, trials: int = 2, seed: int = 0,
                        positions=None, dtype: torch.dtype | None = torch.float64) -> dict[str, dict[str, float]]:
    """Worst scaled error per output field and check over ``trials`` random group elements.

    ``model``: a compiled :class:`~graphdl.compile.GraphModel` or a single block (its graph
    must already have edges). ``dtype``: cast model and graph first (None keeps them).
    Returns ``{output key: {check: error}}``; the error is ``None`` where the check does not
    apply (reflections of a model with frame inputs or outputs: not a symmetry of frames).
    """
    if dtype is not None:
        model = model.to(dtype)
        graph = graph.replace(**{k.replace(".", "__"): (v.to(dtype) if v.is_floating_point() else v)
                                 for k, v in graph.fields.items()})
    tgt = _target(model, positions)
    gen = torch.Generator().manual_seed(seed)
    model_training = getattr(model, "training", False)
    model.eval()
    errors: dict[str, dict[str, float | None]] = {k: {} for k in tgt.outputs}
    framed = any(_has_frames(t) for t in list(tgt.inputs.values()) + list(tgt.outputs.values()))
    try:
        with torch.no_grad():
            base = tgt.call(graph)
            for check in checks:
                if check == "reflection" and framed:
                    for k in tgt.outputs:
                        errors[k][check] = None
                    continue
                worst = {k: 0.0 for k in tgt.outputs}
                for _ in range(trials):
                    if check == "permutation":
                        perm = _within_graph_perm(graph, gen)
                        g2, ids = _permute(graph, perm)
                        out = tgt.call(g2)
                        for k in tgt.outputs:
                            space = split_key(k)[0]
                            ref = base[k][perm] if space == "node" else base[k][ids] if space == "edge" else base[k]
                            worst[k] = max(worst[k], _err(out[k], ref))
                        continue
                    dt = next(iter(graph.fields.values())).dtype
                    rot = random_rotation(dt, gen, improper=(check == "reflection"))
                    if check == "translation":
                        rot = torch.eye(3, dtype=dt)
                    shift = torch.randn(3, generator=gen, dtype=torch.float64).to(dt)
                    moved = {k: _act(v, tgt.inputs[k], rot, shift if k in tgt.positions else None, shift)
                             for k, v in graph.fields.items() if k in tgt.inputs}
                    out = tgt.call(graph.replace(**{k.replace(".", "__"): v for k, v in moved.items()}))
                    for k, t in tgt.outputs.items():
                        ref = _act(base[k], t, rot, None, shift)
                        e = _err(out[k], ref)
                        if isinstance(t, Irreps) and t.is_vector:
                            e = min(e, _err(out[k], ref + shift))
                        worst[k] = max(worst[k], e)
                for k in tgt.outputs:
                    errors[k][check] = worst[k]
    finally:
        model.train(model_training)
    return errors


def has_directions(fields: Mapping[str, FieldType]) -> bool:
    """Whether any field carries a direction (``1o``, irreps with ``l > 0`` or odd ``0o`` parts, a frame):
    if none does, rotations, reflections and translations act trivially on every input."""
    return any((isinstance(t, Irreps) and not t.invariant) or _has_frames(t)
               for t in (parse_type(v) for v in fields.values()))


def locate_break(model, graph: Graph, check: str, *, seed: int = 0, tol: float = 1e-9,
                 dtype: torch.dtype = torch.float64) -> tuple[str, str, float] | None:
    """The first step of a compiled model whose output breaks ``check``: ``(step, field, error)``.

    Runs the model on ``graph`` and on a randomly transformed copy, recording what every step
    writes (``model.trace``), and compares each written field with the transformed original by
    its declared type. Edge fields are compared only for rotations, reflections and translations
    (a permutation reorders a rebuilt graph's edges). ``None`` when every step is within ``tol``.
    """
    model = model.to(dtype)
    graph = graph.replace(**{k.replace(".", "__"): (v.to(dtype) if v.is_floating_point() else v)
                             for k, v in graph.fields.items()})
    tgt = _target(model, None)
    gen = torch.Generator().manual_seed(seed + 1)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.trace = []
            model(graph)
            base = model.trace
            if check == "permutation":
                perm = _within_graph_perm(graph, gen)
                g2, _ids = _permute(graph, perm)
                rot = shift = None
            else:
                rot = random_rotation(dtype, gen, improper=(check == "reflection"))
                if check == "translation":
                    rot = torch.eye(3, dtype=dtype)
                shift = torch.randn(3, generator=gen, dtype=torch.float64).to(dtype)
                moved = {k: _act(v, tgt.inputs[k], rot, shift if k in tgt.positions else None, shift)
                         for k, v in graph.fields.items() if k in tgt.inputs}
                g2 = graph.replace(**{k.replace(".", "__"): v for k, v in moved.items()})
            model.trace = []
            model(g2)
            moved_trace = model.trace
    finally:
        model.trace = None
        model.train(training)
    steps = model.plan.steps
    for (i, a), (_j, b) in zip(base, moved_trace):
        sig = steps[i].sig.writes
        for k, va in a.items():
            t = sig.get(k)
            space = split_key(k)[0]
            if t is None or k not in b or (check == "permutation" and space == "edge"):
                continue
            if check == "permutation":
                ref = va[perm] if space == "node" else va
            else:
                ref = _act(va, t, rot, None, shift)
            e = _err(b[k], ref)
            if isinstance(t, Irreps) and t.is_vector and check != "permutation":
                e = min(e, _err(b[k], ref + shift))
            if not e <= tol:
                return f"{steps[i].where} ({steps[i].label})", k, e
    return None


def assert_equivariant(model, graph: Graph, *, atol: float | None = None, checks=CHECKS, trials: int = 2,
                       seed: int = 0, positions=None, dtype: torch.dtype | None = torch.float64) -> dict:
    """Raise AssertionError naming the field and check when an error exceeds ``atol``.

    ``atol`` defaults to 1e-9 in float64 and 1e-4 in float32 (errors are scaled by the
    output's magnitude, see the module docstring). Returns the errors.
    """
    errs = equivariance_errors(model, graph, checks=checks, trials=trials, seed=seed, positions=positions,
                               dtype=dtype)
    # errors are relative: round-off is eps × depth (≈ 1e-14 in float64, ≈ 1e-6 in float32); the
    # defaults leave ~1e5 and ~1e2 above it, far below the O(1) of a broken symmetry
    if atol is None:
        atol = 1e-9 if dtype in (torch.float64, None) else 1e-4
    bad = [(k, c, e) for k, d in errs.items() for c, e in d.items() if e is not None and not e <= atol]
    if bad:
        k, c, e = max(bad, key=lambda x: x[2] if x[2] == x[2] else float("inf"))
        raise AssertionError(f"output `{k}` is not {c}-equivariant: error {e:.3g} > tolerance {atol:.1g} "
                             f"(all failures: " + ", ".join(f"{a}/{b}={x:.2g}" for a, b, x in bad) + ")")
    return errs


def assert_permutation_equivariant(model, graph: Graph, *, atol: float | None = None, trials: int = 2,
                                   seed: int = 0, dtype: torch.dtype | None = torch.float64) -> dict:
    """:func:`assert_equivariant` for node permutations only (any block, geometric or not)."""
    return assert_equivariant(model, graph, atol=atol, checks=("permutation",), trials=trials, seed=seed,
                              dtype=dtype)


__all__ = ["CHECKS", "assert_equivariant", "assert_permutation_equivariant", "equivariance_errors",
           "irreps_matrix", "random_graph_for", "random_rotation"]
