"""Dropout masks drawn four per 64-bit random number on the CPU (textdistill.dropout): their distribution, the values
and gradients they give, the attention function that uses them, and the loop's use of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from textdistill.config import DistillConfig, TrainingConfig
from textdistill.data import Collator, DistillDataset
from textdistill.dropout import (
    FAST_SDPA,
    FastDropout,
    drop_levels,
    fast_cpu_dropout,
    fast_dropout,
    keep_mask,
    keep_values,
    sdpa_fast_dropout,
)
from textdistill.objective import DistillationObjective
from textdistill.train import train_loop


def bert(seed: int = 0, **config: float) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
        **config,
    )
    return BertForSequenceClassification(cfg)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_keeps_each_element_with_probability_one_minus_p_independently(p: float) -> None:
    torch.manual_seed(0)
    mask = keep_mask((1000, 1000), p).float()
    keep = 1 - drop_levels(p) / 65536
    assert abs(keep - (1 - p)) <= 2**-17  # p is rounded to a multiple of 1/65536
    sd = (keep * (1 - keep) / 250_000) ** 0.5
    lanes = mask.view(-1, 4).mean(0)  # the four 16-bit lanes of each 64-bit draw: all uniform (the top one too)
    assert torch.all((lanes - keep).abs() < 5 * sd), lanes
    flat = mask.view(-1) - keep  # neighbours (within a draw and across draws) are uncorrelated
    for lag in (1, 2, 3, 4):
        corr = (flat[:-lag] * flat[lag:]).mean() / (keep * (1 - keep))
        assert abs(corr) < 5e-3, (lag, corr)


def test_keep_mask_comes_from_torchs_generator() -> None:
    torch.manual_seed(7)
    a = keep_mask((3, 50, 7), 0.3)
    torch.manual_seed(7)
    b = keep_mask((3, 50, 7), 0.3)
    c = keep_mask((3, 50, 7), 0.3)
    assert a.shape == (3, 50, 7) and a.dtype == torch.bool
    assert torch.equal(a, b) and not torch.equal(b, c)  # seeded: reproducible; the next draw differs
    g = torch.Generator().manual_seed(7)
    assert torch.equal(keep_mask((3, 50, 7), 0.3, generator=g), a)


def test_fast_dropout_scales_the_kept_elements_and_passes_gradients_through_them() -> None:
    x = torch.randn(6, 9, 10, requires_grad=True)
    with fast_cpu_dropout(nn.Identity()):
        torch.manual_seed(3)
        y = fast_dropout(x, 0.25)
    torch.manual_seed(3)
    mask = keep_mask(x.shape, 0.25)
    assert 0 < mask.sum() < mask.numel()
    assert torch.equal(y, torch.where(mask, x * (4 / 3), 0.0))  # 1 / (1 - p), p = 16384 / 65536 exactly
    y.backward(torch.ones_like(y))
    assert torch.allclose(x.grad, mask.float() * (4 / 3))


def test_keep_values_are_the_keep_mask_as_ones_and_zeros() -> None:
    for p in (0.1, 0.5, 1 / 65536, 65535 / 65536):  # the lowest and the highest level that drops anything
        torch.manual_seed(11)
        mask = keep_mask((64, 333), p)
        torch.manual_seed(11)
        values = keep_values((64, 333), p)
        assert values.dtype == torch.float32 and torch.equal(values, mask.float()), p


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_fast_dropout_gives_what_masking_then_scaling_gives_in_each_precision(dtype: torch.dtype) -> None:
    x = torch.randn(5, 17, 40).to(dtype).requires_grad_()
    with fast_cpu_dropout(nn.Identity()):
        torch.manual_seed(8)
        y = fast_dropout(x, 0.1)
    grad = torch.randn(5, 17, 40).to(dtype)
    y.backward(grad)
    torch.manual_seed(8)
    mask = keep_mask(x.shape, 0.1)
    scale = 65536 / (65536 - drop_levels(0.1))
    x2 = x.detach().clone().requires_grad_()
    y2 = torch.where(mask, x2, 0.0) * scale  # masked, then scaled as x * scale rounds in this precision
    y2.backward(grad)
    assert y.dtype == dtype and torch.equal(y, y2) and torch.equal(x.grad, x2.grad)


def test_outside_the_context_or_in_eval_it_is_torchs_dropout() -> None:
    x = torch.randn(40, 30)
    torch.manual_seed(1)
    ours = fast_dropout(x, 0.2)
    torch.manual_seed(1)
    assert torch.equal(ours, nn.functional.dropout(x, 0.2))  # no context: torch's own masks
    with fast_cpu_dropout(nn.Identity()):
        assert fast_dropout(x, 0.2, training=False) is x
        assert torch.equal(fast_dropout(x, 0.0), x)
        assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
        for p in (1 - 1e-6, 1e-6):  # rounds to 65536 (or 0) of the 65536 levels: torch's dropout
            torch.manual_seed(2)
            edge = fast_dropout(x, p)
            torch.manual_seed(2)
            assert torch.equal(edge, nn.functional.dropout(x, p))
    with fast_cpu_dropout(nn.Identity(), enabled=False):
        torch.manual_seed(1)
        assert torch.equal(fast_dropout(x, 0.2), ours)


def attention_inputs() -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4) for _ in range(3))
    attend = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    attend[1, ..., 3:] = False  # the second sequence has two padded keys
    return q, k, v, attend


def test_fast_sdpa_computes_softmax_then_the_fast_mask_then_the_values() -> None:
    q, k, v, attend = attention_inputs()
    module = nn.Module().train()
    with fast_cpu_dropout(nn.Identity()):
        torch.manual_seed(5)
        out, maps = sdpa_fast_dropout(module, q, k, v, attend, dropout=0.5)
    torch.manual_seed(5)
    mask = keep_mask((2, 2, 5, 5), 0.5)
    probs = torch.softmax((q @ k.transpose(2, 3) / 2).masked_fill(~attend, float("-inf")), dim=-1)
    assert maps is None and out.shape == (2, 5, 2, 4)  # [B, L, H, D], as HF's attention functions return
    assert torch.allclose(out, (torch.where(mask, probs * 2, 0.0) @ v).transpose(1, 2), atol=1e-6)
    for active, p in ((False, 0.5), (True, 0.0)):  # outside the context, or without dropout: HF's sdpa itself
        with fast_cpu_dropout(nn.Identity(), enabled=active):
            torch.manual_seed(6)
            ours, _ = sdpa_fast_dropout(module, q, k, v, attend, dropout=p)
        torch.manual_seed(6)
        assert torch.equal(ours, sdpa_attention_forward(module, q, k, v, attend, dropout=p)[0])


def test_the_context_changes_a_models_dropouts_and_attention_and_puts_them_back() -> None:
    model = bert(attention_probs_dropout_prob=0.3).train()
    embedding_dropout = model.bert.embeddings.dropout
    seen: list[torch.Tensor] = []
    embedding_dropout.register_forward_hook(lambda m, i, o: seen.append(o))
    ids = torch.randint(5, 100, (200, 30))
    with pytest.raises(RuntimeError, match="stop"), fast_cpu_dropout(model) as swapped:
        assert swapped == 8  # embeddings, 3 per layer (the attention's own is unused under sdpa), the classifier's
        assert model.config._attn_implementation == FAST_SDPA
        assert type(embedding_dropout) is FastDropout and model.bert.embeddings.dropout is embedding_dropout
        model(input_ids=ids)
        raise RuntimeError("stop")
    assert model.config._attn_implementation == "sdpa"
    assert all(type(m) is nn.Dropout for m in model.modules() if isinstance(m, nn.Dropout))
    zeros = (seen[0] == 0).float().mean().item()  # the hook stayed on the module: about p = 0.1 of its output dropped
    assert len(seen) == 1 and abs(zeros - 0.1) < 0.01
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids[:4]).logits
        with fast_cpu_dropout(model):
            assert torch.equal(model(input_ids=ids[:4]).logits, before)  # in evaluation nothing changes


@pytest.mark.parametrize("fast", [True, False])
def test_the_loop_trains_with_the_fast_masks_unless_told_not_to(tmp_path: Path, fast: bool) -> None:
    g = torch.Generator().manual_seed(0)
    feats = [
        {"input_ids": [1, *torch.randint(5, 100, (int(n),), generator=g).tolist(), 2]}
        for n in torch.randint(2, 10, (24,), generator=g)
    ]
    train_set = DistillDataset(feats, torch.randint(0, 2, (24,), generator=g).tolist())
    teacher, student = bert(0).eval(), bert(1)
    seen: list[tuple[str, str, bool]] = []
    student.register_forward_hook(
        lambda m, i, o: seen.append((m.config._attn_implementation, type(m.dropout).__name__, m.training))
    )
    args = TrainingConfig(
        learning_rate=1e-3, per_device_train_batch_size=8, num_train_epochs=1, logging_steps=1, fast_dropout=fast
    )
    objective = DistillationObjective(DistillConfig(temperature=2.0, alpha=0.5), teacher)
    train_loop(
        student,
        train_set,
        Collator(0),
        args,
        objective,
        lambda m: {"accuracy": 0.0},
        "accuracy",
        0,
        tmp_path / "log.jsonl",
        teacher=teacher,
        keep_best=False,
    )
    training = {s[:2] for s in seen if s[2]}
    assert training == ({(FAST_SDPA, "FastDropout")} if fast else {("sdpa", "Dropout")})
    assert student.config._attn_implementation == "sdpa" and type(student.dropout) is nn.Dropout  # given back
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines() if '"loss"' in line
    ]
    assert len(losses) == 3 and all(0 < x < 10 for x in losses)


def test_a_switch_that_fails_half_way_puts_the_dropouts_back(monkeypatch) -> None:
    model = bert().train()

    def refuse(name: str) -> None:
        raise ValueError(f"no attention called {name}")

    monkeypatch.setattr(model, "set_attn_implementation", refuse)
    with pytest.raises(ValueError, match="no attention called"), fast_cpu_dropout(model):
        pass
    assert all(type(m) is nn.Dropout for m in model.modules() if isinstance(m, nn.Dropout))
    assert model.config._attn_implementation == "sdpa"
    torch.manual_seed(4)
    a = nn.functional.dropout(torch.ones(50), 0.5)
    torch.manual_seed(4)
    assert torch.equal(fast_dropout(torch.ones(50), 0.5), a)  # the context is not left active


def test_attention_functions_are_registered_only_while_held_and_put_back_as_they_were() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    from textdistill.dropout import attention_function

    def theirs(*args, **kwargs):  # a function the user registered under the same name before
        raise AssertionError("not called")

    assert FAST_SDPA not in AttentionInterface._global_mapping  # importing textdistill registered nothing
    with attention_function(FAST_SDPA, sdpa_fast_dropout, sdpa_mask):
        with fast_cpu_dropout(bert()):  # nested: one registration, counted
            assert AttentionInterface._global_mapping[FAST_SDPA] is sdpa_fast_dropout
        assert AttentionInterface._global_mapping[FAST_SDPA] is sdpa_fast_dropout  # the outer block still holds it
    assert (
        FAST_SDPA not in AttentionInterface._global_mapping and FAST_SDPA not in AttentionMaskInterface._global_mapping
    )
    AttentionInterface.register(FAST_SDPA, theirs)
    try:
        with fast_cpu_dropout(bert()):
            assert AttentionInterface._global_mapping[FAST_SDPA] is sdpa_fast_dropout
        assert (
            AttentionInterface._global_mapping[FAST_SDPA] is theirs
            and FAST_SDPA not in AttentionMaskInterface._global_mapping
        )
    finally:
        del AttentionInterface._global_mapping[FAST_SDPA]
