"""Field types: frozen, hashable values the compiler checks before any tensor exists.

A field lives on one of three *spaces* (``node``, ``edge``, ``graph``) and has a name;
its key is ``"<space>.<name>"`` (``node.h``, ``edge.e``, ``graph.u``). Its type is one of

* :class:`Scalar` ``(dim)``: ``dim`` invariant channels, written ``64`` in a spec;
* :class:`Irreps`: an O(3) representation in e3nn notation, ``1o`` (a vector, e.g.
  positions) or ``16x0e + 8x1o + 4x2e``;
* :class:`Frame`: a rigid frame (rotation + translation), stored as ``(N, 4, 3)``: the
  rotation matrix rows 0..2 (columns are the local axes) and the translation in row 3;
  written ``frame``. Frames rotate and translate with the structure (``x ↦ R x + t`` maps
  local to global coordinates): only blocks declaring ``frame_equivariant`` may read them;
* :class:`Stacked`: one value of another type per iteration of a repeated layer (a
  ``trace:``), stored ``(N, T, ...)``; written ``frame[8]``, ``64[3]``;
* :class:`Categorical` ``(num_classes)``: one integer class index per row in
  ``0..num_classes-1`` (particle types, atom types, token ids), written ``categorical(9)``,
  stored as an integer tensor ``(N,)``. It is not a real-valued feature: blocks that read
  scalars refuse it, and an ``embedding`` block turns it into channels;
* :class:`Trajectory` ``(frames, dim)``: ``frames`` consecutive values of a ``dim``-vector
  per row (a particle's recent positions, oldest first), written ``trajectory(6, 2)``,
  stored as ``(N, frames, dim)``. Its coordinates are plain channels in the data's frame
  (a simulation box fixes the axes), not a rotation-typed field.

Parsing lives here too (``parse_type``) and needs no e3nn import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from graphdl.errors import InferenceError

SPACES = ("node", "edge", "graph")


class FieldType:
    """Base of all field types."""

    @property
    def dim(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def invariant(self) -> bool:
        """True when every channel is unchanged by rotations and reflections."""
        return False

    def shape(self) -> tuple[int, ...]:
        """Trailing shape of the tensor holding the field (after the node/edge/graph axis)."""
        return (self.dim,)


@dataclass(frozen=True)
class Scalar(FieldType):
    """``size`` invariant channels."""

    size: int

    @property
    def dim(self) -> int:
        return self.size

    @property
    def invariant(self) -> bool:
        return True

    def __str__(self) -> str:
        return str(self.size)


_IRREP_RE = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(\d+)([eo])\s*$")


@dataclass(frozen=True)
class Irreps(FieldType):
    """O(3) irreps as a tuple of ``(multiplicity, l, parity)`` with parity ``+1`` (e) or ``-1`` (o)."""

    terms: tuple[tuple[int, int, int], ...]

    @classmethod
    def parse(cls, text: str) -> "Irreps":
        terms = []
        for part in str(text).split("+"):
            m = _IRREP_RE.match(part)
            if not m:
                raise ValueError(
                    f"`{text}` is not an irreps string; expected terms like `16x0e + 8x1o + 2e`"
                )
            mul = int(m.group(1)) if m.group(1) is not None else 1
            terms.append((mul, int(m.group(2)), 1 if m.group(3) == "e" else -1))
        return cls(tuple(terms))

    @property
    def dim(self) -> int:
        return sum(mul * (2 * l + 1) for mul, l, _ in self.terms)

    @property
    def invariant(self) -> bool:
        return all(l == 0 and p == 1 for _, l, p in self.terms)

    @property
    def num_scalars(self) -> int:
        return sum(mul for mul, l, p in self.terms if l == 0 and p == 1)

    @property
    def is_vector(self) -> bool:
        """A single ``1o``: one 3-vector (positions, velocities, forces)."""
        return self.terms == ((1, 1, -1),)

    def __str__(self) -> str:
        return " + ".join(f"{mul}x{l}{'e' if p == 1 else 'o'}" for mul, l, p in self.terms)

    def e3nn(self):
        """The matching ``e3nn.o3.Irreps`` (imports e3nn)."""
        from e3nn import o3

        return o3.Irreps(str(self))


VECTOR = Irreps(((1, 1, -1),))


@dataclass(frozen=True)
class Frame(FieldType):
    """A rigid frame per node: rotation ``R`` (3x3) and translation ``t`` (3)."""

    @property
    def dim(self) -> int:
        return 12

    def shape(self) -> tuple[int, ...]:
        return (4, 3)

    def __str__(self) -> str:
        return "frame"


FRAME = Frame()


@dataclass(frozen=True)
class Stacked(FieldType):
    """``count`` values of type ``inner`` per row (one per iteration), stored ``(rows, count, *inner.shape())``.

    Made by a layer's ``trace:`` (the value of a field after each repeat, e.g. the frames of
    every structure-module iteration for an auxiliary loss); written ``frame[8]``.
    """

    inner: FieldType
    count: int

    @property
    def dim(self) -> int:
        return self.count * self.inner.dim

    @property
    def invariant(self) -> bool:
        return self.inner.invariant

    def shape(self) -> tuple[int, ...]:
        return (self.count,) + tuple(self.inner.shape())

    def __str__(self) -> str:
        return f"{self.inner}[{self.count}]"


_STACKED_RE = re.compile(r"^(.+)\[\s*(\d+)\s*\]$")


@dataclass(frozen=True)
class Categorical(FieldType):
    """One class index per row, an integer in ``0..num_classes-1`` (stored ``(N,)``, integer dtype).

    Invariant (a label does not rotate) but not a real-valued feature: ``dim`` is 1 (one
    column), and :meth:`FieldTable.need_scalar` refuses it; an ``embedding`` block maps it to
    ``Scalar(out_dim)`` channels."""

    num_classes: int

    @property
    def dim(self) -> int:
        return 1

    @property
    def invariant(self) -> bool:
        return True

    def shape(self) -> tuple[int, ...]:
        return ()

    def __str__(self) -> str:
        return f"categorical({self.num_classes})"


@dataclass(frozen=True)
class Trajectory(FieldType):
    """``frames`` consecutive ``dim``-vectors per row, oldest first (stored ``(N, frames, dim)``).

    A particle's position history as a simulator's input. The coordinates are channels in the
    data's own frame (walls of a box fix the axes): rotations leave the field as it is."""

    frames: int
    size: int

    @property
    def dim(self) -> int:
        return self.frames * self.size

    def shape(self) -> tuple[int, ...]:
        return (self.frames, self.size)

    def __str__(self) -> str:
        return f"trajectory({self.frames}, {self.size})"


