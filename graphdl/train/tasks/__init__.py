"""Task types: one module each, registered on import (see :mod:`graphdl.train.tasks.base`).

Every module of this package except ``base`` is imported here, so a new task type is a new
file; user task types come in through a spec's ``import:`` like user blocks.
"""

from __future__ import annotations

import importlib
import pkgutil

from graphdl.train.tasks.base import TASKS, Task, TaskParams, register_task, task_type

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

from graphdl.train.tasks.classification import Classification  # noqa: E402
from graphdl.train.tasks.regression import Regression  # noqa: E402

__all__ = ["TASKS", "Classification", "Regression", "Task", "TaskParams", "register_task", "task_type"]
