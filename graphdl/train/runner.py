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
from graphdl.data.loader import GraphLoader, StepLoader
from graphdl.errors import DataError, InferenceError, KernelUnavailableError, NonFiniteError, SpecError
from graphdl.spec.model import Spec, parse_spec
from graphdl.train import checkpoint as C
from graphdl.train.data import PATH_KEYS, DatasetRef, check_inputs, resolve_dataset
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
            steps_per_epoch: int | None = None) -> Experiment:
    """Parse, type-check and resolve an experiment spec, applying command-line overrides."""
    spec = source if isinstance(source, Spec) else parse_spec(source)
    doc = spec.doc
    for key in ("task", "dataset"):
        if key not in spec.sections:
            example = {"task": "`task: {type: regression, target: graph.y}`",
                       "dataset": "`dataset: {spec: ../../datasets/freesolv.yaml}`"}[key]
            raise doc.error((), f"`graphdl run` needs a `{key}:` section, e.g. {example}")
    plan = plan_spec(spec)
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


def run_epoch(model: GraphModel, task: Task, loader: GraphLoader, opt, sched, device, grad_clip, progress,
              epoch: int, epochs: int) -> float:
    """One pass over the training batches; returns the row-weighted mean loss.

    Raises:
        _Diverged: a loss or a parameter went non-finite (read every ``CHECK_EVERY`` steps and
            at the end; see :mod:`graphdl.train.nonfinite`).
    """
    model.train()
    task.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    rows = 0
    watch = Watch(device)
    for i, batch in enumerate(progress.epoch(loader, len(loader), epoch, epochs)):
        batch = batch.to(device)
        loss = task.train_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if sched.per_step:
            sched.scheduler.step()
        watch.step(i, loss)
        n = task.rows(batch)
        total += loss.detach().double() * n
        rows += n
        if (i + 1) % CHECK_EVERY == 0 and (bad := watch.failed(model)) is not None:
            raise _Diverged(bad)
        if progress.bars and i % 5 == 0:
            progress.loss(float(total) / max(rows, 1))
    if (bad := watch.failed(model)) is not None:
        raise _Diverged(bad)
    return float(total) / max(rows, 1)


def _check_eval(model, task, data: EvalSet, result: dict, what: str, epoch: int | None) -> None:
    """Stop on a non-finite evaluation loss, naming the batch and block (metrics such as r2 may be NaN)."""
    loss = result.get("loss")
    if loss is None or math.isfinite(loss):
        return
    where = search_eval(model, task, data.batches) or "not located (the forward passes were finite when re-run)"
    at = f" after epoch {epoch}" if epoch is not None else ""
    raise NonFiniteError(f"the {what} loss is {loss}{at}; {where}")


class EvalSet:
    """A split's dataset graphs collated once, in order, on the device (reused every epoch: the CSR and
    other per-batch caches are built once too). Drawing nothing from torch's generator (the
    loader gets a seed), it leaves the training's random stream as it was."""

    def __init__(self, graphs: list, index: list[int], batch_size: int, device, task: Task | None = None,
                 split: str = "val"):
        self.index = list(index)
        self.split = split
        """``val`` or ``test`` (a task may evaluate them differently: short or full rollouts)."""
        self.batches: list[tuple] = []
        start = 0
        ids_all = torch.tensor(self.index, dtype=torch.long)
        examples = task.examples(graphs, self.index, training=False) if task is not None else \
            [graphs[i] for i in self.index]
        for batch in GraphLoader(examples, batch_size, shuffle=False, seed=0):
            n = batch.num_graphs
            self.batches.append((batch.to(device), ids_all[start:start + n].to(device)))
            start += n


