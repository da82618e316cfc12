"""``python -m graphdl.build_kernels``: build graphdl's fused CPU edge kernels now (``make test`` runs
it before the suite) instead of on first use; prints the time and exits 1 when they cannot be built."""

from graphdl.ops.kernels import main

if __name__ == "__main__":
    raise SystemExit(main())
