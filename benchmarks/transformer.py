"""Speed of the transformer spec: our encoder stack vs ``nn.TransformerEncoder``, and dense vs sparse.

1. **Training step** (forward + backward): a compiled spec of ``layers`` ×
   ``transformer_encoder_layer`` (``graph: {kind: complete, self_loops: true}``, dense SDPA
   lowering) against ``nn.TransformerEncoder`` of the same layers (``batch_first``), same
   weights, on ``batch`` sequences of ``tokens`` tokens, ``dim`` channels. Our time includes
   making the message-passing graph of each new batch (``GraphModel.prepare``), which a
   training loop pays once per batch; the batches differ in object, not in data.
2. **Inference** (``torch.no_grad``, eval): the same pair, where torch takes its fast path
   (``torch._transformer_encoder_layer_fwd``, one fused kernel per layer) when it applies.
3. **Dense vs sparse lowering**: the attention itself (:func:`graphdl.nn.attention.dense_attention`
   vs :func:`~graphdl.nn.attention.sparse_attention`, forward + backward on the same q, k, v, the
   graph and its CSR built once), and the whole training step of the spec compiled with
   ``lowering: sparse`` (per-edge logits over the ``batch · tokens²`` edges, segment softmax, CSR
   product; its CSR is built per batch) against the dense default. On a complete graph both
   lowerings do the same attention FLOPs, and the attention is a fraction of a layer's FLOPs
   (the linear maps are ``12 d²`` per token, attention ``2 tokens · d``), so the step ratio is
   bounded well below the kernel ratio.

Each timing is the median of ``--iters`` runs after one warm-up, the two sides of a comparison
alternating (so a shared machine's load hits both alike), in one process, CPU
(``--threads`` torch threads, default 1: on a shared CPU, OpenMP barriers of 2+ threads wait on
other jobs). Timed assertions do not belong in tests; this
script prints ratios. Goals (issue 11): our stack within 10% of PyTorch's encoder; dense at
least 5x faster than sparse at 256 tokens.

    python benchmarks/transformer.py                       # 32 x 256 tokens, d 256, 4 layers, 4 heads
    python benchmarks/transformer.py --batch 2 --tokens 16 --dim 32 --layers 1 --iters 1   # smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from graphdl.benchmarking import add_arguments, banner, resolve_device, write_json  # noqa: E402
from graphdl.compile import compile_spec  # noqa: E402
from graphdl.data.graph import Graph, collate  # noqa: E402
from graphdl.nn.attention import dense_attention, sparse_attention  # noqa: E402


def spec(dim: int, heads: int, ff: int, layers: int, lowering: str = "auto") -> dict:
    return {"graphdl": 1, "name": f"encoder-{lowering}", "inputs": {"node.h": dim},
            "graph": {"kind": "complete", "self_loops": True},
            "model": {"layers": [{"type": "transformer_encoder_layer", "repeat": layers, "heads": heads, "ff_dim": ff,
                                  "dropout": 0.0, "lowering": lowering}]}}


def torch_encoder(dim: int, heads: int, ff: int, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(dim, heads, ff, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=True)


def copy_weights(ours, ref: nn.TransformerEncoder) -> None:
    sd = {}
    for i, layer in enumerate(ref.layers):
        sd.update({f"blocks.{i}.{k}": v for k, v in layer.state_dict().items()})
    ours.load_state_dict(sd)


def load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def paired_times(fa, fb, iters: int) -> tuple[dict, dict]:
    """Seconds of ``fa`` and ``fb`` (``{"min", "median"}``), run alternately so that a shared
    machine's load hits both alike; the minimum is the least disturbed run."""
    fa()  # warm-up (allocator, kernels)
    fb()
    ta, tb = [], []
    for _ in range(iters):
        for fn, times in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return ({"min": min(ta), "median": statistics.median(ta)}, {"min": min(tb), "median": statistics.median(tb)})


