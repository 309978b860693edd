"""PMR's online prototypes: class means of the previous epoch's training embeddings instead of a subset pass."""

import pytest
import torch
from torch import nn

from modalbalance.data.base import EncoderSpec, TensorMultimodalDataset
from modalbalance.errors import ConfigError
from modalbalance.methods.base import TrainingContext
from modalbalance.methods.pmr import build_pmr
from modalbalance.models.base import ModelOutput
from modalbalance.pmr import PrototypeAccumulator
from modalbalance.training.runner import train


def make_method(prototype_source: str):
    dataset = TensorMultimodalDataset(
        (torch.zeros(4, 1), torch.zeros(4, 1)), torch.tensor([0, 1, 0, 1]), ("a", "b"), ("0", "1"), (EncoderSpec("x"), EncoderSpec("x"))
    )
    subset_epochs = []

    def subset_accumulator(epoch: int) -> PrototypeAccumulator:
        # Subset prototypes: class 0 at 10, class 1 at 20, in both modalities.
        subset_epochs.append(epoch)
        accumulator = PrototypeAccumulator(2, 2)
        accumulator.add([torch.tensor([[10.0], [20.0]])] * 2, torch.tensor([0, 1]))
        return accumulator

    context = TrainingContext(model=nn.Linear(1, 1), train_set=dataset, device=torch.device("cpu"), epochs=4, seed=0, prototype_accumulator=subset_accumulator)
    return build_pmr(context, prototype_source=prototype_source), subset_epochs


def training_step(method, embeddings, labels, epoch):
    embeddings = tuple(torch.tensor(e).view(-1, 1).requires_grad_() for e in embeddings)
    output = ModelOutput(logits=torch.zeros(len(labels), 2, requires_grad=True), embeddings=embeddings)
    method.compute_loss(output, torch.tensor(labels), epoch)


def test_online_prototypes_are_previous_epoch_means():
    method, subset_epochs = make_method("online")

    method.on_epoch_start(0)
    training_step(method, ([1.0, 3.0], [5.0, 7.0]), [0, 1], epoch=0)
    training_step(method, ([2.0, 6.0], [9.0, 8.0]), [0, 0], epoch=0)
    method.on_epoch_end(0)
    method.on_epoch_start(1)

    # Epoch 0 used the subset; epoch 1 uses the means of epoch 0's embeddings.
    assert subset_epochs == [0]
    gray, colored = method.pmr.bank.prototypes
    # Modality a: class 0 saw 1, 2, 6 (mean 3), class 1 saw 3.
    assert gray.flatten().tolist() == [3.0, 3.0]
    # Modality b: class 0 saw 5, 9, 8 (mean 22 / 3), class 1 saw 7.
    assert colored[0, 0].item() == pytest.approx(22.0 / 3.0)
    assert colored[1, 0].item() == 7.0


def test_online_accumulator_starts_empty_each_epoch():
    method, subset_epochs = make_method("online")
    method.on_epoch_start(0)
    training_step(method, ([1.0, 3.0], [5.0, 7.0]), [0, 1], epoch=0)
    method.on_epoch_start(1)
    training_step(method, ([11.0, 13.0], [15.0, 17.0]), [0, 1], epoch=1)
    method.on_epoch_start(2)

    assert subset_epochs == [0]
    assert method.pmr.bank.prototypes[0].flatten().tolist() == [11.0, 13.0]


def test_subset_source_ignores_training_embeddings():
    method, subset_epochs = make_method("subset")
    method.on_epoch_start(0)
    training_step(method, ([1.0, 3.0], [5.0, 7.0]), [0, 1], epoch=0)
    method.on_epoch_start(1)

    assert subset_epochs == [0, 1]
    assert method.pmr.bank.prototypes[0].flatten().tolist() == [10.0, 20.0]


def test_online_accumulator_in_state_dict():
    method, _ = make_method("online")
    method.on_epoch_start(0)
    training_step(method, ([1.0, 3.0], [5.0, 7.0]), [0, 1], epoch=0)
    restored, subset_epochs = make_method("online")

    restored.load_state_dict(method.state_dict())
    restored.on_epoch_start(1)

    assert subset_epochs == []
    assert restored.pmr.bank.prototypes[0].flatten().tolist() == [1.0, 3.0]


def test_unknown_prototype_source():
    with pytest.raises(ConfigError, match="prototype_source must be one of subset, online; got 'onlin'"):
        make_method("onlin")


@pytest.mark.slow
def test_online_run_on_digits(tmp_path):
    torch.set_num_threads(1)
    config = {"method": {"name": "pmr", "prototype_source": "online"}, "train": {"epochs": 2, "progress": False}}
    summary = train(config, tmp_path / "run")
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert set(summary["modality_test_accuracy"]) == {"gray", "colored"}