def evaluate(model: GraphModel, task: Task, data: EvalSet, row_mask: str | None = None) -> tuple[dict, dict]:
    """Loss and metrics over ``data`` (only its ``row_mask`` nodes, if given), and the collected predictions."""
    task.row_mask = row_mask
    return task.evaluate(model, data)


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
        progress: Progress | None = None, overwrite: bool = False, steps_per_epoch: int | None = None) -> dict:
    """Train and evaluate the experiment ``source`` (a spec path or :class:`Spec`); returns metrics.json's data.

    ``out`` holding an earlier run needs ``resume`` (continue it) or ``overwrite`` (replace it once
    this run has finished); see :mod:`graphdl.train.rundir` for what a failed run leaves behind.

    Raises:
        SpecError, DataError: before anything is written to ``out``.
        RunDirError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` was given.
    """
    t_start = time.perf_counter()
    progress = progress or Progress()
    exp = prepare(source, epochs=epochs, seed=seed, split_file=split_file, device=device, limit=limit,
                  steps_per_epoch=steps_per_epoch)
    tr = exp.train
    doc = exp.spec.doc
    if tr.num_threads:
        torch.set_num_threads(tr.num_threads)
    try:
        pick_device(tr.device)  # an unavailable device fails before anything is loaded
    except KernelUnavailableError as e:
        if device is None:  # the spec asked for it: point at its line
            raise doc.error(("train", "device"), str(e).replace("`--device cuda` was asked for",
                                                                "`device: cuda` is asked for")
                            .replace("use `--device cpu`", "write `device: cpu` (or `auto`), or pass `--device cpu`")
                            ) from None
        raise
    out = out or os.path.join("runs", exp.name)
    held = check_out(out, resume=resume, overwrite=overwrite)  # before anything is loaded or written
    run_digest = C.digest(exp.resolved)
    model_digest = C.digest(C.model_part(exp.resolved))

    ck = None
    if resume:
        if os.path.exists(os.path.join(out, "last.pt")):
            ck = C.load(os.path.join(out, "last.pt"))
            C.check_compatible(ck, exp.resolved, os.path.join(out, "last.pt"), model_only=False,
                               spec_file=exp.spec.file)
        else:
            progress.line(f"note: {out} holds no last.pt to resume from; starting from epoch 1")

    dataset = exp.data.load()
    dname = getattr(exp.data.params, "name", None) or exp.data.cls.name
    skipped = (dataset.meta or {}).get("skipped") or []
    if isinstance(skipped, dict):  # counts by reason (generated datasets such as mmff_conformers)
        if sum(skipped.values()):
            progress.line("note: the dataset skipped " + ", ".join(f"{n} ({why})" for why, n in skipped.items() if n)
                          + " source molecules (see its meta)")
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
                                                  f"target `{getattr(exp.task_params, 'target', '?')}` is not a node "
                                                  f"field; use a graph split (random, scaffold, file, ...)")
        sizes = {k: sum(int(dataset.graphs[i][masks[k]].sum()) for i in v) for k, v in split.items()}
    else:
        sizes = {k: len(v) for k, v in split.items()}
    unit = "nodes" if masks is not None else "graphs"
    total = sum(sizes.values()) if masks is not None else len(dataset)
    try:
        split_warnings = check_split_sizes(exp.data.split, sizes, total, unit)
    except DataError as e:
        raise doc.error(("dataset", "split"), f"{e} (dataset `{dname}`)") from None
    for w in split_warnings:
        progress.line(w)
    phase = {k: (masks[k] if masks else None) for k in ("train", "val", "test")}

    # every check passed: only now is anything written (see graphdl.train.rundir)
    for name in task.artefacts:
        register_artefact(name)
    rd = open_run_dir(out, overwrite=overwrite, held=held)
    if rd.staged:
        progress.line(f"note: {out} holds {held}; training in {rd.work}, which replaces it when this run finishes")
    try:
        metrics = _train(exp, rd, ck, dataset, dname, task, split, sizes, masks, phase, run_digest, model_digest,
                         progress, t_start)
    except BaseException:
        rd.abandon()
        raise
    rd.finish()
    return metrics


