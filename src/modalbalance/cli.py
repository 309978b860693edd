"""The ``modalbalance`` command line: subcommands, logging switches and one-line errors."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from modalbalance import __version__
from modalbalance.errors import ConfigError, ModalBalanceError

# Subcommand modules under modalbalance.commands; a missing one is skipped so
# that optional commands can be added without touching this list's users.
COMMANDS = ("train", "prepare", "evaluate", "plot", "report", "sweep", "configs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modalbalance", description="Balanced multimodal learning: PMR and its baselines.")
    parser.add_argument("--version", action="version", version=f"modalbalance {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only, and hide progress bars")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"modalbalance.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"modalbalance.commands.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.INFO
    if verbose:
        level = logging.DEBUG
    elif quiet:
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("modalbalance")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def report_error(command: str, error: ModalBalanceError) -> None:
    """Write the one-line error, once per torchrun job for config errors.

    Under torchrun (``RANK`` set) every process checks the same config and
    would print the same config error, so only rank 0 prints it. Other errors
    can differ between processes, so every process prints them, tagged with its rank.
    """
    rank = os.environ.get("RANK", "0")
    if rank == "0":
        sys.stderr.write(f"modalbalance {command}: error: {error}\n")
    elif not isinstance(error, ConfigError):
        sys.stderr.write(f"modalbalance {command} (rank {rank}): error: {error}\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    configure_logging(args.verbose, args.quiet)
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm(loggers=[logging.getLogger("modalbalance")]):
            return args.func(args)
    except ModalBalanceError as error:
        report_error(args.command, error)
        return 2
    except BrokenPipeError:
        # The reader of stdout went away (`modalbalance sweep ... | head`); stop quietly.
        # Pointing stdout at /dev/null keeps the interpreter's final flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        hint = "; continue it with: modalbalance train --resume RUN_DIR" if args.command == "train" else ""
        sys.stderr.write(f"modalbalance {args.command}: interrupted{hint}\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
