"""Chinese NER through the token path: BIOES / BMES tags read as IOB2, the token_lines layout (a sentence per line,
tokens TAB tags), the real Weibo and Resume NER files, sentencepiece-style tokenization of single-character words,
and a tiny distillation run on Resume sentences."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest
from conftest import make_tiny_bert

import textdistill
from textdistill.config import DataConfig, data_dir
from textdistill.data import LabelSet, TextData, read_file, tokenize_words
from textdistill.errors import TextDistillError
from textdistill.losses import IGNORE_INDEX
from textdistill.ner import (
    bioes_to_iob2,
    entities,
    predict_entities,
    read_conll,
    read_tagged,
    read_token_lines,
    split_words,
)

CHINESE_NER = Path(data_dir()) / "chinese_ner"
WEIBO = {"train.all.bmes": 1350, "dev.all.bmes": 270, "test.all.bmes": 270}
RESUME = {"train.char.bmes": 3821, "dev.char.bmes": 463, "test.char.bmes": 477}


def require_chinese_ner() -> Path:
    if (
        not (CHINESE_NER / "weibo" / "train.all.bmes").is_file()
        or not (CHINESE_NER / "resume" / "train.char.bmes").is_file()
    ):
        pytest.skip(f"shared Chinese NER data (Weibo, Resume) not found at {CHINESE_NER}")
    return CHINESE_NER


def strict_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """Entity spans (end exclusive) of a well-formed BIOES / BMES / BIO+S sequence, by the scheme's definition: S-X
    alone, or B-X, then I-/M-X, ended by E-X (BIOES) or by whatever is not I-/M-X (BIO)."""
    spans, i = set(), 0
    while i < len(tags):
        prefix, kind = tags[i][0], tags[i][2:]
        if prefix == "S":
            spans.add((kind, i, i + 1))
        elif prefix == "B":
            j = i + 1
            while j < len(tags) and tags[j][0] in "IM" and tags[j][2:] == kind:
                j += 1
            if j < len(tags) and tags[j] == "E-" + kind:
                j += 1
            spans.add((kind, i, j))
            i = j
            continue
        else:
            assert prefix == "O", f"not well-formed at {i}: {tags}"
        i += 1
    return spans


def seqeval_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """How seqeval's default mode reads raw BIOES tags (with M- taken for I-), ill-formed ones included."""
    from seqeval.metrics.sequence_labeling import get_entities

    return {(kind, a, b + 1) for kind, a, b in get_entities(["I" + t[1:] if t.startswith("M-") else t for t in tags])}


# --------------------------------------------------------------------------------------------------------------------
# BIOES / BMES to IOB2


