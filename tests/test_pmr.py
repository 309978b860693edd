"""PMR math checked against values worked out by hand on tiny tensors."""

import math

import pytest
import torch
from torch import nn

from modalbalance.errors import ConfigError, DataError
from modalbalance.pmr import (
    PMR,
    PrototypeBank,
    acceleration_weights,
    entropy_weights,
    imbalance_ratio,
    modality_scores,
    prototype_distances,
    prototype_entropy,
    prototype_logits,
    prototypical_cross_entropy,
)


def close(actual, expected, tol=1e-6):
    return torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64), atol=tol, rtol=0)


def bank_from(prototypes_per_modality):
    bank = PrototypeBank(len(prototypes_per_modality), prototypes_per_modality[0].shape[0])
    accumulator = bank.new_accumulator()
    labels = torch.arange(prototypes_per_modality[0].shape[0])
    accumulator.add(prototypes_per_modality, labels)
    bank.update(accumulator)
    return bank


# --- prototypes -------------------------------------------------------------


def test_prototypes_are_class_means():
    bank = PrototypeBank(num_modalities=2, num_classes=2)
    accumulator = bank.new_accumulator()
    # Modality 0: class 0 at (1, 1) and (3, 5), class 1 at (0, 2). Modality 1 is 1-d.
    accumulator.add([torch.tensor([[1.0, 1.0], [3.0, 5.0], [0.0, 2.0]]), torch.tensor([[2.0], [4.0], [7.0]])], torch.tensor([0, 0, 1]))
    bank.update(accumulator)
    close(bank.prototypes[0], [[2.0, 3.0], [0.0, 2.0]])
    close(bank.prototypes[1], [[3.0], [7.0]])


def test_prototypes_accumulate_over_batches():
    bank = PrototypeBank(num_modalities=2, num_classes=2)
    accumulator = bank.new_accumulator()
    accumulator.add([torch.tensor([[1.0]]), torch.tensor([[0.0]])], torch.tensor([0]))
    accumulator.add([torch.tensor([[5.0], [4.0]]), torch.tensor([[2.0], [8.0]])], torch.tensor([0, 1]))
    bank.update(accumulator)
    close(bank.prototypes[0], [[3.0], [4.0]])
    close(bank.prototypes[1], [[1.0], [8.0]])


def test_prototype_momentum():
    bank = PrototypeBank(num_modalities=2, num_classes=1, momentum=0.25)
    for value in (4.0, 8.0):
        accumulator = bank.new_accumulator()
        accumulator.add([torch.tensor([[value]]), torch.tensor([[value]])], torch.tensor([0]))
        bank.update(accumulator)
    # 0.25 * 4 + 0.75 * 8 = 7
    close(bank.prototypes[0], [[7.0]])


def test_missing_class_keeps_previous_prototype():
    bank = PrototypeBank(num_modalities=2, num_classes=2)
    first = bank.new_accumulator()
    first.add([torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [4.0]])], torch.tensor([0, 1]))
    bank.update(first)
    second = bank.new_accumulator()
    second.add([torch.tensor([[10.0]]), torch.tensor([[30.0]])], torch.tensor([0]))
    bank.update(second)
    close(bank.prototypes[0], [[10.0], [2.0]])
    close(bank.prototypes[1], [[30.0], [4.0]])
    assert torch.isfinite(bank.prototypes[0]).all()


def test_missing_class_without_prototype_raises_with_name():
    bank = PrototypeBank(num_modalities=2, num_classes=3, class_names=["cat", "dog", "owl"])
    accumulator = bank.new_accumulator()
    accumulator.add([torch.ones(2, 1), torch.ones(2, 1)], torch.tensor([0, 2]))
    with pytest.raises(DataError, match="'dog'"):
        bank.update(accumulator)


def test_prototypes_receive_no_gradient():
    encoder = nn.Linear(2, 2)
    bank = PrototypeBank(num_modalities=2, num_classes=2)
    inputs = torch.randn(4, 2)
    bank.compute([([inputs, inputs], torch.tensor([0, 1, 0, 1]))], lambda x: [encoder(x[0]), encoder(x[1])], module=encoder)
    assert not bank.prototypes[0].requires_grad
    assert encoder.training


# --- distances and probabilities -------------------------------------------


def test_distances_are_euclidean():
    embeddings = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    prototypes = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # |(3,0)-(0,0)| = 3, |(3,0)-(3,4)| = 4, |(0,0)-(3,4)| = 5; (0,0) to itself is clamped to 1e-6.
    close(prototype_distances(embeddings, prototypes), [[3.0, 4.0], [1e-6, 5.0]])