def _train(exp: Experiment, rd: RunDir, ck, dataset, dname, task, split, sizes, masks, phase, run_digest,
           model_digest, progress, t_start) -> dict:
    """Train, select and evaluate into ``rd.work`` (the checks of :func:`run` have passed)."""
    tr, out = exp.train, rd.out
    dev = pick_device(tr.device)
    last_path, best_path = rd.path("last.pt"), rd.path("best.pt")
    torch.manual_seed(tr.seed)
    model = build(exp.plan)
    graphs = dataset.graphs
    task.row_mask = phase["train"]
    train_examples = task.examples(graphs, split["train"], training=True)
    task.fit(train_examples)
    task.prepare_model(model)
    model.to(dev)
    task.to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    opt = make_optimizer(tr.optimizer, model.parameters())
    train_loader = GraphLoader(train_examples, tr.batch_size, shuffle=True, seed=tr.seed)
    if tr.steps_per_epoch is not None:
        train_loader = StepLoader(train_loader, tr.steps_per_epoch)
    sched = make_schedule(tr.schedule, opt, epochs=tr.epochs, steps_per_epoch=len(train_loader),
                          monitor_higher=task.monitor_higher)
    eval_bs = tr.eval_batch_size or tr.batch_size

    state = {"epoch": 0, "history": [], "best": {"epoch": None, "value": None}, "bad_epochs": 0, "stopped": False,
             "seconds": []}
    if ck is not None:
        model.load_state_dict(ck["model"])
        task.load_state_dict(ck["task"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"])
        if dev.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"])
        for k in state:
            if k in ck:
                state[k] = ck[k]
        progress.line(f"resuming {out} after epoch {state['epoch']}")

    _write_text(rd.path("spec.yaml"), yaml.safe_dump(exp.resolved, sort_keys=False))
    if masks is None:  # the split in source rows: `--split-file DIR/split.json` (or chemprop) reuses it
        _write_json(rd.path("split.json"), split_to_rows(split, dataset))
    split_desc = exp.data.split.type + (f" seed {exp.data.split.seed if getattr(exp.data.split, 'seed', None) is not None else tr.seed}"
                                        if exp.data.split.type in ("random", "scaffold") else "")
    progress.line(f"run `{exp.name}`: dataset {dname} ({len(dataset)} graphs; {split_desc} split "
                  f"{sizes['train']}/{sizes['val']}/{sizes['test']}), {n_params:,} parameters, {task.name} "
                  f"monitoring val {task.monitor}, device {dev.type}, seed {tr.seed}, out {out}")

    val_set = EvalSet(graphs, split["val"], eval_bs, dev, task, "val")
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
                                   tr.epochs)
        except _Diverged as d:
            _stop_diverged(d, model, task, train_loader, opt, sched, tr.grad_clip, dev, start, epoch, rd, state)
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
        ckpt = {
            "spec": exp.resolved, "digest": run_digest, "model_digest": model_digest,
            "model": model.state_dict(), "task": task.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if dev.type == "cuda" else None,
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

    # final evaluation with the best weights
    best_ck = C.load(best_path) if os.path.exists(best_path) else C.load(last_path)
    model.load_state_dict(best_ck["model"])
    task.load_state_dict(best_ck["task"])
    final_val, _ = evaluate(model, task, val_set, phase["val"])
    test_set = EvalSet(graphs, split["test"], eval_bs, dev, task, "test")
    final_test, collected = evaluate(model, task, test_set, phase["test"])
    _check_eval(model, task, test_set, final_test, "test", None)
    task.write_artefacts(rd.path, collected, dataset)
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
    _write_json(rd.path("metrics.json"), metrics)
    total = time.perf_counter() - t_start
    _write_json(rd.path("timing.json"), {"epoch_seconds": state["seconds"], "total_seconds": total})
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
        "machine": {"platform": platform.platform(), "device": str(device), "threads": torch.get_num_threads()},
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
                   rd: RunDir, state: dict) -> None:
    """Locate a non-finite training step by replaying the epoch, then stop with one line."""
    loader.set_epoch(epoch - 1)  # the same batches again (a StepLoader advances its epoch as it runs)
    where = search(model, task, loader, opt, sched, grad_clip, dev, start, None if d.step < 0 else d.step)
    if where is None:
        where = (f"batch {d.step + 1} of {len(loader)} (the replay did not reproduce it: the run is not "
                 f"deterministic here)" if d.step >= 0 else "not located by the replay")
    if rd.staged:
        kept = f"{rd.out} keeps the earlier run unchanged"
    elif state["epoch"]:
        kept = f"the weights after epoch {state['epoch']} are in {rd.path('last.pt')}"
    else:
        kept = "no epoch finished"
    raise NonFiniteError(f"training stopped in epoch {epoch}, {where}; {kept}. Lower `train.optimizer.lr`, set "
                         f"`train.grad_clip`, or check that batch's inputs")


def _write_text(path: str, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


__all__ = ["EvalSet", "Experiment", "SpecError", "evaluate", "make_task", "pick_device", "prepare", "resolve", "run"]
