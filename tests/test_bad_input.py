"""Bad input at the command line: one error line naming the value, exit code 2, no traceback, no run directory lost.

Every case runs ``python -m modalbalance.cli`` in a subprocess. Data cases
write small fake MNIST IDX files to ``tmp_path`` and read them as CG-MNIST.
"""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

from modalbalance.errors import TrainingError
from modalbalance.training.config import dump_config, load_config
from modalbalance.training.runner import TrainingRun

QUICK = ["--set", "train.epochs=1", "--set", "train.progress=false"]


# -- fake MNIST files ---------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file of unsigned bytes: magic number, one big-endian size per dimension, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, train: int = 40, test: int = 20, train_labels: np.ndarray | None = None) -> Path:
    """Write the four MNIST files with ``train`` and ``test`` random 28x28 digits, labels cycling through 0..9."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", train), ("t10k", test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(count, 28, 28)))
        labels = np.arange(count) % 10
        if prefix == "train" and train_labels is not None:
            labels = train_labels
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def cgmnist_args(root: Path) -> list[str]:
    return ["--set", "data.name=cgmnist", "--set", f"data.root={root}"]


def missing_directory(tmp_path):
    return cgmnist_args(tmp_path / "no-such-mnist")


def missing_file(tmp_path):
    root = fake_mnist(tmp_path / "mnist")
    (root / "train-labels-idx1-ubyte").unlink()
    return cgmnist_args(root)


def truncated_file(tmp_path):
    root = fake_mnist(tmp_path / "mnist")
    path = root / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    return cgmnist_args(root)


def corrupt_gzip(tmp_path):
    root = fake_mnist(tmp_path / "mnist")
    raw = root / "train-images-idx3-ubyte"
    compressed = gzip.compress(raw.read_bytes())
    raw.unlink()
    (root / "train-images-idx3-ubyte.gz").write_bytes(compressed[: len(compressed) // 2])
    return cgmnist_args(root)


def swapped_files(tmp_path):
    root = fake_mnist(tmp_path / "mnist")
    images, labels = root / "train-images-idx3-ubyte", root / "train-labels-idx1-ubyte"
    image_bytes = images.read_bytes()
    images.write_bytes(labels.read_bytes())
    labels.write_bytes(image_bytes)
    return cgmnist_args(root)


def label_outside_classes(tmp_path):
    labels = np.arange(40) % 10
    labels[7] = 12
    return cgmnist_args(fake_mnist(tmp_path / "mnist", train_labels=labels))


def count_mismatch(tmp_path):
    root = fake_mnist(tmp_path / "mnist")
    write_idx(root / "train-labels-idx1-ubyte", np.arange(39) % 10)
    return cgmnist_args(root)


def empty_split(tmp_path):
    return cgmnist_args(fake_mnist(tmp_path / "mnist", test=0))


# -- config files -------------------------------------------------------------


def config_file(text: bytes):
    def make(tmp_path):
        path = tmp_path / "run.yaml"
        path.write_bytes(text)
        return ["--config", str(path)]

    return make


def overrides(*assignments):
    def make(tmp_path):
        return [argument for assignment in assignments for argument in ("--set", assignment)]

    return make


# -- resume ---------------------------------------------------------------------


def resume_missing_directory(tmp_path):
    return ["--resume", str(tmp_path / "no-such-run")]


def resume_without_run(tmp_path):
    (tmp_path / "empty").mkdir()
    return ["--resume", str(tmp_path / "empty")]


def resume_with_override(tmp_path):
    return ["--resume", str(saved_run(tmp_path)), "--set", "train.epochs=5"]


def resume_finished_run(tmp_path):
    run_dir = saved_run(tmp_path)
    (run_dir / "summary.json").write_text('{"test_accuracy": 0.5}\n')
    return ["--resume", str(run_dir)]


def resume_corrupt_checkpoint(tmp_path):
    run_dir = saved_run(tmp_path)
    (run_dir / "last.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    return ["--resume", str(run_dir)]


def saved_run(tmp_path) -> Path:
    """Create a run directory as an interrupted run leaves it: config, one metrics line and a checkpoint."""
    run_dir = tmp_path / "saved"
    run_dir.mkdir()
    config = load_config(None, ["train.epochs=2", "train.progress=false"])
    (run_dir / "config.yaml").write_text(dump_config(config))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "test/accuracy": 0.5}) + "\n")
    (run_dir / "last.pt").write_bytes(b"a checkpoint placeholder")
    return run_dir


def existing_run(tmp_path):
    run_dir = tmp_path / "saved"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"keep": true}\n')
    return ["--out", str(run_dir)]


def existing_unfinished_run(tmp_path):
    run_dir = tmp_path / "saved"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 3\n")
    return ["--out", str(run_dir)]


def out_under_file(tmp_path):
    (tmp_path / "notes.txt").write_text("keep\n")
    return ["--out", str(tmp_path / "notes.txt" / "run")]


def mnist_root_is_file(tmp_path):
    (tmp_path / "mnist.txt").write_text("not a directory\n")
    return cgmnist_args(tmp_path / "mnist.txt")


def resume_file(tmp_path):
    (tmp_path / "run.txt").write_text("keep\n")
    return ["--resume", str(tmp_path / "run.txt")]


# Each case: id, a function of tmp_path returning the arguments after `train`, and the message fragment.
CASES = [
    ("unknown-key", overrides("train.epoch=3"), "unknown key train.epoch (did you mean 'epochs'?)"),
    ("unknown-method-key", overrides("method.alfa=2"), "unknown key method.alfa (did you mean 'alpha'?)"),
    ("unknown-section", overrides("trian.epochs=3"), "unknown config section 'trian' (did you mean 'train'?)"),
    ("epochs-not-integer", overrides("train.epochs=two"), "train.epochs must be an integer; got 'two'"),
    ("batch-size-float", overrides("train.batch_size=1.5"), "train.batch_size must be an integer; got 1.5"),
    ("flag-not-boolean", overrides("train.progress=maybe"), "train.progress must be true or false; got 'maybe'"),
    ("alpha-not-number", overrides("method.alpha=abc"), "alpha must be a finite number >= 0; got 'abc'"),
    ("negative-lr", overrides("optimizer.lr=-0.1"), "optimizer.lr must be > 0.0; got -0.1"),
    ("fraction-above-one", overrides("train.prototype_fraction=1.5"), "train.prototype_fraction must be in (0, 1]; got 1.5"),
    ("fraction-zero", overrides("train.prototype_fraction=0"), "train.prototype_fraction must be in (0, 1]; got 0"),
    ("negative-alpha", overrides("method.alpha=-1"), "alpha must be a finite number >= 0; got -1"),
    ("negative-mu", overrides("method.mu=-0.5"), "mu must be a finite number >= 0; got -0.5"),
    ("zero-epochs", overrides("train.epochs=0"), "train.epochs must be >= 1; got 0"),
    ("momentum-one", overrides("method.prototype_momentum=1"), "prototype momentum must be a number in [0, 1); got 1"),
    ("negative-per-epochs", overrides("method.per_epochs=-1"), "per_epochs must be >= 0; got -1"),
    ("prototype-source-typo", overrides("method.prototype_source=onlin"), "method.prototype_source must be one of subset, online; got 'onlin' (did you mean 'online'?)"),
    ("modalities-not-list", overrides("data.modalities=gray"), "data.modalities must be null or a non-empty list"),
    ("unknown-modality", overrides("data.modalities=[depth]"), "data.modalities contains unknown modality 'depth'"),
    ("yaml-syntax", config_file(b"train: {epochs: 1\n"), "invalid YAML in"),
    ("yaml-list", config_file(b"- train\n- epochs\n"), "must contain a mapping of sections; got list"),
    ("yaml-not-utf8", config_file(b"train: {epochs: 1}\n\xff\xfe\n"), "invalid UTF-8 at byte 19"),
    ("yaml-section-scalar", config_file(b"train: 5\n"), "config section 'train' must be a mapping; got 5"),
    ("config-not-found", lambda tmp_path: ["--config", str(tmp_path / "missing.yaml")], "config file not found"),
    ("mnist-directory-missing", missing_directory, "MNIST directory not found"),
    ("mnist-file-missing", missing_file, "MNIST file not found"),
    ("idx-truncated", truncated_file, "truncated IDX file"),
    ("gzip-corrupt", corrupt_gzip, "corrupt or truncated gzip file"),
    ("idx-swapped", swapped_files, "expected an IDX file with 3 dimensions, found 1"),
    ("label-outside-classes", label_outside_classes, "go up to 12; expected digits 0..9"),
    ("label-count-mismatch", count_mismatch, "has 40 images but"),
    ("empty-split", empty_split, "the test split of data set 'cgmnist' is empty"),
    ("class-missing-from-subset", overrides("train.prototype_fraction=0.002", "train.missing_class=error"), "no sample in the prototype subset"),
    ("non-finite-embedding", overrides("optimizer.lr=1e30"), "non-finite embedding of modality 'gray' at epoch 0, step 1"),
    ("resume-directory-missing", resume_missing_directory, "cannot resume: run directory"),
    ("resume-without-run", resume_without_run, "contains no run (config.yaml is missing)"),
    ("resume-with-override", resume_with_override, "drop --config, --set and --out"),
    ("resume-finished-run", resume_finished_run, "has finished (summary.json exists)"),
    ("resume-corrupt-checkpoint", resume_corrupt_checkpoint, "cannot load checkpoint"),
    ("method-section-scalar", overrides("method=pmr"), "config section 'method' must be a mapping; got 'pmr' (to set one key, use method.KEY=VALUE)"),
    ("data-section-null", config_file(b"data: null\n"), "config section 'data' must be a mapping; got None"),
    ("duplicate-modality", overrides("data.modalities=[gray,gray]"), "data.modalities must not repeat a modality"),
    ("validation-takes-everything", overrides("train.val_fraction=0.9999"), "no training samples are left"),
    ("existing-run-directory", existing_run, "already contains a run (summary.json)"),
    ("existing-unfinished-run", existing_unfinished_run, "already contains a run (config.yaml); choose another --out, or continue"),
    ("seed-too-large", overrides("seed=4294967296"), "seed must be <= 4294967295"),
    ("out-empty", lambda tmp_path: ["--out", ""], "--out is empty"),
    ("out-under-file", out_under_file, "cannot create run directory"),
    ("config-is-directory", lambda tmp_path: ["--config", str(tmp_path)], "is a directory; pass a YAML file"),
    ("mnist-root-is-file", mnist_root_is_file, "is a file, not a directory"),
    ("resume-file", resume_file, "is a file, not a run directory"),
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("make_args, fragment", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_one_line_error(tmp_path, make_args, fragment):
    args = make_args(tmp_path)
    if "--resume" not in args and "--out" not in args:
        args = [*args, "--out", str(tmp_path / "run")]
    if "--resume" not in args:
        # The case's own overrides come last, so they win over these.
        args = [*QUICK, *args]
    before = snapshot(tmp_path)

    result = run_cli("train", *args)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1, result.stderr
    assert fragment in error_lines[0]
    # Files that existed before the command, such as an earlier run, are unchanged.
    after = snapshot(tmp_path)
    assert {name: after.get(name) for name in before} == before


def test_bad_input_table_is_large():
    assert len(CASES) >= 20


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_device(tmp_path):
    result = run_cli("train", "--set", "train.device=cuda", "--out", str(tmp_path / "run"), *QUICK)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no CUDA device is available" in result.stderr


def test_nan_input_error_names_step(tmp_path):
    torch.set_num_threads(1)
    run = TrainingRun({"method": {"name": "naive"}, "train": {"epochs": 1, "progress": False, "batch_size": 64}}, tmp_path / "run")
    # A NaN pixel in one colored digit of the fourth batch (step 3) of epoch 0.
    order = run.train_loader.order(0)
    bad = int(order[3 * 64 + 5])
    run.train_set.inputs[1][bad, 0, 4, 4] = float("nan")

    with pytest.raises(TrainingError) as raised:
        run.fit()

    message = str(raised.value)
    assert "modality 'colored'" in message
    assert "epoch 0, step 3" in message


def test_inf_input_in_prototype_pass(tmp_path):
    torch.set_num_threads(1)
    run = TrainingRun({"train": {"epochs": 1, "progress": False, "prototype_fraction": 1.0}}, tmp_path / "run")
    run.train_set.inputs[0][0, 0, 2, 2] = float("inf")

    with pytest.raises(TrainingError) as raised:
        run.fit()

    message = str(raised.value)
    assert "modality 'gray'" in message
    assert "prototype pass before epoch 0" in message
