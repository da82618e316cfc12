"""Test helpers that ship with graphdl: graph catalogues, parity and symmetry assertions.

Import the module you need, e.g. ``from graphdl.testing.graph_cases import graph_cases``.
"""
