"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` + ``DistributedDataParallel``.

Two ways in, one code path:

* ``graphdl run SPEC --nproc N`` starts N processes on this machine (``multiprocessing``: a fork
  server that imported graphdl once on Linux, ``spawn`` elsewhere) that meet through a file in a
  fresh temporary directory (no port to pick);
* ``torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT
  --no-python graphdl run SPEC`` starts them on several machines; each process finds its
  rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``).

Backends: gloo on CPU; on a machine with CUDA, ``cpu:gloo,cuda:nccl`` (gradients of a CUDA
model go through NCCL, the small bookkeeping collectives of this module through gloo).

What the runner does with a world of N ranks (see :mod:`graphdl.train.runner`):

* **Batches.** :class:`RankLoader` cuts every batch of the one-process epoch (same seed, same
  order, same ``batch_size`` — the *global* batch) into N contiguous parts, sizes differing by at
  most one; rank ``r`` takes part ``r``. The union over ranks of an epoch is exactly the
  one-process epoch, nothing dropped and nothing repeated. The remainder is neither padded with
  repeated examples nor dropped: a short last batch is split the same way, and the loss of each
  rank is weighted by its share of the batch's rows (``rows_r · N / Σ rows``), so that the
  gradient DDP averages is the gradient of the one-process batch mean. Only when a batch has
  fewer examples than there are ranks does a rank get an empty part; it then runs one example
  with weight 0 (DDP needs every rank in every step), which adds nothing to the loss (its rows
  do enter batch-norm statistics in that step: the one case where N ranks and one differ).
* **Batch norm** normalises with the statistics of the global batch, every rank's rows
  (:class:`graphdl.nn.mlp.BatchNorm1d`, through :func:`global_sum`), as ``SyncBatchNorm``.
* **Metrics.** Training loss: sums and row counts all-reduced. Evaluation: each rank evaluates a
  contiguous share of the batches and the per-row predictions are gathered, so every metric
  (RMSE, ROC-AUC, R²) is the one-process metric, not a mean of per-rank metrics. Tasks with their
  own evaluation (rollouts) evaluate the whole split on every rank.
* **Artefacts.** Only rank 0 opens the run directory and writes to it (the staging protocol of
  :mod:`graphdl.train.rundir` runs on rank 0 alone); checkpoints hold the one model, the
  optimizer and schedule states, and every rank's random state, so ``--resume`` works with the
  same or another number of processes.
* **Failures.** Checks before training run on every rank and are agreed (:func:`agree`): one
  rank's bad spec or data stops all, and rank 0 prints its line. A rank that raises or dies
  while training breaks the others' collectives (gloo: at once; otherwise after ``--timeout``
  seconds); the ``--nproc`` launcher then stops every rank and prints the first failure in one
  line; under torchrun its agent does the stopping.

Source: the DDP tutorial of PyTorch ("Getting started with distributed data parallel") and
``torch.utils.data.DistributedSampler``, whose ``drop_last=False`` pads by repeating examples —
graphdl weights instead of repeating, so that N processes and one see the same gradient.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from graphdl.errors import DistributedError, GraphDLError, PeerStopped

DEFAULT_TIMEOUT = 600.0
"""Seconds a collective waits for the other ranks before the run stops (``--timeout``)."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (one rank, rank 0, by default)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


_WORLD = World()
_TIMEOUT = DEFAULT_TIMEOUT
_FAILED = False


def failed() -> bool:
    """Whether a data-parallel run in this process ended with an error (see :func:`exit_now`)."""
    return _FAILED


def mark_failed() -> None:
    global _FAILED
    _FAILED = True


def exit_now(code: int) -> None:
    """End this rank's process at once, after flushing its output, without running destructors.

    A rank whose run failed may still hold collectives that never completed (a peer is stuck or
    gone). Releasing the DDP model then destroys its gloo process group, whose destructor joins a
    worker thread that itself waits for the GIL the destructor holds: the process never exits
    (seen with torch 2.13: ``~ProcessGroupGloo`` → ``std::thread::join`` while the worker's
    ``~AsyncWork`` waits in ``gil_scoped_acquire``). Nothing is left to clean up at that point:
    rank 0 abandoned its staging directory before the error reached here.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def world() -> World:
    """The current world (set by :func:`init`)."""
    return _WORLD


