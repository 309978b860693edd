"""``modalbalance configs``: list the shipped configs or show one."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("configs", help="list the shipped configs, or print one", description="List the configs shipped with modalbalance, or print one of them.")
    parser.add_argument("name", nargs="?", help="a shipped config to print, such as cgmnist/pmr_concat")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modalbalance.training.config import builtin_config_names, resolve_config_path

    if args.name is None:
        sys.stdout.write("\n".join(builtin_config_names()) + "\n")
        return 0
    sys.stdout.write(resolve_config_path(args.name).read_text(encoding="utf-8"))
    return 0
