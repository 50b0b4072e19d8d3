"""Readers (TSV, CSV, JSONL, HF datasets), label sets, tokenization and batching."""

import json
import random

import pytest
import torch

from textdistill.config import DataConfig
from textdistill.data import (
    Collator,
    DistillDataset,
    LabelSet,
    TextData,
    data_layout,
    from_hf_dataset,
    load_splits,
    load_test,
    pad_features,
    read_file,
    read_texts,
    train_loader,
)
from textdistill.errors import TextDistillError


def cfg(**kw) -> DataConfig:
    kw.setdefault("train_file", "x")
    kw.setdefault("validation_file", "x")
    return DataConfig(**kw)


def test_tsv_keeps_quotes_and_rows(write):
    p = write("a.tsv", "text\tlabel\nit 's \"great\t1\n\nbad film\t0\n")
    d = read_file(p, cfg())
    assert d.texts == ["it 's \"great", "bad film"]
    assert d.labels == ["1", "0"]
    assert d.rows == [2, 4]  # blank line skipped, line numbers kept


def test_csv_with_quotes_and_pairs(write):
    p = write("a.csv", 'q,s,y\n"a, b","c ""d""",yes\nx,y,no\n')
    d = read_file(p, cfg(text_column="q", text_pair_column="s", label_column="y"))
    assert d.texts == ["a, b", "x"]
    assert d.pairs == ['c "d"', "y"]
    assert d.labels == ["yes", "no"]


