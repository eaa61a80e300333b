"""Index life cycle: round trip, delete, upsert, compact, resize, k > n, filters, bad input, errors, threads."""
from __future__ import annotations

import errno
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edgeemb.search.graph as graph_module
import edgeemb.search.index as index_module
from edgeemb.errors import IndexMismatchError, IndexStoreError, InputError
from edgeemb.search.index import STORE, Index

sys.path.insert(0, str(Path(__file__).parent))
from stub_encoders import StubEncoder, make_docs

DIM = 16


def vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def texts(n: int, prefix: str = "t") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def build(path, n: int = 200, seed: int = 0, **kw) -> tuple[Index, np.ndarray]:
    index = Index.create(path, dim=DIM, **kw)
    x = vecs(n, seed)
    index.add_vectors(x, texts(n), ids=[f"d{i}" for i in range(n)],
                      metadata=[{"lang": "zh" if i % 20 == 0 else "en", "n": i % 3, "tags": ["odd"] if i % 2 else []}
                                for i in range(n)])
    return index, x


def top_id(index: Index, v: np.ndarray, **kw) -> str:
    return index.search(v, k=1, **kw)[0].id


# -- round trip ---------------------------------------------------------------------------------------------
def test_round_trip_keeps_documents_vectors_and_metadata(tmp_path):
    index, x = build(tmp_path / "ix")
    before = [(h.id, round(h.score, 5)) for h in index.search(x[7], k=5)]
    index.close()
    with Index.open(tmp_path / "ix") as again:
        assert len(again) == 200
        assert [(h.id, round(h.score, 5)) for h in again.search(x[7], k=5)] == before
        hit = again.get("d7")
        assert hit.text == "t7" and hit.metadata == {"lang": "en", "n": 1, "tags": ["odd"]}
        _, stored = again.vectors()
        assert np.array_equal(stored, x)


def test_round_trip_with_text_encoder(tmp_path):
    enc = StubEncoder(dim=24)
    docs = make_docs(60)
    with Index.create(tmp_path / "ix", enc) as index:
        index.add(docs)
    with Index.open(tmp_path / "ix", enc) as index:
        assert index.search(docs[11], k=1)[0].text == docs[11]


def test_generated_ids_are_unique_and_returned(tmp_path):
    with Index.create(tmp_path / "ix", dim=DIM) as index:
        a = index.add_vectors(vecs(3), texts(3))
        b = index.add_vectors(vecs(2, 1), texts(2))
        assert len(set(a + b)) == 5 and all(index.get(i) for i in a + b)


# -- delete, k > n, resize ----------------------------------------------------------------------------------
def test_delete_removes_from_results_and_survives_reopen(tmp_path):
    index, x = build(tmp_path / "ix")
    assert index.delete(["d3", "d4"]) == 2
    assert index.get("d3") is None and len(index) == 198
    assert "d3" not in {h.id for h in index.search(x[3], k=20)}
    index.close()
    with Index.open(tmp_path / "ix") as again:
        assert again.get("d4") is None and len(again) == 198
        assert "d4" not in {h.id for h in again.search(x[4], k=20)}


def test_delete_unknown_id_is_an_error_and_deletes_nothing(tmp_path):
    index, _ = build(tmp_path / "ix", n=10)
    with pytest.raises(InputError, match="'nope'"):
        index.delete(["d1", "nope"])
    assert index.get("d1") is not None and len(index) == 10
    assert index.delete(["d1", "nope"], missing_ok=True) == 1
    index.close()


def test_k_larger_than_live_documents_returns_them_all(tmp_path):
    index, x = build(tmp_path / "ix", n=12)
    assert len(index.search(x[0], k=50)) == 12
    index.delete([f"d{i}" for i in range(8)])
    hits = index.search(x[0], k=50)
    assert sorted(h.id for h in hits) == sorted(f"d{i}" for i in range(8, 12))
    index.delete([f"d{i}" for i in range(8, 12)])
    assert index.search(x[0], k=5) == []
    index.close()


