"""Losses against closed forms."""

import math

import pytest
import torch

from textdistill.losses import (
    distillation_loss,
    hard_label_loss,
    kd_kl_loss,
    logits_mse_loss,
    soft_cross_entropy,
    soft_targets,
)


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_soft_targets_temperature():
    t = torch.tensor([[2.0, 0.0, -1.0]])
    expected = _softmax([2.0, 0.0, -1.0], 4.0)
    assert torch.allclose(soft_targets(t, 4.0)[0], torch.tensor(expected), atol=1e-6)
    # higher temperature -> flatter distribution
    assert soft_targets(t, 4.0).max() < soft_targets(t, 1.0).max()


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_kd_kl_matches_closed_form_with_t_squared(temperature):
    s = [[1.0, 0.5, -0.3], [0.0, 2.0, 1.0]]
    t = [[3.0, -1.0, 0.2], [-0.5, 0.5, 1.5]]
    expected = sum(_kl(_softmax(tt, temperature), _softmax(ss, temperature)) for ss, tt in zip(s, t)) / 2
    got = kd_kl_loss(torch.tensor(s), torch.tensor(t), temperature)
    assert got.item() == pytest.approx(temperature**2 * expected, rel=1e-5)


def test_kd_kl_is_zero_for_identical_logits_and_positive_otherwise():
    z = torch.randn(4, 5)
    assert kd_kl_loss(z, z.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_kl_loss(z, z + torch.randn(4, 5), 3.0).item() > 0


def test_t_squared_keeps_gradient_scale():
    """With T^2, the soft-target gradient stays of the same order as T grows (without it, it shrinks like 1/T^2)."""
    torch.manual_seed(0)
    t = torch.randn(64, 4) * 0.5
    norms = []
    for temp in (4.0, 16.0):
        s = (torch.randn(64, 4) * 0.5).requires_grad_()
        kd_kl_loss(s, t, temp).backward()
        norms.append(s.grad.norm().item())
    assert 0.5 < norms[1] / norms[0] < 2.0


def test_kl_masks_positions_and_handles_token_level_shape():
    s = torch.randn(2, 3, 4)
    t = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    per_pos = [kd_kl_loss(s[b, i], t[b, i], 2.0).item() for b in range(2) for i in range(3) if mask[b, i]]
    assert kd_kl_loss(s, t, 2.0, mask).item() == pytest.approx(sum(per_pos) / 3, rel=1e-5)
    # masked-out positions cannot change the loss
    s2 = s.clone()
    s2[0, 2] += 100.0
    assert kd_kl_loss(s2, t, 2.0, mask).item() == pytest.approx(kd_kl_loss(s, t, 2.0, mask).item(), rel=1e-6)


def test_soft_cross_entropy_equals_kl_plus_teacher_entropy():
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    temp = 3.0
    p = soft_targets(t, temp)
    entropy = -(p * p.log()).sum(-1).mean()
    assert soft_cross_entropy(s, p, temp).item() == pytest.approx(
        (kd_kl_loss(s, t, temp) + temp**2 * entropy).item(), rel=1e-5
    )


def test_logits_mse_closed_form():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 3.0]])
    # ((1 + 4) / 2 + (1 + 9) / 2) / 2
    assert logits_mse_loss(s, t).item() == pytest.approx(3.75)
    assert logits_mse_loss(s, t, torch.tensor([True, False])).item() == pytest.approx(2.5)


def test_hard_label_loss_closed_form():
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    expected = (-math.log(_softmax([2, 0], 1)[0]) - math.log(_softmax([0, 1], 1)[0])) / 2
    assert hard_label_loss(s, y).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_alpha_mixing(alpha):
    s, t, y = torch.randn(6, 3), torch.randn(6, 3), torch.randint(0, 3, (6,))
    terms = distillation_loss(s, t, y, kind="kl", temperature=2.0, alpha=alpha)
    kd, ce = kd_kl_loss(s, t, 2.0), hard_label_loss(s, y)
    assert terms["loss"].item() == pytest.approx((alpha * kd + (1 - alpha) * ce).item(), rel=1e-6)
    assert terms["kd"].item() == pytest.approx(kd.item(), rel=1e-6)
    assert ("ce" in terms) == (alpha < 1.0)


def test_mse_kind_ignores_temperature():
    s, t, y = torch.randn(6, 3), torch.randn(6, 3), torch.randint(0, 3, (6,))
    a = distillation_loss(s, t, y, kind="mse", temperature=1.0, alpha=1.0)["loss"]
    b = distillation_loss(s, t, y, kind="mse", temperature=7.0, alpha=1.0)["loss"]
    assert a.item() == pytest.approx(b.item()) == pytest.approx(logits_mse_loss(s, t).item())
    with pytest.raises(ValueError, match="unknown distillation loss"):
        distillation_loss(s, t, y, kind="cosine")


def test_each_loss_family_is_one_table_and_the_config_offers_exactly_its_names():
    """Adding a loss is one function and one table entry; the config's choices may not drift from the tables."""
    from typing import get_args

    from textdistill.config import _LOSSES_FOR, DistillConfig, GenerativeDistillConfig
    from textdistill.lm_losses import TOKEN_DIVERGENCES
    from textdistill.losses import ATTENTION_LOSSES, FEATURE_LOSSES, LOGIT_LOSSES

    def choices(model, field):
        return set(get_args(model.model_fields[field].annotation))

    assert choices(DistillConfig, "loss") == set(LOGIT_LOSSES) - {"binary_kl"}  # binary_kl: chosen for multi-hot labels
    assert set(_LOSSES_FOR["attention"]) == set(ATTENTION_LOSSES)
    assert set(_LOSSES_FOR["hidden"]) == set(_LOSSES_FOR["module"]) == set(FEATURE_LOSSES)
    assert choices(GenerativeDistillConfig, "divergence") == set(TOKEN_DIVERGENCES)


def test_table_entries_share_one_signature_and_match_their_closed_forms():
    from textdistill.losses import FEATURE_LOSSES, LOGIT_LOSSES, patient_loss

    torch.manual_seed(0)
    s, t = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    assert torch.allclose(FEATURE_LOSSES["pkd"](s, t, None), patient_loss(s[:, 0], t[:, 0]))  # the first position
    assert torch.allclose(FEATURE_LOSSES["pkd"](s[:, 0], t[:, 0], None), patient_loss(s[:, 0], t[:, 0]))
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    for temperature in (1.0, 4.0):  # raw-logit MSE: the temperature does not enter
        assert torch.allclose(LOGIT_LOSSES["mse"](a, b, temperature, None), ((a - b) ** 2).mean())
    with pytest.raises(ValueError, match="expected one of: kl, mse, binary_kl"):
        distillation_loss(a, b, torch.tensor([0, 1, 2, 0]), kind="cosine")
