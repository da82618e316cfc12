"""Reliable paired comparison (BREC; Wang & Zhang 2023, "Towards Better Evaluation of GNN
Expressiveness with BREC Dataset"): does a model separate two graphs 1-WL/3-WL tests judge?

Per pair (G1, G2), a fresh model f (the spec's, with a graph output of p dims) is trained
to push the embeddings of the two graphs apart under ``n`` random relabellings σ_i::

    loss = mean_i max(0, cos(f(σ_i G1), f(σ_i' G2)))          (cosine embedding loss, target −1)

then the paired differences d_i = f(σ_i G1) − f(σ_i' G2) (n × p) are tested with Hotelling's
T² for a non-zero mean::

    T² = n d̄ᵀ (S + εI)⁻¹ d̄,   separated  ⇔  T² > (n − 1) p / (n − p) · F_{p, n−p}(1 − α)

(n = 32, p = 16, α = 0.05: threshold 31 · F_{16,16}(0.95) = 72.34). Reliability check: the
same statistic between fresh relabellings of G1 and of G1 itself must stay below the
threshold (for G2 as well); a model whose output moves under relabelling is "unreliable".

All 2n relabelled graphs of a pair go through the model as one collated batch per epoch.

Round-off first, statistics second. Training runs in float32; the test embeddings are then
computed in **float64** (the trained model cast with ``.double()``), and before any T² test two
sets of embeddings whose largest difference is within the float64 round-off tolerance of
:func:`roundoff_tolerance` are declared *equal* (T² = 0, not separated; for the reliability
check, reliable). T² is scale-free, so without that step the differences of two graphs a
model maps to the same point *in exact arithmetic* (1-WL-equivalent graphs under a 1-WL-bounded
model) — summation-order round-off, systematic across relabellings — can pass any threshold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from graphdl.data.graph import Graph, collate
from graphdl.errors import DataError, SpecError
from graphdl.types import Scalar, split_key
from graphdl.wl.families import PairCase, load_pairs, pair_verdicts, permute_nodes

SEPARATED, NOT_SEPARATED, UNRELIABLE = "separated", "not_separated", "unreliable"
EPS_MATRIX = 1e-7
"""Default ridge of :func:`hotelling_t2` when called directly. :func:`check_pair` passes the
square of its round-off tolerance instead (a variance below round-off is not resolvable)."""

U64 = 2.0 ** -53
"""Unit round-off of float64."""
U32 = 2.0 ** -24
"""Unit round-off of float32."""
ROUNDOFF_SAFETY = 2.0 ** 8
"""Safety factor of :func:`roundoff_tolerance` over its round-off estimate (see there)."""


@dataclass(frozen=True)
class CheckConfig:
    """Settings of one paired comparison (the defaults follow BREC, epochs shortened)."""

    seed: int = 0
    epochs: int = 40
    lr: float = 1e-3
    relabelings: int = 32
    threshold: float | None = None  # None: from the F quantile for (relabelings, out dim)
    alpha: float = 0.05


def t2_threshold(n: int, p: int, alpha: float = 0.05) -> float:
    """``(n − 1) p / (n − p) · F_{p, n−p}(1 − α)``: Hotelling's T² critical value."""
    from scipy.stats import f as fdist

    if n <= p:
        raise DataError(f"Hotelling's T² needs more relabelings than output dims, found {n} <= {p}; "
                        f"raise --relabelings or lower the spec's output out_dim")
    return float((n - 1) * p / (n - p) * fdist.ppf(1 - alpha, p, n - p))


def hotelling_t2(a: torch.Tensor, b: torch.Tensor, eps: float = EPS_MATRIX) -> float:
    """T² = n d̄ᵀ (S + εI)⁻¹ d̄ of the paired differences ``d = a − b``. Shapes: ``(n, p)`` each.

    No round-off test here: call :func:`paired_t2` to decide "equal" first.
    """
    d = (a - b).double()
    n, p = d.shape
    mean = d.mean(0)
    S = torch.cov(d.T).reshape(p, p) + eps * torch.eye(p, dtype=d.dtype)
    return float(n * mean @ torch.linalg.solve(S, mean))


