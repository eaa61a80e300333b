"""Static bundles from word-vector files: every dialect, quantisation, tokenisation, sentence vectors, bad input."""
from __future__ import annotations

import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgeemb
from edgeemb.errors import BundleError

gensim_models = pytest.importorskip("gensim.models", reason="gensim is a test-only dependency")
static_export = pytest.importorskip("edgeemb_export.static.export", reason="needs the export extra")
static_readers = pytest.importorskip("edgeemb_export.static.readers")
ExportError = pytest.importorskip("edgeemb_export.common.errors").ExportError
StaticInputWarning = static_readers.StaticInputWarning

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "kitten", "puppy", "stock", "market", "bank", "river",
         "money", "fell", "rose", "king", "queen", "man", "woman", "apple"]


def random_kv(n_extra: int = 180, dim: int = 16, seed: int = 0):
    """gensim KeyedVectors over WORDS plus filler words, random but fixed vectors."""
    rng = np.random.default_rng(seed)
    words = WORDS + [f"w{i}" for i in range(n_extra)]
    kv = gensim_models.KeyedVectors(dim)
    kv.add_vectors(words, rng.standard_normal((len(words), dim)).astype(np.float32))
    return kv


def export(src, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StaticInputWarning)
        return edgeemb.load(static_export.export_static(src, out, show_progress=False, force=True, **kw), threads=1)


@pytest.fixture(scope="module")
def kv():
    return random_kv()


@pytest.fixture(scope="module")
def fp32_bundle(kv, tmp_path_factory):
    d = tmp_path_factory.mktemp("fp32")
    kv.save_word2vec_format(str(d / "v.txt"), binary=False)
    return export(d / "v.txt", d / "bundle", quantization="fp32")


# ---- dialects ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,suffix,binary,header", [
    ("word2vec-bin", ".bin", True, True), ("word2vec-text", ".txt", False, True),
    ("glove", ".txt", False, False), ("fasttext-vec", ".vec", False, True)])
def test_each_dialect_is_sniffed_and_read_exactly(kv, tmp_path, fmt, suffix, binary, header):
    src = tmp_path / f"vectors{suffix}"
    kv.save_word2vec_format(str(src), binary=binary, write_header=header)
    assert static_readers.sniff_format(src) == fmt
    enc = export(src, tmp_path / "b", quantization="fp32")
    assert enc.kind == "static" and enc.manifest.source["format"] == fmt
    assert enc.wv.index_to_key == kv.index_to_key
    np.testing.assert_allclose(enc.wv.vectors, kv.vectors, atol=1e-6 if binary else 1e-5)
    forced = export(src, tmp_path / "b2", fmt=fmt, quantization="fp32")
    assert forced.wv.index_to_key == enc.wv.index_to_key


@pytest.mark.parametrize("quantization,bound", [("fp16", 0.9999), ("int8", 0.999)])
def test_quantized_tables_stay_close_and_record_parity(kv, tmp_path, quantization, bound):
    src = tmp_path / "v.txt"
    kv.save_word2vec_format(str(src))
    enc = export(src, tmp_path / "b", quantization=quantization)
    assert enc.manifest.quantization == quantization
    assert enc.manifest.parity["cosine_min"] >= bound
    cos = (enc.wv.vectors * kv.vectors).sum(1) / np.linalg.norm(enc.wv.vectors, axis=1) / np.linalg.norm(kv.vectors, axis=1)
    assert cos.min() >= bound
    if quantization == "int8":
        assert np.load(enc.path / "vectors.npy").dtype == np.int8 and (enc.path / "scales.npy").is_file()


def test_max_vocab_keeps_the_first_words(kv, tmp_path):
    kv.save_word2vec_format(str(tmp_path / "v.txt"))
    enc = export(tmp_path / "v.txt", tmp_path / "b", max_vocab=7)
    assert enc.wv.index_to_key == kv.index_to_key[:7]


# ---- word API equals gensim on the same vectors -----------------------------------------------------------

QUERIES = [{"positive": ["king", "woman"], "negative": ["man"]}, {"positive": ["cat"]},
           {"positive": ["bank", "river"]}, {"positive": ["money"], "negative": ["stock"]},
           {"positive": [("apple", 2.0), "dog"], "negative": [("fell", -0.5)]}]


