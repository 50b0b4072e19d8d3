"""Vocabulary pruning (textdistill.vocab): on the texts the pieces were chosen from, the pruned tokenizer gives the same
pieces and the pruned model the same outputs; for Unigram (XLM-R-like) and WordPiece (BERT-like) tokenizers."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_tiny_bert

from textdistill.errors import TextDistillError
from textdistill.vocab import prune_vocabulary, pruned_from, used_token_ids

TEXTS = ["北京 is where the film opened", "上海 and 北京 liked it", "a quiet good film, in 北京"]
PAIRS = ["the film was good", "北京 北京", "quiet"]
WORDS = [["北京", "film", "good"], ["上海", "it"]]


def _unigram_tokenizer() -> Any:
    """An XLM-R-like tokenizer: Unigram pieces with scores, Metaspace, RobertaProcessing, ``<mask>`` added after the
    model's vocabulary (so that added ids beyond the vocabulary are renumbered too)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = [
        ("<s>", 0.0),
        ("<pad>", 0.0),
        ("</s>", 0.0),
        ("<unk>", 0.0),
        ("▁", -2.0),
        ("▁北京", -1.0),
        ("▁北", -2.0),
        ("北", -3.0),
        ("京", -2.5),
        ("▁上海", -1.0),
        ("上", -3.0),
        ("海", -3.0),
        (",", -2.0),
        ("▁rare", -9.0),
    ]
    words = "is where the film opened and liked it a quiet good in was".split()
    vocab += [("▁" + w, -1.5) for w in words] + [(c, -4.0) for c in sorted(set("".join(words)))]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<s>", "<pad>", "</s>", "<unk>")])
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True)])
    specials = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "sep_token": "</s>",
        "mask_token": "<mask>",
    }
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=["input_ids", "attention_mask"], **specials)


def _wordpiece_tokenizer(tmp_path: Path) -> Any:
    from transformers import AutoTokenizer

    corpus = TEXTS + PAIRS + ["the bad films were loud", "somewhere else entirely"]
    return AutoTokenizer.from_pretrained(make_tiny_bert(tmp_path / "wp", corpus, vocab_size=200))


