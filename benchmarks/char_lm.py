"""The character-level language-model spec beside the same model built from ``nn.TransformerEncoder``.

Both models are trained in this one process, step by step in alternation, on the same batches
in the same order, from the same initial weights, with the same optimiser, schedule and
gradient clipping (those of the spec's ``train:`` section, as ``graphdl run`` uses them):

* **graphdl**: ``specs/transformer/char_lm.yaml`` compiled (sequences as graphs on
  ``graph: {kind: causal, self_loops: true}``; tokens in ``node.tok``);
* **torch**: ``nn.Embedding`` + sinusoidal positions + ``nn.TransformerEncoder`` (``batch_first``,
  ``norm_first``, the square subsequent mask with ``is_causal=True``, ``src_key_padding_mask``
  for the short last window) + ``nn.LayerNorm`` + ``nn.Linear``, its weights copied from ours.

A float64 check first: both models give the same logits on a batch (max |diff| printed). Then
``epochs`` of training (default: the spec's); validation bits per character (mean
cross-entropy of the next character over the held-out 10%, / ln 2) after every epoch; training
throughput (tokens per second of forward + backward + optimiser step, each model timed on its
own steps, per second of wall time and per second of the process's CPU time: on a shared
machine the wall time also counts other jobs' turns). Run-to-run noise: ``--noise-seeds 1`` trains one more torch model from another
seed (initial weights and data order), so the gap between two seeds sits beside the gap
between the two implementations.

    python benchmarks/char_lm.py                    # the spec's 2 epochs, both models + 1 noise seed, 1 thread
    python benchmarks/char_lm.py --epochs 1 --max-steps 2 --max-val 4 --noise-seeds   # smoke

Budget: one torch thread; one model's 2 epochs (206 steps of 16 x 256 tokens, 0.84M tokens) cost
about 3.5 min of CPU time (209 s measured), three models about 11 min; on this project's shared
2-core machine (load ~10) the wall time is several times that (~17 min per model).
Results: ``benchmarks/results/transformer/README.md``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from graphdl.benchmarking import add_arguments, banner, resolve_device, write_json  # noqa: E402
from graphdl.compile.compiler import build  # noqa: E402
from graphdl.data.loader import GraphLoader  # noqa: E402
from graphdl.train.optim import make_optimizer, make_schedule  # noqa: E402
from graphdl.train.runner import prepare  # noqa: E402


class TorchLM(nn.Module):
    """Embedding + sinusoidal PE + ``nn.TransformerEncoder`` (causal) + LayerNorm + Linear."""

    def __init__(self, vocab: int, dim: int, heads: int, ff: int, layers: int, act: str, norm_first: bool,
                 eps: float, base: float, max_len: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, ff, dropout=0.0, activation=act, layer_norm_eps=eps,
                                           batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(base) / dim))
        pe = torch.zeros(max_len, dim, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, tok: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        length = tok.size(1)
        x = self.emb(tok) + self.pe[:length].to(self.emb.weight.dtype)
        mask = nn.Transformer.generate_square_subsequent_mask(length, dtype=x.dtype)
        kpm = None if pad is None else torch.zeros(pad.shape, dtype=x.dtype).masked_fill(pad, float("-inf"))
        h = self.encoder(x, mask=mask, is_causal=True, src_key_padding_mask=kpm)
        return self.head(self.norm(h))


def reference_for(model) -> TorchLM:
    """The torch model of the spec's architecture, with ``model``'s weights."""
    names = [s.cls.name for s in model.plan.steps]
    want = ["embedding", "sinusoidal_pe"]
    enc = [i for i, n in enumerate(names) if n == "transformer_encoder_layer"]
    if names[:2] != want or not enc or names[enc[-1] + 1:] != ["layer_norm", "linear"] or enc != list(
            range(2, 2 + len(enc))):
        raise SystemExit(f"char_lm.py compares specs shaped embedding, sinusoidal_pe, transformer_encoder_layer x L, "
                         f"layer_norm, linear; this one is {names}")
    steps = model.plan.steps
    p = steps[enc[0]].params
    emb = model.blocks[model._order[0]]
    ref = TorchLM(emb.table.num_embeddings, emb.table.embedding_dim, p.heads, p.ff_dim, len(enc), p.activation,
                  p.norm_first, p.eps, steps[1].params.base, 4096)
    ref.emb.load_state_dict(emb.table.state_dict())
    for j, i in enumerate(enc):
        ref.encoder.layers[j].load_state_dict(model.blocks[model._order[i]].state_dict())
    ref.norm.load_state_dict(model.blocks[model._order[enc[-1] + 1]].norm.state_dict())
    ref.head.load_state_dict(model.blocks[model._order[enc[-1] + 2]].lin.state_dict())
    return ref


def padded(g) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """A graph batch of sequences as torch's ``(B, L)`` tokens, padding mask (None if no padding), targets."""
    counts = (g.ptr[1:] - g.ptr[:-1]).tolist()
    b, m = len(counts), max(counts)
    pos = torch.arange(g.num_nodes) - g.ptr[g.batch]
    tok = torch.zeros(b, m, dtype=torch.long)
    tok[g.batch, pos] = g["node.tok"]
    y = torch.full((b, m), -100, dtype=torch.long)  # -100: cross_entropy's ignore_index
    y[g.batch, pos] = g["node.y"].reshape(-1).long()
    pad = None if min(counts) == m else (torch.arange(m).view(1, m) >= torch.tensor(counts).view(b, 1))
    return tok, pad, y


