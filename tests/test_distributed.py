"""Distributed data parallel: two gloo processes under torchrun train like one process over the same global batches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modalbalance.data.base import EncoderSpec, TensorMultimodalDataset
from modalbalance.errors import ConfigError
from modalbalance.pmr import PMR, PrototypeAccumulator
from modalbalance.training import distributed
from modalbalance.training.checkpoint import load_checkpoint
from modalbalance.training.data import BatchLoader
from modalbalance.training.runner import check_distributed_method, check_shardable

# Batches of 31 split 16 + 15 between two processes, and the last batch of the
# 1,437 digits has 11 samples (6 + 5), so the processes' shares differ at
# every step. The learning rate is high enough for one epoch to move the weights.
SETTINGS = ["train.epochs=1", "train.batch_size=31", "optimizer.lr=0.05", "train.progress=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def toy_dataset(size: int) -> TensorMultimodalDataset:
    values = torch.arange(size, dtype=torch.float32).view(size, 1)
    return TensorMultimodalDataset((values, values), torch.arange(size) % 3, ("a", "b"), ("0", "1", "2"), (EncoderSpec("x"), EncoderSpec("x")))


def test_shards_make_up_global_batches():
    dataset = toy_dataset(23)
    single = BatchLoader(dataset, None, 5, shuffle=True, seed=4)
    shards = [BatchLoader(dataset, None, 5, shuffle=True, seed=4, rank=rank, world_size=2) for rank in range(2)]

    global_batches = [labels for _, labels in single.batches(epoch=1)]
    rank_batches = [[labels for _, labels in shard.batches(epoch=1)] for shard in shards]

    assert len(rank_batches[0]) == len(rank_batches[1]) == len(global_batches) == 5
    for step, batch in enumerate(global_batches):
        assert torch.equal(torch.cat([rank_batches[0][step], rank_batches[1][step]]), batch)
    # tensor_split gives the first process the extra sample of an odd batch.
    assert [b.numel() for b in rank_batches[0]] == [3, 3, 3, 3, 2]
    assert [b.numel() for b in rank_batches[1]] == [2, 2, 2, 2, 1]
    assert shards[0].local_size() + shards[1].local_size() == 23


def test_empty_shards_are_skipped():
    shard = BatchLoader(toy_dataset(5), None, 4, shuffle=False, rank=2, world_size=3)
    # Global batches [0..3] and [4]: rank 2 gets sample 3 of the first and nothing of the second.
    assert [indices.tolist() for indices in shard.local_batches()] == [[3]]
    assert len(list(shard.batches())) == 1
    assert shard.local_size() == 1


def test_shardable_training_batches():
    dataset = toy_dataset(22)
    check_shardable(BatchLoader(dataset, None, 10, shuffle=True, world_size=2), "training set", every_batch=True)
    # 22 = 2 * 10 + 2: the last batch of two samples leaves the third process without one.
    with pytest.raises(ConfigError, match="the 22 samples leave 2 for the last batch"):
        check_shardable(BatchLoader(dataset, None, 10, shuffle=True, world_size=3), "training set", every_batch=True)
    with pytest.raises(ConfigError, match="fewer than the 4 processes"):
        check_shardable(BatchLoader(toy_dataset(3), None, 10, shuffle=False, world_size=4), "test split", every_batch=False)


def test_unchecked_methods_rejected_under_ddp():
    for name in ("pmr", "ogm-ge", "acc"):
        check_distributed_method(name)
    with pytest.raises(ConfigError, match="method 'modality-drop' does not support distributed training"):
        check_distributed_method("modality-drop")


def test_helpers_without_process_group():
    assert not distributed.is_distributed()
    assert distributed.rank() == 0
    assert distributed.world_size() == 1
    assert distributed.is_main_process()
    scores = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(scores) is scores
    accumulator = PrototypeAccumulator(2, 3)
    assert distributed.all_reduce_accumulator(accumulator) is accumulator
    assert distributed.reduce_weighted_means({"accuracy": 0.5}, 10) == {"accuracy": 0.5}


def test_pmr_score_reducer_sees_batch_scores():
    pmr = PMR(num_classes=2, alpha=1.0, mu=0.0)
    pmr.bank.prototypes = [torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [1.0]])]
    pmr.bank.has_prototype[:] = True
    received = []

    def double_first(scores):
        received.append(scores.clone())
        return scores * torch.tensor([2.0, 1.0])

    pmr.score_reducer = double_first
    embeddings = [torch.tensor([[0.0]]), torch.tensor([[0.0]])]
    terms = pmr.loss(embeddings, torch.tensor([0]), epoch=0)

    assert len(received) == 1
    assert torch.allclose(received[0][0], received[0][1])
    assert terms.imbalance_ratio == pytest.approx(2.0)
    # Modality 1 is now the slow one: beta = 0, gamma = clip(2 - 1, 0, 1) = 1.
    assert terms.acceleration_weights.tolist() == [0.0, 1.0]


def run_training(command: list[str], run_dir: Path, extra: list[str] = ()) -> None:
    overrides = [argument for setting in [*SETTINGS, *extra] for argument in ("--set", setting)]
    result = subprocess.run([*command, "-m", "modalbalance.cli", "-q", "train", *overrides, "--out", str(run_dir)], env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def bank_prototypes(state: dict, key: str) -> list[torch.Tensor]:
    bank = state[key]["bank"] if key == "method" else state[key]
    return bank["prototypes"]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def train_one_and_two_processes(tmp_path: Path, extra: list[str] = ()) -> tuple[Path, Path]:
    """Train the same config in one process and in two under torchrun; return both run directories."""
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    run_training([sys.executable], single, extra)
    run_training(TORCHRUN, parallel, extra)
    return single, parallel


def read_steps(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def assert_same_weights(single_state: dict, parallel_state: dict) -> None:
    for name, weights in single_state["model"].items():
        assert torch.allclose(parallel_state["model"][name], weights, rtol=0.0, atol=1e-6), name


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    single, parallel = train_one_and_two_processes(tmp_path)

    single_state, parallel_state = load_checkpoint(single / "last.pt"), load_checkpoint(parallel / "last.pt")
    # The prototypes PMR used in the epoch (before it) and those of the evaluation (after it).
    for key in ("method", "evaluation_prototypes"):
        for expected, actual in zip(bank_prototypes(single_state, key), bank_prototypes(parallel_state, key)):
            assert torch.allclose(actual, expected, rtol=0.0, atol=1e-6), key
    assert_same_weights(single_state, parallel_state)

    expected_steps, actual_steps = read_steps(single), read_steps(parallel)
    assert len(actual_steps) == len(expected_steps) == 47
    for want, got in zip(expected_steps, actual_steps):
        assert got["step"] == want["step"]
        assert got["imbalance_ratio"] == pytest.approx(want["imbalance_ratio"], rel=0.0, abs=1e-6)

    expected = json.loads((single / "metrics.jsonl").read_text())
    actual = json.loads((parallel / "metrics.jsonl").read_text())
    assert sorted(actual) == sorted(expected)
    for key in expected:
        if key == "seconds":
            continue
        # Accuracies are counts over the same samples. Losses and scores differ by float32 rounding.
        tolerance = 1e-12 if "accuracy" in key else 1e-5
        assert actual[key] == pytest.approx(expected[key], rel=0.0, abs=tolerance), key
    # Only rank 0 writes, so the file has one line for the one epoch.
    assert len((parallel / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_two_processes_online_prototypes(tmp_path):
    # Epoch 1 trains with the online prototypes of epoch 0, summed over both processes.
    # At the default lr 1e-3 the weights move slowly, so float32 rounding
    # differences stay small over two epochs. At lr 0.01 to 0.05 they grow to
    # 1e-4 to 1e-3 in the ratios within two epochs, and so does the difference
    # between one process with one thread and one with two.
    extra = ["train.epochs=2", "method.prototype_source=online", "optimizer.lr=0.001"]
    single, parallel = train_one_and_two_processes(tmp_path, extra)

    single_state, parallel_state = load_checkpoint(single / "last.pt"), load_checkpoint(parallel / "last.pt")
    for expected, actual in zip(bank_prototypes(single_state, "method"), bank_prototypes(parallel_state, "method")):
        assert torch.allclose(actual, expected, rtol=0.0, atol=1e-6)
    # The checkpoint contains epoch 1's class sums over all samples, for epoch 2's prototypes.
    single_online, parallel_online = single_state["method"]["online_accumulator"], parallel_state["method"]["online_accumulator"]
    assert torch.equal(parallel_online["counts"], single_online["counts"])
    assert int(parallel_online["counts"].sum()) == 1437
    for expected, actual in zip(single_online["sums"], parallel_online["sums"]):
        counts = single_online["counts"].unsqueeze(1)
        assert torch.allclose(actual / counts, expected / counts, rtol=0.0, atol=1e-6)

    expected_steps, actual_steps = read_steps(single), read_steps(parallel)
    assert len(actual_steps) == len(expected_steps) == 2 * 47
    for want, got in zip(expected_steps, actual_steps):
        assert got["imbalance_ratio"] == pytest.approx(want["imbalance_ratio"], rel=0.0, abs=1e-6)


@pytest.mark.slow
def test_two_processes_gradient_modulation(tmp_path):
    # OGM-GE with its noise: the coefficients must come from the scores of the
    # whole global batch, and the noise must be the same on both processes,
    # or the weights of the two processes drift apart and from one process.
    # The noise is as large as the gradient. At lr 0.05 it amplifies float32
    # rounding differences to 1e-3 within the epoch, and at lr 1e-3 they stay near 3e-8.
    extra = ["method.name=ogm-ge", "method.noise=true", "optimizer.lr=0.001"]
    single, parallel = train_one_and_two_processes(tmp_path, extra)
    assert_same_weights(load_checkpoint(single / "last.pt"), load_checkpoint(parallel / "last.pt"))

    expected_steps, actual_steps = read_steps(single), read_steps(parallel)
    assert len(actual_steps) == len(expected_steps) == 47
    coefficient_keys = [key for key in expected_steps[0] if key.startswith("gradient_coefficient/")]
    assert len(coefficient_keys) == 2
    # The dominant modality is scaled down at some steps, so the check is not vacuous.
    assert any(step[key] < 0.99 for step in expected_steps for key in coefficient_keys)
    for want, got in zip(expected_steps, actual_steps):
        for key in ["imbalance_ratio", *coefficient_keys]:
            assert got[key] == pytest.approx(want[key], rel=0.0, abs=1e-6), (want["step"], key)