def test_growth_beyond_initial_capacity(tmp_path):
    index = Index.create(tmp_path / "ix", dim=DIM, capacity=16)
    x = vecs(300)
    for s in range(0, 300, 50):
        index.add_vectors(x[s:s + 50], texts(50, f"b{s}-"), ids=[f"d{i}" for i in range(s, s + 50)])
    assert len(index) == 300 and index.graph.index.get_max_elements() >= 300
    assert all(top_id(index, x[i]) == f"d{i}" for i in range(0, 300, 37))
    index.close()


# -- upsert and compaction ----------------------------------------------------------------------------------
def test_upsert_replaces_vector_text_and_metadata_without_stale_neighbour(tmp_path):
    index, x = build(tmp_path / "ix", n=100)
    new = vecs(1, seed=99)[0]
    index.upsert_vectors(new[None], ["replaced"], ["d5"], metadata=[{"v": 2}])
    assert len(index) == 100 and index.graph.element_count == 100  # the old slot was reused
    assert index.get("d5").text == "replaced" and index.get("d5").metadata == {"v": 2}
    assert top_id(index, new) == "d5"
    old_hits = index.search(x[5], k=3)
    assert all(not (h.id == "d5" and h.score > 0.99) for h in old_hits)  # the old vector is gone
    index.close()
    with Index.open(tmp_path / "ix") as again:
        assert top_id(again, new) == "d5" and again.search(new, k=1)[0].score > 0.999
        assert all(not (h.id == "d5" and h.score > 0.99) for h in again.search(x[5], k=3))


def test_upsert_adds_new_ids_and_must_exist_refuses_unknown(tmp_path):
    index, _ = build(tmp_path / "ix", n=5)
    index.upsert_vectors(vecs(1, 5), ["fresh"], ["new-id"])
    assert index.get("new-id").text == "fresh" and len(index) == 6
    with pytest.raises(InputError, match="'ghost'"):
        index.upsert_vectors(vecs(1, 6), ["x"], ["ghost"], must_exist=True)
    assert index.get("ghost") is None
    index.close()


def test_readded_id_after_delete_is_found(tmp_path):
    index, x = build(tmp_path / "ix", n=50)
    index.delete(["d9"])
    index.add_vectors(x[9:10], ["back"], ["d9"])
    assert top_id(index, x[9]) == "d9" and index.get("d9").text == "back"
    index.close()


def test_compaction_drops_tombstones_and_keeps_results(tmp_path):
    index, x = build(tmp_path / "ix", n=400)
    index.delete([f"d{i}" for i in range(0, 400, 2)])
    assert index.tombstones == 200
    expected = [h.id for h in index.search(x[1], k=5, ef=400)]
    index.save()  # past compact_threshold: save rebuilds the graph
    assert index.tombstones == 0 and index.graph.element_count == 200
    assert [h.id for h in index.search(x[1], k=5, ef=400)] == expected
    assert not index.compact()  # nothing left to drop
    index.close()
    with Index.open(tmp_path / "ix") as again:
        assert again.tombstones == 0 and again.repaired == 0
        assert [h.id for h in again.search(x[1], k=5, ef=400)] == expected


# -- filters ------------------------------------------------------------------------------------------------
def test_filter_equality_any_of_list_membership_and_and(tmp_path):
    index, x = build(tmp_path / "ix", n=200)
    zh = index.search(x[0], k=50, filter={"lang": "zh"})
    assert len(zh) == 10 and all(h.metadata["lang"] == "zh" for h in zh)
    both = index.search(x[0], k=500, filter={"n": [0, 2]})
    assert len(both) == sum(1 for i in range(200) if i % 3 in (0, 2))
    tagged = index.search(x[0], k=500, filter={"tags": "odd", "lang": "en"})
    assert {h.id for h in tagged} == {f"d{i}" for i in range(200) if i % 2 and i % 20}
    assert index.search(x[0], k=5, filter={"lang": "fr"}) == []
    index.close()


