"""Exact colour dictionaries for WL refinement: rows and multisets to dense integer ids.

Every refinement round of 1-WL, k-WL and k-FWL ends the same way: each node (or tuple) has
a *signature* — its own colour and a multiset of neighbour codes — and equal signatures must
get equal new colours, different signatures different ones. The helpers here do that for a
whole batch at once with array operations:

1. hash each signature into 64 bits with a commutative multiset hash
   ``mix(own) + sum(mix(code))`` (splitmix64 finaliser, wrapping ``uint64`` arithmetic) — no
   sort is needed for the hash itself;
2. ``np.unique`` of the hashes gives candidate classes and one representative per class;
3. **verify** every signature against its representative element by element (on sorted
   codes), so a 64-bit collision can never merge two colours. If one ever occurs, the round
   falls back to an exact lexicographic ``np.unique(..., axis=0)`` of padded rows.

Colour ids are ranks of hash values, so they depend only on the signatures (not on node
order, graph order or batch composition) and are comparable across the graphs of one call.

numpy rather than torch: its SIMD sorts are several times faster on CPU, and WL is an
analysis tool, not part of a model's forward pass.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_SALT_OWN = np.uint64(0x243F6A8885A308D3)
_SALT_LEN = np.uint64(0x13198A2E03707344)
_SALT_ELEM = np.uint64(0xA4093822299F31D0)

HASH_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
"""Tests narrow this to force hash collisions and exercise the exact fallback."""

INT64_MAX = np.iinfo(np.int64).max


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of an integer array (``uint64``, wrapping arithmetic)."""
    z = np.asarray(x).astype(np.uint64) + _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _mixed(x: np.ndarray, salt: np.uint64) -> np.ndarray:
    return mix(np.asarray(x).astype(np.uint64) ^ salt)


def pack_columns(columns: list[np.ndarray], radices: list[int]) -> np.ndarray | None:
    """``sum(col_i * prod(radices[i+1:]))`` as int64, or None when it could overflow."""
    total = 1
    for r in radices:
        total *= max(int(r), 1)
    if total > INT64_MAX:
        return None
    out = np.zeros(np.broadcast_shapes(*[np.shape(c) for c in columns]), dtype=np.int64)
    for c, r in zip(columns, radices):
        out = out * np.int64(max(int(r), 1)) + np.asarray(c, dtype=np.int64)
    return out


def row_ids(columns: list[np.ndarray], radices: list[int] | None = None) -> tuple[np.ndarray, int]:
    """Dense ids of fixed-width rows given as equally shaped columns (exact).

    ``radices[i]`` bounds column ``i`` (values in ``[0, radices[i])``); when the rows fit into
    one int64 they are packed and ranked lexicographically, else hashed and verified.
    Returns ``(ids, number_of_ids)`` with ``ids`` shaped like the columns.
    """
    columns = [np.asarray(c, dtype=np.int64) for c in columns]
    shape = np.broadcast_shapes(*[c.shape for c in columns])
    columns = [np.broadcast_to(c, shape) for c in columns]
    if radices is None:
        radices = [int(c.max()) + 1 if c.size else 1 for c in columns]
    packed = pack_columns(columns, radices)
    if packed is not None:
        uniq, inv = np.unique(packed.reshape(-1), return_inverse=True)
        return inv.reshape(shape).astype(np.int64), len(uniq)
    flat = [c.reshape(-1) for c in columns]
    h = np.zeros(flat[0].shape, dtype=np.uint64)
    for c in flat:
        h = mix(h ^ c.astype(np.uint64))
    h &= HASH_MASK
    uniq, first, inv = np.unique(h, return_index=True, return_inverse=True)
    rep = first[inv]
    if all(np.array_equal(c, c[rep]) for c in flat):
        return inv.reshape(shape).astype(np.int64), len(uniq)
    uniq, inv = np.unique(np.stack(flat, 1), axis=0, return_inverse=True)
    return inv.reshape(shape).astype(np.int64), len(uniq)


# ------------------------------------------------------------------ ragged multisets
def ragged_multiset_ids(
    own: np.ndarray, entries: np.ndarray, seg: np.ndarray, n: int
) -> tuple[np.ndarray, int]:
    """Ids of signatures ``(own[v], {{entries[e] : seg[e] == v}})`` for ``v < n`` (exact).

    ``entries`` must be sorted by ``(seg, entry)``: each segment contiguous and ascending, which
    is what makes element-wise verification against a representative possible.
    """
    own = np.asarray(own, dtype=np.int64)
    entries = np.asarray(entries, dtype=np.int64)
    length = np.bincount(seg, minlength=n).astype(np.int64)
    rowptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(length, out=rowptr[1:])
    cs = np.zeros(len(entries) + 1, dtype=np.uint64)
    if len(entries):
        np.cumsum(_mixed(entries, _SALT_ELEM), out=cs[1:])
    h = cs[rowptr[1:]] - cs[rowptr[:-1]]  # wrapping uint64 segment sums
    h = mix(h + _mixed(own, _SALT_OWN) + _mixed(length, _SALT_LEN)) & HASH_MASK
    uniq, first, inv = np.unique(h, return_index=True, return_inverse=True)
    rep = first[inv]
    ok = np.array_equal(own, own[rep]) and np.array_equal(length, length[rep])
    if ok and len(entries):
        pos = np.arange(len(entries), dtype=np.int64) - rowptr[seg]
        ok = np.array_equal(entries, entries[rowptr[rep[seg]] + pos])
    if ok:
        return inv.astype(np.int64), len(uniq)
    return _ragged_lexicographic(own, entries, seg, length, rowptr, n)


