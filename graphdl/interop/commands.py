"""``graphdl export``: a spec and its trained weights as a plain PyTorch module of DGL or PyG layers.

Registered in :mod:`graphdl.cli` through :func:`add_parser`. A block without an exact
counterpart, or a checkpoint of another spec, prints one line and exits with status 2; a parity
check that fails exits with status 1 (the files stay written, for inspection).
"""

from __future__ import annotations

import argparse

EXPORT_EPILOG = """examples:
  graphdl run specs/molecular/gine_freesolv.yaml --out runs/fs-gine          train: the run writes best.pt
  graphdl export specs/molecular/gine_freesolv.yaml --checkpoint runs/fs-gine/best.pt --to dgl
  graphdl export specs/molecular/gine_freesolv.yaml --checkpoint runs/fs-gine/best.pt --to pyg --out gine_pyg
  graphdl export specs/sage.yaml --to dgl --out sage_dgl    no checkpoint: the spec's initial weights (seed 0)

The first export writes runs/fs-gine/export_dgl/ (default: export_<to> beside the checkpoint):
DIR/model.py (class ExportedModel, no graphdl import; load(DIR) builds it with the weights),
DIR/weights.pt (its state_dict; torch.load(..., weights_only=True)) and DIR/export.json (provenance
and parity). Use it as
  net = model.load("DIR"); out = net(g, {"node.h": x})               # --to dgl: g a DGLGraph
  net = model.load("DIR"); out = net(edge_index, {"node.h": x}, batch)  # --to pyg
Every block is exported exactly or refused: the parity check printed compares the exported module
with the compiled spec on a sample batch (float64 and the weights' dtype).
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a trained spec as a plain PyTorch module of dgl.nn or torch_geometric.nn layers",
        description="Build SPEC, load the weights of CHECKPOINT and write a PyTorch module made of DGL\n"
                    "(--to dgl) or PyTorch Geometric (--to pyg) layers with those weights copied in, then\n"
                    "print a parity check of the two on a sample batch.",
        epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC", help="the model spec the checkpoint was trained from")
    p.add_argument("--checkpoint", metavar="PT", help="best.pt or last.pt of a run (default: initial weights)")
    p.add_argument("--to", required=True, choices=["dgl", "pyg"], help="target library")
    p.add_argument("--out", metavar="DIR", help="output directory (default: export_<to> beside the checkpoint)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from graphdl.interop.export import export

    result = export(args.spec, to=args.to, checkpoint=args.checkpoint, out=args.out)
    print(result.summary())
    return 0 if result.parity["ok"] else 1


__all__ = ["add_parser", "cmd_export"]
