"""Node and edge labels compared by value: the one place where labels become colour ids.

WL tests start from labels, and a label compared the wrong way changes the verdict: compared
as text, ``0.0`` and ``-0.0`` (or ``1`` and ``1.0``) are different colours and two isomorphic
graphs come out "distinguished"; compared through ``float64``, two integers above 2^53 are
one colour. Here every label is mapped to a *canonical key* that is equal exactly when the
values are equal, and keys are ranked, so label ids do not depend on node or graph order.

The rules (networkx attributes, :func:`label_key`):

* numbers compare by value, as Python's ``==`` does across ``int``, ``float``, ``bool``,
  ``Fraction``, ``Decimal``, ``complex`` and numpy scalars: ``-0.0 == 0.0``, ``1 == 1.0 ==
  True``, ``1 + 0j == 1``; ``float32(0.1) != 0.1`` (they are different values). NaN has no
  value equality and is refused (:class:`~graphdl.errors.DataError`), and so is ±inf (the
  same rule as for graphdl fields, which refuse non-finite values);
* strings compare as strings and bytes as bytes; the number ``1`` and the string ``"1"`` are
  different labels; ``None`` is a label of its own;
* lists, tuples, numpy arrays and torch tensors compare element-wise with these rules (a
  list equals a tuple or an array holding equal elements in the same nesting); sets and
  frozensets as sets, dicts as sets of (key, value) pairs;
* anything else is refused: map such labels to numbers or strings first.

graphdl fields (:func:`field_rows`): integer and boolean fields are compared as exact
integers, floating fields by value in float64 (``-0.0`` becomes ``0.0``); integer and
floating fields meet by value when every integer is exact in float64 (``|v| <= 2^53``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import torch

from graphdl.errors import DataError

_NUMBER, _STR, _BYTES, _NONE, _SEQ, _SET, _MAP = range(7)
_EXACT_INT = 2 ** 53
"""Integers of at most this magnitude are exact in float64."""


def _number_key(v: numbers.Number, where: str) -> tuple:
    if isinstance(v, numbers.Integral):  # bool, int, numpy ints: exact, always finite
        return (_NUMBER, int(v), 0)
    if isinstance(v, Decimal):
        finite = v.is_finite()
        re, im = v, 0
    elif isinstance(v, numbers.Real):
        re, im = v, 0
        finite = isinstance(v, numbers.Rational) or math.isfinite(float(v))
    else:  # complex
        c = complex(v)  # type: ignore[arg-type]
        re, im = c.real, c.imag
        finite = math.isfinite(re) and math.isfinite(im)
    if not finite:
        raise DataError(f"{where} is {v!r}; WL labels must be finite numbers (NaN equals nothing, "
                        f"not even itself); replace NaN/inf labels before the test")
    # ``+ 0`` turns a float -0.0 into 0.0 (equal anyway; this keeps printed keys tidy)
    return (_NUMBER, re + 0, im + 0)


def label_key(v: Any, where: str = "a label") -> tuple:
    """The canonical key of one label: equal keys ⟺ equal labels (module docstring rules).

    Keys of any two labels are ordered (tuples led by a kind tag), so they can be sorted.
    Raises :class:`~graphdl.errors.DataError` for NaN, ±inf and unsupported types; ``where``
    names the label in that message (e.g. ``"node 3 attribute `x`"``).
    """
    if isinstance(v, np.generic):  # numpy scalars: the Python value
        v = v.item()
    if isinstance(v, (np.ndarray, torch.Tensor)):
        v = v.tolist()  # nested lists, or a Python scalar for a 0-d array
        if not isinstance(v, list):
            return label_key(v, where)
    if isinstance(v, str):
        return (_STR, str(v))
    if isinstance(v, (bytes, bytearray)):
        return (_BYTES, bytes(v))
    if v is None:
        return (_NONE,)
    if isinstance(v, numbers.Number):
        return _number_key(v, where)
    if isinstance(v, (set, frozenset)):
        return (_SET, tuple(sorted(label_key(x, where) for x in v)))
    if isinstance(v, Mapping):
        return (_MAP, tuple(sorted((label_key(k, where), label_key(x, where)) for k, x in v.items())))
    if isinstance(v, Sequence):
        return (_SEQ, tuple(label_key(x, where) for x in v))
    raise DataError(f"{where} is a {type(v).__name__} ({v!r:.60}); WL labels must be numbers, strings, bytes, "
                    f"None, or lists/tuples/arrays/sets/dicts of them; map these labels to numbers or strings first")


def label_ids(keys: list[tuple]) -> tuple[np.ndarray, int]:
    """Dense ids of canonical keys, ranked by key (independent of input order)."""
    uniq = sorted(set(keys))
    rank = {k: i for i, k in enumerate(uniq)}
    return np.fromiter((rank[k] for k in keys), dtype=np.int64, count=len(keys)), len(uniq)


def field_rows(v: torch.Tensor, what: str) -> np.ndarray:
    """The rows of a graphdl field as a 2-D array for exact row comparison.

    Integer and boolean fields: ``int64`` (exact). Floating fields: ``float64`` with
    ``-0.0`` turned into ``0.0``. NaN / ±inf, complex values raise :class:`DataError`.
    """
    v = v.detach().cpu()
    if v.is_complex():
        raise DataError(f"{what} is complex; WL labels need real or integer values")
    flat = v.reshape(v.shape[0], int(np.prod(v.shape[1:])))
    if not v.is_floating_point():
        return flat.to(torch.int64).numpy()
    rows = flat.to(torch.float64).numpy() + 0.0  # IEEE: -0.0 + 0.0 = +0.0
    if not np.isfinite(rows).all():
        raise DataError(f"{what} contains NaN or infinite values; WL labels must be finite")
    return rows


def rows_common(rows: list[np.ndarray], what: str) -> list[np.ndarray]:
    """Bring integer and floating row blocks to one dtype so that they compare by value."""
    kinds = {r.dtype.kind for r in rows if r.size}
    if kinds <= {"i"} or kinds <= {"f"}:
        return rows
    out = []
    for r in rows:
        if r.dtype.kind == "i":
            big = max(abs(int(r.max())), abs(int(r.min()))) if r.size else 0
            if big > _EXACT_INT:
                raise DataError(f"{what} mix integer and floating fields, and an integer label ({big}) is not "
                                f"exact in float64; give all graphs one dtype for this field")
            r = r.astype(np.float64)
        out.append(r)
    return out
