"""The runner: train, evaluate and predict from experiment specs (``graphdl run`` / ``predict``).

* :func:`run` — train a spec's model on its dataset and write every artefact
  (:mod:`graphdl.train.runner`);
* :func:`predict` — apply a checkpoint to new molecules (:mod:`graphdl.train.predict`);
* :class:`Task` and :func:`register_task` — add a task kind: one file in :mod:`graphdl.train.tasks`;
* :func:`register_metric` — add a metric (:mod:`graphdl.train.metrics`).

Names are imported on first use, so that the spec loader can import
``graphdl.train.sections`` without pulling in the whole runner.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "run": "graphdl.train.runner",
    "prepare": "graphdl.train.runner",
    "predict": "graphdl.train.predict",
    "Task": "graphdl.train.tasks",
    "TaskParams": "graphdl.train.tasks",
    "register_task": "graphdl.train.tasks",
    "register_metric": "graphdl.train.metrics",
}

__all__ = ["Task", "TaskParams", "predict", "prepare", "register_metric", "register_task", "run"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'graphdl.train' has no attribute {name!r}")
