"""BM25 keyword index: analysis, scores against the textbook formula, segments, snapshots, and its place in the
hybrid retriever (recall of rare terms, staying in step with the store through upserts, deletes and crashes)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgeemb.errors import IndexStoreError, InputError
from edgeemb.search import lexical as lex
from edgeemb.search.hybrid import LEXICAL_FILE, HybridRetriever
from edgeemb.search.lexical import LexicalIndex, analyze, plural_stem

sys.path.insert(0, str(Path(__file__).parent))
from stub_encoders import StubEncoder, make_docs

ROOT = Path(__file__).resolve().parent.parent
COARSE, FINE = StubEncoder(dim=16, salt=1, name="coarse"), StubEncoder(dim=48, salt=2, name="fine")


def reference_bm25(docs: list[str], query: str) -> np.ndarray:
    """BM25 written out term by term (k1 0.9, b 0.4, Lucene's idf), the check for the vectorised one."""
    bags = [Counter(analyze(d)) for d in docs]
    avg = sum(sum(b.values()) for b in bags) / len(bags)
    out = np.zeros(len(docs))
    for t in set(analyze(query)):
        df = sum(t in b for b in bags)
        if not df:
            continue
        idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
        for i, b in enumerate(bags):
            tf = b.get(t, 0)
            dl = sum(b.values())
            out[i] += idf * tf * 1.9 / (tf + 0.9 * (1 - 0.4 + 0.4 * dl / avg)) if tf else 0.0
    return out


def test_analysis_lowercases_splits_cjk_drops_stopwords_and_stems_plurals():
    assert analyze("The Cats of Paris and their PARTIES") == ["cat", "pari", "party"]  # the S-stemmer is crude, but the same on both sides
    assert analyze("这部电影很好看") == ["这", "部", "电", "影", "很", "好", "看"]
    assert analyze("GPU-2 drivers, v1.5") == ["gpu", "2", "driver", "v1", "5"]
    assert [plural_stem(w) for w in ("glass", "virus", "shoes", "species", "is", "dogs")] == \
        ["glass", "virus", "shoe", "specy", "is", "dog"]
    assert analyze("") == [] and analyze("the of and") == []


def test_scores_equal_the_textbook_formula():
    docs = make_docs(200, seed=3) + ["zebra crossing zebra", "a zebra", "zebras and lions"]
    lx = LexicalIndex()
    lx.add(range(len(docs)), docs)
    for query in ("zebra", "apple river item7", "cheese cheese island lion", "galaxy 这"):
        labels, scores = lx.search(query, 10)
        ref = reference_bm25(docs, query)
        top = np.argsort(-ref, kind="stable")[:10]
        top = top[ref[top] > 0]
        assert np.allclose(scores, ref[labels], rtol=1e-5)
        assert np.allclose(np.sort(scores)[::-1], ref[top], rtol=1e-5)  # the same best scores
    labels, _ = lx.search("zebra", 5)
    assert set(labels.tolist()) == {200, 201, 202}


def test_after_deletes_scores_are_those_of_the_surviving_documents():
    docs = make_docs(120, seed=4) + ["zebra zebra", "zebra", "a zebra crossing"]
    lx = LexicalIndex()
    lx.add(range(len(docs)), docs)
    gone = list(range(0, len(docs), 3)) + [120, 121]  # most "zebra" documents go: df and idf must follow
    lx.delete(gone)
    kept = [i for i in range(len(docs)) if i not in set(gone)]
    for query in ("zebra", "apple river item7", "castle bridge"):
        labels, scores = lx.search(query, 200)
        ref = reference_bm25([docs[i] for i in kept], query)
        by_label = dict(zip(kept, ref))
        assert set(labels.tolist()) == {i for i in kept if by_label[i] > 0}
        assert np.allclose(scores, [by_label[lab] for lab in labels.tolist()], rtol=1e-5)


def test_deleted_and_filtered_out_documents_never_come_back():
    docs = ["red apple", "green apple", "apple pie", "banana"]
    lx = LexicalIndex()
    lx.add(range(4), docs)
    lx.delete([1])
    assert set(lx.search("apple", 10)[0].tolist()) == {0, 2} and len(lx) == 3
    assert lx.search("apple", 10, allowed=np.array([2, 3]))[0].tolist() == [2]
    assert lx.search("zebra", 10)[0].tolist() == [] and lx.search("", 10)[0].tolist() == []
    with pytest.raises(InputError, match="new"):
        lx.add([1], ["reused label"])
    with pytest.raises(InputError, match="labels for"):
        lx.add([7, 8], ["one text"])


def test_recent_segment_merges_into_main_without_changing_results(monkeypatch):
    monkeypatch.setattr(lex, "MERGE_MIN", 16)
    monkeypatch.setattr(lex, "PENDING_MAX", 8)
    docs = make_docs(300, seed=5)
    step = LexicalIndex()
    for s in range(0, 300, 7):  # many small adds, searches in between: segments flush and merge
        step.add(range(s, min(s + 7, 300)), docs[s:s + 7])
        step.search("apple", 3)
    step.delete(range(0, 300, 10))
    once = LexicalIndex()
    once.add(range(300), docs)
    once.delete(range(0, 300, 10))
    for q in ("apple river", "item150 castle", "spring winter summer"):
        a, b = step.search(q, 20), once.search(q, 20)
        assert a[0].tolist() == b[0].tolist() and np.allclose(a[1], b[1])


def test_snapshot_round_trip_is_memory_mapped_and_equal(tmp_path):
    docs = make_docs(500, seed=7)
    lx = LexicalIndex()
    lx.add(range(500), docs)
    lx.delete([3, 4, 5])
    lx.save(tmp_path / "k.bm25")
    back = LexicalIndex.load(tmp_path / "k.bm25")
    assert isinstance(back._main.labels, np.memmap) and len(back) == 497
    assert back.labels().tolist() == list(range(500))  # deleted labels stay known (never reused)
    for q in ("apple", "item4 item9", "bridge forest desert"):
        a, b = lx.search(q, 15), back.search(q, 15)
        assert a[0].tolist() == b[0].tolist() and np.allclose(a[1], b[1])
    back.add([500], ["unique xylophone"])  # a loaded snapshot takes new documents
    assert back.search("xylophones", 1)[0].tolist() == [500]


@pytest.mark.parametrize("damage", ["magic", "truncate", "empty"])
def test_a_damaged_snapshot_is_refused_by_name(tmp_path, damage):
    lx = LexicalIndex()
    lx.add(range(50), make_docs(50))
    path = tmp_path / "k.bm25"
    lx.save(path)
    data = path.read_bytes()
    path.write_bytes(b"X" + data[1:] if damage == "magic" else data[:len(data) - 40] if damage == "truncate" else b"")
    with pytest.raises(IndexStoreError, match="k.bm25 is damaged"):
        LexicalIndex.load(path)


# -- in the hybrid retriever ------------------------------------------------------------------------------
def unrelated_docs(n: int) -> list[str]:
    return make_docs(n, seed=11)


def test_keywords_recall_a_rare_term_the_coarse_graph_misses(tmp_path):
    docs = unrelated_docs(400)
    docs[123] = "apple river castle wheel quetzalcoatl"
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:
        h.add(docs, ids=[f"d{i}" for i in range(400)])
        query = "quetzalcoatl piano violin guitar tennis chess"  # mostly other words: the coarse vector is far
        with_kw = h.search(query, k=10, candidates=10)
        without = h.search(query, k=10, candidates=10, lexical=False)
        assert "d123" in [x.id for x in with_kw] and with_kw.timings["lexical_candidates"] >= 1
        assert "d123" not in [x.id for x in without] and without.timings["lexical_candidates"] == 0
        assert with_kw.timings["candidates"] == 10


def test_keyword_index_follows_upsert_delete_and_filters(tmp_path):
    docs = unrelated_docs(200)
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:
        h.add(docs, ids=[f"d{i}" for i in range(200)], metadata=[{"half": i % 2} for i in range(200)])
        h.upsert(["apple ocelot"], ids=["d7"], metadata=[{"half": 1}])
        assert h.lexical.search("ocelot", 5)[0].size == 1
        hits = h.search("ocelot", k=3, candidates=4)
        assert hits[0].id == "d7" and hits[0].text == "apple ocelot"
        h.upsert(["banana only"], ids=["d7"])  # the old text's keyword is gone with it
        assert h.lexical.search("ocelot", 5)[0].size == 0
        h.add(["ocelot in the even half"], ids=["e"], metadata=[{"half": 0}])
        assert [x.id for x in h.search("ocelot", k=1, candidates=2, filter={"half": 0})] == ["e"]
        h.delete(["e"])
        assert h.lexical.search("ocelot", 5)[0].size == 0
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:  # the saved snapshot agrees after reopening
        assert h.lexical_repaired == 0 and len(h.lexical) == len(h) == 200
        assert h.lexical.search("ocelot", 5)[0].size == 0


def test_missing_or_stale_snapshot_is_rebuilt_from_the_store(tmp_path):
    docs = unrelated_docs(100)
    h = HybridRetriever(COARSE, FINE, tmp_path / "hy")
    h.add(docs, ids=[f"d{i}" for i in range(100)])
    h.save()
    h.add(["late armadillo"], ids=["late"])  # acknowledged after the snapshot was saved
    h.index.close()  # the process "dies" without saving the keyword index again
    h.fine_rows.close()
    with HybridRetriever(COARSE, FINE, tmp_path / "hy", read_only=True) as ro:
        assert ro.lexical_repaired == 1 and ro.search("armadillo", k=1, candidates=2)[0].id == "late"
    (tmp_path / "hy" / LEXICAL_FILE).write_bytes(b"garbage")
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h2:
        assert h2.lexical_repaired == 101 and h2.search("armadillo", k=1, candidates=2)[0].id == "late"
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h3:  # and it was saved again on close
        assert h3.lexical_repaired == 0


def test_a_damaged_snapshot_of_an_empty_index_is_replaced(tmp_path):
    HybridRetriever(COARSE, FINE, tmp_path / "hy").close()
    (tmp_path / "hy" / LEXICAL_FILE).write_bytes(b"garbage")
    HybridRetriever(COARSE, FINE, tmp_path / "hy").close()
    assert len(LexicalIndex.load(tmp_path / "hy" / LEXICAL_FILE)) == 0  # loads: a valid snapshot again


def test_lexical_off_at_creation(tmp_path):
    with HybridRetriever(COARSE, FINE, tmp_path / "hy", lexical=False) as h:
        h.add(unrelated_docs(20), ids=[f"d{i}" for i in range(20)])
        assert h.lexical is None and h.search("apple", k=2).timings["lexical_candidates"] == 0
        with pytest.raises(InputError, match="no keyword index"):
            h.search("apple", lexical=True)
    assert not (tmp_path / "hy" / LEXICAL_FILE).exists()
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:  # an existing index keeps its own setting
        assert h.lexical is None


CRASHER = """
import os, sys
sys.path.insert(0, sys.argv[2])
from stub_encoders import StubEncoder, make_docs
from edgeemb.search.hybrid import HybridRetriever
h = HybridRetriever(StubEncoder(dim=16, salt=1, name="coarse"), StubEncoder(dim=48, salt=2, name="fine"), sys.argv[1])
h.add(make_docs(30), ids=[f"a{i}" for i in range(30)])
h.save()
h.add(["tapir one"], ids=["t1"])
h.delete(["a3"])
h.upsert(["okapi two"], ids=["a4"])
print("acked", flush=True)
os._exit(137)
"""


def test_killed_writer_keyword_index_matches_the_store(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CRASHER, str(tmp_path / "hy"), str(Path(__file__).parent)],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 137 and out.stdout.split() == ["acked"], out.stderr
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:
        assert len(h) == len(h.lexical) == 30
        assert h.search("tapir", k=1, candidates=2)[0].id == "t1"
        assert h.search("okapi", k=1, candidates=2)[0].id == "a4"
        a3 = make_docs(30)[3].split()[-1]  # "item3": only the deleted document had it
        assert h.lexical.search(a3, 5)[0].size == 0


def test_delete_takes_any_iterable_of_ids_and_refuses_a_str(tmp_path):
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:
        h.add(["red fox", "blue whale", "green frog"], ids=["a", "b", "c"])
        assert h.delete(i for i in ("a", "b")) == 2  # a generator is read once, for both the store and keywords
        assert len(h) == len(h.lexical) == 1 and h.lexical.search("fox whale", 5)[0].size == 0
        with pytest.raises(InputError, match="not one str"):
            h.delete("c")
