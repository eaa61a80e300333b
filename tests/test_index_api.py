"""The Index API users know from chroma and hnswlib: create(exist_ok), count, get(list), update, delete(filter),
upsert keeping metadata, batch search, the filter grammar (in, ne, nin, and, or, ranges), streamed adds."""
from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeemb.errors import IndexMismatchError, IndexStoreError, InputError
from edgeemb.search.hybrid import HybridRetriever
from edgeemb.search.index import STORE, Index

sys.path.insert(0, str(Path(__file__).parent))
from stub_encoders import StubEncoder, make_docs

DIM = 16
COARSE, FINE = StubEncoder(dim=16, salt=1, name="coarse"), StubEncoder(dim=48, salt=2, name="fine")


def vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def meta_of(i: int) -> dict:
    """Metadata with ints, floats, strings, booleans, lists and a field only some documents have."""
    m = {"n": i % 7, "price": round(i * 0.75, 2), "lang": ["en", "zh", "fr"][i % 3], "flag": i % 4 == 0,
         "tags": ["odd"] if i % 2 else ["even", "x"]}
    if i % 5 == 0:
        m["rare"] = i
    return m


@pytest.fixture
def index(tmp_path):
    ix = Index.create(tmp_path / "ix", dim=DIM)
    ix.add_vectors(vecs(120), [f"t{i}" for i in range(120)], [f"d{i}" for i in range(120)],
                   [meta_of(i) for i in range(120)])
    yield ix
    ix.close()


def matching(pred) -> set[str]:
    return {f"d{i}" for i in range(120) if pred(meta_of(i))}


def found(ix: Index, flt: dict) -> set[str]:
    return {h.id for h in ix.search(vecs(1, 9)[0], k=1000, filter=flt)}


# -- create(exist_ok), count, get ---------------------------------------------------------------------------
def test_create_exist_ok_reopens_the_same_bundle_and_refuses_another(tmp_path):
    enc = StubEncoder(dim=24)
    for _ in range(2):  # the README's block run twice
        with Index.create(tmp_path / "ix", enc, exist_ok=True) as ix:
            if not len(ix):
                ix.add(make_docs(5), ids=[f"a{i}" for i in range(5)])
            assert ix.count() == 5
    with pytest.raises(IndexStoreError, match="already holds an index"):
        Index.create(tmp_path / "ix", enc)
    with pytest.raises(IndexMismatchError):
        Index.create(tmp_path / "ix", StubEncoder(dim=24, salt=9), exist_ok=True)
    with pytest.raises(IndexMismatchError, match="dim 24"):
        Index.create(tmp_path / "ix", dim=8, exist_ok=True)
    HybridRetriever(COARSE, FINE, tmp_path / "hy").close()
    with pytest.raises(IndexMismatchError, match="hybrid index"):
        Index.create(tmp_path / "hy", dim=16, exist_ok=True)
    Index.open(tmp_path / "ix", enc).close()  # nothing left locked


def test_count_and_get_of_a_list(index):
    assert index.count() == len(index) == 120
    got = index.get(["d3", "nope", "d7"])
    assert [h and h.id for h in got] == ["d3", None, "d7"]
    assert got[0].text == "t3" and got[0].metadata == meta_of(3)
    assert index.get("d9").metadata == meta_of(9) and index.get("nope") is None
    with pytest.raises(InputError, match=r"ids\[1\]"):
        index.get(["d1", 5])


# -- update, delete(filter), upsert without metadata ---------------------------------------------------------
def test_update_merges_metadata_without_reembedding_and_survives_reopen(tmp_path):
    enc = StubEncoder(dim=24)
    ix = Index.create(tmp_path / "ix", enc)
    ix.add(make_docs(10), ids=[f"d{i}" for i in range(10)], metadata=[{"lang": "en", "n": i} for i in range(10)])
    calls, vector = enc.calls, ix.vectors()[1][3].copy()
    assert ix.update(["d3", "d4"], {"read": True}) == 2
    assert ix.update(["d5"], [{"lang": None, "n": 50}]) == 1
    assert enc.calls == calls and np.array_equal(ix.vectors()[1][3], vector)  # no encoding, same vector
    assert ix.get("d3").metadata == {"lang": "en", "n": 3, "read": True}
    assert ix.get("d5").metadata == {"n": 50}
    assert {h.id for h in ix.search(make_docs(10)[0], k=20, filter={"read": True})} == {"d3", "d4"}
    assert {h.id for h in ix.search(make_docs(10)[0], k=20, filter={"n": {"$gte": 9}})} == {"d9", "d5"}
    with pytest.raises(InputError, match="'ghost'.*nothing was updated"):
        ix.update(["d1", "ghost"], {"read": True})
    assert "read" not in ix.get("d1").metadata
    ix.close()
    with Index.open(tmp_path / "ix") as again:
        assert again.get("d4").metadata["read"] is True and again.get("d5").metadata == {"n": 50}


