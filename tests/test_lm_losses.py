"""Token-level losses for causal-LM distillation against closed forms computed in plain Python."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from textdistill.lm_losses import (
    TOKEN_DIVERGENCES,
    bytes_per_token,
    chunked_token_loss,
    completion_mask,
    forward_kl,
    forward_kl_topk,
    jsd,
    masked_mean,
    reverse_kl,
    shift_for_next_token,
    skew_kl,
    skew_reverse_kl,
    token_divergence,
    topk_teacher,
    tv,
)
from textdistill.losses import kd_kl_loss

# 3 positions, 4 tokens
S = [[1.0, 0.5, -0.3, 2.0], [0.0, 2.0, 1.0, -1.0], [0.3, 0.3, 0.3, 0.3]]
T = [[3.0, -1.0, 0.2, 0.5], [-0.5, 0.5, 1.5, 0.0], [2.0, -2.0, 0.0, 1.0]]


def _softmax(z: list[float], temp: float) -> list[float]:
    e = [math.exp(v / temp) for v in z]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _mix(a: list[float], b: list[float], w: float) -> list[float]:
    return [w * x + (1 - w) * y for x, y in zip(a, b)]


def _hand(name: str, s: list[float], t: list[float], temp: float, **kw: float) -> float:
    ps, pt = _softmax(s, temp), _softmax(t, temp)
    if name == "forward_kl":
        d = _kl(pt, ps)
    elif name == "reverse_kl":
        d = _kl(ps, pt)
    elif name == "jsd":
        b = kw["beta"]
        m = _mix(pt, ps, b)
        d = b * _kl(pt, m) + (1 - b) * _kl(ps, m)
    elif name == "skew_kl":
        d = _kl(pt, _mix(pt, ps, kw["alpha"]))
    elif name == "skew_reverse_kl":
        d = _kl(ps, _mix(ps, pt, kw["alpha"]))
    else:
        d = 0.5 * sum(abs(a - b) for a, b in zip(pt, ps))
    return temp**2 * d


CASES = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.5}),
    ("jsd", {"beta": 0.1}),
    ("jsd", {"beta": 0.9}),
    ("skew_kl", {"alpha": 0.1}),
    ("skew_kl", {"alpha": 0.5}),
    ("skew_reverse_kl", {"alpha": 0.1}),
    ("skew_reverse_kl", {"alpha": 0.3}),
    ("tv", {}),
]


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize(("name", "kw"), CASES)
def test_divergence_matches_hand_computation(name, kw, temperature):
    got = token_divergence(name, torch.tensor(S), torch.tensor(T), temperature, **kw)
    assert got.shape == (3,) and got.dtype == torch.float32
    expected = [_hand(name, s, t, temperature, **kw) for s, t in zip(S, T)]
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6, rtol=1e-5)
    # the named functions are what the dispatcher calls
    assert torch.equal(TOKEN_DIVERGENCES[name](torch.tensor(S), torch.tensor(T), temperature, **kw), got)


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_zero_when_student_equals_teacher(name, kw):
    x = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.allclose(token_divergence(name, x, x.clone(), 2.0, **kw), torch.zeros(2, 3), atol=1e-6)


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_nonnegative_and_batched_shape(name, kw):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 5, 9, generator=g) * 2, torch.randn(2, 5, 9, generator=g) * 2
    d = token_divergence(name, s, t, 1.5, **kw)
    assert d.shape == (2, 5) and (d >= -1e-6).all()


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_forward_kl_equals_kd_kl_loss(temperature):
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)
    ours = masked_mean(forward_kl(s, t, temperature), mask)
    assert torch.allclose(ours, kd_kl_loss(s, t, temperature, mask), atol=1e-6)


def test_jsd_limits_are_proportional_to_forward_and_reverse_kl():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g, dtype=torch.float64)
    eps = 1e-5
    # JSD_beta / beta -> KL(p_t || p_s) as beta -> 0; JSD_beta / (1 - beta) -> KL(p_s || p_t) as beta -> 1
    assert torch.allclose(jsd(s, t, 2.0, beta=eps) / eps, forward_kl(s, t, 2.0), rtol=1e-3)
    assert torch.allclose(jsd(s, t, 2.0, beta=1 - eps) / eps, reverse_kl(s, t, 2.0), rtol=1e-3)
    # ... while the unscaled value itself vanishes at both ends
    assert (jsd(s, t, beta=eps) < 1e-3 * forward_kl(s, t)).all()


def test_jsd_symmetry_and_bound():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(3, 5, 10, generator=g) * 3, torch.randn(3, 5, 10, generator=g) * 3
    assert torch.allclose(jsd(s, t, beta=0.5), jsd(t, s, beta=0.5), atol=1e-6)
    assert torch.allclose(jsd(s, t, beta=0.2), jsd(t, s, beta=0.8), atol=1e-6)
    for beta in (0.1, 0.5, 0.7):  # bounded by the binary entropy h(beta) (log 2 at 0.5), x T^2
        h = -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)
        assert (jsd(s, t, 1.0, beta=beta) <= h + 1e-6).all()
        assert (jsd(s, t, 3.0, beta=beta) <= 9 * h + 1e-5).all()
    # nearly disjoint distributions reach the bound
    a = torch.tensor([[50.0, -50.0]])
    assert torch.allclose(jsd(a, -a, beta=0.5), torch.tensor([math.log(2)]), atol=1e-6)


def test_jsd_beta_out_of_range():
    x = torch.zeros(1, 3)
    for beta in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="beta"):
            jsd(x, x, beta=beta)


def test_skew_kls_reduce_to_kls_at_alpha_zero_and_are_bounded():
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(3, 6, generator=g) * 4, torch.randn(3, 6, generator=g) * 4
    assert torch.allclose(skew_kl(s, t, 2.0, alpha=0.0), forward_kl(s, t, 2.0), atol=1e-6)
    assert torch.allclose(skew_reverse_kl(s, t, 2.0, alpha=0.0), reverse_kl(s, t, 2.0), atol=1e-6)
    far = torch.tensor([[30.0, -30.0, 0.0]])
    for alpha in (0.1, 0.5):
        assert (skew_kl(far, -far, alpha=alpha) <= -math.log(alpha) + 1e-6).all()
        assert (skew_reverse_kl(far, -far, alpha=alpha) <= -math.log(alpha) + 1e-6).all()
    with pytest.raises(ValueError, match="alpha"):
        skew_kl(s, t, alpha=1.0)


def test_tv_in_unit_interval():
    g = torch.Generator().manual_seed(6)
    s, t = torch.randn(4, 5, 12, generator=g) * 5, torch.randn(4, 5, 12, generator=g) * 5
    d = tv(s, t)
    assert ((d >= 0) & (d <= 1)).all()
    assert torch.allclose(tv(s, t), tv(t, s))
    assert torch.allclose(tv(torch.tensor([[100.0, -100.0]]), torch.tensor([[-100.0, 100.0]])), torch.tensor([1.0]))


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_bf16_inputs_give_float32_finite_values(name, kw):
    g = torch.Generator().manual_seed(7)
    s, t = torch.randn(2, 3, 16, generator=g), torch.randn(2, 3, 16, generator=g)
    got = token_divergence(name, s.bfloat16(), t.bfloat16(), 2.0, **kw)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    # same as the float32 computation on the bf16-rounded logits
    ref = token_divergence(name, s.bfloat16().float(), t.bfloat16().float(), 2.0, **kw)
    assert torch.equal(got, ref)


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_large_logits_are_finite_with_finite_gradients(name, kw):
    g = torch.Generator().manual_seed(8)
    s = (torch.randn(2, 3, 8, generator=g) * 1e4).requires_grad_()
    t = torch.randn(2, 3, 8, generator=g) * 1e4
    for temperature in (1.0, 2.0):
        d = token_divergence(name, s, t, temperature, **kw)
        assert torch.isfinite(d).all() and (d >= -1e-3).all()
        (grad,) = torch.autograd.grad(d.sum(), s)
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_minus_inf_logit_masked_in_both_is_finite(name, kw):
    s = torch.tensor([[1.0, float("-inf"), 0.5, -0.5]], requires_grad=True)
    t = torch.tensor([[0.0, float("-inf"), 2.0, 1.0]])
    d = token_divergence(name, s, t, 1.0, **kw)
    (grad,) = torch.autograd.grad(d.sum(), s)
    assert torch.isfinite(d).all() and torch.isfinite(grad).all()
    # same as the 3-token distributions without the masked token
    keep = [0, 2, 3]
    assert torch.allclose(d, token_divergence(name, s.detach()[:, keep], t[:, keep], 1.0, **kw), atol=1e-6)


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError) as err:
        token_divergence("kl", torch.zeros(1, 2), torch.zeros(1, 2))
    msg = str(err.value)
    assert "'kl'" in msg
    for name in ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tv"):
        assert name in msg


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature"):
        forward_kl(torch.zeros(1, 2), torch.zeros(1, 2), 0.0)


# --------------------------------------------------------------------------------------------------------------------
# Masks and the shift


def test_masked_mean_ignores_masked_positions():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]])
    assert masked_mean(values, mask).item() == pytest.approx((1 + 3 + 6) / 3)
    assert masked_mean(values).item() == pytest.approx(3.5)
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0
    poisoned = values.clone()
    poisoned[mask == 0] = float("nan")
    assert masked_mean(poisoned, mask).item() == pytest.approx((1 + 3 + 6) / 3)
    with pytest.raises(ValueError, match="shape"):
        masked_mean(values, mask[:, :2])


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_changing_masked_positions_changes_nothing(name, kw):
    g = torch.Generator().manual_seed(9)
    s, t = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    mask = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 0]], dtype=torch.bool)
    before = masked_mean(token_divergence(name, s, t, 2.0, **kw), mask)
    s2, t2 = s.clone(), t.clone()
    s2[~mask] = torch.randn(int((~mask).sum()), 6, generator=g) * 100
    t2[~mask] = torch.randn(int((~mask).sum()), 6, generator=g) * 100
    s2.requires_grad_()
    after = masked_mean(token_divergence(name, s2, t2, 2.0, **kw), mask)
    assert torch.equal(before, after)
    (grad,) = torch.autograd.grad(after, s2)
    assert torch.isfinite(grad).all() and (grad[~mask] == 0).all()
    # even non-finite garbage there (nan divergences) does not leak into the value
    t2[~mask] = float("inf")
    assert torch.equal(before, masked_mean(token_divergence(name, s2.detach(), t2, 2.0, **kw), mask))


def test_completion_mask_and_shift_follow_hf_convention():
    labels = torch.tensor([[-100, -100, 7, 8, 9, -100], [-100, 4, 5, -100, -100, -100]])
    mask = completion_mask(labels)
    # position i predicts token i + 1: prompt positions whose next token is a completion token count
    assert mask.tolist() == [[False, True, True, True, False, False], [True, True, False, False, False, False]]
    logits = torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(10))
    sl, sy = shift_for_next_token(logits, labels)
    assert sl.shape == (2, 5, 10) and torch.equal(sy, labels[:, 1:])
    assert torch.equal(mask[:, :-1], sy != -100)
    # the masked mean of per-token cross-entropy is HF's causal-LM loss
    ce = F.cross_entropy(sl.flatten(0, 1), sy.flatten(), reduction="none", ignore_index=-100).view(2, 5)
    hf = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert torch.allclose(masked_mean(ce, mask[:, :-1]), hf)
    with pytest.raises(ValueError):
        shift_for_next_token(logits, labels[:, :-1])


# --------------------------------------------------------------------------------------------------------------------
# Top-k teacher targets


def test_topk_teacher_returns_full_softmax_logprobs():
    t = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    idx, lp = topk_teacher(t, 2, 2.0)
    full = _softmax([2.0, 0.0, 1.0, -1.0], 2.0)
    assert idx.tolist() == [[0, 2]]
    assert torch.allclose(lp.exp(), torch.tensor([[full[0], full[2]]]), atol=1e-6)
    with pytest.raises(ValueError):
        topk_teacher(t, 5)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_kl_is_exact_at_k_equals_v(temperature):
    g = torch.Generator().manual_seed(11)
    s = torch.randn(2, 3, 9, generator=g, requires_grad=True)
    t = torch.randn(2, 3, 9, generator=g)
    idx, lp = topk_teacher(t, 9, temperature)
    got = forward_kl_topk(s, idx, lp, temperature)
    exact = forward_kl(s, t, temperature)
    assert torch.allclose(got, exact, atol=1e-6)
    g1 = torch.autograd.grad(got.sum(), s)[0]
    g2 = torch.autograd.grad(exact.sum(), s)[0]
    assert torch.isfinite(g1).all() and torch.allclose(g1, g2, atol=1e-6)


def test_topk_kl_closed_form_with_rest_bucket():
    s, t = [1.0, 0.5, -0.3, 2.0], [3.0, -1.0, 0.2, 0.5]
    p, q = _softmax(t, 1.0), _softmax(s, 1.0)
    top = [0, 3]  # teacher's two largest
    p_rest, q_rest = p[1] + p[2], q[1] + q[2]
    expected = sum(p[i] * math.log(p[i] / q[i]) for i in top) + p_rest * math.log(p_rest / q_rest)
    idx, lp = topk_teacher(torch.tensor([t]), 2)
    assert idx.tolist() == [top]
    assert forward_kl_topk(torch.tensor([s]), idx, lp).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("k", [1, 3, 10, 31])
def test_topk_kl_is_a_nonnegative_lower_bound(k):
    g = torch.Generator().manual_seed(12 + k)
    for scale in (0.5, 3.0):
        s = torch.randn(4, 6, 32, generator=g) * scale
        t = torch.randn(4, 6, 32, generator=g) * scale
        for temperature in (1.0, 2.0):
            idx, lp = topk_teacher(t, k, temperature)
            got = forward_kl_topk(s, idx, lp, temperature)
            exact = forward_kl(s, t, temperature)
            assert (got >= -1e-6).all() and (got <= exact + 1e-5).all()
    # a cache in int32 / fp16 works and stays close
    idx, lp = topk_teacher(t, k, 1.0)
    cached = forward_kl_topk(s, idx.int(), lp.half(), 1.0)
    assert torch.isfinite(cached).all() and torch.allclose(cached, forward_kl_topk(s, idx, lp), atol=5e-3)


def test_topk_kl_zero_when_student_matches_and_finite_for_large_logits():
    t = torch.randn(3, 20, generator=torch.Generator().manual_seed(13)) * 1e4
    idx, lp = topk_teacher(t, 5)
    assert torch.allclose(forward_kl_topk(t, idx, lp), torch.zeros(3), atol=1e-3)
    s = (torch.randn(3, 20, generator=torch.Generator().manual_seed(14)) * 1e4).requires_grad_()
    d = forward_kl_topk(s, idx, lp)
    (grad,) = torch.autograd.grad(d.sum(), s)
    assert torch.isfinite(d).all() and torch.isfinite(grad).all()
    assert forward_kl_topk(s.bfloat16(), idx, lp).dtype == torch.float32


def test_bytes_per_token():
    assert bytes_per_token(20) == 20 * (4 + 2)
    assert bytes_per_token(8, torch.int64, torch.float32) == 96
    assert bytes_per_token(64, torch.uint16, torch.bfloat16, vocab_size=49_152) == 256
    with pytest.raises(ValueError, match="cannot hold"):
        bytes_per_token(64, torch.int16, vocab_size=49_152)
    with pytest.raises(ValueError):
        bytes_per_token(8, torch.float32, torch.float32)
    with pytest.raises(ValueError):
        bytes_per_token(0)


# --------------------------------------------------------------------------------------------------------------------
# Chunked computation


def _setup(dtype=torch.float64, seed=15):
    g = torch.Generator().manual_seed(seed)
    b, seq, h, ht, v = 2, 5, 6, 4, 11
    hs = torch.randn(b, seq, h, generator=g, dtype=dtype).requires_grad_()
    ws = (torch.randn(v, h, generator=g, dtype=dtype) * 0.7).requires_grad_()
    bs = (torch.randn(v, generator=g, dtype=dtype) * 0.1).requires_grad_()
    th = torch.randn(b, seq, ht, generator=g, dtype=dtype)
    tw = torch.randn(v, ht, generator=g, dtype=dtype)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 1, 1]], dtype=torch.bool)
    return hs, ws, bs, th, tw, mask


def _grads(loss, *xs):
    return torch.autograd.grad(loss, xs)


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 100])
@pytest.mark.parametrize(("name", "kw"), CASES)
def test_chunked_equals_unchunked_values_and_gradients(name, kw, chunk_size):
    hs, ws, bs, th, tw, mask = _setup()
    ref = masked_mean(token_divergence(name, F.linear(hs, ws, bs), F.linear(th, tw), 2.0, **kw), mask)
    ref_grads = _grads(ref, hs, ws, bs)
    for teacher in ({"teacher_hidden": th, "teacher_weight": tw}, {"teacher_logits": F.linear(th, tw)}):
        got = chunked_token_loss(
            hs, ws, mask, **teacher, divergence=name, temperature=2.0, chunk_size=chunk_size, student_bias=bs, **kw
        )
        assert torch.allclose(got, ref, atol=1e-6, rtol=0)
        for a, b in zip(_grads(got, hs, ws, bs), ref_grads):
            assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_chunked_float32_matches_to_1e_6():
    hs, ws, bs, th, tw, mask = _setup(torch.float32)
    ref = masked_mean(forward_kl(F.linear(hs, ws, bs), F.linear(th, tw), 1.0), mask)
    got = chunked_token_loss(hs, ws, mask, teacher_hidden=th, teacher_weight=tw, chunk_size=3, student_bias=bs)
    assert got.dtype == torch.float32 and torch.allclose(got, ref, atol=1e-6, rtol=0)
    for a, b in zip(_grads(got, hs, ws, bs), _grads(ref, hs, ws, bs)):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_chunked_topk_equals_unchunked(chunk_size):
    hs, ws, bs, th, tw, mask = _setup()
    idx, lp = topk_teacher(F.linear(th, tw), 4, 2.0)
    ref = masked_mean(forward_kl_topk(F.linear(hs, ws), idx, lp, 2.0), mask)
    got = chunked_token_loss(hs, ws, mask, teacher_topk=(idx, lp), temperature=2.0, chunk_size=chunk_size)
    assert torch.allclose(got, ref, atol=1e-6, rtol=0)
    for a, b in zip(_grads(got, hs, ws), _grads(ref, hs, ws)):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_chunked_sum_reduction_no_mask_and_empty_mask():
    hs, ws, _, th, tw, mask = _setup()
    per_token = forward_kl(F.linear(hs, ws), F.linear(th, tw))
    kw = {"teacher_hidden": th, "teacher_weight": tw, "chunk_size": 3}
    assert torch.allclose(chunked_token_loss(hs, ws, **kw), per_token.mean())
    assert torch.allclose(chunked_token_loss(hs, ws, mask, reduction="sum", **kw), per_token[mask].sum())
    zero = chunked_token_loss(hs, ws, torch.zeros_like(mask), **kw)
    assert zero.item() == 0.0
    zero.backward()  # still differentiable
    assert (ws.grad == 0).all()


def test_chunked_never_saves_full_logits():
    """Outside the checkpointed chunks autograd keeps no [positions, V] tensor: the logits live one chunk at a time."""
    g = torch.Generator().manual_seed(16)
    b, seq, h, v = 2, 16, 4, 64
    hs = torch.randn(b, seq, h, generator=g, requires_grad=True)
    ws = torch.randn(v, h, generator=g, requires_grad=True)
    th, tw = torch.randn(b, seq, h, generator=g), torch.randn(v, h, generator=g)
    saved: list[int] = []

    def pack(x: torch.Tensor) -> torch.Tensor:
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = chunked_token_loss(hs, ws, teacher_hidden=th, teacher_weight=tw, divergence="jsd", chunk_size=4)
    assert max(saved, default=0) < b * seq * v / 4
    loss.backward()
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        token_divergence("jsd", F.linear(hs, ws), F.linear(th, tw)).mean()
    assert max(saved) >= b * seq * v  # the unchunked computation does keep them


def test_chunked_argument_errors():
    hs, ws, _, th, tw, mask = _setup()
    with pytest.raises(ValueError, match="exactly one teacher"):
        chunked_token_loss(hs, ws, mask)
    with pytest.raises(ValueError, match="exactly one teacher"):
        chunked_token_loss(hs, ws, mask, teacher_hidden=th)
    with pytest.raises(ValueError, match="exactly one teacher"):
        chunked_token_loss(hs, ws, mask, teacher_hidden=th, teacher_weight=tw, teacher_logits=F.linear(th, tw))
    idx, lp = topk_teacher(F.linear(th, tw), 3)
    with pytest.raises(ValueError, match="forward_kl"):
        chunked_token_loss(hs, ws, mask, teacher_topk=(idx, lp), divergence="jsd")
    with pytest.raises(ValueError, match="unknown token divergence"):
        chunked_token_loss(hs, ws, mask, teacher_hidden=th, teacher_weight=tw, divergence="kl")
    with pytest.raises(ValueError, match="mask shape"):
        chunked_token_loss(hs, ws, mask[:, :3], teacher_hidden=th, teacher_weight=tw)
