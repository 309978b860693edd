"""``modalbalance train``: train one model from a config."""

from __future__ import annotations

import argparse
import sys

from modalbalance.commands import add_override_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a multimodal model (PMR on the embedded digits by default)",
        description="Train a multimodal model from a YAML config. With no arguments, trains PMR with concat fusion "
        "on the embedded Colored-and-Gray digits, which need no download.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config file, or a shipped config name such as cgmnist/pmr_concat")
    add_override_argument(parser, "override one config value, for example --set method.alpha=2 --set train.epochs=5 (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="run directory to create (default: runs/<dataset>_<method>_<fusion>_<time>)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the unfinished run in RUN_DIR from its last checkpoint, with the config saved there "
        "(takes no --config, --set or --out)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modalbalance.errors import ConfigError
    from modalbalance.training import distributed
    from modalbalance.training.config import load_config
    from modalbalance.training.runner import format_summary_table, resume, train

    if args.out is not None and not args.out.strip():
        raise ConfigError("--out is empty; give it a directory to create, such as runs/my_run, or leave it out for the default")
    if args.resume is not None:
        if args.config is not None or args.overrides or args.out is not None:
            raise ConfigError("--resume takes the config and the run directory from RUN_DIR; drop --config, --set and --out")
        summary = resume(args.resume)
    else:
        config = load_config(args.config, args.overrides)
        summary = train(config, args.out)
    # Under torchrun every process returns the summary; one table is enough.
    if distributed.env_rank() == 0:
        sys.stdout.write(format_summary_table(summary) + "\n")
    return 0