def test_selective_filter_still_returns_k_results(tmp_path):
    index, x = build(tmp_path / "ix", n=200)
    hits = index.search(x[3], k=10, filter={"lang": "zh"})
    allowed = [i for i in range(200) if i % 20 == 0]
    sims = (x[allowed] @ x[3]) / np.linalg.norm(x[allowed], axis=1) / np.linalg.norm(x[3])
    assert [h.id for h in hits] == [f"d{allowed[j]}" for j in np.argsort(-sims)[:10]]
    index.close()


def test_broad_filter_goes_through_hnswlib_and_matches_only_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "BRUTE_FORCE_LIMIT", 10)
    index, x = build(tmp_path / "ix", n=300)
    calls = []
    exact = index.exact.search
    monkeypatch.setattr(index.exact, "search", lambda *a: calls.append(1) or exact(*a))
    hits = index.search(x[1], k=20, filter={"n": 1})
    assert len(hits) == 20 and all(h.metadata["n"] == 1 for h in hits) and not calls
    assert hits[0].id == "d1"
    index.close()


def test_filter_on_unknown_field_is_an_error_naming_it(tmp_path):
    index, x = build(tmp_path / "ix", n=20)
    with pytest.raises(InputError, match="'lnag'.*'lang'"):
        index.search(x[0], filter={"lnag": "zh"})
    with pytest.raises(InputError, match="non-empty dict"):
        index.search(x[0], filter={})
    index.close()


def test_filter_sees_upserted_and_deleted_metadata(tmp_path):
    index, x = build(tmp_path / "ix", n=40)
    index.upsert_vectors(x[1:2], ["now zh"], ["d1"], metadata=[{"lang": "zh"}])
    index.delete(["d0"])
    ids = {h.id for h in index.search(x[0], k=50, filter={"lang": "zh"})}
    assert ids == {"d1", "d20"}
    index.close()


# -- bad input ----------------------------------------------------------------------------------------------
def test_wrong_dimension_vectors_and_queries_are_refused(tmp_path):
    index, _ = build(tmp_path / "ix", n=5)
    with pytest.raises(InputError, match=r"\(2, 16\)"):
        index.add_vectors(np.zeros((2, 8), np.float32), ["a", "b"])
    with pytest.raises(InputError, match="dimension 8"):
        index.search(np.zeros(8, np.float32))
    with pytest.raises(InputError, match="NaN"):
        index.add_vectors(np.full((1, DIM), np.nan, np.float32), ["a"])
    assert len(index) == 5
    index.close()


def test_duplicate_and_existing_ids_are_refused(tmp_path):
    index, _ = build(tmp_path / "ix", n=5)
    with pytest.raises(InputError, match="more than once"):
        index.add_vectors(vecs(2), ["a", "b"], ids=["x", "x"])
    with pytest.raises(InputError, match="'d1' is already"):
        index.add_vectors(vecs(1), ["a"], ids=["d1"])
    assert len(index) == 5
    index.close()


def test_metadata_that_is_not_json_is_refused_and_nothing_stored(tmp_path):
    index, _ = build(tmp_path / "ix", n=5)
    with pytest.raises(InputError, match="JSON"):
        index.add_vectors(vecs(2), ["a", "b"], ids=["x", "y"], metadata=[{}, {"when": object()}])
    with pytest.raises(InputError, match="JSON"):
        index.add_vectors(vecs(1), ["a"], ids=["z"], metadata=[{"x": float("nan")}])
    assert index.get("x") is None and len(index) == 5
    index.close()


def test_index_built_with_another_bundle_is_refused(tmp_path):
    enc = StubEncoder(dim=24, salt=1)
    with Index.create(tmp_path / "ix", enc) as index:
        index.add(make_docs(5))
    with pytest.raises(IndexMismatchError, match="dim 24.*dim 32"):
        Index.open(tmp_path / "ix", StubEncoder(dim=32, salt=1))
    with pytest.raises(IndexMismatchError, match="stub"):
        Index.open(tmp_path / "ix", StubEncoder(dim=24, salt=2))
    Index.open(tmp_path / "ix", enc).close()  # the right one still opens (no lock left behind)


def test_newer_index_format_is_refused(tmp_path):
    build(tmp_path / "ix", n=3)[0].close()
    db = sqlite3.connect(tmp_path / "ix" / STORE)
    with db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    db.close()
    with pytest.raises(IndexStoreError, match="format 99 is newer"):
        Index.open(tmp_path / "ix")


