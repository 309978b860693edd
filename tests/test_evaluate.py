"""Evaluating a checkpoint reproduces the numbers that training logged, and bad checkpoints give one-line errors."""

import json

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from modalbalance.analysis.evaluate import (
    evaluate_checkpoint,
    format_evaluation,
    load_training_checkpoint,
)
from modalbalance.errors import ConfigError, DataError
from modalbalance.training.runner import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("evaluate") / "run"
    train({"optimizer": {"lr": 0.01}, "train": {"epochs": 2, "progress": False}}, path)
    return path


@pytest.fixture(scope="module")
def last_record(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def evaluation(run_dir):
    return evaluate_checkpoint(run_dir / "last.pt")


def hand_macro_f1(matrix):
    """Mean over classes that occur as label or prediction of 2 TP / (2 TP + FP + FN)."""
    size = len(matrix)
    scores = []
    for k in range(size):
        true_positive = matrix[k][k]
        false_negative = sum(matrix[k]) - true_positive
        false_positive = sum(matrix[row][k] for row in range(size)) - true_positive
        if true_positive + false_negative + false_positive:
            scores.append(2 * true_positive / (2 * true_positive + false_positive + false_negative))
    return sum(scores) / len(scores)


@pytest.mark.slow
def test_matches_logged_test_accuracy(evaluation, last_record):
    assert evaluation["epoch"] == last_record["epoch"]
    assert evaluation["accuracy"] == last_record["test/accuracy"]
    assert evaluation["loss"] == pytest.approx(last_record["test/loss"], rel=1e-12)


@pytest.mark.slow
def test_matches_logged_prototype_accuracy(evaluation, last_record):
    assert set(evaluation["prototype_accuracy"]) == {"gray", "colored"}
    for name, value in evaluation["prototype_accuracy"].items():
        assert value == last_record[f"test/prototype_accuracy/{name}"]


@pytest.mark.slow
def test_matches_logged_head_accuracy(evaluation, last_record):
    for name, value in evaluation["head_accuracy"].items():
        assert value == last_record[f"test/head_accuracy/{name}"]


@pytest.mark.slow
def test_confusion_matrix_and_macro_f1(evaluation):
    matrix = evaluation["confusion_matrix"]
    total = sum(map(sum, matrix))
    assert len(matrix) == 10
    assert all(len(row) == 10 for row in matrix)
    assert total == evaluation["num_samples"] == 360
    assert sum(matrix[k][k] for k in range(10)) / total == pytest.approx(evaluation["accuracy"])
    assert evaluation["macro_f1"] == pytest.approx(hand_macro_f1(matrix))


@pytest.mark.slow
def test_logged_values_carried(evaluation, last_record):
    assert evaluation["logged"]["test/accuracy"] == last_record["test/accuracy"]
    table = format_evaluation(evaluation)
    assert "logged" in table
    assert "gray prototype accuracy" in table
    assert "confusion matrix" in table


@pytest.mark.slow
def test_train_split_whole_set(run_dir):
    result = evaluate_checkpoint(run_dir / "last.pt", split="train")
    assert result["num_samples"] == 1437
    assert "logged" not in result


@pytest.mark.slow
def test_val_split_unavailable(run_dir):
    with pytest.raises(ConfigError, match="split"):
        evaluate_checkpoint(run_dir / "last.pt", split="val")


def test_missing_checkpoint(tmp_path):
    missing = tmp_path / "last.pt"
    with pytest.raises(DataError, match="checkpoint not found") as error:
        load_training_checkpoint(missing)
    assert str(missing) in str(error.value)


@pytest.mark.slow
def test_truncated_checkpoint(run_dir, tmp_path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((run_dir / "last.pt").read_bytes()[:5000])
    with pytest.raises(DataError, match="damaged") as error:
        load_training_checkpoint(damaged)
    assert str(damaged) in str(error.value)


def test_text_file_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(DataError, match="damaged or not a PyTorch checkpoint"):
        load_training_checkpoint(text)


def test_foreign_checkpoint_names_missing_keys(tmp_path):
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(DataError, match="not a modalbalance training checkpoint") as error:
        load_training_checkpoint(foreign)
    assert "evaluation_prototypes" in str(error.value)


@pytest.mark.slow
def test_cli_writes_json(run_dir, last_record, tmp_path):
    out = tmp_path / "evaluation.json"
    result = run_cli("-q", "evaluate", "--checkpoint", str(run_dir / "last.pt"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "fused accuracy" in result.stdout
    saved = json.loads(out.read_text())
    assert saved["accuracy"] == last_record["test/accuracy"]
    assert saved["prototype_accuracy"]["colored"] == last_record["test/prototype_accuracy/colored"]


def test_cli_missing_checkpoint_one_line(tmp_path):
    missing = tmp_path / "absent.pt"
    assert_one_line_error(run_cli("evaluate", "--checkpoint", str(missing)), "checkpoint not found", str(missing))


def test_cli_corrupt_checkpoint_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02garbage" * 50)
    assert_one_line_error(run_cli("evaluate", "--checkpoint", str(corrupt)), str(corrupt))


def test_cli_out_never_overwrites(run_dir):
    checkpoint = run_dir / "last.pt"
    before = checkpoint.read_bytes()
    result = run_cli("evaluate", "--checkpoint", str(checkpoint), "--out", str(checkpoint))
    assert_one_line_error(result, "already exists")
    assert checkpoint.read_bytes() == before
