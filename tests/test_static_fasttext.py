"""fastText .bin: word vectors, counts and n-gram vectors for unknown words, checked against gensim's FastText."""
from __future__ import annotations

import numpy as np
import pytest

import edgeemb
from edgeemb.static.subwords import byte_ngrams, fasttext_hash, subword_buckets

fasttext = pytest.importorskip("gensim.models.fasttext", reason="gensim is a test-only dependency")
static_export = pytest.importorskip("edgeemb_export.static.export", reason="needs the export extra")

CORPUS = [s.split() for s in [
    "the cat sat on the mat", "the dog sat on the log", "a kitten is a young cat", "a puppy is a young dog",
    "stock markets fell sharply today", "the market rose after the bank report", "café naïve déjà vu",
    "电影 很 好看", "the river bank was muddy", "cats and dogs are pets",
] * 3]
OOV = ["catlike", "dogs!", "marketing", "kittens", "naïveté", "电影院", "zzzq", "x"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = fasttext.FastText(vector_size=8, window=3, min_count=1, epochs=3, bucket=3000, min_n=2, max_n=4,
                          seed=1, workers=1)
    m.build_vocab(corpus_iterable=CORPUS)
    m.train(corpus_iterable=CORPUS, total_examples=len(CORPUS), epochs=3)
    return m


@pytest.fixture(scope="module")
def ft_bin(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ft") / "tiny.bin"
    fasttext.save_facebook_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def bundle(ft_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("ftb") / "bundle"
    return edgeemb.load(static_export.export_static(ft_bin, out, quantization="fp32", show_progress=False))


def test_hash_and_ngrams_match_gensim():
    from gensim.models import fasttext_inner

    for word in ["cat", "naïve", "电影院", "x", ""]:
        grams = byte_ngrams(f"<{word}>".encode(), 2, 5)
        assert grams == fasttext_inner.compute_ngrams_bytes(word, 2, 5)
        assert [fasttext_hash(g) for g in grams] == [fasttext_inner.ft_hash_bytes(g) for g in grams]
        assert subword_buckets(word, 2, 5, 2_000_000) == fasttext.ft_ngram_hashes(word, 2, 5, 2_000_000)


def test_bin_is_sniffed_and_words_equal_gensim(bundle, model):
    m = bundle.manifest
    assert m.source["format"] == "fasttext-bin"
    assert m.options["subwords"] == {"minn": 2, "maxn": 4, "bucket": 3000}
    assert m.options["weights_from"] == "counts"
    assert bundle.wv.index_to_key == model.wv.index_to_key
    np.testing.assert_allclose(bundle.wv.vectors, np.stack([model.wv[w] for w in bundle.wv.index_to_key]), atol=1e-5)


def test_unknown_words_get_gensims_ngram_vectors(bundle, model):
    for word in OOV:
        assert word not in model.wv.key_to_index
        np.testing.assert_allclose(bundle.wv.get_vector(word), model.wv[word], atol=1e-5, err_msg=word)


def test_unknown_words_count_in_sentence_vectors(bundle, model):
    weights = np.load(bundle.path / "weights.npy")
    got = bundle.encode("the catlike kittens")
    i = bundle.wv.index_to_key.index("the")
    want = (model.wv["the"] * weights[i] + model.wv["catlike"] + model.wv["kittens"]) / 3
    np.testing.assert_allclose(got, want / np.linalg.norm(want), atol=1e-5)
    assert bundle.encode(["the catlike kittens", "zzzq"], batch_size=1)[0] == pytest.approx(got, abs=1e-6)
    assert bundle.backend.unknown_tokens == 0  # every unknown word here has n-grams


def test_int8_bundle_keeps_ngram_vectors_close(ft_bin, model, tmp_path):
    enc = edgeemb.load(static_export.export_static(ft_bin, tmp_path / "b8", show_progress=False))
    assert (enc.path / "ngram_scales.npy").is_file()
    for word in OOV:
        a, b = enc.wv.get_vector(word), model.wv[word]
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.999
