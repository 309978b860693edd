"""Experiment grids: expand a grid file into training runs, run them resumably, and tabulate mean ± std per cell.

A grid file (YAML, format in ``docs/sweeps.md``) names a base config,
overrides for every run, named axes whose levels are config overrides, the
seeds, and the layout of the result table. Every combination of one level per
axis is a cell (minus the ``exclude`` entries), and every cell is trained once
per seed in ``<out>/<axis>=<level>__.../seed=<seed>``.

A run whose ``summary.json`` exists is finished and is not trained again, so
an interrupted sweep resumes where it stopped; a run directory without
``summary.json`` was interrupted and is cleared and trained again. The sweep
writes ``table.md`` (mean ± sample standard deviation over the seeds, beside
the published number where the grid file gives one) and ``results.json``
(every run's value).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import re
import shutil
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml
from tqdm.auto import tqdm

from modalbalance.errors import ConfigError, ModalBalanceError
from modalbalance.progress import bar_disable
from modalbalance.training.checkpoint import write_json, write_text
from modalbalance.training.config import apply_override, dump_config, load_yaml, resolve_config_path, set_dotted_key
from modalbalance.training.formatting import check_summary_metric

logger = logging.getLogger("modalbalance")

GRID_KEYS = ("title", "description", "base", "set", "seeds", "axes", "exclude", "table", "paper", "paper_source")
TABLE_KEYS = ("rows", "columns", "row_format", "column_format", "row_header", "column_label", "metric", "scale", "decimals")
LEVEL_KEYS = ("name", "label", "set")
SHIPPED_GRIDS = "configs/grids"
LOCK_FILE = ".sweep.lock"
# Level names become parts of run directory names.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# -- the grid -------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One value of an axis: a name for directories and references, a label for the table, and config overrides."""

    axis: str
    name: str
    label: str
    overrides: Mapping[str, Any]


@dataclass(frozen=True)
class Cell:
    """One combination of levels, one per axis, in the axis order of the grid file."""

    levels: tuple[Level, ...]

    @property
    def names(self) -> dict[str, str]:
        return {level.axis: level.name for level in self.levels}

    @property
    def dirname(self) -> str:
        return "__".join(f"{level.axis}={level.name}" for level in self.levels) or "all"


@dataclass
class TableLayout:
    """Layout of the result table: the row and column axes, their labels, and the metric each entry shows."""

    rows: list[str]
    columns: list[str]
    row_format: str | None = None
    column_format: str | None = None
    row_header: str | None = None
    column_label: str | None = None
    metric: str = "test_accuracy"
    scale: float = 100.0
    decimals: int = 1


@dataclass
class Grid:
    """A parsed grid file."""

    name: str
    title: str
    description: str
    base: dict
    overrides: dict
    axes: dict[str, list[Level]]
    seeds: list[int]
    exclude: list[dict[str, frozenset[str]]]
    table: TableLayout
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    paper_source: str = ""
    text: str = ""

    def cells(self) -> list[Cell]:
        """Return every combination of one level per axis, in axis order, without the excluded ones."""
        combinations = itertools.product(*self.axes.values()) if self.axes else [()]
        return [Cell(tuple(levels)) for levels in combinations if not self.excluded(Cell(tuple(levels)))]

    def excluded(self, cell: Cell) -> bool:
        names = cell.names
        return any(all(names[axis] in allowed for axis, allowed in entry.items()) for entry in self.exclude)

    def row_label(self, levels: Sequence[Level]) -> str:
        return _format_label(levels, self.table.row_format, "")

    def column_label(self, levels: Sequence[Level]) -> str:
        return _format_label(levels, self.table.column_format, self.table.column_label or _metric_title(self.table))


def _format_label(levels: Sequence[Level], template: str | None, empty: str) -> str:
    if template is not None:
        return template.format_map({level.axis: level.label for level in levels})
    parts = [level.label for level in levels if level.label]
    return " / ".join(parts) if parts else empty


def _metric_title(table: TableLayout) -> str:
    unit = " (%)" if table.scale == 100 else ""
    return table.metric.replace("_", " ") + unit


