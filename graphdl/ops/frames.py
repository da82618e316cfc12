"""Rigid frames (AlphaFold2's backbone frames): storage, composition, construction, FAPE and structure metrics.

A frame ``T = (R, t)`` maps local coordinates to global ones, ``x ↦ R x + t`` (column
vectors; the columns of ``R`` are the local axes in global coordinates). graphdl stores a
frame per node as one ``(N, 4, 3)`` tensor (:class:`graphdl.types.Frame`): rows 0..2 hold
``R`` and row 3 holds ``t``. Extra dims between the node axis and the ``(4, 3)`` block
(``(N, T, 4, 3)``: one frame per iteration of a structure module) broadcast everywhere here.

Functions (all on plain tensors, no host sync unless stated):

* :func:`frame_parts` / :func:`make_frame` / :func:`identity_frames`;
* :func:`apply_frame` (``R x + t``), :func:`invert_apply` (``Rᵀ (x − t)``), :func:`compose`,
  :func:`invert`;
* :func:`quaternion_to_rotation` (``(w, x, y, z)``, normalised first);
* :func:`frames_from_backbone`: AF2 supplement Algorithm 21 (Gram–Schmidt on N, CA, C);
* :func:`perturb_frames`: Gaussian translation noise and ``R ← R R(q)``, ``q = normalise(1, ω/2)``;
* :func:`fape`: frame aligned point error, AF2 supplement Algorithm 28;
* :func:`kabsch_rmsd` and :func:`lddt_ca`: evaluation metrics per chain (these read the
  largest chain size once, a host sync; they are not meant for a training step).

Source: Jumper et al. 2021, "Highly accurate protein structure prediction with AlphaFold",
supplementary information, Algorithms 21, 23 and 28 (https://doi.org/10.1038/s41586-021-03819-2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from graphdl.ops.geometry import safe_norm

FAPE_EPS = 1e-4
"""ε of FAPE's smooth distance ``sqrt(d² + ε)`` (Å², AF2 Algorithm 28)."""


# ---------------------------------------------------------------------------- storage
def frame_parts(f: Tensor) -> tuple[Tensor, Tensor]:
    """``(..., 4, 3)`` frames → rotations ``(..., 3, 3)`` and translations ``(..., 3)`` (views)."""
    return f[..., :3, :], f[..., 3, :]


def make_frame(rot: Tensor, trans: Tensor) -> Tensor:
    """Rotations ``(..., 3, 3)`` and translations ``(..., 3)`` → frames ``(..., 4, 3)``."""
    return torch.cat([rot, trans.unsqueeze(-2)], -2)


def identity_frames(n: int, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """``n`` identity frames ``(n, 4, 3)`` (``R = I``, ``t = 0``): AF2's "black hole" initialisation."""
    f = torch.zeros(n, 4, 3, dtype=dtype, device=device)
    f[:, :3, :] = torch.eye(3, dtype=dtype, device=device)
    return f


def _expand(rot: Tensor, x: Tensor) -> tuple[Tensor, int]:
    """Insert singleton dims into ``rot`` so it broadcasts over the point dims of ``x``."""
    extra = x.dim() - (rot.dim() - 1)
    if extra < 0:
        raise ValueError(f"points of shape {tuple(x.shape)} have fewer dims than frames {tuple(rot.shape[:-2])}")
    return rot.reshape(rot.shape[:-2] + (1,) * extra + (3, 3)), extra


def apply_frame(f: Tensor, x: Tensor) -> Tensor:
    """``R x + t``: local points to global ones.

    Shapes: ``f (*F, 4, 3)``, ``x (*F, *P, 3)`` → ``(*F, *P, 3)`` (``*P`` may be empty).
    """
    rot, trans = frame_parts(f)
    r, extra = _expand(rot, x)
    t = trans.reshape(trans.shape[:-1] + (1,) * extra + (3,))
    return (r @ x.unsqueeze(-1)).squeeze(-1) + t


def invert_apply(f: Tensor, x: Tensor) -> Tensor:
    """``Rᵀ (x − t)``: global points to local ones. Shapes as :func:`apply_frame`."""
    rot, trans = frame_parts(f)
    r, extra = _expand(rot, x)
    t = trans.reshape(trans.shape[:-1] + (1,) * extra + (3,))
    return (r.transpose(-1, -2) @ (x - t).unsqueeze(-1)).squeeze(-1)


def compose(a: Tensor, b: Tensor) -> Tensor:
    """``a ∘ b``: first ``b``, then ``a``: ``(R_a R_b, R_a t_b + t_a)``. Shapes ``(..., 4, 3)``."""
    ra, ta = frame_parts(a)
    rb, tb = frame_parts(b)
    return make_frame(ra @ rb, (ra @ tb.unsqueeze(-1)).squeeze(-1) + ta)


def invert(f: Tensor) -> Tensor:
    """``T⁻¹ = (Rᵀ, −Rᵀ t)``. Shapes ``(..., 4, 3)``."""
    rot, trans = frame_parts(f)
    rt = rot.transpose(-1, -2)
    return make_frame(rt, -(rt @ trans.unsqueeze(-1)).squeeze(-1))


def quaternion_to_rotation(q: Tensor) -> Tensor:
    """Rotation matrices of quaternions ``(w, x, y, z)``, normalised here (``q`` need not be unit).

    ``R(q)`` rotates column vectors (``R(q) v = q v q*``). Shapes: ``(..., 4)`` → ``(..., 3, 3)``.
    """
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, -1).reshape(q.shape[:-1] + (3, 3))


