"""``modalbalance report``: compare run directories in one HTML page and a markdown twin."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="compare runs in a self-contained HTML page (and a markdown twin)",
        description="Write one HTML page that compares run directories: the config keys that differ, a table of "
        "final metrics with one row per run, and overlaid curves of test accuracy, each modality's prototype "
        "accuracy and the imbalance ratio. The page embeds its images and loads nothing from the network. A "
        "markdown version with the same content and its PNG files is written next to it.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory written by `modalbalance train`")
    parser.add_argument(
        "--out",
        metavar="FILE.html",
        default="report.html",
        help="HTML file to write (default: report.html); the .md twin and PNG files go to the same folder",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modalbalance.analysis.report import write_report

    written = write_report(args.run_dirs, args.out)
    sys.stdout.write(f"report: {written[0]}\nmarkdown: {written[1]}\n")
    return 0