def resolve_grid_path(name_or_path: str | Path) -> Path:
    """Find a grid file given a path or the name of a shipped grid (``table1_cgmnist`` or ``grids/table1_cgmnist``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path).removesuffix(".yaml").removeprefix("grids/")
    shipped = resources.files("modalbalance") / SHIPPED_GRIDS / f"{name}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    choices = shipped_grid_names()
    message = f"grid file not found: {name_or_path}; pass a YAML file or a shipped grid name ({', '.join(choices)})"
    raise ConfigError(message)


def shipped_grid_names() -> list[str]:
    root = resources.files("modalbalance") / SHIPPED_GRIDS
    if not root.is_dir():
        return []
    return sorted(entry.name[:-5] for entry in root.iterdir() if entry.name.endswith(".yaml"))


def load_grid(name_or_path: str | Path) -> Grid:
    """Read and validate a grid file; raise ConfigError naming the first invalid entry."""
    path = resolve_grid_path(name_or_path)
    data = load_yaml(path)
    where = f"grid {path}"
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(GRID_KEYS)}")

    base = _load_base(data.get("base"), path, where)
    overrides = _check_overrides(data.get("set") or {}, f"{where}: set")
    axes = _parse_axes(data.get("axes") or {}, where)
    seeds = _parse_seeds(data.get("seeds", [0]), where)
    exclude = _parse_exclude(data.get("exclude") or [], axes, where)
    table = _parse_table(data.get("table") or {}, axes, where)
    grid = Grid(
        name=path.name.removesuffix(".yaml"),
        title=str(data.get("title") or path.name),
        description=str(data.get("description") or "").strip(),
        base=base,
        overrides=overrides,
        axes=axes,
        seeds=seeds,
        exclude=exclude,
        table=table,
        paper_source=str(data.get("paper_source") or ""),
        text=path.read_text(encoding="utf-8"),
    )
    if not grid.cells():
        raise ConfigError(f"{where}: every cell is excluded; remove exclude entries")
    _check_labels(grid, where)
    grid.paper = _parse_paper(data.get("paper") or {}, grid, where)
    return grid


def _load_base(base: Any, grid_path: Path, where: str) -> dict:
    if base is None:
        return {}
    if not isinstance(base, str):
        raise ConfigError(f"{where}: base must be a config file or a shipped config name; got {base!r}")
    beside = grid_path.parent / base
    return load_yaml(beside if beside.is_file() else resolve_config_path(base))


def _check_overrides(overrides: Any, where: str) -> dict:
    if not isinstance(overrides, Mapping) or not all(isinstance(key, str) and key for key in overrides):
        raise ConfigError(f"{where} must be a mapping of config keys (such as train.epochs) to values; got {overrides!r}")
    return dict(overrides)


def _parse_axes(axes: Any, where: str) -> dict[str, list[Level]]:
    if not isinstance(axes, Mapping):
        raise ConfigError(f"{where}: axes must be a mapping of axis names to lists of levels; got {axes!r}")
    parsed: dict[str, list[Level]] = {}
    for axis, entries in axes.items():
        if not isinstance(axis, str) or not NAME_PATTERN.match(axis):
            raise ConfigError(f"{where}: axis name {axis!r} must use letters, digits, '.', '_', '+' or '-'")
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{where}: axes.{axis} must be a non-empty list of levels")
        levels = [_parse_level(axis, index, entry, where) for index, entry in enumerate(entries)]
        names = [level.name for level in levels]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"{where}: axes.{axis} has two levels named {duplicates[0]!r}; level names must be unique")
        parsed[axis] = levels
    return parsed


def _parse_level(axis: str, index: int, entry: Any, where: str) -> Level:
    at = f"{where}: axes.{axis}[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{at} must be a mapping with name, label and set; got {entry!r}")
    unknown = sorted(set(entry) - set(LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"{at}: unknown key {unknown[0]!r}; valid keys: {', '.join(LEVEL_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(f"{at} needs a name of letters, digits, '.', '_', '+' or '-' (it becomes part of a directory name); got {name!r}")
    label = entry.get("label", name)
    if label is None:
        label = ""
    overrides = _check_overrides(entry.get("set") or {}, f"{at}.set")
    return Level(axis=axis, name=name, label=str(label), overrides=overrides)


def _parse_seeds(seeds: Any, where: str) -> list[int]:
    valid = isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    if not valid or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seeds must be a non-empty list of distinct integers >= 0; got {seeds!r}")
    return list(seeds)


def _parse_exclude(entries: Any, axes: Mapping[str, list[Level]], where: str) -> list[dict[str, frozenset[str]]]:
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: exclude must be a list of mappings from axis names to level names")
    parsed = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not entry:
            raise ConfigError(f"{where}: exclude[{index}] must be a non-empty mapping from axis names to level names; got {entry!r}")
        rule = {}
        for axis, names in entry.items():
            if axis not in axes:
                raise ConfigError(f"{where}: exclude[{index}] names unknown axis {axis!r}; axes: {', '.join(axes)}")
            names = [names] if isinstance(names, str) else names
            known = {level.name for level in axes[axis]}
            for name in names:
                if name not in known:
                    raise ConfigError(f"{where}: exclude[{index}] names unknown level {name!r} of axis {axis!r}; levels: {', '.join(sorted(known))}")
            rule[axis] = frozenset(names)
        parsed.append(rule)
    return parsed


def _parse_table(table: Any, axes: Mapping[str, list[Level]], where: str) -> TableLayout:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: table must be a mapping; got {table!r}")
    unknown = sorted(set(table) - set(TABLE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key table.{unknown[0]}; valid keys: {', '.join(TABLE_KEYS)}")

    rows = table.get("rows", list(axes)[:1])
    columns = table.get("columns", [axis for axis in axes if axis not in rows])
    _check_table_axes(rows, columns, axes, where)
    layout = TableLayout(rows=rows, columns=columns)

    for key in ("row_format", "column_format", "row_header", "column_label", "metric"):
        if key in table:
            if not isinstance(table[key], str):
                raise ConfigError(f"{where}: table.{key} must be a string; got {table[key]!r}")
            setattr(layout, key, table[key])
    problem = check_summary_metric(layout.metric)
    if problem is not None:
        raise ConfigError(f"{where}: table.metric {problem}")

    if "scale" in table:
        scale = table["scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"{where}: table.scale must be a number > 0; got {scale!r}")
        layout.scale = float(scale)

    if "decimals" in table:
        decimals = table["decimals"]
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 6:
            raise ConfigError(f"{where}: table.decimals must be an integer from 0 to 6; got {decimals!r}")
        layout.decimals = decimals
    return layout


def _check_table_axes(rows: Any, columns: Any, axes: Mapping[str, list[Level]], where: str) -> None:
    for key, value in (("rows", rows), ("columns", columns)):
        if not isinstance(value, list) or not all(isinstance(axis, str) for axis in value):
            raise ConfigError(f"{where}: table.{key} must be a list of axis names; got {value!r}")
        for axis in value:
            if axis not in axes:
                raise ConfigError(f"{where}: table.{key} names unknown axis {axis!r}; axes: {', '.join(axes)}")
    if not rows:
        raise ConfigError(f"{where}: table.rows must name at least one axis; add an axis to the grid and name it there")
    placed = rows + columns
    if len(set(placed)) != len(placed) or set(placed) != set(axes):
        raise ConfigError(
            f"{where}: every axis must appear exactly once in table.rows or table.columns; axes {', '.join(axes)}, "
            f"rows {rows}, columns {columns}"
        )


def _check_labels(grid: Grid, where: str) -> None:
    """Reject format strings naming unknown axes and two cells that would share one table entry."""
    seen: dict[tuple[str, str], Cell] = {}
    for cell in grid.cells():
        by_axis = {level.axis: level for level in cell.levels}
        try:
            key = (grid.row_label([by_axis[a] for a in grid.table.rows]), grid.column_label([by_axis[a] for a in grid.table.columns]))
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(f"{where}: table.row_format or table.column_format is invalid ({error}); use {{axis}} fields") from None
        if key in seen:
            raise ConfigError(
                f"{where}: cells {seen[key].dirname} and {cell.dirname} both have row {key[0]!r} and column {key[1]!r}; give their levels distinct labels"
            )
        seen[key] = cell


def _parse_paper(paper: Any, grid: Grid, where: str) -> dict[str, dict[str, float]]:
    if not isinstance(paper, Mapping):
        raise ConfigError(f"{where}: paper must map row labels to mappings of column labels to numbers; got {paper!r}")
    rows, columns = set(), set()
    for row, column in table_entries(grid):
        rows.add(row)
        columns.add(column)
    parsed: dict[str, dict[str, float]] = {}
    for row, values in paper.items():
        if row not in rows:
            raise ConfigError(f"{where}: paper names row {row!r}, which the table does not have; rows: {', '.join(sorted(rows))}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: paper[{row!r}] must map column labels to numbers; got {values!r}")
        parsed[row] = {}
        for column, value in values.items():
            if column not in columns:
                raise ConfigError(f"{where}: paper[{row!r}] names column {column!r}, which the table does not have; columns: {', '.join(sorted(columns))}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: paper[{row!r}][{column!r}] must be a number; got {value!r}")
            parsed[row][column] = float(value)
    return parsed


def table_entries(grid: Grid) -> list[tuple[str, str]]:
    """Return the (row label, column label) of every cell that is not excluded."""
    entries = []
    for cell in grid.cells():
        by_axis = {level.axis: level for level in cell.levels}
        entries.append((grid.row_label([by_axis[a] for a in grid.table.rows]), grid.column_label([by_axis[a] for a in grid.table.columns])))
    return entries


# -- planning runs --------------------------------------------------------------


@dataclass
class PlannedRun:
    """One training run of a cell with one seed."""

    cell: Cell
    seed: int
    config: dict
    run_dir: Path

    @property
    def summary_path(self) -> Path:
        return self.run_dir / "summary.json"

    @property
    def status(self) -> str:
        """``done`` (summary.json exists), ``partial`` (interrupted: a directory without summary.json) or ``pending``."""
        if self.summary_path.is_file():
            return "done"
        return "partial" if self.run_dir.exists() else "pending"

    @property
    def label(self) -> str:
        return f"{self.cell.dirname} seed {self.seed}"


def set_keys(config: dict, overrides: Mapping[str, Any], where: str) -> None:
    """Apply ``{dotted.key: value}`` overrides in place; a value replaces what was there, mappings included."""
    for key, value in overrides.items():
        set_dotted_key(config, key, copy.deepcopy(value), where)


def parse_data_roots(assignments: Iterable[str]) -> dict[str, str]:
    """Parse ``NAME=DIR`` pairs into a mapping from data set name to root directory."""
    roots = {}
    for assignment in assignments:
        name, separator, root = assignment.partition("=")
        if not separator or not name or not root:
            raise ConfigError(f"invalid --data-root {assignment!r}; expected NAME=DIR, for example cgmnist=../shared/data/mnist")
        roots[name] = root
    return roots


def run_config(grid: Grid, cell: Cell, seed: int, overrides: Sequence[str] = (), data_roots: Mapping[str, str] | None = None) -> dict:
    """Build the (partial) config of one run: base, grid ``set``, the cell's levels, ``--set`` overrides, data root and seed."""
    config = copy.deepcopy(grid.base)
    set_keys(config, grid.overrides, f"grid {grid.name}: set")
    for level in cell.levels:
        set_keys(config, level.overrides, f"grid {grid.name}: axes.{level.axis} level {level.name!r}")
    for assignment in overrides:
        apply_override(config, assignment)
    data = config.setdefault("data", {})
    if not isinstance(data, dict):
        raise ConfigError(f"grid {grid.name}, cell {cell.dirname}: the data section must be a mapping; got {data!r}")
    name = data.get("name", "digits")
    if data_roots and name in data_roots:
        data["root"] = data_roots[name]
    config["seed"] = seed
    # The sweep shows one progress bar over runs; per-epoch bars of parallel runs would interleave.
    config.setdefault("train", {})["progress"] = False
    return config


