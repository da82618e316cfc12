"""One exception hierarchy for everything a user can get wrong.

Every error carries enough context to be printed as one line: where (``file:line:col``
and the path inside the spec), what was expected, what was found, and how to fix it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Mark:
    """A position in a spec file (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class GraphDLError(Exception):
    """Base class of every error graphdl raises on purpose."""


class SpecError(GraphDLError):
    """A spec is malformed, ill-typed, or its blocks do not fit together.

    ``str(err)`` is one line: ``file:line:col: model.layers[2].heads: message``.
    """

    def __init__(self, message: str, *, mark: Mark | None = None, path: str | None = None):
        self.message = message
        self.mark = mark
        self.path = path
        super().__init__(self.format())

    def format(self) -> str:
        parts = []
        if self.mark is not None:
            parts.append(str(self.mark))
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return _one_line(": ".join(parts))


def _one_line(text: str) -> str:
    """Escape newlines and other control characters (e.g. echoed from a bad value) to keep one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class InferenceError(GraphDLError):
    """Raised by a block's ``infer`` when the fields it receives do not fit its parameters.

    The compiler catches it and re-raises a :class:`SpecError` at the block's place in the spec.
    """


class DataError(GraphDLError):
    """Bad data: invalid SMILES, indices out of range, NaN features, an empty graph..."""


class KernelUnavailableError(GraphDLError):
    """A requested backend (cuEquivariance, CUDA, dgl...) is not available here."""


class NonFiniteError(GraphDLError):
    """Training or evaluation produced NaN or inf; the message names where (epoch, batch, block)."""


class CheckpointError(GraphDLError):
    """A checkpoint does not belong to the spec it is loaded into, or is corrupt."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean `x`?"`` for the closest choice, or a list of valid ones."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    if close:
        return f"; did you mean `{close[0]}`?"
    if len(choices) <= 12:
        return "; expected one of " + ", ".join(f"`{c}`" for c in choices)
    return ""
