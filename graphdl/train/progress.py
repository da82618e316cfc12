"""What a run prints: a live bar per epoch on a terminal, one summary line per epoch otherwise.

On a terminal (``stdout.isatty()``) each epoch shows a tqdm bar over its batches with the
running training loss, and leaves one summary line behind it; in CI logs and pipes only the
summary lines are printed (no carriage returns, no bar redraws).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    a = abs(v)
    return f"{v:.3e}" if a != 0 and (a < 1e-3 or a >= 1e5) else f"{v:.4f}"


def summary_line(epoch: int, epochs: int, train_loss: float, val: dict, lr: float, seconds: float,
                 best: bool, keys: list[str]) -> str:
    parts = [f"epoch {epoch:>{len(str(epochs))}}/{epochs}", f"train loss {_fmt(train_loss)}"]
    if val:
        parts.append("val " + " ".join(f"{k} {_fmt(val[k])}" for k in ["loss", *keys] if k in val))
    parts.append(f"lr {lr:.2e}")
    parts.append(f"{seconds:.1f}s")
    return "  ".join(parts) + ("  *" if best else "")


class Progress:
    """Per-epoch progress output (see the module docstring)."""

    def __init__(self, stream: TextIO | None = None, bars: bool | None = None, quiet: bool = False):
        self.stream = stream or sys.stdout
        self.quiet = quiet
        if bars is None:
            bars = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bars = bool(bars) and not quiet
        self._bar = None

    def epoch(self, batches: Iterable, total: int, epoch: int, epochs: int) -> Iterator:
        if not self.bars:
            yield from batches
            return
        from tqdm import tqdm

        with tqdm(batches, total=total, desc=f"epoch {epoch}/{epochs}", leave=False, file=self.stream,
                  dynamic_ncols=True, unit="batch") as bar:
            self._bar = bar
            try:
                yield from bar
            finally:
                self._bar = None

    def loss(self, value: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"loss {_fmt(value)}", refresh=False)

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self.bars:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


__all__ = ["Progress", "summary_line"]