def _model(kind: str, vocab_size: int, pad_id: int) -> torch.nn.Module:
    """A tiny BERT classifier, BERT MLM (tied output embedding) or XLM-R classifier (position ids count from the pad
    id)."""
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    torch.manual_seed(0)
    shape = {
        "vocab_size": vocab_size,
        "pad_token_id": pad_id,
        "max_position_embeddings": 80,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    if kind == "xlmr":
        return XLMRobertaForSequenceClassification(XLMRobertaConfig(**shape)).eval()
    return (BertForMaskedLM if kind == "mlm" else BertForSequenceClassification)(BertConfig(**shape)).eval()


def _pieces(tok: Any, *args: Any, **kwargs: Any) -> list[list[str]]:
    return [tok.convert_ids_to_tokens(ids) for ids in tok(*args, verbose=False, **kwargs)["input_ids"]]


def _outputs(model: torch.nn.Module, tok: Any, texts: list[str], pairs: list[str] | None = None) -> torch.Tensor:
    batch = tok(texts, pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def _setup(kind: str, tmp_path: Path) -> tuple[Any, torch.nn.Module]:
    tok = _unigram_tokenizer() if kind in ("xlmr", "bert-unigram", "mlm") else _wordpiece_tokenizer(tmp_path)
    return tok, _model(kind, len(tok), tok.pad_token_id)


@pytest.mark.parametrize("kind", ["wordpiece", "bert-unigram", "xlmr", "mlm"])
def test_same_pieces_and_outputs_on_the_chosen_texts(kind: str, tmp_path: Path) -> None:
    tok, model = _setup(kind, tmp_path)
    keep = used_token_ids(tok, TEXTS, PAIRS, WORDS)
    pruned_model, pruned, info = prune_vocabulary(copy.deepcopy(model), tok, keep)
    assert info["vocab_before"] == len(tok) and info["vocab_after"] == len(pruned) < len(tok)
    removed = len(tok) - len(pruned)
    assert info["params_removed"] == removed * 32 + (
        removed if kind == "mlm" else 0
    )  # the (tied) embedding's rows, the MLM's bias
    # the same pieces: single texts, pairs (with their segment ids), pre-split words
    assert _pieces(pruned, TEXTS) == _pieces(tok, TEXTS)
    assert _pieces(pruned, TEXTS, PAIRS) == _pieces(tok, TEXTS, PAIRS)
    assert tok(TEXTS, PAIRS).get("token_type_ids") == pruned(TEXTS, PAIRS).get("token_type_ids")
    assert _pieces(pruned, WORDS, is_split_into_words=True) == _pieces(tok, WORDS, is_split_into_words=True)
    # special tokens keep working, with their new ids; the model's config follows
    assert pruned.special_tokens_map == tok.special_tokens_map
    for name in ("pad", "unk", "cls", "sep", "mask"):
        token = getattr(pruned, f"{name}_token")
        assert (
            pruned.convert_ids_to_tokens(getattr(pruned, f"{name}_token_id")) == token == getattr(tok, f"{name}_token")
        )
    assert pruned.pad_token_id == pruned_model.config.pad_token_id == tok.pad_token_id  # ids up to the pad id are kept
    assert pruned_model.config.vocab_size == len(pruned) == pruned_model.get_input_embeddings().num_embeddings
    mark = pruned_from(pruned, tok)
    assert mark is not None and pruned_from(pruned, pruned) is None  # cut from tok, not from itself
    old_rows = model.get_input_embeddings().weight[list(mark.old_ids)]
    assert torch.equal(pruned_model.get_input_embeddings().weight, old_rows)
    # the same outputs (padded batches, pairs); an MLM's logits are the kept columns of the old ones
    for pairs in (None, PAIRS):
        before, after = _outputs(model, tok, TEXTS, pairs), _outputs(pruned_model, pruned, TEXTS, pairs)
        if kind == "mlm":
            before = before[..., list(mark.old_ids)]
            assert (
                pruned_model.get_output_embeddings().weight is pruned_model.get_input_embeddings().weight
            )  # still tied
        torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_other_text_falls_back_to_other_pieces_or_unknown() -> None:
    tok = _unigram_tokenizer()
    _, pruned, _ = prune_vocabulary(_model("bert-unigram", len(tok), 1), tok, used_token_ids(tok, ["北 京"]))
    assert _pieces(pruned, ["北 京"]) == [["<s>", "▁北", "▁", "京", "</s>"]]
    assert _pieces(tok, ["北京"]) == [["<s>", "▁北京", "</s>"]]
    assert _pieces(pruned, ["北京"]) == [["<s>", "▁北", "京", "</s>"]]  # ▁北京 was pruned: another segmentation
    assert _pieces(pruned, ["上海 film"]) == [["<s>", "▁", "<unk>", "▁", "<unk>", "</s>"]]  # no piece left: unknown
    assert pruned.decode(pruned("北京 <mask>")["input_ids"], skip_special_tokens=False) == "<s> 北京<mask></s>"


def test_wordpiece_unseen_words_are_unknown(tmp_path: Path) -> None:
    tok = _wordpiece_tokenizer(tmp_path)
    _, pruned, _ = prune_vocabulary(_model("wordpiece", len(tok), 0), tok, used_token_ids(tok, ["the good film"]))
    assert set(pruned.get_vocab()) == {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "good", "film"}
    assert _pieces(pruned, ["the good bad film"]) == [["[CLS]", "the", "good", "[UNK]", "film", "[SEP]"]]


def test_save_and_reload_give_the_same_outputs(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = _unigram_tokenizer()
    model, pruned, _ = prune_vocabulary(_model("xlmr", len(tok), 1), tok, used_token_ids(tok, TEXTS, PAIRS))
    model.save_pretrained(tmp_path / "m")
    pruned.save_pretrained(tmp_path / "m")
    model2 = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert tok2(TEXTS, PAIRS)["input_ids"] == pruned(TEXTS, PAIRS)["input_ids"]
    assert (tok2.pad_token_id, tok2.mask_token_id, len(tok2)) == (
        pruned.pad_token_id,
        pruned.mask_token_id,
        len(pruned),
    )
    torch.testing.assert_close(
        _outputs(model2, tok2, TEXTS, PAIRS), _outputs(model, pruned, TEXTS, PAIRS), atol=1e-6, rtol=0
    )


def test_unsupported_tokenizer_is_refused_by_its_model_type() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE({"<unk>": 0, "a": 1, "b": 2, "ab": 3}, [("a", "b")], unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>")
    with pytest.raises(
        TextDistillError, match="supports Unigram and WordPiece tokenizers .*; this teacher's tokenizer is a BPE model"
    ):
        prune_vocabulary(_model("bert-unigram", 4, 0), tok, {1})


def test_prune_vocabulary_needs_a_student_made_from_the_teacher() -> None:
    from textdistill.config import config_from_dict

    data = {"train_file": "t.tsv", "validation_file": "d.tsv"}
    bilstm = {"architecture": {"type": "bilstm", "tokenizer": "teacher"}, "prune_vocabulary": True}
    with pytest.raises(
        TextDistillError,
        match=r"student: prune_vocabulary: cuts the teacher's vocabulary for a "
        r"student made from the "
        r"teacher \(layers, num_layers or config_overrides\); a "
        r"student\.architecture student",
    ):
        config_from_dict({"data": data, "teacher": {"model": "m"}, "student": bilstm})
    ok = config_from_dict({"data": data, "student": {"num_layers": 2, "prune_vocabulary": True}})
    assert ok.student is not None and ok.student.prune_vocabulary
    tasks = [{"name": "a", "data": data, "teachers": [{"model": "m"}]}]
    with pytest.raises(TextDistillError, match="student.prune_vocabulary: not available for multi-task students"):
        config_from_dict({"tasks": tasks, "student": {"num_layers": 2, "prune_vocabulary": True}})


def test_token_distillation_reads_the_pruned_pieces_in_the_teachers_ids() -> None:
    from textdistill.data import LabelSet, TextData, tokenize_words
    from textdistill.pipeline import _dataset

    tok = _unigram_tokenizer()
    words = [["北京", "film", "good"], ["上海", "it", ","]]
    data = TextData([" ".join(w) for w in words], [["B-LOC", "O", "O"], ["B-LOC", "O", "O"]], words=words)
    labels = LabelSet(("B-LOC", "O"), "token_classification")
    _, pruned, _ = prune_vocabulary(_model("bert-unigram", len(tok), 1), tok, used_token_ids(tok, [], words=words))
    ds = _dataset(pruned, data, labels, 32, tok)
    own = tokenize_words(tok, data, labels.encode(data), labels.names, 32)
    assert ds.teacher == own.features and ds.labels == own.labels  # the teacher reads exactly its own tokenization
    assert [f["input_ids"] for f in ds.student] != [f["input_ids"] for f in own.features]  # in other (pruned) ids
    with pytest.raises(
        TextDistillError, match="token-level distillation needs the student to tokenize like the teacher"
    ):
        _dataset(_unigram_tokenizer(), data, labels, 32, pruned)  # not a pruning of that tokenizer: refused as before


def test_distill_with_pruned_vocabulary_end_to_end(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from test_end_to_end import tiny_config
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import textdistill
    from textdistill.cli import main

    out = tmp_path / "run"
    report = textdistill.distill(tiny_config(tiny_bert, sst2_dir, out, layers=[0, 3], prune_vocabulary=True))
    v = report["student"]["vocabulary"]
    assert v["tokenizer_model"] == "WordPiece" and v["vocab_after"] < v["vocab_before"] == len(
        AutoTokenizer.from_pretrained(tiny_bert)
    )
    assert json.loads((out / "metrics.json").read_text())["student"]["vocabulary"] == v
    assert f"{v['vocab_before']:,} -> {v['vocab_after']:,} WordPiece pieces" in (out / "report.md").read_text()
    for name in ("student", "baseline"):
        tok = AutoTokenizer.from_pretrained(out / name)
        model = AutoModelForSequenceClassification.from_pretrained(out / name)
        assert len(tok) == model.config.vocab_size == v["vocab_after"]
    assert report["student"]["params"] == v["params_after"] == v["params_before"] - v["params_removed"]
    capsys.readouterr()
    assert main(["predict", str(out / "student"), "a gorgeous , witty film", "zzzz qqqq unseen words"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t", 1)[1] for line in lines] == ["a gorgeous , witty film", "zzzz qqqq unseen words"]
    assert all(line.split("\t", 1)[0] in ("0", "1") for line in lines)


def test_token_distillation_with_a_pruned_vocabulary_trains_as_without_it(tiny_bert: str, tmp_path: Path) -> None:
    """Same pieces, same rows: the pruned student's token-level KD run (the teacher reading the pieces in its own ids)
    follows the unpruned one step by step."""
    from test_token_kd import ner_config

    import textdistill

    reports, logs = {}, {}
    for prune in (False, True):
        cfg = ner_config(tiny_bert, tmp_path / f"run-{prune}", layers=[0, 3], prune_vocabulary=prune)
        cfg["distill"]["baseline"] = False
        reports[prune] = textdistill.distill(cfg)
        logs[prune] = [
            json.loads(line) for line in (tmp_path / f"run-{prune}" / "logs" / "student.jsonl").read_text().splitlines()
        ]
    v = reports[True]["student"]["vocabulary"]
    assert v["vocab_after"] < v["vocab_before"] and "vocabulary" not in reports[False]["student"]
    assert reports[True]["teacher"]["soft_targets"]["cache"] == "hit"  # the teacher read exactly the same ids as before
    kd = {prune: [s["kd"] for s in steps if "kd" in s] for prune, steps in logs.items()}
    assert kd[True] and kd[True] == pytest.approx(kd[False], rel=1e-4)
    for key in ("metrics", "test_metrics"):
        assert reports[True]["student"][key] == pytest.approx(reports[False]["student"][key], abs=1e-6)


def _e5_reviews(n: int) -> list[str]:
    from textdistill.config import data_dir

    path = Path(data_dir()) / "chnsenticorp" / "train.tsv"
    if not path.is_file():
        pytest.skip(f"ChnSentiCorp not found at {path}")
    with open(path, encoding="utf-8", newline="") as f:
        return [row["text_a"] for _, row in zip(range(n), csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))]


@pytest.mark.slow
def test_real_multilingual_e5_pruned_to_chnsenticorp() -> None:
    from transformers import AutoModel, AutoTokenizer

    from textdistill import catalogue

    entry = catalogue.entry_named("multilingual-e5-small")
    if catalogue.missing_distributions(entry):
        pytest.skip(f"multilingual-e5-small needs {entry.pip}")
    texts = _e5_reviews(200)
    folder = catalogue.prepare(entry.name)  # the tests' own model cache: converted once from the package (~8 s)
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    pruned_model, pruned, info = prune_vocabulary(copy.deepcopy(model), tok, used_token_ids(tok, texts))
    print(f"multilingual-e5-small on 200 ChnSentiCorp reviews: {info}")
    assert (info["tokenizer_model"], info["vocab_before"], info["embedding_rows_before"]) == ("Unigram", 250002, 250037)
    assert info["vocab_after"] < 10_000 and info["params_removed"] > 90e6
    assert _pieces(pruned, texts) == _pieces(tok, texts)
    for start in range(0, len(texts), 25):
        chunk = texts[start : start + 25]
        a = tok(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
        b = pruned(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            torch.testing.assert_close(
                pruned_model(**b).last_hidden_state, model(**a).last_hidden_state, atol=1e-5, rtol=0
            )