@pytest.mark.parametrize("query", QUERIES)
def test_most_similar_matches_gensim(fp32_bundle, kv, query):
    ours, theirs = fp32_bundle.wv.most_similar(**query, topn=10), kv.most_similar(**query, topn=10)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # gensim's own init_sims call
@pytest.mark.parametrize("query", QUERIES[:4])
def test_most_similar_cosmul_matches_gensim(fp32_bundle, kv, query):
    ours, theirs = fp32_bundle.wv.most_similar_cosmul(**query, topn=10), kv.most_similar_cosmul(**query, topn=10)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-5)


def test_similarity_doesnt_match_vector_match_gensim(fp32_bundle, kv):
    assert fp32_bundle.wv.similarity("cat", "dog") == pytest.approx(float(kv.similarity("cat", "dog")), abs=1e-6)
    assert fp32_bundle.similarity("cat", "dog") == pytest.approx(float(kv.similarity("cat", "dog")), abs=1e-5)
    words = ["cat", "dog", "kitten", "stock"]
    assert fp32_bundle.wv.doesnt_match(words) == kv.doesnt_match(words)
    np.testing.assert_allclose(fp32_bundle.wv.get_vector("queen"), kv["queen"], atol=1e-6)
    with pytest.raises(KeyError, match="not in the vocabulary"):
        fp32_bundle.wv.get_vector("zebra")
    with pytest.raises(KeyError):
        fp32_bundle.wv.most_similar("zebra")
    assert fp32_bundle.wv.has_index_for("cat") and not fp32_bundle.wv.has_index_for("zebra")


def test_sentence_bundles_have_no_word_api(encoder):
    assert getattr(encoder, "words", None) is None
    with pytest.raises(edgeemb.InputError, match="static bundle"):
        encoder.wv.most_similar("cat")


# ---- sentence vectors ---------------------------------------------------------------------------------------

def test_sentence_vector_is_the_sif_weighted_mean_of_known_words(fp32_bundle):
    enc = fp32_bundle
    weights = np.load(enc.path / "weights.npy")
    assert enc.manifest.pooling == "sif" and weights[0] < weights[-1]  # frequent words weigh less
    before = (enc.backend.known_tokens, enc.backend.unknown_tokens)
    got = enc.encode("The cat, sat on zebra mat!")  # lowercased (vocabulary has no capitals); 3 unknown
    idx = [enc.wv.index_to_key.index(w) for w in ("the", "cat", "sat", "on", "mat")]
    want = (enc.wv.vectors[idx] * weights[idx, None]).mean(0)
    np.testing.assert_allclose(got, want / np.linalg.norm(want), atol=1e-5)
    assert (enc.backend.known_tokens - before[0], enc.backend.unknown_tokens - before[1]) == (5, 3)  # ',', 'zebra', '!'


def test_batches_equal_single_texts_and_empty_texts_are_zero(fp32_bundle):
    texts = ["cat sat", "", "zebra", "the king and the queen rose " * 40, "dog"]
    batch = fp32_bundle.encode(texts, batch_size=2)
    for i, t in enumerate(texts):
        np.testing.assert_allclose(batch[i], fp32_bundle.encode(t), atol=1e-6)
    assert not batch[1].any() and not batch[2].any()


def test_plain_mean_pooling_has_no_weights(kv, tmp_path):
    kv.save_word2vec_format(str(tmp_path / "v.txt"))
    enc = export(tmp_path / "v.txt", tmp_path / "b", pooling="mean", quantization="fp32")
    assert "weights.npy" not in enc.manifest.files
    want = enc.wv.vectors[[enc.wv.index_to_key.index("cat"), enc.wv.index_to_key.index("dog")]].mean(0)
    np.testing.assert_allclose(enc.encode("cat dog"), want / np.linalg.norm(want), atol=1e-5)


