"""Run configuration: defaults, YAML files, ``--set key=value`` overrides and validation.

A config is a nested dict with the sections below. ``data`` and ``method``
pass every key other than their fixed ones to the data set or method builder,
whose signature decides which keys are valid.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from modalbalance.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "digits", "root": None, "modalities": None},
    "model": {"fusion": "concat", "fusion_params": {}, "encoders": None, "embedding_dim": 512},
    "method": {"name": "pmr"},
    "optimizer": {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4},
    "scheduler": {"name": "step", "step_size": 70, "gamma": 0.1},
    "train": {
        "epochs": 100,
        "batch_size": 64,
        "eval_batch_size": 256,
        "num_workers": 0,
        "device": "cpu",
        "prototype_fraction": 0.1,
        "train_eval_fraction": 0.1,
        "val_fraction": 0.0,
        "missing_class": "error",
        "progress": True,
        "checkpoint": True,
        "plots": True,
        "gradient_angles": False,
        "tensorboard": True,
    },
}

# The largest seed numpy.random.seed accepts.
MAX_SEED = 2**32 - 1

# Sections whose extra keys go to a builder instead of being checked against DEFAULTS.
OPEN_SECTIONS = ("data", "method")
OPTIMIZERS = ("sgd", "adam", "adagrad")
SCHEDULERS = ("step", "none")
DEVICES = ("cpu", "cuda")
MISSING_CLASS_POLICIES = ("error", "top-up")

BUILTIN_CONFIGS = "configs"


def builtin_config_names() -> list[str]:
    """List the configs shipped with the package, as ``<dataset>/<name>`` without ``.yaml``."""
    root = resources.files("modalbalance") / BUILTIN_CONFIGS
    names = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        # Grid files for `modalbalance sweep` live beside the configs but are not configs.
        if folder.is_dir() and folder.name != "grids":
            names.extend(f"{folder.name}/{f.name[:-5]}" for f in sorted(folder.iterdir(), key=lambda p: p.name) if f.name.endswith(".yaml"))
    return names


def resolve_config_path(name_or_path: str) -> Path:
    """Find a config file given a path or the name of a shipped config (``cgmnist/pmr_concat``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"config path {name_or_path} is a directory; pass a YAML file inside it or a shipped config name")
    shipped = resources.files("modalbalance") / BUILTIN_CONFIGS / (name_or_path.removesuffix(".yaml") + ".yaml")
    if shipped.is_file():
        return Path(str(shipped))
    message = f"config file not found: {name_or_path}"
    close = difflib.get_close_matches(name_or_path.removesuffix(".yaml"), builtin_config_names(), n=1)
    if close:
        message += f" (did you mean the shipped config {close[0]!r}?)"
    else:
        message += "; pass a YAML file or a shipped config name (`modalbalance configs` lists them)"
    raise ConfigError(message)


def load_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"invalid YAML in {path}{where}; fix the syntax") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"cannot read config file {path}: invalid UTF-8 at byte {error.start}; save it as UTF-8 text") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must contain a mapping of sections; got {type(loaded).__name__}")
    return loaded


def parse_value(text: str) -> Any:
    """Parse an override value: YAML scalars and lists, plus ``1e-3`` style floats that YAML 1.1 reads as strings."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_override(config: dict, assignment: str) -> None:
    """Apply one ``section.key=value`` override in place."""
    if "=" not in assignment:
        raise ConfigError(f"invalid override {assignment!r}; expected key=value, for example method.alpha=2")
    key, text = assignment.split("=", 1)
    set_dotted_key(config, key.strip(), parse_value(text), "--set")


def set_dotted_key(config: dict, key: str, value: Any, source: str) -> None:
    """Set ``config[a][b][c] = value`` for ``key = "a.b.c"``, creating missing sections.

    ``source`` names where the key came from (``--set``, a grid file) in errors.
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{source}: invalid key {key!r}; expected dotted keys such as train.epochs")
    target = config
    for part in parts[:-1]:
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: cannot set {key!r} because {part!r} is not a section")
        target = child
    target[parts[-1]] = value


def merge(base: dict, update: Mapping) -> dict:
    """Return ``base`` updated recursively with ``update``; the inputs are not changed."""
    result = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict) and key != "fusion_params":
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _suggest(key: str, choices) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_known_keys(config: Mapping) -> None:
    """Reject keys that no section defines, suggesting the closest valid key."""
    for section, value in config.items():
        if section not in DEFAULTS:
            raise ConfigError(f"unknown config section {section!r}{_suggest(section, DEFAULTS)}; valid sections: {', '.join(DEFAULTS)}")
        if not isinstance(DEFAULTS[section], dict):
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"config section {section!r} must be a mapping; got {value!r} (to set one key, use {section}.KEY=VALUE)")
        if section in OPEN_SECTIONS:
            continue
        for key in value:
            if key not in DEFAULTS[section]:
                raise ConfigError(f"unknown key {section}.{key}{_suggest(key, DEFAULTS[section])}; valid keys: {', '.join(DEFAULTS[section])}")


