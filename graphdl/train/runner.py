"""``graphdl run``: train, select, evaluate and record one experiment from a spec.

What a run writes to its directory:

* ``spec.yaml`` — the resolved spec: every default spelled out, command-line overrides
  applied, the dataset inline with absolute paths; ``graphdl run DIR/spec.yaml`` repeats it.
* ``last.pt`` after every epoch and ``best.pt`` whenever the monitored validation metric
  improves (see :mod:`graphdl.train.checkpoint`).
* ``metrics.json`` — per-epoch records (train loss; validation loss and metrics; lr), the
  best epoch, and the final validation and test metrics of the best weights, with split
  sizes and seed. It holds no timings, so two runs with one seed give identical files.
* ``timing.json`` — seconds per epoch and in total.
* ``learning_curve.png`` and ``test_predictions.csv`` (source row, SMILES when known,
  targets and predictions).

Determinism: the seed fixes the model's initial weights, the split (unless the split names
its own seed), the shuffling (the loader derives each epoch's order from ``(seed, epoch)``)
and dropout (torch's generator, whose state is saved after every epoch). ``--resume``
restores everything from ``last.pt`` and re-runs the interrupted epoch from its start, so a
killed run finishes with the same metrics as one that was never interrupted.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from graphdl.compile.compiler import GraphModel, Plan, build, plan_spec, resolved_layers
from graphdl.data.cache import atomic_write
from graphdl.errors import (
    DataError,
    DistributedError,
    GraphDLError,
    InferenceError,
    KernelUnavailableError,
    NonFiniteError,
    SpecError,
)
from graphdl.spec.model import Spec, parse_spec
from graphdl.train import checkpoint as C
from graphdl.train import distributed as D
from graphdl.train import loaders as L
from graphdl.train.data import PATH_KEYS, DatasetRef, check_inputs, resolve_dataset
from graphdl.train.loaders import EvalSet
from graphdl.train.nonfinite import CHECK_EVERY, Watch, search, search_eval, snapshot
from graphdl.train.optim import make_optimizer, make_schedule
from graphdl.train.plots import learning_curve
from graphdl.train.progress import Progress, summary_line
from graphdl.train.rundir import RunDir, check_out, open_run_dir, register_artefact
from graphdl.train.sections import TrainSection, dataset_parts
from graphdl.train.splits import FileSplit, check_split_sizes, make_split, node_masks, split_to_rows
from graphdl.train.tasks import TASKS, Task
from graphdl.types import Scalar


@dataclass
class Experiment:
    """Everything a run or a prediction needs, built from a spec (before any training)."""

    spec: Spec
    plan: Plan
    train: TrainSection
    data: DatasetRef
    task_params: Any
    resolved: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name or os.path.splitext(os.path.basename(self.spec.file))[0]


def _spec_dir(spec: Spec) -> str:
    f = spec.file
    return os.path.dirname(os.path.abspath(f)) if f and not f.startswith("<") else os.getcwd()


def _defined_dir(spec: Spec, path: tuple) -> str:
    """Directory of the file that wrote the value at ``path``: a relative path in a base spec
    (reached through ``extends:``) is relative to that base file, not to the spec extending it."""
    mark = spec.doc.mark(path)
    f = mark.file if mark is not None else None
    if f and not f.startswith("<") and os.path.exists(f):
        return os.path.dirname(os.path.abspath(f))
    return _spec_dir(spec)


def prepare(source, *, epochs: int | None = None, seed: int | None = None, split_file: str | None = None,
            device: str | None = None, batch_size: int | None = None, limit: int | None = None,
            lowering: str | None = None, steps_per_epoch: int | None = None) -> Experiment:
    """Parse, type-check and resolve an experiment spec, applying command-line overrides
    (``lowering="dgl"``: see :func:`graphdl.compile.plan_spec`; it is written into the resolved spec)."""
    spec = source if isinstance(source, Spec) else parse_spec(source)
    doc = spec.doc
    for key in ("task", "dataset"):
        if key not in spec.sections:
            example = {"task": "`task: {type: regression, target: graph.y}`",
                       "dataset": "`dataset: {spec: ../../datasets/freesolv.yaml}`"}[key]
            raise doc.error((), f"`graphdl run` needs a `{key}:` section, e.g. {example}")
    plan = plan_spec(spec, lowering=lowering)
    train = spec.sections.get("train") or TrainSection()
    updates: dict[str, Any] = {}
    if epochs is not None:
        updates["epochs"] = epochs
    if seed is not None:
        updates["seed"] = seed
    if device is not None:
        updates["device"] = device
    if batch_size is not None:
        updates["batch_size"] = batch_size
    if steps_per_epoch is not None:
        updates["steps_per_epoch"] = steps_per_epoch
    if updates:
        train = TrainSection.model_validate({**train.model_dump(), **updates})
    ds_section = spec.sections["dataset"]
    ds_file, ds_inline = dataset_parts(ds_section)[:2]
    # the file that wrote the path decides what it is relative to (a child may override a base's path)
    path_key = next((k for k in PATH_KEYS if k in (ds_inline or {})), None)
    ds_key = ("dataset", "spec") if ds_file is not None else (
        ("dataset", path_key) if path_key is not None else ("dataset", "type"))
    data = resolve_dataset(ds_section, doc, _defined_dir(spec, ds_key))
    if split_file is not None:
        data.split = FileSplit(path=os.path.abspath(split_file))
    elif isinstance(data.split, FileSplit) and not os.path.isabs(data.split.path):
        where = _defined_dir(spec, ("dataset", "split", "path"))
        data.split = FileSplit(path=os.path.abspath(os.path.join(where, data.split.path)))
    if limit is not None:
        data.limit = limit
    exp = Experiment(spec, plan, train, data, spec.sections["task"])
    L.check_loader(exp)
    exp.resolved = resolve(exp)
    return exp


def resolve(exp: Experiment) -> dict:
    """The resolved spec (plain data; see the module docstring)."""
    spec, plan = exp.spec, exp.plan
    layers = resolved_layers(plan)
    out: dict[str, Any] = {"graphdl": 1}
    if spec.name:
        out["name"] = spec.name
    if spec.description:
        out["description"] = spec.description
    if "import" in spec.doc.data:
        out["import"] = spec.doc.data["import"]
    out["inputs"] = {k: (t.size if isinstance(t, Scalar) else str(t)) for k, t in spec.inputs.items()}
    out["graph"] = spec.graph.model_dump(mode="json")
    out["model"] = {"layers": layers, "outputs": list(plan.stack_outputs)}
    if plan.forces is not None:
        out["model"]["forces"] = plan.forces.as_spec()
    out["task"] = exp.task_params.model_dump(mode="json")
    ds = exp.data.resolved()
    ds.pop("graphdl", None)
    ds["split"] = exp.data.split.model_dump(mode="json")
    if exp.data.limit is not None:
        ds["limit"] = exp.data.limit
    out["dataset"] = ds
    out["train"] = exp.train.model_dump(mode="json")
    if out["train"].get("loader", 0) is None:  # unset: leave it out, so that earlier runs' digests still match
        del out["train"]["loader"]
    return out


def check_experiment(exp: Experiment) -> bool:
    """What ``graphdl check`` can verify of an experiment without reading data: the spec's inputs
    against the fields the dataset type says it makes, and the task against those fields and the
    model's outputs. Returns False when the dataset type cannot tell its fields without loading.

    Raises:
        SpecError: at the input or task line that does not fit.
    """
    fields = exp.data.cls.fields(exp.data.params)
    if fields is None:
        return False
    dname = getattr(exp.data.params, "name", None) or exp.data.cls.name
    names_of = getattr(exp.data.cls, "target_names", None)
    target_field = getattr(exp.data.params, "target_field", None)
    names = {target_field: names_of(exp.data.params)} if names_of is not None and target_field else {}
    task = make_task_from_fields(exp, fields, names)
    try:
        task.check_model(dict(exp.spec.inputs))
    except InferenceError as e:
        raise exp.spec.doc.error(("task",), str(e)) from None
    check_inputs(dict(exp.spec.inputs), task.model_inputs(dict(fields)), exp.spec.doc, dname)
    return True


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KernelUnavailableError("`--device cuda` was asked for but torch sees no CUDA device here "
                                     f"(torch {torch.__version__}); use `--device cpu`")
    return torch.device(name)


def make_task(exp: Experiment, dataset) -> Task:
    """The spec's task bound to the dataset's fields, metadata and the model's inputs and outputs."""
    task = make_task_from_fields(exp, dataset.fields, (dataset.meta or {}).get("target_names") or {})
    try:
        task.bind_meta(dict(dataset.meta or {}))
        task.check_model(dict(exp.spec.inputs))
    except InferenceError as e:
        raise exp.spec.doc.error(("task",), str(e)) from None
    return task


