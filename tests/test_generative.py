"""Generative distillation on tiny random Llama models (a WordLevel tokenizer over SST-2 sentences): data reading
and masking, the layer-keeping student, the objective against a hand composition of lm_losses terms, chunking,
vocabulary checks, on-policy samples, the evaluation functions, and whole runs through ``textdistill.distill``."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import require_sst2

import textdistill
from textdistill import generative as gen
from textdistill import lm_models
from textdistill.config import GenerativeDistillConfig, GenerativeStudentConfig, load_config
from textdistill.data import Collator
from textdistill.errors import TextDistillError
from textdistill.lm_losses import IGNORE_INDEX, completion_mask, masked_mean, token_divergence

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def sst2_sentences(n: int, start: int = 0) -> list[str]:
    lines = (require_sst2() / "train.tsv").read_text(encoding="utf-8").splitlines()[1 + start : 1 + start + n]
    return [line.split("\t")[0].strip() for line in lines if line.split("\t")[0].strip()]


def make_tokenizer(texts: list[str], words: int):
    """A WordLevel tokenizer (lower-cased words; <s> before every text) over the ``words`` most frequent words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    counts = Counter(w for t in texts for w in t.lower().split())
    vocab = SPECIALS + [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:words]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.normalizer, tok.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def make_llama(
    folder: Path, texts: list[str], words: int = 400, layers: int = 4, seed: int = 0, train_steps: int = 0
) -> str:
    """A tiny Llama (hidden 32, 2 heads, 1 KV head, tied embeddings) and its tokenizer, saved to ``folder``;
    trained ``train_steps`` steps on ``texts`` (a teacher that knows something), else random."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer(texts, words)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    if train_steps:
        data = gen.tokenize_lm(tokenizer, gen.LMData([""] * len(texts), texts, list(range(len(texts))), "<texts>"), 64)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for step in range(train_steps):
            picked = [(step * 16 + i) % len(data) for i in range(16)]
            gen.lm_objective(model, Collator(0)([data[i] for i in picked]))["loss"].backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def prompt_rows(sentences: list[str], k: int = 3) -> list[dict]:
    """Each sentence as a prompt (its first ``k`` words) and a completion (the rest)."""
    return [
        {"prompt": " ".join(s.split()[:k]), "completion": " " + " ".join(s.split()[k:])}
        for s in sentences
        if len(s.split()) > k + 1
    ]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny teacher, a student checkpoint with another vocabulary, and train / validation JSONL files."""
    root = tmp_path_factory.mktemp("generative")
    train, dev = sst2_sentences(200), sst2_sentences(60, start=3000)
    return {
        "teacher": make_llama(root / "teacher", train + dev, train_steps=120),
        "other": make_llama(root / "other", train + dev, words=250, layers=2, seed=1),
        "train": write_jsonl(root / "train.jsonl", prompt_rows(train)),
        "dev": write_jsonl(root / "dev.jsonl", prompt_rows(dev)),
        "root": str(root),
    }


@pytest.fixture(scope="module")
def teacher(files):
    model, tokenizer = lm_models.load_causal_lm(files["teacher"], "teacher.model")
    return model.eval().requires_grad_(False), tokenizer


def lm_data(rows: list[dict], source: str = "<rows>") -> gen.LMData:
    return gen.LMData(
        [r.get("prompt", "") for r in rows],
        [r.get("completion", r.get("text")) for r in rows],
        list(range(1, len(rows) + 1)),
        source,
    )


def batch_of(tokenizer, rows: list[dict], max_length: int = 64) -> dict:
    ds = gen.tokenize_lm(tokenizer, lm_data(rows), max_length)
    return Collator(lm_models.pad_id_of(tokenizer))([ds[i] for i in range(len(ds))])


ROWS = [
    {"prompt": "a funny", "completion": " film with a good story"},
    {"text": "the movie is bad"},
    {"prompt": "it is", "completion": " a good movie"},
]


# --------------------------------------------------------------------------------------------------------------------
# Data