def test_missing_or_corrupt_store_is_a_clear_error(tmp_path):
    with pytest.raises(IndexStoreError, match="no index"):
        Index.open(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / STORE).write_bytes(b"not a database at all" * 100)
    with pytest.raises(IndexStoreError, match="not a readable index store"):
        Index.open(tmp_path / "bad")


def test_damaged_graph_file_is_rebuilt_from_the_store(tmp_path):
    index, x = build(tmp_path / "ix", n=80)
    index.save()
    index.close()
    graph = next((tmp_path / "ix").glob("graph.*.bin"))
    graph.write_bytes(graph.read_bytes()[:1000])
    with Index.open(tmp_path / "ix") as again:
        assert again.repaired == 80 and top_id(again, x[40]) == "d40"


# -- failures while writing ---------------------------------------------------------------------------------
def test_full_disk_during_save_keeps_previous_state(tmp_path, monkeypatch):
    index, x = build(tmp_path / "ix", n=50)
    index.save()
    gen = index.meta["generation"]
    index.add_vectors(vecs(5, 7), texts(5, "late"), ids=[f"late{i}" for i in range(5)])
    real = index.graph.index

    class ShortWrite:  # hnswlib writes what fits and reports nothing, as on a full disk
        def __getattr__(self, name):
            return getattr(real, name)

        def save_index(self, path):
            real.save_index(path)
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])

    index.graph.index = ShortWrite()
    with pytest.raises(IndexStoreError, match=f"disk full.*generation {gen}\\) is intact"):
        index.save()
    index.graph.index = real
    assert sorted(p.name for p in (tmp_path / "ix").glob("*graph*")) == [f"graph.{gen}.bin"]
    index._dirty = False  # close without saving: reopen from the last good graph
    index.close()
    with Index.open(tmp_path / "ix") as again:  # the last good graph plus the acknowledged documents
        assert len(again) == 55 and again.get("late3") is not None and top_id(again, x[10]) == "d10"


def test_read_only_disk_during_save_says_so(tmp_path, monkeypatch):
    index, _ = build(tmp_path / "ix", n=10)

    def refuse(path, *a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(graph_module, "open", refuse, raising=False)
    with pytest.raises(IndexStoreError, match="Read-only file system.*intact"):
        index.save()
    monkeypatch.undo()
    index.close()
    with Index.open(tmp_path / "ix") as again:
        assert len(again) == 10


def test_full_store_refuses_the_write_and_keeps_previous_documents(tmp_path):
    index, _ = build(tmp_path / "ix", n=10)
    db = index.store._conn()
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages + 1}")
    big = ["x" * 20000 for _ in range(20)]
    with pytest.raises(IndexStoreError, match="full.*previous state"):
        index.add_vectors(vecs(20, 3), big, ids=[f"big{i}" for i in range(20)])
    assert len(index) == 10 and index.get("big0") is None
    index.close()
    with Index.open(tmp_path / "ix") as again:
        assert len(again) == 10 and again.get("big0") is None


# -- concurrency and other processes ------------------------------------------------------------------------
class WatchedGraph:
    """Wraps the hnswlib graph and counts writes that start while a query is running (sleeps widen windows)."""

    def __init__(self, graph):
        self.graph, self.running, self.overlaps, self.lock = graph, 0, 0, threading.Lock()

    def __getattr__(self, name):
        return getattr(self.graph, name)

    def knn_query(self, *a, **kw):
        with self.lock:
            self.running += 1
        try:
            time.sleep(0.0005)
            return self.graph.knn_query(*a, **kw)
        finally:
            with self.lock:
                self.running -= 1

    def _write(self, name, *a, **kw):
        if self.running:
            self.overlaps += 1
        time.sleep(0.0005)
        return getattr(self.graph, name)(*a, **kw)

    def add_items(self, *a, **kw):
        return self._write("add_items", *a, **kw)

    def mark_deleted(self, *a, **kw):
        return self._write("mark_deleted", *a, **kw)

    def resize_index(self, *a, **kw):
        return self._write("resize_index", *a, **kw)


