"""Multilingual distillation from an E5S1 container over a frequency-restricted vocabulary: a tiny random BERT
container (test_e5s1's builder) and a tiny corpus; kept ids, tokenisation of every corpus text, errors."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

import edgeemb

torch = pytest.importorskip("torch", reason="needs the export extra")
distill_mod = pytest.importorskip("edgeemb_export.static.distill", reason="needs the export extra")
from edgeemb_export.common.errors import ExportError
from edgeemb_export.recipes import build, load_recipe
from edgeemb_export.sentence.bert_source import load_bert_file, torch_bert
from edgeemb_export.common import vocab
from test_e5s1 import tiny_container
from torch_helpers import one_torch_thread  # noqa: F401

TEXTS = ["the cat sat on the mat", "the dog runs fast", "hello world, the cat!", "这部电影很好看",
         "电影 hello 好看 the", "queries: passage 42 ~ {x}", "the the the cat"]
SPECIALS = [0, 1, 2, 3]  # <s> <pad> </s> <unk>


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    return tiny_container(tmp_path_factory.mktemp("e5") / "tiny-e5.bin")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "tiny.tsv"
    path.write_text("source\tsentence\n" + "".join(f"t\t{t}\n" for t in TEXTS), encoding="utf-8")
    return path


def distil(container, corpus, out, top_n=6, **kw):
    return distill_mod.distill(container, out, corpora=[corpus], top_n=top_n, text_field="sentence",
                               show_progress=False, **kw)


def test_kept_ids_are_the_most_frequent_plus_every_character(container, corpus):
    tok = load_bert_file(container).tokenizer
    counts = vocab.count_tokens(tok, vocab.corpus_texts([corpus], "sentence"))
    # the same counts by hand, and the same characters
    want = Counter(i for e in tok.encode_batch(TEXTS, add_special_tokens=False) for i in e.ids)
    assert {i: int(c) for i, c in enumerate(counts.counts) if c} == dict(want)
    assert counts.characters == {c for t in TEXTS for c in tok.normalizer.normalize_str(t)} - {" "}
    spec = json.loads(tok.to_str())["model"]["vocab"]
    pieces, scores = [p for p, _ in spec], np.array([s for _, s in spec])
    keep = vocab.restrict(counts, scores, pieces, 3, SPECIALS)
    assert keep[:4] == SPECIALS and len(set(keep)) == len(keep)
    top = keep[4:7]
    assert sorted(want[i] for i in top) == sorted(sorted(want.values())[-3:])  # the 3 highest counts
    chars = {pieces.index(c) for c in counts.characters | {"\u2581"} if c in pieces}
    assert chars <= set(keep) and set(keep) == set(SPECIALS) | set(top) | chars


def test_every_corpus_text_tokenises_into_kept_pieces(container, corpus, tmp_path):
    enc = edgeemb.load(distil(container, corpus, tmp_path / "b", top_n=4, dims=8))
    m = enc.manifest
    assert (m.kind, m.dim, m.pooling) == ("static", 8, "sif")
    info = m.options["distilled"]["vocabulary"]
    assert info["top_n"] == 4 and info["tokenizer"] == "pruned"
    ids = enc.tokenizer.tokenize(TEXTS).ids
    assert all(row for row in ids)
    assert all(0 <= i < m.options["vocab_size"] and i != m.options["unk_id"] for row in ids for i in row)
    vecs = enc.encode(TEXTS)
    assert np.isfinite(vecs).all() and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert enc.backend.unknown_tokens == 0
    # a word the corpus never had still tokenises into kept pieces (down to characters), nothing dropped
    assert enc.tokenizer.tokenize(["tacos"]).ids[0] and enc.encode(["tacos"]).any()


def test_full_rank_table_keeps_the_teacher_geometry(container, corpus, tmp_path):
    out = distil(container, corpus, tmp_path / "b", top_n=200, dims=64, quantization="fp32")
    enc = edgeemb.load(out)
    keep = [i for i in range(4, enc.manifest.options["vocab_size"])]
    words = [enc.wv.index_to_key[i] for i in keep]
    source = load_bert_file(container)
    teacher_ids = [source.tokenizer.token_to_id(w) for w in words]
    model = torch_bert(source)
    seqs = torch.tensor([[0, i, 2] for i in teacher_ids])
    with torch.inference_mode():
        states = model(input_ids=seqs, attention_mask=torch.ones_like(seqs),
                       token_type_ids=torch.zeros_like(seqs)).last_hidden_state.mean(1).numpy()
    centred = states - states.mean(0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    table = enc.wv.vectors[keep]
    got = table / np.linalg.norm(table, axis=1, keepdims=True)
    np.testing.assert_allclose(got @ got.T, unit @ unit.T, atol=1e-4)
    assert not enc.wv.vectors[:4].any()  # specials have no vector


def test_teacher_tokenizer_mode_skips_dropped_pieces(container, corpus, tmp_path):
    enc = edgeemb.load(distil(container, corpus, tmp_path / "b", top_n=2, dims=4, prune=False))
    teacher = load_bert_file(container).tokenizer
    text = "the dog runs fast"
    want = teacher.encode(text, add_special_tokens=False).tokens
    got = enc.tokenizer.tokenizer.encode(text).tokens
    assert got == want  # the teacher's segmentation, with the other pieces after the table
    ids = enc.tokenizer.tokenize([text]).ids[0]
    size = enc.manifest.options["vocab_size"]
    assert any(i >= size for i in ids)
    enc.encode([text])
    assert enc.backend.unknown_tokens == sum(i >= size for i in ids)


def test_bad_input_is_refused_clearly(container, corpus, tmp_path):
    for top_n in (0, -3):
        with pytest.raises(ExportError, match="top_n"):
            distil(container, corpus, tmp_path / "b", top_n=top_n)
    empty = tmp_path / "empty.tsv"
    empty.write_text("source\tsentence\n", encoding="utf-8")
    with pytest.raises(ExportError, match="no text"):
        distil(container, empty, tmp_path / "b")
    with pytest.raises(ExportError, match="corpus not found"):
        distil(container, tmp_path / "missing.tsv", tmp_path / "b")
    with pytest.raises(ExportError, match="corpora"):
        distill_mod.distill(container, tmp_path / "b", corpora=[], top_n=3, show_progress=False)
    assert not (tmp_path / "b").exists()


def test_recipe_builds_from_a_container(container, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEEMB_DATA", str(corpus.parent))
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"name": "tiny-ml-static", "kind": "distill", "quantize": "int8",
                                  "source": {"path": str(container)},
                                  "options": {"dims": 4, "top_n": 5, "corpora": [corpus.name],
                                              "text_field": "sentence"}}))
    out = build(load_recipe(recipe), tmp_path / "built")
    enc = edgeemb.load(out)
    assert enc.dim == 4 and enc.manifest.options["distilled"]["vocabulary"]["top_n"] == 5
    assert enc.encode(TEXTS).shape == (len(TEXTS), 4)
