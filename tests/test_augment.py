"""Augmenters (Tang et al. 2019): each operation's behaviour, determinism under a seed, near-duplicate removal."""

from __future__ import annotations

import random

import pytest
import torch

from textdistill.augment import Augmenter, EmbeddingNeighbours, PosReplacer, normalise
from textdistill.errors import TextDistillError

SENTENCE = "the film is a charming and often affecting journey"


def test_mask_everything_then_one_variant_only() -> None:
    aug = Augmenter(variants=5, mask=1.0, ngram=0.0)
    out = aug([SENTENCE])
    assert [v.text for v in out] == [" ".join(["[MASK]"] * 9)]  # the other draws are duplicates of it
    assert out[0].ops == "mask" and out[0].origin == 0


def test_delete_rate_matches_its_probability() -> None:
    aug = Augmenter(variants=1, mask=0.0, delete=0.3, ngram=0.0)
    words = 0
    kept = 0
    for i in range(400):
        v = aug.one(SENTENCE, None, i, 0)
        words += 9
        kept += len(v.text.split())
    assert 1 - kept / words == pytest.approx(0.3, abs=0.03)  # 3,600 Bernoulli draws: sd 0.008


def test_ngram_keeps_a_contiguous_piece() -> None:
    aug = Augmenter(variants=20, mask=0.0, ngram=1.0, ngram_max=3)
    out = aug([SENTENCE])
    assert len(out) >= 10
    for v in out:
        n = len(v.text.split())
        assert 1 <= n <= 3 and f" {v.text} " in f" {SENTENCE} " and v.ops == "ngram"


def test_same_seed_same_variants_and_each_variant_stands_alone() -> None:
    texts = [SENTENCE, "a dull , lifeless movie", "good"]
    a = Augmenter(variants=4, mask=0.2, delete=0.1, ngram=0.3, seed=7)
    first = a(texts)
    assert first == Augmenter(variants=4, mask=0.2, delete=0.1, ngram=0.3, seed=7)(texts)
    assert first != Augmenter(variants=4, mask=0.2, delete=0.1, ngram=0.3, seed=8)(texts)
    # a variant depends only on (seed, example, variant number): any process can make any slice
    v = next(x for x in first if x.origin == 1)
    assert any(a.one(texts[1], None, 1, k) == v for k in range(12))


def test_near_duplicates_are_dropped() -> None:
    assert normalise("The Film, is  GOOD!") == normalise("the film is good")
    unchanged = Augmenter(variants=3, mask=0.0, ngram=0.0)
    assert unchanged(["A good film .", "Bad"]) == []  # every variant equals its original
    aug = Augmenter(variants=50, mask=0.5, ngram=0.0, seed=1)
    out = aug(["good film"], exclude=["[MASK] film"])
    keys = [normalise(v.text) for v in out]
    assert len(keys) == len(set(keys)) and "mask film" not in keys and "good film" not in keys
    assert sorted(v.text for v in out) == ["[MASK] [MASK]", "good [MASK]"]  # the only other distinct ones


def test_pairs_are_augmented_on_both_sides() -> None:
    aug = Augmenter(variants=3, mask=1.0, ngram=0.0)
    out = aug(["a b"], ["c d e"])
    assert [(v.text, v.pair) for v in out] == [("[MASK] [MASK]", "[MASK] [MASK] [MASK]")]


class FakeTokenizer:
    all_special_tokens = ["[PAD]", "[MASK]"]

    def get_vocab(self) -> dict[str, int]:
        return {"[PAD]": 0, "[MASK]": 1, "good": 2, "great": 3, "bad": 4, "awful": 5, "##ly": 6, ",": 7}


def test_embedding_neighbours_are_nearest_by_cosine() -> None:
    emb = torch.tensor([[0, 0], [0, 0], [1.0, 0.1], [0.9, 0.2], [-1.0, 0.0], [-0.8, -0.3], [1.0, 0.1], [0.0, 1.0]])
    nn_ = EmbeddingNeighbours(emb, FakeTokenizer(), k=1)
    assert nn_.words == ["good", "great", "bad", "awful"]  # whole words only: no specials, pieces or punctuation
    assert nn_.neighbours("Good") == ["great"] and nn_.neighbours("bad") == ["awful"] and nn_.neighbours("film") == []
    aug = Augmenter(variants=1, mask=0.0, neighbour=1.0, ngram=0.0, neighbours=nn_)
    assert [v.text for v in aug(["good film , bad"])] == ["great film , awful"]


def test_pos_replacement_stays_within_the_tag() -> None:
    tags = {"good": "ADJ", "bad": "ADJ", "dull": "ADJ", "film": "NOUN", "movie": "NOUN", "a": "DET"}
    rep = PosReplacer(["a good film", "a bad movie", "dull"], lambda batch: [[tags[w] for w in ws] for ws in batch])
    rng = random.Random(0)
    for _ in range(50):
        assert rep("good", rng) in {"good", "bad", "dull"} and rep("film", rng) in {"film", "movie"}
    assert rep("unseen", rng) is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mask": 1.5}, r"augment.mask: a probability in \[0, 1\], got 1.5"),
        ({"mask": 0.6, "delete": 0.6}, "must not exceed 1"),
        ({"neighbour": 0.1}, "needs the teacher's embeddings"),
        ({"pos": 0.1}, "needs a part-of-speech tagger"),
        ({"variants": 0}, "at least 1"),
    ],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(TextDistillError, match=message):
        Augmenter(**kwargs)
