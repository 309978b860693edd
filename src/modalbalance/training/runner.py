"""The training run: one readable loop around the balancing-method hooks.

``train(config, out_dir)`` builds everything from a config (see
``training/config.py``), trains, evaluates every epoch and writes the run
directory:

- ``config.yaml``: the resolved config;
- ``metrics.jsonl``: one JSON object per epoch (0-based ``epoch``);
- ``steps.jsonl``: the imbalance ratio and coefficients of every step, for methods that log them;
- ``summary.json``: final test accuracy, per-modality prototype accuracy and more;
- ``last.pt``: the checkpoint after the latest epoch, written atomically.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from modalbalance.errors import ConfigError, TrainingError
from modalbalance.methods import METHODS, BalancingMethod, TrainingContext
from modalbalance.models.factory import build_model
from modalbalance.pmr import PrototypeAccumulator, PrototypeBank
from modalbalance.progress import bar_disable
from modalbalance.training import distributed
from modalbalance.training.checkpoint import load_checkpoint, save_checkpoint, write_json, write_text
from modalbalance.training.config import check_builder_params, dump_config, load_yaml
from modalbalance.training.data import BatchLoader, draw_subset
from modalbalance.training.evaluation import evaluate
from modalbalance.training.tracking import TensorBoardLogger

# Re-exported: the sweep, evaluate and tests build data sets and read summaries through this module.
from modalbalance.training.builders import (  # noqa: F401
    build_dataset,
    build_optimizer,
    build_scheduler,
    build_validation,
    check_distributed_method,
    resolve,
    seed_everything,
)
from modalbalance.training.formatting import format_epoch, format_summary_table, method_label  # noqa: F401
from modalbalance.training.rundir import RUN_FILES, check_resumable, default_run_dir, prepare_run_dir, truncate_jsonl  # noqa: F401

logger = logging.getLogger("modalbalance")



class TrainingRun:
    """Everything one run needs, built from a resolved config."""

    def __init__(self, config: Mapping, out_dir: str | Path | None = None, resume: bool = False) -> None:
        self.config = resolve(config)
        train_config = self.config["train"]
        self.seed = self.config["seed"]
        self.epochs = train_config["epochs"]
        self.device = torch.device(train_config["device"])
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is available; set train.device=cpu")
        if resume and out_dir is None:
            raise ConfigError("resuming a run needs its run directory")

        # Under torchrun with several processes, join the process group first:
        # the method's constructor looks at it, and each process may get its own GPU.
        self.owns_process_group = distributed.env_world_size() > 1 and not distributed.is_distributed()
        self.device = distributed.init_from_env(self.device.type) or self.device
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        if self.world_size > 1:
            check_distributed_method(self.config["method"]["name"])
        if not distributed.is_main_process():
            logging.getLogger("modalbalance").setLevel(logging.WARNING)

        seed_everything(self.seed)
        self.train_set = build_dataset(self.config["data"], "train", self.seed)
        self.test_set = build_dataset(self.config["data"], "test", self.seed)
        self.val_set, held_out = build_validation(self.config, self.train_set, self.seed)
        self.model = build_model(self.config["model"], self.train_set).to(self.device)
        self._accumulators: dict[int, PrototypeAccumulator] = {}
        self.context = TrainingContext(
            model=self.model,
            train_set=self.train_set,
            device=self.device,
            epochs=self.epochs,
            seed=self.seed,
            prototype_accumulator=self.prototype_accumulator,
        )
        # The method comes before the optimizer because it may add parameters
        # to the model, such as auxiliary heads.
        self.method = self._build_method()
        self.model.to(self.device)
        self.optimizer = build_optimizer(self.config["optimizer"], self.model)
        self.scheduler = build_scheduler(self.config["scheduler"], self.optimizer)

        workers = train_config["num_workers"]
        eval_batch = train_config["eval_batch_size"]
        train_indices = torch.arange(len(self.train_set))
        if held_out is not None:
            train_indices = train_indices[~torch.isin(train_indices, held_out)]
        train_indices = self.method.training_indices(train_indices)
        if train_indices.numel() == 0:
            raise ConfigError("no training samples are left after holding out validation samples; lower train.val_fraction")
        shard = {"num_workers": workers, "rank": self.rank, "world_size": self.world_size}
        self.train_loader = BatchLoader(self.train_set, train_indices, train_config["batch_size"], shuffle=True, seed=self.seed, **shard)
        self.test_loader = BatchLoader(self.test_set, None, eval_batch, shuffle=False, **shard)
        # The prototype and train-side evaluation subsets come from the samples
        # trained on, never from held-out validation samples.
        self.train_indices = train_indices
        train_eval_indices = draw_subset(self.train_set.labels, train_config["train_eval_fraction"], self.seed + 7919, top_up=False, pool=train_indices)
        self.train_eval_loader = BatchLoader(self.train_set, train_eval_indices, eval_batch, shuffle=False, **shard)
        self.val_loader = None
        if self.val_set is not None:
            self.val_loader = BatchLoader(self.val_set, held_out, eval_batch, shuffle=False, **shard)
        check_shardable(self.train_loader, "training set", every_batch=True)
        evaluation_loaders = [("test split", self.test_loader), ("train-side evaluation subset", self.train_eval_loader)]
        if self.val_loader is not None:
            evaluation_loaders.append(("validation split", self.val_loader))
        for name, loader in evaluation_loaders:
            check_shardable(loader, name, every_batch=False)

        run_dir = Path(out_dir) if out_dir is not None else default_run_dir(self.config)
        # Every process needs rank 0's directory, because the default name contains the start time.
        self.out_dir = prepare_run_dir(Path(distributed.broadcast_object(str(run_dir))), resume)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        if resume:
            self._restore()

        # The forward pass of training goes through DistributedDataParallel,
        # which averages the gradients over processes during backward. The
        # prototype and evaluation passes use the bare model, because they need
        # no gradients and each process may run a different number of batches.
        self.train_model: torch.nn.Module = self.model
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)

    def _build_method(self) -> BalancingMethod:
        builder, params = check_method_params(self.config["method"])
        return builder(self.context, **params)

    # -- prototypes -------------------------------------------------------

    def prototype_indices(self, epoch: int) -> torch.Tensor:
        """Draw the prototype subset of ``epoch`` from the training samples, seeded by (seed, epoch)."""
        train_config = self.config["train"]
        top_up = train_config["missing_class"] == "top-up"
        seed = self.seed * 1_000_003 + epoch + 1
        return draw_subset(self.train_set.labels, train_config["prototype_fraction"], seed, top_up, pool=self.train_indices)

    def prototype_accumulator(self, epoch: int) -> PrototypeAccumulator:
        """Return class sums over the prototype subset of ``epoch``, embedded with the current weights.

        The subset is redrawn for every epoch from (seed, epoch). The result is
        cached because the evaluation after epoch e and the method before epoch
        e + 1 see the same weights.
        """
        if epoch not in self._accumulators:
            train_config = self.config["train"]
            loader = BatchLoader(
                self.train_set, self.prototype_indices(epoch), train_config["eval_batch_size"], shuffle=False,
                num_workers=train_config["num_workers"], rank=self.rank, world_size=self.world_size,
            )
            bank = PrototypeBank(self.train_set.num_modalities, self.train_set.num_classes, class_names=self.train_set.class_names)
            accumulator = bank.accumulate(self._device_batches(loader), lambda inputs: self.model(inputs).embeddings, module=self.model)
            # Each process embedded its share of the subset; the class sums and counts add up to the whole subset.
            distributed.all_reduce_accumulator(accumulator)
            self._check_finite_sums(accumulator, epoch)
            # Raises DataError naming the class when a class has no sample in the subset.
            bank.update(accumulator)
            self._accumulators = {epoch: accumulator}
        return self._accumulators[epoch]

    def _device_batches(self, loader: BatchLoader, epoch: int = 0):
        for inputs, labels in loader.batches(epoch):
            yield tuple(x.to(self.device, non_blocking=True) for x in inputs), labels.to(self.device, non_blocking=True)

    # -- one epoch ----------------------------------------------------------

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        # Data sets with random frame sampling or augmentation draw per (seed, epoch, sample).
        set_epoch = getattr(self.train_set, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        self.method.on_epoch_start(epoch)

        # The loss and accuracy sums stay on the device, so that no step waits
        # for the device just to report them.
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        step_records, step_shares = [], []
        show_progress = self.config["train"]["progress"] and distributed.is_main_process()
        bar = tqdm(
            self._device_batches(self.train_loader, epoch),
            total=len(self.train_loader),
            desc=f"epoch {epoch + 1}/{self.epochs}",
            leave=False,
            disable=bar_disable(show_progress),
        )
        for step, (inputs, labels) in enumerate(bar):
            inputs, labels = self.method.transform_batch(inputs, labels, epoch)
            output = self.train_model(inputs)
            self._check_finite(output.embeddings, epoch, step)
            loss, logs = self.method.compute_loss(output, labels, epoch)
            # Models with heads of their own (CentralNet) add the loss that trains them.
            auxiliary_loss = getattr(self.model, "auxiliary_loss", None)
            if auxiliary_loss is not None:
                loss = loss + auxiliary_loss(output, labels)

            self.optimizer.zero_grad(set_to_none=True)
            share = self._global_batch_share(step, labels.numel())
            if self.world_size > 1:
                # DDP averages the gradients of the processes. Scaling each
                # process's mean loss by world_size * share turns that average
                # into the gradient of the mean over the global batch, also when
                # the shares differ by one sample.
                (loss * (self.world_size * share)).backward()
            else:
                loss.backward()
            self.method.on_after_backward(output, labels, epoch)
            self.optimizer.step()

            batch_size = labels.numel()
            loss_sum += loss.detach().to(torch.float64) * batch_size
            correct += (output.logits.detach().argmax(dim=1) == labels).sum()
            seen += batch_size
            if logs:
                step_records.append({"epoch": epoch, "step": step, **logs})
                step_shares.append(share)
            if show_progress:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)

        self.method.on_epoch_end(epoch)
        totals = torch.stack([loss_sum, correct.to(torch.float64), loss_sum.new_tensor(float(seen))])
        loss_total, correct_total, seen_total = distributed.all_reduce_sum(totals).tolist()
        step_records = self._reduce_step_records(step_records, step_shares)
        if step_records and distributed.is_main_process():
            with open(self.out_dir / "steps.jsonl", "a", encoding="utf-8") as handle:
                handle.writelines(json.dumps(record) + "\n" for record in step_records)

        log_sums: dict[str, float] = defaultdict(float)
        for record in step_records:
            for key, value in record.items():
                if key not in ("epoch", "step"):
                    log_sums[key] += value
        steps = max(1, len(self.train_loader))
        metrics = {"train/loss": loss_total / max(1.0, seen_total), "train/running_accuracy": correct_total / max(1.0, seen_total)}
        metrics.update({key: value / steps for key, value in log_sums.items()})
        return metrics

    def _global_batch_share(self, step: int, batch_size: int) -> float:
        """Return this process's fraction of the samples of global batch ``step``; 1.0 with one process."""
        if self.world_size == 1:
            return 1.0
        loader = self.train_loader
        global_size = min(loader.batch_size, loader.indices.numel() - step * loader.batch_size)
        return batch_size / global_size

    def _reduce_step_records(self, records: list[dict], shares: list[float]) -> list[dict]:
        """Turn each process's per-step logs into the values of the global batch.

        A process's logged value is a mean over its share of the batch (or,
        like the imbalance ratio, the same on every process), so the sum over
        processes of value * share is the value over the global batch. Every
        process logs the same keys at the same steps, because the method and
        the step count are the same on all of them. A key missing from a
        step's record stays missing.
        """
        if self.world_size == 1 or not records:
            return records
        keys = list(dict.fromkeys(key for record in records for key in record if key not in ("epoch", "step")))
        nan = float("nan")
        rows = [[record[key] * share if key in record else nan for key in keys] for record, share in zip(records, shares)]
        values = distributed.all_reduce_sum(torch.tensor(rows, dtype=torch.float64)).tolist()
        reduced = []
        for record, row in zip(records, values):
            logs = {key: value for key, value in zip(keys, row) if key in record}
            reduced.append({"epoch": record["epoch"], "step": record["step"], **logs})
        return reduced

    def _check_finite(self, embeddings, epoch: int, step: int) -> None:
        # One check for all modalities, so the step waits for the device once.
        finite = torch.stack([torch.isfinite(embedding).all() for embedding in embeddings])
        if bool(finite.all()):
            return
        name = self.train_set.modality_names[int(torch.nonzero(~finite)[0])]
        raise TrainingError(
            f"non-finite embedding of modality {name!r} at epoch {epoch}, step {step}; "
            "lower optimizer.lr or check the input data for NaN values"
        )

    def _check_finite_sums(self, accumulator: PrototypeAccumulator, epoch: int) -> None:
        for name, sums in zip(self.train_set.modality_names, accumulator.sums):
            if sums is not None and not bool(torch.isfinite(sums).all()):
                raise TrainingError(
                    f"non-finite embedding of modality {name!r} in the prototype pass before epoch {epoch}; "
                    "lower optimizer.lr or check the input data for NaN values"
                )

    def evaluate_epoch(self, epoch: int) -> dict[str, float]:
        bank = PrototypeBank(self.train_set.num_modalities, self.train_set.num_classes, class_names=self.train_set.class_names)
        bank.update(self.prototype_accumulator(epoch + 1))
        # Kept for the checkpoint, so that `evaluate` reproduces these numbers.
        self.evaluation_bank = bank
        metrics = {}
        names = self.train_set.modality_names
        splits = [("train", self.train_eval_loader), ("test", self.test_loader)]
        if self.val_loader is not None:
            splits.insert(1, ("val", self.val_loader))
        for split, loader in splits:
            values = evaluate(self.model, self._device_batches(loader), names, bank, self.device)
            # Each process evaluated its share of the split; weight its means by its sample count.
            values = distributed.reduce_weighted_means(values, loader.local_size())
            for key, value in values.items():
                metrics[f"{split}/{key}"] = value
        if self.config["train"]["gradient_angles"]:
            from modalbalance.analysis.gradients import epoch_gradient_angles

            # The unwrapped model on the fixed train-side evaluation subset, so
            # no random numbers are drawn and DDP hooks do not fire.
            angles = epoch_gradient_angles(self.model, self._device_batches(self.train_eval_loader), names, bank, max_batches=4)
            metrics.update(distributed.reduce_weighted_means(angles, 1))
        return metrics

    # -- the whole run ------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        # With several processes only rank 0 writes the run directory.
        main = distributed.is_main_process()
        if main:
            write_text(dump_config(self.config), self.out_dir / "config.yaml")
        logger.info("run directory: %s", self.out_dir)
        if self.world_size > 1:
            logger.info("distributed data parallel over %d processes", self.world_size)
        if self.start_epoch > 0:
            logger.info("resuming after epoch %d of %d from %s", self.start_epoch, self.epochs, self.out_dir / "last.pt")
        logger.info(
            "training %s with %s fusion on %s (%d train / %d test samples, modalities %s) for %d epochs",
            method_label(self.config["method"]),
            self.config["model"]["fusion"],
            self.config["data"]["name"],
            self.train_loader.indices.numel(),
            len(self.test_set),
            ", ".join(self.train_set.modality_names),
            self.epochs,
        )
        tensorboard = TensorBoardLogger(self.out_dir / "tensorboard", main and self.config["train"]["tensorboard"], self.start_epoch)
        started = time.perf_counter()
        for epoch in range(self.start_epoch, self.epochs):
            epoch_started = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            record.update(self.train_one_epoch(epoch))
            if self.scheduler is not None:
                self.scheduler.step()
            record.update(self.evaluate_epoch(epoch))
            record["seconds"] = time.perf_counter() - epoch_started
            self.history.append(record)
            if main:
                with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            tensorboard.log_epoch(record)
            logger.info(format_epoch(record, self.train_set.modality_names, self.epochs))
            if self.config["train"]["checkpoint"] and main:
                # best.pt first, so a kill between the writes never leaves a
                # best.pt older than the last.pt that a resume continues from.
                if self.is_best_epoch(epoch):
                    self.save(epoch, "best.pt")
                self.save(epoch, "last.pt")

        tensorboard.close()
        summary = self.summary(time.perf_counter() - started)
        if main:
            write_json(summary, self.out_dir / "summary.json")
            if self.config["train"]["plots"]:
                from modalbalance.analysis.plots import plot_run

                plot_run(self.out_dir)
        return summary

    def is_best_epoch(self, epoch: int) -> bool:
        """Return whether ``epoch`` has the highest validation accuracy so far (the earliest wins ties)."""
        if self.val_loader is None:
            return False
        accuracies = [record["val/accuracy"] for record in self.history]
        return self.history[accuracies.index(max(accuracies))]["epoch"] == epoch

    def save(self, epoch: int, name: str = "last.pt") -> None:
        state = {
            "epoch": epoch,
            "config": self.config,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "method": self.method.state_dict(),
            "evaluation_prototypes": self.evaluation_bank.state_dict(),
            "history": self.history,
            "modality_names": self.train_set.modality_names,
            "class_names": self.train_set.class_names,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }
        save_checkpoint(state, self.out_dir / name)

    def _restore(self) -> None:
        """Load ``last.pt`` of the run directory and drop the log lines written after it.

        Everything that the rest of the run reads is restored: weights,
        optimizer and scheduler state, the method's state (PMR's prototypes),
        the history and the random number generators. Batch orders and
        prototype subsets depend only on (seed, epoch), so the resumed epochs
        see the batches that an uninterrupted run would have seen.
        """
        path = self.out_dir / "last.pt"
        if not self.config["train"]["checkpoint"]:
            raise ConfigError(f"cannot resume the run in {self.out_dir}: it was started with train.checkpoint=false, so it has no checkpoint")
        if not path.is_file():
            # The run stopped during its first epoch; it starts again from scratch.
            logger.warning("no checkpoint %s yet; training the run in %s from its first epoch", path, self.out_dir)
            last_epoch = -1
        else:
            try:
                state = load_checkpoint(path)
            except Exception as error:  # torch.load raises several types for a damaged file
                raise ConfigError(f"cannot load checkpoint {path} ({type(error).__name__}: {error}); the run cannot be resumed") from None
            if not isinstance(state, dict) or resolve(state.get("config") or {}) != self.config:
                raise ConfigError(f"checkpoint {path} was written with a config other than {self.out_dir / 'config.yaml'}; restore that file to resume")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            self.method.load_state_dict(state["method"])
            self.history = list(state["history"])
            rng = state["rng"]
            torch.set_rng_state(rng["torch"])
            if rng.get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state_all(rng["cuda"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
            last_epoch = int(state["epoch"])
        self.start_epoch = last_epoch + 1
        if distributed.is_main_process():
            for name in ("metrics.jsonl", "steps.jsonl"):
                truncate_jsonl(self.out_dir / name, last_epoch)
            # Temporary files of the atomic writer (training/checkpoint.py) that a kill left behind.
            for stale in self.out_dir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def summary(self, seconds: float) -> dict[str, Any]:
        final = self.history[-1]
        names = self.train_set.modality_names
        summary = {
            "run_dir": str(self.out_dir),
            "dataset": self.config["data"]["name"],
            "method": method_label(self.config["method"]),
            "fusion": self.config["model"]["fusion"],
            "seed": self.seed,
            "epochs": self.epochs,
            "test_accuracy": final["test/accuracy"],
            "train_accuracy": final["train/accuracy"],
            "modality_test_accuracy": {name: final[f"test/prototype_accuracy/{name}"] for name in names},
            "modality_train_accuracy": {name: final[f"train/prototype_accuracy/{name}"] for name in names},
            "seconds": seconds,
        }
        if self.val_loader is not None:
            # Model selection uses the validation split only, never the test split.
            accuracies = [record["val/accuracy"] for record in self.history]
            best = self.history[accuracies.index(max(accuracies))]
            summary["best_val_epoch"] = best["epoch"]
            summary["best_val_accuracy"] = best["val/accuracy"]
            summary["test_accuracy_at_best_val"] = best["test/accuracy"]
        if f"test/head_accuracy/{names[0]}" in final:
            summary["modality_head_test_accuracy"] = {name: final[f"test/head_accuracy/{name}"] for name in names}
        return summary




def check_method_params(method_config: Mapping[str, Any]) -> tuple[Callable[..., BalancingMethod], dict[str, Any]]:
    """Return the method's builder and its keyword arguments, or raise ConfigError for an unknown method or key."""
    builder = METHODS.get(method_config["name"])
    params = {key: value for key, value in method_config.items() if key not in ("name", "unimodal")}
    check_builder_params("method", builder, params, skip=1)
    return builder, params


def check_shardable(loader: BatchLoader, name: str, every_batch: bool) -> None:
    """Raise ConfigError when a distributed run would leave a process without samples.

    Training (``every_batch``) needs a sample for every process in every global
    batch, because each step's backward pass synchronizes all processes.
    Evaluation only needs one sample per process over the whole pass.
    """
    world_size = loader.world_size
    if world_size == 1:
        return
    size = loader.indices.numel()
    if every_batch:
        last = size % loader.batch_size
        if loader.batch_size < world_size or 0 < last < world_size:
            raise ConfigError(
                f"with {world_size} processes, every batch of the {name} needs at least {world_size} samples, but "
                f"train.batch_size is {loader.batch_size} and the {size} samples leave {last or loader.batch_size} for the last batch; "
                "change train.batch_size or the number of processes"
            )
    elif size < world_size:
        raise ConfigError(f"the {name} has {size} samples, fewer than the {world_size} processes; use fewer processes")


def train(config: Mapping, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Train from a (possibly partial) config and return the run summary."""
    run = TrainingRun(config, out_dir)
    return _fit_and_close(run)


def resume(run_dir: str | Path) -> dict[str, Any]:
    """Continue the unfinished run in ``run_dir`` from its last checkpoint and return the run summary.

    The config comes from ``run_dir/config.yaml``. The resumed run ends with
    the metrics of an uninterrupted one, because the checkpoint contains every
    state that training reads.
    """
    run_dir = Path(run_dir)
    check_resumable(run_dir)
    config = load_yaml(run_dir / "config.yaml")
    run = TrainingRun(config, run_dir, resume=True)
    return _fit_and_close(run)


def _fit_and_close(run: TrainingRun) -> dict[str, Any]:
    try:
        summary = run.fit()
    except BaseException:
        # No barrier here, because the other processes may never reach one.
        if run.owns_process_group:
            distributed.shutdown()
        raise
    if run.owns_process_group:
        # Rank 0 still writes the summary and plots when the others finish, so
        # all processes wait for each other and then leave the group together.
        # NOTE: without this barrier a rank-1 worker once aborted (SIGABRT) at
        # exit on a loaded machine; that this was the cause is not confirmed.
        distributed.barrier()
        distributed.shutdown()
    return summary