def test_rows_are_tokenized_with_the_prompt_and_padding_masked(teacher) -> None:
    _, tok = teacher
    batch = batch_of(tok, ROWS)
    ids, labels, mask = batch["student"]["input_ids"], batch["labels"], batch["student"]["attention_mask"]
    vocab = tok.get_vocab()
    # prompt row: <s> a funny | film with a good story </s>; the prompt (with its <s>) carries no label
    expected = [
        2,
        vocab["a"],
        vocab["funny"],
        vocab["film"],
        vocab["with"],
        vocab["a"],
        vocab["good"],
        vocab["story"],
        3,
    ]
    assert ids[0].tolist() == expected
    assert labels[0].tolist() == [IGNORE_INDEX] * 3 + expected[3:]
    # text row: everything is completion (its <s> is never predicted), padding masked
    n = int(mask[1].sum())
    assert ids[1, :n].tolist() == [2, vocab["the"], vocab["movie"], vocab["is"], vocab["bad"], 3]
    assert labels[1, :n].tolist() == [IGNORE_INDEX] + ids[1, 1:n].tolist()
    assert (labels[1, n:] == IGNORE_INDEX).all() and (mask[1, n:] == 0).all()
    # the loss positions: those whose next token is a completion token
    assert completion_mask(labels)[0].tolist()[:8] == [False, False, True, True, True, True, True, True]


def test_long_rows_are_cut_with_one_warning_that_counts_them(teacher) -> None:
    _, tok = teacher
    rows = [{"prompt": "a b c d e f", "completion": " good"}, {"text": "one two three four five six"}, {"text": "fine"}]
    data = lm_data(rows, "f.jsonl")
    with pytest.warns(
        UserWarning,
        match=r"f.jsonl: 2 of 3 rows are longer than data.max_length \(5 tokens\) and "
        r"were truncated; "
        r"1 lost their whole completion and were dropped",
    ):
        ds = gen.tokenize_lm(tok, data, 5)
    assert len(ds) == 2 and all(len(f["input_ids"]) <= 5 for f in ds.student)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "ok"}\n{"text": "fine"\n', r"f.jsonl:2: not valid JSON"),
        (b'{"text": "ok"}\n\n["a list"]\n', r"f.jsonl:3: expected a JSON object, got list"),
        (b'{"prompt": "a"}\n', r"f.jsonl:1: missing key 'completion'"),
        (
            b'{"text": "a", "prompt": "b", "completion": "c"}\n',
            r"f.jsonl:1: a row has either 'text' or 'prompt' \+ "
            r"'completion', not both",
        ),
        (
            b'{"words": "a"}\n',
            r"f.jsonl:1: expected \{'prompt': ..., 'completion': ...\} or \{'text': ...\}; keys "
            r"are \['words'\]",
        ),
        (b'{"prompt": "a", "completion": 3}\n', r"f.jsonl:1: 'completion' must be a string, got int"),
        (b'{"text": "  "}\n', r"f.jsonl:1: empty 'text'"),
        (b'{"text": "ok"}\n{"text": "ok"}\n{"text": "\xff"}\n', r"f.jsonl:3: text is not valid UTF-8 \(byte 0xff\)"),
        (b"\n\n", r"f.jsonl: no examples \(empty file\)"),
    ],
)
def test_bad_rows_are_errors_naming_file_and_line(write, content: bytes, message: str) -> None:
    with pytest.raises(TextDistillError, match=message):
        gen.read_lm_jsonl(write("f.jsonl", content))


def test_reading_keeps_lines_and_limits(write) -> None:
    data = gen.read_lm_jsonl(
        write("f.jsonl", '\ufeff{"text": "a b"}\n\n{"prompt": "p", "completion": " c"}\n{"text": "z"}\n'), limit=2
    )
    assert (data.prompts, data.completions, data.rows) == (["", "p"], ["a b", " c"], [1, 3])
    assert data.text_rows() == [1]


# --------------------------------------------------------------------------------------------------------------------
# Students and vocabularies


def test_student_keeps_the_teachers_layers_and_generates(teacher) -> None:
    model, tok = teacher
    student = lm_models.causal_student_from_teacher(model, [0, 3])
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
    for kept, source in zip(student.model.layers, [0, 3]):
        for (name, p), q in zip(kept.named_parameters(), model.model.layers[source].parameters()):
            assert torch.equal(p, q), name
    assert student.lm_head.weight is student.model.embed_tokens.weight  # still tied
    assert all(p.requires_grad for p in student.parameters()) and not any(p.requires_grad for p in model.parameters())
    # the KV cache indexes the kept layers 0..1: cached generation equals generation without a cache
    prompt = gen.left_pad([[2, 5, 6], [2, 7]], 0)
    student.eval()
    cached = student.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    uncached = student.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=0, use_cache=False)
    assert torch.equal(cached, uncached) and cached.shape[1] == 3 + 6


