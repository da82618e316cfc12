"""Text as sequence graphs, for character-level language models.

``char_text`` cuts a text into windows of ``context`` characters; each window is one graph
whose nodes are its characters in order (no edges: the model's ``graph.kind: causal`` makes
them). Fields:

* ``node.tok``: ``categorical(V)``, the id of each character in the vocabulary (the sorted set of
  characters of the whole text; ``meta["vocabulary"]`` lists them);
* ``node.y``: ``categorical(V)``, the id of the *next* character (the target of a next-token
  node-level ``classification`` task with ``num_classes: V``; its ``bits_per_token`` metric
  is then bits per character).

The split is by position, fixed: the first ``1 − val_fraction`` of the characters train, the
rest validates (``split: {type: source}``). Windows start every ``context`` characters and
never straddle the cut; the last window of each part is shorter when the part does not divide
evenly (so batches mix lengths, and the batch structure is the padding mask). A 90/10 split
has no third part: ``test`` is the validation part again, so a run's final ``test`` numbers
are its validation numbers at the best epoch.

Sources: ``source: pydoc_topics`` — the documentation topics that ship with CPython itself
(``pydoc_data.topics``: 79 topics, about 465,000 characters for Python 3.11), joined in sorted
topic order; or ``path:`` a UTF-8 text file (relative to the dataset spec). ``sha256`` checks
the text (of its UTF-8 bytes): another Python release ships other topics, and says so.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Literal

import torch
from pydantic import Field, PositiveInt, model_validator

from graphdl.data.graph import Graph
from graphdl.data.registry import Dataset, DatasetParams, DatasetType, register_dataset
from graphdl.errors import DataError
from graphdl.types import Categorical


class CharTextParams(DatasetParams):
    """``source`` (``pydoc_topics``) or ``path`` (a UTF-8 file); ``context``: characters per
    sequence; ``val_fraction``: the final share of the text held out; ``sha256`` of the whole
    text; ``max_characters``: keep only the first N characters (quick trials; the split and the
    vocabulary are then of those)."""

    source: Literal["pydoc_topics"] | None = None
    path: str | None = None
    context: PositiveInt = 256
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    sha256: str | None = None
    max_characters: PositiveInt | None = None

    @model_validator(mode="after")
    def _v_source(self):
        if (self.source is None) == (self.path is None):
            raise ValueError("give exactly one of `source: pydoc_topics` (CPython's shipped documentation) or "
                             "`path:` (a UTF-8 text file)")
        return self


def pydoc_topics_text() -> str:
    """CPython's ``pydoc_data.topics`` joined in sorted topic order (what ``help('topics')`` reads)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # pragma: no cover - stripped Python builds
        raise DataError("this Python has no `pydoc_data` package (a stripped build?); use `path:` with a text "
                        "file instead of `source: pydoc_topics`") from None
    return "".join(topics[k] for k in sorted(topics))


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def char_windows(ids: torch.Tensor, start: int, stop: int, context: int) -> list[tuple[int, int]]:
    """``(a, b)`` spans of inputs ``ids[a:b]`` (targets ``ids[a+1:b+1]``) tiling ``[start, stop − 1)``."""
    out = []
    a = start
    while a < stop - 1:  # a loop over windows at load time, not in a forward pass
        b = min(a + context, stop - 1)
        out.append((a, b))
        a = b
    return out


@register_dataset("char_text")
class CharText(DatasetType):
    """A text as windows of characters (see the module docstring)."""

    Params = CharTextParams

    @classmethod
    def fields(cls, p) -> dict | None:
        """``node.tok`` and ``node.y`` are ``categorical(V)``; V, the number of distinct characters, is
        known without a data file for ``source: pydoc_topics`` (the text ships with Python), and
        only after reading the file for ``path:`` (None: ``graphdl run`` checks it)."""
        if p.source != "pydoc_topics":
            return None
        text = pydoc_topics_text()
        if p.max_characters is not None:
            text = text[:p.max_characters]
        v = len(set(text))
        return {"node.tok": Categorical(v), "node.y": Categorical(v)}

    @classmethod
    def field_docs(cls, p) -> dict[str, str]:
        return {"node.tok": "the character at each position (index into the sorted vocabulary)",
                "node.y": "the next character (the target of next-token prediction)"}

    @classmethod
    def load(cls, p, *, cache_dir: str | None = None, base_dir: str = ".") -> Dataset:
        if p.source == "pydoc_topics":
            text = pydoc_topics_text()
            origin = f"pydoc_data.topics of Python {sys.version.split()[0]}"
        else:
            path = p.path if os.path.isabs(p.path) else os.path.join(base_dir, p.path)
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except FileNotFoundError:
                raise DataError(f"char_text: text file `{p.path}` not found (looked at {path})") from None
            except UnicodeDecodeError as e:
                raise DataError(f"char_text: `{path}` is not UTF-8 text ({e})") from None
            origin = path
        digest = text_sha256(text)
        if p.sha256 is not None and digest != p.sha256.strip().lower().removeprefix("sha256:"):
            raise DataError(f"char_text: the text of {origin} has sha256 {digest}, but the dataset spec records "
                            f"{p.sha256}; it differs from the text the spec was written for (another Python "
                            f"release?): check it, then update `sha256` in the dataset spec")
        if p.max_characters is not None:
            text = text[:p.max_characters]
        if len(text) < 4:
            raise DataError(f"char_text: the text of {origin} has {len(text)} characters; it needs at least 4")
        vocab = sorted(set(text))
        lookup = {c: i for i, c in enumerate(vocab)}
        ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
        cut = int((1.0 - p.val_fraction) * len(text))
        if cut < 2 or len(text) - cut < 2:
            raise DataError(f"char_text: `val_fraction: {p.val_fraction}` leaves {cut} training and "
                            f"{len(text) - cut} validation characters; each part needs at least 2")
        graphs: list[Graph] = []
        splits: dict[str, list[int]] = {"train": [], "val": []}
        starts: list[int] = []
        for part, (lo, hi) in (("train", (0, cut)), ("val", (cut, len(text)))):
            for a, b in char_windows(ids, lo, hi, p.context):
                n = b - a
                fields = {"node.tok": ids[a:b].clone(), "node.y": ids[a + 1:b + 1].clone()}
                splits[part].append(len(graphs))
                starts.append(a)
                graphs.append(Graph(None, n, fields, validate=False))
        splits["test"] = list(splits["val"])
        v = len(vocab)
        return Dataset(
            graphs,
            {"node.tok": Categorical(v), "node.y": Categorical(v)},
            ["node.y"],
            splits,
            {"source": origin, "sha256": digest, "characters": len(text), "cut": cut, "vocabulary": vocab,
             "rows": list(range(len(graphs))), "start": starts, "target_names": {"node.y": ["next"]}},
        )


__all__ = ["CharText", "CharTextParams", "char_windows", "pydoc_topics_text", "text_sha256"]