def test_probabilities_from_negative_distances():
    logits = prototype_logits(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    probabilities = logits.softmax(dim=1)
    # softmax(-3, -4) = (1 / (1 + e^-1), e^-1 / (1 + e^-1))
    close(probabilities[0, 0], 1.0 / (1.0 + math.exp(-1.0)))
    close(probabilities[0, 1], math.exp(-1.0) / (1.0 + math.exp(-1.0)))


def test_zero_distance_gradient_is_finite():
    embeddings = torch.zeros(1, 3, requires_grad=True)
    prototypes = torch.zeros(2, 3)
    prototype_logits(embeddings, prototypes).sum().backward()
    assert torch.isfinite(embeddings.grad).all()


def test_pce_zero_distance_gradient_is_finite():
    embeddings = torch.tensor([[1.0, 2.0]], requires_grad=True)
    prototypes = torch.tensor([[1.0, 2.0], [4.0, 6.0]])
    prototypical_cross_entropy(prototype_logits(embeddings, prototypes), torch.tensor([0])).backward()
    assert torch.isfinite(embeddings.grad).all()


# --- scores, ratio, coefficients -------------------------------------------


def test_modality_scores_sum_true_class_probabilities():
    # Modality 0: p(true) = 0.7 and 0.4; modality 1: 0.2 and 0.9.
    logits_0 = torch.log(torch.tensor([[0.7, 0.3], [0.6, 0.4]]))
    logits_1 = torch.log(torch.tensor([[0.2, 0.8], [0.1, 0.9]]))
    scores = modality_scores([logits_0, logits_1], torch.tensor([0, 1]))
    close(scores, [1.1, 1.1])
    scores = modality_scores([logits_0, logits_1], torch.tensor([0, 0]))
    close(scores, [1.3, 0.3])
    close(imbalance_ratio(scores), 1.3 / 0.3)


@pytest.mark.parametrize(
    "scores, expected",
    [
        ([2.0, 3.0], [0.5, 0.0]),  # rho = 2/3 < 1: beta = 1/rho - 1 = 0.5
        ([3.0, 2.0], [0.0, 0.5]),  # rho = 1.5 > 1: gamma = rho - 1 = 0.5
        ([2.0, 2.0], [0.0, 0.0]),  # rho = 1: nothing to accelerate
        ([1.0, 2.0], [1.0, 0.0]),  # rho = 0.5: beta = 1, exactly at the clip bound
        ([1.0, 5.0], [1.0, 0.0]),  # rho = 0.2: 1/rho - 1 = 4 is clipped to 1
        ([5.0, 1.0], [0.0, 1.0]),  # rho = 5: rho - 1 = 4 is clipped to 1
        ([4.0, 3.0], [0.0, 1.0 / 3.0]),
    ],
)
def test_paper_coefficients(scores, expected):
    close(acceleration_weights(torch.tensor(scores), "paper"), expected)


@pytest.mark.parametrize(
    "scores, expected",
    [([2.0, 3.0], [1.0, 0.0]), ([3.0, 2.0], [0.0, 1.0]), ([2.0, 2.0], [0.0, 0.0])],
)
def test_official_code_coefficients(scores, expected):
    close(acceleration_weights(torch.tensor(scores), "official-code"), expected)


def test_unknown_coefficient_rule():
    with pytest.raises(ConfigError, match="coefficient_rule must be one of paper, official-code"):
        acceleration_weights(torch.tensor([1.0, 2.0]), "papper")


def test_entropy_weights_cross_over():
    # Modality 0 is slow (beta = 0.5), so the dominant modality 1 gets entropy weight 0.5.
    scores = torch.tensor([2.0, 3.0])
    close(entropy_weights(acceleration_weights(scores), scores), [0.0, 0.5])
    scores = torch.tensor([3.0, 2.0])
    close(entropy_weights(acceleration_weights(scores), scores), [0.5, 0.0])


def test_three_modalities():
    scores = torch.tensor([2.0, 4.0, 3.0])
    acceleration = acceleration_weights(scores)
    # 4/2 - 1 = 1, best = 0, 4/3 - 1 = 1/3
    close(acceleration, [1.0, 0.0, 1.0 / 3.0])
    close(entropy_weights(acceleration, scores), [0.0, 1.0, 0.0])
    close(acceleration_weights(scores, "official-code"), [1.0, 0.0, 1.0])


# --- losses -----------------------------------------------------------------


def test_pce_value():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    expected = (-math.log(0.5) - math.log(0.8)) / 2
    close(prototypical_cross_entropy(logits, torch.tensor([0, 1])), expected)


def test_entropy_value():
    logits = torch.log(torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 1e-30, 1e-30]]))
    # mean of log 4 and log 2
    close(prototype_entropy(logits), (math.log(4.0) + math.log(2.0)) / 2, tol=1e-5)