def make_task_from_fields(exp: Experiment, fields: dict, target_names: dict) -> Task:
    tcls = TASKS[exp.task_params.type]
    try:
        return tcls(exp.task_params, fields, exp.plan.outputs, target_names)
    except InferenceError as e:
        raise exp.spec.doc.error(("task",), str(e)) from None


# ----------------------------------------------------------------------------- epochs
class _Diverged(Exception):
    """Raised by :func:`run_epoch` when its watch saw a non-finite loss or parameter."""

    def __init__(self, step: int):
        self.step = step  # first bad step (0-based), or -1 when only the parameters showed it


def _share(rows: int) -> float:
    """This rank's weight on its batch loss: ``rows · N / Σ rows`` (1 for one process).

    DDP averages the ranks' gradients, so with these weights the update is the gradient of the
    mean over every row of the global batch, as one process computes it, even when the ranks'
    shares differ (a short last batch, node masks). One all-reduce of a number per step."""
    w = D.world()
    if not w.active:
        return 1.0
    total = D.all_sum(rows)[0]
    return rows * w.size / total if total > 0 else 0.0


def _failed(watch: Watch, model) -> int | None:
    """The watch's verdict, agreed by every rank (the first bad step of any rank)."""
    bad = watch.failed(model)
    if not D.world().active:
        return bad
    seen = [b for b in D.all_gather(bad) if b is not None]
    if not seen:
        return None
    steps = [b for b in seen if b >= 0]
    return min(steps) if steps else -1