def plan_runs(
    grid: Grid,
    out_dir: str | Path,
    overrides: Sequence[str] = (),
    data_roots: Mapping[str, str] | None = None,
) -> list[PlannedRun]:
    """Return every run of the grid with its config, validated, and its directory under ``out_dir``."""
    from modalbalance.training.runner import check_method_params, resolve

    out_dir = Path(out_dir)
    runs = []
    for cell in grid.cells():
        for seed in grid.seeds:
            config = run_config(grid, cell, seed, overrides, data_roots)
            try:
                resolved = resolve(config)
                check_method_params(resolved["method"])
            except ConfigError as error:
                raise ConfigError(f"grid {grid.name}, cell {cell.dirname}, seed {seed}: {error}") from None
            runs.append(PlannedRun(cell=cell, seed=seed, config=config, run_dir=out_dir / cell.dirname / f"seed={seed}"))
    return runs


def check_finished_config(run: PlannedRun) -> None:
    """Raise ConfigError if a finished run was trained with another config than the one planned for it."""
    from modalbalance.training.runner import resolve

    saved_path = run.run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    planned = yaml.safe_load(dump_config(resolve(run.config)))
    difference = _first_difference(planned, saved, "")
    if difference is not None:
        key, expected, found = difference
        raise ConfigError(
            f"finished run {run.run_dir} was trained with {key}={found!r} but the grid now sets {expected!r}; "
            "delete that run directory to train it again, or choose another --out"
        )


