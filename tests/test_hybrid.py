"""HybridRetriever: coarse recall, int8 memory-mapped fine rerank (stored or live), persistence, crashes, CLI."""
from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeemb.errors import IndexMismatchError, IndexStoreError, InputError
from edgeemb.search.hybrid import FINE_FILE, HybridRetriever, Results
from edgeemb.search.index import Index
from edgeemb.search.int8rows import HEADER

sys.path.insert(0, str(Path(__file__).parent))
from stub_encoders import StubEncoder, make_docs

ROOT = Path(__file__).resolve().parent.parent
COARSE, FINE = StubEncoder(dim=16, salt=1, name="coarse"), StubEncoder(dim=48, salt=2, name="fine")
TIMINGS = {"coarse_encode_ms", "fine_encode_ms", "ann_ms", "rerank_ms", "fetch_ms", "total_ms", "candidates", "lexical_ms",
           "lexical_candidates", "bits_ms", "bits_candidates"}


def build(path=None, n: int = 300, **kw) -> tuple[HybridRetriever, list[str]]:
    docs = make_docs(n)
    h = HybridRetriever(COARSE, FINE, path, **kw)
    h.add(docs, ids=[f"d{i}" for i in range(n)], metadata=[{"half": i % 2} for i in range(n)])
    return h, docs


def exact_fine(docs: list[str], query: str) -> np.ndarray:
    return FINE.encode(docs) @ FINE.encode([query])[0]


def test_search_returns_hits_with_fields_and_stage_timings():
    h, docs = build()
    res = h.search(docs[5], k=4, candidates=40)
    assert isinstance(res, Results) and len(res) == 4 and set(res.timings) == TIMINGS
    assert res.timings["candidates"] == 40 and res.timings["total_ms"] > 0
    top = res[0]
    assert (top.id, top.text, top.metadata) == ("d5", docs[5], {"half": 1}) and top.score > 0.99
    assert [r.score for r in res] == sorted((r.score for r in res), reverse=True)
    h.close()


def test_stored_rerank_is_the_exact_fine_ranking_over_the_candidates():
    h, docs = build()
    query = "piano river cheese"
    res = h.search(query, k=10, candidates=len(docs))  # every document is a candidate
    exact = exact_fine(docs, query)
    kth = np.sort(exact)[-10]
    for hit in res:
        true = exact[int(hit.id[1:])]
        assert abs(hit.score - true) < 0.01  # int8 rows with a per-row scale
        assert true >= kth - 0.01
    h.close()


def test_fine_vectors_live_int8_in_a_memory_mapped_file(tmp_path):
    h, docs = build(tmp_path / "hy", n=120)
    size = (tmp_path / "hy" / FINE_FILE).stat().st_size
    assert size >= HEADER + 120 * (4 + FINE.dim)
    mm = h.fine_rows._mm
    assert isinstance(getattr(mm.base, 'obj', None), mmap.mmap) and not mm.flags.owndata and mm.dtype["q"].base == np.int8
    labels, _ = h.index.vectors()
    approx = h.fine_rows.vectors(labels)
    cos = np.sum(approx * FINE.encode(docs), axis=1) / np.linalg.norm(approx, axis=1)
    assert cos.min() > 0.999
    h.close()


def test_live_rerank_encodes_candidates_now():
    h, _ = build(n=200)
    stored = h.search("guitar winter castle", k=5, candidates=50)
    calls = FINE.calls
    live = h.search("guitar winter castle", k=5, candidates=50, rerank="live")
    assert FINE.calls == calls + 2  # the query and the 50 candidates
    assert [x.id for x in live][:3] == [x.id for x in stored][:3]
    assert all(abs(a.score - b.score) < 0.01 for a, b in zip(live, stored))
    h.close()