def run_epoch(model: GraphModel, task: Task, loader, opt, sched, device, grad_clip, progress,
              epoch: int, epochs: int, net=None) -> float:
    """One pass over the training batches; returns the row-weighted mean loss (over every rank).

    ``net`` is what the task calls (the model in :class:`~torch.nn.parallel.DistributedDataParallel`
    under several processes; ``model`` itself otherwise).

    Raises:
        _Diverged: a loss or a parameter went non-finite (read every ``CHECK_EVERY`` steps and
            at the end; see :mod:`graphdl.train.nonfinite`).
    """
    net = model if net is None else net
    model.train()
    task.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    rows = 0
    watch = Watch(device)
    active = D.world().active
    for i, batch in enumerate(progress.epoch(loader, len(loader), epoch, epochs)):
        batch = L.to_device(batch, device)
        n = 0 if i in getattr(loader, "padded", ()) else task.rows(batch)
        weight = _share(n)
        loss = task.train_loss(net, batch)
        opt.zero_grad(set_to_none=True)
        (loss * weight if active else loss).backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if sched.per_step:
            sched.scheduler.step()
        watch.step(i, loss)
        total += loss.detach().double() * n
        rows += n
        if (i + 1) % CHECK_EVERY == 0 and (bad := _failed(watch, model)) is not None:
            raise _Diverged(bad)
        if progress.bars and i % 5 == 0:
            progress.loss(float(total) / max(rows, 1))
    if (bad := _failed(watch, model)) is not None:
        raise _Diverged(bad)
    if active:
        t, r = D.all_sum(float(total), rows)
        return t / max(r, 1)
    return float(total) / max(rows, 1)


def _first_message(msg: str | None) -> str | None:
    """The first rank's message (a search step every rank takes together); the message itself alone."""
    w = D.world()
    if not w.active:
        return msg
    got = D.all_gather(msg)
    for r, m in enumerate(got):
        if m is not None:
            return m if r == 0 else f"{m} (rank {r}'s share of the batch)"
    return None


def _check_eval(model, task, data, result: dict, what: str, epoch: int | None) -> None:
    """Stop on a non-finite evaluation loss, naming the batch and block (metrics such as r2 may be NaN)."""
    loss = result.get("loss")
    if loss is None or math.isfinite(loss):
        return
    where = search_eval(model, task, data.batches, first=getattr(data, "first", 0),
                        total=getattr(data, "total", None)) if len(data.batches) else None
    where = _first_message(where) or "not located (the forward passes were finite when re-run)"
    at = f" after epoch {epoch}" if epoch is not None else ""
    D.raise_agreed(NonFiniteError(f"the {what} loss is {loss}{at}; {where}"))


def evaluate(model: GraphModel, task: Task, data, row_mask: str | None = None) -> tuple[dict, dict]:
    """Loss and metrics over ``data`` (only its ``row_mask`` nodes, if given), and the collected predictions.

    Several ranks: a sharded set (:attr:`EvalSet.sharded`) is evaluated share by share and the
    collected rows are gathered in batch order, so loss (a sum over rows over a count of rows) and
    every metric are those of one process; otherwise every rank evaluates the whole split and
    rank 0's metrics are kept by all (so every rank takes the same decisions)."""
    task.row_mask = row_mask
    w = D.world()
    if not w.active:
        return task.evaluate(model, data)
    if not getattr(data, "sharded", False):
        metrics, collected = task.evaluate(model, data)
        return D.broadcast(metrics), collected
    if len(data.batches):
        metrics, collected = task.evaluate(model, data)
        rows = sum(task.rows(b) for b, _ in data.batches)
        part = (metrics.get("loss", 0.0) * rows, rows, collected)
    else:
        part = (0.0, 0, {})
    parts = D.all_gather(part)
    loss_sum, rows = sum(p[0] for p in parts), sum(p[1] for p in parts)
    keys = [k for p in parts for k in p[2]]
    collected = {k: torch.cat([p[2][k] for p in parts if k in p[2]]) for k in dict.fromkeys(keys)}
    if not rows and not collected:
        return {}, {}
    return {"loss": loss_sum / max(rows, 1), **(task.metrics(collected) if collected else {})}, collected


