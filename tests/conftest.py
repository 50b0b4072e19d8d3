"""Shared fixtures: paths to the real shared data, a tiny randomly initialised BERT saved as an HF folder."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny test models run fastest on one thread, and one thread never oversubscribes a busy 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# The teacher-output cache and the prepared catalogue models of the tests live in one temporary folder for the
# session (SmolLM2 is prepared once, ~0.5 GB), never in the user's ~/.cache; removed when the session ends.
os.environ["TEXTDISTILL_CACHE"] = tempfile.mkdtemp(prefix="textdistill-test-cache-")
atexit.register(shutil.rmtree, os.environ["TEXTDISTILL_CACHE"], ignore_errors=True)

from textdistill.config import data_dir  # noqa: E402

SST2 = Path(data_dir()) / "sst2"


def require_sst2() -> Path:
    if not (SST2 / "train.tsv").is_file():
        pytest.skip(f"shared SST-2 data not found at {SST2} (set TEXTDISTILL_DATA)")
    return SST2


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    return require_sst2()


def make_tiny_bert(folder: Path, texts: list[str], vocab_size: int = 2000, lowercase: bool = True) -> str:
    """A 4-layer, 32-wide BERT with a WordPiece vocabulary learnt from ``texts``, saved in HF format to ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    # The vocabulary is built here, not by tokenizers' WordPieceTrainer: that trainer breaks ties in hash order, so
    # two builds from the same texts differed and every test on the tiny model saw another model in each run (one CI
    # run's multi-task test drew a vocabulary on which the student did not learn). Here: the special tokens, every
    # character (alone and as a ## continuation), then the most frequent words, ties broken alphabetically.
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=lowercase), pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for word in counts for c in word})
    vocab = specials + chars + ["##" + c for c in chars]
    vocab += [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1][
        : max(0, vocab_size - len(vocab))
    ]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, sst2_dir: Path) -> str:
    """A 4-layer, 32-wide BERT with a WordPiece vocabulary learnt from the first SST-2 rows, saved in HF format."""
    lines = (sst2_dir / "train.tsv").read_text(encoding="utf-8").splitlines()[1:3000]
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), [line.split("\t")[0] for line in lines])


@pytest.fixture
def write(tmp_path: Path):
    """write("name.tsv", text or bytes) -> path of a file in a fresh temporary folder."""

    def _write(name: str, content: str | bytes) -> Path:
        p = tmp_path / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        return p

    return _write