def test_live_rerank_with_another_encoder():
    other = StubEncoder(dim=64, salt=3, name="llm")
    docs = make_docs(100)
    h = HybridRetriever(COARSE, FINE, live=other)
    h.add(docs)
    res = h.search("tennis planet", k=3, candidates=100, rerank="live")
    exact = other.encode(docs) @ other.encode(["tennis planet"])[0]
    assert [x.text for x in res] == [docs[i] for i in np.argsort(-exact)[:3]]
    h.close()


def test_reopen_keeps_results_and_checks_both_bundles(tmp_path):
    h, docs = build(tmp_path / "hy", n=100)
    before = [(x.id, round(x.score, 5)) for x in h.search(docs[9], k=5)]
    h.close()
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as again:
        assert len(again) == 100 and [(x.id, round(x.score, 5)) for x in again.search(docs[9], k=5)] == before
    with pytest.raises(IndexMismatchError, match="fine bundle 'fine'"):
        HybridRetriever(COARSE, StubEncoder(dim=48, salt=9, name="fine2"), tmp_path / "hy")
    with pytest.raises(IndexMismatchError, match="coarse bundle 'coarse'"):
        HybridRetriever(StubEncoder(dim=16, salt=8), FINE, tmp_path / "hy")
    with HybridRetriever(COARSE, FINE, tmp_path / "hy", read_only=True) as ro:
        assert ro.search(docs[9], k=1)[0].id == "d9"
        with pytest.raises(IndexStoreError, match="read-only"):
            ro.add(["x"])


def test_a_plain_index_is_not_opened_as_hybrid(tmp_path):
    Index.create(tmp_path / "plain", dim=16).close()
    with pytest.raises(IndexStoreError, match="plain index"):
        HybridRetriever(COARSE, FINE, tmp_path / "plain")


def test_upsert_delete_and_filter(tmp_path):
    h, docs = build(tmp_path / "hy", n=150)
    h.upsert(["violin violin desert"], ids=["d3"], metadata=[{"half": 0, "new": True}])
    hit = h.search("violin violin desert", k=1, candidates=20)[0]
    assert hit.id == "d3" and hit.score > 0.99 and hit.metadata == {"half": 0, "new": True}
    h.delete(["d4"])
    assert "d4" not in {x.id for x in h.search(docs[4], k=10)}
    halves = h.search(docs[7], k=20, filter={"half": 1})
    assert len(halves) == 20 and all(x.metadata["half"] == 1 for x in halves) and halves[0].id == "d7"
    with pytest.raises(InputError, match="'halve'"):
        h.search(docs[7], filter={"halve": 1})
    h.close()
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as again:
        assert again.search("violin violin desert", k=1)[0].id == "d3" and again.get("d4") is None


def test_coarse_dim_keeps_a_prefix_of_the_coarse_vectors():
    h, docs = build(n=100, coarse_dim=8)
    assert h.index.dim == 8 and h.coarse_dim == 8
    labels, stored = h.index.vectors()
    full = COARSE.encode_documents([h.index.documents([lab])[lab].text for lab in labels.tolist()])
    want = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(stored, want, atol=1e-6)  # the first 8 dims, renormalised
    q = COARSE.encode_queries([docs[20]])[:, :8]
    assert h.index.candidates(q[0] / np.linalg.norm(q), 1)[0][0] == labels[20]
    assert h.search(docs[20], k=1, candidates=30)[0].id == "d20"
    h.close()
    with pytest.raises(InputError, match="coarse_dim"):
        HybridRetriever(COARSE, FINE, coarse_dim=17)


def test_bad_search_input():
    h, docs = build(n=20)
    for kw, match in (({"rerank": "cross"}, "rerank"), ({"k": 0}, "k must"), ({"candidates": -1}, "candidates")):
        with pytest.raises(InputError, match=match):
            h.search("x", **kw)
    with pytest.raises(InputError, match="str"):
        h.search(None)
    assert len(h.search(docs[0], k=50, candidates=5)) == 20  # candidates below k: k are recalled
    with pytest.raises(InputError, match="more than once"):
        h.add(["a", "b"], ids=["x", "x"])
    with pytest.raises(InputError, match="'nope'"):
        h.delete(["nope"])
    h.close()


