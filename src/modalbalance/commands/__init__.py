"""Subcommands of the ``modalbalance`` CLI; each module has ``add_parser(subparsers)``."""


def add_override_argument(parser, help_text: str) -> None:
    """Add the repeatable ``--set KEY=VALUE`` option, collected in ``args.overrides``."""
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[], help=help_text)
