"""BinaryCodes (edgeemb/search/codes.py): binary scan + int8 re-scoring against exact search, deletes, files."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from edgeemb.errors import IndexStoreError, InputError
from edgeemb.search.codes import BinaryCodes, CodesDamaged

DIM = 384


def clustered(n: int, seed: int = 0, clusters: int = 40) -> np.ndarray:
    """Unit vectors around a few centres (neighbourhoods mean something, unlike i.i.d. noise)."""
    centres = np.random.default_rng(0).standard_normal((clusters, DIM)).astype(np.float32)  # shared by all calls
    rng = np.random.default_rng(seed + 1)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(docs: np.ndarray, labels: np.ndarray, q: np.ndarray, k: int = 10) -> list[int]:
    sims = docs @ (q / np.linalg.norm(q))
    return labels[np.argsort(-sims, kind="stable")[:k]].tolist()


def recall(codes: BinaryCodes, docs: np.ndarray, labels: np.ndarray, queries: np.ndarray, **kw) -> float:
    hits = [len({lab for lab, _ in codes.search(q, 10, **kw)} & set(exact_top(docs, labels, q))) / 10
            for q in queries]
    return float(np.mean(hits))


@pytest.fixture()
def filled(tmp_path):
    docs = clustered(3000)
    labels = np.arange(100, 3100, dtype=np.int64)
    codes = BinaryCodes.create(tmp_path, DIM, candidates=300, rescore=60)
    for lo in range(0, len(docs), 700):
        codes.add(docs[lo:lo + 700], labels[lo:lo + 700])
    return codes, docs, labels


def test_search_agrees_with_exact_search_and_scores_are_cosines(filled):
    codes, docs, labels = filled
    queries = clustered(60, seed=1)
    assert recall(codes, docs, labels, queries) >= 0.9
    for q in queries[:10]:
        got = codes.search(q, 10)
        sims = dict(zip(labels.tolist(), (docs @ q).tolist()))
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        assert all(abs(s - sims[lab]) < 0.02 for lab, s in got)  # int8 scores are cosines, nearly exact


def test_each_stage_narrows_but_a_wider_search_recovers_recall(filled):
    codes, docs, labels = filled
    queries = clustered(60, seed=2)
    codes.candidates, codes.rescore = 40, 10
    narrow = recall(codes, docs, labels, queries)
    codes.candidates, codes.rescore = 3000, 3000  # every document reaches the int8 stage
    assert recall(codes, docs, labels, queries) >= 0.97 > narrow
    codes.candidates, codes.rescore = 300, 10
    assert recall(codes, docs, labels, queries, ef=100) > recall(codes, docs, labels, queries)  # ef = rescore


def test_exact_top_rescores_with_float_vectors(filled):
    codes, docs, labels = filled
    calls = []

    def float_vectors(labs):
        calls.append(len(labs))
        rows = np.asarray(labs) - 100
        return np.asarray(labs), docs[rows]

    codes.float_vectors, codes.exact_top = float_vectors, 20
    q = clustered(1, seed=3)[0]
    got = codes.search(q, 5)
    assert calls == [20] and len(got) == 5
    for lab, score in got:
        assert score == pytest.approx(float(docs[lab - 100] @ q), abs=1e-5)


def test_real_sentences_agree_with_exact_search(encoder, shared_data, tmp_path):
    lines = (shared_data / "en_corpus" / "en_sentences.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.partition("\t")[2] for line in lines[:900:2]]
    queries = [line.partition("\t")[2] for line in lines[1:120:4]]
    docs, qv = encoder.encode_documents(texts), encoder.encode_queries(queries)
    labels = np.arange(len(docs), dtype=np.int64)
    codes = BinaryCodes.create(tmp_path, encoder.dim, candidates=150, rescore=40)
    codes.add(docs, labels)
    assert recall(codes, docs, labels, qv) >= 0.9


def test_deleted_labels_are_never_returned_and_filters_hold(filled):
    codes, docs, labels = filled
    q = docs[5]
    best = [lab for lab, _ in codes.search(q, 10)]
    assert best[0] == labels[5]
    assert codes.mark_deleted(best[:3] + [999_999]) == 3  # an unknown label is ignored
    assert codes.mark_deleted(best[0]) == 0  # already deleted
    assert len(codes) == 2997 and codes.element_count == 3000 and codes.tombstones == 3
    got = [lab for lab, _ in codes.search(q, 10)]
    assert not set(got) & set(best[:3]) and set(best[3:]) <= set(got)
    assert not set(best[:3]) & set(codes.labels().tolist())
    allowed = np.array(best[1:6] + [labels[-1]], dtype=np.int64)
    got = [lab for lab, _ in codes.search(q, 10, allowed=allowed)]
    assert sorted(got) == sorted(best[3:6] + [int(labels[-1])])  # only allowed, live ones, all of them
    assert codes.search(q, 10, allowed=np.array([best[0]])) == []


def test_save_and_load_round_trip(filled, tmp_path):
    codes, docs, labels = filled
    codes.mark_deleted(labels[:10])
    queries = clustered(20, seed=4)
    before = [codes.search(q, 10) for q in queries]
    size = codes.save(1)
    assert (tmp_path / "codes.1.bin").stat().st_size == size
    loaded = BinaryCodes.load(tmp_path, 1, DIM, read_only=True, candidates=300, rescore=60)
    assert [loaded.search(q, 10) for q in queries] == before
    assert np.array_equal(loaded.labels(), codes.labels()) and len(loaded) == len(codes)
    with pytest.raises(IndexStoreError, match="read-only"):
        loaded.add(docs[:1], np.array([1]))
    loaded.close()
    more = clustered(50, seed=5)
    codes.add(more, np.arange(5000, 5050))
    codes.save(2)
    codes.remove_stale()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.2.bin", "rows.1.i8"]
    again = BinaryCodes.load(tmp_path, 2, DIM)
    assert len(again) == 3040 and again.search(more[7], 1)[0][0] == 5007


def test_rows_appended_after_a_snapshot_are_ignored_then_overwritten(filled, tmp_path):
    codes, docs, labels = filled
    codes.save(1)
    codes.add(clustered(30, seed=6), np.arange(9000, 9030))  # a crash here: the snapshot names 3000 slots
    codes.close()
    reopened = BinaryCodes.load(tmp_path, 1, DIM, candidates=300, rescore=60)
    assert len(reopened) == 3000 and 9000 not in set(reopened.labels().tolist())
    fresh = clustered(30, seed=7)
    reopened.add(fresh, np.arange(9000, 9030))  # what reconcile re-adds from the store takes those slots
    reopened.save(2)
    final = BinaryCodes.load(tmp_path, 2, DIM)
    assert final.search(fresh[3], 1)[0][0] == 9003


def test_compact_gives_space_back_and_keeps_answers(filled, tmp_path):
    codes, docs, labels = filled
    codes.save(1)
    rows_before = (tmp_path / "rows.1.i8").stat().st_size
    ram_before = codes.nbytes
    codes.mark_deleted(labels[::2])
    queries = clustered(20, seed=8)
    before = [codes.search(q, 10) for q in queries]
    assert codes.compact() == 1500
    assert [codes.search(q, 10) for q in queries] == before
    codes.save(2)
    codes.remove_stale()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.2.bin", "rows.2.i8"]
    assert (tmp_path / "rows.2.i8").stat().st_size < 0.55 * rows_before
    assert codes.nbytes < 0.7 * ram_before and codes.element_count == len(codes) == 1500
    loaded = BinaryCodes.load(tmp_path, 2, DIM, candidates=300, rescore=60)
    assert [loaded.search(q, 10) for q in queries] == before


def _flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_damaged_files_are_detected(filled, tmp_path):
    codes, _, _ = filled
    codes.save(1)
    codes.close()
    snap, rows = tmp_path / "codes.1.bin", tmp_path / "rows.1.i8"
    good_snap, good_rows = snap.read_bytes(), rows.read_bytes()
    _flip(snap, 5000)
    with pytest.raises(CodesDamaged, match="checksum"):
        BinaryCodes.load(tmp_path, 1, DIM)
    snap.write_bytes(good_snap)
    _flip(rows, len(good_rows) // 2)
    with pytest.raises(CodesDamaged, match="checksum"):
        BinaryCodes.load(tmp_path, 1, DIM)
    rows.write_bytes(good_rows[:len(good_rows) - 500])
    with pytest.raises(CodesDamaged, match="truncated"):
        BinaryCodes.load(tmp_path, 1, DIM, verify=False)
    rows.write_bytes(good_rows)
    with pytest.raises(CodesDamaged):
        BinaryCodes.load(tmp_path, 7, DIM)  # no such snapshot
    with pytest.raises(CodesDamaged):
        BinaryCodes.load(tmp_path, 1, 256)  # another dimension
    assert len(BinaryCodes.load(tmp_path, 1, DIM)) == 3000


def test_non_finite_and_malformed_input_is_refused(filled):
    codes, docs, labels = filled
    bad = docs[:3].copy()
    bad[1, 7] = np.nan
    with pytest.raises(InputError, match="NaN"):
        codes.add(bad, np.array([7001, 7002, 7003]))
    assert len(codes) == 3000 and 7001 not in set(codes.labels().tolist())
    with pytest.raises(InputError, match="NaN"):
        codes.search(np.full(DIM, np.inf, np.float32), 5)
    with pytest.raises(InputError, match="dimension"):
        codes.search(np.ones(DIM - 1, np.float32), 5)
    with pytest.raises(InputError, match="shape"):
        codes.add(docs[:2, :100], np.array([1, 2]))
    with pytest.raises(InputError, match="already"):
        codes.add(docs[:1], labels[:1])
    with pytest.raises(InputError, match="repeat"):
        codes.add(docs[:2], np.array([8000, 8000]))


def test_searches_run_while_one_writer_adds(tmp_path):
    docs = clustered(6000, seed=9)
    codes = BinaryCodes.create(tmp_path, DIM, candidates=200, rescore=50)
    codes.add(docs[:500], np.arange(500))
    stop, errors, seen = threading.Event(), [], []

    def reader():
        rng = np.random.default_rng(10)
        while not stop.is_set():
            try:
                got = codes.search(docs[rng.integers(0, 6000)], 10)
                seen.append(len(got))
                assert all(0 <= lab < 6000 for lab, _ in got)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for lo in range(500, 6000, 250):  # grows past the initial capacity several times
        codes.add(docs[lo:lo + 250], np.arange(lo, lo + 250))
    codes.mark_deleted(np.arange(0, 6000, 3))
    codes.compact()
    stop.set()
    for t in threads:
        t.join()
    assert not errors and seen and min(seen) == 10
    assert codes.search(docs[5999], 1)[0][0] == 5999
