"""Encoder behaviour on the default bundle: order, batching, truncation, threads, bad input."""
import numpy as np
import pytest

import edgeemb
from edgeemb.encode.batching import TextTokenizer, Tokenized
from edgeemb.errors import InputError

TEXTS = ["a", "short text", "a somewhat longer sentence about cooking pasta in salted water",
         "这部电影很好看", "", "one two three four five six seven eight nine ten eleven twelve thirteen"]


def cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_output_shape_dtype_and_normalisation(encoder):
    X = encoder.encode(TEXTS)
    assert X.shape == (len(TEXTS), 384) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    raw = encoder.encode(TEXTS, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    for a, b in zip(raw, X):
        assert cos(a, b) > 0.999


def test_length_sorting_restores_input_order(encoder):
    texts = ["word " * n for n in (30, 2, 17, 9, 1, 25, 5)]  # distinct lengths: batches do not depend on order
    X = encoder.encode(texts, batch_size=3)
    perm = [3, 0, 6, 2, 5, 1, 4]
    Y = encoder.encode([texts[i] for i in perm], batch_size=3)
    np.testing.assert_array_equal(Y, X[perm])
    alone = np.stack([encoder.encode(t) for t in texts])
    for a, b in zip(alone, X):  # int8 dynamic quantisation depends on the batch slightly
        assert cos(a, b) > 0.98


def test_batches_are_sorted_and_bounded_by_tokens():
    ids = [[1] * n for n in (5, 40, 3, 40, 12, 7, 100, 1)]
    tok = Tokenized(ids, [[0] * len(x) for x in ids], 0)
    tt = TextTokenizer.__new__(TextTokenizer)
    tt.pad_id, tt.padding_side = 0, "right"
    batches = list(tt.batches(tok, batch_size=4, max_tokens=100))
    seen = np.concatenate([b.rows for b in batches])
    assert sorted(seen.tolist()) == list(range(len(ids)))
    widths = [b.input_ids.shape[1] for b in batches]
    assert widths == sorted(widths)
    for b in batches:
        assert len(b.rows) <= 4
        assert len(b.rows) == 1 or b.input_ids.size <= 100
        assert (b.attention_mask.sum(1) == [len(ids[r]) for r in b.rows]).all()


def test_truncation_is_counted_and_reported(encoder):
    before = encoder.truncated
    with pytest.warns(edgeemb.TruncationWarning, match="1 of 2 texts"):
        X = encoder.encode(["short", "long " * 2000])
    assert encoder.truncated == before + 1 and np.isfinite(X).all()


def test_huge_text_is_cut_before_tokenising(encoder):
    with pytest.warns(edgeemb.TruncationWarning):
        v = encoder.encode("x" * 5_000_000)
    assert v.shape == (384,) and np.isfinite(v).all()


def test_single_string_empty_list_and_empty_string(encoder):
    assert encoder.encode("hello").shape == (384,)
    assert encoder.encode([]).shape == (0, 384)
    assert np.isfinite(encoder.encode([""])).all()


@pytest.mark.parametrize("bad, message", [
    ([None], r"texts\[0\] is NoneType"),
    (["ok", 3], r"texts\[1\] is int"),
    (b"bytes", "list of str"),
    (None, "list of str"),
])
def test_bad_texts_are_refused(encoder, bad, message):
    with pytest.raises(InputError, match=message):
        encoder.encode(bad)


def test_threads_are_honoured(default_bundle):
    enc = edgeemb.load(default_bundle, threads=1)
    opts = enc.backend.session.get_session_options()
    assert enc.threads == 1 and opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert edgeemb.load(default_bundle, threads=2).backend.session.get_session_options().intra_op_num_threads == 2
    low_enc = edgeemb.load(default_bundle, low_memory=True)
    low = low_enc.backend.session.get_session_options()
    assert low.intra_op_num_threads == 1 and low.enable_cpu_mem_arena and not low.enable_mem_pattern
    assert low_enc.max_tokens <= edgeemb.load(default_bundle).max_tokens and not low_enc.overlap
    with pytest.raises(InputError, match="threads"):
        edgeemb.load(default_bundle, threads=0)


def test_token_embeddings_and_similarity(encoder):
    tokens, vecs = encoder.token_embeddings("semantic search")
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and vecs.shape == (len(tokens), 384)
    sims = encoder.similarity(["a cat sat on the mat"], ["a kitten sat on a rug", "quarterly tax filing"])
    assert sims[0, 0] > sims[0, 1]


def test_default_names_resolve_to_the_same_bundle(default_bundle):
    assert edgeemb.load(threads=1).path == edgeemb.load("default", threads=1).path == default_bundle


class RecordingBackend:
    """Passes batches to the real backend and records each batch's (rows, padded width)."""

    def __init__(self, inner):
        self.inner, self.normalized, self.shapes = inner, inner.normalized, []

    def run(self, output_names, feeds):
        self.shapes.append(feeds["input_ids"].shape)
        return self.inner.run(output_names, feeds)


@pytest.mark.parametrize("max_tokens", [16, 64, 300])
def test_encode_honours_max_tokens(default_bundle, max_tokens):
    enc = edgeemb.load(default_bundle, threads=1)
    texts = [("word " * n).strip() for n in (1, 3, 8, 20, 40, 2, 13, 5, 30, 9)]
    want = enc.encode(texts, batch_size=64)
    enc.backend = RecordingBackend(enc.backend)
    got = enc.encode(texts, batch_size=64, max_tokens=max_tokens)
    assert sum(rows for rows, _ in enc.backend.shapes) == len(texts)
    assert all(rows == 1 or rows * width <= max_tokens for rows, width in enc.backend.shapes), enc.backend.shapes
    assert len(enc.backend.shapes) > 1 if max_tokens < 300 else len(enc.backend.shapes) >= 1
    assert ((got * want).sum(1) > 0.97).all()  # only the batch composition differs (dynamic int8 scales move)