def check_builder_params(kind: str, builder: Callable, params: Mapping, skip: int = 0) -> None:
    """Reject params that ``builder`` does not accept, naming the closest accepted one.

    ``skip`` is the number of leading positional parameters that the caller
    fills itself (such as ``root, split, seed``).
    """
    signature = inspect.signature(builder)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return
    accepted = list(signature.parameters)[skip:]
    # The section's fixed keys are valid too and may be what a typo meant.
    valid = {"data": ["name", "root", "modalities"], "method": ["name"]}.get(kind, []) + accepted
    for key in params:
        if key not in accepted:
            raise ConfigError(f"unknown key {kind}.{key}{_suggest(key, valid)}; valid keys: {', '.join(valid)}")


def _require_number(key: str, value: Any, minimum: float | None = None, exclusive: bool = False, integer: bool = False) -> None:
    valid_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not valid_type:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{key} must be {kind}; got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be finite; got {value!r}")
    if minimum is not None and (value < minimum or (exclusive and value == minimum)):
        bound = f"> {minimum}" if exclusive else f">= {minimum}"
        raise ConfigError(f"{key} must be {bound}; got {value!r}")


def _require_choice(key: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}{_suggest(str(value), choices)}")


def _require_fraction(key: str, value: Any) -> None:
    _require_number(key, value)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{key} must be in (0, 1]; got {value!r}")


def validate(config: Mapping) -> None:
    """Check the types and ranges of the fixed keys; builders check their own params."""
    check_known_keys(config)
    _require_number("seed", config["seed"], 0, integer=True)
    if config["seed"] > MAX_SEED:
        raise ConfigError(f"seed must be <= {MAX_SEED} (2**32 - 1, the largest seed NumPy accepts); got {config['seed']!r}")
    for section in ("data", "method"):
        if not isinstance(config[section].get("name"), str):
            raise ConfigError(f"{section}.name must be a string naming a {section}; got {config[section].get('name')!r}")
    modalities = config["data"].get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities) or not modalities):
        raise ConfigError(f"data.modalities must be null or a non-empty list of modality names; got {modalities!r}")
    if modalities is not None and len(set(modalities)) != len(modalities):
        raise ConfigError(f"data.modalities must not repeat a modality; got {modalities!r}")

    model = config["model"]
    if not isinstance(model["fusion"], str):
        raise ConfigError(f"model.fusion must be a string; got {model['fusion']!r}")
    if not isinstance(model["fusion_params"], dict):
        raise ConfigError(f"model.fusion_params must be a mapping; got {model['fusion_params']!r}")
    _require_number("model.embedding_dim", model["embedding_dim"], 1, integer=True)

    optimizer = config["optimizer"]
    _require_choice("optimizer.name", optimizer["name"], OPTIMIZERS)
    _require_number("optimizer.lr", optimizer["lr"], 0.0, exclusive=True)
    _require_number("optimizer.momentum", optimizer["momentum"], 0.0)
    _require_number("optimizer.weight_decay", optimizer["weight_decay"], 0.0)

    scheduler = config["scheduler"]
    _require_choice("scheduler.name", scheduler["name"], SCHEDULERS)
    _require_number("scheduler.step_size", scheduler["step_size"], 1, integer=True)
    _require_number("scheduler.gamma", scheduler["gamma"], 0.0, exclusive=True)

    train = config["train"]
    _require_number("train.epochs", train["epochs"], 1, integer=True)
    _require_number("train.batch_size", train["batch_size"], 1, integer=True)
    _require_number("train.eval_batch_size", train["eval_batch_size"], 1, integer=True)
    _require_number("train.num_workers", train["num_workers"], 0, integer=True)
    _require_choice("train.device", train["device"], DEVICES)
    _require_fraction("train.prototype_fraction", train["prototype_fraction"])
    _require_fraction("train.train_eval_fraction", train["train_eval_fraction"])
    _require_number("train.val_fraction", train["val_fraction"], 0.0)
    if train["val_fraction"] >= 1.0:
        raise ConfigError(f"train.val_fraction must be in [0, 1); got {train['val_fraction']!r}")
    _require_choice("train.missing_class", train["missing_class"], MISSING_CLASS_POLICIES)
    for flag in ("progress", "checkpoint", "plots", "gradient_angles", "tensorboard"):
        if not isinstance(train[flag], bool):
            raise ConfigError(f"train.{flag} must be true or false; got {train[flag]!r}")


def load_config(path: str | None = None, overrides: list[str] | None = None) -> dict:
    """Build a config from the defaults, an optional YAML file and ``key=value`` overrides, then validate it."""
    user: dict = {}
    if path is not None:
        user = load_yaml(resolve_config_path(path))
    check_known_keys(user)
    config = merge(DEFAULTS, user)
    for assignment in overrides or []:
        apply_override(config, assignment)
    validate(config)
    return config


def dump_config(config: Mapping) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)
