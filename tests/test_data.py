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
    from_hf_dataset,
    load_splits,
    pad_features,
    read_file,
    train_loader,
)
from textdistill.errors import TextDistillError


def cfg(**kw) -> DataConfig:
    kw.setdefault("train_file", "x")
    kw.setdefault("validation_file", "x")
    return DataConfig(**kw)


def test_tsv_keeps_quotes_and_rows(write):
    p = write("a.tsv", 'text\tlabel\nit \'s "great\t1\n\nbad film\t0\n')
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
        ("c.tsv", "sentence\tlabel\na\t1\n", {}, r"c\.tsv: column 'text' \(text_column\) not found; the header has \['sentence', 'label'\]"),
        ("r.tsv", "text\tlabel\na\t1\nbroken row\n", {}, r"r\.tsv:3: expected at least 2 columns, got 1"),
        ("l.tsv", "text\tlabel\na\t\n", {}, r"l\.tsv:2: empty label"),
        ("j.jsonl", '{"text": "a", "label": 1}\n{"text": "b"\n', {}, r"j\.jsonl:2: not valid JSON"),
        ("k.jsonl", '{"text": "a", "label": 1}\n{"txt": "b", "label": 0}\n', {}, r"k\.jsonl:2: missing key 'text'"),
        ("f.txt", "a\t1\n", {}, r"f\.txt: cannot tell the format"),
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
    train, dev = load_splits(DataConfig(train_file=str(tr), validation_file=str(tr), max_train_samples=4, max_eval_samples=3))
    assert (len(train), len(dev)) == (4, 3)


def test_hf_dataset_object_and_saved_folder(tmp_path):
    import datasets

    feats = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"sentence": ["good", "bad"], "label": [1, 0]}, features=feats)
    d = from_hf_dataset(ds, cfg(text_column="sentence"), "mem")
    assert d.labels == ["pos", "neg"]
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(tmp_path / "saved")
    train, dev = load_splits(DataConfig(hf_dataset={"path": str(tmp_path / "saved")}, text_column="sentence"))
    assert train.texts == ["good", "bad"] and dev.labels == ["pos", "neg"]
    with pytest.raises(TextDistillError, match="has no split 'test'"):
        load_splits(DataConfig(hf_dataset={"path": str(tmp_path / "saved"), "validation_split": "test"}, text_column="sentence"))


def test_hf_token_dataset_reads_its_tag_scheme():
    """A token-classification split from a datasets.Dataset honours data.tag_scheme like a file does: IOB1 and
    BIOES come out as IOB2, and a tag the scheme does not allow names the row and the word."""
    import datasets

    names = ["O", "B-PER", "I-PER", "E-PER", "S-LOC", "B-LOC", "I-LOC"]
    feats = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                               "tags": datasets.Sequence(datasets.ClassLabel(names=names))})  # fmt: skip
    words = [["Ada", "Lovelace", "of", "London"], ["Paris", "now"]]

    def split(tags):
        return datasets.Dataset.from_dict({"tokens": words, "tags": [[names.index(t) for t in row] for row in tags]}, features=feats)

    def read(tags, scheme):
        c = DataConfig(hf_dataset={"path": "mem"}, text_column="tokens", label_column="tags", task_type="token_classification",
                       tag_scheme=scheme)
        return from_hf_dataset(split(tags), c, "mem[train]").labels

    assert read([["I-PER", "I-PER", "O", "I-LOC"], ["I-LOC", "O"]], "iob1") == [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    assert read([["B-PER", "E-PER", "O", "S-LOC"], ["S-LOC", "O"]], "bioes") == [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    assert read([["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]], "iob2") == [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    with pytest.raises(TextDistillError, match=r"^mem\[train\]: row 1: I-LOC follows a sentence start: not valid IOB2 \(is the file IOB1"):
        read([["B-PER", "I-PER", "O", "B-LOC"], ["I-LOC", "O"]], "iob2")
    with pytest.raises(TextDistillError, match=r"^mem\[train\]: row 0: tag 'E-PER' \(word 2\) is not O, B-TYPE or I-TYPE "
                                               r"\(tag scheme iob2; BIOES or BMES tags\? set data.tag_scheme: bioes\)"):
        read([["B-PER", "E-PER", "O", "S-LOC"], ["S-LOC", "O"]], "iob2")
    # A test split without tags (HF stores -1 for each word) is named as such, not as a tag the scheme rejects.
    unlabelled = datasets.Dataset.from_dict({"tokens": words, "tags": [[-1] * 4, [-1] * 2]},
                                            features=datasets.Features({"tokens": feats["tokens"], "tags": datasets.Sequence(datasets.Value("int64"))}))  # fmt: skip
    c = DataConfig(hf_dataset={"path": "mem"}, text_column="tokens", label_column="tags", task_type="token_classification")
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
        feats.append({"input_ids": [rng.randint(1, 30000) for _ in range(n)], "token_type_ids": [rng.randint(0, 1) for _ in range(n)]})
    out = pad_features(feats, pad_token_id=3)
    longest = max(len(f["input_ids"]) for f in feats)
    assert list(out) == ["input_ids", "token_type_ids", "attention_mask"]
    for key, pad in (("input_ids", 3), ("token_type_ids", 0)):
        assert out[key].dtype == torch.long
        assert out[key].tolist() == [f[key] + [pad] * (longest - len(f[key])) for f in feats]
    assert out["attention_mask"].tolist() == [[1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"])) for f in feats]


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