def _first_difference(planned: Any, saved: Any, prefix: str) -> tuple[str, Any, Any] | None:
    # Keys that only the saved config has (added by a newer trainer) do not count as differences.
    if isinstance(planned, dict) and isinstance(saved, dict):
        for key, value in planned.items():
            found = _first_difference(value, saved.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    if planned != saved:
        return prefix.rstrip("."), planned, saved
    return None


# -- running --------------------------------------------------------------------


@dataclass
class SweepResult:
    """Outcome of a sweep: every planned run, the runs trained now, the failures and the table."""

    runs: list[PlannedRun]
    trained: list[PlannedRun]
    failures: list[tuple[PlannedRun, str]]
    table: str
    out_dir: Path


def _configure_worker(log_level: int) -> None:
    """Set up a spawned worker: one thread per run, and the parent's log level on stderr."""
    import torch

    torch.set_num_threads(1)
    os.environ["TQDM_DISABLE"] = "1"
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [worker %(process)d] %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("modalbalance")
    root.handlers[:] = [handler]
    root.setLevel(log_level)
    root.propagate = False


def train_run(config: dict, run_dir: str) -> dict:
    """Train one run; the function that worker processes execute."""
    from modalbalance.training.runner import train

    return train(config, run_dir)


class SweepLock:
    """A lock file in the output directory, so that two sweeps never clear each other's runs.

    A lock left by a process that no longer exists (killed) is taken over.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_FILE

    def __enter__(self) -> "SweepLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner != os.getpid() and _process_exists(owner):
                    raise ConfigError(
                        f"another sweep (process {owner}) is writing to {self.path.parent}; wait for it to finish or choose another --out"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(str(os.getpid()))
            return self
        raise ConfigError(f"cannot create the sweep lock {self.path}; remove it if no sweep is running")

    def __exit__(self, *exc_info) -> None:
        self.path.unlink(missing_ok=True)

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_sweep(
    grid: Grid,
    out_dir: str | Path,
    workers: int = 1,
    overrides: Sequence[str] = (),
    data_roots: Mapping[str, str] | None = None,
) -> SweepResult:
    """Train every unfinished run of ``grid`` under ``out_dir``, then write ``table.md`` and ``results.json``.

    With ``workers`` > 1, runs train in that many spawned processes, each
    with one PyTorch thread; with 1 they train one after another in this
    process. A run that raises is logged and reported in ``failures``; the
    others go on. Finished runs (``summary.json`` present) are skipped.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1; got {workers!r}")
    out_dir = Path(out_dir)
    runs = plan_runs(grid, out_dir, overrides, data_roots)
    with SweepLock(out_dir):
        write_text(grid.text, out_dir / "grid.yaml")
        pending = []
        for run in runs:
            status = run.status
            if status == "done":
                check_finished_config(run)
                continue
            if status == "partial":
                logger.info("clearing interrupted run %s", run.run_dir)
                shutil.rmtree(run.run_dir)
            pending.append(run)
        logger.info(
            "sweep %s: %d runs, %d finished before, %d to train with %d worker(s), output in %s",
            grid.name,
            len(runs),
            len(runs) - len(pending),
            len(pending),
            workers,
            out_dir,
        )
        failures = _train_pending(pending, workers)
        table = write_outputs(grid, runs, out_dir)
    failed = {id(run) for run, _ in failures}
    return SweepResult(runs=runs, trained=[run for run in pending if id(run) not in failed], failures=failures, table=table, out_dir=out_dir)


def _train_pending(pending: list[PlannedRun], workers: int) -> list[tuple[PlannedRun, str]]:
    failures: list[tuple[PlannedRun, str]] = []
    bar = tqdm(total=len(pending), desc="sweep", unit="run", disable=bar_disable(bool(pending)))
    try:
        if workers == 1:
            for run in pending:
                _finish(run, _call(run), failures, bar)
        else:
            context = get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_configure_worker, initargs=(logger.getEffectiveLevel(),)) as pool:
                futures = {pool.submit(train_run, run.config, str(run.run_dir)): run for run in pending}
                for future in as_completed(futures):
                    run = futures[future]
                    try:
                        outcome: dict | BaseException = future.result()
                    except Exception as error:  # noqa: BLE001  (a failed run is reported, the sweep goes on)
                        outcome = error
                    _finish(run, outcome, failures, bar)
    finally:
        bar.close()
    return failures