def roundoff_tolerance(z64: torch.Tensor, z32: torch.Tensor) -> float:
    """Largest difference of two float64 embeddings of one batch that is still round-off.

    ``z64``: the embeddings of a batch computed in float64; ``z32``: the same batch, same
    model, computed in float32. Shapes: ``(B, p)`` each. Returns an absolute tolerance in
    the units of the embeddings.

    Derivation. The forward pass is a fixed sequence of sums and products; its rounding error
    is, to first order, ``fl(z) − z = u · E`` with ``u`` the unit round-off and ``E`` set by
    the data, the weights and the order of the sums (Higham, *Accuracy and Stability of
    Numerical Algorithms*, 2nd ed., §2-3: the bound γ_m Σ|terms| of every sum is linear in
    u). Two graphs that the model maps to one point in exact arithmetic (isomorphic, or
    1-WL-equivalent under a 1-WL-bounded model) differ in float64 by at most about
    ``2 u64 |E|``. ``|E|`` is measured on the same batch: the float32 evaluation has error
    ``u32 E``, and the float64 one is 2^29 times closer to exact, so
    ``E32 = max |z32 − z64| ≈ u32 |E|``, which gives the estimate ``(u64 / u32) · E32``. A
    floor ``u64 · max|z64|`` (one unit in the last place of the embedding scale) covers a
    float32 pass that happened to be exact. The tolerance is ``ROUNDOFF_SAFETY = 2^8`` times
    the larger of the two; measured on the csl, srg, cfi, 3wl, regular, random, molecular and
    pair-file families with the GIN, GCN and GAT specs, the float64 differences of
    1-WL-equivalent pairs stayed within 1.2 × the estimate and 13 ulps of the scale (2^8
    leaves a margin of 20 or more), while pairs a model separates differ by 4e-3 of the scale
    or more (10^10 times the tolerance).
    """
    scale = float(z64.abs().max()) if z64.numel() else 0.0
    e32 = float((z32.double() - z64).abs().max()) if z64.numel() else 0.0
    return ROUNDOFF_SAFETY * max(U64 / U32 * e32, U64 * scale)


def paired_t2(a: torch.Tensor, b: torch.Tensor, tol: float) -> tuple[float, float]:
    """``(T², max |a − b|)`` with round-off decided first: ``T² = 0`` when ``max |a − b| <= tol``.

    Otherwise Hotelling's T² with ridge ``tol²`` (a variance below round-off is not
    resolvable). Shapes: ``(n, p)`` each; ``tol`` from :func:`roundoff_tolerance`.
    """
    diff = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if diff <= tol:  # False for NaN: that falls through to T² = NaN (unreliable)
        return 0.0, diff
    return hotelling_t2(a, b, eps=max(tol * tol, torch.finfo(torch.float64).tiny)), diff


# ---------------------------------------------------------------------------- model
def _prepare_spec(spec_path: Any, example: Graph):
    """Load the spec, fit its declared input widths to the pair graphs, compile it, and
    check that it outputs one scalar graph field. Returns ``(model_factory, out_key, p)``."""
    from graphdl.compile.compiler import build, plan_spec
    from graphdl.spec.loader import load_spec
    from graphdl.spec.model import parse_spec

    doc = load_spec(spec_path)
    inputs = doc.data.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise SpecError("`inputs:` must map field names to types", path="inputs")
    missing = [k for k in inputs if k not in example.fields]
    if missing:
        have = ", ".join(sorted(example.fields))
        raise DataError(f"the spec reads input {', '.join(f'`{k}`' for k in missing)} but the pair graphs have "
                        f"only {have}; declare `inputs: {{node.x: 1}}`")
    for k in list(inputs):
        v = example.fields[k]
        inputs[k] = int(v.shape[1]) if v.dim() == 2 else 1
    plan = plan_spec(parse_spec(doc))
    outs = dict(plan.outputs)
    if len(outs) != 1:
        raise SpecError(f"wl check needs a spec with one output (a graph embedding), found "
                        f"{', '.join(outs) or 'none'}; set `model.outputs: [graph.y]`", path="model.outputs")
    (key, t), = outs.items()
    if split_key(key)[0] != "graph" or not isinstance(t, Scalar):
        raise SpecError(f"wl check needs a scalar graph output (one embedding per graph), found `{key}: {t}`; "
                        f"end the model with a readout and an mlp writing `graph.y`", path="model.outputs")
    return (lambda: build(plan)), key, t.dim


def _relabel(g: Graph, n: int, rng: np.random.Generator) -> list[Graph]:
    return [permute_nodes(g, rng) for _ in range(n)]


