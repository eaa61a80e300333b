"""Tokenisation and batching: length-sorted, padded to the longest in a batch, capped by total tokens."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from ..errors import BundleError, InputError
from .unigram import UnigramTokenizer, load_unigram

CHARS_PER_TOKEN_CAP = 64  # a huge text is cut to max_length * 64 characters before tokenising
MAX_WINDOWS = 64  # long_text="window": at most this many windows of max_length tokens per text (memory bound)
PREFIX_CHARS_PER_TOKEN = 8  # a longer text is first tokenised to a word boundary near max_length * 8 characters
GROUP_TEXTS, GROUP_CHARS = 256, 1 << 15  # texts per encode_batch call: its Encodings hold ~200 bytes a token


def word_local(tokenizer: Tokenizer) -> bool:
    """Whether a cut before a space (or a CJK ideograph) splits a text's tokens exactly there: BertNormalizer or
    none (each step maps characters one by one; NFD cannot reorder across a starter), BertPreTokenizer, WordPiece
    (each word alone), and no added token holding a space or ideograph (docs/results/encode-memory.md)."""
    from tokenizers import models, normalizers, pre_tokenizers

    norm = tokenizer.normalizer
    if norm is not None and not isinstance(norm, normalizers.BertNormalizer):
        return False
    if not isinstance(tokenizer.pre_tokenizer, pre_tokenizers.BertPreTokenizer) \
            or not isinstance(tokenizer.model, models.WordPiece):
        return False
    cjk = norm is not None and bool(norm.handle_chinese_chars)
    return all(not any(c.isspace() or (cjk and _is_cjk(c)) for c in t.content)
               for t in tokenizer.get_added_tokens_decoder().values())


def _is_cjk(c: str) -> bool:
    """A CJK ideograph of the two main blocks, a word of its own under BertNormalizer(handle_chinese_chars)."""
    o = ord(c)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF


def _word_cut(text: str, n: int, cjk: bool) -> int:
    """The largest p <= n with text[p] a space (or, with cjk, an ideograph, looking 64 characters back); 0: none."""
    p = text.rfind(" ", 0, n + 1)
    if cjk:
        for q in range(n, max(p, n - 64, 0), -1):
            if _is_cjk(text[q]):
                return q
    return max(p, 0)


@dataclass
class Batch:
    """One padded batch and the positions its rows had in the caller's list."""

    rows: np.ndarray  # int64 (b,) indices into the input list
    input_ids: np.ndarray  # int64 (b, seq)
    attention_mask: np.ndarray  # int64 (b, seq)
    token_type_ids: np.ndarray  # int64 (b, seq)


@dataclass
class Tokenized:
    """Token ids of each text and how many texts were truncated."""

    ids: list[list[int]]
    type_ids: list[list[int]]
    truncated: int


