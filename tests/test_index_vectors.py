"""Index(vectors="binary"): the same API and crash safety as the float32 graph, on binary codes + int8 rows."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgeemb.errors import IndexMismatchError, InputError
from edgeemb.search.graph import CodesGraph, HnswGraph
from edgeemb.search.index import STORE, Index

sys.path.insert(0, str(Path(__file__).parent))
from stub_encoders import StubEncoder, make_docs
from test_index_durability import VEC, WRITER, apply, kill_rounds, stored_state, vec

ROOT = Path(__file__).resolve().parent.parent
ENC = StubEncoder(dim=64)


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    if "EDGEEMB_CRASH_AT" not in extra:
        e.pop("EDGEEMB_CRASH_AT", None)
    return e


def exact_top(index: Index, q: np.ndarray, k: int) -> list[str]:
    labels, vecs = index.vectors()
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    order = np.argsort(-(unit @ (q / np.linalg.norm(q))))[:k]
    docs = index.documents(labels[order].tolist())
    return [docs[int(lab)].id for lab in labels[order]]


@pytest.fixture()
def binary(tmp_path):
    docs = make_docs(600)
    index = Index.create(tmp_path / "ix", ENC, vectors="binary")
    index.add(docs, ids=[f"d{i}" for i in range(600)], metadata=[{"n": i % 7, "i": i} for i in range(600)])
    yield index, docs
    index.close()


def test_binary_index_answers_like_exact_search_and_records_its_storage(binary):
    index, docs = binary
    assert index.meta["vectors"] == "binary" and index.vectors_kind == "binary"
    assert isinstance(index.graph, CodesGraph)
    qs = ENC.encode(docs[:40])
    recall = np.mean([len({h.id for h in index.search(q, k=10)} & set(exact_top(index, q, 10))) / 10 for q in qs])
    assert recall >= 0.9, recall
    hit = index.search(docs[5], k=1)[0]
    assert hit.id == "d5" and hit.text == docs[5] and hit.metadata == {"n": 5, "i": 5} and hit.score > 0.99
    assert all(h.metadata["n"] == 3 for h in index.search(docs[5], k=20, filter={"n": 3}))
    assert len(index.search(docs[5], k=20, filter={"i": {"$gte": 590}})) == 10  # k results whenever k match


def test_binary_delete_upsert_and_filter_delete(binary):
    index, docs = binary
    index.delete(["d5"])
    assert "d5" not in {h.id for h in index.search(docs[5], k=50)}
    index.upsert(["zebra xylophone quartz"], ids=["d6"], metadata=[{"n": 99}])
    top = index.search("zebra xylophone quartz", k=1)[0]
    assert top.id == "d6" and top.metadata == {"n": 99}
    assert "d6" not in {h.id for h in index.search(docs[6], k=5)} or index.get("d6").text != docs[6]
    assert index.delete(filter={"n": 2}) == len([i for i in range(600) if i % 7 == 2])
    assert not [h for h in index.search(docs[2], k=100) if h.metadata.get("n") == 2]
    assert len(index) == 600 - 1 - 86 and index.tombstones == 1 + 1 + 86


def test_binary_reopens_compacts_and_gives_space_back(tmp_path, binary):
    index, docs = binary
    index.save()
    path = index.path
    rows_before = sum(f.stat().st_size for f in path.glob("rows.*.i8"))
    index.delete([f"d{i}" for i in range(300)])
    index.close()
    assert sorted(f.name for f in path.glob("codes.*.bin")) == ["codes.2.bin"]
    with Index.open(path, ENC) as again:
        assert again.repaired == 0 and len(again) == 300 and again.vectors_kind == "binary"
        assert again.search(docs[400], k=1)[0].id == "d400"
        assert again.tombstones == 0  # close() compacted: tombstones passed compact_threshold
        rows_after = sum(f.stat().st_size for f in path.glob("rows.*.i8"))
        assert rows_after < 0.6 * rows_before and len(list(path.glob("rows.*.i8"))) == 1
        assert again.graph.codes.element_count == 300


def test_reopen_after_unsaved_writes_repairs_from_the_store(tmp_path):
    path = tmp_path / "ix"
    index = Index.create(path, dim=16, vectors="binary")
    v = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    index.add_vectors(v[:100], [f"t{i}" for i in range(100)], [f"a{i}" for i in range(100)])
    index.save()
    index.add_vectors(v[100:], [f"t{i}" for i in range(100, 200)], [f"a{i}" for i in range(100, 200)])
    index.delete(["a0", "a1"])
    index.store.close()  # as if the process died: the storage was never saved again
    index._lock_fd = os.close(index._lock_fd)
    with Index.open(path) as again:
        assert again.repaired == 100 and len(again) == 198
        assert again.search(v[150], k=1)[0].id == "a150"
        assert {h.id for h in again.search(v[0], k=198)} == {f"a{i}" for i in range(2, 200)}


def test_damaged_codes_are_rebuilt_from_the_store(tmp_path, binary):
    index, docs = binary
    path = index.path
    index.save()
    index.close()
    snap = next(path.glob("codes.*.bin"))
    data = bytearray(snap.read_bytes())
    data[100] ^= 0xFF
    snap.write_bytes(bytes(data))
    with Index.open(path, ENC) as again:
        assert again.repaired == 600 and again.search(docs[9], k=1)[0].id == "d9"
    rows = next(path.glob("rows.*.i8"))
    with open(rows, "r+b") as f:  # a damaged rows file too
        f.seek(200)
        f.write(b"\xff" * 64)
    with Index.open(path, ENC) as again:
        assert again.repaired == 600 and again.search(docs[9], k=1)[0].id == "d9"


def test_existing_indexes_without_the_setting_open_as_float32(tmp_path):
    path = tmp_path / "ix"
    with Index.create(path, ENC) as index:
        index.add(make_docs(20), ids=[f"d{i}" for i in range(20)])
    db = sqlite3.connect(path / STORE)
    with db:
        db.execute("DELETE FROM meta WHERE key = 'vectors'")  # as written before the setting existed
    db.close()
    with Index.open(path, ENC) as index:
        assert index.vectors_kind == "float32" and isinstance(index.graph, HnswGraph) and len(index) == 20
    with pytest.raises(IndexMismatchError, match="binary"):
        Index.create(path, ENC, vectors="binary", exist_ok=True)


@pytest.mark.parametrize("bad, message", [("int8", "not offered"), ("fp16", "must be one of")])
def test_unknown_storages_are_refused_and_write_nothing(tmp_path, bad, message):
    with pytest.raises(InputError, match=message):
        Index.create(tmp_path / "ix", ENC, vectors=bad)
    assert not (tmp_path / "ix").exists()


def test_a_reader_thread_searches_during_a_bulk_add(tmp_path):
    index = Index.create(tmp_path / "ix", dim=32, vectors="binary")
    rng = np.random.default_rng(3)
    first = rng.normal(size=(300, 32)).astype(np.float32)
    index.add_vectors(first, [f"t{i}" for i in range(300)], [f"a{i}" for i in range(300)])
    stop, errors, seen = threading.Event(), [], []

    def reader():
        while not stop.is_set():
            try:
                hits = index.search(first[7], k=5)
                assert hits[0].id == "a7" and len(hits) == 5
                seen.append(len(index))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    more = rng.normal(size=(6000, 32)).astype(np.float32)
    for s in range(0, 6000, 500):
        index.add_vectors(more[s:s + 500], [f"t{i}" for i in range(s, s + 500)],
                          [f"b{i}" for i in range(s, s + 500)])
    stop.set()
    t.join()
    assert not errors, errors[0]
    assert len(seen) > 1 and len(index) == 6300
    assert index.search(more[4321], k=1)[0].id == "b4321"
    index.close()


READER = """
import sys, numpy as np
from edgeemb.search.index import Index
q = np.load(sys.argv[2])
seen = []
while True:
    ix = Index.open(sys.argv[1], read_only=True)
    hits = ix.search(q, k=3)
    assert hits[0].id == "a7", hits
    seen.append(len(ix))
    ix.close()
    if seen[-1] == int(sys.argv[3]):
        break