def test_delete_by_filter(index, tmp_path):
    zh = matching(lambda m: m["lang"] == "zh")
    assert index.delete(filter={"lang": "zh"}) == len(zh)
    assert index.count() == 120 - len(zh) and all(index.get(i) is None for i in zh)
    assert not found(index, {"lang": {"$in": ["zh", "en"]}}) & zh
    with pytest.raises(InputError, match="ids or a filter"):
        index.delete()
    with pytest.raises(InputError, match="ids or a filter"):
        index.delete(["d1"], filter={"lang": "en"})
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:
        h.add(["red fox", "blue whale", "green frog"], ids=["a", "b", "c"], metadata=[{"k": 1}, {"k": 2}, {"k": 1}])
        assert h.delete(filter={"k": 1}) == 2
        assert h.count() == len(h.lexical) == 1 and h.lexical.search("fox frog", 5)[0].size == 0


def test_upsert_without_metadata_keeps_the_stored_metadata(tmp_path):
    enc = StubEncoder(dim=24)
    with Index.create(tmp_path / "ix", enc) as ix:
        ix.add(["apple pie", "river bank"], ids=["a", "b"], metadata=[{"lang": "en"}, {"lang": "fr"}])
        ix.upsert(["apple tart"], ids=["a"])
        ix.upsert(["new one"], ids=["c"])
        ix.upsert_vectors(enc.encode(["river side"]), ["river side"], ["b"])
        assert ix.get("a").text == "apple tart" and ix.get("a").metadata == {"lang": "en"}
        assert ix.get("b").metadata == {"lang": "fr"} and ix.get("c").metadata == {}
        ix.upsert(["apple crumble"], ids=["a"], metadata=[{}])  # explicit metadata still replaces
        assert ix.get("a").metadata == {}
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:
        h.add(["red fox"], ids=["a"], metadata=[{"lang": "en"}])
        h.upsert(["red foxes"], ids=["a"])
        assert h.get("a").metadata == {"lang": "en"} and h.get("a").text == "red foxes"


# -- batch search --------------------------------------------------------------------------------------------
def test_batch_search_with_texts_and_matrices(tmp_path):
    enc = StubEncoder(dim=24)
    docs = make_docs(80)
    with Index.create(tmp_path / "ix", enc) as ix:
        ix.add(docs)
        queries = [docs[3], docs[40], docs[77]]
        batch = ix.search(queries, k=4)
        assert [[h.id for h in hits] for hits in batch] == [[h.id for h in ix.search(q, k=4)] for q in queries]
        matrix = enc.encode(queries)
        assert [[h.id for h in hits] for hits in ix.search(matrix, k=4)] == [[h.id for h in b] for b in batch]
        one = ix.search(matrix[:1], k=2)
        assert isinstance(one, list) and len(one) == 1 and one[0][0].text == docs[3]
        assert ix.search([], k=3) == []
        with pytest.raises(InputError, match=r"shape \(2, 384\).*dimension 24"):
            ix.search(np.zeros((2, 384), np.float32))
        with pytest.raises(InputError, match=r"queries\[1\] is list"):
            ix.search(["fine", ["nested"]])
        with pytest.raises(InputError, match=r"shape \(1, 2, 24\)"):
            ix.search(np.zeros((1, 2, 24)))


def test_batch_search_with_a_filter(index):
    q = vecs(3, 5)
    hits = index.search(q, k=10, filter={"lang": "fr"})
    assert len(hits) == 3 and all(h.metadata["lang"] == "fr" for hs in hits for h in hs)
    assert [h.id for h in hits[2]] == [h.id for h in index.search(q[2], k=10, filter={"lang": "fr"})]