def _call(run: PlannedRun) -> dict | BaseException:
    try:
        return train_run(run.config, str(run.run_dir))
    except Exception as error:  # noqa: BLE001  (a failed run is reported, the sweep goes on)
        if not isinstance(error, ModalBalanceError):
            logger.exception("run %s raised", run.label)
        return error


def _finish(run: PlannedRun, outcome: dict | BaseException, failures: list, bar) -> None:
    bar.update(1)
    if isinstance(outcome, BaseException):
        message = f"{type(outcome).__name__}: {outcome}"
        failures.append((run, message))
        logger.error("run %s failed: %s", run.label, message)
        return
    logger.info("run %s finished: test accuracy %s", run.label, outcome.get("test_accuracy"))


# -- results and the table ------------------------------------------------------


@dataclass
class CellResult:
    """The metric of one table entry over the seeds that have finished."""

    row: str
    column: str
    cell: Cell | None
    values: dict[int, float]
    run_dirs: dict[int, str]
    paper: float | None

    @property
    def excluded(self) -> bool:
        return self.cell is None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values.values()) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1 in the denominator); None below two values."""
        return statistics.stdev(self.values.values()) if len(self.values) >= 2 else None


def metric_value(summary: Mapping[str, Any], metric: str, where: str) -> float:
    """Look up a dotted key such as ``modality_test_accuracy.gray`` in a run summary."""
    value: Any = summary
    for part in metric.split("."):
        if not isinstance(value, Mapping) or part not in value:
            keys = ", ".join(sorted(summary))
            raise ConfigError(f"table.metric {metric!r} is not in the summary of {where}; summary keys: {keys}")
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"table.metric {metric!r} in the summary of {where} is not a number: {value!r}")
    return float(value)


def collect_results(grid: Grid, runs: Sequence[PlannedRun]) -> tuple[list[str], list[str], dict[tuple[str, str], CellResult]]:
    """Return row labels, column labels and every table entry, reading the finished runs' summary.json."""
    by_cell: dict[str, list[PlannedRun]] = {}
    for run in runs:
        by_cell.setdefault(run.cell.dirname, []).append(run)

    row_levels = list(itertools.product(*(grid.axes[a] for a in grid.table.rows)))
    column_levels = list(itertools.product(*(grid.axes[a] for a in grid.table.columns)))
    entries: dict[tuple[str, str], CellResult] = {}
    rows: list[str] = []
    columns: list[str] = []
    for row_part in row_levels:
        for column_part in column_levels:
            row, column = grid.row_label(row_part), grid.column_label(column_part)
            by_axis = {level.axis: level for level in (*row_part, *column_part)}
            cell = Cell(tuple(by_axis[axis] for axis in grid.axes))
            paper = grid.paper.get(row, {}).get(column)
            if grid.excluded(cell):
                entries.setdefault((row, column), CellResult(row, column, None, {}, {}, paper))
                continue
            values, run_dirs = {}, {}
            for run in by_cell.get(cell.dirname, []):
                if run.summary_path.is_file():
                    summary = json.loads(run.summary_path.read_text(encoding="utf-8"))
                    values[run.seed] = metric_value(summary, grid.table.metric, str(run.summary_path)) * grid.table.scale
                    run_dirs[run.seed] = str(run.run_dir)
            entries[(row, column)] = CellResult(row, column, cell, values, run_dirs, paper)
            if row not in rows:
                rows.append(row)
            if column not in columns:
                columns.append(column)
    return rows, columns, entries


