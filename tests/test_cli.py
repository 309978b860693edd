"""The command line: one-line errors with exit code 2, and a short real run."""

import json

import pytest
from cli_helpers import assert_one_line_error, run_cli

from modalbalance.cli import report_error
from modalbalance.errors import ConfigError, DataError


def test_unknown_fusion_lists_choices(tmp_path):
    result = run_cli("train", "--set", "model.fusion=conat", "--out", str(tmp_path / "run"))
    assert_one_line_error(result, "model.fusion must be one of", "concat", "film", "gated", "sum", "'conat'")


def test_unknown_method_lists_choices(tmp_path):
    result = run_cli("train", "--set", "method.name=pmx", "--out", str(tmp_path / "run"))
    assert_one_line_error(result, "method must be one of", "naive", "pmr", "pmr-no-per", "'pmx'")


def test_unknown_method_param_suggests(tmp_path):
    result = run_cli("train", "--set", "method.alfa=2", "--out", str(tmp_path / "run"))
    assert_one_line_error(result, "unknown key method.alfa", "'alpha'")


def test_missing_data_directory_names_path(tmp_path):
    missing = tmp_path / "no-such-mnist"
    result = run_cli("train", "--config", "cgmnist/pmr_concat", "--set", f"data.root={missing}", "--out", str(tmp_path / "run"))
    assert_one_line_error(result, str(missing))


def test_unknown_config_section(tmp_path):
    result = run_cli("train", "--set", "trian.epochs=1", "--out", str(tmp_path / "run"))
    assert_one_line_error(result, "unknown config section 'trian'")


def test_existing_run_directory_is_kept(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"keep": true}')
    result = run_cli("train", "--set", "train.epochs=1", "--out", str(run_dir))
    assert_one_line_error(result, "already contains a run")
    assert json.loads((run_dir / "summary.json").read_text()) == {"keep": True}


def test_configs_lists_shipped():
    result = run_cli("configs")
    assert result.returncode == 0
    assert "cgmnist/pmr_concat" in result.stdout.split()


@pytest.mark.slow
def test_train_writes_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train", "--set", "train.epochs=2", "--out", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "fused test accuracy" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert set(summary["modality_test_accuracy"]) == {"gray", "colored"}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [0, 1]
    for key in ("train/loss", "train/accuracy", "test/accuracy", "train/prototype_accuracy/gray", "test/prototype_accuracy/colored", "test/head_accuracy/gray", "imbalance_ratio", "acceleration_weight/gray"):
        assert key in records[-1]
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "last.pt").is_file()


def test_plot_command_draws_run(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_cli("train", "--set", "train.epochs=1", "--set", "train.plots=false", "--out", str(run_dir))
    assert trained.returncode == 0, trained.stderr
    assert not (run_dir / "plots").exists()
    result = run_cli("plot", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert (run_dir / "plots" / "accuracy.png").is_file()
    assert str(run_dir / "plots" / "accuracy.png") in result.stdout


def test_plot_command_rejects_non_run(tmp_path):
    result = run_cli("plot", str(tmp_path))
    assert_one_line_error(result, str(tmp_path))


@pytest.mark.parametrize(
    ("rank", "error", "expected"),
    [
        ("0", ConfigError("bad key"), "modalbalance train: error: bad key\n"),
        ("1", ConfigError("bad key"), ""),
        ("1", DataError("bad file"), "modalbalance train (rank 1): error: bad file\n"),
    ],
)
def test_error_printed_once_under_torchrun(monkeypatch, capsys, rank, error, expected):
    monkeypatch.setenv("RANK", rank)
    report_error("train", error)
    assert capsys.readouterr().err == expected