def _ragged_lexicographic(own, entries, seg, length, rowptr, n) -> tuple[np.ndarray, int]:
    width = int(length.max()) if n else 0
    rows = np.full((n, width + 2), -1, dtype=np.int64)
    rows[:, 0] = length
    rows[:, 1] = own
    if len(entries):
        pos = np.arange(len(entries), dtype=np.int64) - rowptr[seg]
        rows[seg, pos + 2] = entries
    uniq, inv = np.unique(rows, axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), len(uniq)


# -------------------------------------------------------------- fixed-width multisets
def sort_words(words: list[np.ndarray]) -> list[np.ndarray]:
    """Sort multi-word codes along the last axis lexicographically (first word most significant)."""
    if len(words) == 1:
        return [np.sort(words[0], axis=-1)]
    order = np.lexsort(tuple(reversed(words)), axis=-1)
    return [np.take_along_axis(w, order, axis=-1) for w in words]


class MultisetDictionary:
    """Exact ids of ``(own, multiset of L codes)`` signatures, fed in chunks.

    Each chunk gives ``own`` ``(R,)`` and ``words``: a list of ``(R, L)`` int64 arrays (one
    code split over several words when it does not fit one int64). Only each chunk's
    distinct signatures are kept, so memory follows the number of colours, not of tuples.
    Call :meth:`finish` for ``(ids, number_of_ids)`` of all rows in feeding order.
    """

    def __init__(self) -> None:
        self._hashes: list[np.ndarray] = []
        self._own: list[np.ndarray] = []
        self._rows: list[list[np.ndarray]] = []
        self._inverse: list[np.ndarray] = []
        self.exact = True

    @staticmethod
    def hash_rows(own: np.ndarray, words: list[np.ndarray]) -> np.ndarray:
        h = np.zeros(words[0].shape, dtype=np.uint64)
        for i, w in enumerate(words):
            h = mix(h ^ (w.astype(np.uint64) + np.uint64(i)))
        h = h.sum(axis=-1, dtype=np.uint64)  # commutative over the multiset
        length = np.full(own.shape, words[0].shape[-1], dtype=np.uint64)
        return mix(h + _mixed(own, _SALT_OWN) + _mixed(length, _SALT_LEN)) & HASH_MASK

    def add(self, own: np.ndarray, words: list[np.ndarray]) -> None:
        own = np.asarray(own, dtype=np.int64).reshape(-1)
        words = [np.asarray(w, dtype=np.int64).reshape(len(own), -1) for w in words]
        h = self.hash_rows(own, words)
        uniq, first, inv = np.unique(h, return_index=True, return_inverse=True)
        mine = sort_words(words)
        srt = [m[first] for m in mine]
        rep_own = own[first]
        # verify every row of the chunk against the representative of its hash class
        if not (np.array_equal(own, rep_own[inv]) and all(np.array_equal(m, s[inv]) for m, s in zip(mine, srt))):
            self.exact = False
        if self.exact:
            self._hashes.append(uniq)
            self._own.append(rep_own)
            self._rows.append(srt)
            self._inverse.append(inv.astype(np.int64))
        else:  # keep the full rows of this chunk for the lexicographic fallback
            self._hashes.append(None)  # type: ignore[arg-type]
            self._own.append(own)
            self._rows.append(mine)
            self._inverse.append(np.arange(len(own), dtype=np.int64))

    def finish(self) -> tuple[np.ndarray, int]:
        if self.exact:
            h = np.concatenate(self._hashes)
            uniq, first, inv = np.unique(h, return_index=True, return_inverse=True)
            own = np.concatenate(self._own)
            rows = [np.concatenate([r[i] for r in self._rows]) for i in range(len(self._rows[0]))]
            rep = first[inv]
            if np.array_equal(own, own[rep]) and all(np.array_equal(r, r[rep]) for r in rows):
                out, offset = [], 0
                for local, hashes in zip(self._inverse, self._hashes):
                    out.append(inv[offset + local])
                    offset += len(hashes)
                return np.concatenate(out).astype(np.int64), len(uniq)
        return self._lexicographic()

    def _lexicographic(self) -> tuple[np.ndarray, int]:
        """Collision fallback: exact ``np.unique(axis=0)`` over full rows of every chunk."""
        full_rows = []
        for own, rows, local, h in zip(self._own, self._rows, self._inverse, self._hashes):
            if h is not None:  # a chunk stored compressed: expand it again
                own, rows = own[local], [r[local] for r in rows]
            full_rows.append(np.column_stack([own] + rows))
        uniq, inv = np.unique(np.concatenate(full_rows), axis=0, return_inverse=True)
        return inv.reshape(-1).astype(np.int64), len(uniq)


def split_into_words(components: list[np.ndarray], radix: int) -> list[np.ndarray]:
    """Pack components (each in ``[0, radix)``) greedily into as few int64 words as fit."""
    words, cur, cur_size = [], None, 1
    for c in components:
        c = np.asarray(c, dtype=np.int64)
        if cur is not None and cur_size * radix <= INT64_MAX:
            cur = cur * np.int64(radix) + c
            cur_size *= radix
        else:
            if cur is not None:
                words.append(cur)
            cur, cur_size = c, radix
    words.append(cur)
    return words
