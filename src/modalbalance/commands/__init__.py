"""Subcommands of the ``modalbalance`` CLI; each module has ``add_parser(subparsers)``."""
