"""Experiment grids: the table matches the runs' summaries, interrupted sweeps resume, grid files are validated."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli

import modalbalance.training.sweep as sweep
from modalbalance.errors import ConfigError
from modalbalance.training.sweep import (
    load_grid,
    plan_runs,
    run_sweep,
    shipped_grid_names,
)

TINY = ["train.epochs=1"]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def summaries(out_dir: Path) -> dict[str, dict]:
    return {str(path.parent.relative_to(out_dir)): json.loads(path.read_text()) for path in sorted(out_dir.glob("*/seed=*/summary.json"))}


def table_rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def write_grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def fake_training(calls: list):
    """Stand in for training: write a summary whose accuracy is read from the run's config (data.fake_accuracy)."""

    def train_run(config, run_dir):
        calls.append(run_dir)
        path = Path(run_dir)
        path.mkdir(parents=True)
        summary = {"test_accuracy": config["data"]["fake_accuracy"][config["seed"]], "seconds": 0.0}
        (path / "summary.json").write_text(json.dumps(summary))
        return summary

    return train_run


# --- a real tiny sweep --------------------------------------------------------


def test_tiny_sweep_table_matches_summaries(tmp_path):
    out = tmp_path / "sweep"
    result = run_sweep(load_grid("tiny_digits"), out, overrides=TINY)

    found = summaries(out)
    assert sorted(found) == ["method=naive/seed=0", "method=naive/seed=1", "method=pmr/seed=0", "method=pmr/seed=1"]
    assert not result.failures
    assert len(result.trained) == 4

    rows = table_rows((out / "table.md").read_text())
    results = json.loads((out / "results.json").read_text())
    for method, label in (("naive", "naive"), ("pmr", "PMR")):
        values = [100 * found[f"method={method}/seed={seed}"]["test_accuracy"] for seed in (0, 1)]
        expected = f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"
        assert rows[label] == [expected]
        entry = next(e for e in results["entries"] if e["row"] == label)
        assert entry["values"] == {"0": values[0], "1": values[1]}
        assert entry["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)


def test_tiny_sweep_runs_used_grid_config(tmp_path):
    out = tmp_path / "sweep"
    run_sweep(load_grid("tiny_digits"), out, overrides=TINY)
    summary = json.loads((out / "method=pmr" / "seed=1" / "summary.json").read_text())
    assert summary["method"] == "pmr"
    assert summary["seed"] == 1
    assert summary["epochs"] == 1
    assert summary["dataset"] == "digits"


def test_deleted_summary_reruns_only_that_run(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    grid = load_grid("tiny_digits")
    run_sweep(grid, out, overrides=TINY)
    before = {key: (out / key / "summary.json").stat().st_mtime_ns for key in summaries(out)}
    (out / "method=naive" / "seed=1" / "summary.json").unlink()

    calls = []
    original = sweep.train_run
    monkeypatch.setattr(sweep, "train_run", lambda config, run_dir: calls.append(run_dir) or original(config, run_dir))
    result = run_sweep(grid, out, overrides=TINY)

    assert calls == [str(out / "method=naive" / "seed=1")]
    assert len(result.trained) == 1
    for key, mtime in before.items():
        if key != "method=naive/seed=1":
            assert (out / key / "summary.json").stat().st_mtime_ns == mtime
    assert (out / "method=naive" / "seed=1" / "summary.json").is_file()


def test_changed_config_of_finished_run_is_rejected(tmp_path):
    out = tmp_path / "sweep"
    grid = load_grid("tiny_digits")
    run_sweep(grid, out, overrides=TINY)
    with pytest.raises(ConfigError, match="trained with train.epochs=1 but the grid now sets 2"):
        run_sweep(grid, out, overrides=["train.epochs=2"])

    result = run_cli("sweep", "tiny_digits", "--out", str(out), "--set", "train.epochs=2", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()[:-1]
    assert len(lines) == 4
    assert all(line.startswith("changed") for line in lines)
    assert "trained with train.epochs=1" in lines[0]


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_runs(tmp_path):
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "modalbalance.cli", "-q", "sweep", "tiny_digits", "--out", str(out), "--set", "train.epochs=4"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("*/seed=*/summary.json")):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no run finished within 300 s"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()

    finished = {key: (out / key / "summary.json").stat().st_mtime_ns for key in summaries(out)}
    assert 1 <= len(finished) < 4
    result = run_sweep(load_grid("tiny_digits"), out, overrides=["train.epochs=4"])

    assert len(summaries(out)) == 4
    assert len(result.trained) == 4 - len(finished)
    for key, mtime in finished.items():
        assert (out / key / "summary.json").stat().st_mtime_ns == mtime
    assert not (out / sweep.LOCK_FILE).exists()


@pytest.mark.slow
def test_parallel_workers_match_sequential(tmp_path):
    sequential = run_sweep(load_grid("tiny_digits"), tmp_path / "one", overrides=TINY)
    parallel = run_sweep(load_grid("tiny_digits"), tmp_path / "two", workers=2, overrides=TINY)
    assert not parallel.failures
    one, two = summaries(tmp_path / "one"), summaries(tmp_path / "two")
    assert sorted(one) == sorted(two)
    for key in one:
        assert two[key]["test_accuracy"] == one[key]["test_accuracy"]
    assert table_rows(sequential.table) == table_rows(parallel.table)


# --- the table, with a stand-in for training ---------------------------------------

GRID_WITH_PAPER = """
    title: Layout test
    paper_source: a made-up table
    set:
      data: {name: digits, fake_accuracy: {0: 0.5, 1: 0.6}}
    seeds: [0, 1]
    axes:
      fusion:
        - {name: concat, label: concat, set: {model.fusion: concat}}
        - {name: film, label: FiLM, set: {model.fusion: film}}
      method:
        - {name: naive, label: "", set: {method: {name: naive}}}
        - {name: ogm, label: " + OGM-GE", set: {method: {name: ogm-ge}, data.fake_accuracy: {0: 0.7, 1: 0.7}}}
    exclude:
      - {method: ogm, fusion: film}
    table:
      rows: [method, fusion]
      columns: []
      row_format: "{fusion}{method}"
      column_label: accuracy
    paper:
      concat: {accuracy: 58.4}
"""


def test_table_layout_with_paper_and_exclusion(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "train_run", fake_training(calls))
    grid = load_grid(write_grid(tmp_path, GRID_WITH_PAPER))
    result = run_sweep(grid, tmp_path / "out")

    assert len(calls) == 6
    rows = table_rows(result.table)
    # 50 and 60: mean 55, sample standard deviation sqrt(50) = 7.07
    assert rows["concat"] == ["55.0 ± 7.1", "58.4"]
    assert rows["FiLM"] == ["55.0 ± 7.1", ""]
    assert rows["concat + OGM-GE"] == ["70.0 ± 0.0", ""]
    assert "FiLM + OGM-GE" not in rows
    assert "| method / fusion | accuracy | accuracy (paper) |" in result.table
    assert "Paper numbers: a made-up table." in result.table


def test_table_shows_missing_and_partial_runs(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "train_run", fake_training(calls))
    grid = load_grid(write_grid(tmp_path, GRID_WITH_PAPER))
    out = tmp_path / "out"
    runs = plan_runs(grid, out)
    for run in runs[:3]:
        sweep.train_run(run.config, str(run.run_dir))
    rows, columns, entries = sweep.collect_results(grid, runs)
    table = table_rows(sweep.render_table(grid, rows, columns, entries))

    assert table["concat"][0] == "55.0 ± 7.1"
    assert table["concat + OGM-GE"][0] == "70.0 (1/2 seeds)"
    assert table["FiLM"][0] == "-"


def test_excluded_entry_with_paper_number_shows_na(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "train_run", fake_training([]))
    text = """
        set:
          data: {name: digits, fake_accuracy: {0: 0.7}}
        seeds: [0]
        axes:
          method:
            - {name: naive, label: naive, set: {method: {name: naive}}}
            - {name: ogm, label: OGM-GE, set: {method: {name: ogm-ge}}}
          fusion:
            - {name: concat, label: concat, set: {model.fusion: concat}}
            - {name: film, label: FiLM, set: {model.fusion: film}}
        exclude:
          - {method: ogm, fusion: film}
        table:
          rows: [method]
          columns: [fusion]
        paper:
          OGM-GE: {FiLM: 58.0}
    """
    result = run_sweep(load_grid(write_grid(tmp_path, text)), tmp_path / "out")
    rows = table_rows(result.table)
    assert rows["naive"] == ["70.0", "70.0", ""]
    assert rows["OGM-GE"] == ["70.0", "n/a", "58.0"]


def test_failed_run_is_reported_and_retried(tmp_path, monkeypatch):
    calls = []
    fake = fake_training(calls)

    def failing(config, run_dir):
        if config["seed"] == 1 and config["method"]["name"] == "naive":
            Path(run_dir).mkdir(parents=True)
            raise ConfigError("made-up failure")
        return fake(config, run_dir)

    monkeypatch.setattr(sweep, "train_run", failing)
    grid = load_grid(write_grid(tmp_path, GRID_WITH_PAPER))
    result = run_sweep(grid, tmp_path / "out")
    assert len(result.failures) == 2
    assert all("made-up failure" in message for _, message in result.failures)

    monkeypatch.setattr(sweep, "train_run", fake)
    calls.clear()
    retry = run_sweep(grid, tmp_path / "out")
    assert not retry.failures
    assert sorted(Path(c).parent.name for c in calls) == ["fusion=concat__method=naive", "fusion=film__method=naive"]


def test_live_lock_rejects_second_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "train_run", fake_training([]))
    out = tmp_path / "out"
    out.mkdir()
    (out / sweep.LOCK_FILE).write_text(str(os.getppid()))
    with pytest.raises(ConfigError, match="another sweep"):
        run_sweep(load_grid(write_grid(tmp_path, GRID_WITH_PAPER)), out)


def test_stale_lock_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "train_run", fake_training([]))
    out = tmp_path / "out"
    out.mkdir()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / sweep.LOCK_FILE).write_text(finished.stdout.strip())
    run_sweep(load_grid(write_grid(tmp_path, GRID_WITH_PAPER)), out)
    assert not (out / sweep.LOCK_FILE).exists()