def check_texts(texts: Iterable[str]) -> list[str]:
    """Accept a list (or any iterable but a str, bytes or dict) of str, empty strings allowed; reject None,
    non-str items and texts that are not valid Unicode (lone surrogates, which tokenizers cannot take) by position."""
    if isinstance(texts, (str, bytes, bytearray, Mapping)) or not isinstance(texts, Iterable):
        raise InputError(f"texts must be a list of str, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(f"texts[{i}] is {type(t).__name__}, expected str (None is not a text)")
        if type(t) is not str:  # a str subclass (numpy.str_): tokenizers wants plain str
            out[i] = t = str(t)
        if not t.isascii():
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InputError(f"texts[{i}] is not valid Unicode: a lone surrogate {t[exc.start]!r} at character "
                                 f"{exc.start} (decode input with errors='replace', or fix its source)") from None
    return out


class TextTokenizer:
    """A tokenizers.Tokenizer set to truncate at max_length with no fixed padding.

    eos_id: append this token to every text (LLM encoders pooling the last token); truncation leaves it room.
    A Unigram (SentencePiece) tokenizer.json is held by unigram.UnigramTokenizer (same ids, ~5x less memory:
    XLM-R's 250k pieces 51 MB instead of 280 MB) unless compact_unigram is False.
    """

    eos_id: int | None = None
    compact_unigram = True

    def __init__(self, path: str | Path, max_length: int, pad_id: int = 0, padding_side: str = "right",
                 eos_id: int | None = None):
        try:
            compact = load_unigram(path) if self.compact_unigram else None
            self.tokenizer: Tokenizer | UnigramTokenizer = compact or Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises bare Exception subclasses
            raise BundleError(f"{path}: cannot load tokenizer ({str(exc).splitlines()[0]})") from None
        if eos_id is not None and max_length < 2:
            raise BundleError(f"{path}: max_length {max_length} leaves no room for the appended EOS token")
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length - (eos_id is not None))
        self.max_length, self.pad_id, self.padding_side = max_length, pad_id, padding_side
        self.eos_id = eos_id
        hf = self.tokenizer if isinstance(self.tokenizer, Tokenizer) else None  # the compact Unigram is not
        self.word_local = hf is not None and word_local(hf)
        self._cjk = hf is not None and self.word_local and hf.normalizer is not None \
            and bool(hf.normalizer.handle_chinese_chars)

    def tokenize(self, texts: list[str]) -> Tokenized:
        """Token ids per text; huge texts are cut first, and texts go to the tokenizer in groups of GROUP_TEXTS /
        GROUP_CHARS, so its own Encodings never hold more than one group (same ids as one call)."""
        cap = self.max_length * CHARS_PER_TOKEN_CAP
        eos = [] if self.eos_id is None else [self.eos_id]
        ids: list[list[int]] = []
        type_ids: list[list[int]] = []
        truncated, start, chars = 0, 0, 0
        for i, text in enumerate(texts):
            chars += min(len(text), cap)
            if i + 1 == len(texts) or i + 1 - start >= GROUP_TEXTS or chars >= GROUP_CHARS:
                group = texts[start:i + 1]
                encs = self._encode(group, cap)
                truncated += sum(1 for t, e in zip(group, encs) if e.overflowing or len(t) > cap)
                ids += [e.ids + eos for e in encs]
                type_ids += [e.type_ids + [0] * len(eos) for e in encs]
                start, chars = i + 1, 0
        return Tokenized(ids, type_ids, truncated)

    def _encode(self, texts: list[str], cap: int) -> list[Any]:  # tokenizers.Encoding or UnigramEncoding
        """encode_batch of the texts cut to cap characters. With a word-local tokenizer, a text over max_length *
        PREFIX_CHARS_PER_TOKEN characters is tokenised to a word boundary near there first: a prefix that overflows
        max_length keeps the capped text's ids (its tokens start with the prefix's); the others are tokenised again
        whole (16 KB texts: 9x less tokenising, 15 MB less peak; docs/results/encode-memory.md)."""
        capped = [t[:cap] for t in texts]
        cuts: dict[int, int] = {}
        if self.word_local:
            short = self.max_length * PREFIX_CHARS_PER_TOKEN
            for i, t in enumerate(capped):
                p = _word_cut(t, short, self._cjk) if len(t) > short else 0
                if p > 0:
                    cuts[i] = p
        encs: list[Any] = self.tokenizer.encode_batch([t[:cuts[i]] if i in cuts else t for i, t in enumerate(capped)])
        redo = [i for i in cuts if not encs[i].overflowing]
        if redo:
            for i, enc in zip(redo, self.tokenizer.encode_batch([capped[i] for i in redo])):
                encs[i] = enc
        return encs

    def tokenize_windows(self, texts: list[str]) -> tuple[Tokenized, np.ndarray]:
        """Every text as consecutive windows of at most max_length tokens (special tokens in each), for
        long_text="window"; returns the windows and, per window, the index of its text. Texts beyond
        MAX_WINDOWS windows are cut there (counted as truncated)."""
        cap = self.max_length * CHARS_PER_TOKEN_CAP * MAX_WINDOWS
        ids, type_ids, owner, truncated = [], [], [], 0
        eos = [] if self.eos_id is None else [self.eos_id]
        for i, enc in enumerate(self.tokenizer.encode_batch([t[:cap] for t in texts])):
            windows = [enc, *enc.overflowing]
            truncated += len(windows) > MAX_WINDOWS or len(texts[i]) > cap
            for w in windows[:MAX_WINDOWS]:
                ids.append(w.ids + eos)
                type_ids.append(w.type_ids + [0] * len(eos))
                owner.append(i)
        return Tokenized(ids, type_ids, truncated), np.asarray(owner, dtype=np.int64)

    def batches(self, tok: Tokenized, batch_size: int, max_tokens: int) -> Iterator[Batch]:
        """Yield batches in order of token count, each padded to its longest row and under max_tokens."""
        lengths = np.fromiter((len(x) for x in tok.ids), dtype=np.int64, count=len(tok.ids))
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < len(order):
            end = start + 1
            # sorted ascending, so the last row sets the padded width
            while end < len(order) and end - start < batch_size and lengths[order[end]] * (end - start + 1) <= max_tokens:
                end += 1
            yield self._pad(order[start:end], tok)
            start = end

    def _pad(self, rows: np.ndarray, tok: Tokenized) -> Batch:
        width = max(1, max(len(tok.ids[r]) for r in rows))
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            n = len(tok.ids[r])
            sl = slice(width - n, width) if self.padding_side == "left" else slice(0, n)
            ids[i, sl], mask[i, sl], types[i, sl] = tok.ids[r], 1, tok.type_ids[r]
        return Batch(np.asarray(rows, dtype=np.int64), ids, mask, types)
