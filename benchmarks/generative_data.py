"""Build the generative benchmark's data (issue 10) from the datasets in ../shared/data, as JSONL rows of
``{"prompt": ..., "completion": ...}`` for textdistill's generative runs.

Two kinds of rows, shuffled together with a fixed seed:

- **continue a movie review**: a sentence split after its first ``--prefix`` share of words (at least 3 words);
  prompt ``"Continue the movie review: <first words>"``, completion ``" <the rest>"``.
  Training sentences: ``unlabeled_movie_pool`` (the 8,544 sentences of SST's training split); held-out sentences: SST-2
  dev (872, no overlap with the pool). Both are PTB-tokenized in the source (``-LRB-``, ``n't``, `` `` ``); they are
  detokenized here (``detokenize``), and SST-2 dev (lower-cased in GLUE) has its first letter capitalised.
- **paraphrase a sentence**: the MRPC pairs labelled as paraphrases (label 1); prompt
  ``"Paraphrase: <sentence 1>\\nParaphrase:"``, completion ``" <sentence 2>"``. Training: MRPC train (2,474 pairs);
  held out: MRPC dev (279 pairs).

Usage: python benchmarks/generative_data.py OUT_DIR [--data ../shared/data] [--seed 0]
writes OUT_DIR/train.jsonl and OUT_DIR/dev.jsonl (each through a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import sys
from pathlib import Path

PTB = {
    "-LRB-": "(",
    "-RRB-": ")",
    "-LSB-": "[",
    "-RSB-": "]",
    "-LCB-": "{",
    "-RCB-": "}",
    "``": '"',
    "''": '"',
    "`": "'",
}


def detokenize(sentence: str) -> str:
    """A PTB-tokenized sentence as ordinary text: brackets and quotes restored, no space before punctuation and
    clitics ('s, n't), none inside brackets and quotes, ``\\/`` as ``/``."""
    words = [PTB.get(w, w).replace("\\/", "/").replace("\\*", "*") for w in sentence.split()]
    out: list[str] = []
    open_quote = False
    glue_next = False
    for w in words:
        attach = w in {",", ".", "!", "?", ";", ":", "%", ")", "]", "}", "..."} or re.fullmatch(
            r"'(s|re|ve|d|ll|m)|n't", w, re.I
        )
        if w == '"':
            attach = open_quote
            open_quote = not open_quote
        if out and not attach and not glue_next:
            out.append(" ")
        out.append(w)
        glue_next = w in {"(", "[", "{", "$"} or (w == '"' and open_quote)
    return "".join(out)


def split_review(sentence: str, prefix: float) -> dict[str, str] | None:
    """A continuation row: the first ``prefix`` share of the words (at least 3) as the prompt, the rest (at least
    3 words) as the completion; None for a sentence too short to split."""
    words = sentence.split()
    cut = max(3, round(len(words) * prefix))
    if len(words) - cut < 3:
        return None
    return {"prompt": "Continue the movie review: " + " ".join(words[:cut]), "completion": " " + " ".join(words[cut:])}


def paraphrase(first: str, second: str) -> dict[str, str]:
    return {"prompt": f"Paraphrase: {first.strip()}\nParaphrase:", "completion": " " + second.strip()}


def _need(path: Path) -> Path:
    if not path.is_file():
        sys.exit(
            f"error: {path} not found; the benchmark reads the shared datasets (../shared/data, see its "
            f"README.md); "
            "pass --data DIR"
        )
    return path


def mrpc(path: Path) -> list[dict[str, str]]:
    with open(_need(path), encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, body = rows[0], rows[1:]
    q, a, b = header.index("Quality"), header.index("#1 String"), header.index("#2 String")
    return [paraphrase(r[a], r[b]) for r in body if r[q] == "1"]


def sst2_dev(path: Path) -> list[str]:
    with open(_need(path), encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    column = rows[0].index("text")
    return [s[:1].upper() + s[1:] for s in (detokenize(r[column]) for r in rows[1:])]


def build(data: Path, prefix: float, seed: int) -> dict[str, list[dict[str, str]]]:
    pool = (
        _need(data / "unlabeled_movie_pool" / "sst_train_split_sentences.txt").read_text(encoding="utf-8").splitlines()
    )
    reviews = {
        "train": [detokenize(s) for s in pool if s.strip()],
        "dev": sst2_dev(data / "sst2" / "dev.tsv"),
    }
    out = {}
    for split, file in (("train", "train.tsv"), ("dev", "dev.tsv")):
        rows = [r for r in (split_review(s, prefix) for s in reviews[split]) if r is not None]
        rows += mrpc(data / "glue_mrpc" / file)
        random.Random(seed).shuffle(rows)
        out[split] = rows
    return out


def write_jsonl(rows: list[dict[str, str]], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("TEXTDISTILL_DATA", "../shared/data")))
    p.add_argument("--prefix", type=float, default=0.4, help="share of a review's words given as the prompt")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in build(a.data, a.prefix, a.seed).items():
        write_jsonl(rows, a.out_dir / f"{split}.jsonl")
        print(f"{a.out_dir / f'{split}.jsonl'}: {len(rows)} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
