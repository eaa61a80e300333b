"""Pruned-vocabulary E5 bundles (export/sentence/prune.py) on a tiny E5S1 container: the kept pieces are the
counted ones + every single character + the specials and prompts, their 4-bit table rows are the source's bit for
bit, kept text encodes as the unpruned bundle does, an unseen word still tokenises without <unk>, and bad input
fails with an ExportError and no bundle."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from edgeemb_export.common.errors import ExportError
from test_e5s1 import tiny_container

pytest.importorskip("torch")

CORPUS = ["the cat sat on the mat"] * 3 + ["hello world", "这部电影很好看", "这部电影很好看"]
TEXTS = ["the cat sat on the mat", "hello world: the dog runs fast!", "这部电影很好看", "MiXeD CaSe 123"] * 2


def full_tokenizer(path: Path):
    from edgeemb_export.sentence.bert_source import from_e5s1

    return from_e5s1(path).tokenizer


def gather_table(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    """The GatherBlockQuantized data and scales of a bundle's graph."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundle / "model.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    return numpy_helper.to_array(inits[node.input[0]]), numpy_helper.to_array(inits[node.input[2]])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(container, corpus, full int4 bundle, pruned int4 bundle at min_count 2)."""
    from edgeemb_export.sentence.bert_export import export_bert_file
    from edgeemb_export.sentence.prune import export_pruned

    tmp = tmp_path_factory.mktemp("prune")
    path = tiny_container(tmp / "tiny.bin", seed=1)
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    full = export_bert_file(path, tmp / "full", "int4", parity_texts=TEXTS)
    pruned = export_pruned(path, tmp / "pruned", [corpus], min_count=2, parity_texts=TEXTS)
    return path, corpus, full, pruned


def pruned_pieces(bundle: Path) -> list[str]:
    data = json.loads((bundle / "tokenizer.json").read_text(encoding="utf-8"))
    return [p for p, _ in data["model"]["vocab"]]


def test_keeps_counted_pieces_single_characters_specials_and_prompts(built):
    from edgeemb_export.sentence.e5s1 import read_e5s1

    path, _, _, pruned = built
    tok = full_tokenizer(path)
    counts = Counter(t for text in CORPUS for t in tok.encode(text, add_special_tokens=False).tokens)
    vocab = read_e5s1(path).vocab
    prompts = {t for p in ("query: ", "passage: ") for t in tok.encode(p, add_special_tokens=False).tokens}
    want = ({p for p, c in counts.items() if c >= 2} | {p for p in vocab.pieces if len(p) == 1} | prompts
            | {vocab.pieces[i] for i in (vocab.bos, vocab.eos, vocab.pad, vocab.unk)})
    got = pruned_pieces(pruned)
    assert set(got) == want and len(got) == len(want) < len(vocab.pieces)
    assert counts["\u2581hello"] == 1 and "\u2581hello" not in got  # below min_count
    assert "\u2581cat" in got and "\u2581dog" not in got  # counted 3 times / never seen
    manifest = json.loads((pruned / "edgeemb.json").read_text())
    info = manifest["options"]["vocabulary"]
    assert info["pruned"] and info["min_count"] == 2 and info["kept"] == len(got)
    assert info["corpus_texts"] == len(CORPUS)
    assert manifest["source"]["files"] == {"tiny.bin": manifest["source"]["files"]["tiny.bin"]}  # the real source


def test_table_rows_are_the_source_rows_bit_for_bit(built):
    path, _, full, pruned = built
    tok = full_tokenizer(path)
    keep = [tok.token_to_id(p) for p in pruned_pieces(pruned)]
    assert keep == sorted(keep)  # ids renumbered in source order
    full_data, full_scales = gather_table(full)
    data, scales = gather_table(pruned)
    np.testing.assert_array_equal(data, full_data[keep])
    np.testing.assert_array_equal(scales, full_scales[keep])


def test_kept_text_encodes_as_the_unpruned_bundle(built):
    from tokenizers import Tokenizer

    import edgeemb

    path, _, full, pruned = built
    text = "the cat sat on the mat"
    tok = full_tokenizer(path)
    small = Tokenizer.from_file(str(pruned / "tokenizer.json"))
    assert small.encode(text).tokens == tok.encode(text).tokens
    a = edgeemb.load(full, threads=1).encode_documents([text, "这部电影很好看"])
    b = edgeemb.load(pruned, threads=1).encode_documents([text, "这部电影很好看"])
    assert (a * b).sum(1).min() >= 0.99999


def test_unseen_word_tokenises_without_unk(built):
    from tokenizers import Tokenizer

    _, _, _, pruned = built
    small = Tokenizer.from_file(str(pruned / "tokenizer.json"))
    enc = small.encode("hello zebra dog")
    unk = small.token_to_id("<unk>")
    assert unk not in enc.ids and "".join(enc.tokens[1:-1]) == "\u2581hello\u2581zebra\u2581dog"
    assert "\u2581hello" not in enc.tokens  # segmented into smaller kept pieces


@pytest.mark.parametrize("case, match", [("no corpus", "at least one corpus"), ("min_count 0", "min_count"),
                                         ("missing corpus", "does not exist"), ("keeps nothing", "keep no piece")])
def test_bad_input_fails_clearly_and_leaves_no_bundle(tmp_path, case, match):
    from edgeemb_export.sentence.prune import export_pruned

    path = tiny_container(tmp_path / "tiny.bin", seed=1)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world\n", encoding="utf-8")
    corpora, min_count = {"no corpus": ([], 1), "min_count 0": ([corpus], 0),
                          "missing corpus": ([tmp_path / "absent.txt"], 1),
                          "keeps nothing": ([corpus], 5)}[case]
    with pytest.raises(ExportError, match=match):
        export_pruned(path, tmp_path / "out", corpora, min_count=min_count, parity_texts=TEXTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "tiny.bin"]


def test_recipe_options_are_checked(tmp_path):
    from edgeemb_export.recipes import load_recipe, pruning_options

    def recipe(vocabulary) -> Path:
        p = tmp_path / "r.json"
        p.write_text(json.dumps({"name": "x", "kind": "sentence", "source": {"path": "tiny.bin"}, "quantize": "int4",
                                 "options": {"vocabulary": vocabulary}}))
        return p

    opts = pruning_options(load_recipe(recipe({"corpora": ["a/b.tsv"], "min_count": 3, "text_field": "sentence"})))
    assert opts["corpus_names"] == ["a/b.tsv"] and opts["corpora"][0].parts[-2:] == ("a", "b.tsv")
    assert (opts["min_count"], opts["top_n"], opts["text_field"]) == (3, None, "sentence")
    with pytest.raises(ExportError, match="unknown 'minimum'"):
        pruning_options(load_recipe(recipe({"corpora": ["a"], "minimum": 2})))
    with pytest.raises(ExportError, match="needs 'corpora'"):
        pruning_options(load_recipe(recipe({"min_count": 2})))
