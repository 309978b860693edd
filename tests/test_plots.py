"""Run-directory plots: every PNG is written at the fixed pixel size with real content, and missing inputs skip a plot."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from modalbalance.analysis.plots import PIXEL_SIZE, plot_run
from modalbalance.errors import DataError
from modalbalance.training.runner import train

torch.set_num_threads(1)

ALL_PLOTS = ["accuracy.png", "imbalance.png", "losses.png", "true_class_scores.png", "gradient_angles.png"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("plots") / "run"
    train({"optimizer": {"lr": 0.01}, "train": {"epochs": 2, "progress": False, "checkpoint": False}}, path)
    return path


def copy_run(run_dir, tmp_path, edit_record=None):
    """Copy a run directory, applying ``edit_record`` to every line of metrics.jsonl."""
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("plots"))
    if edit_record is not None:
        records = [json.loads(line) for line in (target / "metrics.jsonl").read_text().splitlines()]
        (target / "metrics.jsonl").write_text("".join(json.dumps(edit_record(record)) + "\n" for record in records))
    return target


def add_gradient_angles(record):
    record["gradient_angle/gray"] = 30.0 + 10.0 * record["epoch"]
    record["gradient_angle/colored"] = 80.0 - 5.0 * record["epoch"]
    return record


def assert_valid_png(path):
    image = imread(path)
    height, width = image.shape[:2]
    assert (width, height) == PIXEL_SIZE
    colors = np.unique(image.reshape(-1, image.shape[2]), axis=0)
    assert len(colors) > 10, f"{path.name} has only {len(colors)} colors"


@pytest.mark.slow
def test_short_run_writes_every_plot(run_dir, tmp_path):
    target = copy_run(run_dir, tmp_path, add_gradient_angles)
    written = plot_run(target)
    assert sorted(path.name for path in written) == sorted(ALL_PLOTS)
    for path in written:
        assert path.parent == target / "plots"
        assert_valid_png(path)


@pytest.mark.slow
def test_plots_without_gradient_angles(run_dir, tmp_path):
    target = copy_run(run_dir, tmp_path)
    names = [path.name for path in plot_run(target)]
    assert "gradient_angles.png" not in names
    assert names == ["accuracy.png", "imbalance.png", "losses.png", "true_class_scores.png"]


@pytest.mark.slow
def test_missing_steps_skips_imbalance(run_dir, tmp_path, caplog):
    target = copy_run(run_dir, tmp_path)
    (target / "steps.jsonl").unlink()
    with caplog.at_level("INFO", logger="modalbalance"):
        names = [path.name for path in plot_run(target)]
    assert "imbalance.png" not in names
    assert "skipping imbalance.png" in caplog.text
    assert not (target / "plots" / "imbalance.png").exists()


@pytest.mark.slow
def test_undecomposable_fusion_skips_true_class_scores(run_dir, tmp_path):
    def drop_heads(record):
        return {key: value for key, value in record.items() if "/head_" not in key}

    target = copy_run(run_dir, tmp_path, drop_heads)
    names = [path.name for path in plot_run(target)]
    assert "true_class_scores.png" not in names
    assert "accuracy.png" in names


def test_missing_run_directory(tmp_path):
    missing = tmp_path / "no-such-run"
    with pytest.raises(DataError, match="run directory not found") as error:
        plot_run(missing)
    assert str(missing) in str(error.value)


def test_directory_without_metrics(tmp_path):
    with pytest.raises(DataError, match="not a run directory"):
        plot_run(tmp_path)


def test_damaged_metrics_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0, "train/loss": 1.0}\n{"epoch": 1, "train/lo\n')
    with pytest.raises(DataError, match="line 2 of"):
        plot_run(tmp_path)


def test_import_leaves_matplotlib_unloaded():
    code = "import sys, modalbalance.analysis.plots; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
