"""Vocabulary restriction for distillation: count a teacher's token ids over corpora, keep the most frequent ones
plus every piece needed for any text to tokenise, and rebuild the Unigram tokenizer over what was kept.

Why: multilingual-e5-small's XLM-R vocabulary has 250k pieces; a static table over all of them is 64 MB at
256 dims in int8, most of it rows no text of the target languages ever produces. Counting over en_corpus and
zh_corpus keeps what those languages use (docs/results/static-multilingual.md has the measurements).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeemb.corpus import CorpusReader
from edgeemb.errors import CorpusError

from ..common.errors import ExportError

METASPACE = "\u2581"
COUNT_BATCH = 10_000  # texts per encode_batch call while counting


@dataclass
class TokenCounts:
    """How often each token id occurred over the corpora, and every character the normaliser produced."""

    counts: np.ndarray  # int64 (vocabulary size,)
    characters: set[str]
    texts: int


def corpus_texts(paths: Iterable[str | Path], text_field: str = "text") -> Iterator[str]:
    """Texts of .txt / .jsonl / .tsv corpora, streamed one line at a time (edgeemb.corpus's reader)."""
    for path in paths:
        try:
            for doc in CorpusReader(path, text_field=text_field):
                yield doc.text
        except CorpusError as exc:
            raise ExportError(f"vocabulary corpus: {exc}") from None


def count_tokens(tokenizer, texts: Iterable[str], batch: int = COUNT_BATCH) -> TokenCounts:
    """Token id counts (no special tokens) and the normalised characters of every text."""
    counts = np.zeros(tokenizer.get_vocab_size(with_added_tokens=True), np.int64)
    chars: set[str] = set()
    normalizer = tokenizer.normalizer
    n = 0

    def flush(buf: list[str]) -> None:
        for enc in tokenizer.encode_batch(buf, add_special_tokens=False):
            np.add.at(counts, enc.ids, 1)
        raw = set("".join(buf))
        for c in raw:
            chars.update(normalizer.normalize_str(c) if normalizer is not None else c)

    buf: list[str] = []
    for text in texts:
        buf.append(text)
        n += 1
        if len(buf) >= batch:
            flush(buf)
            buf = []
    if buf:
        flush(buf)
    if n == 0:
        raise ExportError("vocabulary corpus: no text to count tokens over (the corpora are empty)")
    chars.discard(" ")
    return TokenCounts(counts, chars, n)


def restrict(counts: TokenCounts, scores: np.ndarray, pieces: list[str], top_n: int,
             specials: list[int]) -> list[int]:
    """Kept ids, in table order: the specials, the top_n by corpus count (ties and unseen pieces by the unigram
    score), then every single-character piece of a character seen (and U+2581) not already kept."""
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ExportError(f"top_n (vocabulary tokens to keep) must be a positive integer, got {top_n!r}")
    order = np.lexsort((-np.asarray(scores, np.float64), -counts.counts[:len(pieces)]))
    special = set(specials)
    ranked = [int(i) for i in order if int(i) not in special][:top_n]
    index = {p: i for i, p in enumerate(pieces)}
    needed = [index[c] for c in sorted(counts.characters | {METASPACE}) if c in index]
    return list(dict.fromkeys([*specials, *ranked, *(i for i in needed if i not in special)]))


def unigram_over(tokenizer, keep: list[int], unk_id: int, prune: bool = True):
    """The tokenizer's Unigram model over the kept pieces as ids 0..len(keep)-1 (no post-processor).

    prune: only the kept pieces exist, so a text segments into kept pieces (a dropped word becomes smaller kept
    pieces, down to characters). Otherwise the other pieces follow the kept ones (ids past the table, which the
    static runtime skips): segmentation stays the teacher's and dropped pieces are lost."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "Unigram":
        raise ExportError(f"vocabulary restriction needs a Unigram tokenizer, got {model.get('type')!r}")
    vocab = model["vocab"]
    pieces = [vocab[i] for i in keep]
    if not prune:
        kept = set(keep)
        pieces += [p for i, p in enumerate(vocab) if i not in kept]
    model["vocab"], model["unk_id"] = pieces, keep.index(unk_id)
    spec["post_processor"] = None
    spec["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(spec))
