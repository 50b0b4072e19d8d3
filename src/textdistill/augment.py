"""Text augmentation for data distillation (Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple
Neural Networks", section 3.3), word by word on whitespace-separated words.

For each variant of an example, every word is, with these probabilities (the rest are kept):

- ``mask``: replaced by the mask token (``[MASK]``), so the teacher still sees a word there;
- ``pos``: replaced by another word of the same part of speech from the corpus (needs a tagger: spaCy);
- ``neighbour``: replaced by one of its ``neighbours_k`` nearest words in the teacher's input-embedding space;
- ``delete``: dropped.

Then, with probability ``ngram``, only a random n-gram (n from 1 to ``ngram_max``) of the result is kept.

Each variant's random draws depend only on (seed, example index, variant number), so the output is the same under a
seed whatever the order or the number of processes. Variants that normalise (lower case, punctuation and spacing
removed) to an original text or to an earlier variant are dropped as near-duplicates.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from textdistill.errors import TextDistillError

Replacer = Callable[[str, random.Random], str | None]


@dataclass(frozen=True)
class Variant:
    text: str
    pair: str | None
    origin: int  # index of the example it was made from
    ops: str  # which operations changed it, e.g. "mask+ngram"


def normalise(text: str) -> str:
    """The near-duplicate key: lower case, accents and punctuation removed, spaces collapsed."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


class EmbeddingNeighbours:
    """Nearest whole words in a model's input-embedding space (cosine), from its tokenizer's vocabulary.

    A word the vocabulary holds as one token gets one of its ``k`` nearest whole-word tokens; any other word (split into
    pieces, or unknown) has no neighbour and is kept.
    """

    def __init__(self, embeddings: torch.Tensor, tokenizer: Any, k: int = 10) -> None:
        vocab = tokenizer.get_vocab()
        special = set(getattr(tokenizer, "all_special_tokens", []))
        words = [(w, i) for w, i in vocab.items() if w not in special and w.isalpha() and not w.startswith("##")]
        if not words:
            raise TextDistillError("augment.neighbour: the tokenizer has no whole-word tokens to draw neighbours from")
        words.sort(key=lambda x: x[1])
        self.words = [w for w, _ in words]
        self.index = {w: j for j, w in enumerate(self.words)}
        emb = embeddings.detach().float()[torch.tensor([i for _, i in words])]
        self.emb = torch.nn.functional.normalize(emb, dim=-1)
        self.k = k
        self.cache: dict[str, list[str]] = {}

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, k: int = 10) -> "EmbeddingNeighbours":
        return cls(model.get_input_embeddings().weight, tokenizer, k)

    def neighbours(self, word: str) -> list[str]:
        key = word.lower()
        if key not in self.cache:
            j = self.index.get(key)
            if j is None:
                self.cache[key] = []
            else:
                sims = self.emb @ self.emb[j]
                sims[j] = -2.0
                top = torch.topk(sims, min(self.k, len(self.words) - 1)).indices.tolist()
                self.cache[key] = [self.words[t] for t in top]
        return self.cache[key]

    def __call__(self, word: str, rng: random.Random) -> str | None:
        options = self.neighbours(word)
        return rng.choice(options) if options else None


class PosReplacer:
    """Replace a word by another word of the same part of speech, drawn from the corpus by frequency.

    ``tags`` maps each corpus text to one tag per whitespace word (e.g. from :func:`spacy_tagger`)."""

    def __init__(self, texts: Sequence[str], tagger: Callable[[list[list[str]]], list[list[str]]]) -> None:
        words = [t.split() for t in texts]
        tagged = tagger(words)
        self.tag_of: dict[str, str] = {}
        self.pools: dict[str, list[str]] = {}
        for ws, tags in zip(words, tagged):
            for w, tag in zip(ws, tags):
                self.tag_of.setdefault(w, tag)
                self.pools.setdefault(tag, []).append(w)

    def __call__(self, word: str, rng: random.Random) -> str | None:
        pool = self.pools.get(self.tag_of.get(word, ""), [])
        return rng.choice(pool) if pool else None