print(len(set(seen)), flush=True)
"""


def test_a_reader_process_searches_during_a_bulk_add(tmp_path):
    path = tmp_path / "ix"
    rng = np.random.default_rng(4)
    v = rng.normal(size=(4300, 32)).astype(np.float32)
    index = Index.create(path, dim=32, vectors="binary")
    index.add_vectors(v[:300], [f"t{i}" for i in range(300)], [f"a{i}" for i in range(300)])
    index.save()
    np.save(tmp_path / "q.npy", v[7])
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), str(tmp_path / "q.npy"), "4300"],
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for s in range(300, 4300, 250):  # saved now and then: the reader sees codes and unsaved adds alike
        index.add_vectors(v[s:s + 250], [f"t{i}" for i in range(s, s + 250)], [f"b{i}" for i in range(s, s + 250)])
        if s % 1000 == 300:
            index.save()
    out, err = reader.communicate(timeout=300)
    index.close()
    assert reader.returncode == 0, err
    assert int(out.split()[-1]) >= 1


# -- kill tests: the durability writer, on binary storage ---------------------------------------------------
BINARY_WRITER = WRITER.replace("Index.create(path, dim=DIM, capacity=32)",
                               "Index.create(path, dim=DIM, capacity=32, vectors='binary')")


def check_binary(path: Path, acked: dict[str, int], pending: dict | None) -> dict[str, int]:
    """Reopen: exactly the acknowledged state (± the whole in-flight op), every document found by its vector."""
    with Index.open(path) as ix:
        assert ix.vectors_kind == "binary"
        stored = stored_state(path)
        state = {i: v for i, (v, _, _) in stored.items()}
        assert state in [acked] + ([apply(acked, pending)] if pending else [])
        assert len(ix) == len(state) == len(ix.graph.codes)
        for doc_id, (v, text, vector) in stored.items():
            assert text == f"text {doc_id} v{v}" and np.array_equal(vector, vec(doc_id, v)), doc_id
            hit = ix.search(vec(doc_id, v), k=1, ef=200)[0]
            assert hit.id == doc_id and hit.score > 0.99, (doc_id, hit)
    return state


def test_killed_binary_writer_loses_nothing_acknowledged(tmp_path):
    assert "vectors='binary'" in BINARY_WRITER
    kill_rounds(tmp_path / "ix", rounds=5, seed=11, writer=BINARY_WRITER, check=check_binary)


@pytest.mark.slow
def test_killed_binary_writer_loses_nothing_acknowledged_many_times(tmp_path):
    kill_rounds(tmp_path / "ix", rounds=40, seed=12, writer=BINARY_WRITER, check=check_binary)


SAVER = """
import os, sys, numpy as np
from edgeemb.search.index import Index
""" + VEC + """
ix = Index.create(sys.argv[1], dim=DIM, vectors="binary")
ids = [f"a{i}" for i in range(100)]
ix.add_vectors(np.stack([vec(i, 0) for i in ids]), [f"text {i} v0" for i in ids], ids, [{"v": 0}] * 100)
ix.save()
if sys.argv[2] == "store-committed":  # die inside the next add, after its commit, before the codes see it
    os.environ["EDGEEMB_CRASH_AT"] = sys.argv[2]