def test_ascii_fast_path_gives_the_tokenizer_pipelines_ids(fp32_bundle, shared_data):
    texts = ["Hello, World!", "don't_stop 3.14", "a\x0cb", "naïve café", "tab\there", "[UNK] x", "x" * 2000]
    with open(shared_data / "en_corpus" / "en_sentences.tsv", encoding="utf-8") as f:
        texts += [line.split("\t", 1)[1].rstrip("\n") for _, line in zip(range(3000), f)][1:]
    for enc in (fp32_bundle,):
        tok = enc.tokenizer
        assert tok.fast is not None
        assert tok.tokenize(texts).ids == [e.ids for e in tok.tokenizer.encode_batch(texts)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WORDS + ["Cat", "w1", "zebra", " ", "  ", "\t", ",", "!", "'", "_", "-", "3.5", "(",
                                         "\n", "x_y", "[UNK]", "é", "\x0c"]), max_size=12))
def test_fast_path_property(fp32_bundle, parts):
    text = "".join(parts)
    tok = fp32_bundle.tokenizer
    assert tok.tokenize([text]).ids[0] == tok.tokenizer.encode(text).ids


# ---- lowercase and segmentation -------------------------------------------------------------------------------

def write_text(path, rows: list[tuple[str, list[float]]], header: bool = True) -> None:
    dim = len(rows[0][1])
    lines = ([f"{len(rows)} {dim}"] if header else []) + [w + " " + " ".join(map(str, v)) for w, v in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def rows_for(words, dim=4, seed=1):
    rng = np.random.default_rng(seed)
    return [(w, rng.standard_normal(dim).round(4).tolist()) for w in words]


def test_lowercase_auto_yes_no(tmp_path):
    write_text(tmp_path / "mixed.txt", rows_for(["Apple", "apple", "Bank", "river"]))
    auto = export(tmp_path / "mixed.txt", tmp_path / "a", quantization="fp32")
    assert auto.manifest.options["lowercase"] is False and auto.wv.index_to_key[:2] == ["Apple", "apple"]
    assert not np.allclose(auto.encode("Apple"), auto.encode("apple"))
    with pytest.warns(StaticInputWarning, match="merged by lowercasing"):
        yes = static_export.export_static(tmp_path / "mixed.txt", tmp_path / "y", lowercase="yes",
                                          quantization="fp32", show_progress=False)
    yes = edgeemb.load(yes)
    assert yes.wv.index_to_key == ["apple", "bank", "river"] and yes.manifest.source["read"]["case_merged"] == 1
    np.testing.assert_allclose(yes.encode("APPLE"), yes.encode("apple"))
    write_text(tmp_path / "low.txt", rows_for(["apple", "bank"]))
    low = export(tmp_path / "low.txt", tmp_path / "l")
    assert low.manifest.options["lowercase"] is True
    no = export(tmp_path / "low.txt", tmp_path / "n", lowercase="no")
    assert not no.encode("APPLE").any() and no.backend.unknown_tokens == 1


def test_chinese_words_and_characters_segment_by_longest_match(tmp_path):
    words = ["电影", "好看", "很", "这", "部", "电", "影", "好", "看", "，"]
    write_text(tmp_path / "zh.vec", rows_for(words, dim=6))
    enc = export(tmp_path / "zh.vec", tmp_path / "b", quantization="fp32", pooling="mean")
    assert enc.manifest.options["segmentation"] == "longest-match"
    ids = enc.tokenizer.tokenize(["这部电影很好看"]).ids[0]
    assert [enc.wv.index_to_key[i] for i in ids] == ["这", "部", "电影", "很", "好看"]
    # one unknown character costs only itself, not the whole phrase (WordPiece would drop all of it)
    got = enc.tokenizer.tokenize(["这部X电影吗"]).ids[0]
    assert [enc.wv.index_to_key[i] if i < len(enc.wv.index_to_key) else "?" for i in got] == ["这", "部", "?", "电影", "?"]
    want = enc.wv.vectors[[words.index(w) for w in ("这", "部", "电影")]].mean(0)
    np.testing.assert_allclose(enc.encode("这部X电影吗"), want / np.linalg.norm(want), atol=1e-5)
    chars = export(tmp_path / "zh.vec", tmp_path / "c", segmentation="words")
    assert chars.manifest.options["segmentation"] == "words"


# ---- bad input ------------------------------------------------------------------------------------------------

def test_header_dimension_disagreeing_with_rows(tmp_path):
    (tmp_path / "v.txt").write_text("2 3\na 1 2 3\nb 1 2\n")
    with pytest.raises(ExportError, match=r"line 3 has 2 values but the header says 3"):
        static_export.export_static(tmp_path / "v.txt", tmp_path / "b", show_progress=False)


def test_header_count_disagreeing_with_rows_is_counted(tmp_path):
    (tmp_path / "v.txt").write_text("5 2\na 1 2\nb 3 4\n")
    with pytest.warns(StaticInputWarning, match="fewer or more than the header"):
        out = static_export.export_static(tmp_path / "v.txt", tmp_path / "b", show_progress=False)
    assert edgeemb.load(out).manifest.source["read"]["header_count_mismatch"] == 3


def test_ragged_glove_rows(tmp_path):
    (tmp_path / "g.txt").write_text("a 1 2 3\nb 1 2 3\nc 1 2\n")
    with pytest.raises(ExportError, match=r"g.txt: line 3 has 2 values but line 1 has 3"):
        static_export.export_static(tmp_path / "g.txt", tmp_path / "b", fmt="glove", show_progress=False)
    (tmp_path / "h.txt").write_text("3 2\na 1 2\n")
    with pytest.raises(ExportError, match="try --format word2vec-text"):
        static_export.export_static(tmp_path / "h.txt", tmp_path / "b", fmt="glove", show_progress=False)


def test_duplicates_keep_the_first_and_are_counted(tmp_path):
    (tmp_path / "g.txt").write_text("a 1 0\nb 0 1\na 5 5\n")
    with pytest.warns(StaticInputWarning, match="1 duplicate words"):
        out = static_export.export_static(tmp_path / "g.txt", tmp_path / "b", quantization="fp32",
                                          show_progress=False)
    enc = edgeemb.load(out)
    assert enc.wv.index_to_key == ["a", "b"] and enc.manifest.source["read"] == {"duplicates": 1}
    np.testing.assert_allclose(enc.wv.get_vector("a"), [1, 0])


def test_invalid_utf8_words_stay_readable(tmp_path):
    (tmp_path / "g.txt").write_bytes(b"caf\xe9 1 0\nok 0 1\n\xff\xfe 1 1\n")
    with pytest.warns(StaticInputWarning, match="not valid UTF-8"):
        out = static_export.export_static(tmp_path / "g.txt", tmp_path / "b", quantization="fp32",
                                          show_progress=False)
    enc = edgeemb.load(out)
    assert enc.wv.index_to_key == ["caf\\xe9", "ok", "\\xff\\xfe"]
    assert enc.manifest.source["read"]["invalid_utf8"] == 2
    np.testing.assert_allclose(enc.wv.get_vector("caf\\xe9"), [1, 0])


def test_empty_vocabulary(tmp_path):
    (tmp_path / "e.txt").write_text("0 5\n")
    with pytest.raises(ExportError, match="empty vocabulary"):
        static_export.export_static(tmp_path / "e.txt", tmp_path / "b", show_progress=False)
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(ExportError, match="empty file"):
        static_export.export_static(tmp_path / "blank.txt", tmp_path / "b", show_progress=False)
    (tmp_path / "nan.txt").write_text("a nan 1\n")
    with pytest.raises(ExportError, match="empty vocabulary"):
        static_export.export_static(tmp_path / "nan.txt", tmp_path / "b", show_progress=False)


def test_nan_and_inf_rows_are_dropped_and_counted(tmp_path):
    (tmp_path / "g.txt").write_text("a 1 2\nb nan 1\nc 1 inf\nd 3 4\ne 1e39 0\n")
    with pytest.warns(StaticInputWarning, match="3 rows with NaN or inf"):
        out = static_export.export_static(tmp_path / "g.txt", tmp_path / "b", show_progress=False)
    assert edgeemb.load(out).wv.index_to_key == ["a", "d"]


def test_non_numeric_value_names_the_line(tmp_path):
    (tmp_path / "g.txt").write_text("a 1 2\nb 1 x2\n")
    with pytest.raises(ExportError, match=r"line 2: value b'x2' is not a number"):
        static_export.export_static(tmp_path / "g.txt", tmp_path / "b", show_progress=False)


def test_truncated_word2vec_binary(kv, tmp_path):
    src = tmp_path / "v.bin"
    kv.save_word2vec_format(str(src), binary=True)
    data = src.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match=r"truncated: the header says 200 words but the file ends inside word"):
        static_export.export_static(tmp_path / "cut.bin", tmp_path / "b", show_progress=False)