def _improved(value: float, best: float | None, higher: bool, min_delta: float) -> bool:
    if value is None or math.isnan(value):  # NaN never improves
        return False
    if best is None:
        return True
    return value > best + min_delta if higher else value < best - min_delta


def _write_json(path: str, data: dict) -> None:
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, allow_nan=True)
        f.write("\n")


# -------------------------------------------------------------------------------- run
def run(source, *, out: str | None = None, epochs: int | None = None, device: str | None = None,
        seed: int | None = None, resume: bool = False, split_file: str | None = None, limit: int | None = None,
        progress: Progress | None = None, overwrite: bool = False, nproc: int | None = None,
        timeout: float | None = None, steps_per_epoch: int | None = None, lowering: str | None = None,
        _init_method: str | None = None) -> dict:
    """Train and evaluate the experiment ``source`` (a spec path or :class:`Spec`); returns metrics.json's data.

    ``out`` holding an earlier run needs ``resume`` (continue it) or ``overwrite`` (replace it once
    this run has finished); see :mod:`graphdl.train.rundir` for what a failed run leaves behind.

    Data parallel (:mod:`graphdl.train.distributed`): ``nproc=N`` trains in N processes on this
    machine; a process started by torchrun joins its ranks by itself. ``timeout``: seconds a
    collective waits for the other ranks (default :data:`~graphdl.train.distributed.DEFAULT_TIMEOUT`).
    A script that calls ``run(..., nproc=N)`` needs the ``if __name__ == "__main__":`` guard of any
    multiprocessing program (the ranks' start-up imports the main module of a script).

    Raises:
        SpecError, DataError: before anything is written to ``out``.
        RunDirError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` was given.
        DistributedError: a rank of a data-parallel run died or stopped answering.
    """
    kw = dict(out=out, epochs=epochs, device=device, seed=seed, resume=resume, split_file=split_file,
              limit=limit, overwrite=overwrite, steps_per_epoch=steps_per_epoch, lowering=lowering)
    env = D.world_from_env()
    if nproc is not None and nproc > 1:
        if env is not None and env.active:
            raise DistributedError(f"--nproc {nproc} starts its own processes, but this one is already rank "
                                   f"{env.rank} of {env.size} (torchrun); leave --nproc out under torchrun "
                                   f"(--nproc-per-node says how many)")
        return _launch(source, nproc, progress or Progress(), timeout, **kw)
    if env is None or not env.active:
        return _run(source, progress=progress, **kw)
    D.init(env, timeout=timeout, init_method=_init_method or "env://")
    try:
        return _run(source, progress=progress, **kw)
    except GraphDLError:
        D.mark_failed()  # the caller ends this process with D.exit_now once it has reported
        raise
    except BaseException as e:
        D.mark_failed()
        if isinstance(e, Exception) and D.is_comm_error(e):
            raise D.lost_contact(e) from None
        raise
    finally:
        D.shutdown()


def _launch(source, nproc: int, progress: Progress, timeout: float | None, **kw) -> dict:
    """``--nproc N``: the one-process checks here, then N ranks (see :func:`graphdl.train.distributed.launch`)."""
    from graphdl.spec.loader import imports_trusted

    if isinstance(source, Spec):
        if not source.file or source.file.startswith("<"):
            raise DistributedError("--nproc starts new processes that read the spec from its file; give a path")
        source = source.file
    exp = prepare(source, epochs=kw["epochs"], seed=kw["seed"], split_file=kw["split_file"], device=kw["device"],
                  limit=kw["limit"], steps_per_epoch=kw["steps_per_epoch"], lowering=kw["lowering"])
    _check_device(exp, kw["device"])
    out = kw["out"] or os.path.join("runs", exp.name)
    check_out(out, resume=kw["resume"], overwrite=kw["overwrite"])
    kwargs = {**kw, "source": os.fspath(source), "out": out,
              "progress_args": {"bars": progress.bars, "quiet": progress.quiet}}
    D.launch(nproc, kwargs, trust=imports_trusted(), timeout_s=timeout, threads=exp.train.num_threads)
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def _check_device(exp: Experiment, device: str | None) -> None:
    """An unavailable device fails before anything is loaded (at the spec's line if it asked for it)."""
    try:
        pick_device(exp.train.device)
    except KernelUnavailableError as e:
        if device is None:  # the spec asked for it: point at its line
            raise exp.spec.doc.error(("train", "device"), str(e).replace("`--device cuda` was asked for",
                                                                         "`device: cuda` is asked for")
                                     .replace("use `--device cpu`",
                                              "write `device: cpu` (or `auto`), or pass `--device cpu`")) from None
        raise


