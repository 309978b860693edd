"""``modalbalance plot``: (re)draw the PNG plots of a run directory."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="draw the accuracy, imbalance, loss and gradient-angle plots of runs",
        description="Write the PNG plots of each run into RUN_DIR/plots/, for example for a run that is still training "
        "or one trained with train.plots=false.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory written by modalbalance train")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modalbalance.analysis.plots import plot_run

    for run_dir in args.run_dirs:
        for path in plot_run(run_dir):
            sys.stdout.write(f"{path}\n")
    return 0