def test_truncated_fasttext_binary(tmp_path):
    head = struct.pack("<ii", 793712314, 12) + struct.pack("<12id", 4, 5, 1, 1, 5, 1, 1, 1, 10, 3, 6, 100, 1e-4)
    (tmp_path / "cut.bin").write_bytes(head + struct.pack("<iii", 3, 3, 0))
    with pytest.raises(ExportError, match="truncated fastText .bin"):
        static_export.export_static(tmp_path / "cut.bin", tmp_path / "b", show_progress=False)
    (tmp_path / "bad.bin").write_bytes(struct.pack("<ii", 793712314, 99) + b"\0" * 80)
    with pytest.raises(ExportError, match="version 99"):
        static_export.export_static(tmp_path / "bad.bin", tmp_path / "b", fmt="fasttext-bin", show_progress=False)


def test_damaged_table_is_a_bundle_error(fp32_bundle, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(fp32_bundle.path, dst)
    np.save(dst / "vectors.npy", np.zeros((3, 16), np.float32))
    with pytest.raises(BundleError, match="vectors.npy"):
        edgeemb.load(dst)
    with pytest.raises(BundleError, match=r"vectors.npy: shape \(3, 16\) differs"):
        edgeemb.load(dst, verify=False)


# ---- CLI and import graph ------------------------------------------------------------------------------------

def test_cli_export_static(kv, tmp_path, capsys):
    from edgeemb.cli import main

    kv.save_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    assert main(["export", "static", str(tmp_path / "v.bin"), "-o", str(tmp_path / "b"), "--quantize", "fp16"]) == 0
    assert edgeemb.load(tmp_path / "b").manifest.quantization == "fp16"
    assert main(["export", "static", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "c")]) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err


