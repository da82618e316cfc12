"""Check ``torch.compile`` of a compiled spec against eager execution.

:func:`check_compiled` runs a :class:`~graphdl.compile.GraphModel` compiled with
``torch.compile(model, dynamic=True)`` through the sequence that once broke it (issue item 8)
and beyond, comparing every call with the eager model:

1. warm-up, as the issue did it: eager ``model(b1)`` under ``no_grad`` (which fills ``b1``'s
   structure cache), then compiled ``cm(b1)`` and ``cm(b2)`` under ``no_grad``, then ``cm(b2)``
   in training with ``.backward()``, then training on a fresh ``b3``;
2. new sizes: batches ``b4``, ``b5`` of other graph counts and sizes, in evaluation and
   training, with cold and warm caches, interleaved, and ``b1`` again. Every graph Dynamo
   compiles here is a recompile caused by a new batch size; there should be none;
3. a batch ``b6`` of one graph, in evaluation and training. Dynamo specialises sizes 0 and 1,
   so this one may compile again (not counted as a new-size recompile); it is there because
   a single segment once broke Inductor's code for ``index_add_``.

Eager references run on copies of each batch with an empty structure cache, so the
compiled model meets exactly the cache states listed above. Training compares the outputs,
every parameter gradient of a fixed random linear loss, and the buffers after the step
(batch-norm statistics), with the same random seed in both runs; Inductor is told to draw
random numbers with eager's generator (``fallback_random``) so dropout masks agree.

Errors are scaled: ``max |compiled - eager| / max |eager|`` per output and buffer, and over
all parameter gradients at once (a gradient that is zero in exact arithmetic, like the bias of a
linear map followed by batch norm, carries round-off of its neighbours' size, not its own), so
one bound in units of the dtype's eps serves every spec. A gradient element of an ``nn.Linear``
is scaled by the larger of that common scale and its own summation magnitude ``Σ_i |δ_i||x_i|``
(the size of the terms its sum reorders; :func:`_err_grads`). A float32 call above the bound is
also run in float64 (:data:`FP64_FACTOR`).

The bound, ``TOL_EPS = 512`` eps (6.1e-5 in float32): compiled and eager evaluate the same
function, differing in (a) the order of sums: segment sums over the <= 10 neighbours of a node
(sorted segment reductions instead of MKL's sparse product or ``index_add_``), readouts and
batch-norm statistics over the <= 41 nodes of these batches, parameter gradients over all
<= ~130 edges; reordering a sum of ``n`` terms moves it by at most ``(n - 1) eps`` times the
sum of magnitudes, about ``n eps`` of the output scale when the terms do not cancel; (b)
Inductor's vectorised ``exp``/``tanh``/``sigmoid``, a few ulp from eager's; (c) those errors
carried through stacks of up to about five message-passing layers with gains of order one.
First order worst case ``5 x 130 = 650`` eps; random signs make it ``sqrt(n)`` per sum. A
wrong kernel (a dropped or duplicated term, a stale buffer) gives errors of order one, 10^6-10^7
eps. Measured on every spec: see the report of ``benchmarks/compile_specs.py``.

Used by ``tests/test_compile.py`` and ``benchmarks/compile_specs.py``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext as _nothing
from dataclasses import dataclass, field

import torch
from torch import Tensor

from graphdl.data.graph import Graph
from graphdl.testing.equivariance import random_graph_for

__all__ = ["FP64_FACTOR", "TOL_EPS", "CompileCheck", "check_compiled", "fill_zero_parameters", "spec_batches"]

TOL_EPS = 512
"""Bound on the scaled compiled-vs-eager error, in units of the dtype's eps (see the module docstring)."""

