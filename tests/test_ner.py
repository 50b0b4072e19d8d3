"""NER data and scoring: CoNLL reading (IOB1 -> IOB2 checked against the shared IOB2 copy), label alignment to
sub-words, entity-level scores against seqeval."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from textdistill.config import data_dir
from textdistill.errors import TextDistillError
from textdistill.ner import IGNORE, align_labels, entities, entity_scores, iob1_to_iob2, read_conll

CONLL = Path(data_dir()) / "conll2003"


def test_iob1_converts_to_iob2() -> None:
    assert iob1_to_iob2(["I-ORG", "O", "I-MISC", "I-MISC", "B-MISC", "I-PER", "I-LOC"]) == [
        "B-ORG",
        "O",
        "B-MISC",
        "I-MISC",
        "B-MISC",
        "B-PER",
        "B-LOC",
    ]


def test_real_conll_iob1_reads_as_the_iob2_copy() -> None:
    if not (CONLL / "iob1" / "eng.testb").is_file():
        pytest.skip("shared CoNLL-2003 data not found")
    a = read_conll(CONLL / "iob1" / "eng.testb", "iob1")
    b = read_conll(CONLL / "iob2" / "eng.testb", "iob2")
    assert len(a.sentences) == len(b.sentences) == 3453  # the official testb size
    assert [s.tags for s in a.sentences] == [s.tags for s in b.sentences]
    assert a.tag_names == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert a.sentences[0].tokens[:3] == ["SOCCER", "-", "JAPAN"]
    with pytest.raises(TextDistillError, match=r"eng.testb:\d+: I-\w+ follows .*not valid IOB2 \(is the file IOB1"):
        read_conll(CONLL / "iob1" / "eng.testb", "iob2")


@pytest.mark.parametrize(
    "content, message",
    [
        ("EU NNP I-NP B-ORG\nrejects VBZ O\n", r"x.txt:2: expected 4 columns like the first line, got 3"),
        ("EU B-ORG\nrejects ORG\n", r"x.txt:2: tag 'ORG' is not O, B-TYPE or I-TYPE"),
        ("-DOCSTART- -X- O O\n\n", "no sentences"),
        ("EU\n", "at least 2 columns"),
    ],
)
def test_bad_conll(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "x.txt").write_text(content, encoding="utf-8")
    with pytest.raises(TextDistillError, match=message):
        read_conll(tmp_path / "x.txt", "iob2")


def test_data_encoding_applies_to_conll_files(tmp_path: Path) -> None:
    from textdistill.config import DataConfig
    from textdistill.data import read_file

    (tmp_path / "x.conll").write_bytes("Jos\u00e9 B-PER\nsaid O\n\nM\u00fcnchen B-LOC\n".encode("latin-1"))
    cfg = DataConfig(
        train_file="x", validation_file="x", format="conll", task_type="token_classification", encoding="latin-1"
    )
    data = read_file(tmp_path / "x.conll", cfg)
    assert data.texts == ["Jos\u00e9 said", "M\u00fcnchen"] and data.labels == [["B-PER", "O"], ["B-LOC"]]
    with pytest.raises(
        TextDistillError,
        match=r"x.conll:1: not valid UTF-8 \(byte 0xe9\); convert the file or set "
        r"data.encoding",
    ):
        read_file(tmp_path / "x.conll", cfg.model_copy(update={"encoding": "utf-8"}))


def test_sentences_split_at_blank_lines_and_docstart(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text(
        "-DOCSTART- O\n\nEU B-ORG\nsaid O\n\n\nPeter B-PER\n-DOCSTART- O\nBlair B-PER\n", encoding="utf-8"
    )
    data = read_conll(tmp_path / "x.txt", "iob2")
    assert [(s.tokens, s.tags, s.line) for s in data.sentences] == [
        (["EU", "said"], ["B-ORG", "O"], 3),
        (["Peter"], ["B-PER"], 7),
        (["Blair"], ["B-PER"], 9),
    ]


def test_labels_align_to_sub_words() -> None:
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    word_ids = [None, 0, 0, 1, 2, 2, 2, None]  # [CLS] Jo ##hn said Wash ##ing ##ton [SEP]
    tags = [1, 0, 3]
    assert align_labels(word_ids, tags, names, "first") == [IGNORE, 1, IGNORE, 0, 3, IGNORE, IGNORE, IGNORE]
    assert align_labels(word_ids, tags, names, "all") == [IGNORE, 1, 2, 0, 3, 4, 4, IGNORE]


def test_alignment_with_a_real_tokenizer(tiny_bert: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    words = ["Kuala", "Lumpur", "welcomes", "Xylophonist", "Jones"]
    enc = tok(words, is_split_into_words=True)
    labels = align_labels(enc.word_ids(), [3, 4, 0, 1, 2], ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], "first")
    firsts = [i for i, w in enumerate(enc.word_ids()) if w is not None and (i == 0 or enc.word_ids()[i - 1] != w)]
    assert [labels[i] for i in firsts] == [3, 4, 0, 1, 2]
    assert sum(x != IGNORE for x in labels) == 5 and len(labels) > 7  # rare words split into several pieces


def test_entity_scores_match_seqeval() -> None:
    seqeval = pytest.importorskip("seqeval.metrics")
    assert entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == {
        ("PER", 0, 2),
        ("LOC", 3, 4),
        ("LOC", 4, 5),
        ("ORG", 5, 6),
    }
    rng = random.Random(0)
    tags = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in g] for g in gold]
    ours = entity_scores(gold, pred)
    report = seqeval.classification_report(gold, pred, output_dict=True, zero_division=0)
    for kind in ("PER", "LOC", "ORG"):
        for key in ("precision", "recall", "f1-score", "support"):
            assert ours[kind][key.replace("-score", "")] == pytest.approx(report[kind][key])
    assert ours["overall"]["f1"] == pytest.approx(seqeval.f1_score(gold, pred))
    assert ours["overall"]["precision"] == pytest.approx(seqeval.precision_score(gold, pred))
