"""``modalbalance evaluate``: evaluate a training checkpoint on a data split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modalbalance.errors import ConfigError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint: fused accuracy, macro-F1, confusion matrix, per-modality accuracy",
        description="Rebuild the data set and model from a checkpoint's config, load its weights and the prototypes "
        "of its last evaluation, and report fused accuracy, macro-F1, the confusion matrix and each modality's "
        "prototype accuracy (and linear-head accuracy for concat and sum fusions).",
    )
    parser.add_argument("--checkpoint", metavar="FILE", required=True, help="checkpoint written by `modalbalance train`, such as runs/NAME/last.pt")
    parser.add_argument(
        "--split",
        choices=("test", "train", "val"),
        default="test",
        help="data split to evaluate (default: test); train is the whole training set, val exists only for data sets with a val_fraction",
    )
    parser.add_argument("--data-root", metavar="DIR", help="data directory to read instead of the data.root stored in the checkpoint")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device to evaluate on (default: cpu)")
    parser.add_argument("--out", metavar="FILE.json", help="also write the results, confusion matrix included, to this JSON file")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="unpickle the checkpoint in full instead of weights-only; this can run code stored in the file",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modalbalance.analysis.evaluate import evaluate_checkpoint, format_evaluation
    from modalbalance.training.checkpoint import write_json

    result = evaluate_checkpoint(args.checkpoint, args.split, args.data_root, args.device, args.trust_checkpoint)
    sys.stdout.write(format_evaluation(result) + "\n")
    if args.out:
        # Never replace an existing file, which could be the checkpoint itself.
        if Path(args.out).exists():
            raise ConfigError(f"--out {args.out} already exists; choose a new file name for the results")
        write_json(result, args.out)
        sys.stdout.write(f"results written to {args.out}\n")
    return 0
