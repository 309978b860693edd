"""Config loading, overrides and validation."""

import pytest

from modalbalance.errors import ConfigError
from modalbalance.training.config import DEFAULTS, apply_override, builtin_config_names, load_config, parse_value


def test_defaults_validate():
    config = load_config()
    assert config["method"]["name"] == "pmr"
    assert config["data"]["name"] == "digits"


@pytest.mark.parametrize("text, expected", [("2", 2), ("1e-3", 0.001), ("0.5", 0.5), ("true", True), ("[a, b]", ["a", "b"]), ("null", None), ("sgd", "sgd")])
def test_parse_value(text, expected):
    assert parse_value(text) == expected


def test_override_nested_and_new_open_key():
    config = {"method": {"name": "pmr"}, "train": {"epochs": 3}}
    apply_override(config, "method.alpha=2")
    apply_override(config, "train.epochs=7")
    assert config["method"]["alpha"] == 2
    assert config["train"]["epochs"] == 7


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_override({}, "method.alpha")


def test_yaml_file_merges_with_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: {name: naive}\ntrain: {epochs: 2}\n")
    config = load_config(str(path), ["optimizer.lr=0.01"])
    assert config["method"] == {"name": "naive"}
    assert config["train"]["epochs"] == 2
    assert config["train"]["batch_size"] == DEFAULTS["train"]["batch_size"]
    assert config["optimizer"]["lr"] == 0.01


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown key train.epoch (did you mean 'epochs'?)"),
        ("trian.epochs=3", "unknown config section 'trian' (did you mean 'train'?)"),
        ("optimizer.lr=-0.1", "optimizer.lr must be > 0.0; got -0.1"),
        ("train.epochs=two", "train.epochs must be an integer; got 'two'"),
        ("train.prototype_fraction=1.5", "train.prototype_fraction must be in (0, 1]; got 1.5"),
        ("train.prototype_fraction=0", "train.prototype_fraction must be in (0, 1]; got 0"),
        ("optimizer.name=rmsprop", "optimizer.name must be one of sgd, adam, adagrad; got 'rmsprop'"),
        ("train.device=tpu", "train.device must be one of cpu, cuda; got 'tpu'"),
        ("train.missing_class=skip", "train.missing_class must be one of error, top-up; got 'skip'"),
    ],
)
def test_invalid_overrides(override, message):
    with pytest.raises(ConfigError) as raised:
        load_config(None, [override])
    assert message in str(raised.value)


def test_missing_config_file_suggests_shipped(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "absent.yaml"))


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML in .*broken.yaml at line"):
        load_config(str(path))


def test_shipped_configs_all_validate():
    names = builtin_config_names()
    assert any(name.startswith("cgmnist/") for name in names)
    for name in names:
        load_config(name)
