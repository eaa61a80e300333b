"""Bounded encoding memory (issue 14): bounds on what is tokenised, run and encoded per call, not on RSS.

RSS on a shared machine is too noisy to assert; what keeps the peak bounded is asserted instead: encode() hands
the tokenizer bounded spans, the session runs without memory patterns (one planned block per shape made
onnxruntime's arena map regions of 64 MB and more), and Index.add encodes a list in chunks of batch_size.
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
