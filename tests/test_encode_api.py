"""encode() as sentence-transformers users call it, and long documents embedded whole (long_text="window")."""
import numpy as np
import pytest

from edgeemb.errors import InputError

PASTA = "Boil the pasta in salted water, drain it and toss it with olive oil, garlic and parmesan. "
TRAINS = "The night train leaves the station at ten and reaches the border before the ticket check. "


def test_sentence_transformers_names_and_iterables(encoder):
    texts = ["a cat sits on the mat", "stock markets fell today"]
    ref = encoder.encode(texts)
    assert np.allclose(encoder.encode(t for t in texts), ref, atol=1e-6)  # a generator
    assert np.allclose(encoder.encode(np.array(texts)), ref, atol=1e-6)  # a numpy str array
    raw = encoder.encode(texts, normalize_embeddings=False)
    assert np.allclose(raw, encoder.encode(texts, normalize=False)) and not np.allclose(np.linalg.norm(raw, axis=1), 1)
    assert encoder.encode(texts, show_progress_bar=False, convert_to_numpy=True).shape == (2, 384)
    assert encoder.get_sentence_embedding_dimension() == 384 and encoder.max_seq_length == encoder.manifest.max_length
    with pytest.raises(InputError, match="prompt_name 'query' is not among"):
        encoder.encode(texts, prompt_name="query")
    with pytest.raises(InputError, match="convert_to_numpy=False"):
        encoder.encode(texts, convert_to_numpy=False)
    with pytest.raises(InputError, match="long_text must be"):
        encoder.encode(texts, long_text="summarise")


def test_window_equals_truncate_for_short_texts(encoder):
    texts = ["a short text", PASTA]
    assert np.allclose(encoder.encode(texts, long_text="window"), encoder.encode(texts), atol=1e-5)


def test_window_sees_the_whole_document(encoder):
    n = encoder.manifest.max_length
    head = PASTA * (n // 16 + 2)  # more than max_length tokens of cooking, then much more about trains
    doc = head + TRAINS * (3 * n // 16)
    truncated, whole = encoder.encode([doc]), encoder.encode([doc], long_text="window")
    pasta, trains = encoder.encode([PASTA, TRAINS])
    assert float(truncated[0] @ pasta) > float(truncated[0] @ trains)  # truncation only saw the cooking part
    assert float(whole[0] @ trains) > float(whole[0] @ pasta)  # the windows average is mostly trains
    assert abs(float(np.linalg.norm(whole[0])) - 1) < 1e-5


def test_window_needs_a_transformer_bundle():
    import edgeemb
    from edgeemb.paths import default_bundle_path

    if not default_bundle_path("default-static").is_dir():
        pytest.skip("default-static not built")
    with pytest.raises(InputError, match="needs a transformer bundle"):
        edgeemb.load("default-static").encode(["x"], long_text="window")


def test_a_text_with_no_known_token_is_counted_and_warned():
    import edgeemb
    from edgeemb.paths import default_bundle_path

    if not default_bundle_path("default-static").is_dir():
        pytest.skip("default-static not built")
    enc = edgeemb.load("default-static")
    with pytest.warns(edgeemb.ZeroVectorWarning, match="1 of 2 texts have no token"):
        vecs = enc.encode(["a cat on the mat", "\U0001F600\U0001F601"])
    assert enc.zero_vectors == 1 and not vecs[1].any() and vecs[0].any()


def test_chunked_tokenising_keeps_order_and_values(encoder, monkeypatch):
    from edgeemb.encode import encoder as encoder_module

    texts = [f"text number {i} " * (1 + i % 7) for i in range(50)]
    whole = encoder.encode(texts)

    def same(a, b):  # row i is text i, the vector unchanged (per-row int8 is batch-invariant, issue #15)
        return bool(((a * b).sum(axis=1) > 0.9999).all() and ((a @ b.T).argmax(axis=1) == np.arange(len(a))).all())

    monkeypatch.setattr(encoder_module, "CHUNK_TEXTS", 8)
    spans = list(encoder_module.tokenize_chunks(texts, 10_000))
    assert len(spans) == 7 and spans[0] == (0, 8) and spans[-1] == (48, 50)
    assert same(encoder.encode(texts), whole)
    monkeypatch.setattr(encoder_module, "CHUNK_CHARS", 100)  # every few texts a chunk, by characters
    assert len(list(encoder_module.tokenize_chunks(texts, 10_000))) > 7
    assert same(encoder.encode(texts), whole)


def test_a_short_tail_window_counts_by_its_tokens(encoder):
    n = encoder.manifest.max_length
    doc = "pasta " * (n - 2) + "train " * 10  # a little past max_length: the second window is a short tail
    tok, owner = encoder.tokenizer.tokenize_windows([doc])
    assert len(owner) == 2 and len(tok.ids[1]) < 0.25 * len(tok.ids[0])
    whole, first = encoder.encode([doc], long_text="window")[0], encoder.encode([doc])[0]
    tail = encoder.encode([encoder.tokenizer.tokenizer.decode(tok.ids[1])])[0]
    equal_weights = (first + tail) / np.linalg.norm(first + tail)
    assert float(whole @ first) > float(equal_weights @ first)  # the tail pulls by its share of tokens only


def test_windows_are_tokenised_in_bounded_spans_with_the_same_result(encoder, monkeypatch):
    from edgeemb.encode import encoder as encoder_module

    n = encoder.manifest.max_length
    docs = [("pasta " * (n + 40 * i)) + "train " * (10 * i) for i in range(6)] + ["short one"]
    whole = encoder.encode(docs, long_text="window")
    monkeypatch.setattr(encoder_module, "CHUNK_TEXTS", 2)  # windows of a span never mix with another span's
    chunked = encoder.encode(docs, long_text="window")
    assert ((whole * chunked).sum(axis=1) > 0.9999).all()  # per-row int8: a span changes nothing
    assert ((whole @ chunked.T).argmax(axis=1) == np.arange(len(docs))).all()