def _run(source, *, out, epochs, device, seed, resume, split_file, limit, progress, overwrite,
         steps_per_epoch=None, lowering=None) -> dict:
    """One rank's run (the only one without data parallelism); see :func:`run`.

    Each phase before training ends with :func:`~graphdl.train.distributed.agree`: when a rank
    fails a check, every rank stops and rank 0 prints the line."""
    t_start = time.perf_counter()
    w = D.world()
    progress = progress or Progress()
    if not w.main:
        progress = Progress(quiet=True)
    exp = held = ck = None
    with D.phase():
        exp = prepare(source, epochs=epochs, seed=seed, split_file=split_file, device=device, limit=limit,
                      steps_per_epoch=steps_per_epoch, lowering=lowering)
        if exp.train.num_threads:
            torch.set_num_threads(exp.train.num_threads)
        if exp.train.cpu_allocator == "cache":
            from graphdl.benchmarking import cache_cpu_allocations

            cache_cpu_allocations()
        _check_device(exp, device)
        out = out or os.path.join("runs", exp.name)
        if w.main:
            held = check_out(out, resume=resume, overwrite=overwrite)  # before anything is loaded or written
            if resume:
                if os.path.exists(os.path.join(out, "last.pt")):
                    ck = C.load(os.path.join(out, "last.pt"))
                    C.check_compatible(ck, exp.resolved, os.path.join(out, "last.pt"), model_only=False,
                                       spec_file=exp.spec.file)
                else:
                    progress.line(f"note: {out} holds no last.pt to resume from; starting from epoch 1")
    ck = D.broadcast(ck)
    tr = exp.train
    doc = exp.spec.doc
    run_digest = C.digest(exp.resolved)
    model_digest = C.digest(C.model_part(exp.resolved))

    # rank 0 loads first (a generated dataset is made and cached once), the other ranks read its cache
    dataset = None
    with D.phase():
        if w.main:
            dataset = exp.data.load()
    with D.phase():
        if dataset is None:
            dataset = exp.data.load()
    with D.phase():
        dname = getattr(exp.data.params, "name", None) or exp.data.cls.name
        skipped = (dataset.meta or {}).get("skipped") or []
        if isinstance(skipped, dict):  # counts by reason (generated datasets such as mmff_conformers)
            if sum(skipped.values()):
                progress.line("note: the dataset skipped " + ", ".join(f"{n} ({why})" for why, n in skipped.items()
                                                                        if n) + " source molecules (see its meta)")
        elif skipped:
            shown = "; ".join(f"row {r}: {why}" for r, why in skipped[:5])
            progress.line(f"note: skipped {len(skipped)} invalid row(s) (on_invalid: skip): {shown}"
                          + (" ..." if len(skipped) > 5 else ""))
        task = make_task(exp, dataset)
        check_inputs(dict(exp.spec.inputs), task.model_inputs(dict(dataset.fields)), doc, dname)
        split = make_split(exp.data.split, dataset, seed=tr.seed, base_dir=_spec_dir(exp.spec))
        masks = node_masks(exp.data.split)
        if masks is not None:
            if getattr(task, "level", "graph") != "node":
                raise doc.error(("dataset", "split"), f"a `{exp.data.split.type}` split selects nodes, but the task "
                                                      f"target `{getattr(exp.task_params, 'target', '?')}` is not a "
                                                      f"node field; use a graph split (random, scaffold, file, ...)")
            sizes = {k: sum(int(dataset.graphs[i][masks[k]].sum()) for i in v) for k, v in split.items()}
        else:
            sizes = {k: len(v) for k, v in split.items()}
        L.check_data(exp, task, dataset, masks, doc)
        unit = "nodes" if masks is not None else "graphs"
        total = sum(sizes.values()) if masks is not None else len(dataset)
        try:
            split_warnings = check_split_sizes(exp.data.split, sizes, total, unit)
        except DataError as e:
            raise doc.error(("dataset", "split"), f"{e} (dataset `{dname}`)") from None
        for line in split_warnings:
            progress.line(line)
    phase = {k: (masks[k] if masks else None) for k in ("train", "val", "test")}

    # every check passed: only now is anything written (see graphdl.train.rundir), by rank 0 alone
    for name in task.artefacts:
        register_artefact(name)
    rd = None
    with D.phase():
        if w.main:
            rd = open_run_dir(out, overwrite=overwrite, held=held)
            if rd.staged:
                progress.line(f"note: {out} holds {held}; training in {rd.work}, which replaces it when this run "
                              f"finishes")
    try:
        metrics = _train(exp, out, rd, ck, dataset, dname, task, split, sizes, masks, phase, run_digest,
                         model_digest, progress, t_start)
    except BaseException:
        if rd is not None:
            rd.abandon()
        raise
    if rd is not None:
        rd.finish()
    D.barrier()  # the other ranks return once the artefacts are in place
    return metrics


