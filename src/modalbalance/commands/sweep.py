"""``modalbalance sweep``: train every run of an experiment grid, resumably, and write the result table."""

from __future__ import annotations

import argparse
import sys

from modalbalance.commands import add_override_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="train an experiment grid (data set x fusion x method x ... x seed) and tabulate mean ± std",
        description="Train every run of a grid file and write table.md (mean ± std per cell, with the paper's numbers "
        "where the grid gives them) and results.json. Finished runs (those with summary.json) are skipped, so "
        "running the same command again resumes an interrupted sweep. Shipped grids: "
        "table1_cgmnist, table2_cgmnist, table3_cgmnist, table5_cgmnist, table6_cgmnist, the CREMA-D/AVE "
        "variants and tiny_digits.",
    )
    parser.add_argument("grid", metavar="FILE", help="grid YAML file, or a shipped grid name such as tiny_digits or table1_cgmnist")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="number of runs trained at once, each in its own process with one thread (default 1: one after another in this process)")
    parser.add_argument("--out", metavar="DIR", help="sweep directory (default: runs/sweeps/<grid name>); reuse it to resume")
    add_override_argument(
        parser,
        "override one config value in every run, applied after the grid's own values, for example --set train.epochs=2 (repeatable)",
    )
    parser.add_argument(
        "--data-root",
        dest="data_roots",
        metavar="NAME=DIR",
        action="append",
        default=[],
        help="set data.root for the runs on data set NAME, for example --data-root cgmnist=../shared/data/mnist (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the runs and whether each is done, changed (finished with another config), partial (interrupted) or pending; train nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from modalbalance.errors import ConfigError
    from modalbalance.training.sweep import (
        check_finished_config,
        default_out_dir,
        load_grid,
        parse_data_roots,
        plan_runs,
        run_sweep,
    )

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1; got {args.workers}")
    grid = load_grid(args.grid)
    out_dir = Path(args.out) if args.out else default_out_dir(grid)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a directory; choose another sweep directory")
    data_roots = parse_data_roots(args.data_roots)

    if args.dry_run:
        runs = plan_runs(grid, out_dir, args.overrides, data_roots)
        for planned in runs:
            status, reason = planned.status, ""
            if status == "done":
                try:
                    check_finished_config(planned)
                except ConfigError as error:
                    status, reason = "changed", f"  ({error})"
            sys.stdout.write(f"{status:8s} {planned.run_dir}{reason}\n")
        sys.stdout.write(f"{len(runs)} runs in {out_dir}\n")
        return 0

    result = run_sweep(grid, out_dir, workers=args.workers, overrides=args.overrides, data_roots=data_roots)
    sys.stdout.write(result.table + "\n")
    sys.stdout.write(f"table: {out_dir / 'table.md'}; every run's value: {out_dir / 'results.json'}\n")
    if result.failures:
        for planned, message in result.failures:
            sys.stderr.write(f"modalbalance sweep: run {planned.run_dir} failed: {message}\n")
        sys.stderr.write(f"modalbalance sweep: {len(result.failures)} of {len(result.runs)} runs failed; run the same command again to retry them\n")
        return 1
    return 0