def world_from_env() -> World | None:
    """The world torchrun (or any launcher following its conventions) describes, or ``None``."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise DistributedError(f"RANK={os.environ['RANK']!r} and WORLD_SIZE={os.environ['WORLD_SIZE']!r} must be "
                               f"integers (they are set by torchrun)") from None
    return World(rank, size, local)


def backend() -> str:
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init(w: World, *, timeout: float | None = None, init_method: str = "env://") -> None:
    """Join the process group of ``w`` (a no-op for one rank)."""
    global _WORLD, _TIMEOUT
    _TIMEOUT = float(timeout or DEFAULT_TIMEOUT)
    _WORLD = w
    if not w.active or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(w.local_rank % torch.cuda.device_count())
    try:
        dist.init_process_group(backend(), init_method=init_method, rank=w.rank, world_size=w.size,
                                timeout=datetime.timedelta(seconds=_TIMEOUT))
    except Exception as e:  # the rendezvous failed: wrong address, a rank that never came
        _WORLD = World()
        raise DistributedError(f"rank {w.rank} of {w.size} could not join the others ({_first_line(e)}); check "
                               f"--rdzv-endpoint / MASTER_ADDR and that every rank was started") from None


def shutdown() -> None:
    global _WORLD
    if dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = World()


def timeout() -> float:
    return _TIMEOUT


def device_for(dev: torch.device) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for CUDA (one GPU per process), else ``dev``."""
    if dev.type == "cuda" and _WORLD.active:
        return torch.device("cuda", _WORLD.local_rank % torch.cuda.device_count())
    return dev


# ----------------------------------------------------------------------- collectives
def all_sum(*values: float) -> list[float]:
    """Sums over ranks (float64, through gloo on the CPU)."""
    t = torch.tensor(values, dtype=torch.float64)
    if _WORLD.active:
        dist.all_reduce(t)
    return t.tolist()


class _GlobalSum(torch.autograd.Function):
    """``Σ_ranks t`` on every rank; its gradient is again the sum over ranks of the incoming
    gradients (each rank's loss depends on every rank's ``t``)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def global_sum(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``t`` over the ranks (``t`` itself for one rank). Every rank must call
    it, in the same order (batch norm over the global batch, :class:`graphdl.nn.mlp.BatchNorm1d`)."""
    if not _WORLD.active:
        return t
    return _GlobalSum.apply(t)