# --- grid files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", shipped_grid_names())
def test_shipped_grid_plans(name, tmp_path):
    grid = load_grid(name)
    runs = plan_runs(grid, tmp_path)
    assert runs
    assert len({run.run_dir for run in runs}) == len(runs)


def test_shipped_grids_cover_paper_tables():
    names = set(shipped_grid_names())
    for table in ("table1_cgmnist", "table2_cgmnist", "table3_cgmnist", "table5_cgmnist", "table6_cgmnist", "tiny_digits"):
        assert table in names


def test_table1_cgmnist_rows_and_paper():
    grid = load_grid("table1_cgmnist")
    rows = [row for row, _ in sweep.table_entries(grid)]
    assert rows[:3] == ["uni-modal 1 (gray)", "uni-modal 2 (colored)", "concat"]
    assert rows[-1] == "gated + PMR"
    assert grid.paper["concat + PMR"] == {"CG-MNIST": 77.2}
    assert len(plan_runs(grid, "unused")) == 30


def test_table1_unimodal_run_config():
    grid = load_grid("table1_cgmnist")
    run = next(r for r in plan_runs(grid, "unused", data_roots={"cgmnist": "/data/mnist"}) if r.cell.names["model"] == "uni-gray")
    assert run.config["method"] == {"name": "unimodal", "modality": "gray"}
    assert run.config["data"]["root"] == "/data/mnist"
    assert run.config["train"]["progress"] is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("title: Layout test", "titel: Layout test"), "unknown key 'titel'"),
        (("exclude:\n      - {method: ogm, fusion: film}", "exclude:\n      - {method: ogm, fusion: gated}"), "unknown level 'gated'"),
        (("concat: {accuracy: 58.4}", '"FiLM + OGM-GE": {accuracy: 58.0}'), "paper names row 'FiLM \\+ OGM-GE'"),
        (("rows: [method, fusion]", "rows: [method]"), "every axis must appear exactly once"),
        (('label: " + OGM-GE"', 'label: ""'), "both have row"),
        (("seeds: [0, 1]", "seeds: [0, 0]"), "distinct integers"),
        (("{name: film, label: FiLM", "{name: film/x, label: FiLM"), "needs a name of letters"),
        (("method: {name: naive}", "method: {name: nave}"), "method must be one of"),
        (("{method: {name: ogm-ge}", "{method: {name: ogm-ge, alpah: 2}"), "unknown key method.alpah"),
        (("column_label: accuracy", "column_label: accuracy\n      metric: test_acc"), "table.metric 'test_acc' is not a number"),
    ],
)
def test_invalid_grid_is_rejected(tmp_path, change, message):
    old, new = change
    assert old in GRID_WITH_PAPER
    path = write_grid(tmp_path, GRID_WITH_PAPER.replace(old, new))
    with pytest.raises(ConfigError, match=message):
        plan_runs(load_grid(path), tmp_path / "out")


def test_unknown_grid_name_lists_shipped():
    with pytest.raises(ConfigError, match="tiny_digits"):
        load_grid("no_such_grid")


def test_data_root_assignment_is_checked():
    with pytest.raises(ConfigError, match="expected NAME=DIR"):
        sweep.parse_data_roots(["cgmnist"])


# --- the command line ---------------------------------------------------------------


def test_cli_dry_run_lists_runs(tmp_path):
    result = run_cli("sweep", "tiny_digits", "--out", str(tmp_path / "out"), "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == f"4 runs in {tmp_path / 'out'}"
    assert all(line.startswith("pending") for line in lines[:-1])
    assert not (tmp_path / "out").exists()


def test_cli_unknown_grid_is_one_line_error(tmp_path):
    result = run_cli("sweep", "no_such_grid", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "grid file not found: no_such_grid" in result.stderr
