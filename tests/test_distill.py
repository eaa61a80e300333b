"""Distillation (model2vec-style) from a tiny random BERT, and the real default static bundle when built."""
from __future__ import annotations

import json

import numpy as np
import pytest

import edgeemb

torch = pytest.importorskip("torch", reason="needs the export extra")
transformers = pytest.importorskip("transformers", reason="needs the export extra")
distill_mod = pytest.importorskip("edgeemb_export.static.distill", reason="needs the export extra")

SPECIAL = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PIECES = list("abcdefghijklmnopqrstuvwxyz.,!?'") + ["the", "cat", "dog", "sat", "on", "mat", "market", "stock",
                                                   "fell", "rose", "river", "bank", "##s", "##ing", "##ed", "play"]


def tiny_sentence_model(folder, hidden: int = 16) -> None:
    """A sentence-transformers folder: random 2-layer BERT, WordPiece tokenizer, mean pooling, Normalize."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(SPECIAL + PIECES)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 4), ("[SEP]", 5)])
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.enable_padding(length=16, pad_id=0)  # as MiniLM's tokenizer.json does (fixed padding to 128)
    tok.enable_truncation(16)
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).eval().save_pretrained(str(folder))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher") / "tiny-bert"
    tiny_sentence_model(folder)
    return folder


def teacher_states(folder, ids: list[int]) -> np.ndarray:
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    seqs = torch.tensor([[4, i, 5] for i in ids])
    with torch.inference_mode():
        return model(input_ids=seqs, attention_mask=torch.ones_like(seqs)).last_hidden_state.mean(1).numpy()


def test_full_rank_distillation_preserves_token_geometry(teacher, tmp_path):
    out = distill_mod.distill(teacher, tmp_path / "s", dims=16, quantization="fp32", show_progress=False)
    enc = edgeemb.load(out)
    m = enc.manifest
    assert (m.kind, m.dim, m.pooling, m.quantization) == ("static", 16, "sif", "none")
    assert m.options["distilled"]["tokens"] == len(SPECIAL) + len(PIECES) - 3  # minus [UNK] and [unusedN]
    assert m.options["distilled"]["wrap"] == ["[CLS]", "token", "[SEP]"]
    keep = [i for i, w in enumerate(enc.wv.index_to_key) if w not in ("[UNK]", "[unused0]", "[unused1]")]
    assert not enc.wv.vectors[[3, 1, 2]].any()  # [UNK] and placeholders have no vector
    # with dims == hidden size, PCA is a rotation of the centred states: every cosine is kept
    states = teacher_states(teacher, keep)
    centred = states - states.mean(0)
    want = centred @ centred.T / np.outer(np.linalg.norm(centred, axis=1), np.linalg.norm(centred, axis=1))
    table = enc.wv.vectors[keep]
    got = table @ table.T / np.outer(np.linalg.norm(table, axis=1), np.linalg.norm(table, axis=1))
    np.testing.assert_allclose(got, want, atol=1e-4)
    weights = np.load(enc.path / "weights.npy")[keep]
    assert np.all(np.diff(weights) > 0)  # Zipf over the token rank: later tokens weigh more


def test_texts_use_the_teacher_tokenizer_without_special_tokens(teacher, tmp_path):
    enc = edgeemb.load(distill_mod.distill(teacher, tmp_path / "s", dims=4, quantization="fp32",
                                           show_progress=False))
    assert enc.tokenizer.fast is not None  # BERT pipeline on ASCII: the word-cache fast path
    texts = ["The cats sat on the mat!", "playing stock markets", "naïve [CLS] x", "zzz~"]
    assert enc.tokenizer.tokenize(texts).ids == [e.ids for e in enc.tokenizer.tokenizer.encode_batch(texts)]
    v = enc.wv.index_to_key
    ids = enc.tokenizer.tokenize(["The cats sat"]).ids[0]
    assert [v[i] for i in ids] == ["the", "cat", "##s", "sat"]
    weights = np.load(enc.path / "weights.npy")
    want = (enc.wv.vectors[ids] * weights[ids, None]).mean(0)
    np.testing.assert_allclose(enc.encode("The cats sat"), want / np.linalg.norm(want), atol=1e-5)
    assert enc.wv.most_similar("cat", topn=3)[0][0] in v


def test_bert_fast_path_matches_tokenizers_on_random_ascii(teacher, tmp_path):
    enc = edgeemb.load(distill_mod.distill(teacher, tmp_path / "s", dims=4, show_progress=False))
    rng = np.random.default_rng(0)
    alphabet = list("the cat sat,!?'_-.~^[]CLS") + [" ", "  ", "\t", "\n", "x" * 120, "é", "[CLS]", "[cls]"]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 20))) for _ in range(500)]
    assert enc.tokenizer.tokenize(texts).ids == [e.ids for e in enc.tokenizer.tokenizer.encode_batch(texts)]


def test_pca_reduces_to_decreasing_variance_axes(teacher, tmp_path):
    enc = edgeemb.load(distill_mod.distill(teacher, tmp_path / "s", dims=5, quantization="int8",
                                           show_progress=False))
    assert enc.dim == 5 and enc.manifest.quantization == "int8"
    keep = np.flatnonzero(np.abs(enc.wv.vectors).sum(1) > 0)
    var = enc.wv.vectors[keep].var(0)
    assert np.all(np.diff(var) < 0)
    assert 0 < enc.manifest.options["distilled"]["explained_variance"] < 1


def test_vocab_size_cuts_the_table_and_later_ids_are_unknown(teacher, tmp_path):
    enc = edgeemb.load(distill_mod.distill(teacher, tmp_path / "s", dims=4, vocab_size=len(SPECIAL) + 26,
                                           show_progress=False))
    assert len(enc.wv.index_to_key) == len(SPECIAL) + 26
    enc.encode("cat a")  # 'cat' is past the cut, 'a' is inside it
    assert (enc.backend.known_tokens, enc.backend.unknown_tokens) == (1, 1)


def test_cli_distill(teacher, tmp_path):
    from edgeemb.cli import main

    assert main(["distill", str(teacher), "-o", str(tmp_path / "d"), "--dims", "8"]) == 0
    assert edgeemb.load(tmp_path / "d").dim == 8
    assert main(["distill", str(tmp_path), "-o", str(tmp_path / "e")]) == 2


@pytest.fixture(scope="module")
def default_static():
    from edgeemb.paths import default_bundle_path

    path = default_bundle_path("default-static")
    if not (path / "edgeemb.json").is_file():
        pytest.skip(f"default static bundle not built at {path}: run `bash scripts/setup.sh --dev`")
    return edgeemb.load("default-static", threads=1)


def test_default_static_bundle(default_static):
    enc = default_static
    assert (enc.kind, enc.dim, enc.manifest.quantization) == ("static", 256, "int8")
    assert len(enc.wv.index_to_key) > 30_000 and enc.tokenizer.fast is not None
    a, b, c = enc.encode(["a man is playing a guitar", "someone plays the guitar", "stock markets fell today"])
    assert a @ b > a @ c + 0.2
    assert "guitars" in [w for w, _ in enc.wv.most_similar("guitar", topn=20)]
