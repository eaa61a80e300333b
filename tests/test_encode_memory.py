"""Bounded encoding memory (issue 14): bounds on what is tokenised, run and encoded per call, not on RSS.

RSS on a shared machine is too noisy to assert; what keeps the peak bounded is asserted instead: encode() hands
the tokenizer bounded spans, the session runs without memory patterns (one planned block per shape made
onnxruntime's arena map regions of 64 MB and more), and Index.add encodes a list in chunks of batch_size.
Session 7: load() hands freed heap back (malloc_trim), and the prefix-first / grouped tokenising proposed for
TextTokenizer.tokenize (the study's functions) gives exactly whole tokenising's ids, on texts built to break it.
"""
from __future__ import annotations

import numpy as np
import pytest
from stub_encoders import StubEncoder, make_docs

from edgeemb import Index, TruncationWarning


class SizeRecorder(StubEncoder):
    """Records how many texts each encode call got."""

    def __init__(self) -> None:
        super().__init__(dim=16)
        self.sizes: list[int] = []

    def encode(self, texts, batch_size: int = 32, **kw):
        self.sizes.append(len(texts))
        return super().encode(texts)

    encode_queries = encode
    encode_documents = encode


def test_index_add_of_a_list_is_encoded_in_chunks(tmp_path):
    enc = SizeRecorder()
    docs = make_docs(1100)
    with Index.create(tmp_path / "ix", enc) as ix:
        ids = ix.add(docs, batch_size=256)
        assert enc.sizes == [256, 256, 256, 256, 76]  # never the whole list at once
        assert len(ids) == 1100 and ix.count() == 1100
        assert ix.search(docs[1050], k=1)[0].id == ids[1050]


def test_encode_tokenises_in_bounded_spans(encoder, monkeypatch):
    from edgeemb.encode import encoder as encoder_module

    monkeypatch.setattr(encoder_module, "CHUNK_TEXTS", 16)
    monkeypatch.setattr(encoder_module, "CHUNK_CHARS", 2_000)
    cap = encoder.tokenizer.max_length * encoder_module.CHARS_PER_TOKEN_CAP
    calls: list[tuple[int, int]] = []
    real = encoder.tokenizer.tokenize

    def spy(texts):
        calls.append((len(texts), sum(min(len(t), cap) for t in texts)))
        return real(texts)

    monkeypatch.setattr(encoder.tokenizer, "tokenize", spy)
    texts = [f"sentence {i} about rivers and trains. " * (1 + i % 9) for i in range(120)] + ["x" * 50_000]
    with pytest.warns(TruncationWarning):  # the 50,000-character text
        out = encoder.encode(texts)
    assert out.shape == (len(texts), encoder.dim) and np.isfinite(out).all()
    assert sum(n for n, _ in calls) == len(texts) and len(calls) > 1
    for n, chars in calls:  # a span closes at the text that reaches a bound, so it exceeds it by one text at most
        assert n <= 16 and chars < 2_000 + cap


def test_default_session_runs_without_memory_patterns(default_bundle):
    import edgeemb

    enc = edgeemb.load(default_bundle, threads=1)
    assert enc.backend.session.get_session_options().enable_mem_pattern is False
    assert enc.backend.session.get_session_options().enable_cpu_mem_arena is True  # the arena stays on
    on = edgeemb.load(default_bundle, threads=1, mem_pattern=True)
    assert on.backend.session.get_session_options().enable_mem_pattern is True
    texts = ["a cat sits on the mat", "stock markets fell today " * 30, ""]
    np.testing.assert_array_equal(enc.encode(texts), on.encode(texts))  # memory planning changes no vector


def _prefix_study():
    """The memory study: its adversarial texts and prefix statistics for TextTokenizer.tokenize."""
    return pytest.importorskip("edgeemb_bench.studies.encode_memory")