def format_entry(result: CellResult, seeds: int, decimals: int) -> str:
    """Format one table entry: ``mean ± std``, the mean alone for one run, ``n/a`` when excluded, ``-`` when not run yet."""
    if result.excluded:
        return "n/a"
    if not result.values:
        return "-"
    text = f"{result.mean:.{decimals}f}"
    if result.std is not None:
        text += f" ± {result.std:.{decimals}f}"
    if len(result.values) < seeds:
        text += f" ({len(result.values)}/{seeds} seeds)"
    return text


def render_table(grid: Grid, rows: list[str], columns: list[str], entries: Mapping[tuple[str, str], CellResult]) -> str:
    """Render the results as a markdown table, with a paper column after every column that has paper numbers."""
    decimals = grid.table.decimals
    with_paper = {column for column in columns if any(entries[(row, column)].paper is not None for row in rows if (row, column) in entries)}
    header = [grid.table.row_header or " / ".join(grid.table.rows)]
    for column in columns:
        header.append(column)
        if column in with_paper:
            header.append(f"{column} (paper)")
    lines = [_markdown_row(header), _markdown_row(["---"] * len(header))]
    for row in rows:
        cells = [row]
        for column in columns:
            result = entries.get((row, column))
            cells.append(format_entry(result, len(grid.seeds), decimals) if result is not None else "n/a")
            if column in with_paper:
                paper = result.paper if result is not None else None
                cells.append(f"{paper:.{decimals}f}" if paper is not None else "")
        lines.append(_markdown_row(cells))

    seeds = ", ".join(str(s) for s in grid.seeds)
    note = f"{_metric_title(grid.table)}: mean ± sample standard deviation over seeds {seeds}."
    if with_paper:
        note += f" Paper numbers: {grid.paper_source or 'as given in the grid file'}."
    parts = [f"# {grid.title}", ""]
    if grid.description:
        parts += [grid.description, ""]
    parts += [note, "", *lines, ""]
    return "\n".join(parts)


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def write_outputs(grid: Grid, runs: Sequence[PlannedRun], out_dir: Path) -> str:
    """Write ``table.md`` and ``results.json`` from the finished runs and return the table."""
    rows, columns, entries = collect_results(grid, runs)
    table = render_table(grid, rows, columns, entries)
    write_text(table, out_dir / "table.md")
    results = {
        "grid": grid.name,
        "title": grid.title,
        "metric": grid.table.metric,
        "scale": grid.table.scale,
        "seeds": grid.seeds,
        "entries": [
            {
                "row": result.row,
                "column": result.column,
                "levels": result.cell.names if result.cell is not None else None,
                "excluded": result.excluded,
                "values": {str(seed): value for seed, value in sorted(result.values.items())},
                "mean": result.mean,
                "std": result.std,
                "runs": len(result.values),
                "paper": result.paper,
                "run_dirs": {str(seed): path for seed, path in sorted(result.run_dirs.items())},
            }
            for result in entries.values()
        ],
    }
    write_json(results, out_dir / "results.json")
    return table


def default_out_dir(grid: Grid) -> Path:
    """``runs/sweeps/<grid name>``: the same command resumes the same sweep."""
    return Path("runs") / "sweeps" / grid.name
