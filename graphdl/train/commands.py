"""``graphdl run`` and ``graphdl predict``: train from a spec, predict with a checkpoint.

Registered in :mod:`graphdl.cli` through :func:`add_parser`. A user error prints one line
and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

RUN_EPILOG = """examples:
  graphdl run specs/molecular/dmpnn_freesolv.yaml                 train, writing runs/<spec name>/
  graphdl run specs/molecular/dmpnn_freesolv.yaml --out runs/a --epochs 5 --seed 1   a quick trial, another seed
  graphdl run specs/molecular/dmpnn_freesolv.yaml --out runs/a --epochs 5 --seed 1 --resume   continue it if killed
  graphdl run specs/molecular/dmpnn_freesolv.yaml --out runs/a --overwrite   replace it once this run finishes
  graphdl run specs/molecular/gine_freesolv.yaml --split-file runs/a/split.json   the same split (chemprop's
                                                                  splits.json is read too)

Writes to --out: spec.yaml (resolved), metrics.json (per epoch and final, split sizes, seed),
best.pt and last.pt, learning_curve.png, test_predictions.csv, split.json, timing.json, run.json. On a terminal each
epoch shows a progress bar; in logs, one summary line per epoch.

A directory that holds a run is never replaced by accident: without --resume or --overwrite the
run is refused and nothing changes. With --overwrite the new run trains beside it (.DIR.incoming)
and its artefacts replace the old ones only when it has finished; a run that fails or is killed
leaves the old one as it was.
"""

PREDICT_EPILOG = """examples:
  graphdl predict specs/molecular/dmpnn_freesolv.yaml --checkpoint runs/a/best.pt --smiles CCO c1ccccc1
  graphdl predict specs/molecular/dmpnn_freesolv.yaml --checkpoint runs/a/best.pt --csv examples/molecules.csv --out p.csv
  graphdl predict specs/molecular/dmpnn_freesolv.yaml --checkpoint runs/a/best.pt --csv examples/molecules.csv --on-invalid skip

--on-invalid skip keeps invalid rows, with empty predictions and the reason in an `error` column.
From Python: graphdl.load("runs/fs").predict(["CCO"]) (SMILES, RDKit molecules, networkx or graphdl graphs).
"""


def add_parser(subparsers) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "run", help="train and evaluate a model spec on its dataset",
        description="Train the model of SPEC on the dataset its `dataset:` section names, select the best\n"
                    "epoch on the validation split, evaluate it on the test split and write every artefact.",
        epilog=RUN_EPILOG, formatter_class=fmt)
    p.add_argument("spec", metavar="SPEC", help="experiment spec (YAML with model, task, dataset, train)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<spec name>)")
    p.add_argument("--epochs", type=int, metavar="N", help="override train.epochs")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override train.device")
    p.add_argument("--seed", type=int, metavar="S", help="override train.seed (initial weights, shuffling, split)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt (same spec and overrides)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run DIR holds, once this run has finished (it trains beside it until then)")
    p.add_argument("--split-file", metavar="F", help="JSON split of source rows (train/val/test), e.g. chemprop's "
                                                     "splits.json; overrides the spec's split")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N graphs of the dataset")
    p.add_argument("--steps-per-epoch", type=int, metavar="N",
                   help="override train.steps_per_epoch: an epoch is N optimiser steps (a quick trial of a GNS spec)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--no-progress", action="store_true", help="one line per epoch even on a terminal")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser(
        "predict", help="predict properties of molecules with a trained checkpoint",
        description="Rebuild the model of SPEC, load the weights of CHECKPOINT (refused if it was trained\n"
                    "from another model spec) and print predictions as CSV.",
        epilog=PREDICT_EPILOG, formatter_class=fmt)
    p.add_argument("spec", metavar="SPEC", help="the spec the checkpoint was trained from")
    p.add_argument("--checkpoint", required=True, metavar="PT", help="best.pt or last.pt of a run")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--smiles", nargs="+", metavar="S", help="SMILES strings")
    src.add_argument("--csv", metavar="FILE", help="CSV file with a SMILES column")
    p.add_argument("--smiles-column", default="smiles", help="SMILES column of --csv (default: smiles)")
    p.add_argument("--out", metavar="FILE", help="write the CSV here (default: stdout)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    p.add_argument("--on-invalid", choices=["error", "skip"], default="error",
                   help="an invalid SMILES stops with its row (error, default), or its row is written with "
                        "empty predictions and the reason in an `error` column (skip)")
    p.set_defaults(func=cmd_predict)


def _positive(name: str, v: int | None) -> None:
    from graphdl.errors import SpecError

    if v is not None and v < 1:
        raise SpecError(f"{name} must be a positive integer, found {v}")


def cmd_run(args: argparse.Namespace) -> int:
    from graphdl.train.progress import Progress
    from graphdl.train.runner import run

    _positive("--epochs", args.epochs)
    _positive("--limit", args.limit)
    _positive("--steps-per-epoch", args.steps_per_epoch)
    progress = Progress(bars=False if args.no_progress else None, quiet=args.quiet)
    run(args.spec, out=args.out, epochs=args.epochs, device=args.device, seed=args.seed, resume=args.resume,
        split_file=args.split_file, limit=args.limit, progress=progress, overwrite=args.overwrite,
        steps_per_epoch=args.steps_per_epoch)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from graphdl.train.predict import predict, read_smiles_csv, write_csv

    smiles = args.smiles if args.smiles is not None else read_smiles_csv(args.csv, args.smiles_column)
    header, rows = predict(args.spec, args.checkpoint, smiles, device=args.device, on_invalid=args.on_invalid)
    write_csv(header, rows, args.out or sys.stdout)
    if args.out:
        print(f"wrote {len(rows)} predictions to {args.out}", file=sys.stderr)
    return 0


__all__ = ["add_parser", "cmd_predict", "cmd_run"]