def _allocator() -> str:
    from graphdl.benchmarking import cpu_allocator

    return cpu_allocator()


def _seed_rank(seed: int, epoch: int = 0) -> None:
    """Ranks other than 0 draw dropout masks from their own stream (rank 0 keeps the one-process stream)."""
    w = D.world()
    if w.rank:
        torch.manual_seed((seed * 1_000_003 + w.rank * 7919 + epoch) % (2**63 - 1))


def _probe(model, task, loader, opt, device) -> list[str]:
    """Names of the parameters one training step leaves without a gradient (for DDP's
    ``find_unused_parameters``); model, task, optimizer and random states are restored after."""
    state = snapshot(model, task, opt, _NoSchedule())
    parts = loader.parts(0)
    index = parts[0] if parts and len(parts[0]) else loader.base.batch_indices(0)[0][:1]
    batch = L.to_device(loader.base.make_batch(index, (0, 0, loader.rank)), device)
    model.train()
    task.train()
    opt.zero_grad(set_to_none=True)
    task.train_loss(model, batch).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    opt.zero_grad(set_to_none=True)
    model.load_state_dict(state["model"])
    task.load_state_dict(state["task"])
    torch.set_rng_state(state["rng"])
    return unused


class _NoSchedule:
    def state_dict(self) -> dict:
        return {}