def test_truncated_fine_file_is_detected(tmp_path):
    h, _ = build(tmp_path / "hy", n=50)
    h.close()
    fine = tmp_path / "hy" / FINE_FILE
    with open(fine, "r+b") as f:
        f.truncate(HEADER + 10 * (4 + FINE.dim))
    with pytest.raises(IndexStoreError, match="truncated"):
        HybridRetriever(COARSE, FINE, tmp_path / "hy")


CRASHER = """
import os, sys
sys.path.insert(0, sys.argv[2])
from stub_encoders import StubEncoder, make_docs
from edgeemb.search.hybrid import HybridRetriever
h = HybridRetriever(StubEncoder(dim=16, salt=1, name="coarse"), StubEncoder(dim=48, salt=2, name="fine"), sys.argv[1])
docs = make_docs(60)
h.add(docs[:30], ids=[f"a{i}" for i in range(30)])
print("acked", flush=True)
os.environ["EDGEEMB_CRASH_AT"] = sys.argv[3]
h.add(docs[30:], ids=[f"b{i}" for i in range(30)])
"""


@pytest.mark.parametrize("point", ["before-commit", "store-committed"])
def test_writer_killed_around_the_commit_keeps_fine_rows_and_store_in_step(tmp_path, point):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EDGEEMB_CRASH_AT", None)
    out = subprocess.run([sys.executable, "-c", CRASHER, str(tmp_path / "hy"), str(Path(__file__).parent), point],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 137 and out.stdout.split() == ["acked"], out.stderr
    docs = make_docs(60)
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:
        expected = 30 if point == "before-commit" else 60  # fine rows written, commit lost / commit made
        assert len(h) == expected
        for i in range(0, expected, 7):
            hit = h.search(docs[i], k=1, candidates=60)[0]
            assert hit.text == docs[i] and hit.score > 0.99
        fresh = ["cheese cheese cheese island", "rocket rocket nurse"]
        h.add(fresh, ids=["c0", "c1"])  # reuses the rows an uncommitted batch may have left behind
        assert [h.search(t, k=1, candidates=80)[0].id for t in fresh] == ["c0", "c1"]
        assert h.search(fresh[1], k=1, candidates=80)[0].score > 0.99


# -- the CLI with real bundles ------------------------------------------------------------------------------
def bundle_or_skip(name: str) -> str:
    from edgeemb.paths import default_bundle_path

    if not default_bundle_path(name).is_dir():
        pytest.skip(f"the {name} bundle is not built (run `edgeemb setup`)")
    return name


def run_cli(*argv: str, capsys) -> tuple[int, str, str]:
    from edgeemb.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_hybrid_build_and_search_with_stage_timings(tmp_path, capsys):
    fine = bundle_or_skip("default")
    try:
        coarse = bundle_or_skip("default-static")
    except pytest.skip.Exception:
        coarse = fine
    corpus = tmp_path / "corpus.tsv"
    rows = ["A cat sleeps on the warm windowsill.", "The stock market fell sharply today.",
            "Fresh bread is baked every morning.", "The football team won the championship.",
            "Heavy rain is expected this weekend.", "猫在窗台上睡觉。"]
    corpus.write_text("text\tlang\n" + "".join(f"{r}\t{'zh' if '猫' in r else 'en'}\n" for r in rows), encoding="utf-8")
    code, out, err = run_cli("index", "build", "--coarse", coarse, "--fine", fine, str(corpus), "-o",
                             str(tmp_path / "hy"), capsys=capsys)
    assert code == 0, err
    assert "hybrid" in out and "6 documents" in out
    code, out, err = run_cli("search", str(tmp_path / "hy"), "a kitten napping", "-k", "2", "--candidates", "6",
                             "--json", capsys=capsys)
    assert code == 0, err
    res = json.loads(out)
    assert set(res["timings"]) == TIMINGS and len(res["hits"]) == 2
    assert res["hits"][0]["text"] in (rows[0], rows[5])
    code, out, err = run_cli("search", str(tmp_path / "hy"), "weather forecast", "-k", "1", "--rerank", "live",
                             "--json", capsys=capsys)
    assert code == 0, err
    assert json.loads(out)["hits"][0]["text"] == rows[4]
    code, _, err = run_cli("index", "build", "--coarse", coarse, str(corpus), "-o", str(tmp_path / "x"), capsys=capsys)
    assert code == 2 and "--fine" in err
    code, out, err = run_cli("search", str(tmp_path / "hy"), "championship", "-k", "1", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["timings"]["lexical_candidates"] == 1  # only one text has the word
    code, out, err = run_cli("search", str(tmp_path / "hy"), "championship", "-k", "1", "--no-lexical", "--json",
                             capsys=capsys)
    assert code == 0 and json.loads(out)["timings"]["lexical_candidates"] == 0
    code, out, err = run_cli("index", "build", "--coarse", coarse, "--fine", fine, "--no-lexical", str(corpus), "-o",
                             str(tmp_path / "nokw"), capsys=capsys)
    assert code == 0 and "no keywords" in out and not (tmp_path / "nokw" / "lexical.bm25").exists()
    code, _, err = run_cli("index", "build", fine, str(corpus), "-o", str(tmp_path / "p"), "--no-lexical",
                           capsys=capsys)
    assert code == 2 and "--no-lexical is for a hybrid index" in err


def test_cli_live_rerank_needs_a_hybrid_index(tmp_path, capsys):
    fine = bundle_or_skip("default")
    corpus = tmp_path / "c.txt"
    corpus.write_text("one document\nanother document\n", encoding="utf-8")
    code, _, err = run_cli("index", "build", fine, str(corpus), "-o", str(tmp_path / "plain"), capsys=capsys)
    assert code == 0, err
    code, _, err = run_cli("search", str(tmp_path / "plain"), "doc", "--rerank", "live", capsys=capsys)
    assert code == 2 and "hybrid" in err
    code, out, err = run_cli("search", str(tmp_path / "plain"), "doc", "--json", "--candidates", "5", capsys=capsys)
    assert code == 0 and len(json.loads(out)["hits"]) == 2


def test_add_vectors_with_precomputed_embeddings_matches_add():
    docs = make_docs(80)
    a, _ = build(n=80)
    b = HybridRetriever(COARSE, FINE)
    b.add_vectors(COARSE.encode(docs), FINE.encode(docs), docs, ids=[f"d{i}" for i in range(80)])
    for q in ("apple tennis", docs[3]):
        assert [(x.id, round(x.score, 4)) for x in a.search(q, k=5)] == [(x.id, round(x.score, 4))
                                                                          for x in b.search(q, k=5)]
    with pytest.raises(InputError, match="shapes"):
        b.add_vectors(COARSE.encode(docs[:2]), FINE.encode(docs[:3]), docs[:2])
    a.close()
    b.close()


def test_full_disk_while_writing_fine_rows_stores_nothing(tmp_path, monkeypatch):
    import errno

    from edgeemb.search import int8rows as vectorfile

    h, _ = build(tmp_path / "hy", n=40)

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vectorfile.os, "pwrite", full)
    with pytest.raises(IndexStoreError, match="No space left.*previous state"):
        h.add(["tennis chess rocket"], ids=["late"])
    monkeypatch.undo()
    assert len(h) == 40 and h.get("late") is None
    h.add(["tennis chess rocket"], ids=["late"])  # and the next write works
    assert h.search("tennis chess rocket", k=1)[0].id == "late"
    h.close()