def spacy_tagger(model: str = "en_core_web_sm") -> Callable[[list[list[str]]], list[list[str]]]:
    """A tagger for :class:`PosReplacer`: spaCy's coarse POS tags of pre-split words."""
    try:
        import spacy
        from spacy.tokens import Doc
    except ImportError:
        raise TextDistillError(
            "augment.pos needs spaCy and an English pipeline: pip install spacy en-core-web-sm"
        ) from None
    try:
        nlp = spacy.load(model, disable=["parser", "ner", "lemmatizer"])
    except OSError:
        raise TextDistillError(f"augment.pos: spaCy pipeline {model!r} is not installed") from None

    def tag(batch: list[list[str]]) -> list[list[str]]:
        docs = nlp.pipe(Doc(nlp.vocab, words=ws) for ws in batch)
        return [[t.pos_ for t in doc] for doc in docs]

    return tag


@dataclass
class Augmenter:
    """Makes ``variants`` augmented copies of each example (see the module's text)."""

    variants: int = 10
    mask: float = 0.1
    pos: float = 0.0
    neighbour: float = 0.0
    delete: float = 0.0
    ngram: float = 0.25
    ngram_max: int = 5
    seed: int = 0
    mask_token: str = "[MASK]"
    neighbours: Replacer | None = None
    pos_replacer: Replacer | None = None
    tries: int = 3  # draws per wanted variant before giving up on an example (short texts have few distinct variants)

    def __post_init__(self) -> None:
        rates = {
            "mask": self.mask,
            "pos": self.pos,
            "neighbour": self.neighbour,
            "delete": self.delete,
            "ngram": self.ngram,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise TextDistillError(f"augment.{name}: a probability in [0, 1], got {rate}")
        if self.mask + self.pos + self.neighbour + self.delete > 1.0:
            raise TextDistillError(
                "augment: mask + pos + neighbour + delete must not exceed 1 (each word gets one of them)"
            )
        if self.variants < 1 or self.ngram_max < 1:
            raise TextDistillError("augment: variants and ngram_max must be at least 1")
        if self.neighbour > 0 and self.neighbours is None:
            raise TextDistillError("augment.neighbour > 0 needs the teacher's embeddings (EmbeddingNeighbours)")
        if self.pos > 0 and self.pos_replacer is None:
            raise TextDistillError("augment.pos > 0 needs a part-of-speech tagger (PosReplacer)")

    def _word(self, word: str, rng: random.Random, ops: set[str]) -> str | None:
        u = rng.random()
        for name, rate, replace in (
            ("mask", self.mask, None),
            ("pos", self.pos, self.pos_replacer),
            ("neighbour", self.neighbour, self.neighbours),
        ):
            if u < rate:
                new = self.mask_token if name == "mask" else replace(word, rng)  # type: ignore[misc]
                if new is not None and new != word:
                    ops.add(name)
                    return new
                return word
            u -= rate
        if u < self.delete:
            ops.add("delete")
            return None
        return word

    def _side(self, text: str, rng: random.Random, ops: set[str]) -> str:
        words = [w for w in (self._word(w, rng, ops) for w in text.split()) if w is not None]
        if len(words) > 1 and rng.random() < self.ngram:
            n = rng.randint(1, min(self.ngram_max, len(words)))
            start = rng.randint(0, len(words) - n)
            if n < len(words):
                ops.add("ngram")
            words = words[start : start + n]
        return " ".join(words)

    def one(self, text: str, pair: str | None, origin: int, variant: int) -> Variant:
        """Variant number ``variant`` of example ``origin`` (a pure function of the seed and these numbers)."""
        rng = random.Random(f"{self.seed}:{origin}:{variant}")
        ops: set[str] = set()
        new_text = self._side(text, rng, ops)
        new_pair = self._side(pair, rng, ops) if pair is not None else None
        return Variant(new_text, new_pair, origin, "+".join(sorted(ops)) or "none")

    def __call__(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, exclude: Iterable[str] = ()
    ) -> list[Variant]:
        """Up to ``variants`` distinct new variants of each example, in example order; none equal (normalised) to an
        original text, to anything in ``exclude`` or to another variant."""
        seen = {self._key(t, pairs[i] if pairs else None) for i, t in enumerate(texts)}
        seen.update(normalise(t) for t in exclude)
        out: list[Variant] = []
        for i, text in enumerate(texts):
            pair = pairs[i] if pairs else None
            made = 0
            for v in range(self.variants * self.tries):
                if made == self.variants:
                    break
                var = self.one(text, pair, i, v)
                key = self._key(var.text, var.pair)
                if not var.text.strip() or key in seen:
                    continue
                seen.add(key)
                out.append(var)
                made += 1
        return out

    @staticmethod
    def _key(text: str, pair: str | None) -> str:
        return normalise(text) if pair is None else normalise(text) + " ||| " + normalise(pair)