@pytest.mark.parametrize(
    "raw, iob2",
    [
        # BMES (Resume): M- inside, E- closing, S- a one-character entity
        (
            ["B-NAME", "E-NAME", "O", "B-CONT", "M-CONT", "M-CONT", "E-CONT", "S-NAME", "O"],
            ["B-NAME", "I-NAME", "O", "B-CONT", "I-CONT", "I-CONT", "I-CONT", "B-NAME", "O"],
        ),
        # BIOES proper
        (["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"], ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O"]),
        # BIO with S- for single-character entities (the Weibo label list's scheme), dotted types
        (
            ["B-PER.NAM", "I-PER.NAM", "S-GPE.NAM", "O", "S-PER.NOM"],
            ["B-PER.NAM", "I-PER.NAM", "B-GPE.NAM", "O", "B-PER.NOM"],
        ),
        # adjacent entities of one type: each opens with B-
        (
            ["S-LOC", "S-LOC", "B-LOC", "E-LOC", "B-LOC", "E-LOC", "S-LOC"],
            ["B-LOC", "B-LOC", "B-LOC", "I-LOC", "B-LOC", "I-LOC", "B-LOC"],
        ),
        (["B-ORG", "M-ORG", "E-ORG", "B-ORG", "E-ORG"], ["B-ORG", "I-ORG", "I-ORG", "B-ORG", "I-ORG"]),
        # adjacent entities of two types
        (["B-ORG", "E-ORG", "B-TITLE", "E-TITLE", "S-ORG"], ["B-ORG", "I-ORG", "B-TITLE", "I-TITLE", "B-ORG"]),
        (["O", "O"], ["O", "O"]),
        ([], []),
    ],
)
def test_bioes_converts_to_iob2(raw: list[str], iob2: list[str]) -> None:
    assert bioes_to_iob2(raw) == iob2
    assert entities(iob2) == strict_spans(raw)


@pytest.mark.parametrize(
    "raw, iob2",
    [
        (
            ["O", "M-PER.NOM", "E-PER.NOM", "O"],
            ["O", "B-PER.NOM", "I-PER.NOM", "O"],
        ),  # Weibo: an entity that opens with M-
        (
            ["B-PER.NAM", "M-PER.NAM", "M-PER.NOM", "E-PER.NOM"],
            ["B-PER.NAM", "I-PER.NAM", "B-PER.NOM", "I-PER.NOM"],
        ),  # type changes
        (["B-ORG", "M-ORG"], ["B-ORG", "I-ORG"]),  # Resume: a sentence that ends inside an entity
        (["E-X", "I-X", "S-X", "M-X", "E-X", "E-X"], ["B-X", "B-X", "B-X", "B-X", "I-X", "B-X"]),  # E- and S- close
    ],
)
def test_ill_formed_bioes_reads_as_seqeval_reads_it(raw: list[str], iob2: list[str]) -> None:
    assert bioes_to_iob2(raw) == iob2
    assert entities(iob2) == seqeval_spans(raw)


def _render(spans: list[tuple[str, int]], style: str) -> list[str]:
    """Tags of a sentence made of (type, length) chunks (type None: an O token) in BIOES, BMES or BIO+S."""
    inside, last = {"bioes": ("I", "E"), "bmes": ("M", "E"), "bio_s": ("I", "I")}[style]
    out: list[str] = []
    for kind, n in spans:
        if kind is None:
            out += ["O"] * n
        elif n == 1:
            out.append("S-" + kind)
        else:
            out += ["B-" + kind] + [f"{inside}-{kind}"] * (n - 2) + [f"{last}-{kind}"]
    return out


def test_well_formed_sequences_keep_their_spans_and_any_sequence_reads_as_seqeval() -> None:
    rng = random.Random(7)
    for _ in range(400):
        chunks = [(rng.choice([None, "PER", "LOC", "GPE.NAM"]), rng.randint(1, 4)) for _ in range(rng.randint(0, 8))]
        for style in ("bioes", "bmes", "bio_s"):
            raw = _render(chunks, style)
            converted = bioes_to_iob2(raw)
            assert entities(converted) == strict_spans(raw) == seqeval_spans(raw), (raw, converted)
            assert len({(k, a, b) for k, a, b in entities(converted)}) == sum(k is not None for k, _ in chunks)
            assert all(t == "O" or t[:2] in ("B-", "I-") for t in converted)
    tags = ["O", "B-X", "I-X", "M-X", "E-X", "S-X", "B-Y", "M-Y", "E-Y", "S-Y"]
    for _ in range(2000):  # anything at all, ill-formed included: the spans seqeval reads from the raw tags
        raw = [rng.choice(tags) for _ in range(rng.randint(0, 10))]
        assert entities(bioes_to_iob2(raw)) == seqeval_spans(raw), raw


# --------------------------------------------------------------------------------------------------------------------
# Readers


def test_conll_reads_bioes_and_tolerates_a_byte_order_mark(write) -> None:
    path = write("w.bmes", "\ufeff张 B-PER.NAM\n三 E-PER.NAM\n在 O\n\n北 S-GPE.NAM\n京 O\n")
    data = read_conll(path, "bioes")
    assert [(s.tokens, s.tags, s.line) for s in data.sentences] == [
        (["张", "三", "在"], ["B-PER.NAM", "I-PER.NAM", "O"], 1),
        (["北", "京"], ["B-GPE.NAM", "O"], 5),
    ]
    assert data.tag_names == ["O", "B-GPE.NAM", "B-PER.NAM", "I-PER.NAM"] and data.word_per_line
    assert read_tagged(path, "conll", "bioes") == data


def test_token_lines_read_sentences_and_line_numbers(write) -> None:
    path = write(
        "r.char.bmes",
        "\ufeff张 三 在 北 京\tB-NAME E-NAME O S-LOC O\n\n \n"
        "高 级 工 程 师\tB-TITLE M-TITLE M-TITLE M-TITLE E-TITLE\r\n",
    )
    data = read_token_lines(path, "bioes")
    assert [(s.tokens, s.tags, s.line) for s in data.sentences] == [
        (["张", "三", "在", "北", "京"], ["B-NAME", "I-NAME", "O", "B-LOC", "O"], 1),
        (["高", "级", "工", "程", "师"], ["B-TITLE", "I-TITLE", "I-TITLE", "I-TITLE", "I-TITLE"], 4),
    ]
    assert not data.word_per_line
    assert read_tagged(path, "token_lines", "bioes") == data
    # IOB2 files read as they are
    iob = write("r.txt", "EU rejects Peter\tB-ORG O B-PER\n")
    assert read_token_lines(iob, "iob2").sentences[0].tags == ["B-ORG", "O", "B-PER"]
    assert read_token_lines(write("r1.txt", "a b\tI-X I-X\n"), "iob1").sentences[0].tags == ["B-X", "I-X"]


@pytest.mark.parametrize(
    "content, scheme, message",
    [
        (
            "张 三\tB-NAME E-NAME\n张 三 在 北 京 工 作 了 十 二 年 。\tO O O O O O O O O O O\n",
            "bioes",
            r"x\.txt:2: 12 tokens but 11 tags$",
        ),
        ("张\tS-NAME S-NAME\n", "bioes", r"x\.txt:1: 1 token but 2 tags$"),
        ("\tO\n", "bioes", r"x\.txt:1: 0 tokens but 1 tag$"),
        (
            "张 三\tB-NAME E-NAME\n张 B-NAME\n",
            "bioes",
            r"x\.txt:2: expected tokens, a TAB, then tags; got no TAB \(is the file CoNLL",
        ),
        ("张\tO\tO\n", "bioes", r"x\.txt:1: expected tokens, a TAB, then tags; got 2 TABs"),
        (
            "张 三 在\tB-NAME X-NAME O\n",
            "bioes",
            r"x\.txt:1: tag 'X-NAME' \(word 2\) is not O, B-TYPE, I-TYPE, M-TYPE, E-TYPE or S-TYPE "
            r"\(tag scheme bioes\)",
        ),
        ("张 三\tB-NAME NAME\n", "bioes", r"x\.txt:1: tag 'NAME' \(word 2\) is not O, B-TYPE"),
        (
            "张 三\tS-NAME O\n",
            "iob2",
            r"x\.txt:1: tag 'S-NAME' \(word 1\) is not O, B-TYPE or I-TYPE \(tag scheme "
            r"iob2; BIOES or BMES tags\? "
            r"set data.tag_scheme: bioes\)",
        ),
        ("张 三\tO I-NAME\n", "iob2", r"x\.txt:1: I-NAME follows O: not valid IOB2"),
        ("\n \n", "bioes", r"x\.txt: no sentences \(empty file\)"),
        (b"a\tO\n\xe5\xbc\tO\n", "bioes", r"x\.txt:2: not valid UTF-8 \(byte 0xe5\)"),
    ],
)
def test_bad_token_lines(write, content: str | bytes, scheme: str, message: str) -> None:
    path = write("x.txt", content)
    with pytest.raises(TextDistillError, match=message):
        read_token_lines(path, scheme)


def test_unknown_prefix_in_conll_names_the_scheme(write) -> None:
    path = write("x.conll", "张 B-PER\n三 Q-PER\n")
    with pytest.raises(
        TextDistillError,
        match=r"x\.conll:2: tag 'Q-PER' is not O, B-TYPE, I-TYPE, M-TYPE, E-TYPE or "
        r"S-TYPE \(tag scheme bioes\)",
    ):
        read_conll(path, "bioes")
    with pytest.raises(
        TextDistillError,
        match=r"y\.conll:1: tag 'E-PER' is not O, B-TYPE or I-TYPE \(tag scheme "
        r"iob1; .*set data.tag_scheme: bioes",
    ):
        read_conll(write("y.conll", "张 E-PER\n"), "iob1")
    with pytest.raises(TextDistillError, match="scheme: iob1, iob2 or bioes, got 'bmes'"):
        read_conll(path, "bmes")
    with pytest.raises(TextDistillError, match="tagged file format: conll or token_lines, got 'tsv'"):
        read_tagged(path, "tsv", "bioes")


def test_token_lines_through_the_data_config(write) -> None:
    train = write("train.txt", "张 三 在 北 京\tB-NAME E-NAME O S-LOC O\n李 四\tB-NAME E-NAME\n")
    dev = write("dev.txt", "北 京\tB-LOC E-LOC\n\n王 五 是 博 士\tB-NAME E-NAME O B-EDU E-EDU\n")
    cfg = DataConfig(
        task_type="token_classification",
        format="token_lines",
        tag_scheme="bioes",
        train_file=str(train),
        validation_file=str(dev),
    )
    data = read_file(train, cfg)
    assert (
        data.words == [["张", "三", "在", "北", "京"], ["李", "四"]] and data.rows == [1, 2] and not data.word_per_line
    )
    assert data.texts[0] == "张 三 在 北 京" and data.labels[1] == ["B-NAME", "I-NAME"]
    labels = LabelSet.from_data(data, "token_classification")
    assert labels.names == ("O", "B-LOC", "B-NAME", "I-NAME")
    # a dev tag the training tags lack: the sentence's line and the word's place on it
    with pytest.raises(TextDistillError, match=r"dev\.txt:1: tag 'I-LOC' \(word 2\) is not among the training tags"):
        labels.encode(read_file(dev, cfg))
    assert read_file(dev, cfg).head(1).word_per_line is False
    with pytest.raises(
        ValueError, match="format: token_lines files hold a tag per token: set task_type: token_classification"
    ):
        DataConfig(format="token_lines", train_file="a", validation_file="b")
    with pytest.raises(ValueError, match=r"reads CoNLL files: set format: conll \(a token per line\), or token_lines"):
        DataConfig(task_type="token_classification", train_file="a", validation_file="b")
    with pytest.raises(ValueError, match="tag_scheme"):
        DataConfig(
            task_type="token_classification",
            format="token_lines",
            tag_scheme="bmes",
            train_file="a",
            validation_file="b",
        )


# --------------------------------------------------------------------------------------------------------------------
# The real Weibo and Resume NER files


def _raw_sentences(path: Path, layout: str) -> list[tuple[list[str], list[str]]]:
    """The files read by hand, tags as they stand."""
    text = path.read_text(encoding="utf-8")
    if layout == "token_lines":
        return [(a.split(" "), b.split(" ")) for a, b in (line.split("\t") for line in text.splitlines() if line)]
    out = []
    for block in text.split("\n\n"):
        rows = [line.split(" ") for line in block.splitlines() if line]
        if rows:
            out.append(([r[0] for r in rows], [r[1] for r in rows]))
    return out


@pytest.mark.parametrize("corpus, layout, counts", [("weibo", "conll", WEIBO), ("resume", "token_lines", RESUME)])
def test_real_files_read_with_their_entity_spans_unchanged(corpus: str, layout: str, counts: dict[str, int]) -> None:
    folder = require_chinese_ner() / corpus
    for name, count in counts.items():
        data = read_tagged(folder / name, layout, "bioes")
        raw = _raw_sentences(folder / name, layout)
        assert len(data.sentences) == len(raw) == count, name
        ill_formed = 0
        for sent, (tokens, tags) in zip(data.sentences, raw):
            assert sent.tokens == tokens and len(sent.tags) == len(tags)
            assert all(t == "O" or t[:2] in ("B-", "I-") for t in sent.tags)
            assert entities(sent.tags) == seqeval_spans(tags), (name, sent.line)
            try:
                assert entities(sent.tags) == strict_spans(tags)
            except AssertionError:  # a handful of ill-formed sentences in the files (an entity opening with M-)
                ill_formed += 1
        assert ill_formed <= 10, name
        assert {t[2:] for t in data.tag_names if t != "O"} <= {t[2:] for _, tags in raw for t in tags if t != "O"}
    # the data loader reads them the same way
    split = next(iter(counts))
    cfg = DataConfig(
        task_type="token_classification",
        format=layout,
        tag_scheme="bioes",
        train_file=str(folder / split),
        validation_file=str(folder / split),
    )  # type: ignore[arg-type]
    data = read_file(folder / split, cfg)
    assert len(data) == counts[split] and data.word_per_line == (layout == "conll")
    kinds = {
        "weibo": {"GPE.NAM", "GPE.NOM", "LOC.NAM", "LOC.NOM", "ORG.NAM", "ORG.NOM", "PER.NAM", "PER.NOM"},
        "resume": {"CONT", "EDU", "LOC", "NAME", "ORG", "PRO", "RACE", "TITLE"},
    }[corpus]
    assert {t[2:] for t in LabelSet.from_data(data, "token_classification").names if t != "O"} == kinds


# --------------------------------------------------------------------------------------------------------------------
# Single-character words through sub-word tokenizers


def _sentencepiece_tokenizer():
    """An XLM-R-style tokenizer: unigram model, Metaspace (``▁``) pre-tokenizer and decoder, a normalizer that
    removes zero-width spaces. Some characters are pieces with their ``▁`` (``▁张``), the others are ``▁`` + char."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = [
        ("<s>", 0.0),
        ("<pad>", 0.0),
        ("</s>", 0.0),
        ("<unk>", 0.0),
        ("▁", -2.0),
        ("▁张", -1.5),
        ("▁在", -1.5),
        ("▁北京", -1.0),
    ]
    vocab += [(c, -3.0) for c in "张三在北京工作李四年"]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("\u200b", "")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
    )


NAMES = ("O", "B-LOC", "I-LOC", "B-NAME", "I-NAME")


def _words_data(words: list[list[str]], tags: list[list[str]]) -> tuple[TextData, list[list[int]]]:
    data = TextData(
        [" ".join(w) for w in words],
        tags,
        source="r.txt",
        rows=list(range(1, len(words) + 1)),
        words=words,
        word_per_line=False,
    )
    return data, LabelSet(NAMES, "token_classification").encode(data)


def _labelled(out, i: int, tok) -> list[tuple[str, int]]:
    """(piece, tag id) of each labelled position of sentence ``i``."""
    pieces = tok.convert_ids_to_tokens(out.features[i]["input_ids"])
    return [(p, t) for p, t in zip(pieces, out.labels[i]) if t != IGNORE_INDEX]


def test_sentencepiece_alignment_tags_the_character_not_the_bare_marker() -> None:
    tok = _sentencepiece_tokenizer()
    words = [["张", "三", "在", "北", "京", "工", "作"], ["李", "四", "\u200b", "在", "北", "京"]]
    tags = [["B-NAME", "I-NAME", "O", "B-LOC", "I-LOC", "O", "O"], ["B-NAME", "I-NAME", "O", "O", "B-LOC", "I-LOC"]]
    data, ids = _words_data(words, tags)
    enc = tok(words[0], is_split_into_words=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == [
        "<s>",
        "▁张",
        "▁",
        "三",
        "▁在",
        "▁",
        "北",
        "▁",
        "京",
        "▁",
        "工",
        "▁",
        "作",
        "</s>",
    ]
    with pytest.warns(
        UserWarning,
        match=r"r\.txt: 1 distinct words give the tokenizer no piece \(the first: "
        r"'\\u200b' at r\.txt:2 \(word 3\)\); "
        r"each is read as <unk>",
    ):
        out = tokenize_words(tok, data, ids, NAMES, max_length=64)
    # every word keeps its tag, in order, on a piece of its own that holds its character
    assert _labelled(out, 0, tok) == [("▁张", 3), ("三", 4), ("▁在", 0), ("北", 1), ("京", 2), ("工", 0), ("作", 0)]
    assert _labelled(out, 1, tok) == [("李", 3), ("四", 4), ("<unk>", 0), ("▁在", 0), ("北", 1), ("京", 2)]
    assert out.dropped == [[], []]
    assert [[x for x in lab if x != IGNORE_INDEX] for lab in out.labels] == ids
    # all: the character pieces carry the tag (B- continued as I-), the bare marker none
    every = tokenize_words(tok, data.head(1), ids[:1], NAMES, max_length=64, alignment="all")
    pieces = tok.convert_ids_to_tokens(every.features[0]["input_ids"])
    assert [(p, t) for p, t in zip(pieces, every.labels[0])] == [
        ("<s>", IGNORE_INDEX),
        ("▁张", 3),
        ("▁", IGNORE_INDEX),
        ("三", 4),
        ("▁在", 0),
        ("▁", IGNORE_INDEX),
        ("北", 1),
        ("▁", IGNORE_INDEX),
        ("京", 2),
        ("▁", IGNORE_INDEX),
        ("工", 0),
        ("▁", IGNORE_INDEX),
        ("作", 0),
        ("</s>", IGNORE_INDEX),
    ]


def test_truncation_that_keeps_only_a_bare_marker_cuts_the_word() -> None:
    tok = _sentencepiece_tokenizer()
    data, ids = _words_data([["张", "三", "在", "北", "京"]], [["B-NAME", "I-NAME", "O", "B-LOC", "I-LOC"]])
    # <s> ▁张 ▁ 三 ▁在 ▁ | 北 ...: the bare marker of 北 is the last piece kept
    with pytest.warns(UserWarning, match=r"1 of 1 sentences are longer than max_length=7 tokens .*2 words cut"):
        out = tokenize_words(tok, data, ids, NAMES, max_length=7)
    assert tok.convert_ids_to_tokens(out.features[0]["input_ids"]) == ["<s>", "▁张", "▁", "三", "▁在", "▁", "</s>"]
    assert out.labels[0] == [IGNORE_INDEX, 3, IGNORE_INDEX, 4, 0, IGNORE_INDEX, IGNORE_INDEX]
    assert out.dropped == [[1, 2]]  # 北 京: cut, counted as missed in the scores
    with pytest.warns(UserWarning, match="1 words cut"):
        out = tokenize_words(tok, data, ids, NAMES, max_length=8)
    assert _labelled(out, 0, tok)[-1] == ("北", 1) and out.dropped == [[2]]
    with pytest.warns(UserWarning, match="2 words cut"):
        out = tokenize_words(tok, data, ids, NAMES, max_length=6)
    assert _labelled(out, 0, tok) == [("▁张", 3), ("三", 4), ("▁在", 0)] and out.dropped == [[1, 2]]


def test_bert_reads_each_character_and_a_word_it_would_drop_as_unknown(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(make_tiny_bert(tmp_path / "bert", ["张三在北京工作", "李四"], 100))
    words = [
        ["张", "三", "\ufe0f", "在", "北", "京"]
    ]  # Weibo holds lone variation selectors; an uncased BERT strips them
    data, ids = _words_data(words, [["B-NAME", "I-NAME", "O", "O", "B-LOC", "I-LOC"]])
    with pytest.warns(UserWarning, match=r"the first: '\\ufe0f' at r\.txt:1 \(word 3\)\); each is read as \[UNK\]"):
        out = tokenize_words(tok, data, ids, NAMES, max_length=32)
    assert _labelled(out, 0, tok) == [("张", 3), ("三", 4), ("[UNK]", 0), ("在", 0), ("北", 1), ("京", 2)]
    with warnings.catch_warnings():  # nothing to stand in for: no warning
        warnings.simplefilter("error")
        plain = tokenize_words(tok, *_words_data([["张", "三"]], [["B-NAME", "I-NAME"]]), NAMES, max_length=32)
    assert _labelled(plain, 0, tok) == [("张", 3), ("三", 4)]


class _CharTagger:
    """A stand-in token classifier: 张 -> B-NAME, 三 -> I-NAME, any other piece (the bare ▁ too) -> O."""

    def __init__(self, tok) -> None:
        from types import SimpleNamespace

        self.config = SimpleNamespace(id2label=dict(enumerate(NAMES)), num_labels=len(NAMES))
        self.ids = {tok.convert_tokens_to_ids(p): NAMES.index(t) for p, t in (("▁张", "B-NAME"), ("三", "I-NAME"))}

    def eval(self) -> None:
        pass

    def __call__(self, input_ids, **_):
        from types import SimpleNamespace

        import torch

        logits = torch.zeros(*input_ids.shape, len(NAMES))
        for (b, t), i in zip(
            torch.cartesian_prod(torch.arange(input_ids.shape[0]), torch.arange(input_ids.shape[1])).tolist(),
            input_ids.flatten().tolist(),
        ):
            logits[b, t, self.ids.get(i, 0)] = 5.0
        return SimpleNamespace(logits=logits)


def test_predicted_entities_read_the_character_piece_and_start_at_the_character() -> None:
    tok = _sentencepiece_tokenizer()
    text = "在 张 三 在"
    # words ▁在 | ▁ 张 -> ▁张 | ▁ 三 | ▁在: 三's first piece is the bare marker, which the tagger reads as O
    out = predict_entities(_CharTagger(tok), tok, [text])
    assert out == [
        [{"type": "NAME", "text": "张 三", "start": 2, "end": 5, "score": pytest.approx(out[0][0]["score"])}]
    ]
    assert out[0][0]["score"] > 0.9


def test_raw_chinese_text_is_split_into_characters_as_in_training() -> None:
    """Chinese text has no spaces: a sentencepiece tokenizer alone would take "在张三在" for one word and tag only its
    first piece; the words are the characters, as the corpora tag them."""
    tok = _sentencepiece_tokenizer()
    assert ["在张三在。Li Na's"[a:b] for a, b in split_words("在张三在。Li Na's")] == [
        "在",
        "张",
        "三",
        "在",
        "。",
        "Li",
        "Na",
        "'",
        "s",
    ]
    out = predict_entities(_CharTagger(tok), tok, ["在张三在", "", "张三 and 张"])
    assert [[(e["text"], e["start"], e["end"]) for e in found] for found in out] == [
        [("张三", 1, 3)],
        [],
        [("张三", 0, 2), ("张", 7, 8)],
    ]


# --------------------------------------------------------------------------------------------------------------------
# A tiny distillation run on Resume sentences (token_lines, BMES)


def test_resume_distillation_with_token_lines(tmp_path: Path) -> None:
    folder = require_chinese_ner() / "resume"
    lines = (folder / "train.char.bmes").read_text(encoding="utf-8").splitlines()
    train = lines[:48]
    seen = {t for line in train for t in line.split("\t")[1].split()}
    dev = [line for line in lines[48:200] if set(line.split("\t")[1].split()) <= seen][:24]
    assert len(dev) == 24
    (tmp_path / "train.char.bmes").write_text("\n".join(train) + "\n", encoding="utf-8")
    (tmp_path / "dev.char.bmes").write_text("\n".join(dev) + "\n", encoding="utf-8")
    teacher = make_tiny_bert(
        tmp_path / "tiny_bert", [line.split("\t")[0].replace(" ", "") for line in lines[:400]], 1200
    )
    fast = {"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 2e-3, "logging_steps": 2}
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "seed": 3,
        "data": {
            "task_type": "token_classification",
            "format": "token_lines",
            "tag_scheme": "bioes",
            "train_file": str(tmp_path / "train.char.bmes"),
            "validation_file": str(tmp_path / "dev.char.bmes"),
            "max_length": 128,
        },
        "teacher": {"model": teacher, "finetune": True, "training": fast},
        "student": {"layers": [0, 3], "training": fast},
        "distill": {"temperature": 2.0, "alpha": 0.8},
        "eval": {"latency_repeats": 1, "latency_samples": 8},
    }
    report = textdistill.distill(cfg)
    assert report["metric"] == "entity_f1"
    tags = report["data"]["labels"]
    assert tags[0] == "O" and all(t == "O" or t[:2] in ("B-", "I-") for t in tags)  # IOB2, no M-/E-/S-
    assert {t[2:] for t in tags if t != "O"} >= {"NAME", "ORG", "TITLE"}
    for side in ("teacher", "student", "baseline"):
        m = report[side]["metrics"]
        assert 0.0 <= m["entity_f1"] <= 1.0 and 0.0 <= m["token_accuracy"] <= 1.0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["task_type"] == "token_classification"
    from transformers import AutoModelForTokenClassification

    student = AutoModelForTokenClassification.from_pretrained(tmp_path / "run" / "student")
    assert [student.config.id2label[i] for i in range(len(tags))] == tags
    logs = [json.loads(line) for line in (tmp_path / "run" / "logs" / "student.jsonl").read_text().splitlines()]
    assert any("kd" in s for s in logs)
