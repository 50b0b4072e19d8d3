"""Build an unlabeled news-domain pool for NER data distillation from the GLUE texts in the shared data (their
sentences only, no labels): MRPC (news), RTE (news and Wikipedia), the news pairs of STS-B (all their splits) and the
Wikipedia sentences of QNLI. Tokenized like CoNLL (words and punctuation apart), deduplicated, sentences of 4..60
tokens, in a fixed order (the first --max); written atomically.

Usage: python benchmarks/conll_news_pool.py OUT.txt [--max N]
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import unicodedata
from pathlib import Path

from textdistill.config import data_dir

TOKEN = re.compile(
    r"(?:'s|'re|'ve|'ll|'d|n't)\b|[A-Za-z0-9]+(?:[-'.&/][A-Za-z0-9]+)*\.?(?<=[A-Z]\.)|[A-Za-z0-9]+(?:[-'&/.][A-Za-z0-9]+)*|[^\sA-Za-z0-9]"
)


CLITIC = re.compile(r"(?<=\w)('s|'re|'ve|'ll|'d|n't)\b", re.I)


def tokens(text: str) -> list[str]:
    """Words and punctuation apart, clitics split off (``Dominick 's``), as the CoNLL files are tokenized."""
    return TOKEN.findall(CLITIC.sub(r" \1", text))


def rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        sys.exit(f"error: {path}: not found (shared GLUE data missing; set TEXTDISTILL_DATA)")
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--max", type=int, default=16000)
    args = ap.parse_args()
    root = Path(data_dir())
    texts: list[str] = []
    for split in ("train", "dev", "test"):  # text only: no label of these files is read
        for r in rows(root / "glue_mrpc" / f"{split}.tsv"):
            texts += [r["#1 String"], r["#2 String"]]
        for r in rows(root / "glue_rte" / f"{split}.tsv"):
            texts += [r["sentence1"], r["sentence2"]]
        for r in rows(root / "glue_stsb" / f"{split}.tsv"):
            if r["genre"] == "main-news":
                texts += [r["sentence1"], r["sentence2"]]
    for split in ("dev", "test"):  # Wikipedia sentences (QNLI ships no train split here)
        texts += [r["sentence"] for r in rows(root / "glue_qnli" / f"{split}.tsv")]
    seen: set[str] = set()
    out: list[str] = []
    for text in texts:
        words = tokens("".join(" " if unicodedata.category(c) == "Cc" else c for c in text))  # stray control bytes
        line = " ".join(words)
        if 4 <= len(words) <= 60 and line.lower() not in seen:
            seen.add(line.lower())
            out.append(line)
        if len(out) >= args.max:
            break
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text("\n".join(out) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"{len(out)} sentences ({sum(len(x.split()) for x in out)} words) from {len(texts)} texts -> {args.out}")


if __name__ == "__main__":
    main()