def ours_loss(model, g) -> torch.Tensor:
    return F.cross_entropy(model(g)["node.logits"], g["node.y"].reshape(-1).long())


def ref_loss(ref, tok, pad, y) -> torch.Tensor:
    logits = ref(tok, pad)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100)


class Trainer:
    """One model with its optimiser, schedule and clock."""

    def __init__(self, name, model, step_loss, tr, steps_per_epoch):
        self.name, self.model, self.step_loss, self.tr = name, model, step_loss, tr
        self.opt = make_optimizer(tr.optimizer, model.parameters())
        self.sched = make_schedule(tr.schedule, self.opt, epochs=tr.epochs, steps_per_epoch=steps_per_epoch,
                                   monitor_higher=False)
        self.seconds, self.cpu_seconds, self.tokens, self.history = 0.0, 0.0, 0, []

    def step(self, batch_args, tokens: int) -> float:
        self.model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = self.step_loss(self.model, *batch_args)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.tr.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.tr.grad_clip)
        self.opt.step()
        if self.sched.per_step:
            self.sched.scheduler.step()
        self.seconds += time.perf_counter() - t0
        self.cpu_seconds += time.process_time() - c0
        self.tokens += tokens
        return float(loss.detach())

    def end_epoch(self):
        if self.sched.scheduler is not None and not self.sched.per_step:
            self.sched.scheduler.step()


@torch.no_grad()
def val_bits(trainer, batches, ours: bool) -> float:
    trainer.model.eval()
    nats, count = 0.0, 0
    for g, (tok, pad, y) in batches:
        if ours:
            logits = trainer.model(g)["node.logits"]
            target = g["node.y"].reshape(-1).long()
        else:
            logits = trainer.model(tok, pad)
            logits, target = logits.reshape(-1, logits.size(-1)), y.reshape(-1)
        nats += float(F.cross_entropy(logits, target, ignore_index=-100, reduction="sum"))
        count += int((target != -100).sum())
    return nats / count / math.log(2)


