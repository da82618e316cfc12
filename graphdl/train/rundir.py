"""Run directories that a failed run cannot damage.

``graphdl run SPEC --out DIR`` writes its artefacts (:data:`ARTEFACTS`) to DIR. The rules:

* Nothing is written before the spec, the dataset, the task and the split have been checked:
  a run that fails there leaves DIR byte-identical (it may not even create DIR).
* DIR already holding a run (any artefact below) is never replaced by accident. Without a flag
  the run is refused with one line that says what DIR holds and the three choices:
  ``--resume`` (continue that run in place), ``--overwrite`` (replace it), another ``--out``.
* ``--overwrite`` trains in a sibling staging directory ``.DIR.incoming`` and moves each new
  artefact over the old one (``os.replace``, one atomic rename per file) only once the new run
  has finished; old artefacts the new run does not make are then removed. A new run that fails
  or is killed leaves DIR as it was (a killed one leaves its staging directory, which the next
  ``--overwrite`` clears). Files in DIR that graphdl did not write are never touched.

Source: the write-beside-then-rename discipline of :func:`graphdl.data.cache.atomic_write`,
applied to the run as a whole; the refusal mirrors PyTorch Lightning's and Ludwig's habit of
never reusing a finished run's directory silently.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from graphdl.errors import GraphDLError

ARTEFACTS = ("spec.yaml", "last.pt", "best.pt", "metrics.json", "timing.json", "test_predictions.csv",
             "learning_curve.png", "run.json", "split.json")
"""Every file a run writes to its directory (tasks may add more through :func:`register_artefact`)."""

_EXTRA: list[str] = []


def register_artefact(name: str) -> None:
    """Declare a further file name a task writes to the run directory (so overwrites replace it)."""
    if name not in ARTEFACTS and name not in _EXTRA:
        _EXTRA.append(name)


def artefacts() -> tuple[str, ...]:
    return ARTEFACTS + tuple(_EXTRA)


class RunDirError(GraphDLError):
    """The run directory holds an earlier run and the command did not say what to do with it."""


def describe_existing(out: str) -> str | None:
    """What ``out`` holds, in words (``None`` when it holds no graphdl run)."""
    if not os.path.isdir(out):
        return None
    present = [n for n in artefacts() if os.path.exists(os.path.join(out, n))]
    if not present:
        return None
    metrics = os.path.join(out, "metrics.json")
    if os.path.exists(metrics):
        try:
            with open(metrics, encoding="utf-8") as f:
                best = json.load(f).get("best_epoch")
            return f"a finished run (best epoch {best})"
        except (OSError, ValueError):
            return "a finished run"
    return "an unfinished run (" + ", ".join(present) + ")"


@dataclass
class RunDir:
    """Where a run writes (:attr:`work`) and where its artefacts end up (:attr:`out`)."""

    out: str
    work: str

    @property
    def staged(self) -> bool:
        return os.path.abspath(self.work) != os.path.abspath(self.out)

    def path(self, name: str) -> str:
        return os.path.join(self.work, name)

    def finish(self) -> None:
        """Move a staged run's artefacts over the old ones; a direct run has nothing to do."""
        if not self.staged:
            return
        os.makedirs(self.out, exist_ok=True)
        for name in artefacts():
            new, old = os.path.join(self.work, name), os.path.join(self.out, name)
            if os.path.exists(new):
                os.replace(new, old)
            elif os.path.exists(old):  # the old run made it, the new one did not: it would mislead
                os.remove(old)
        shutil.rmtree(self.work, ignore_errors=True)

    def abandon(self) -> None:
        """A staged run failed: drop its staging directory, the old run stays as it was."""
        if self.staged:
            shutil.rmtree(self.work, ignore_errors=True)


def staging_dir(out: str) -> str:
    parent, base = os.path.split(os.path.abspath(out).rstrip(os.sep))
    return os.path.join(parent, f".{base}.incoming")


def check_out(out: str, *, resume: bool, overwrite: bool) -> str | None:
    """Refuse an ambiguous use of ``out`` before anything is loaded; returns what ``out`` holds.

    Raises:
        RunDirError: ``--resume`` together with ``--overwrite``, or ``out`` holding a run and
            neither flag given (the message names what it holds and the choices).
    """
    if resume and overwrite:
        raise RunDirError("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    held = describe_existing(out)
    if held is not None and not resume and not overwrite:
        raise RunDirError(f"{out} holds {held}; nothing was changed. Pass --overwrite to replace it when the new "
                          f"run finishes, --resume to continue it, or --out with another directory")
    return held


def open_run_dir(out: str, *, overwrite: bool, held: str | None) -> RunDir:
    """Create the directory the run writes to: ``out`` itself, or a fresh staging directory."""
    if overwrite and held is not None:
        work = staging_dir(out)
        shutil.rmtree(work, ignore_errors=True)  # left by a killed --overwrite run
        os.makedirs(work)
        return RunDir(out, work)
    os.makedirs(out, exist_ok=True)
    return RunDir(out, out)


__all__ = ["ARTEFACTS", "RunDir", "RunDirError", "artefacts", "check_out", "describe_existing", "open_run_dir",
           "register_artefact", "staging_dir"]
