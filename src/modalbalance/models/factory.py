"""Build a model from the ``model`` section of a config and the data set it will train on."""

from __future__ import annotations

from typing import Mapping

from torch import nn

from modalbalance.data.base import EncoderSpec, MultimodalDataset
from modalbalance.errors import ConfigError
from modalbalance.models.base import LateFusionModel
from modalbalance.models.registry import ENCODERS, FUSIONS, MODELS
from modalbalance.registry import unknown_choice_message


def encoder_specs(model_config: Mapping, dataset: MultimodalDataset) -> tuple[EncoderSpec, ...]:
    """Return the config's encoders, or the data set's defaults when the config names none."""
    configured = model_config.get("encoders")
    if configured is None:
        return dataset.default_encoders
    if not isinstance(configured, list) or len(configured) != dataset.num_modalities:
        raise ConfigError(
            f"model.encoders must be null or a list of {dataset.num_modalities} entries "
            f"(one per modality: {', '.join(dataset.modality_names)}); got {configured!r}"
        )
    specs = []
    for entry in configured:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"each model.encoders entry must be a mapping with a 'name'; got {entry!r}")
        kwargs = {key: value for key, value in entry.items() if key != "name"}
        specs.append(EncoderSpec(entry["name"], kwargs))
    return tuple(specs)


def build_model(model_config: Mapping, dataset: MultimodalDataset) -> nn.Module:
    import modalbalance.models  # noqa: F401  (registers the built-in encoders and fusions)

    fusion_name = model_config["fusion"]
    embedding_dim = model_config["embedding_dim"]
    fusion_params = dict(model_config.get("fusion_params") or {})
    if fusion_name in MODELS:
        return MODELS.build(fusion_name, dataset, embedding_dim, **fusion_params)
    if fusion_name not in FUSIONS:
        raise ConfigError(unknown_choice_message("model.fusion", fusion_name, FUSIONS.names() + MODELS.names()))

    encoders = []
    for spec in encoder_specs(model_config, dataset):
        try:
            encoders.append(ENCODERS.build(spec.name, embedding_dim=embedding_dim, **spec.kwargs))
        except TypeError as error:
            raise ConfigError(f"invalid arguments for encoder {spec.name!r}: {error}") from None
    try:
        fusion = FUSIONS.build(fusion_name, [embedding_dim] * len(encoders), dataset.num_classes, **fusion_params)
    except TypeError as error:
        raise ConfigError(f"invalid model.fusion_params for fusion {fusion_name!r}: {error}") from None
    return LateFusionModel(encoders, fusion)
