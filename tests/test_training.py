"""End-to-end training runs: determinism, the uni-modal baseline, and PMR on real MNIST."""

import json

import pytest
import torch

from modalbalance.errors import ConfigError
from modalbalance.training.data import draw_subset
from modalbalance.training.formatting import SUMMARY_MODALITY_KEYS, SUMMARY_NUMBER_KEYS
from modalbalance.training.runner import TrainingRun, train

FAST = {"progress": False, "checkpoint": False}


def read_metrics(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("seconds")
    return records


def test_same_seed_same_numbers(tmp_path):
    config = {"train": {"epochs": 2, **FAST}, "optimizer": {"lr": 0.01}}
    first = train(config, tmp_path / "a")
    second = train(config, tmp_path / "b")
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")
    assert first["test_accuracy"] == second["test_accuracy"]
    assert first["modality_test_accuracy"] == second["modality_test_accuracy"]


def test_other_seed_other_numbers(tmp_path):
    train({"seed": 0, "train": {"epochs": 1, **FAST}}, tmp_path / "a")
    train({"seed": 1, "train": {"epochs": 1, **FAST}}, tmp_path / "b")
    assert read_metrics(tmp_path / "a") != read_metrics(tmp_path / "b")


def test_unimodal_trains_one_encoder(tmp_path):
    summary = train({"method": {"name": "unimodal", "modality": "gray"}, "train": {"epochs": 1, **FAST}}, tmp_path / "run")
    assert summary["method"] == "unimodal-gray"
    assert list(summary["modality_test_accuracy"]) == ["gray"]


def test_unimodal_needs_modality(tmp_path):
    with pytest.raises(ConfigError, match="method.modality"):
        train({"method": {"name": "unimodal"}, "train": {"epochs": 1, **FAST}}, tmp_path / "run")


def test_pmr_logs_ratio_every_step(tmp_path):
    train({"train": {"epochs": 1, **FAST}}, tmp_path / "run")
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 23  # ceil(1437 / 64): the last, smaller batch is kept
    assert all(record["imbalance_ratio"] > 0 for record in steps)


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_every_fusion_trains_with_pmr(tmp_path, fusion):
    summary = train({"model": {"fusion": fusion}, "train": {"epochs": 1, **FAST}}, tmp_path / fusion)
    assert set(summary["modality_test_accuracy"]) == {"gray", "colored"}
    assert ("modality_head_test_accuracy" in summary) == (fusion in ("concat", "sum"))


@pytest.mark.slow
def test_pmr_lifts_gray_on_real_mnist(tmp_path, data_root):
    """On a seeded CG-MNIST subset, PMR's gray prototype accuracy beats naive's after a few epochs."""
    base = {
        "seed": 0,
        "data": {"name": "cgmnist", "root": str(data_root / "mnist"), "train_size": 6000, "test_size": 2000},
        "optimizer": {"lr": 0.01},
        "train": {"epochs": 3, **FAST},
    }
    naive = train({**base, "method": {"name": "naive"}}, tmp_path / "naive")
    pmr = train({**base, "method": {"name": "pmr", "alpha": 1.0, "mu": 0.01, "per_epochs": 1}}, tmp_path / "pmr")
    assert pmr["modality_test_accuracy"]["gray"] > naive["modality_test_accuracy"]["gray"]


def test_validation_selects_best_checkpoint(tmp_path):
    summary = train({"train": {"epochs": 2, "val_fraction": 0.1, "progress": False, "plots": False}}, tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    best = max(records, key=lambda record: record["val/accuracy"])
    assert summary["best_val_epoch"] == best["epoch"]
    assert summary["test_accuracy_at_best_val"] == best["test/accuracy"]
    assert (tmp_path / "run" / "best.pt").is_file()
    assert "best_test_accuracy" not in summary  # no model selection on the test split
    # The sweep checks table.metric against these lists before it trains anything.
    numbers = {key for key, value in summary.items() if isinstance(value, (int, float))}
    per_modality = {key for key, value in summary.items() if isinstance(value, dict)}
    assert numbers == set(SUMMARY_NUMBER_KEYS)
    assert per_modality == set(SUMMARY_MODALITY_KEYS)


def test_no_validation_means_no_best_checkpoint(tmp_path):
    summary = train({"train": {"epochs": 1, "progress": False, "plots": False}}, tmp_path / "run")
    assert "best_val_epoch" not in summary
    assert not (tmp_path / "run" / "best.pt").exists()


def test_tensorboard_scalars_written(tmp_path):
    pytest.importorskip("tensorboard")
    train({"train": {"epochs": 1, **FAST, "plots": False}}, tmp_path / "run")
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_gradient_angles_logged_and_plotted(tmp_path):
    train({"train": {"epochs": 1, "progress": False, "checkpoint": False, "gradient_angles": True}}, tmp_path / "run")
    record = read_metrics(tmp_path / "run")[0]
    for name in ("gray", "colored"):
        assert 0.0 <= record[f"gradient_angle/{name}"] <= 180.0
    assert (tmp_path / "run" / "plots" / "gradient_angles.png").is_file()


def test_draw_subset_pool_of_all_indices():
    labels = torch.arange(50) % 5
    assert torch.equal(draw_subset(labels, 0.2, seed=3, pool=torch.arange(50)), draw_subset(labels, 0.2, seed=3))


def test_draw_subset_stays_in_pool():
    labels = torch.arange(50) % 5
    pool = torch.nonzero(labels % 2 == 0).flatten()  # the 30 samples of classes 0, 2 and 4
    chosen = draw_subset(labels, 0.1, seed=3, top_up=True, pool=pool)
    assert torch.isin(chosen, pool).all()
    # 10% of the 30 pooled samples, plus one per pooled class the draw missed.
    assert 3 <= chosen.numel() <= 3 + 2
    # Top-up fills only the classes the pool contains.
    assert set(labels[chosen].tolist()) == {0, 2, 4}


def test_validation_samples_left_out_of_subsets(tmp_path):
    config = {"train": {"epochs": 1, "progress": False, "val_fraction": 0.5, "prototype_fraction": 0.5, "train_eval_fraction": 0.5}}
    run = TrainingRun(config, tmp_path / "run")
    held_out = run.val_loader.indices
    prototype_indices = run.prototype_indices(0)

    assert held_out.numel() > 0
    assert not torch.isin(prototype_indices, held_out).any()
    assert not torch.isin(run.train_eval_loader.indices, held_out).any()
    assert prototype_indices.numel() == round(0.5 * run.train_indices.numel())