def _two_modality_setup():
    """Prototypes at 0 and 1 on a line for both modalities; modality 0 embeddings are poor."""
    bank_prototypes = [torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [1.0]])]
    pmr = PMR(num_classes=2, alpha=2.0, mu=0.1, per_epochs=1)
    pmr.bank = bank_from(bank_prototypes)
    labels = torch.tensor([0, 1])
    slow = torch.tensor([[0.5], [0.5]], requires_grad=True)  # equidistant: p(true) = 0.5 each
    dominant = torch.tensor([[0.0], [1.0]], requires_grad=True)  # on its prototypes
    return pmr, labels, slow, dominant


def test_pmr_loss_combines_terms_by_hand():
    pmr, labels, slow, dominant = _two_modality_setup()
    terms = pmr.loss([slow, dominant], labels, epoch=0)
    p_dominant = 1.0 / (1.0 + math.exp(-1.0))  # distance 0 to its own prototype and 1 to the other
    close(terms.scores, [1.0, 2 * p_dominant], tol=1e-5)
    beta = min(2 * p_dominant - 1.0, 1.0)
    close(terms.acceleration_weights, [beta, 0.0], tol=1e-5)
    close(terms.entropy_weights, [0.0, beta], tol=1e-5)
    entropy_dominant = -(p_dominant * math.log(p_dominant) + (1 - p_dominant) * math.log(1 - p_dominant))
    expected = 2.0 * beta * math.log(2.0) - 0.1 * beta * entropy_dominant
    close(terms.loss, expected, tol=1e-5)
    close(terms.imbalance_ratio, 1.0 / (2 * p_dominant), tol=1e-5)


def test_pmr_without_per_and_after_er():
    pmr, labels, slow, dominant = _two_modality_setup()
    with_per = pmr.loss([slow, dominant], labels, epoch=0).loss
    after = pmr.loss([slow, dominant], labels, epoch=1).loss  # per_epochs = 1
    pmr.use_per = False
    without = pmr.loss([slow, dominant], labels, epoch=0).loss
    close(after, without)
    assert float(with_per.detach()) < float(without.detach())


def test_pmr_loss_outside_window_is_zero():
    pmr, labels, slow, dominant = _two_modality_setup()
    pmr.modulation_start, pmr.modulation_end = 2, 3
    assert float(pmr.loss([slow, dominant], labels, epoch=0).loss) == 0.0
    assert float(pmr.loss([slow, dominant], labels, epoch=4).loss) == 0.0
    assert float(pmr.loss([slow, dominant], labels, epoch=2).loss.detach()) > 0.0


def test_regularizer_raises_dominant_entropy():
    pmr, labels, slow, dominant = _two_modality_setup()
    pmr.alpha = 0.0  # isolate the regularizer
    terms = pmr.loss([slow, dominant], labels, epoch=0)
    terms.loss.backward()
    with torch.no_grad():
        stepped = dominant - 0.1 * dominant.grad
    before = prototype_entropy(prototype_logits(dominant.detach(), pmr.bank.prototypes[1]))
    after = prototype_entropy(prototype_logits(stepped, pmr.bank.prototypes[1]))
    assert float(after) > float(before)
    assert slow.grad is None or float(slow.grad.abs().sum()) == 0.0


def test_pce_gradient_reaches_only_own_encoder():
    torch.manual_seed(0)
    encoders = [nn.Linear(3, 2), nn.Linear(3, 2)]
    inputs = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    pmr = PMR(num_classes=2, use_per=False)
    pmr.update_prototypes([([inputs, inputs], labels)], lambda x: [encoders[0](x[0]), encoders[1](x[1])])
    logits = pmr.bank.logits([encoders[0](inputs), encoders[1](inputs)])
    prototypical_cross_entropy(logits[0], labels).backward()
    assert float(encoders[0].weight.grad.abs().sum()) > 0.0
    assert encoders[1].weight.grad is None


def test_pmr_rejects_invalid_arguments():
    with pytest.raises(ConfigError, match="alpha"):
        PMR(num_classes=2, alpha=-1.0)
    with pytest.raises(ConfigError, match="at least two modalities"):
        PMR(num_classes=2, num_modalities=1)
    with pytest.raises(ConfigError, match="momentum"):
        PMR(num_classes=2, prototype_momentum=1.5)