def test_num_layers_spreads_and_layer_types_follow(teacher) -> None:
    model, tok = teacher
    student, stok, recipe = lm_models.build_causal_student(GenerativeStudentConfig(num_layers=3), model, tok)
    assert recipe == {"recipe": "teacher layers", "layers": [0, 2, 3]} and stok is tok
    typed = copy.deepcopy(model)
    typed.config.layer_types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    assert lm_models.causal_student_from_teacher(typed, [1, 2]).config.layer_types == [
        "sliding_attention",
        "full_attention",
    ]


def test_a_smaller_config_of_the_teachers_architecture(teacher) -> None:
    model, tok = teacher
    changes = {"num_hidden_layers": 2, "intermediate_size": 32}
    student, stok, recipe = lm_models.build_causal_student(
        GenerativeStudentConfig(config_overrides=changes), model, tok
    )
    assert recipe == {"recipe": "random init", "config_overrides": changes} and stok is tok
    assert student.config.num_hidden_layers == 2 and student.training and type(student) is type(model)
    assert lm_models.vocabulary_mismatch(model, tok, student, tok) is None  # token-level losses apply
    # the width is the teacher's: its word embeddings (and the tied head) are copied; the layers are random
    torch.testing.assert_close(student.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert student.get_output_embeddings().weight.data_ptr() == student.get_input_embeddings().weight.data_ptr()
    assert not torch.equal(
        student.model.layers[0].self_attn.q_proj.weight, model.model.layers[0].self_attn.q_proj.weight
    )
    # another width: head_dim follows it, layer_types follow the depth; embeddings start random
    from textdistill.models import changed_config

    typed = copy.deepcopy(model.config)
    typed.layer_types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    assert changed_config(typed, {"num_hidden_layers": 2}).layer_types == ["full_attention", "sliding_attention"]
    assert model.config.head_dim == 16
    narrow = lm_models.causal_student_from_config(model, {"hidden_size": 16, "num_hidden_layers": 2})
    assert narrow.config.head_dim == 8 and narrow.get_input_embeddings().weight.shape == (len(tok), 16)
    x = batch_of(tok, ROWS)["student"]
    assert narrow(**x).logits.shape[-1] == len(tok)
    with pytest.raises(TextDistillError, match=r"student.config_overrides.hidden_sise: not a field of LlamaConfig"):
        lm_models.causal_student_from_config(model, {"hidden_sise": 16})
    with pytest.raises(TextDistillError, match=r"student.config_overrides.vocab_size: the vocabulary is the teacher's"):
        lm_models.causal_student_from_config(model, {"vocab_size": 100})
    with pytest.raises(ValueError, match="give exactly one of layers, num_layers, config_overrides, model"):
        GenerativeStudentConfig(config_overrides=changes, num_layers=2)


def test_another_vocabulary_refuses_token_level_losses_but_not_sequence_kd(files, teacher) -> None:
    model, tok = teacher
    other, otok = lm_models.load_causal_lm(files["other"], "student.model")
    why = lm_models.vocabulary_mismatch(model, tok, other, otok)
    assert why is not None and f"teacher: {len(tok):,} tokens, student: {len(otok):,} tokens" in why
    assert lm_models.vocabulary_mismatch(model, tok, lm_models.causal_student_from_teacher(model, [1]), tok) is None
    with pytest.raises(
        TextDistillError,
        match=r"token-level distillation needs the student to share the teacher's "
        r"vocabulary "
        r"\(teacher: .*\); use generative.sequence_kd: true",
    ):
        gen.check_token_level(GenerativeDistillConfig(), why)
    with pytest.raises(
        TextDistillError,
        match=r"generative.on_policy: .* needs the student to share the teacher's "
        r"vocabulary",
    ):
        gen.check_token_level(GenerativeDistillConfig(sequence_kd=True, on_policy=0.5), why)
    assert gen.check_token_level(GenerativeDistillConfig(sequence_kd=True), why) is False
    with pytest.raises(
        TextDistillError,
        match=r"generative.teacher_cache: the cached top-k targets are the "
        r"teacher's token ids",
    ):
        gen.check_token_level(GenerativeDistillConfig(sequence_kd=True, teacher_cache={"top_k": 8}), why)


def test_a_head_that_is_not_hidden_times_weight_is_refused(teacher) -> None:
    model, tok = teacher
    student = lm_models.causal_student_from_teacher(model, [0])
    batch = batch_of(tok, ROWS)["student"]
    lm_models.check_lm_head(student, batch, "student")  # a plain head: fine
    student.lm_head.register_forward_hook(lambda module, args, out: 30.0 * torch.tanh(out / 30.0))  # soft-capping
    with pytest.raises(
        TextDistillError,
        match=r"student: the logits of LlamaForCausalLM are not its last hidden "
        r"state times its LM head",
    ):
        lm_models.check_lm_head(student, batch, "student")


# --------------------------------------------------------------------------------------------------------------------
# The objective


def num(x: torch.Tensor) -> float:
    return float(x.detach())


def full_logits(model, inputs) -> torch.Tensor:
    return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits


def hand_terms(student, teacher_model, batch, cfg: GenerativeDistillConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The divergence and the cross-entropy from full logits and the lm_losses functions, unchunked."""
    s, labels = full_logits(student, batch["student"]), batch["labels"]
    with torch.no_grad():
        t = full_logits(teacher_model, batch["student"])
    kd = masked_mean(
        token_divergence(cfg.divergence, s, t, cfg.temperature, **gen.divergence_kwargs(cfg)), completion_mask(labels)
    )
    ce = F.cross_entropy(s[:, :-1].reshape(-1, s.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    return kd, ce


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tv"])
def test_objective_is_alpha_mix_of_lm_losses_terms(teacher, divergence: str) -> None:
    model, tok = teacher
    cfg = GenerativeDistillConfig(
        divergence=divergence, temperature=2.0, alpha=0.3, beta=0.3, skew_alpha=0.2, chunk_size=4
    )
    student = lm_models.causal_student_from_teacher(model, [0, 2])
    batch = batch_of(tok, ROWS)
    terms = gen.GenerativeObjective(cfg, model, 0, 3)(student, batch)
    kd, ce = hand_terms(student, model, batch, cfg)
    kd, ce = float(kd.detach()), float(ce.detach())
    assert float(terms["kd"].detach()) == pytest.approx(kd, rel=1e-5, abs=1e-7)
    assert float(terms["lm"].detach()) == pytest.approx(ce, rel=1e-5)
    assert float(terms["loss"].detach()) == pytest.approx(0.3 * kd + 0.7 * ce, rel=1e-5)
    assert float(terms["on_policy"]) == 0.0
    # the gradients too
    grad = torch.autograd.grad(terms["loss"], student.model.layers[0].mlp.up_proj.weight)[0]
    kd, ce = hand_terms(student, model, batch, cfg)
    expected = torch.autograd.grad(0.3 * kd + 0.7 * ce, student.model.layers[0].mlp.up_proj.weight)[0]
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_term_of_weight_zero_is_logged_but_not_trained(teacher, alpha: float) -> None:
    model, tok = teacher
    cfg = GenerativeDistillConfig(alpha=alpha)
    student = lm_models.causal_student_from_teacher(model, [2])
    batch = batch_of(tok, ROWS)
    terms = gen.GenerativeObjective(cfg, model, 0, 3)(student, batch)
    kd, ce = hand_terms(student, model, batch, cfg)
    assert (num(terms["kd"]), num(terms["lm"])) == (pytest.approx(num(kd), rel=1e-5), pytest.approx(num(ce), rel=1e-5))
    weight = student.model.layers[0].self_attn.q_proj.weight
    expected = torch.autograd.grad(kd if alpha else ce, weight)[0]
    torch.testing.assert_close(torch.autograd.grad(terms["loss"], weight)[0], expected, rtol=1e-4, atol=1e-8)


def test_chunked_equals_unchunked_with_the_same_gradients(teacher) -> None:
    model, tok = teacher
    student = lm_models.causal_student_from_teacher(model, [1, 3])
    batch = batch_of(tok, ROWS)
    values, grads = [], []
    for chunk in (3, 10_000):
        cfg = GenerativeDistillConfig(divergence="reverse_kl", alpha=0.6, chunk_size=chunk)
        loss = gen.GenerativeObjective(cfg, model, 0, 3)(student, batch)["loss"]
        values.append(num(loss))
        grads.append(torch.autograd.grad(loss, student.model.embed_tokens.weight)[0])
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-8)


def test_lm_loss_is_the_cross_entropy_of_the_completion(teacher) -> None:
    model, tok = teacher
    batch = batch_of(tok, ROWS)
    hidden = lm_models.final_hidden(model, batch["student"])
    logits = full_logits(model, batch["student"])
    ce = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    assert num(
        gen.lm_loss(hidden, *lm_models.output_head(model), batch["labels"], 5, reduction="sum")
    ) == pytest.approx(float(ce), rel=1e-5)


def test_on_policy_batches_score_the_students_own_samples(teacher, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tok = teacher
    student = lm_models.causal_student_from_teacher(model, [0, 1])
    batch = batch_of(tok, ROWS)
    calls = []
    real = gen.generate_completions

    def spy(net, prompts, max_new_tokens, pad_id, eos_id, sample, limits=None):
        out = real(net, prompts, max_new_tokens, pad_id, eos_id, sample, limits)
        calls.append(
            {
                "model": net,
                "prompts": prompts,
                "max_new_tokens": max_new_tokens,
                "sample": sample,
                "limits": limits,
                "out": out,
            }
        )
        return out

    monkeypatch.setattr(gen, "generate_completions", spy)
    cfg = GenerativeDistillConfig(on_policy=1.0, alpha=0.5, divergence="forward_kl")
    torch.manual_seed(3)
    terms = gen.GenerativeObjective(cfg, model, 0, 3)(student, batch)
    assert len(calls) == 1 and calls[0]["model"] is student and calls[0]["sample"]
    lengths = [
        n
        for _, n in gen.prompts_and_lengths(
            batch["student"]["input_ids"], batch["student"]["attention_mask"], batch["labels"]
        )
    ]
    assert calls[0]["limits"] == lengths and calls[0]["max_new_tokens"] == max(lengths)
    assert [len(p) for p in calls[0]["prompts"]] == [3, 1, 3]  # <s> a funny | <s> (a text row) | <s> it is
    assert all(1 <= len(c) <= n for c, n in zip(calls[0]["out"], lengths))
    assert float(terms["on_policy"]) == 1.0
    # kd: the teacher's score of those samples; lm: the batch's own completions
    inputs, labels = gen.joined_batch(calls[0]["prompts"], calls[0]["out"], 0)
    kd, _ = hand_terms(student, model, {"student": inputs, "labels": labels}, cfg)
    _, ce = hand_terms(student, model, batch, cfg)
    assert num(terms["kd"]) == pytest.approx(num(kd), rel=1e-5)
    assert num(terms["lm"]) == pytest.approx(num(ce), rel=1e-5)
    # the same seed draws the same samples; lambda = 0 never samples
    torch.manual_seed(3)
    gen.GenerativeObjective(cfg, model, 0, 3)(student, batch)
    assert calls[1]["out"] == calls[0]["out"]
    gen.GenerativeObjective(GenerativeDistillConfig(on_policy=0.0), model, 0, 3)(student, batch)
    assert len(calls) == 2


def test_teacher_completions_are_greedy_or_seeded(teacher) -> None:
    model, tok = teacher
    ds = gen.tokenize_lm(tok, gen.LMData(["a funny", "it is"], [" film", " good"], [1, 2], "<rows>"), 32)
    collator = Collator(0)
    greedy = GenerativeDistillConfig(max_new_tokens=5)
    prompts, completions = gen.teacher_completions(model, ds, collator, 1, greedy, 0, 3, seed=0)
    assert prompts == [ds.student[0]["input_ids"][:3], ds.student[1]["input_ids"][:3]]
    assert (
        completions == gen.teacher_completions(model, ds, collator, 2, greedy, 0, 3, seed=1)[1]
    )  # batching, seed: no matter
    sampled = GenerativeDistillConfig(max_new_tokens=5, sampling="sample")
    draws = [gen.teacher_completions(model, ds, collator, 2, sampled, 0, 3, seed=4) for _ in range(2)]
    assert draws[0] == draws[1]
    assert all(1 <= len(c) <= 5 for c in completions)
    train = gen.dataset_from_ids(prompts, completions, 32)
    assert train.labels[0] == [IGNORE_INDEX] * 3 + completions[0]


# --------------------------------------------------------------------------------------------------------------------
# Evaluation


def test_perplexity_is_exp_of_the_mean_completion_nll(teacher) -> None:
    model, tok = teacher
    rows = ROWS * 2
    batch = batch_of(tok, rows)
    ds = gen.tokenize_lm(tok, lm_data(rows), 64)
    with torch.no_grad():
        logits = full_logits(model, batch["student"])
    ce = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    for batch_size in (1, 4):  # token-weighted across batches of different sizes
        assert gen.perplexity(model, ds, Collator(0), batch_size, chunk_size=3) == pytest.approx(
            math.exp(float(ce)), rel=1e-5
        )


def test_agreement_with_the_teacher(teacher) -> None:
    model, tok = teacher
    ds = gen.tokenize_lm(tok, gen.LMData(["", "it is"], ["the movie is bad", " a good movie"], [1, 2], "<rows>"), 64)
    assert gen.next_token_agreement(model, model, ds, Collator(0), 1) == 1.0
    assert (
        gen.next_token_agreement(lm_models.causal_student_from_teacher(model, [0, 1, 2, 3]), model, ds, Collator(0), 2)
        == 1.0
    )
    assert gen.divergence_to_teacher(model, model, ds, Collator(0), 2, GenerativeDistillConfig()) == pytest.approx(
        0.0, abs=1e-6
    )
    partial = gen.next_token_agreement(lm_models.causal_student_from_teacher(model, [3]), model, ds, Collator(0), 2)
    assert 0.0 <= partial < 1.0


def test_generation_speed_counts_the_new_tokens(teacher) -> None:
    model, _ = teacher
    out = gen.generation_speed(model, [[2, 5], [2, 6, 7]], new_tokens=4, repeats=2, pad_id=0)
    assert out["tokens_per_second"] > 0 and (out["speed_prompts"], out["speed_new_tokens"]) == (2, 4)


# --------------------------------------------------------------------------------------------------------------------
# Whole runs


def run_config(files: dict, out: Path, **generative) -> dict:
    fast = {
        "learning_rate": 3e-3,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 32,
        "max_steps": 12,
        "eval_steps": 6,
        "logging_steps": 2,
        "warmup_ratio": 0.0,
        "report_to": [],
    }
    return {
        "output_dir": str(out),
        "seed": 3,
        "data": {
            "train_file": files["train"],
            "validation_file": files["dev"],
            "max_length": 64,
            "max_train_samples": 96,
        },
        "teacher": {"model": files["teacher"]},
        "student": {"layers": [0, 3], "training": fast},
        "generative": {"divergence": "forward_kl", "alpha": 0.7, "temperature": 1.0, "chunk_size": 64, **generative},
        "eval": {"speed_prompts": 2, "speed_new_tokens": 4, "speed_repeats": 1},
    }


def test_distill_writes_the_run_and_brings_the_student_closer_to_the_teacher(files, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    report = textdistill.distill(run_config(files, out))
    assert Path(report["output_dir"]) == out and not (tmp_path / "run.partial").exists()
    for name in (
        "config.yaml",
        "metrics.json",
        "report.md",
        "report.html",
        "logs/student.jsonl",
        "logs/baseline.jsonl",
        "student/config.json",
        "baseline/config.json",
    ):
        assert (out / name).is_file(), name
    assert AutoModelForCausalLM.from_pretrained(out / "student").config.num_hidden_layers == 2
    steps = [json.loads(line) for line in (out / "logs/student.jsonl").read_text().splitlines()]
    train_steps = [s for s in steps if "loss" in s]
    assert train_steps and all({"loss", "kd", "lm", "on_policy", "lr"} <= s.keys() for s in train_steps)
    for s in train_steps:
        assert s["loss"] == pytest.approx(0.7 * s["kd"] + 0.3 * s["lm"], rel=1e-4)
    assert any("eval_perplexity" in s for s in steps)
    assert all("kd" not in s for s in map(json.loads, (out / "logs/baseline.jsonl").read_text().splitlines()))
    m = json.loads((out / "metrics.json").read_text())
    assert m["kind"] == "generative" and m["generative"]["token_level"] is True
    t, s, b = m["teacher"], m["student"], m["baseline"]
    assert s["divergence_to_teacher"] < 0.5 * s["divergence_to_teacher_initial"]  # (0.21 -> 0.03 when written)
    assert s["params"] < t["params"] and s["layers"] == [0, 3]
    assert 0 <= s["agreement"] <= 1 and 0 <= b["agreement"] <= 1 and "agreement" not in t
    assert all(x["perplexity"] > 1 and x["tokens_per_second"] > 0 for x in (t, s, b))
    assert s["speedup"] == pytest.approx(s["tokens_per_second"] / t["tokens_per_second"])
    table = (out / "report.md").read_text()
    for text in (
        "| model",
        "perplexity",
        "next-token agreement (%)",
        "tokens/s",
        "student (distilled)",
        "student (no distillation)",
        "Student vs its twin",
    ):
        assert text in table, text


def test_sequence_kd_and_on_policy_batches_in_one_run(files, tmp_path) -> None:
    cfg = run_config(
        files, tmp_path / "run", sequence_kd=True, sampling="sample", max_new_tokens=6, on_policy=0.5, divergence="tv"
    )
    cfg["student"] = {"layers": [1], "training": {**cfg["student"]["training"], "max_steps": 6, "eval_steps": None}}
    cfg["baseline"] = False
    m = textdistill.distill(cfg)
    assert m["generative"]["token_level"] and m["generative"]["teacher_generation"]["mean_new_tokens"] <= 6
    # the student learnt the teacher's completions (at most 6 tokens after <s> + prompt), not the file's
    assert m["data"]["train_tokens"] < sum(
        len(r["prompt"].split()) + 8 for r in map(json.loads, Path(files["train"]).read_text().splitlines())
    )
    steps = [
        json.loads(line) for line in (tmp_path / "run/logs/student.jsonl").read_text().splitlines() if '"loss"' in line
    ]
    assert {s["on_policy"] for s in steps} - {0.0, 0.5, 1.0} == set() and 0 < sum(s["on_policy"] for s in steps) < len(
        steps
    )
    for s in steps:
        assert s["loss"] == pytest.approx(0.7 * s["kd"] + 0.3 * s["lm"], rel=1e-4)
    assert "on-policy share lambda=0.5" in (tmp_path / "run/report.md").read_text()


def test_sequence_kd_with_another_vocabulary_through_the_cli(files, tmp_path, capsys) -> None:
    from textdistill.cli import main

    cfg = run_config(files, tmp_path / "run", sequence_kd=True, max_new_tokens=8)
    cfg["student"] = {"model": files["other"], "training": {**cfg["student"]["training"], "max_steps": 2}}
    cfg["baseline"] = False
    config = tmp_path / "gen.yaml"
    import yaml

    config.write_text(
        yaml.safe_dump({**cfg, "generative": {k: v for k, v in cfg["generative"].items() if k != "sequence_kd"}})
    )
    assert main(["distill", "-c", str(config)]) == 2  # token-level losses refused: another vocabulary
    assert (
        "error: token-level distillation needs the student to share the teacher's vocabulary"
    ) in capsys.readouterr().err
    assert main(["distill", "-c", str(config), "generative.sequence_kd=true"]) == 0
    printed = capsys.readouterr().out
    assert "# Generative distillation report" in printed and "sequence-level KD" in printed
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["generative"]["token_level"] is False and m["generative"]["teacher_generation"]["sequences"] > 0
    assert "agreement" not in m["student"] and "baseline" not in m
    assert all("kd" not in s for s in map(json.loads, (tmp_path / "run/logs/student.jsonl").read_text().splitlines()))


def test_config_kind_and_errors(files, tmp_path) -> None:
    import yaml

    from textdistill.config import GenerativeRunConfig
    from textdistill.pipeline import as_config

    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(run_config(files, tmp_path / "run")))
    assert isinstance(load_config(path), GenerativeRunConfig)
    with pytest.raises(TextDistillError, match=r"generative.on_policy: Input should be less than or equal to 1"):
        load_config(path, ["generative.on_policy=1.5"])
    with pytest.raises(TextDistillError, match=r"generative.divergence: Input should be 'forward_kl'"):
        load_config(path, ["generative.divergence=kl"])
    with pytest.raises(
        TextDistillError,
        match=r"student: give exactly one of layers, num_layers, config_overrides, "
        r"model",
    ):
        load_config(path, ["student.num_layers=2"])
    with pytest.raises(TextDistillError, match=r"a generative: config .* runs with `textdistill distill`"):
        as_config(path)
    rows = tmp_path / "text.jsonl"
    write_jsonl(rows, [{"text": "a text row"}])
    with pytest.raises(TextDistillError, match=r"generative.sequence_kd: .*text.jsonl:1 is a text row"):
        textdistill.distill(path, [f"data.train_file={rows}", "generative.sequence_kd=true"])


# --------------------------------------------------------------------------------------------------------------------
# The real SmolLM2


@pytest.mark.slow
@pytest.mark.parametrize("cache", [None, {"top_k": 64}], ids=["online", "top-k-cache"])
def test_smollm2_two_steps_of_a_15_layer_student(tmp_path, cache) -> None:
    from textdistill import catalogue

    entry = catalogue.entry_named("SmolLM2-135M-Instruct")
    if catalogue.missing_distributions(entry):
        pytest.skip(f"SmolLM2 not installed: {entry.pip}")
    sentences = sst2_sentences(12)
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": s} for s in sentences[:8]])
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"text": s} for s in sentences[8:]])
    fast = {
        "learning_rate": 1e-4,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "max_steps": 2,
        "logging_steps": 1,
        "warmup_ratio": 0.0,
        "report_to": [],
    }
    report = textdistill.distill(
        {
            "output_dir": str(tmp_path / "run"),
            "seed": 0,
            "data": {"train_file": train, "validation_file": dev, "max_length": 32},
            "teacher": {"model": "SmolLM2-135M-Instruct"},
            "student": {"num_layers": 15, "training": fast},
            "generative": {"alpha": 0.5, "chunk_size": 256, "teacher_cache": cache},
            "baseline": False,
            "eval": {"speed_prompts": 1, "speed_new_tokens": 4, "speed_repeats": 1},
        }
    )
    steps = [
        json.loads(line) for line in (tmp_path / "run/logs/student.jsonl").read_text().splitlines() if '"loss"' in line
    ]
    assert len(steps) == 2 and all(math.isfinite(s[k]) for s in steps for k in ("loss", "kd", "lm"))
    t, s = report["teacher"], report["student"]
    assert s["params"] < t["params"] and len(s["layers"]) == 15
    assert all(math.isfinite(x["perplexity"]) and x["tokens_per_second"] > 0 for x in (t, s))
    assert 0 <= s["agreement"] <= 1 and math.isfinite(s["divergence_to_teacher"])
    assert "student (distilled)" in (tmp_path / "run/report.md").read_text()
    if cache:  # SmolLM2's 49,152 token ids fit uint16: 64 x (2 + 2) bytes per token
        c = report["generative"]["teacher_cache_result"]
        assert (
            c["status"] == "miss" and c["bytes_per_token"] == 256 and 0 < c["tokens"] < report["data"]["train_tokens"]
        )
        assert c["stored_bytes_per_token"] == pytest.approx(256, rel=0.05)  # + the offsets and the .npy headers


def test_a_randomly_initialised_smaller_student_learns_from_the_teacher(files, tmp_path) -> None:
    cfg = run_config(files, tmp_path / "run")
    cfg["student"] = {
        "config_overrides": {"num_hidden_layers": 2, "intermediate_size": 32},
        "training": cfg["student"]["training"],
    }
    cfg["baseline"] = False
    report = textdistill.distill(cfg)
    s = report["student"]
    assert (
        s["config_overrides"] == {"num_hidden_layers": 2, "intermediate_size": 32}
        and s["params"] < report["teacher"]["params"]
    )
    assert s["divergence_to_teacher"] < 0.7 * s["divergence_to_teacher_initial"]
    assert (
        "the teacher's config with {'num_hidden_layers': 2, 'intermediate_size': 32}, randomly initialised"
        in (Path(report["output_dir"]) / "report.md").read_text()
    )