def _long_texts() -> list[str]:
    """Corpus-shaped long texts: words, punctuation, accents and ideographs, 2 KB to 20 KB."""
    words = "The river's 3 bridges, rebuilt in 1897 (by Ünïcödé & Co.), carry 中文 trains; naïve café-goers wait. "
    return [(words * (size // len(words) + 1))[:size] for size in (2_048, 2_500, 9_000, 16_384, 20_000)]


def _whole(tt, texts):
    """Ground truth: every text cut to the character cap and tokenised whole, in one call."""
    from edgeemb.encode.batching import CHARS_PER_TOKEN_CAP

    cap = tt.max_length * CHARS_PER_TOKEN_CAP
    encs = tt.tokenizer.encode_batch([t[:cap] for t in texts])
    return ([e.ids for e in encs], [e.type_ids for e in encs],
            sum(1 for t, e in zip(texts, encs) if e.overflowing or len(t) > cap))


def _tokenizer(default_bundle):
    from edgeemb.encode.batching import TextTokenizer

    return TextTokenizer(default_bundle / "tokenizer.json", 256)


def test_tokenising_gives_the_whole_capped_texts_ids(default_bundle, monkeypatch):
    """TextTokenizer.tokenize (prefix-first, grouped) gives exactly whole tokenising's ids, in any group size."""
    from edgeemb.encode import batching

    study = _prefix_study()
    tt = _tokenizer(default_bundle)
    assert tt.word_local  # MiniLM's tokenizer qualifies, so the prefix path is taken
    texts = study.adversarial_texts(tt.max_length, batching.PREFIX_CHARS_PER_TOKEN) + _long_texts() + ["short one", ""]
    ids, type_ids, truncated = _whole(tt, texts)
    tok = tt.tokenize(texts)
    assert tok.ids == ids and tok.type_ids == type_ids and tok.truncated == truncated
    monkeypatch.setattr(batching, "GROUP_TEXTS", 3)
    monkeypatch.setattr(batching, "GROUP_CHARS", 20_000)
    tok = tt.tokenize(texts)
    assert tok.ids == ids and tok.type_ids == type_ids and tok.truncated == truncated
    cut, redo = study.prefix_stats(tt, texts)
    assert cut > redo > 0  # some prefixes overflowed (kept), some did not (tokenised again whole)


def test_a_cut_inside_a_word_would_change_ids(default_bundle, monkeypatch):
    """The check above is sensitive: cutting at the character budget instead of a word boundary changes ids."""
    from edgeemb.encode import batching

    study = _prefix_study()
    tt = _tokenizer(default_bundle)
    texts = study.adversarial_texts(tt.max_length, batching.PREFIX_CHARS_PER_TOKEN)
    assert tt.tokenize(texts).ids == _whole(tt, texts)[0]
    monkeypatch.setattr(batching, "_word_cut", lambda text, n, cjk: n)
    assert tt.tokenize(texts).ids != _whole(tt, texts)[0]


def test_prefix_tokenising_refuses_tokenizers_that_are_not_word_local():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    from edgeemb.encode.batching import word_local

    vocab = {"[UNK]": 0, "a": 1, "##b": 2}
    bert = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    bert.normalizer = normalizers.BertNormalizer()
    bert.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert word_local(bert)
    byte_level = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel()  # attaches a space to the next word
    assert not word_local(byte_level)
    nfkc = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    nfkc.normalizer = normalizers.NFKC()
    nfkc.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert not word_local(nfkc)
    bert.add_special_tokens(["<two words>"])  # an added token with a space could straddle the cut
    assert not word_local(bert)


@pytest.mark.parametrize("graph_cache", ["1", "0"])
def test_loading_hands_freed_heap_back(default_bundle, monkeypatch, graph_cache):
    """Session creation frees the parsed graph's buffers; load() trims them (glibc) so they are not resident."""
    import platform
    import sys

    import edgeemb
    from edgeemb.encode import backend

    monkeypatch.setenv("EDGEEMB_GRAPH_CACHE", graph_cache)  # the optimised copy's load path and the plain one
    calls: list[int] = []
    real = backend.release_free_heap
    monkeypatch.setattr(backend, "release_free_heap", lambda: calls.append(1) or real())
    edgeemb.load(default_bundle, threads=1)
    assert calls
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert backend._malloc_trim is not None  # found and called, not silently skipped