def test_many_reader_threads_and_one_writer(tmp_path):
    index, x = build(tmp_path / "ix", n=100, capacity=100, ef_construction=32)  # adds resize the graph
    index.store._conn().execute("PRAGMA synchronous=OFF")  # durability is not under test here: keep the writer fast
    index.graph.index = watched = WatchedGraph(index.graph.index)
    errors, done = [], threading.Event()
    extra = vecs(300, 5)

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not done.is_set():
                i = int(rng.integers(0, 100))
                hits = index.search(x[i], k=5, filter={"n": i % 3} if i % 4 == 0 else None)
                if i % 20 and hits[0].id != f"d{i}":  # d0, d20, ... are upserted by the writer
                    errors.append(f"query {i} -> {hits[0].id}")
        except Exception as exc:  # noqa: BLE001 - any failure in a reader thread fails the test
            errors.append(repr(exc))

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    try:
        for s in range(0, 300, 20):  # small writes: graph resizes, tombstones and slot reuse under load
            index.add_vectors(extra[s:s + 20], texts(20, f"e{s}-"), ids=[f"e{i}" for i in range(s, s + 20)])
            index.delete([f"e{i}" for i in range(s, s + 20, 3)])
            index.upsert_vectors(extra[s:s + 1] * -1, ["u"], [f"d{(s // 20) * 20 % 100}"])
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert watched.overlaps == 0, f"{watched.overlaps} graph writes ran during a query"
    index.graph.index = watched.graph
    assert len(index) == 100 + 300 - 15 * 7
    index.close()


READER = """
import json, sys
import numpy as np
from edgeemb.search.index import Index
ix = Index.open(sys.argv[1], read_only=True)
q = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
print(json.dumps({"n": len(ix), "top": ix.search(q, k=1)[0].id}))
try:
    ix.delete(["d1"])
except Exception as exc:
    print(type(exc).__name__)
ix.close()
"""


def test_second_process_reads_a_consistent_snapshot_while_writer_is_open(tmp_path):
    index, _ = build(tmp_path / "ix", n=60)
    index.save()
    index.add_vectors(vecs(5, 9), texts(5, "new"), ids=[f"n{i}" for i in range(5)])  # committed, graph unsaved
    index.delete(["d7"])
    out = subprocess.run([sys.executable, "-c", READER, str(tmp_path / "ix"), json.dumps(vecs(5, 9)[2].tolist())],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()[:2]
    assert json.loads(first) == {"n": 64, "top": "n2"}
    assert second == "IndexStoreError"
    with pytest.raises(IndexStoreError, match="another process"):  # flock is per open file: same process too
        Index.open(tmp_path / "ix")
    index.close()


def test_read_only_handle_keeps_its_snapshot_until_refresh(tmp_path):
    index, x = build(tmp_path / "ix", n=30)
    index.save()
    reader = Index.open(tmp_path / "ix", read_only=True)
    index.delete([f"d{i}" for i in range(10)])
    index.add_vectors(vecs(3, 4), texts(3, "z"), ids=["z0", "z1", "z2"])
    index.save()
    assert len(reader) == 30 and reader.get("d3") is not None and reader.get("z0") is None
    assert top_id(reader, x[3]) == "d3"
    reader.refresh()
    assert len(reader) == 23 and reader.get("d3") is None and top_id(reader, vecs(3, 4)[1]) == "z1"
    reader.close()
    index.close()


def test_compact_gives_the_stores_disk_space_back(tmp_path):
    index, x = build(tmp_path / "ix", n=2000)
    index.delete([f"d{i}" for i in range(2000) if i % 10])
    index.save()

    def store_bytes() -> int:
        return sum(p.stat().st_size for p in (tmp_path / "ix").glob(STORE + "*"))

    before = store_bytes()
    assert index.compact(force=True)
    after = store_bytes()
    assert after < 0.5 * before, (before, after)
    assert len(index) == 200 and top_id(index, x[10]) == "d10"
    index.close()