def _float64(g: Graph) -> Graph:
    """The batch with every floating field in float64 (a new Graph: no cache is shared)."""
    fields = {k: (v.double() if v.is_floating_point() else v) for k, v in g.fields.items()}
    return Graph(g.edge_index, g.num_nodes, fields, batch=g.batch, num_graphs=g.num_graphs,
                 sort=False, validate=False)


@dataclass
class PairResult:
    name: str
    verdict: str
    t2: float
    t2_reliability: float
    final_loss: float
    meta: dict = field(default_factory=dict)
    max_diff: float = 0.0  # max |f(σ G1) − f(σ' G2)| over the test relabellings (float64)
    tolerance: float = 0.0  # round-off tolerance of this pair (roundoff_tolerance)


def check_pair(make_model: Callable, out_key: str, case: PairCase, cfg: CheckConfig, threshold: float,
               seed: int) -> PairResult:
    """Train a fresh model on one pair and test it (see the module docstring)."""
    n = cfg.relabelings
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = make_model()
    train = collate(_relabel(case.g1, n, rng) + _relabel(case.g2, n, rng))
    test = collate(_relabel(case.g1, n, rng) + _relabel(case.g2, n, rng)
                   + _relabel(case.g1, n, rng) + _relabel(case.g2, n, rng))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    target = -torch.ones(n)
    loss_fn = torch.nn.CosineEmbeddingLoss(margin=0.0)
    loss = torch.zeros(())
    model.train()
    for _ in range(cfg.epochs):
        opt.zero_grad(set_to_none=True)
        z = model(train)[out_key]
        loss = loss_fn(z[:n], z[n:], target)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        z32 = model(test)[out_key]
        model.double()  # the test statistic is computed on float64 embeddings
        try:
            z = model(_float64(test))[out_key]
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"wl check evaluates the trained model in float64, and the spec's model failed in "
                            f"float64 ({first}); make its blocks follow the model's dtype") from None
    if z.dtype != torch.float64:
        raise DataError(f"the spec's output `{out_key}` stays {z.dtype} after model.double(); wl check "
                        f"evaluates in float64: make its blocks follow the model's dtype")
    tol = roundoff_tolerance(z, z32)
    a1, a2, b1, b2 = z[:n], z[n:2 * n], z[2 * n:3 * n], z[3 * n:]
    t2, diff = paired_t2(a1, a2, tol)
    rel = max(paired_t2(a1, b1, tol)[0], paired_t2(a2, b2, tol)[0])
    if not (rel < threshold):  # NaN counts as unreliable
        verdict = UNRELIABLE
    elif t2 > threshold:
        verdict = SEPARATED
    else:
        verdict = NOT_SEPARATED
    return PairResult(case.meta.get("name", "?"), verdict, t2, rel, float(loss.detach()), _plain(case.meta),
                      max_diff=diff, tolerance=tol)


def _plain(meta: dict) -> dict:
    out = {}
    for k, v in meta.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v):
            out[k] = list(v)
        elif isinstance(v, dict):
            out[k] = _plain(v)
    return out


@dataclass
class CheckReport:
    """All pairs of one family under one spec, with the 1-WL and 3-WL verdicts beside."""

    spec: str
    family: str
    threshold: float
    config: dict
    pairs: list[PairResult]
    wl1: list[bool]
    wl3: list[bool]
    seconds: float

    def counts(self) -> dict[str, int]:
        v = [r.verdict for r in self.pairs]
        return {"pairs": len(v), "model": v.count(SEPARATED), "unreliable": v.count(UNRELIABLE),
                "wl1": sum(self.wl1), "wl3": sum(self.wl3)}

    def to_json(self) -> dict:
        return {"spec": self.spec, "family": self.family, "threshold": self.threshold, "config": self.config,
                "counts": self.counts(), "seconds": self.seconds,
                "pairs": [dict(asdict(r), wl1=w1, wl3=w3) for r, w1, w3 in zip(self.pairs, self.wl1, self.wl3)]}


def run_check(spec: Any, pairs: str | list[PairCase], cfg: CheckConfig = CheckConfig(), *,
              family_params: dict | None = None, progress: bool = False, limit: int | None = None,
              threads: int | None = 1) -> CheckReport:
    """Check every pair of a family (name, pair file or list of :class:`PairCase`) under ``spec``.

    ``threads``: torch intra-op threads while checking (restored after). A pair's batch is
    small (64 graphs), and one thread is several times faster than many on a busy CPU;
    ``None`` keeps torch's setting.
    """
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_check(spec, pairs, cfg, family_params, progress, limit)
    finally:
        torch.set_num_threads(old)