more = [f"b{i}" for i in range(30)]
ix.add_vectors(np.stack([vec(i, 0) for i in more]), [f"text {i} v0" for i in more], more, [{"v": 0}] * 30)
ix.delete([f"a{i}" for i in range(80)])
print("acked", flush=True)
os.environ["EDGEEMB_CRASH_AT"] = sys.argv[2]
ix.compact(force=True) if sys.argv[3] == "compact" else ix.save()
print("saved", flush=True)
"""


@pytest.mark.parametrize("how", ["save", "compact"])
@pytest.mark.parametrize("point", ["graph-written", "graph-renamed", "generation-committed", "store-committed"])
def test_binary_process_killed_during_save_or_compact_reopens_to_last_good_state(tmp_path, point, how):
    out = subprocess.run([sys.executable, "-c", SAVER, str(tmp_path / "ix"), point, how], env=env(),
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 137, out.stderr
    first = {f"a{i}": 0 for i in range(100)}
    pending = None
    if point == "store-committed":
        assert out.stdout == ""
        pending, expected = {"op": "add", "ids": [f"b{i}" for i in range(30)], "v": 0}, first
    else:
        assert out.stdout.split() == ["acked"]
        expected = {f"a{i}": 0 for i in range(80, 100)} | {f"b{i}": 0 for i in range(30)}
    state = check_binary(tmp_path / "ix", expected, pending)
    with Index.open(tmp_path / "ix") as again:  # the repaired state saved on close reopens cleanly
        assert again.repaired == 0 and len(again) == len(state)
    files = sorted(f.name for f in (tmp_path / "ix").iterdir() if f.name.startswith(("codes.", "rows.")))
    assert len(files) == 2, files  # one snapshot and the rows file it names, nothing stale


def test_cli_builds_a_binary_index_killed_and_resumed(tmp_path):
    from edgeemb.paths import default_bundle_path

    bundle = default_bundle_path("default-static")
    if not (bundle / "edgeemb.json").is_file():
        pytest.skip("default-static bundle not built")
    docs = make_docs(1300)
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(docs) + "\n", encoding="utf-8")
    out = tmp_path / "ix"

    def build(*extra: str, **env_extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgeemb", "index", "build", str(bundle), str(corpus), "-o",
                               str(out), *extra], capture_output=True, text=True, timeout=300, env=env(**env_extra),
                              check=False)

    res = build("--vectors", "binary", EDGEEMB_CRASH_AT="build-chunk")  # killed after the first chunk committed
    assert res.returncode == 137, res.stderr
    with Index.open(tmp_path / ".ix.partial", read_only=True) as partial:  # never saved: codes built in RAM
        assert partial.vectors_kind == "binary" and partial.count() == 512
        assert partial.search(partial.vectors([3])[1][0], k=1)[0].id == "doc-3"
    res = build("--resume")
    assert res.returncode == 2 and "--vectors binary" in res.stderr
    res = build("--resume", "--vectors", "binary")
    assert res.returncode == 0, res.stderr
    assert "512 were already there, 788 added" in res.stdout
    with Index.open(out, read_only=True) as index:
        assert index.vectors_kind == "binary" and len(index) == 1300 and list(out.glob("codes.*.bin"))
    res = subprocess.run([sys.executable, "-m", "edgeemb", "search", str(out), docs[1204], "--json", "-k", "1"],
                         capture_output=True, text=True, timeout=300, env=env(), check=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["hits"][0]["id"] == "doc-1204"


def test_exact_top_setting_rescores_the_best_with_stored_floats(tmp_path):
    rng = np.random.default_rng(5)
    v = rng.normal(size=(400, 24)).astype(np.float32)
    with Index.create(tmp_path / "ix", dim=24, vectors="binary", extra_meta={"exact_top": 10}) as index:
        index.add_vectors(v, [f"t{i}" for i in range(400)], [f"a{i}" for i in range(400)])
        q = rng.normal(size=24).astype(np.float32)
        hits = index.search(q, k=5)
        unit = v / np.linalg.norm(v, axis=1, keepdims=True)
        exact = unit @ (q / np.linalg.norm(q))
        for h in hits:
            assert abs(h.score - exact[int(h.id[1:])]) < 1e-5
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hamming_scan_in_blocks_matches_a_whole_scan(tmp_path):
    from edgeemb.search.codes import SCAN_BLOCK, BinaryCodes

    rng = np.random.default_rng(6)
    n = 2 * SCAN_BLOCK + 123  # three blocks, the last one short
    v = rng.normal(size=(n, 64)).astype(np.float32)
    codes = BinaryCodes.create(tmp_path, 64, capacity=n)
    codes.add(v, np.arange(n))
    bits = np.packbits(v > 0, axis=1)
    q = rng.normal(size=64).astype(np.float32)
    dist = np.unpackbits(bits ^ np.packbits(q > 0), axis=1).sum(axis=1)
    picked = codes._hamming_stage(q, codes._state, None, 500)
    cut = np.sort(dist)[499]
    assert set(picked.tolist()) == set(np.flatnonzero(dist <= cut).tolist())
    slots = np.arange(0, n, 3)
    picked = codes._hamming_stage(q, codes._state, slots, 200)
    cut = np.sort(dist[slots])[199]
    assert set(picked.tolist()) == set(slots[dist[slots] <= cut].tolist())
    codes.close()