def all_gather(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not _WORLD.active:
        return [obj]
    out: list = [None] * _WORLD.size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not _WORLD.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers into ``module`` on every rank."""
    if not _WORLD.active:
        return
    state = broadcast({k: v.detach().cpu() for k, v in module.state_dict().items()} if _WORLD.main else None)
    module.load_state_dict(state)


def barrier() -> None:
    if _WORLD.active:
        dist.barrier()


def agree(error: BaseException | None) -> None:
    """Stop every rank if any rank failed in the phase that just ended.

    Each rank passes what it raised (or ``None``). If some rank failed, rank 0 raises its own
    error, or a :class:`DistributedError` naming the first rank that failed; every other rank
    raises :class:`PeerStopped`, which prints nothing. Ranks that all succeed return.
    """
    if not _WORLD.active:
        if error is not None:
            raise error
        return
    mine = None if error is None else (type(error).__name__, str(error))
    got = all_gather(mine)
    failed = [(r, m) for r, m in enumerate(got) if m is not None]
    if not failed:
        return
    if _WORLD.main:
        if error is not None:
            raise error
        r, (kind, msg) = failed[0]
        raise DistributedError(f"rank {r}: {msg}")
    raise PeerStopped(f"rank {failed[0][0]} stopped the run")


@contextlib.contextmanager
def phase() -> Iterator[None]:
    """A stretch of checks every rank runs: a :class:`GraphDLError` on any rank stops them all
    together when the stretch ends (see :func:`agree`). Alone, errors pass through unchanged."""
    if not _WORLD.active:
        yield
        return
    error = None
    try:
        yield
    except GraphDLError as e:
        error = e
    agree(error)


def raise_agreed(error: GraphDLError) -> None:
    """Raise an error every rank reached together: rank 0 raises it, the others stop silently."""
    if _WORLD.main:
        raise error
    raise PeerStopped(str(error))


def lost_contact(e: BaseException) -> DistributedError:
    """One line for a collective that failed because another rank is gone or stuck."""
    text = _first_line(e)
    if "timed out" in text.lower() or "timeout" in text.lower():
        why = (f"a collective timed out after {_TIMEOUT:g} s (--timeout): another rank is stuck or died "
               f"without closing its connections")
    else:
        why = "another rank stopped or died"
    return DistributedError(f"rank {_WORLD.rank} of {_WORLD.size} lost contact with the other ranks: {why} "
                            f"({text})")


def is_comm_error(e: BaseException) -> bool:
    """Whether ``e`` is a failed collective (a peer closed its connection, or a timeout)."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    if isinstance(e, RuntimeError):
        t = str(e).lower()
        return any(s in t for s in ("gloo", "nccl", "connection closed", "connection reset", "timed out",
                                    "broken pipe", "socket"))
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# ------------------------------------------------------------------------- sampler
def shard(index, rank: int, size: int):
    """Part ``rank`` of ``size`` contiguous parts of ``index`` (sizes differ by at most one, larger first)."""
    n = len(index)
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return index[start:start + base + (1 if rank < extra else 0)]


class RankLoader:
    """This rank's share of every batch of a loader's one-process epoch (see the module docstring).

    ``base`` is a :class:`~graphdl.data.loader.GraphLoader`, :class:`~graphdl.data.loader.StepLoader`
    or :class:`~graphdl.data.sampling.NeighborLoader` (anything with ``batch_indices(epoch)`` and
    ``make_batch(index, key)``). With one rank it yields the base loader's batches unchanged.

    After an iteration, :attr:`padded` holds the steps where this rank had no example of its own
    and ran one with weight 0.
    """

    def __init__(self, base, rank: int = 0, size: int = 1):
        self.base = base
        self.rank = rank
        self.size = size
        self.epoch = 0
        self.padded: set[int] = set()

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def parts(self, epoch: int) -> list:
        """This rank's index list of each batch of ``epoch``."""
        return [shard(idx, self.rank, self.size) for idx in self.base.batch_indices(epoch)]

    def __iter__(self) -> Iterator:
        epoch = self.epoch
        self.epoch += 1
        self.padded = set()
        for b, idx in enumerate(self.base.batch_indices(epoch)):
            part = shard(idx, self.rank, self.size)
            if len(part) == 0:
                part = idx[:1]
                self.padded.add(b)
            yield self.base.make_batch(part, (epoch, b, self.rank))


def wrap_model(model: torch.nn.Module, device: torch.device, probe) -> torch.nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (itself for one rank).

    ``probe()`` runs one training forward and backward on this rank's first batch and returns the
    names of parameters that got no gradient (DDP must be told about those, and every rank must
    agree). Its effects are undone by the caller.
    """
    if not _WORLD.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    unused = any(all_gather(bool(probe())))
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=unused)


# ------------------------------------------------------------------------ launcher
def _watch_parent(pid: int) -> None:
    """Exit when the launching process is gone (a killed ``graphdl run --nproc`` leaves no orphans)."""
    def loop() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)  # (a fork server, not the launcher, is this process's parent)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=loop, daemon=True).start()


def _write_error(path: str, kind: str, e: BaseException) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"kind": kind, "type": type(e).__name__, "message": str(e), "time": time.time()}, f)


def _child(rank: int, size: int, rdv: str, errors: str, kwargs: dict, trust: bool, timeout_s: float,
           threads: int | None, parent: int, env: dict, cwd: str) -> None:
    """One rank started by :func:`launch` (with the launcher's environment and directory, as a spawned
    process would have, though a fork server started it)."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    _watch_parent(parent)
    # SIGTERM from the launcher unwinds like an exception, so rank 0 abandons a staging directory
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if threads:
        torch.set_num_threads(threads)
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(size)})
    err = os.path.join(errors, f"rank{rank}.json")
    from graphdl.spec.loader import trusted_imports
    from graphdl.train.progress import Progress
    from graphdl.train.runner import run

    progress = kwargs.pop("progress_args", {})
    if rank != 0:
        progress = {**progress, "quiet": True}
    try:
        with trusted_imports(trust):
            run(**kwargs, progress=Progress(**progress), timeout=timeout_s, _init_method=rdv)
    except PeerStopped as e:
        _write_error(err, "peer", e)
        exit_now(2)
    except DistributedError as e:
        _write_error(err, "peer" if "lost contact" in str(e) else "error", e)
        exit_now(2)
    except GraphDLError as e:
        _write_error(err, "error", e)
        exit_now(2)
    except SystemExit as e:  # SIGTERM from the launcher
        exit_now(e.code if isinstance(e.code, int) else 1)
    except BaseException as e:  # a bug, not a user error: keep the traceback
        traceback.print_exc()
        _write_error(err, "crash", e)
        exit_now(1)


def _omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it is set to a positive integer (the threads of each rank, as under torchrun)."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return n if n > 0 else None