def test_jsonl_with_int_labels_and_pairs(write):
    rows = [{"premise": "a", "hypothesis": "b", "label": 1}, {"premise": "c", "hypothesis": "d", "label": 0}]
    p = write("a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    d = read_file(p, cfg(text_column="premise", text_pair_column="hypothesis"))
    assert (d.texts, d.pairs, d.labels) == (["a", "c"], ["b", "d"], ["1", "0"])


def test_headerless_tsv_by_index_and_bom(write):
    p = write("cola.tsv", "\ufeffsrc\t1\t\tgood sentence .\nsrc\t0\t*\tbad sentence .\n")
    d = read_file(p, cfg(has_header=False, text_column=3, label_column=1))
    assert d.texts == ["good sentence .", "bad sentence ."]
    assert d.labels == ["1", "0"]


def test_real_sst2_dev(sst2_dir):
    d = read_file(sst2_dir / "dev.tsv", cfg())
    assert len(d) == 872
    assert set(d.labels) == {"0", "1"}


@pytest.mark.parametrize(
    "name, content, kw, message",
    [
        ("m.tsv", "text\tlabel\n", {}, r"m\.tsv: no data rows"),
        ("e.tsv", "", {}, r"e\.tsv: file is empty"),
        (
            "c.tsv",
            "sentence\tlabel\na\t1\n",
            {"text_column": "text"},
            r"c\.tsv: column 'text' \(text_column\) not "
            r"found; the header has \['sentence', 'label'\]",
        ),
        ("r.tsv", "text\tlabel\na\t1\nbroken row\n", {}, r"r\.tsv:3: expected at least 2 columns, got 1"),
        ("l.tsv", "text\tlabel\na\t\n", {}, r"l\.tsv:2: empty label"),
        ("j.jsonl", '{"text": "a", "label": 1}\n{"text": "b"\n', {}, r"j\.jsonl:2: not valid JSON"),
        ("k.jsonl", '{"text": "a", "label": 1}\n{"txt": "b", "label": 0}\n', {}, r"k\.jsonl:2: missing key 'text'"),
        ("f.xyz", "a\t1\n", {}, r"f\.xyz: cannot tell the format from the extension '\.xyz'"),
    ],
)
def test_bad_files_name_file_and_row(write, name, content, kw, message):
    p = write(name, content)
    with pytest.raises(TextDistillError, match=message):
        read_file(p, cfg(**kw))


def test_not_utf8_names_the_line(write):
    p = write("latin.tsv", "text\tlabel\nok\t1\ncaf\xe9\t0\n".encode("latin-1"))
    with pytest.raises(TextDistillError, match=r"latin\.tsv:3: text is not valid utf-8 \(byte 0xe9\)"):
        read_file(p, cfg())
    assert read_file(p, cfg(encoding="latin-1")).texts[1] == "café"


def test_missing_file(tmp_path):
    with pytest.raises(TextDistillError, match=r"nope\.tsv: file not found"):
        read_file(tmp_path / "nope.tsv", cfg())


def test_label_set_sorting_and_unknown_dev_label(write):
    train = TextData(["a", "b", "c"], ["10", "2", "1"], source="train.tsv", rows=[2, 3, 4])
    labels = LabelSet.from_data(train)
    assert labels.names == ("1", "2", "10")  # numeric order, not string order
    dev = TextData(["x", "y"], ["2", "7"], source="dev.tsv", rows=[2, 3])
    with pytest.raises(TextDistillError, match=r"dev\.tsv:3: label '7' is not among the training labels"):
        labels.encode(dev)


def test_label_set_from_model_config_ignores_defaults():
    class C:
        id2label = {0: "LABEL_0", 1: "LABEL_1"}

    class D:
        id2label = {"1": "pos", "0": "neg"}

    assert LabelSet.from_model_config(C()) is None
    assert LabelSet.from_model_config(D()).names == ("neg", "pos")


def test_max_samples_cut(write):
    tr = write("t.tsv", "text\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(10)))
    train, dev = load_splits(
        DataConfig(train_file=str(tr), validation_file=str(tr), max_train_samples=4, max_eval_samples=3)
    )
    assert (len(train), len(dev)) == (4, 3)
    assert train.texts == ["s0", "s1", "s2", "s3"]  # the head, as run_glue takes it, where it holds every class


def test_max_samples_on_a_file_sorted_by_label_keeps_every_class(write, capsys):
    rows = "".join(
        f"s{i}\t{c}\n" for c in "abcde" for i in range(20)
    )  # 100 rows, sorted: the first 30 hold a and b only
    tr = write("t.tsv", "text\tlabel\n" + rows)
    train, _ = load_splits(DataConfig(train_file=str(tr), validation_file=str(tr), max_train_samples=30))
    assert len(train) == 30 and set(train.labels) == set("abcde")
    assert train.rows == sorted(train.rows) and len(set(train.rows)) == 30  # file order, no row twice
    assert all(train.texts[i] == f"s{(r - 2) % 20}" for i, r in enumerate(train.rows))  # rows still name their lines
    err = capsys.readouterr().err
    assert "its first 30 rows hold 2 of its 5 classes" in err and "drawn at random" in err
    again, _ = load_splits(DataConfig(train_file=str(tr), validation_file=str(tr), max_train_samples=30))
    assert again.rows == train.rows  # a fixed seed: the same rows every run (the cache and resume rely on it)


def test_hf_dataset_object_and_saved_folder(tmp_path):
    import datasets

    feats = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    ds = datasets.Dataset.from_dict({"sentence": ["good", "bad"], "label": [1, 0]}, features=feats)
    d = from_hf_dataset(ds, cfg(text_column="sentence"), "mem")
    assert d.labels == ["pos", "neg"]
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(tmp_path / "saved")
    train, dev = load_splits(DataConfig(hf_dataset={"path": str(tmp_path / "saved")}, text_column="sentence"))
    assert train.texts == ["good", "bad"] and dev.labels == ["pos", "neg"]
    with pytest.raises(TextDistillError, match="has no split 'test'"):
        load_splits(
            DataConfig(hf_dataset={"path": str(tmp_path / "saved"), "validation_split": "test"}, text_column="sentence")
        )


def test_hf_token_dataset_reads_its_tag_scheme():
    """A token-classification split from a datasets.Dataset honours data.tag_scheme like a file does: IOB1 and
    BIOES come out as IOB2, and a tag the scheme does not allow names the row and the word."""
    import datasets

    names = ["O", "B-PER", "I-PER", "E-PER", "S-LOC", "B-LOC", "I-LOC"]
    feats = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    words = [["Ada", "Lovelace", "of", "London"], ["Paris", "now"]]

    def split(tags):
        return datasets.Dataset.from_dict(
            {"tokens": words, "tags": [[names.index(t) for t in row] for row in tags]}, features=feats
        )

    def read(tags, scheme):
        c = DataConfig(
            hf_dataset={"path": "mem"},
            text_column="tokens",
            label_column="tags",
            task_type="token_classification",
            tag_scheme=scheme,
        )
        return from_hf_dataset(split(tags), c, "mem[train]").labels

    assert read([["I-PER", "I-PER", "O", "I-LOC"], ["I-LOC", "O"]], "iob1") == [
        ["B-PER", "I-PER", "O", "B-LOC"],
        ["B-LOC", "O"],
    ]
    assert read([["B-PER", "E-PER", "O", "S-LOC"], ["S-LOC", "O"]], "bioes") == [
        ["B-PER", "I-PER", "O", "B-LOC"],
        ["B-LOC", "O"],
    ]
    assert read([["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]], "iob2") == [
        ["B-PER", "I-PER", "O", "B-LOC"],
        ["B-LOC", "O"],
    ]
    with pytest.raises(
        TextDistillError,
        match=r"^mem\[train\]: row 1: I-LOC follows a sentence start: not valid "
        r"IOB2 \(is the file IOB1",
    ):
        read([["B-PER", "I-PER", "O", "B-LOC"], ["I-LOC", "O"]], "iob2")
    with pytest.raises(
        TextDistillError,
        match=r"^mem\[train\]: row 0: tag 'E-PER' \(word 2\) is not O, B-TYPE or "
        r"I-TYPE "
        r"\(tag scheme iob2; BIOES or BMES tags\? set data.tag_scheme: bioes\)",
    ):
        read([["B-PER", "E-PER", "O", "S-LOC"], ["S-LOC", "O"]], "iob2")
    # A test split without tags (HF stores -1 for each word) is named as such, not as a tag the scheme rejects.
    unlabelled = datasets.Dataset.from_dict(
        {"tokens": words, "tags": [[-1] * 4, [-1] * 2]},
        features=datasets.Features({"tokens": feats["tokens"], "tags": datasets.Sequence(datasets.Value("int64"))}),
    )
    c = DataConfig(
        hf_dataset={"path": "mem"}, text_column="tokens", label_column="tags", task_type="token_classification"
    )
    with pytest.raises(TextDistillError, match=r"^mem\[test\]: row 0: word 1 has no tag \(-1; unlabelled split\?\)$"):
        from_hf_dataset(unlabelled, c, "mem[test]")


def test_pad_features_and_collator():
    feats = [{"input_ids": [5, 6, 7], "token_type_ids": [0, 0, 0]}, {"input_ids": [5], "token_type_ids": [0]}]
    out = pad_features(feats, pad_token_id=9)
    assert out["input_ids"].tolist() == [[5, 6, 7], [5, 9, 9]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    ds = DistillDataset(feats, [1, 0], teacher=[{"input_ids": [1, 2]}, {"input_ids": [3]}], teacher_logits=torch.eye(2))
    batch = Collator(9, 0)([ds[0], ds[1]])
    assert batch["labels"].tolist() == [1, 0]
    assert batch["teacher"]["input_ids"].tolist() == [[1, 2], [3, 0]]
    assert batch["teacher_logits"].tolist() == [[1, 0], [0, 1]]


def test_pad_features_matches_row_by_row_padding():
    rng = random.Random(0)
    feats = []
    for _ in range(64):
        n = rng.randint(1, 40)
        feats.append(
            {
                "input_ids": [rng.randint(1, 30000) for _ in range(n)],
                "token_type_ids": [rng.randint(0, 1) for _ in range(n)],
            }
        )
    out = pad_features(feats, pad_token_id=3)
    longest = max(len(f["input_ids"]) for f in feats)
    assert list(out) == ["input_ids", "token_type_ids", "attention_mask"]
    for key, pad in (("input_ids", 3), ("token_type_ids", 0)):
        assert out[key].dtype == torch.long
        assert out[key].tolist() == [f[key] + [pad] * (longest - len(f[key])) for f in feats]
    assert out["attention_mask"].tolist() == [
        [1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"])) for f in feats
    ]


def test_length_grouped_batches_have_less_padding_and_cover_everything():
    torch.manual_seed(0)
    lengths = torch.randint(1, 60, (512,)).tolist()
    ds = DistillDataset([{"input_ids": [1] * n} for n in lengths], [0] * 512)

    def padding(group: bool) -> tuple[int, int]:
        loader = train_loader(ds, Collator(0), 16, group, seed=1)
        pad = seen = 0
        for b in loader:
            m = b["student"]["attention_mask"]
            pad += (m == 0).sum().item()
            seen += m.shape[0]
        return pad, seen

    grouped, plain = padding(True), padding(False)
    assert grouped[1] == plain[1] == 512
    assert grouped[0] < plain[0] / 3


def test_jsonl_regression_scores_may_be_json_numbers(write) -> None:
    from textdistill.config import DataConfig
    from textdistill.data import LabelSet, read_file

    path = write("s.jsonl", '{"text": "a", "label": 4.5}\n{"text": "b", "label": 2}\n{"text": "c", "label": "3.25"}\n')
    cfg = DataConfig(task_type="regression", train_file=str(path), validation_file=str(path))
    assert LabelSet.for_regression().encode(read_file(path, cfg)) == [4.5, 2.0, 3.25]
    with pytest.raises(TextDistillError, match=r"s.jsonl:1: 'label' must be a string or integer, got float"):
        read_file(path, DataConfig(train_file=str(path), validation_file=str(path)))  # class names are not 4.5


# --------------------------------------------------------------------------------------------------------------------
# Delimited files read exactly or refused (field counts, duplicate columns, label spellings, BOMs, data.delimiter)


@pytest.mark.parametrize(
    "name, content, kw, message",
    [
        # an unquoted delimiter in a text: the extra field became the label, or (label first) the text was cut
        (
            "a.tsv",
            "text\tlabel\nok\t1\nslow\tand dull\t0\n",
            {},
            r"^\S*a\.tsv:3: 3 fields where the header has 2 \(text, label\); a tab inside a text\? tsv fields are "
            r"never quoted",
        ),
        (
            "b.csv",
            "label,text\n1,fine\n0,slow, dull, and long\n",
            {},
            r"^\S*b\.csv:3: 4 fields where the header has 2 \(label, text\); an unquoted ',' inside a text\? put that "
            r"text in double quotes$",
        ),
        (
            "c.tsv",
            "text\tlabel\tsource\nok\t1\tweb\nbad\t0\n",
            {},
            r"c\.tsv:3: 2 fields where the header has 3 "
            r"\(text, label, source\); a field missing",
        ),
        (
            "d.tsv",
            "s\t1\t\tok .\ns\t0\t*\tbad\t.\n",
            {"has_header": False, "text_column": 3, "label_column": 1},
            r"d\.tsv:2: 5 fields where line 1 has 4 \(data\.has_header: false\)",
        ),
        (
            "e.csv",
            "text,text,label\na,b,1\n",
            {},
            r"e\.csv:1: the header names column 'text' twice \(columns 1 and "
            r"2\); give each column its own name",
        ),
        (
            "f.tsv",
            "label\ttext\tx\tlabel\n1\ta\tb\t0\n",
            {},
            r"f\.tsv:1: the header names column 'label' twice "
            r"\(columns 1 and 4\)",
        ),
        (
            "g.csv",
            'text,label\n"quoted" then not,1\n',
            {},
            r"g\.csv:2: cannot split the row into columns \(',' expected after '\"'\); text "
            r"after a closing quote",
        ),
        (
            "h.csv",
            'text,label\nok,1\n"never closed,0\nx,1\n',
            {},
            r"h\.csv:3: cannot split the row into columns \(unexpected end of data\); "
            r"an unclosed quote\?",
        ),
        (
            "i.jsonl",
            '{"text": "a", "label": 1, "label": 2}\n',
            {},
            r"i\.jsonl:1: the object gives the key 'label' twice",
        ),
        (
            "j.csv",
            "text;label\na;1\n",
            {"format": "csv", "text_column": "text", "label_column": "label"},
            r"j\.csv: column 'text' \(text_column\) not found; the header has \['text;label'\]",
        ),
        ("k.jsonl", '{"text": "a", "label": 1}\n', {"delimiter": ";"}, r"k\.jsonl: a JSONL file has no delimiter"),
    ],
)
def test_rows_that_would_be_misread_are_refused(write, name, content, kw, message):
    p = write(name, content)
    with pytest.raises(TextDistillError, match=message):
        read_file(p, cfg(**kw))


def test_a_multi_line_csv_record_counts_from_its_first_line(write):
    p = write("m.csv", 'text,label\n"two\nlines",1\n"one, quoted ""x""",0\n')
    d = read_file(p, cfg())
    assert d.texts == ["two\nlines", 'one, quoted "x"'] and d.rows == [2, 4]


@pytest.mark.parametrize("delimiter, fmt", [(";", "csv"), ("|", "csv"), ("|", "tsv"), ("\t", "csv"), (",", "tsv")])
def test_data_delimiter_reads_other_separators(write, delimiter, fmt):
    rows = [["text", "label"], ["a film", "1"], ['said "hi"', "0"]]
    p = write(f"x.{fmt}", "".join(delimiter.join(r) + "\n" for r in rows))
    d = read_file(p, cfg(format=fmt, delimiter=delimiter))
    assert d.texts == ["a film", 'said "hi"'] and d.labels == ["1", "0"]
    if fmt == "csv":  # a quoted field may hold the delimiter
        q = write("q.csv", f'text{delimiter}label\n"a{delimiter} b"{delimiter}1\n')
        assert read_file(q, cfg(format="csv", delimiter=delimiter)).texts == [f"a{delimiter} b"]
    else:  # tsv never quotes: the delimiter inside a text is a field too many
        q = write("q.tsv", f'text{delimiter}label\n"a{delimiter} b"{delimiter}1\n')
        with pytest.raises(TextDistillError, match=r"q\.tsv:2: 3 fields where the header has 2"):
            read_file(q, cfg(format="tsv", delimiter=delimiter))


def test_data_delimiter_is_one_character_and_for_delimited_files():
    from pydantic import ValidationError

    for bad in ("", ";;", '"', "\n"):
        with pytest.raises(ValidationError, match="delimiter"):
            cfg(delimiter=bad)
    with pytest.raises(
        ValidationError, match="delimiter: separates the fields of tsv and csv files, not of format: jsonl"
    ):
        cfg(format="jsonl", delimiter=";")


@pytest.mark.parametrize("encoding", ["utf-8", "utf8", "u8", "UTF-8-sig", "UTF8", "utf_8", "U8"])
def test_a_bom_is_dropped_for_any_spelling_of_utf8(write, encoding):
    p = write("bom.tsv", b"\xef\xbb\xbftext\tlabel\ncaf\xc3\xa9\t1\n")
    d = read_file(p, cfg(encoding=encoding))
    assert d.texts == ["café"]
    from textdistill.ner import read_conll

    c = write("bom.conll", b"\xef\xbb\xbfParis B-LOC\nnow O\n")
    assert read_conll(c, "iob2", encoding=encoding).sentences[0].tokens == ["Paris", "now"]


def test_a_byte_order_mark_in_another_encoding_is_refused(write):
    p = write("b.tsv", b"\xef\xbb\xbftext\tlabel\nok\t1\n")
    with pytest.raises(
        TextDistillError,
        match=r"b\.tsv:1: the file starts with a UTF-8 byte-order mark but "
        r"data\.encoding is 'latin-1'; set data\.encoding: utf-8",
    ):
        read_file(p, cfg(encoding="latin-1"))
    u = write("u.csv", "text,label\nok,1\n".encode("utf-16"))
    with pytest.raises(
        TextDistillError,
        match=r"u\.csv:1: the file starts with a UTF-16 byte-order mark but "
        r"data\.encoding is 'cp1252'",
    ):
        read_file(u, cfg(encoding="cp1252"))
    assert read_file(u, cfg(encoding="utf-16")).texts == ["ok"]
    le = write("le.csv", "\ufefftext,label\nok,1\n".encode("utf-16-le"))  # the mark decodes as U+FEFF: dropped too
    assert read_file(le, cfg(encoding="utf-16-le")).texts == ["ok"]


def test_jsonl_lines_end_at_line_breaks_only(write):
    p = write("u.jsonl", '{"text": "a\u2028b\x85c", "label": 1}\r\n{"text": "d", "label": 0}\n')
    d = read_file(p, cfg())
    assert d.texts == ["a\u2028b\x85c", "d"] and d.rows == [1, 2]


@pytest.mark.parametrize(
    "content, kw, message",
    [
        (
            "text\tlabel\na\tpos\nb\tneg\nc\tPos\n",
            {},
            r"x\.tsv:4: label 'Pos' differs only in case/spacing from "
            r"'pos' \(line 2\); make them one spelling or map them with "
            r"data\.label_map$",
        ),
        (
            "text\tlabel\na\t1\nb\t0\nc\t1.0\n",
            {},
            r"x\.tsv:4: label '1\.0' differs only in numeric spelling from '1' "
            r"\(line 2\)",
        ),
        ("text\tlabel\na\t1\nb\t0\nc\t+01\n", {}, r"x\.tsv:4: label '\+01' differs only in numeric spelling from '1'"),
        (
            "label\ttext\n1\ta\n0\tb\n\ufeff1\tc\n",
            {},
            r"x\.tsv:4: label '\\ufeff1' differs only in case/spacing from "
            r"'1' \(line 2\)",
        ),
        (
            "text\tlabel\na\tpos\nb\tpos\u200b\n",
            {},
            r"x\.tsv:3: label 'pos\\u200b' differs only in case/spacing from "
            r"'pos'",
        ),
        (
            "text\tlabel\na\tx,Y\nb\ty\n",
            {"task_type": "multi_label"},
            r"x\.tsv:3: label 'y' differs only in "
            r"case/spacing from 'Y' \(line 2\)",
        ),
        (
            "text\tlabel\na\tgood\nb\tpos\n",
            {"label_map": {"good": "Pos"}},
            r"x\.tsv:3: label 'pos' differs only in case/spacing from 'Pos' \(line 2, as data\.label_map spells it\)",
        ),
    ],
)
def test_two_spellings_of_one_label_are_refused(write, content, kw, message):
    p = write("x.tsv", content)
    with pytest.raises(TextDistillError, match=message):
        read_file(p, cfg(**kw))


def test_label_spellings_are_checked_across_train_dev_and_test(write):
    tr = write("train.tsv", "text\tlabel\na\tpos\nb\tneg\n")
    dev = write("dev.tsv", "text\tlabel\nc\tneg\nd\tPOS\n")
    test = write("test.tsv", "text\tlabel\ne\tNeg\n")
    ok = write("ok.tsv", "text\tlabel\nc\tneg\nd\tpos\n")
    with pytest.raises(
        TextDistillError,
        match=r"dev\.tsv:3: label 'POS' differs only in case/spacing from 'pos' "
        r"\(\S*train\.tsv:2\)",
    ):
        load_splits(DataConfig(train_file=str(tr), validation_file=str(dev)))
    with pytest.raises(
        TextDistillError,
        match=r"test\.tsv:2: label 'Neg' differs only in case/spacing from 'neg' "
        r"\(\S*train\.tsv:3\)",
    ):
        load_splits(DataConfig(train_file=str(tr), validation_file=str(ok), test_file=str(test)))
    # data.label_map makes them one label on purpose, in every split (and load_test applies it too)
    c = DataConfig(
        train_file=str(tr), validation_file=str(dev), test_file=str(test), label_map={"POS": "pos", "Neg": "neg"}
    )
    train, d = load_splits(c)
    assert set(train.labels) == {"pos", "neg"} and d.labels == ["neg", "pos"] and load_test(c).labels == ["neg"]
    # a key that is no label anywhere (a typo) is an error, naming the files
    with pytest.raises(
        TextDistillError,
        match=r"^data\.label_map: 'Positive' is not a label of \S*train\.tsv, "
        r"\S*ok\.tsv; their labels are \['neg', 'pos'\]$",
    ):
        load_splits(DataConfig(train_file=str(tr), validation_file=str(ok), label_map={"Positive": "pos"}))
    # a swap is read once, not chained
    swapped, _ = load_splits(
        DataConfig(train_file=str(tr), validation_file=str(ok), label_map={"pos": "neg", "neg": "pos"})
    )
    assert swapped.labels == ["neg", "pos"]


def test_label_map_renames_to_a_teachers_names_and_numbers_become_text(write):
    p = write("n.tsv", "text\tlabel\na\t0\nb\t1\n")
    c = cfg(label_map={0: "NEGATIVE", 1: "POSITIVE"})
    assert c.label_map == {"0": "NEGATIVE", "1": "POSITIVE"}
    assert read_file(p, c).labels == ["NEGATIVE", "POSITIVE"]


def test_label_map_settings_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="a value must be a label name"):
        cfg(label_map={"a": ["b"]})
    with pytest.raises(ValidationError, match="a key must be a label name"):
        cfg(label_map={True: "b"})
    with pytest.raises(ValidationError, match="an empty label name"):
        cfg(label_map={"a": " "})
    with pytest.raises(ValidationError, match="'1' is mapped twice"):
        cfg(label_map={1: "a", "1": "b"})
    with pytest.raises(
        ValidationError,
        match="label_map: renames classification and multi_label labels, not those of task_type: regression",
    ):
        cfg(task_type="regression", label_map={"a": "b"})


def test_scores_and_tags_are_not_label_spellings(write, tmp_path):
    # regression: numbers are values (4 and 4.000 are one score)
    p = write("s.tsv", "text\tlabel\na\t4\nb\t4.000\nc\t1.5\n")
    assert read_file(p, cfg(task_type="regression")).labels == ["4", "4.000", "1.5"]
    # read as classes by mistake, fractions mark them as scores: no spelling error pre-empts the task-type checks
    assert read_file(p, cfg()).labels == ["4", "4.000", "1.5"]
    conll = write("t.conll", "Paris B-LOC\nnow O\n\nparis B-LOC\n")
    d = read_file(conll, cfg(format="conll", task_type="token_classification"))
    assert d.labels == [["B-LOC", "O"], ["B-LOC"]]


def test_surrounding_whitespace_of_labels_is_dropped_alike_in_every_reader(write):
    import datasets

    t = write("w.csv", 'text,label\na, pos\nb,"pos "\nc,neg\n')
    assert read_file(t, cfg()).labels == ["pos", "pos", "neg"]
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [" pos", "pos", "Pos"]})
    with pytest.raises(
        TextDistillError,
        match=r"mem:2: label 'Pos' differs only in case/spacing from 'pos' "
        r"\(line 0\)",
    ):
        from_hf_dataset(ds, cfg(), "mem")
    assert from_hf_dataset(ds, cfg(label_map={"Pos": "pos"}), "mem").labels == ["pos", "pos", "pos"]


def test_huge_values_are_cut_in_messages(write):
    long = "x" * 5000
    p = write("h.tsv", f"text\tlabel\t{long}\nok\t1\n")
    with pytest.raises(TextDistillError) as exc:
        read_file(p, cfg())
    assert len(str(exc.value)) < 400 and "2 fields where the header has 3" in str(exc.value)
    q = write("l.tsv", f"text\tlabel\na\t{long}\nb\t{long.upper()}\n")
    with pytest.raises(TextDistillError) as exc:
        read_file(q, cfg())
    assert len(str(exc.value)) < 400 and "differs only in case/spacing" in str(exc.value)
    train = TextData(["a"] * 100, [f"label{i}" * 20 for i in range(100)], source="t", rows=list(range(100)))
    with pytest.raises(TextDistillError) as exc:
        LabelSet.from_data(train).encode(TextData(["z"], ["nope"], source="d", rows=[1]))
    assert len(str(exc.value)) < 1500 and "(100 in all)" in str(exc.value)


# --------------------------------------------------------------------------------------------------------------------
# Zero-config reading: the delimiter, the header row and the columns detected where the config leaves them unset

REVIEWS = [
    "a gorgeous, witty film",
    "dull and far too long",
    "the best thing this year",
    "i walked out after an hour",
    "warm, funny and wise",
    "a mess from start to end",
    "sharp writing; great cast",
    "nothing works here",
]
VERDICTS = ["pos", "neg", "pos", "neg", "pos", "neg", "pos", "neg"]
MORE = REVIEWS + [t + ", once more" for t in REVIEWS]  # sixteen distinct texts


def _table(header, rows, delimiter, quoted=True) -> str:
    import csv
    import io

    out = io.StringIO()
    if quoted:
        w = csv.writer(out, delimiter=delimiter, lineterminator="\n")
        for r in ([header] if header else []) + rows:
            w.writerow(r)
        return out.getvalue()
    return "".join(delimiter.join(r) + "\n" for r in ([header] if header else []) + rows)


def _two(write, name, content, **kw):
    """load_splits of a file given as train and validation split: (train, config)."""
    p = write(name, content)
    c = cfg(train_file=str(p), validation_file=str(p), **kw)
    return load_splits(c)[0], c


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
@pytest.mark.parametrize("ext", ["csv", "txt", "tsv"])
def test_each_delimiter_is_detected(write, capsys, delimiter, ext):
    quoted = ext == "csv" or (ext == "txt" and delimiter != "\t")
    rows = [[t, v] for t, v in zip(REVIEWS, VERDICTS)]
    if not quoted:  # tsv fields are never quoted: no delimiter inside a text
        rows = [[t.replace(delimiter, " "), v] for t, v in rows]
    train, c = _two(write, f"reviews.{ext}", _table(["review", "sentiment"], rows, delimiter, quoted))
    assert train.texts == [r[0] for r in rows] and train.labels == VERDICTS
    layout = data_layout(c)
    assert (layout.text_column, layout.label_column, layout.has_header) == ("review", "sentiment", True)
    err = capsys.readouterr().err.splitlines()
    sep = "tab" if delimiter == "\t" else repr(delimiter)
    assert err == [
        f"data: {c.train_file}: delimiter {sep}, header row, text column 'review', label column "
        f"'sentiment' (2 classes) "
        "(detected; set data.delimiter / data.has_header / data.text_column / data.label_column to choose)"
    ]


def test_quotes_are_respected_when_the_delimiter_is_detected(write):
    # every text holds commas inside quotes: only ';' splits every row into two fields
    content = 'review;sentiment\n"fine, fun, short";pos\n"slow, dull";neg\n"a, b, c, d";pos\n"x, y";neg\n'
    train, c = _two(write, "q.csv", content)
    assert train.texts[0] == "fine, fun, short" and data_layout(c).delimiter == ";"


def test_the_old_default_layout_reads_as_before_and_silently(write, capsys):
    train, c = _two(
        write,
        "t.tsv",
        "text\tlabel\tsentence\tcategory\n" + "".join(f"s{i} x\t{i % 2}\tother {i}\tc{i % 3}\n" for i in range(6)),
    )
    assert train.texts[0] == "s0 x" and train.labels[:2] == ["0", "1"] and train.pairs is None
    assert capsys.readouterr().err == ""
    # "text" and "label" win over other common names; a pair-named column is not read beside "text" (as before)
    train, _ = _two(write, "h.tsv", "label\ttext\thypothesis\n1\ta\tb\n0\tc\td\n")
    assert (train.texts, train.labels, train.pairs) == (["a", "c"], ["1", "0"], None)


@pytest.mark.parametrize(
    "content, expected",
    [
        # headerless: a number in line 1, or line 1's label recurring below, make it data
        ("a gorgeous film\t1\ndull\t0\nfine\t1\nbad\t0\n", (["a gorgeous film", "dull", "fine", "bad"], 1, 0)),
        ("great fun,pos\nawful,neg\nsuperb,pos\nflat,neg\n", (["great fun", "awful", "superb", "flat"], 1, 0)),
        # a header without common names: over a column of numbers, or over labels that each recur
        (
            "phrase|verdict|n\n" + "".join(f"{t}|{v}|{i}\n" for i, (t, v) in enumerate(zip(MORE, VERDICTS * 2))),
            (MORE, "verdict", "phrase"),
        ),
        (
            "phrase|verdict\n"
            + "".join(f"{t}|{v}\n" for t, v in zip(MORE + [t + " too" for t in MORE], ["yes", "no"] * 16)),
            (MORE + [t + " too" for t in MORE], "verdict", "phrase"),
        ),
    ],
)
def test_header_row_or_not(write, content, expected):
    texts, label, text = expected
    train, c = _two(write, "f.txt", content)
    layout = data_layout(c)
    assert train.texts == texts
    assert (layout.label_column, layout.text_column, layout.has_header) == (label, text, isinstance(label, str))


def test_columns_by_content_label_first_and_an_id_column(write):
    rows = [[str(100 + i), v, t] for i, (t, v) in enumerate(zip(MORE, VERDICTS * 2))]
    train, c = _two(write, "x.csv", _table(None, rows, ","))
    assert (train.texts, train.labels) == (MORE, VERDICTS * 2)
    assert (data_layout(c).text_column, data_layout(c).label_column, data_layout(c).has_header) == (2, 1, False)
    # in a file of fewer than ten rows, a column of numbers (all distinct) may be classes not yet recurring
    with pytest.raises(
        TextDistillError,
        match=r"y\.csv: cannot tell the label column from columns 0 and 1 \(both "
        r"could be labels: "
        r"8 and 2 distinct values\); set data\.label_column$",
    ):
        _two(write, "y.csv", _table(None, rows[:8], ","))


def test_columns_by_name_win_over_content(write):
    # 'utterance' is shorter than 'notes', but named: it is the text
    rows = [["x" * 80, t, v] for t, v in zip(REVIEWS, ["book", "play", "book", "play", "book", "play", "book", "play"])]
    train, c = _two(write, "n.csv", _table(["notes", "utterance", "intent"], rows, ","))
    assert train.texts == REVIEWS and train.labels[0] == "book"


def test_pairs_are_detected_by_name_only(write):
    rows = [[a, b, v] for a, b, v in zip(REVIEWS, reversed(REVIEWS), VERDICTS)]
    train, c = _two(write, "p.tsv", _table(["sentence1", "sentence2", "label"], rows, "\t", False))
    assert train.pairs == list(reversed(REVIEWS)) and data_layout(c).text_pair_column == "sentence2"
    quality = [[str(int(v == "pos")), a, b] for a, b, v in rows]  # MRPC's layout
    train, c = _two(write, "m.tsv", _table(["Quality", "#1 String", "#2 String"], quality, "\t", False))
    assert (train.texts, train.pairs, train.labels) == (REVIEWS, list(reversed(REVIEWS)), [q[0] for q in quality])
    train, c = _two(
        write,
        "q.tsv",
        _table(["index", "question", "sentence", "label"], [[str(i)] + r for i, r in enumerate(rows)], "\t", False),
    )
    assert (train.texts, train.pairs) == (REVIEWS, list(reversed(REVIEWS)))
    # two long texts under names that say nothing: never guessed as a pair
    with pytest.raises(
        TextDistillError,
        match=r"u\.tsv: cannot tell the text column from 'left', 'right' \(both "
        r"long texts: 22 and 22 "
        r"characters on average\); set data\.text_column$",
    ):
        _two(write, "u.tsv", _table(["left", "right", "label"], rows, "\t", False))
    # given the text column, no pair is detected beside it
    train, _ = _two(
        write, "g.tsv", _table(["sentence1", "sentence2", "label"], rows, "\t", False), text_column="sentence1"
    )
    assert train.pairs is None


def test_regression_takes_the_column_of_scores(write):
    rows = [[str(i), t, f"{i * 0.37:.2f}"] for i, t in enumerate(REVIEWS)]
    train, c = _two(write, "s.csv", _table(None, rows, ","), task_type="regression")
    assert train.texts == REVIEWS and data_layout(c).label_column == 2


def test_jsonl_keys_by_name(write):
    p = write(
        "j.jsonl",
        "".join(
            json.dumps({"id": i, "sentence": t, "sentiment": v}) + "\n"
            for i, (t, v) in enumerate(zip(REVIEWS, VERDICTS))
        ),
    )
    d = read_file(p, cfg())
    assert (d.texts, d.labels) == (REVIEWS, VERDICTS)
    q = write("k.jsonl", '{"txt": "a", "label": 1}\n')
    with pytest.raises(
        TextDistillError,
        match=r"k\.jsonl:1: missing key 'text' \(text_column\); keys are \['label', "
        r"'txt'\]",
    ):
        read_file(q, cfg())


R = [[t, v] for t, v in zip(REVIEWS, VERDICTS)]


@pytest.mark.parametrize(
    "name, content, kw, message",
    [
        (
            "d.txt",
            "a,b;c\n" * 6,
            {},
            r"d\.txt: cannot tell the delimiter \(',' and ';' both split every row evenly: "
            r"',' 2 and ';' 2 "
            r"fields\); set data\.delimiter$",
        ),
        (
            "u.txt",
            "text;label\na;1\nb;c;0\nd;1\n",
            {},
            r"u\.txt: cannot tell the delimiter: none of ',', ';', tab, "
            r"'\|' splits the first 50 "
            r"rows evenly \(';' gives 2 to 3 fields per row\); set "
            r"data\.delimiter$",
        ),
        (
            "o.csv",
            "text\nhello\nworld\n",
            {},
            r"o\.csv: one column only: none of ',', ';', tab, '\|' splits line 1 "
            r"into fields; a data "
            r"file needs a text column and a label column \(set data\.delimiter if "
            r"another character",
        ),
        ("o.tsv", "text\nhello\nworld\n", {"format": "tsv"}, r"o\.tsv: one column only: tab splits no row into fields"),
        (
            "l.csv",
            _table(None, [r + [s] for r, s in zip(R, "abababab")], ","),
            {},
            r"l\.csv: cannot tell the label column from columns 1 and 2 \(both could be labels: 2 and 2 distinct "
            r"values\); set data\.label_column$",
        ),
        (
            "n.csv",
            _table(None, [[t, str(i)] for i, (t, _) in enumerate(R)], ","),
            {},
            r"n\.csv: no column whose values repeat \(a label column holds a few short values, each on many "
            r"rows\); set data\.label_column$",
        ),
        # where detection fails on rows that the delimiter splits unevenly, the first such row is the error
        (
            "w.csv",
            "".join(f"{t},{v}\n" for t, v in R),
            {},
            r"w\.csv:2: 2 fields where line 1 has 3; a field missing, "
            r"or a line break "
            r"inside an unquoted text\? put that text in double quotes$",
        ),
        (
            "t.tsv",
            "review\tcomment\tlabel\na\tb\t1\n",
            {},
            r"t\.tsv: cannot tell the text column from 'review', "
            r"'comment' \(both text "
            r"names\); set data\.text_column$",
        ),
        (
            "c.tsv",
            "text\tcategory\tintent\na\tb\t1\n",
            {},
            r"c\.tsv: cannot tell the label column from 'category', "
            r"'intent' \(both label "
            r"names\); set data\.label_column$",
        ),
        (
            "p.tsv",
            "sentence1\ttext_b\thypothesis\tlabel\na\tb\tc\t1\n",
            {},
            r"p\.tsv: cannot tell the pair column from 'text_b', 'hypothesis' \(both second-text names\); set "
            r"data\.text_pair_column$",
        ),
        (
            "s.tsv",
            "text\tscore\n" + "".join(f"t{i}\t{i / 7:.3f}\n" for i in range(30)),
            {},
            r"s\.tsv: the label column 'score' holds scores \(30 distinct numbers, e\.g\. '0\.143'\), not classes; set "
            r"data\.task_type: "
            r"regression \(or data\.label_column\)$",
        ),
        (
            "h.txt",
            "good one|yes\nbad one|no\nok one|maybe\n",
            {"label_column": 1},
            r"h\.txt: cannot tell whether line 1 \(good one, yes\) is a header row; set data\.has_header$",
        ),
        # names over labels that recur: a header only with twenty rows or more below it (else a class may yet recur)
        (
            "k.txt",
            "phrase|verdict\n" + "".join(f"{t}|{v}\n" for t, v in R),
            {},
            r"k\.txt: cannot tell whether line 1 \(phrase, verdict\) is a header row; set data\.has_header$",
        ),
        ("x.xyz", "text\tlabel\n", {}, r"x\.xyz: cannot tell the format from the extension '\.xyz'; set data\.format"),
    ],
)
def test_guesses_that_are_not_safe_are_refused(write, name, content, kw, message):
    p = write(name, content)
    with pytest.raises(TextDistillError, match=message) as exc:
        read_file(p, cfg(**kw))
    assert str(exc.value).startswith(str(p)) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "dev, message",
    [
        (
            "a gorgeous film,pos\ndull,neg\n",
            r"dev\.csv: laid out differently from \S*train\.csv: no column 'review' \(the text "
            r"column "
            r"detected there\); its line 1 has \['a gorgeous film', 'pos'\]; give "
            r"both files the same "
            r"header \(or set data\.text_column\)$",
        ),
        ("text,sentiment\nfine,pos\n", r"dev\.csv: laid out differently from \S*train\.csv: no column 'review'"),
    ],
)
def test_dev_must_be_laid_out_as_train(write, dev, message):
    t = write("train.csv", _table(["review", "sentiment"], R, ","))
    d = write("dev.csv", dev)
    with pytest.raises(TextDistillError, match=message):
        load_splits(cfg(train_file=str(t), validation_file=str(d)))


def test_headerless_dev_must_be_headerless_and_as_wide(write):
    t = write("train.tsv", "".join(f"src\t{v}\t{r}\n" for r, v in zip(REVIEWS, VERDICTS)))
    d = write("dev.tsv", "source\tlabel\ttext\nsrc\tpos\tfine\n")
    with pytest.raises(
        TextDistillError,
        match=r"dev\.tsv: laid out differently from \S*train\.tsv: line 1 looks "
        r"like a header row "
        r"\(source, label, text\) but the training file has none; give both "
        r"files a header row "
        r"or neither \(or set data\.has_header\)$",
    ):
        load_splits(cfg(train_file=str(t), validation_file=str(d), label_column=1))
    d = write("dev2.tsv", "pos\tfine\nneg\tbad\n")
    with pytest.raises(
        TextDistillError,
        match=r"dev2\.tsv: laid out differently from \S*train\.tsv: 2 fields in "
        r"line 1 here, 3 there "
        r"\(no header row: columns are taken by position\)",
    ):
        load_splits(cfg(train_file=str(t), validation_file=str(d), label_column=1))


def test_dev_and_test_follow_train_and_each_file_gets_a_line(write, capsys):
    t = write("train.csv", _table(["id", "review", "sentiment"], [[str(i)] + r for i, r in enumerate(R)], ","))
    d = write("dev.csv", "sentiment,review\npos,fine\nneg,bad\n")  # other order and no id: read by name
    e = write("test.tsv", "review\tsentiment\tid\nok\tpos\t1\n")  # other delimiter (its extension's)
    c = cfg(train_file=str(t), validation_file=str(d), test_file=str(e))
    train, dev = load_splits(c)
    assert dev.texts == ["fine", "bad"] and dev.labels == ["pos", "neg"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and err[1] == (
        f"data: {d}: delimiter ',', header row, text column 'review', label column 'sentiment' (as {t})"
    )
    assert err[2].startswith(f"data: {e}: delimiter tab, header row")
    test = load_test(c)
    assert test is not None and test.texts == ["ok"] and capsys.readouterr().err == ""


def test_columns_given_by_index_over_a_detected_header(write):
    t = write("train.csv", _table(["n", "phrase", "verdict"], [[str(i)] + r for i, r in enumerate(R)], ","))
    d = write("dev.csv", "n,phrase,verdict\n1,fine,pos\n")
    train, dev = load_splits(cfg(train_file=str(t), validation_file=str(d), text_column=1, label_column=2))
    assert train.texts == REVIEWS and dev.texts == ["fine"]  # line 1 is a header (names over a column of numbers)


def test_data_layout_writes_the_detected_settings_in(write):
    t = write("train.txt", "".join(f"{v}|{r}\n" for r, v in zip(REVIEWS, VERDICTS)))
    c = data_layout(cfg(train_file=str(t), validation_file=str(t)))
    assert (c.delimiter, c.has_header, c.text_column, c.label_column, c.text_pair_column) == ("|", False, 1, 0, None)
    assert load_splits(c)[0].texts == REVIEWS  # the written-in config reads the same rows


def test_read_texts_small_files(write):
    cfg0 = cfg()
    p = write("u.csv", _table(["id", "review", "sentiment"], [[str(i)] + r for i, r in enumerate(R)], ","))
    texts, pairs, lines = read_texts(p, cfg0)
    assert texts == REVIEWS and pairs is None and lines == list(range(2, 10))
    assert read_texts(p, cfg0, limit=3) == (REVIEWS[:3], None, [2, 3, 4])
    one = write("one.tsv", "text\n" + "\n".join(REVIEWS) + "\n")  # one column, named: its header
    assert read_texts(one, cfg0)[0] == REVIEWS
    bare = write("bare.txt", "\n".join(REVIEWS) + "\n\n")  # one text per line, commas and ';' inside
    assert read_texts(bare, cfg0) == (REVIEWS, None, list(range(1, 9)))
    pair = write("pairs.tsv", "sentence1\tsentence2\tlabel\na\tb\t1\nc\td\t0\n")
    assert read_texts(pair, cfg0)[:2] == (["a", "c"], ["b", "d"])
    assert read_texts(pair, cfg0, text_column="sentence2")[:2] == (["b", "d"], None)
    j = write("u.jsonl", '{"sentence": "a", "x": 1}\n{"sentence": "b", "x": 2}\n')
    assert read_texts(j, cfg0) == (["a", "b"], None, [1, 2])
    bad = write("bad.csv", "id,review\n1,fine\n2,slow, dull\n")
    with pytest.raises(
        TextDistillError,
        match=r"bad\.csv:3: 3 fields where the header has 2 \(id, review\); an "
        r"unquoted ','",
    ):
        read_texts(bad, cfg0)
    with pytest.raises(TextDistillError, match=r"u\.csv: column 'nope' \(text_column\) not found"):
        read_texts(p, cfg0, text_column="nope")
    # every line split evenly by its one comma: two parts of text, neither explained as a label or an id: refused
    halves = write(
        "halves.txt", "".join(f"Paris, the capital of France, part {i}\n".replace(", part", " part") for i in range(60))
    )
    with pytest.raises(
        TextDistillError,
        match=r"halves\.txt: cannot tell the text column from columns 0 and 1 "
        r"\(both hold text\); "
        r"set data\.text_column \(or data\.delimiter, for a file of one text "
        r"per line\)$",
    ):
        read_texts(halves, cfg0)
    assert read_texts(halves, cfg(format="tsv"))[0][0] == "Paris, the capital of France part 0"


def test_read_texts_of_real_sst2(sst2_dir):
    texts, pairs, lines = read_texts(sst2_dir / "train.tsv", cfg())
    assert len(texts) == 67349 and pairs is None and lines[:2] == [2, 3]
    assert texts[0] == "hide new secretions from the parental units"