_CALL_RE = re.compile(r"^(categorical|trajectory)\s*\(\s*([^()]*?)\s*\)$")


def _parse_call(text: str) -> FieldType | None:
    """``categorical(9)`` / ``trajectory(6, 2)``, or None when ``text`` is neither."""
    m = _CALL_RE.match(text)
    if not m:
        return None
    kind, args = m.group(1), [a.strip() for a in m.group(2).split(",")] if m.group(2) else []
    want = 1 if kind == "categorical" else 2
    example = "categorical(9)" if kind == "categorical" else "trajectory(6, 2)"
    if len(args) != want or not all(a.isdigit() and int(a) > 0 for a in args):
        raise ValueError(f"`{text}` needs {want} positive integer{'s' if want > 1 else ''}, e.g. `{example}`")
    nums = [int(a) for a in args]
    return Categorical(nums[0]) if kind == "categorical" else Trajectory(nums[0], nums[1])


def parse_type(value) -> FieldType:
    """Parse a type as written in a spec: ``64``, ``"1o"``, ``"16x0e + 4x1o"``, ``"frame"``,
    ``"categorical(9)"``, ``"trajectory(6, 2)"``."""
    if isinstance(value, FieldType):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a field type (a positive dim, irreps or `frame`), found `{value}`")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"a field dim must be a positive integer, found {value}")
        return Scalar(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "frame":
            return FRAME
        m = _STACKED_RE.match(text)
        if m:
            count = int(m.group(2))
            if count <= 0:
                raise ValueError(f"a stacked type needs a positive count, found `{text}`")
            return Stacked(parse_type(m.group(1).strip()), count)
        if text.isdigit():
            return parse_type(int(text))
        if text in ("vector", "position", "pos"):
            return VECTOR
        call = _parse_call(text)
        if call is not None:
            return call
        return Irreps.parse(text)
    raise ValueError(
        f"expected a field type (a positive dim like 64, irreps like `1o` or `8x0e + 4x1o`, "
        f"`frame`, `categorical(9)` or `trajectory(6, 2)`), found {type(value).__name__} `{value}`"
    )


def split_key(key: str) -> tuple[str, str]:
    """``"node.h"`` -> ``("node", "h")``, with a clear error for anything else."""
    space, dot, name = str(key).partition(".")
    if not dot or space not in SPACES or not name:
        raise ValueError(
            f"field `{key}` must be written `<space>.<name>` with space one of node, edge, graph "
            f"(e.g. `node.h`)"
        )
    return space, name


class FieldTable(dict):
    """An ordered mapping ``key -> FieldType`` of the fields present at one point of a stack."""

    def need(self, key: str, block: str = "") -> FieldType:
        if key not in self:
            have = ", ".join(f"`{k}`: {v}" for k, v in self.items()) or "none"
            raise InferenceError(
                f"{block + ' ' if block else ''}needs field `{key}`, but the stack has none "
                f"(fields here: {have}); declare it under `inputs:` or produce it in an earlier layer"
            )
        return self[key]

    def need_scalar(self, key: str, block: str = "") -> int:
        """The channel count of an invariant field, or an error naming the field and its type."""
        t = self.need(key, block)
        if isinstance(t, Scalar):
            return t.size
        if isinstance(t, Irreps) and t.invariant:
            return t.dim
        if isinstance(t, Categorical):
            raise InferenceError(
                f"{block + ' ' if block else ''}reads real-valued channels, but `{key}` holds class indices "
                f"({t}); map it to channels first with `{{type: embedding, input: {key}, out_dim: 16}}`"
            )
        if isinstance(t, Trajectory):
            raise InferenceError(
                f"{block + ' ' if block else ''}reads channels, but `{key}` is a sequence of {t.frames} frames "
                f"({t}); turn it into features first (e.g. `{{type: history_velocities, input: {key}}}`)"
            )
        if isinstance(t, Frame):
            raise InferenceError(
                f"{block + ' ' if block else ''}is not frame-equivariant and cannot read field `{key}` of type "
                f"frame (a rigid frame rotates and translates with the structure); read frames with a "
                f"frame-equivariant block (ipa, backbone_update) or feed this block an invariant field"
            )
        if isinstance(t, Stacked):
            raise InferenceError(
                f"{block + ' ' if block else ''}reads one value per row, but `{key}` is {t}, one value per "
                f"iteration of a traced layer; it is meant for losses and outputs"
            )
        name = key.split(".", 1)[-1]
        if isinstance(t, Irreps) and any(l == 0 and p == 1 for _m, l, p in t.terms):
            way = f"its `0e` part (`{{type: irreps_select, input: {key}, select: 0e, output: ...}}`)"
        elif isinstance(t, Irreps) and all(l == 1 and p == -1 for _m, l, p in t.terms):
            space = key.split(".", 1)[0]
            way = (f"its length (`{{type: vector_norm, input: {key}, output: {space}.{name}_norm}}`) or its dot "
                   f"product with another vector field (`{{type: vector_dot, inputs: [{key}, ...], output: ...}}`)")
        else:
            way = "an invariant made from it (irreps_select of its `0e` part, or a tensor product to `0e`)"
        raise InferenceError(
            f"{block + ' ' if block else ''}is not equivariant and cannot read field `{key}` of "
            f"type {t} (it would break rotation symmetry); feed it {way}"
        )

    def need_vector(self, key: str, block: str = "") -> None:
        t = self.need(key, block)
        if not (isinstance(t, Irreps) and t.is_vector):
            raise InferenceError(
                f"{block + ' ' if block else ''}needs `{key}` to be a vector field of type 1o, found {t}"
            )

    def copy(self) -> "FieldTable":
        return FieldTable(self)
