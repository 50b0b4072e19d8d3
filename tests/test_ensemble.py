"""Teacher-ensemble fusion, ensemble KD losses, teacher annealing and task sampling against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from textdistill.ensemble import (
    annealed_target,
    confidence_weights,
    ensemble_kd_loss,
    fuse_regression,
    fuse_soft_targets,
    kl_to_target,
    task_probabilities,
    task_schedule,
    teacher_weights,
)
from textdistill.losses import kd_kl_loss
from textdistill.metrics import matthews_corrcoef, regression_metrics, task_metrics

# Two teachers, one example, two classes, T = 1: softmax([0, ln 3]) = [1/4, 3/4]; softmax([ln 3, 0]) = [3/4, 1/4].
LN3 = math.log(3.0)
TWO = torch.tensor([[[0.0, LN3]], [[LN3, 0.0]]])  # [K=2, B=1, C=2]


def test_mean_of_probabilities_by_hand() -> None:
    fused = fuse_soft_targets(TWO, "mean_probs", 1.0, teacher_weights(2, "mean_probs"))
    assert torch.allclose(fused, torch.tensor([[0.5, 0.5]]))


def test_mean_of_logits_by_hand() -> None:
    t = torch.tensor([[[0.0, 2.0]], [[0.0, 4.0]]])
    fused = fuse_soft_targets(t, "mean_logits", 2.0, teacher_weights(2, "mean_logits"))
    # mean logits [0, 3], at T = 2: softmax([0, 1.5])
    e = math.exp(1.5)
    assert torch.allclose(fused, torch.tensor([[1 / (1 + e), e / (1 + e)]]))


def test_fixed_and_dev_score_weights_by_hand() -> None:
    w = teacher_weights(2, "weighted", weights=[3.0, 1.0])
    assert torch.allclose(w, torch.tensor([0.75, 0.25]))
    fused = fuse_soft_targets(TWO, "weighted", 1.0, w)
    assert torch.allclose(fused, torch.tensor([[0.75 * 0.25 + 0.25 * 0.75, 0.75 * 0.75 + 0.25 * 0.25]]))
    assert torch.allclose(
        teacher_weights(3, "dev_score", dev_scores=[0.8, 0.9, 0.9]), torch.tensor([0.8, 0.9, 0.9]) / 2.6
    )


def test_confidence_weights_follow_each_examples_most_sure_teacher() -> None:
    # example 0: teacher A gives [0.9, 0.1], teacher B [0.6, 0.4] -> weights 0.9/1.5 and 0.6/1.5
    t = torch.log(torch.tensor([[[0.9, 0.1], [0.5, 0.5]], [[0.6, 0.4], [0.2, 0.8]]]))  # [K=2, B=2, C=2]
    w = confidence_weights(t)
    assert torch.allclose(w[:, 0], torch.tensor([0.6, 0.4]))
    assert torch.allclose(w[:, 1], torch.tensor([0.5 / 1.3, 0.8 / 1.3]))
    fused = fuse_soft_targets(t, "confidence", 1.0, teacher_weights(2, "confidence"))
    assert torch.allclose(fused[0], 0.6 * torch.tensor([0.9, 0.1]) + 0.4 * torch.tensor([0.6, 0.4]))
    assert torch.allclose(fused.sum(-1), torch.ones(2))


def test_kl_to_target_closed_form_and_zero_probabilities() -> None:
    s = torch.tensor([[0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])  # KL([1, 0] || [1/2, 1/2]) = ln 2; a zero entry contributes nothing
    assert torch.allclose(kl_to_target(s, p, 1.0), torch.tensor(math.log(2.0)))
    assert torch.allclose(kl_to_target(s, p, 3.0), torch.tensor(9 * math.log(2.0)))  # logits 0 stay uniform at any T


def test_fused_and_mean_kl_objectives_differ_as_expected() -> None:
    s = torch.tensor([[0.3, -0.2]])
    w = teacher_weights(2, "mean_probs")
    fused = ensemble_kd_loss(s, TWO, temperature=1.0, fusion="mean_probs", weights=w, objective="fused")
    assert torch.allclose(fused, kl_to_target(s, torch.tensor([[0.5, 0.5]]), 1.0))
    mean_kl = ensemble_kd_loss(s, TWO, temperature=1.0, fusion="mean_probs", weights=w, objective="mean_kl")
    by_hand = 0.5 * kd_kl_loss(s, TWO[0], 1.0) + 0.5 * kd_kl_loss(s, TWO[1], 1.0)
    assert torch.allclose(mean_kl, by_hand)
    # KL is convex in its first argument: KL to the mixture <= the mixture of KLs
    assert fused <= mean_kl + 1e-6


def test_mean_kl_with_per_example_confidence_weights() -> None:
    t = torch.log(torch.tensor([[[0.9, 0.1], [0.5, 0.5]], [[0.6, 0.4], [0.2, 0.8]]]))
    s = torch.tensor([[0.1, 0.2], [0.0, -1.0]])
    got = ensemble_kd_loss(s, t, temperature=1.0, fusion="confidence", objective="mean_kl")
    w = confidence_weights(t)
    per = [[kd_kl_loss(s[b : b + 1], t[k, b : b + 1], 1.0) for b in range(2)] for k in range(2)]
    by_hand = sum(w[k, b] * per[k][b] for k in range(2) for b in range(2)) / 2
    assert torch.allclose(got, by_hand)


def test_one_teacher_ensemble_is_plain_kd() -> None:
    s, t = torch.randn(4, 3), torch.randn(1, 4, 3)
    for objective in ("fused", "mean_kl"):
        got = ensemble_kd_loss(s, t, temperature=2.0, objective=objective)
        assert torch.allclose(got, kd_kl_loss(s, t[0], 2.0), atol=1e-6)


def test_regression_fusion_and_annealing() -> None:
    assert torch.allclose(
        fuse_regression(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([0.25, 0.75])), torch.tensor([2.5, 3.5])
    )
    assert torch.allclose(annealed_target(torch.tensor([2.0]), torch.tensor([4.0]), 0.25), torch.tensor([2.5]))
    probs = torch.tensor([[0.2, 0.8]])
    assert torch.allclose(annealed_target(probs, torch.tensor([0]), 0.0), probs)
    assert torch.allclose(annealed_target(probs, torch.tensor([0]), 1.0), torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(annealed_target(probs, torch.tensor([0]), 0.5), torch.tensor([[0.6, 0.4]]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fusion": "weighted", "weights": [1.0]}, "one weight per teacher"),
        ({"fusion": "weighted", "weights": [1.0, -1.0]}, "non-negative"),
        ({"fusion": "dev_score"}, "one dev score per teacher"),
        ({"fusion": "median"}, "fusion must be one of"),
    ],
)
def test_bad_fusion_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        teacher_weights(2, **kwargs)


def test_task_probabilities_by_hand() -> None:
    assert task_probabilities([100, 300], "proportional") == pytest.approx([0.25, 0.75])
    assert task_probabilities([100, 400], "size_power", tau=0.5) == pytest.approx([10 / 30, 20 / 30])
    assert task_probabilities([100, 400], "size_power", tau=0.0) == pytest.approx([0.5, 0.5])
    assert task_probabilities([1, 1000, 5], "round_robin") == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="every task needs training examples"):
        task_probabilities([10, 0])


def test_task_schedule_is_seeded_and_follows_the_probabilities() -> None:
    a = list(task_schedule([100, 300], "proportional", 1.0, seed=3))
    assert a == list(task_schedule([100, 300], "proportional", 1.0, seed=3))
    assert len(a) == 400 and abs(a.count(1) / 400 - 0.75) < 0.07
    assert list(task_schedule([2, 1, 1], "round_robin", 1.0, seed=0)) == [0, 1, 2, 0]


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 4.0, 6.0, 8.0]))
    assert m["pearson"] == pytest.approx(1.0) and m["spearman"] == pytest.approx(1.0) and m["mse"] == pytest.approx(7.5)
    # monotone but not linear: Spearman 1, Pearson below 1
    m = regression_metrics(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([1.0, 10.0, 100.0]))
    # deviations x: [-1, 0, 1], y: [-36, -27, 63]: r = 99 / sqrt(2 * 5994)
    assert m["spearman"] == pytest.approx(1.0) and m["pearson"] == pytest.approx(99 / math.sqrt(2 * 5994), rel=1e-5)
    assert regression_metrics(torch.ones(3), torch.tensor([1.0, 2.0, 3.0]))["pearson"] == 0.0


def test_matthews_correlation_by_hand() -> None:
    # TP=2 TN=1 FP=1 FN=0: (2*1 - 1*0) / sqrt(3 * 2 * 2 * 1) = 2 / sqrt(12)
    labels = torch.tensor([1, 1, 0, 0])
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert matthews_corrcoef(logits, labels) == pytest.approx(2 / math.sqrt(12))
    assert task_metrics(logits, labels)["mcc"] == pytest.approx(2 / math.sqrt(12))
    assert task_metrics(logits, labels)["accuracy"] == pytest.approx(0.75)