FP64_FACTOR = 2.0
"""A float32 call above ``TOL_EPS`` is still float32 round-off when the compiled result is no farther
from the float64 result ``t`` of the same call than ``FP64_FACTOR`` times eager float32's distance
from it. The reasoning: where the a-priori bound does not cover a model (gains far from one:
batch norm over features of small variance, sums with cancellation), eager float32's measured
distance from ``t`` is the round-off float32 makes on that input; compiled and eager are two
evaluations of the same sums in different orders, equally exposed to it, and ``|c − e| ≤ |c − t| +
|e − t|`` lets two such results differ by up to twice that. A wrong kernel is far from ``t`` in
any precision, so it fails this test as it fails the bound. (PyTorch's own accuracy check of
compiled models, ``torch._dynamo.utils.same(..., fp64_ref=...)``, compares against a float64
reference the same way.) Only float32 models are checked this way; each such call is listed in
:attr:`CompileCheck.fp64`."""

WARMUP_SIZES = ((4, 5, 7), (6, 3, 8, 5), (5, 9))
"""Graph sizes of the warm-up batches b1, b2, b3."""
NEW_SIZES = ((7, 4, 6, 3, 5), (10, 8))
"""Graph sizes of b4, b5: graph counts and node counts not seen in the warm-up."""
SINGLE_SIZES = ((6,),)
"""Graph sizes of b6: one graph."""


@dataclass
class CompileCheck:
    """Result of :func:`check_compiled` (errors scaled by the eager output's max magnitude)."""

    name: str
    compile_s: float = 0.0
    """Wall time of the compiled calls that compiled at least one graph (tracing + codegen)."""
    graphs: int = 0
    """Graphs Dynamo handed the backend during the warm-up (per grad mode: the frame before and the
    frame after the eager ``prepare``, one more per graph break, and Dynamo's restarts)."""
    graph_breaks: list[str] = field(default_factory=list)
    """Distinct graph-break reasons, first line each."""
    eval_err: float = 0.0
    """Worst scaled error of evaluation outputs."""
    train_err: float = 0.0
    """Worst scaled error of training outputs, parameter gradients and buffers."""
    new_size_graphs: int = 0
    """Graphs compiled for batches of new sizes after the warm-up (0: no recompiles)."""
    single_graph_graphs: int = 0
    """Graphs compiled for the one-graph batch (Dynamo specialises a size of 1)."""
    error: str | None = None
    """The first exception, one line (the check stops there)."""
    stage: str = ""
    """The call that raised ``error``."""

    fp64: list[tuple[str, float, float]] = field(default_factory=list)
    """For each float32 call whose error exceeded the bound: ``(stage, compiled error, eager
    error)``, both measured against the same call run in float64 (see :data:`FP64_FACTOR`)."""

    def fp64_ok(self) -> bool:
        """Every call above the bound is within float32's own round-off (:data:`FP64_FACTOR`)."""
        return all(c <= FP64_FACTOR * e for _, c, e in self.fp64)

    def passed(self, tol: float) -> bool:
        """No error, no new-size recompile, and every call within ``tol`` or, when above it,
        no farther from the float64 result than :data:`FP64_FACTOR` times eager float32 is."""
        above = {stage for stage, _, _ in self.fp64}
        within = (self.eval_err <= tol and self.train_err <= tol) or (bool(above) and self.fp64_ok())
        return self.error is None and self.new_size_graphs == 0 and within


def spec_batches(model, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                 sizes=WARMUP_SIZES + NEW_SIZES + SINGLE_SIZES, scale: float = 1.5) -> list[Graph]:
    """Random batches holding the model's input fields, one per entry of ``sizes``.

    Each graph is undirected and simple (both directions of every edge, no self-loops, as
    ``cycle_counts`` assumes), every node with about three neighbours; features are standard
    normal and positions ``scale · N(0, 1)``, so radius graphs of cutoffs around 1-5 have
    neighbours.
    """
    fields = dict(model.input_fields)
    out = []
    for i, s in enumerate(sizes):
        g = random_graph_for(fields, s, degree=3, scale=scale, dtype=dtype, seed=seed + i)
        ei = torch.unique(torch.cat([g.edge_index, g.edge_index.flip(0)], 1), dim=1)
        gen = torch.Generator().manual_seed(seed + 1000 + i)
        data = {k: (v if not k.startswith("edge.") else
                    torch.randn((ei.size(1),) + tuple(v.shape[1:]), generator=gen, dtype=torch.float64).to(dtype))
                for k, v in g.fields.items()}
        out.append(Graph(ei, g.num_nodes, data, batch=g.batch, num_graphs=g.num_graphs))
    return out