def show(what: str, a_name: str, a: dict, b_name: str, b: dict, tokens: int | None = None) -> str:
    ratio = f"ratio {a['min'] / b['min']:.3f} (min) {a['median'] / b['median']:.3f} (median)"
    rate = f"; {tokens / a['min']:,.0f} vs {tokens / b['min']:,.0f} tokens/s" if tokens else ""
    return (f"{what}: {a_name} {a['min'] * 1e3:.1f} / {a['median'] * 1e3:.1f} ms   {b_name} {b['min'] * 1e3:.1f} / "
            f"{b['median'] * 1e3:.1f} ms (min / median)   {ratio}{rate}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ff", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: a shared CPU makes OpenMP barriers slow)")
    ap.add_argument("--skip-sparse", action="store_true")
    ap.add_argument("--only", choices=["train", "inference", "attention", "step"], nargs="+", default=None,
                    help="run only these comparisons (default: all)")
    add_arguments(ap)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    if device.type != "cpu":
        raise SystemExit(f"{os.path.basename(__file__)} measures the CPU (the issue's setting); run with --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(banner(device), flush=True)
    torch.manual_seed(0)
    b, t, d = args.batch, args.tokens, args.dim
    ours = compile_spec(spec(d, args.heads, args.ff, args.layers))
    ref = torch_encoder(d, args.heads, args.ff, args.layers)
    copy_weights(ours, ref)
    x = torch.randn(b, t, d)
    grad = torch.randn(b, t, d)

    def batch() -> Graph:  # a new batch object (the graph is built per batch), same data
        return collate([Graph(None, t, {"node.h": x[i]}) for i in range(b)])

    def ours_step(model):
        def step():
            g = batch()
            g.fields["node.h"].requires_grad_(True)
            out = model(g)["node.h"]
            out.backward(grad.reshape(b * t, d))
            model.zero_grad(set_to_none=True)
        return step

    def ref_step():
        xi = x.clone().requires_grad_(True)
        ref(xi).backward(grad)
        ref.zero_grad(set_to_none=True)

    with torch.no_grad():
        g = batch()
        diff = (ours.eval()(g)["node.h"] - ref.eval()(x).reshape(b * t, d)).abs().max().item()
    ours.train()
    ref.train()
    print(f"transformer encoder speed: {args.layers} layers, d {d}, {args.heads} heads, ff {args.ff}, batch {b} x {t} "
          f"tokens; torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load_average()}")
    print(f"outputs agree with nn.TransformerEncoder (eval, float32): max |diff| {diff:.2e}")
    res: dict = {"config": vars(args), "max_abs_diff": diff}
    parts = set(args.only or ["train", "inference"] + ([] if args.skip_sparse else ["attention", "step"]))
    if "train" in parts:
        t_ours, t_ref = paired_times(ours_step(ours), ref_step, args.iters)
        res["train"] = {"graphdl_s": t_ours, "torch_s": t_ref}
        print(show("training step (fwd+bwd)", "graphdl", t_ours, "nn.TransformerEncoder", t_ref, b * t))
    ours.eval()
    ref.eval()

    def ours_infer():
        with torch.no_grad():
            ours(batch())

    def ref_infer():
        with torch.no_grad():
            ref(x)

    if "inference" in parts:
        i_ours, i_ref = paired_times(ours_infer, ref_infer, args.iters)
        res["inference"] = {"graphdl_s": i_ours, "torch_s": i_ref}
        print(show("inference (no_grad; torch's fast path)", "graphdl", i_ours, "nn.TransformerEncoder", i_ref,
                   b * t))
    if "attention" in parts:
        g = ours.prepare(batch())
        g.csr(), g.csr_t()
        shape = (b * t, args.heads, d // args.heads)
        q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
        go = torch.randn(shape)

        def dense_attn():
            dense_attention(g, q, k, v, kind="complete", self_loops=True).backward(go)

        def sparse_attn():
            sparse_attention(g, q, k, v).backward(go)

        a_dense, a_sparse = paired_times(dense_attn, sparse_attn, args.iters)
        res["attention"] = {"dense_s": a_dense, "sparse_s": a_sparse}
        print(show(f"attention at {t} tokens (fwd+bwd, {b * t * t:,} edges)", "dense SDPA", a_dense, "sparse",
                   a_sparse) + f"   dense is {a_sparse['min'] / a_dense['min']:.1f}x faster")
    if "step" in parts:
        sparse = compile_spec(spec(d, args.heads, args.ff, args.layers, lowering="sparse"))
        sparse.load_state_dict(ours.state_dict())
        ours.train()
        sparse.train()
        t_dense, t_sparse = paired_times(ours_step(ours), ours_step(sparse), args.iters)
        res["lowering"] = {"dense_s": t_dense, "sparse_s": t_sparse}
        print(show(f"whole training step at {t} tokens", "dense", t_dense, "sparse", t_sparse)
              + f"   dense is {t_sparse['min'] / t_dense['min']:.1f}x faster")
    write_json(args.json, res, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