# ------------------------------------------------------------------------ construction
def frames_from_backbone(n: Tensor, ca: Tensor, c: Tensor, eps: float = 1e-8) -> Tensor:
    """Backbone frames from N, CA, C coordinates (AF2 supplement Algorithm 21, Gram–Schmidt).

    ``v1 = C − CA``, ``v2 = N − CA``, ``e1 = v1/‖v1‖``, ``u2 = v2 − e1 (e1·v2)``,
    ``e2 = u2/‖u2‖``, ``e3 = e1 × e2``, ``R = [e1 e2 e3]`` (columns), ``t = CA``: the local x
    axis points from CA to C, N lies in the local xy plane on the +y side, origin at CA.
    Norms are the smooth ``sqrt(‖v‖² + ε²)`` (:func:`~graphdl.ops.geometry.safe_norm`), so
    degenerate input (coincident atoms) gives finite values and gradients, not NaN; data
    loaders refuse such residues before they reach a model.

    Shapes: ``n, ca, c (..., 3)`` → frames ``(..., 4, 3)``.
    """
    v1 = c - ca
    v2 = n - ca
    e1 = v1 / safe_norm(v1, keepdim=True, eps=eps)
    u2 = v2 - e1 * (e1 * v2).sum(-1, keepdim=True)
    e2 = u2 / safe_norm(u2, keepdim=True, eps=eps)
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    rot = torch.stack([e1, e2, e3], -1)
    return make_frame(rot, ca)


def random_rotations(n: int, sigma: float, *, dtype=torch.float64, generator: torch.Generator | None = None,
                     device=None) -> Tensor:
    """``R(q)`` with ``q = normalise(1, ω/2)``, ``ω ~ N(0, σ² I₃)`` (radians): small random rotations.

    For small ``σ`` the rotation angle is about ``‖ω‖``. Shapes: → ``(n, 3, 3)``.
    """
    w = torch.randn(n, 3, dtype=torch.float64, generator=generator).to(device=device) * sigma
    q = torch.cat([torch.ones(n, 1, dtype=w.dtype, device=w.device), w / 2], -1)
    return quaternion_to_rotation(q).to(dtype)


def perturb_frames(f: Tensor, sigma_trans: float, sigma_rot: float, *,
                   generator: torch.Generator | None = None) -> Tensor:
    """Noisy frames: ``t + σ_t ε`` (``ε ~ N(0, I₃)`` per residue) and ``R R(q)`` (:func:`random_rotations`).

    The rotation noise is composed on the right (in the local frame); its distribution is
    invariant under conjugation, so this equals composing on the left in distribution.
    Noise is drawn in float64 on the CPU from ``generator`` (reproducible on any device).
    Shapes: ``(N, 4, 3)`` → ``(N, 4, 3)``.
    """
    rot, trans = frame_parts(f)
    n = f.shape[0]
    eps = torch.randn(n, 3, dtype=torch.float64, generator=generator).to(device=f.device, dtype=f.dtype)
    noise = random_rotations(n, sigma_rot, dtype=f.dtype, generator=generator, device=f.device)
    return make_frame(rot @ noise, trans + sigma_trans * eps)


