"""The static bundles' tokenizer: a word-cache fast path for printable ASCII, fastText n-gram ids for unknown words."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, cast

from tokenizers import Tokenizer

from ..encode.batching import CHARS_PER_TOKEN_CAP, TextTokenizer, Tokenized

if TYPE_CHECKING:
    from .backend import StaticModel

# Pre-tokenizers whose effect on printable ASCII a regex reproduces exactly (BERT: words and single ASCII
# punctuation marks; Whitespace: runs of word characters and runs of other non-space characters).
ASCII_SPLITS = {"BertPreTokenizer": re.compile(r"[^\s!-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]"),
                "Whitespace": re.compile(r"\w+|[^\w\s]+")}
NOT_PLAIN_ASCII = re.compile(r"[^\t\n\r\x20-\x7e]")
OOV_CACHE = 100_000  # fastText out-of-vocabulary vectors kept between encode() calls
WORD_CACHE = 200_000  # words remembered by the ASCII fast path before it starts over


def ascii_fast_path(tok: Tokenizer) -> tuple[re.Pattern[str], bool] | None:
    """(split regex, lowercase) when the tokenizer's pipeline on printable ASCII is a regex split plus a
    per-word lookup (WordLevel/WordPiece after BertPreTokenizer or Whitespace), else None."""
    spec = json.loads(tok.to_str())
    norm, pre, model = spec.get("normalizer"), spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    if spec.get("post_processor") or model.get("type") not in ("WordLevel", "WordPiece"):
        return None
    if pre.get("type") not in ASCII_SPLITS:
        return None
    if norm is None:
        lowercase = False
    elif norm.get("type") == "Lowercase":
        lowercase = True
    elif norm.get("type") == "BertNormalizer":
        lowercase = bool(norm.get("lowercase"))
    else:
        return None
    return ASCII_SPLITS[pre["type"]], lowercase


class StaticTokenizer(TextTokenizer):
    """TextTokenizer with a word-cache fast path for printable-ASCII texts (same ids as the tokenizers pipeline,
    several times faster: tokenising dominates a static model's cost), and fastText n-gram ids for unknown words.
    Keeps tokenizers' own Unigram model (compact_unigram False): a static bundle's vocabulary is small, and its
    speed is tokenising.
    """

    compact_unigram = False
    tokenizer: Tokenizer  # always tokenizers' own (compact_unigram False)

    def __init__(self, path: Path, max_length: int, pad_id: int, model: StaticModel):
        super().__init__(path, max_length, pad_id, "right")
        self.model = model
        self.fast = ascii_fast_path(self.tokenizer)
        added = [re.escape(t.content) for t in self.tokenizer.get_added_tokens_decoder().values() if t.content]
        self.added = re.compile("|".join(added), re.IGNORECASE) if added else None  # texts with one go the slow way
        self.cache: dict[str, list[int]] = {}

    def tokenize(self, texts: list[str]) -> Tokenized:
        """Token ids per text; with subwords, each unknown word becomes an id past the unknown id."""
        m = self.model
        if m.subwords is not None and len(m.oov_words) > OOV_CACHE:
            m.reset_oov()
            self.cache.clear()
        if len(self.cache) > WORD_CACHE:
            self.cache.clear()
        cap, limit = self.max_length * CHARS_PER_TOKEN_CAP, self.max_length
        ids: list[list[int] | None] = [None] * len(texts)
        truncated = 0
        slow = []
        for i, text in enumerate(texts):
            text = text[:cap]
            if self.fast is None or NOT_PLAIN_ASCII.search(text) or (self.added and self.added.search(text)):
                slow.append(i)
                continue
            row = self._fast_ids(text)
            if len(row) > limit or len(texts[i]) > cap:
                truncated += 1
                row = row[:limit]
            ids[i] = row
        if slow:
            encs = self.tokenizer.encode_batch([texts[i][:cap] for i in slow])
            for i, enc in zip(slow, encs):
                row = list(enc.ids)
                if m.subwords is not None:
                    for j, tid in enumerate(row):
                        if tid == m.unk_id:
                            start, end = enc.offsets[j]
                            row[j] = m.oov_id(m.normal_word(texts[i][start:end]))
                ids[i] = row
                truncated += bool(enc.overflowing or len(texts[i]) > cap)
        # every row is filled above; type ids: a scalar 0 per text, broadcast when padding
        return Tokenized(cast("list[list[int]]", ids), cast("list[list[int]]", [0] * len(ids)), truncated)

    def _fast_ids(self, text: str) -> list[int]:
        assert self.fast is not None  # only called on the fast path
        split, lowercase = self.fast
        cache, out = self.cache, []
        for word in split.findall(text.lower() if lowercase else text):
            hit = cache.get(word)
            if hit is None:
                hit = cache[word] = self._word_ids(word)
            out += hit
        return out

    def _word_ids(self, word: str) -> list[int]:
        enc = self.tokenizer.encode(word, add_special_tokens=False)
        m = self.model
        if m.subwords is None:
            return list(enc.ids)
        return [m.oov_id(m.normal_word(word)) if t == m.unk_id else t for t in enc.ids]