def _train(exp: Experiment, out: str, rd: RunDir | None, ck, dataset, dname, task, split, sizes, masks, phase,
           run_digest, model_digest, progress, t_start) -> dict:
    """Train, select and evaluate into ``rd.work`` (the checks of :func:`run` have passed).

    Under several ranks every rank runs this; ``rd`` is ``None`` except on rank 0, which alone writes."""
    tr = exp.train
    w = D.world()
    dev = D.device_for(pick_device(tr.device))
    last_path, best_path = (rd.path("last.pt"), rd.path("best.pt")) if rd is not None else (None, None)
    torch.manual_seed(tr.seed)
    model = build(exp.plan)
    graphs = dataset.graphs
    task.row_mask = phase["train"]
    train_examples = task.examples(graphs, split["train"], training=True)
    task.fit(train_examples)  # over the whole training split, on every rank ...
    D.broadcast_module(task)  # ... and rank 0's numbers kept by all (bit for bit)
    task.prepare_model(model)
    model.to(dev)
    task.to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    opt = make_optimizer(tr.optimizer, model.parameters())
    train_loader = L.train_loader(exp, task, graphs, train_examples, phase, dev)
    sched = make_schedule(tr.schedule, opt, epochs=tr.epochs, steps_per_epoch=len(train_loader),
                          monitor_higher=task.monitor_higher)

    state = {"epoch": 0, "history": [], "best": {"epoch": None, "value": None}, "bad_epochs": 0, "stopped": False,
             "seconds": [], "train_seconds": []}
    if ck is not None:
        model.load_state_dict(ck["model"])
        task.load_state_dict(ck["task"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        rngs = ck.get("rng_ranks")
        if rngs is not None and len(rngs) == w.size:  # the same world: every rank its own stream
            torch.set_rng_state(rngs[w.rank])
        elif w.main:
            torch.set_rng_state(ck["rng"])
        else:  # another world size: rank 0 continues the recorded stream, the others start theirs
            _seed_rank(tr.seed, int(ck.get("epoch", 0)))
        if dev.type == "cuda" and ck.get("cuda_rng") is not None and w.main:
            torch.cuda.set_rng_state(ck["cuda_rng"])
        for k in state:
            if k in ck:
                state[k] = ck[k]
        progress.line(f"resuming {out} after epoch {state['epoch']}")
    else:
        _seed_rank(tr.seed)
    net = D.wrap_model(model, dev, lambda: _probe(model, task, train_loader, opt, dev))

    if rd is not None:
        _write_text(rd.path("spec.yaml"), yaml.safe_dump(exp.resolved, sort_keys=False))
        if masks is None:  # the split in source rows: `--split-file DIR/split.json` (or chemprop) reuses it
            _write_json(rd.path("split.json"), split_to_rows(split, dataset))
    split_desc = exp.data.split.type + (f" seed {exp.data.split.seed if getattr(exp.data.split, 'seed', None) is not None else tr.seed}"
                                        if exp.data.split.type in ("random", "scaffold") else "")
    ranks = ""
    if w.active:
        bs = getattr(train_loader.base, "batch_size", tr.batch_size)
        ranks = f" x {w.size} processes ({D.backend()}; batch {bs} = {w.size} shares of ~{bs // w.size})"
    progress.line(f"run `{exp.name}`: dataset {dname} ({len(dataset)} graphs; {split_desc} split "
                  f"{sizes['train']}/{sizes['val']}/{sizes['test']}), {n_params:,} parameters, {task.name} "
                  f"monitoring val {task.monitor}, device {dev.type}{ranks}, seed {tr.seed}, out {out}")

    cache: dict = {}
    val_set = L.eval_set(exp, task, graphs, split["val"], "val", phase["val"], dev, cache)
    es = tr.early_stopping
    has_val = bool(split["val"])
    metric_keys = [k for k in getattr(exp.task_params, "metrics", [])]
    while state["epoch"] < tr.epochs and not state["stopped"]:
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        train_loader.set_epoch(epoch - 1)
        task.row_mask = phase["train"]
        start = snapshot(model, task, opt, sched)
        try:
            train_loss = run_epoch(model, task, train_loader, opt, sched, dev, tr.grad_clip, progress, epoch,
                                   tr.epochs, net)
        except _Diverged as d:
            _stop_diverged(d, model, task, train_loader, opt, sched, tr.grad_clip, dev, start, epoch, rd, state, net)
        t_train = time.perf_counter() - t0
        evaluated = epoch % tr.eval_every == 0 or epoch == tr.epochs
        val = evaluate(model, task, val_set, phase["val"])[0] if evaluated else {}
        if evaluated:
            _check_eval(model, task, val_set, val, "validation", epoch)
        value = val.get(task.monitor) if has_val and evaluated else None
        if sched.scheduler is not None and not sched.per_step:
            if sched.on_metric:
                if value is not None:
                    sched.scheduler.step(value)
            else:
                sched.scheduler.step()
        lr = opt.param_groups[0]["lr"]
        best = state["best"]
        if not has_val:
            improved = True
        elif not evaluated:
            improved = False
        else:
            improved = _improved(value, best["value"], task.monitor_higher, es.min_delta if es else 0.0)
            if improved:
                state["best"] = {"epoch": epoch, "value": value}
                state["bad_epochs"] = 0
            else:
                state["bad_epochs"] += tr.eval_every
        if es is not None and has_val and state["bad_epochs"] >= es.patience:
            state["stopped"] = True
        record = {"epoch": epoch, "lr": lr, "train": {"loss": train_loss}, "val": val}
        state["history"].append(record)
        state["epoch"] = epoch
        seconds = time.perf_counter() - t0
        state["seconds"].append(seconds)
        state["train_seconds"].append(t_train)
        rngs = D.all_gather(torch.get_rng_state()) if w.active else None
        if rd is not None:
            ckpt = {
                "spec": exp.resolved, "digest": run_digest, "model_digest": model_digest,
                "model": model.state_dict(), "task": task.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if dev.type == "cuda" else None,
                "world_size": w.size, "rng_ranks": rngs,
                "data_fields": {k: str(t) for k, t in dataset.fields.items()},
                "target_names": (dataset.meta or {}).get("target_names") or {}, **state,
            }
            if improved:
                C.save(best_path, ckpt)
            C.save(last_path, ckpt)
        progress.line(summary_line(epoch, tr.epochs, train_loss, val, lr, seconds, improved and has_val, metric_keys))
        if state["stopped"]:
            progress.line(f"early stopping: val {task.monitor} has not improved for {es.patience} epochs "
                          f"(best epoch {state['best']['epoch']})")

    # final evaluation with the best weights (rank 0 reads them; every rank takes them)
    best_state = None
    if rd is not None:
        best_ck = C.load(best_path) if os.path.exists(best_path) else C.load(last_path)
        best_state = {"model": best_ck["model"], "task": best_ck["task"]}
    best_state = D.broadcast(best_state)
    model.load_state_dict(best_state["model"])
    task.load_state_dict(best_state["task"])
    final_val, _ = evaluate(model, task, val_set, phase["val"])
    test_set = L.eval_set(exp, task, graphs, split["test"], "test", phase["test"], dev, cache)
    final_test, collected = evaluate(model, task, test_set, phase["test"])
    _check_eval(model, task, test_set, final_test, "test", None)
    metrics = {
        "spec": exp.name,
        "spec_digest": run_digest,
        "seed": tr.seed,
        "dataset": {"name": dname, "type": exp.data.cls.name, "graphs": len(dataset),
                    "sha256": (dataset.meta or {}).get("sha256")},
        "split": {"type": exp.data.split.type, "sizes": sizes},
        "task": {"type": task.name, "monitor": task.monitor, "columns": task.columns},
        "parameters": n_params,
        "epochs": state["history"],
        "best_epoch": state["best"]["epoch"],
        "stopped_early": state["stopped"],
        "final": {"val": final_val, "test": final_test},
    }
    total = time.perf_counter() - t_start
    if rd is not None:
        task.write_artefacts(rd.path, collected, dataset)
        _write_json(rd.path("metrics.json"), metrics)
        _write_json(rd.path("timing.json"), {"epoch_seconds": state["seconds"],
                                             "train_seconds": state["train_seconds"], "total_seconds": total,
                                             "processes": w.size})
        _write_json(rd.path("run.json"), run_record(exp, metrics, dev, total))
        learning_curve(state["history"], task.monitor if has_val else "loss", rd.path("learning_curve.png"),
                       state["best"]["epoch"] if has_val else None, exp.name)
    show = ["loss", *metric_keys]
    test_txt = " ".join(f"{k} {final_test[k]:.4f}" for k in show if k in final_test)
    progress.line(f"best epoch {state['best']['epoch']}: test {test_txt}  ({total:.1f}s; artefacts in {out})")
    return metrics


def run_record(exp: Experiment, metrics: dict, device, seconds: float) -> dict:
    """``run.json``: what made this run and what it gave, for a reader who was not there."""
    import platform
    import sys

    import graphdl

    return {
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
        "spec": exp.spec.file,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 1),
        "versions": {"graphdl": graphdl.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": {"platform": platform.platform(), "device": str(device), "threads": torch.get_num_threads(),
                    "processes": D.world().size, "cpu_allocator": _allocator()},
        "dataset": metrics["dataset"],
        "split": metrics["split"],
        "seed": metrics["seed"],
        "parameters": metrics["parameters"],
        "best_epoch": metrics["best_epoch"],
        "final": metrics["final"],
        "artefacts": {"spec.yaml": "the resolved spec (graphdl run DIR/spec.yaml repeats the run)",
                      "metrics.json": "per-epoch and final metrics", "best.pt": "weights of the best epoch",
                      "last.pt": "everything needed to --resume", "test_predictions.csv": "test-split predictions",
                      "learning_curve.png": "training and validation curves", "timing.json": "seconds per epoch"},
    }




def _stop_diverged(d: _Diverged, model, task, loader, opt, sched, grad_clip, dev, start: dict, epoch: int,
                   rd: RunDir | None, state: dict, net=None) -> None:
    """Locate a non-finite training step by replaying the epoch, then stop with one line.

    Under several ranks every rank replays its share of the same steps in step (the replay's
    checks are agreed after each stage), and the first rank's finding is the line."""
    loader.set_epoch(epoch - 1)  # the replay draws this epoch's order again (iterating it moved the loader on)
    active = D.world().active
    weight = (lambda i, batch: _share(0 if i in loader.padded else task.rows(batch))) if active else None
    where = search(model, task, loader, opt, sched, grad_clip, dev, start, None if d.step < 0 else d.step,
                   net=net, agree=_first_message if active else None, weight=weight)
    if where is None:
        where = (f"batch {d.step + 1} of {len(loader)} (the replay did not reproduce it: the run is not "
                 f"deterministic here)" if d.step >= 0 else "not located by the replay")
    if rd is None:
        kept = ""
    elif rd.staged:
        kept = f"{rd.out} keeps the earlier run unchanged"
    elif state["epoch"]:
        kept = f"the weights after epoch {state['epoch']} are in {rd.path('last.pt')}"
    else:
        kept = "no epoch finished"
    D.raise_agreed(NonFiniteError(f"training stopped in epoch {epoch}, {where}; {kept}. Lower "
                                  f"`train.optimizer.lr`, set `train.grad_clip`, or check that batch's inputs"))


def _write_text(path: str, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


__all__ = ["EvalSet", "Experiment", "SpecError", "evaluate", "make_task", "pick_device", "prepare", "resolve", "run"]