# -- filters ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flt, pred", [
    ({"lang": {"$in": ["zh", "fr"]}}, lambda m: m["lang"] in ("zh", "fr")),
    ({"lang": {"$ne": "en"}}, lambda m: m["lang"] != "en"),
    ({"lang": {"$eq": "en"}}, lambda m: m["lang"] == "en"),
    ({"n": {"$nin": [0, 1, 2]}}, lambda m: m["n"] not in (0, 1, 2)),
    ({"tags": {"$ne": "odd"}}, lambda m: "odd" not in m["tags"]),
    ({"rare": {"$ne": 10}}, lambda m: m.get("rare") != 10),  # documents without the field match $ne
    ({"$and": [{"lang": "en"}, {"flag": True}]}, lambda m: m["lang"] == "en" and m["flag"]),
    ({"$or": [{"lang": "zh"}, {"n": 6}]}, lambda m: m["lang"] == "zh" or m["n"] == 6),
    ({"lang": "fr", "n": {"$lt": 3}}, lambda m: m["lang"] == "fr" and m["n"] < 3),
    ({"price": {"$gt": 30.5}}, lambda m: m["price"] > 30.5),
    ({"price": {"$gte": 30, "$lte": 60}}, lambda m: 30 <= m["price"] <= 60),
    ({"n": {"$gte": 2.5}}, lambda m: m["n"] >= 2.5),
    ({"rare": {"$lt": 50}}, lambda m: "rare" in m and m["rare"] < 50),
    ({"$or": [{"price": {"$lt": 3}}, {"$and": [{"n": {"$gt": 5}}, {"lang": {"$ne": "zh"}}]}]},
     lambda m: m["price"] < 3 or (m["n"] > 5 and m["lang"] != "zh")),
])
def test_filter_grammar_matches_a_python_reference(index, flt, pred):
    expected = matching(pred)
    assert expected and len(expected) < 120  # each case is informative
    assert found(index, flt) == expected


def test_ranges_never_match_strings_or_booleans(index):
    assert found(index, {"flag": {"$gte": 0}}) == set()  # booleans are not numbers
    with pytest.raises(InputError, match="needs a number"):
        index.search(vecs(1)[0], filter={"price": {"$gt": "3"}})
    with pytest.raises(InputError, match="needs a number"):
        index.search(vecs(1)[0], filter={"price": {"$gt": True}})


@pytest.mark.parametrize("flt, message", [
    ({"lang": {"$regex": "e.*"}}, "unsupported operator '\\$regex'"),
    ({"$not": {"lang": "en"}}, "unsupported operator '\\$not'"),
    ({"lang": {"$in": []}}, "lists no values"),
    ({"lang": {"$in": "en"}}, "needs a list"),
    ({"$and": []}, "non-empty list"),
    ({"$or": [{"lnag": "en"}]}, "'lnag'"),
    ({}, "non-empty dict"),
])
def test_bad_filters_are_errors_naming_the_problem(index, flt, message):
    with pytest.raises(InputError, match=message):
        index.search(vecs(1)[0], filter=flt)


def test_an_index_made_before_range_filters_opens_and_filters(tmp_path, index):
    index.close()
    db = sqlite3.connect(tmp_path / "ix" / STORE)
    with db:
        db.execute("DROP INDEX facets_numeric")  # the schema of earlier versions
    db.close()
    with Index.open(tmp_path / "ix", read_only=True) as ro:  # no write: answered by a scan
        assert found(ro, {"price": {"$lt": 10}}) == matching(lambda m: m["price"] < 10)
    with Index.open(tmp_path / "ix") as ix:  # a writer adds the numeric index
        assert found(ix, {"price": {"$lt": 10}}) == matching(lambda m: m["price"] < 10)
    db = sqlite3.connect(tmp_path / "ix" / STORE)
    plan = " ".join(str(r) for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT label FROM facets WHERE field = 'price' AND value GLOB '[0-9-]*' "
        "AND CAST(value AS REAL) < 10"))
    db.close()
    assert "facets_numeric" in plan


# -- streamed adds ---------------------------------------------------------------------------------------------
class CountingEncoder(StubEncoder):
    """Records how many texts each encode call got and how far the caller's generator had run by then."""

    def __init__(self, produced: list[int]):
        super().__init__(dim=24)
        self.produced, self.sizes, self.seen = produced, [], []

    def encode(self, texts, batch_size: int = 32, **kw):
        self.sizes.append(len(texts))
        self.seen.append(self.produced[0])
        return super().encode(texts)

    encode_queries = encode
    encode_documents = encode


def test_add_streams_a_generator_chunk_by_chunk(tmp_path):
    produced = [0]
    docs = make_docs(1300)

    def stream():
        for d in docs:
            produced[0] += 1
            yield d

    enc = CountingEncoder(produced)
    with Index.create(tmp_path / "ix", enc) as ix:
        ids = ix.add(stream(), batch_size=512)
        assert enc.sizes == [512, 512, 276]
        assert enc.seen[0] <= 513  # the first chunk was encoded before the rest of the stream was read
        assert ids == [f"doc-{i}" for i in range(1300)] and ix.count() == 1300
        assert ix.search(docs[1000], k=1)[0].id == "doc-1000"
        more = ix.add((d + " again" for d in docs[:3]), ids=iter(["x", "y", "z"]),
                      metadata=({"i": i} for i in range(3)))
        assert more == ["x", "y", "z"] and ix.get("y").metadata == {"i": 1}
        with pytest.raises(InputError, match="ids"):
            ix.add(iter(["a", "b"]), ids=iter(["only-one"]))
