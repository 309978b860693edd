"""Measure the epoch-time overhead of PMR over naive training, and of the trainer over a bare PyTorch loop, on CG-MNIST.

In one process, four contestants train on the same batches, one epoch each in
turn and in a rotating order, so that load from other processes on the machine
spreads over all of them:

- ``naive``: the trainer with the naive method (cross-entropy on the fused logits);
- ``pmr-subset``: PMR with prototypes from a pass over a 10% subset before each epoch;
- ``pmr-online``: PMR with prototypes from the previous epoch's training embeddings;
- ``bare-loop``: a hand-written loop over the same model architecture, initial
  weights, optimizer and batches, with nothing but forward, loss, backward and step.

Phase 1 times the training pass alone (``train_one_epoch``, which for
``pmr-subset`` includes the subset pass). Phase 2 times whole epochs as
``fit`` runs them: training pass, scheduler step and evaluation. There, the
subset pass of PMR is the one the evaluation needs anyway. The first epoch of
each contestant in each phase is a warm-up and not counted. The script
reports medians of wall time and of this process's CPU time. With one thread
on a machine shared with other jobs, CPU time is the steadier measure of
the work done, because waiting for a core does not count.

Usage::

    python benchmarks/overhead.py --data-root ../shared/data/mnist --train-size 4000 --epochs 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from modalbalance.models.factory import build_model
from modalbalance.training.runner import TrainingRun, build_optimizer, seed_everything

TARGETS = {"pmr-subset": 1.10, "pmr-online": 1.03}
BARE_LOOP_TARGET = 1.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
    parser.add_argument("--data-root", type=Path, default=default_root, help="directory with the four MNIST IDX files")
    parser.add_argument("--train-size", type=int, default=None, help="train on a seeded random subset of this many digits (default: all 60,000)")
    parser.add_argument("--test-size", type=int, default=2000, help="evaluate on a seeded random subset of this many test digits")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per contestant and phase, after one warm-up epoch")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace, method: dict) -> dict:
    return {
        "seed": 0,
        "data": {"name": "cgmnist", "root": str(args.data_root), "train_size": args.train_size, "test_size": args.test_size},
        "method": method,
        # The learning rate of the shipped cgmnist configs. Timing does not depend on it.
        "optimizer": {"name": "sgd", "lr": 1e-3},
        "train": {"epochs": 2 * (args.epochs + 1), "batch_size": args.batch_size, "progress": False, "checkpoint": False},
    }


class BareLoop:
    """The same model, initial weights, optimizer and batches as a naive run, trained by the shortest loop."""

    def __init__(self, reference: TrainingRun) -> None:
        seed_everything(reference.seed)
        self.model = build_model(reference.config["model"], reference.train_set)
        self.optimizer = build_optimizer(reference.config["optimizer"], self.model)
        self.loader = reference.train_loader

    def train_one_epoch(self, epoch: int) -> None:
        self.model.train()
        for inputs, labels in self.loader.batches(epoch):
            loss = F.cross_entropy(self.model(inputs).logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


def time_call(function, *args) -> tuple[float, float]:
    """Return the wall time and the CPU time of this process, in seconds, that ``function(*args)`` took."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def full_epoch(run: TrainingRun, epoch: int) -> None:
    run.train_one_epoch(epoch)
    if run.scheduler is not None:
        run.scheduler.step()
    run.evaluate_epoch(epoch)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="overhead-"))
    methods = {
        "naive": {"name": "naive"},
        "pmr-subset": {"name": "pmr", "prototype_source": "subset"},
        "pmr-online": {"name": "pmr", "prototype_source": "online"},
    }
    runs = {name: TrainingRun(make_config(args, method), workdir / name) for name, method in methods.items()}
    bare = BareLoop(runs["naive"])
    print(f"{len(runs['naive'].train_set)} training digits, {len(runs['naive'].train_loader)} steps per epoch, {args.threads} thread(s)", flush=True)

    # Phase 1: training passes only. Clearing the prototype cache makes
    # pmr-subset pay for its subset pass, as it does in a run without evaluation.
    contestants = {name: run.train_one_epoch for name, run in runs.items()}
    contestants["bare-loop"] = bare.train_one_epoch
    train_times: dict[str, list[tuple[float, float]]] = {name: [] for name in contestants}
    for epoch in range(args.epochs + 1):
        for name in rotated(list(contestants), epoch):
            train_one_epoch = contestants[name]
            if name in runs:
                runs[name]._accumulators.clear()
            seconds = time_call(train_one_epoch, epoch)
            if epoch > 0:
                train_times[name].append(seconds)
        if epoch > 0:
            print(f"phase 1, epoch {epoch}: " + report_line(train_times), flush=True)

    # Phase 2: whole epochs with evaluation, as TrainingRun.fit runs them.
    # Its first epoch is a warm-up again, because pmr-subset finds no cached
    # subset pass from an evaluation before it.
    full_times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    first = args.epochs + 1
    for epoch in range(first, 2 * (args.epochs + 1)):
        for name in rotated(list(runs), epoch):
            seconds = time_call(full_epoch, runs[name], epoch)
            if epoch > first:
                full_times[name].append(seconds)
        if epoch > first:
            print(f"phase 2, epoch {epoch}: " + report_line(full_times), flush=True)

    print()
    print(f"{date.today().isoformat()}, {platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print(f"command: python {' '.join(sys.argv)}")
    print()
    print("| contestant | training pass, wall (s) | / naive | CPU (s) | / naive | epoch with evaluation, wall (s) | / naive | CPU (s) | / naive | target |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in contestants:
        cells = [name]
        cells += ratio_cells(train_times, name, "naive")
        cells += ratio_cells(full_times, name, "naive") if name in full_times else ["", "", "", ""]
        cells.append(f"<= {TARGETS[name]:.2f}" if name in TARGETS else "")
        print("| " + " | ".join(cells) + " |")
    wall, cpu = (median(train_times["naive"], i) / median(train_times["bare-loop"], i) for i in (0, 1))
    print()
    print(f"naive trainer / bare loop, training pass: wall {wall:.3f}, CPU {cpu:.3f} (target <= {BARE_LOOP_TARGET:.2f})")
    return 0


def rotated(names: list[str], epoch: int) -> list[str]:
    """Return ``names`` rotated by ``epoch`` places, so that no contestant always runs first."""
    shift = epoch % len(names)
    return names[shift:] + names[:shift]


def median(times: list[tuple[float, float]], column: int) -> float:
    return statistics.median(sample[column] for sample in times)


def ratio_cells(times: dict[str, list[tuple[float, float]]], name: str, baseline: str) -> list[str]:
    """Format the median wall and CPU times of ``name`` and their ratios to ``baseline``."""
    cells = []
    for column in (0, 1):
        value = median(times[name], column)
        cells += [f"{value:.2f}", f"{value / median(times[baseline], column):.3f}"]
    return cells


def report_line(times: dict[str, list[tuple[float, float]]]) -> str:
    return ", ".join(f"{name} {samples[-1][0]:.2f}s wall / {samples[-1][1]:.2f}s CPU" for name, samples in times.items())


if __name__ == "__main__":
    sys.exit(main())
