"""Geometric tooling: `graphdl verify` (equivariance measurements of compiled specs)."""