def launch(nproc: int, kwargs: dict, *, trust: bool = False, timeout_s: float | None = None,
           threads: int | None = None, grace: float = 10.0) -> None:
    """Run :func:`graphdl.train.runner.run` (``kwargs``) in ``nproc`` processes on this machine.

    Each rank runs ``threads`` torch threads (default: ``train.num_threads``, else ``OMP_NUM_THREADS``,
    else the machine's cores divided among the ranks).

    Returns when every rank finished. When one fails, the others get ``grace`` seconds to stop
    on their own (they notice the lost connection), then are terminated; the first failure is
    raised here as one line (its own error class when it is graphdl's).

    Raises:
        GraphDLError: the failing rank's error (a :class:`DistributedError` when it died).
    """
    import multiprocessing.connection

    ctx = _context()
    tmp = tempfile.mkdtemp(prefix="graphdl-ddp-")
    rdv = f"file://{os.path.join(tmp, 'rendezvous')}"
    threads = threads or _omp_threads() or max(1, (os.cpu_count() or 1) // nproc)
    args = (nproc, rdv, tmp, dict(kwargs), trust, timeout_s or DEFAULT_TIMEOUT, threads, os.getpid(),
            dict(os.environ), os.getcwd())
    procs = [ctx.Process(target=_child, args=(r, *args), name=f"graphdl-rank{r}") for r in range(nproc)]
    try:
        for p in procs:
            p.start()
        alive = list(procs)
        stopped = False
        while alive and not stopped:
            # a rank that reported an error has failed even before it exits (see exit_now)
            multiprocessing.connection.wait([p.sentinel for p in alive], timeout=1.0)
            alive = [p for p in alive if p.exitcode is None]
            stopped = (any(p.exitcode not in (None, 0) for p in procs)
                       or any(os.path.exists(os.path.join(tmp, f"rank{r}.json")) for r in range(nproc)))
        if stopped:
            end = time.monotonic() + grace
            for p in procs:
                p.join(max(0.0, end - time.monotonic()))
            _stop(procs)
            raise _failure(procs, tmp)
    except BaseException:
        _stop(procs)
        raise
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _context():
    """Processes from a fork server that imported graphdl once (Linux; fast, no CUDA or threads in the
    server, so safe to fork), else spawned ones. The server lives as long as this process, so a second
    launch starts its ranks without importing torch again."""
    import multiprocessing

    if sys.platform.startswith("linux"):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["graphdl.train.runner"])
        return ctx
    return torch.multiprocessing.get_context("spawn")


def _stop(procs) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(10.0)
        if p.is_alive():
            p.kill()
            p.join()


def _failure(procs, tmp: str) -> GraphDLError:
    """The error that explains a failed launch (a rank's own error first, a death next, the rest last)."""
    reports = {}
    for r in range(len(procs)):
        try:
            with open(os.path.join(tmp, f"rank{r}.json"), encoding="utf-8") as f:
                reports[r] = json.load(f)
        except (OSError, ValueError):
            pass
    own = sorted((rep["time"], r) for r, rep in reports.items() if rep["kind"] in ("error", "crash"))
    if own:
        r = own[0][1]
        rep = reports[r]
        return _as_error(rep["type"], rep["message"] if r == 0 else f"rank {r}: {rep['message']}",
                         crash=rep["kind"] == "crash")
    killed = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode is not None and p.exitcode < 0
              and r not in reports]
    others = len(procs) - 1
    if killed:
        r, code = killed[0]
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return DistributedError(f"rank {r} of {len(procs)} was killed ({name}); the other rank{'s' if others > 1 else ''} "
                                f"{'were' if others > 1 else 'was'} stopped. `--resume` continues from the last "
                                f"finished epoch")
    if reports:
        r = min(reports, key=lambda k: reports[k]["time"])
        return DistributedError(reports[r]["message"])
    codes = ", ".join(f"rank {r}: {p.exitcode}" for r, p in enumerate(procs))
    return DistributedError(f"the ranks exited without a report ({codes})")


def _as_error(type_name: str, message: str, crash: bool) -> GraphDLError:
    """The error class a rank raised, rebuilt here from its name and message."""
    import graphdl.errors as E
    from graphdl.train import rundir

    if crash:
        return DistributedError(f"{message} ({type_name}; its traceback is printed above)")
    cls = getattr(E, type_name, None) or getattr(rundir, type_name, None)
    if isinstance(cls, type) and issubclass(cls, GraphDLError):
        try:
            return cls(message)
        except TypeError:
            pass
    return DistributedError(message)


__all__ = ["DEFAULT_TIMEOUT", "RankLoader", "World", "agree", "all_gather", "all_sum", "barrier", "broadcast",
           "broadcast_module", "exit_now", "failed", "global_sum", "init", "launch", "mark_failed", "lost_contact", "phase", "raise_agreed", "shard", "shutdown", "world",
           "world_from_env", "wrap_model"]