def _run_check(spec, pairs, cfg, family_params, progress, limit) -> CheckReport:
    t0 = time.perf_counter()
    family = pairs if isinstance(pairs, str) else "<pairs>"
    cases = load_pairs(pairs, **(family_params or {})) if isinstance(pairs, str) else list(pairs)
    if limit is not None:
        cases = cases[:limit]
    if not cases:
        raise DataError(f"no pairs to check in `{family}`")
    widths = {k: tuple(v.shape[1:]) for k, v in cases[0].g1.fields.items()}
    for c in cases:
        for g in (c.g1, c.g2):
            bad = [k for k, w in widths.items() if k not in g.fields or tuple(g.fields[k].shape[1:]) != w]
            if bad:
                raise DataError(f"pair `{c.meta.get('name', '?')}` has fields {bad[0]} of another width than the first "
                                f"pair's {widths[bad[0]]}; check families with different labels separately")
    make_model, out_key, p = _prepare_spec(spec, cases[0].g1)
    threshold = cfg.threshold if cfg.threshold is not None else t2_threshold(cfg.relabelings, p, cfg.alpha)
    if cfg.relabelings <= p:
        t2_threshold(cfg.relabelings, p)  # raises the clear error
    it = cases
    if progress:
        from tqdm import tqdm

        it = tqdm(cases, desc=f"{family}", unit="pair", leave=False)
    results = [check_pair(make_model, out_key, c, cfg, threshold, cfg.seed * 100003 + i) for i, c in enumerate(it)]
    wl1 = pair_verdicts(cases, "wl1")
    wl3 = pair_verdicts(cases, "wl3")
    conf = dict(asdict(cfg), out_dim=p)
    return CheckReport(str(spec), family, threshold, conf, results, wl1, wl3, time.perf_counter() - t0)


def format_table(reports: list[CheckReport]) -> str:
    """One row per (spec, family): pairs separated by the model, by 1-WL, by 3-WL."""
    head = ("spec", "family", "pairs", "model", "unreliable", "1-WL", "3-WL", "seconds")
    rows = [head]
    for r in reports:
        c = r.counts()
        rows.append((_short(r.spec), r.family, str(c["pairs"]), str(c["model"]), str(c["unreliable"]),
                     str(c["wl1"]), str(c["wl3"]), f"{r.seconds:.1f}"))
    w = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(x.ljust(w[i]) if i < 2 else x.rjust(w[i]) for i, x in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines + [LEGEND])


LEGEND = ("model: pairs the trained model separates (paired Hotelling T² above the threshold, after "
          "differences within float64 round-off count as equal); unreliable: pairs where the model's outputs "
          "for two relabellings of the same graph already differ (reliability T² above the threshold), so no "
          "verdict; 1-WL / 3-WL: pairs those tests tell apart")
"""Printed under the table: what its columns count."""


def _short(spec: str) -> str:
    import os

    return os.path.splitext(os.path.basename(spec))[0] if spec else "?"


def plot_counts(reports: list[CheckReport], path: str) -> None:
    """Grouped bars per family: pairs separated by each spec, 1-WL and 3-WL (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r.family for r in reports))
    specs = list(dict.fromkeys(_short(r.spec) for r in reports))
    series = {s: [0] * len(families) for s in specs + ["1-WL", "3-WL"]}
    totals = [0] * len(families)
    for r in reports:
        j = families.index(r.family)
        c = r.counts()
        series[_short(r.spec)][j] = c["model"]
        series["1-WL"][j], series["3-WL"][j], totals[j] = c["wl1"], c["wl3"], c["pairs"]
    fig, ax = plt.subplots(figsize=(min(16, max(5, 0.18 * len(families) * len(series) + 2)), 4))
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(families))], vals, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(families))])
    ax.set_xticklabels([f"{f} ({t})" for f, t in zip(families, totals)], rotation=20, ha="right")
    ax.set_ylabel("pairs separated")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "NOT_SEPARATED",
    "SEPARATED",
    "UNRELIABLE",
    "CheckConfig",
    "CheckReport",
    "PairResult",
    "check_pair",
    "format_table",
    "hotelling_t2",
    "paired_t2",
    "plot_counts",
    "roundoff_tolerance",
    "run_check",
    "t2_threshold",
]