def parity_check(model, ref, g) -> float:
    """Max |logit difference| of the two models in float64 (copies), eval mode."""
    m64, r64 = copy.deepcopy(model).double().eval(), copy.deepcopy(ref).double().eval()
    tok, pad, _ = padded(g)
    with torch.no_grad():
        a = m64(g)["node.logits"]
        b = r64(tok, pad)
    pos = torch.arange(g.num_nodes) - g.ptr[g.batch]
    return float((a - b[g.batch, pos]).abs().max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=os.path.join(ROOT, "specs", "transformer", "char_lm.yaml"))
    ap.add_argument("--epochs", type=int, default=None, help="override the spec's epochs")
    ap.add_argument("--max-steps", type=int, default=None, help="stop each epoch after this many steps (smoke)")
    ap.add_argument("--max-val", type=int, default=None, help="validate on the first N validation sequences (smoke)")
    ap.add_argument("--noise-seeds", type=int, nargs="*", default=[1],
                    help="extra torch runs from these seeds (weights and data order) to measure run-to-run noise")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=20, help="print the training losses every N steps (0: never)")
    add_arguments(ap)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    if device.type != "cpu":
        raise SystemExit(f"{os.path.basename(__file__)} measures the CPU (the issue's setting); run with --device cpu")
    torch.set_num_threads(args.threads)
    print(banner(device), flush=True)
    exp = prepare(args.spec, epochs=args.epochs)
    tr = exp.train
    ds = exp.data.load()
    split = ds.splits
    train_graphs = [ds.graphs[i] for i in split["train"]]
    loader = GraphLoader(train_graphs, tr.batch_size, shuffle=True, seed=tr.seed)
    val_graphs = [ds.graphs[i] for i in split["val"][:args.max_val]]
    val = [(g, padded(g)) for g in GraphLoader(val_graphs, tr.eval_batch_size or tr.batch_size, shuffle=False, seed=0)]
    torch.manual_seed(tr.seed)
    model = build(exp.plan)
    ref = reference_for(model)
    diff = parity_check(model, ref, next(iter(loader)))
    vocab = len(ds.meta["vocabulary"])
    print(f"char LM: {exp.name}, {len(train_graphs)} training sequences of <= {ds.graphs[0].num_nodes} characters "
          f"(vocabulary {vocab}), {len(split['val'])} validation sequences; {tr.epochs} epochs x {len(loader)} steps "
          f"of {tr.batch_size} sequences; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"float64 parity of the initial models (logits, eval): max |diff| {diff:.2e}")
    trainers = [(Trainer("graphdl", model, ours_loss, tr, len(loader)), loader, True),
                (Trainer("torch", ref, ref_loss, tr, len(loader)), loader, False)]
    for s in args.noise_seeds:
        torch.manual_seed(s)
        other = reference_for(build(exp.plan))
        trainers.append((Trainer(f"torch seed {s}", other, ref_loss, tr, len(loader)),
                         GraphLoader(train_graphs, tr.batch_size, shuffle=True, seed=s), False))
    for epoch in range(tr.epochs):
        iters = []
        for _, ld, _ in trainers:
            ld.set_epoch(epoch)
            iters.append(iter(ld))
        for step in range(len(loader)):
            if args.max_steps is not None and step >= args.max_steps:
                break
            losses = []
            for (t, _, ours), it in zip(trainers, iters):  # alternate: one step of each model
                g = next(it)
                losses.append(t.step((g,) if ours else padded(g), g.num_nodes))
            if args.log_every and (step + 1) % args.log_every == 0:
                print(f"  epoch {epoch + 1} step {step + 1}/{len(loader)}: train loss " + ", ".join(
                    f"{t.name} {x:.4f}" for (t, _, _), x in zip(trainers, losses)), flush=True)
        for t, _, ours in trainers:
            t.end_epoch()
            t.history.append(val_bits(t, val, ours))
        print(f"epoch {epoch + 1}: validation bits/char " + ", ".join(
            f"{t.name} {t.history[-1]:.4f}" for t, _, _ in trainers), flush=True)
    print()
    print(f"{'model':<14} | {'val bits/char':>13} | {'tokens/s (CPU)':>14} | {'tokens/s (wall)':>15} | CPU s | wall s")
    print("-" * 82)
    rows = {}
    for t, _, _ in trainers:
        tps = t.tokens / t.seconds if t.seconds else float("nan")
        cps = t.tokens / t.cpu_seconds if t.cpu_seconds else float("nan")
        rows[t.name] = {"val_bits_per_char": t.history, "tokens_per_second": tps, "tokens_per_cpu_second": cps,
                        "seconds": t.seconds, "cpu_seconds": t.cpu_seconds}
        print(f"{t.name:<14} | {t.history[-1]:>13.4f} | {cps:>14.0f} | {tps:>15.0f} | {t.cpu_seconds:5.0f} | "
              f"{t.seconds:.0f}")
    gap = abs(rows["graphdl"]["val_bits_per_char"][-1] - rows["torch"]["val_bits_per_char"][-1])
    noise = [abs(rows[f"torch seed {s}"]["val_bits_per_char"][-1] - rows["torch"]["val_bits_per_char"][-1])
             for s in args.noise_seeds]
    print(f"graphdl vs torch (same seed): {gap:.4f} bits/char; torch seed {tr.seed} vs other seeds: "
          + (", ".join(f"{x:.4f}" for x in noise) if noise else "not measured"))
    if args.json:
        write_json(args.json, {"spec": args.spec, "epochs": tr.epochs, "parity_float64": diff, "runs": rows,
                       "gap": gap, "noise": noise}, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
