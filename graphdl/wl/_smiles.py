"""A small SMILES reader for the molecular WL pairs (heavy-atom graphs), so the family needs
no RDKit. Covers the organic subset, bracket atoms (element only), bonds ``- = # : / \\``,
branches, ring closures (``1``..``9``, ``%nn``) and ``.``; hydrogens, charges and
stereochemistry are read and dropped. The tests cross-check it against RDKit.
"""

from __future__ import annotations

import re

import networkx as nx

from graphdl.errors import DataError

_TOKEN = re.compile(
    r"(\[[^\]]*\])|(Cl|Br|B|C|N|O|P|S|F|I|b|c|n|o|p|s)|([-=#:/\\])|(\()|(\))|(%\d\d|\d)|(\.)"
)
_BRACKET = re.compile(r"\[\d*([A-Z][a-z]?|[a-z]{1,2})")
_ORDER = {"-": 1.0, "/": 1.0, "\\": 1.0, "=": 2.0, "#": 3.0, ":": 1.5}


def smiles_to_networkx(smiles: str) -> nx.Graph:
    """Heavy-atom graph of a SMILES string: node attribute ``label`` (element, capitalised),
    edge attribute ``bond`` (1, 2, 3, or 1.5 for aromatic)."""
    G = nx.Graph()
    pos, prev, stack, rings = 0, None, [], {}
    bond: str | None = None
    aromatic: dict[int, bool] = {}
    while pos < len(smiles):
        m = _TOKEN.match(smiles, pos)
        if m is None:
            raise DataError(f"invalid SMILES `{smiles}`: unexpected `{smiles[pos]}` at position {pos}")
        pos = m.end()
        atom = m.group(1) or m.group(2)
        if atom:
            if m.group(1):
                b = _BRACKET.match(atom)
                if b is None:
                    raise DataError(f"invalid SMILES `{smiles}`: cannot read the atom `{atom}`")
                sym = b.group(1)
            else:
                sym = atom
            i = G.number_of_nodes()
            G.add_node(i, label=sym[0].upper() + sym[1:])
            aromatic[i] = sym[0].islower()
            if prev is not None:
                G.add_edge(prev, i, bond=_bond(bond, aromatic[prev] and aromatic[i]))
            prev, bond = i, None
        elif m.group(3):
            bond = m.group(3)
        elif m.group(4):
            if prev is None:
                raise DataError(f"invalid SMILES `{smiles}`: a branch opens before any atom")
            stack.append(prev)
        elif m.group(5):
            if not stack:
                raise DataError(f"invalid SMILES `{smiles}`: unbalanced `)`")
            prev = stack.pop()
        elif m.group(6):
            if prev is None:
                raise DataError(f"invalid SMILES `{smiles}`: ring closure before any atom")
            digit = m.group(6)
            if digit in rings:
                j, b0 = rings.pop(digit)
                if j == prev or G.has_edge(j, prev):
                    raise DataError(f"invalid SMILES `{smiles}`: ring closure {digit} bonds an atom twice")
                G.add_edge(j, prev, bond=_bond(bond or b0, aromatic[j] and aromatic[prev]))
            else:
                rings[digit] = (prev, bond)
            bond = None
        else:  # "."
            prev, bond = None, None
    if stack:
        raise DataError(f"invalid SMILES `{smiles}`: unclosed branch `(`")
    if rings:
        raise DataError(f"invalid SMILES `{smiles}`: ring closure {', '.join(sorted(rings))} never closed")
    if G.number_of_nodes() == 0:
        raise DataError(f"invalid SMILES `{smiles}`: no atoms")
    return G


def _bond(symbol: str | None, both_aromatic: bool) -> float:
    if symbol is None:
        return 1.5 if both_aromatic else 1.0
    return _ORDER[symbol]