def fill_zero_parameters(model: torch.nn.Module, *, std: float = 0.1, seed: int = 0) -> list[str]:
    """Fill every parameter that is exactly zero everywhere with ``N(0, std²)`` values, in place.

    Zero-initialised output projections (IPA's ``linear_out``, the backbone update; AF2's
    identity start) make every gradient upstream of them exactly zero, so a compiled-vs-eager
    check of training would compare zeros with zeros there. Returns the names filled.
    """
    gen = torch.Generator().manual_seed(seed)
    names = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() and not p.is_complex() and not bool((p != 0).any()):
                p.copy_(std * torch.randn(p.shape, generator=gen, dtype=torch.float64))
                names.append(name)
    return names


def _uncached(g: Graph) -> Graph:
    return g.uncached()


def _scaled_err(a: Tensor, b: Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    if b.numel() == 0:
        return 0.0
    a, b = a.detach().double(), b.detach().double()
    diff = float((a - b).abs().max())
    scale = float(b.abs().max())
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


def _err_dicts(a: dict[str, Tensor], b: dict[str, Tensor], common_scale: bool = False) -> float:
    """Worst scaled error over the tensors of ``b``; each is scaled by its own max magnitude, or
    with ``common_scale`` by the largest of all (gradients: a parameter whose gradient is zero
    in exact arithmetic, like the bias of a linear map followed by batch norm, gets round-off
    of the size of its neighbours' gradients, not of its own)."""
    if set(a) != set(b):
        return float("inf")
    if not common_scale:
        return max((_scaled_err(a[k], b[k]) for k in b), default=0.0)
    scale = max((float(v.detach().abs().max()) for v in b.values() if v.numel()), default=0.0)
    diff = max((float((a[k].detach().double() - b[k].detach().double()).abs().max())
                for k in b if b[k].numel() and a[k].shape == b[k].shape), default=0.0)
    if any(a[k].shape != b[k].shape for k in b):
        return float("inf")
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


def _err_grads(a: dict[str, Tensor], b: dict[str, Tensor], magnitude: dict[str, Tensor]) -> float:
    """Worst gradient error, each element scaled by the larger of the common scale (the largest
    gradient, as :func:`_err_dicts` with ``common_scale``) and the element's summation magnitude
    ``magnitude[name]`` where it is known.

    A parameter gradient is a sum over nodes or edges (``∂L/∂W = Σ_i δ_i x_iᵀ``, ``∂L/∂b = Σ_i
    δ_i``); reordering a sum moves it by at most ``(n − 1)·eps·Σ_i |term_i|`` (Higham, *Accuracy and
    Stability of Numerical Algorithms*, 2nd ed., §4.2), which is far above ``eps`` times the result
    when the terms cancel: the bias of a linear map followed by batch norm has gradient 0 in
    exact arithmetic, and its computed value is round-off of ``Σ_i |δ_i|``. ``magnitude`` holds
    ``Σ_i |δ_i||x_i|ᵀ`` and ``Σ_i |δ_i|`` of every ``nn.Linear`` (:func:`_linear_magnitudes`)."""
    if set(a) != set(b) or any(a[k].shape != b[k].shape for k in b):
        return float("inf")
    scale = max((float(v.detach().abs().max()) for v in b.values() if v.numel()), default=0.0)
    worst = 0.0
    for k in b:
        if not b[k].numel():
            continue
        diff = (a[k].detach().double() - b[k].detach().double()).abs()
        if not bool((diff > 0).any()):
            continue
        denom = torch.full_like(diff, scale)
        if k in magnitude:
            denom = torch.maximum(denom, magnitude[k].double())
        worst = max(worst, float((diff / denom).max()) if bool((denom > 0).all()) else float("inf"))
    return worst


class _linear_magnitudes:
    """Context manager: while active, every ``nn.Linear`` of ``model`` accumulates the summation
    magnitudes of its parameter gradients, ``Σ_i |δ_i||x_i|ᵀ`` (weight) and ``Σ_i |δ_i|`` (bias),
    over the rows ``i`` of its inputs in every call (a forward hook keeps ``|x|`` and hooks the
    output tensor, whose gradient is ``δ``). :attr:`magnitude` maps parameter names to them (see
    :func:`_err_grads`)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.magnitude: dict[str, Tensor] = {}
        self.handles: list = []

    def _add(self, name: str, value: Tensor) -> None:
        self.magnitude[name] = self.magnitude[name] + value if name in self.magnitude else value

    def __enter__(self):
        for mname, mod in self.model.named_modules():
            if type(mod) is not torch.nn.Linear:
                continue
            prefix = f"{mname}." if mname else ""

            def fwd(m, args, out, prefix=prefix):
                if not out.requires_grad:
                    return
                x = args[0].detach().abs().reshape(-1, m.in_features).double()

                def on_grad(grad, m=m, x=x):
                    d = grad.detach().abs().reshape(-1, m.out_features).double()
                    self._add(prefix + "weight", d.t() @ x)
                    if m.bias is not None:
                        self._add(prefix + "bias", d.sum(0))

                out.register_hook(on_grad)

            self.handles.append(mod.register_forward_hook(fwd))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []


class _CountingBackend:
    """A Dynamo backend that counts the graphs it is given and hands them to ``inner``."""

    def __init__(self, inner: str):
        from torch._dynamo.backends.registry import lookup_backend

        self.inner = lookup_backend(inner)
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return self.inner(gm, example_inputs)


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:300] if msg else ''}"


def check_compiled(model, batches: list[Graph], *, name: str = "", backend: str = "inductor",
                   dynamic: bool | None = True, seed: int = 0, dynamo_config: dict | None = None,
                   tol_eps: float = TOL_EPS) -> CompileCheck:
    """Run ``torch.compile(model)`` against eager ``model`` as described in the module docstring.

    Args:
        model: a :class:`~graphdl.compile.GraphModel` (any dtype; its parameters are shared).
        batches: ``b1..b5`` and optionally ``b6`` (see :func:`spec_batches`); b4 and b5 must
            have sizes the first three do not, b6 holds one graph.
        backend: Dynamo backend (``"inductor"``, ``"aot_eager"``, ...).
        dynamic: passed to ``torch.compile``.
        dynamo_config: ``torch._dynamo.config`` values for the run (e.g.
            ``{"trace_autograd_ops": True}``, which ``forces: autograd`` models need to train).
        tol_eps: the bound above which a float32 call is also compared with its float64 run
            (:data:`FP64_FACTOR`); :meth:`CompileCheck.passed` takes the bound again.

    Returns:
        a :class:`CompileCheck`; an exception in any call is caught and recorded with its stage.
    """
    import torch._dynamo
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    b1, b2, b3, b4, b5 = batches[:5]
    b6 = batches[5] if len(batches) > 5 else None
    res = CompileCheck(name)
    torch._dynamo.reset()
    counters.clear()
    counter = _CountingBackend(backend)
    cm = torch.compile(model, backend=counter, dynamic=dynamic)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    buffers = [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    was_training = model.training
    phase = "warmup"

    def timed(fn):
        before = counter.graphs
        t = time.perf_counter()
        out = fn()
        if counter.graphs > before:
            if phase == "warmup":
                res.compile_s += time.perf_counter() - t
            elif phase == "new sizes":
                res.new_size_graphs += counter.graphs - before
            else:
                res.single_graph_graphs += counter.graphs - before
        return out

    limit = tol_eps * torch.finfo(torch.float32).eps
    fp32 = all(p.dtype == torch.float32 for _, p in params)

    def model64():
        import copy

        return copy.deepcopy(model).double()

    def evaluate(g: Graph, eager_first: bool = False) -> None:
        model.eval()
        with torch.no_grad():
            ref = model(g if eager_first else _uncached(g))
            got = timed(lambda: cm(g))
        err = _err_dicts(got, ref)
        res.eval_err = max(res.eval_err, err)
        if err > limit and fp32:
            with torch.no_grad():
                ref64 = model64().eval()(_uncached(g).to(dtype=torch.float64))
            res.fp64.append((res.stage, _err_dicts(got, ref64), _err_dicts(ref, ref64)))

    def train_step(m, g: Graph, weights: dict[str, Tensor], hooks=None):
        for _, p in params:
            p.grad = None
        torch.manual_seed(seed)
        with hooks or _nothing():
            out = m(g)
            loss = sum((out[k] * weights[k]).sum() for k in weights)
            loss.backward()
        grads = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in params}
        return {k: v.detach() for k, v in out.items()}, grads, {n: b.detach().clone() for n, b in buffers}

    def train(g: Graph) -> None:
        model.train()
        state = {n: b.detach().clone() for n, b in buffers}
        ref_out = model(_uncached(g))  # output shapes for the loss weights
        gen = torch.Generator().manual_seed(seed + 1)
        weights = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64).to(v.dtype)
                   for k, v in ref_out.items() if v.is_floating_point()}
        for n, b in buffers:
            b.data.copy_(state[n])
        hooks = _linear_magnitudes(model)
        ref = train_step(model, _uncached(g), weights, hooks)
        for n, b in buffers:
            b.data.copy_(state[n])
        got = timed(lambda: train_step(cm, g, weights))

        def distance(a, b, magnitude):
            return max(_err_dicts(a[0], b[0]), _err_grads(a[1], b[1], magnitude), _err_dicts(a[2], b[2]))

        err = distance(got, ref, hooks.magnitude)
        res.train_err = max(res.train_err, err)
        if err > limit and fp32:
            after = {n: b.detach().clone() for n, b in buffers}
            for n, b in buffers:
                b.data.copy_(state[n])
            m64 = model64().train()  # the parameters and the buffers before the step, in float64
            for n, b in buffers:
                b.data.copy_(after[n])
            hooks64 = _linear_magnitudes(m64)
            torch.manual_seed(seed)
            with hooks64:
                out64 = m64(_uncached(g).to(dtype=torch.float64))
                sum((out64[k] * weights[k].double()).sum() for k in weights).backward()
            ref64 = ({k: v.detach() for k, v in out64.items()},
                     {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in m64.named_parameters()
                      if p.requires_grad},
                     {n: b.detach() for n, b in m64.named_buffers() if b.is_floating_point()})
            res.fp64.append((res.stage, distance(got, ref64, hooks64.magnitude), distance(ref, ref64, hooks64.magnitude)))

    stages = [
        ("eval b1 (eager first)", lambda: evaluate(b1, eager_first=True)),
        ("eval b2", lambda: evaluate(b2)),
        ("train b2", lambda: train(b2)),
        ("train b3", lambda: train(b3)),
        ("new sizes", None),
        ("eval b4 (new size)", lambda: evaluate(b4)),
        ("train b4 (new size)", lambda: train(b4)),
        ("train b5 (new size)", lambda: train(b5)),
        ("eval b5 (new size)", lambda: evaluate(b5)),
        ("eval b1", lambda: evaluate(b1)),
    ]
    if b6 is not None:
        stages += [
            ("single graph", None),
            ("eval b6 (one graph)", lambda: evaluate(b6)),
            ("train b6 (one graph)", lambda: train(b6)),
        ]
    try:
        with inductor_config.patch(fallback_random=True), \
                torch._dynamo.config.patch(fail_on_recompile_limit_hit=True, **(dynamo_config or {})):
            for stage, fn in stages:
                if fn is None:
                    if phase == "warmup":
                        res.graphs = counter.graphs
                    phase = stage
                    continue
                res.stage = stage
                fn()
    except Exception as e:  # noqa: BLE001 - recorded in the result, the caller decides
        res.error = _one_line(e)
        if phase == "warmup":
            res.graphs = counter.graphs
    finally:
        model.train(was_training)
        for _, p in params:
            p.grad = None
    res.graph_breaks = sorted({str(r).strip().splitlines()[0][:200] for r in counters["graph_break"]})
    if res.error is None:
        res.stage = ""
    return res