def test_static_runtime_imports_no_heavy_module(fp32_bundle):
    code = ("import sys, edgeemb; e = edgeemb.load(sys.argv[1]); e.encode(['cat sat']); e.wv.most_similar('cat');"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'onnx', 'onnxruntime', 'gensim', 'scipy', 'sklearn')))")
    out = subprocess.run([sys.executable, "-c", code, str(fp32_bundle.path)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---- real vectors from ../shared ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def glove(tmp_path_factory):
    from conftest import SHARED

    src = SHARED / "models" / "glove-twitter-25d-12k" / "glove.twitter.27B.25d.subset12k.txt"
    if not src.is_file():
        pytest.skip(f"GloVe Twitter vectors not found at {src}")
    kv = gensim_models.KeyedVectors.load_word2vec_format(str(src), binary=False, no_header=True)
    return kv, export(src, tmp_path_factory.mktemp("glove") / "b", quantization="fp32")


@pytest.mark.parametrize("query", [{"positive": ["king", "woman"], "negative": ["man"]}, {"positive": ["good"]},
                                   {"positive": ["paris", "germany"], "negative": ["france"]},
                                   {"positive": ["coffee", "morning"]}, {"positive": ["lol"], "negative": ["sad"]}])
def test_real_glove_top10_equals_gensim(glove, query):
    kv, enc = glove
    assert [w for w, _ in enc.wv.most_similar(**query)] == [w for w, _ in kv.most_similar(**query)]


@pytest.mark.slow
def test_real_glove_analogy_accuracy_equals_gensim(glove, shared_data):
    from edgeemb.eval import tasks

    kv, enc = glove
    theirs = kv.evaluate_word_analogies(str(shared_data / "google_analogy" / "questions-words.txt"))[0]
    ours = tasks.analogy(enc, datasets=["google_analogy"])[0].metrics["3cosadd"]
    assert abs(ours - 100 * theirs) < 0.1