# ------------------------------------------------------------------------------ padding
def padded_index(batch: Tensor, ptr: Tensor, m: int) -> Tensor:
    """Flat index ``b * m + (i − ptr[b])`` of node ``i`` (graph ``b``) in a ``(B, m)`` layout."""
    return batch * m + (torch.arange(batch.numel(), device=batch.device) - ptr.index_select(0, batch))


def _pad(x: Tensor, idx: Tensor, b: int, m: int) -> Tensor:
    out = x.new_zeros((b * m,) + tuple(x.shape[1:])).index_copy(0, idx, x)
    return out.view((b, m) + tuple(x.shape[1:]))


def _layout(batch: Tensor, num_graphs: int, max_nodes: int | None):
    counts = torch.bincount(batch, minlength=num_graphs)
    ptr = torch.zeros(num_graphs + 1, dtype=torch.long, device=batch.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    m = int(max_nodes) if max_nodes is not None else max(int(counts.max()) if counts.numel() else 1, 1)
    idx = padded_index(batch, ptr, m)
    valid = torch.arange(m, device=batch.device).view(1, m) < counts.view(-1, 1)
    return idx, counts, m, valid


# -------------------------------------------------------------------------------- FAPE
def fape(pred: Tensor, true: Tensor, batch: Tensor, num_graphs: int, *, pred_points: Tensor | None = None,
         true_points: Tensor | None = None, clamp: float | None = 10.0, scale: float = 10.0,
         eps: float = FAPE_EPS, max_nodes: int | None = None, per_graph: bool = False) -> Tensor:
    """Frame aligned point error (AF2 supplement Algorithm 28), averaged over chains and iterations.

    For every frame ``i`` and point ``j`` of the same chain,
    ``d_ij = sqrt(‖T_i⁻¹ x_j − T_i^true⁻¹ x_j^true‖² + ε)``, clamped at ``clamp`` Å (None: no
    clamp) and divided by ``scale`` Å; the loss is the mean of ``d_ij`` over the pairs of each
    chain, then over chains (each chain weighs the same), then over iterations.

    Args:
        pred: predicted frames ``(N, 4, 3)`` or one per iteration ``(N, T, 4, 3)``.
        true: true frames ``(N, 4, 3)``.
        batch: ``(N,)`` chain of each residue (sorted; residues of a chain contiguous).
        num_graphs: number of chains ``B``.
        pred_points / true_points: points ``(N, P, 3)`` (``(N, T, P, 3)`` for per-iteration
            predictions); default the frames' translations (backbone FAPE on CA atoms).
        clamp, scale, eps: AF2's 10 Å, 10 Å and 1e-4 Å².
        max_nodes: largest chain size if known (else read once from ``batch``, a host sync).
        per_graph: return ``(B,)`` (mean over iterations) instead of the overall mean.

    Returns:
        A scalar (dimensionless: Å / ``scale``), or ``(B,)`` with ``per_graph``.
    """
    if pred.dim() == 3:
        pred = pred.unsqueeze(1)
        if pred_points is not None:
            pred_points = pred_points.unsqueeze(1)
    if pred_points is None:
        pred_points = pred[..., 3, :].unsqueeze(-2)  # (N, T, 1, 3)
    if true_points is None:
        true_points = true[..., 3, :].unsqueeze(-2)  # (N, 1, 3)
    idx, counts, m, valid = _layout(batch, num_graphs, max_nodes)
    b = num_graphs
    pf = _pad(pred, idx, b, m)            # (B, M, T, 4, 3)
    tf = _pad(true, idx, b, m)            # (B, M, 4, 3)
    pp = _pad(pred_points, idx, b, m)     # (B, M, T, P, 3)
    tp = _pad(true_points, idx, b, m)     # (B, M, P, 3)
    pr, pt = frame_parts(pf)              # (B, M, T, 3, 3), (B, M, T, 3)
    tr, tt = frame_parts(tf)
    # local coordinates of point (j, p) in frame i: R_iᵀ (x_jp − t_i) = R_iᵀ x_jp − R_iᵀ t_i
    pl = torch.einsum("bitac,bjtpa->btijpc", pr, pp) - torch.einsum("bitac,bita->btic", pr, pt)[:, :, :, None, None]
    tl = torch.einsum("biac,bjpa->bijpc", tr, tp) - torch.einsum("biac,bia->bic", tr, tt)[:, :, None, None]
    d = torch.sqrt(((pl - tl.unsqueeze(1)) ** 2).sum(-1) + eps)  # (B, T, M, M, P)
    if clamp is not None:
        d = d.clamp(max=clamp)
    pair = (valid.view(b, 1, m, 1, 1) & valid.view(b, 1, 1, m, 1)).to(d.dtype)
    npts = pp.shape[-2]
    per = (d * pair).sum((2, 3, 4)) / (counts.to(d.dtype) ** 2 * npts).clamp_min(1).view(b, 1)  # (B, T)
    per = per.mean(1) / scale
    return per if per_graph else per.mean()


# ----------------------------------------------------------------------------- metrics
def kabsch_rmsd(pred: Tensor, true: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """RMSD per chain after optimal superposition of ``pred`` onto ``true`` (Kabsch 1976).

    A proper rotation only (the SVD's reflection is undone). Shapes: ``pred, true (N, 3)``
    (e.g. CA positions) → ``(B,)`` in the units of the coordinates.
    """
    idx, counts, m, valid = _layout(batch, num_graphs, None)
    b = num_graphs
    w = valid.to(pred.dtype).unsqueeze(-1)
    p, q = _pad(pred, idx, b, m), _pad(true, idx, b, m)
    cnt = counts.to(pred.dtype).clamp_min(1).view(b, 1, 1)
    p = (p - (p * w).sum(1, keepdim=True) / cnt) * w
    q = (q - (q * w).sum(1, keepdim=True) / cnt) * w
    h = p.transpose(1, 2) @ q  # (B, 3, 3) = Σ p qᵀ
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    corr = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rot = vt.transpose(1, 2) @ corr @ u.transpose(1, 2)  # maps p onto q: q ≈ R p
    diff = (p @ rot.transpose(1, 2) - q) * w
    return torch.sqrt((diff ** 2).sum((1, 2)) / cnt.view(b))


def lddt_ca(pred: Tensor, true: Tensor, batch: Tensor, num_graphs: int, *, cutoff: float = 15.0,
            thresholds: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)) -> Tensor:
    """Global lDDT-Cα per chain (Mariani et al. 2013; AF2's ``lddt`` with ``per_residue=False``).

    Pairs ``i ≠ j`` of a chain whose *true* distance is below ``cutoff`` (15 Å) are scored by
    the fraction of ``thresholds`` (0.5, 1, 2, 4 Å) that ``|d_pred − d_true|`` stays under; the
    chain's score is the mean over its scored pairs. Superposition-free.

    Shapes: ``pred, true (N, 3)`` CA positions → ``(B,)`` in [0, 1].
    """
    idx, counts, m, valid = _layout(batch, num_graphs, None)
    b = num_graphs
    p, q = _pad(pred, idx, b, m), _pad(true, idx, b, m)
    dp = torch.cdist(p, p)
    dt = torch.cdist(q, q)
    eye = torch.eye(m, dtype=torch.bool, device=pred.device)
    mask = valid.unsqueeze(1) & valid.unsqueeze(2) & ~eye & (dt < cutoff)
    err = (dp - dt).abs()
    score = sum((err < t).to(pred.dtype) for t in thresholds) / len(thresholds)
    maskf = mask.to(pred.dtype)
    return (score * maskf).sum((1, 2)) / maskf.sum((1, 2)).clamp_min(1)


__all__ = ["FAPE_EPS", "apply_frame", "compose", "fape", "frame_parts", "frames_from_backbone",
           "identity_frames", "invert", "invert_apply", "kabsch_rmsd", "lddt_ca", "make_frame",
           "padded_index", "perturb_frames", "quaternion_to_rotation", "random_rotations"]
