"""Checkpoints and ``train --resume``: a killed run continues to the numbers of an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modalbalance.training import checkpoint
from modalbalance.training.checkpoint import load_checkpoint, save_checkpoint
from modalbalance.training.config import dump_config
from modalbalance.training.runner import resolve, resume, truncate_jsonl

# Small batches make an epoch of the embedded digits last a few seconds, so
# that the kill below lands inside an epoch.
RUN_SETTINGS = ["train.epochs=3", "train.batch_size=8", "optimizer.lr=0.05", "train.progress=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "modalbalance.cli", "-q", *args]


def train_command(run_dir: Path, extra: list[str]) -> list[str]:
    overrides = [argument for setting in RUN_SETTINGS + extra for argument in ("--set", setting)]
    return cli("train", *overrides, "--out", str(run_dir))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without(record: dict, *keys) -> dict:
    return {key: value for key, value in record.items() if key not in keys}


def wait_for(condition, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the training process ended before the kill"
        assert time.monotonic() < deadline, "timed out waiting for the training process"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["method.prototype_source=online"]], ids=["subset-prototypes", "online-prototypes"])
def test_killed_run_resumes_to_same_metrics(tmp_path, extra):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(train_command(reference, extra), env=ENV, check=True, capture_output=True, timeout=600)

    process = subprocess.Popen(train_command(killed, extra), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The checkpoint after epoch 0 is written after its metrics line, then epoch 1 starts.
        wait_for(lambda: (killed / "metrics.jsonl").is_file() and (killed / "last.pt").is_file(), process)
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert len(read_jsonl(killed / "metrics.jsonl")) == 1, "the kill did not land inside epoch 1"
    assert not (killed / "summary.json").exists()

    resumed = subprocess.run(cli("train", "--resume", str(killed)), env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr

    expected = read_jsonl(reference / "metrics.jsonl")
    actual = read_jsonl(killed / "metrics.jsonl")
    assert [record["epoch"] for record in actual] == [0, 1, 2]
    for want, got in zip(expected, actual):
        assert without(got, "seconds") == without(want, "seconds")
    assert (killed / "steps.jsonl").read_text() == (reference / "steps.jsonl").read_text()
    summary_keys = ("seconds", "run_dir")
    assert without(json.loads((killed / "summary.json").read_text()), *summary_keys) == without(json.loads((reference / "summary.json").read_text()), *summary_keys)


def test_resume_without_checkpoint_starts_over(tmp_path):
    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = resolve({"method": {"name": "naive"}, "train": {"epochs": 1, "progress": False, "batch_size": 256}})
    (run_dir / "config.yaml").write_text(dump_config(config))
    # Lines that a run killed before its first checkpoint may leave, the last one torn.
    (run_dir / "metrics.jsonl").write_text('{"epoch": 0, "train/loss": 9.0}\n{"epoch": 1, "tr')

    summary = resume(run_dir)

    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [record["epoch"] for record in records] == [0]
    assert records[0]["train/loss"] != 9.0
    assert summary["epochs"] == 1
    assert (run_dir / "summary.json").is_file()


def test_truncate_keeps_checkpointed_epochs(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text('{"epoch": 0, "step": 0}\n{"epoch": 1, "step": 0}\n{"epoch": 2, "step": 0}\n{"epoch": 2, "st')

    truncate_jsonl(path, last_epoch=1)

    assert read_jsonl(path) == [{"epoch": 0, "step": 0}, {"epoch": 1, "step": 0}]


def test_failed_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 0, "weights": torch.arange(4.0)}, path)

    def write_half_then_fail(state, stream):
        stream.write(b"half of a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", write_half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 1, "weights": torch.zeros(4)}, path)

    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 0
    assert torch.equal(state["weights"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# Run in a subprocess: replaces last.pt through the atomic writer with a writer
# that writes part of a file and then waits to be killed.
SLOW_WRITER = """
import sys, time
from pathlib import Path
from modalbalance.training.checkpoint import _replace_atomically

def write(stream):
    stream.write(b"x" * 4096)
    stream.flush()
    print("writing", flush=True)
    time.sleep(120)

_replace_atomically(Path(sys.argv[1]), write)
"""


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 3, "weights": torch.arange(3.0)}, path)

    process = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(path)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)

    state = load_checkpoint(path)
    assert state["epoch"] == 3
    assert torch.equal(state["weights"], torch.arange(3.0))
