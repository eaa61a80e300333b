"""edgeemb.jobs: embed a corpus into shards (local engine and Ray Data), resume after a kill, redo a damaged shard,
build an index from the shards without re-encoding, refuse shards of another bundle."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgeemb.jobs import EmbedJobError, build_index_from_embeddings, embed_corpus, read_embeddings
from edgeemb.jobs.shards import MANIFEST, read_shard, shard_paths

REPO = Path(__file__).resolve().parent.parent
TOPICS = ["the weather in spring", "a football match", "stock prices fell", "a recipe for bread", "the new phone",
          "a train was late", "the museum opened", "rain over the hills"]


def make_corpus(path: Path, n: int, ids: bool = True) -> list[str]:
    """A .jsonl (with ids and metadata) or .txt corpus of n documents of varied length; returns their ids."""
    rows = [f"document {i}: {' and '.join(TOPICS[j % len(TOPICS)] for j in range(i, i + 1 + i % 5))}"
            for i in range(n)]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"id": f"d{i:05d}", "text": t, "n": i}) + "\n"
                                for i, t in enumerate(rows)), encoding="utf-8")
        return [f"d{i:05d}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return [f"doc-{i}" for i in range(n)]


def job_rows(out: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """ids, vectors and texts of a finished job, shard by shard, checked against the manifest."""
    m = read_embeddings(out)
    shards = [read_shard(out, e, m["dim"]) for e in m["shards"]]
    return ([i for s in shards for i in s.ids], np.concatenate([s.vectors for s in shards]),
            [t for s in shards for t in s.texts])


def run_cli(args: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeemb", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    return path, make_corpus(path, 240)


def test_local_engine_end_to_end_matches_the_encoder(default_bundle, encoder, corpus, tmp_path):
    path, ids = corpus
    res = embed_corpus(path, default_bundle, tmp_path / "emb", block_rows=64, threads=1)
    assert (res.rows, res.shards, res.written, res.skipped) == (240, 4, 4, 0)
    got_ids, vectors, texts = job_rows(tmp_path / "emb")
    assert got_ids == ids
    m = json.loads((tmp_path / "emb" / MANIFEST).read_text())
    assert m["bundle_id"] == encoder.manifest.bundle_id and m["rows"] == 240 and m["dim"] == encoder.dim
    # each block is encoded as one call of the Encoder (same length-sorted batches): identical vectors
    want = np.concatenate([encoder.encode_documents(texts[i:i + 64], batch_size=32) for i in range(0, 240, 64)])
    np.testing.assert_array_equal(vectors, want)
    meta = read_shard(tmp_path / "emb", m["shards"][0], m["dim"]).metas[3]
    assert meta == {"n": 3}


def test_parquet_shards_and_cli(default_bundle, corpus, tmp_path):
    pytest.importorskip("pyarrow")
    path, ids = corpus
    out = run_cli(["embed", str(path), "-b", str(default_bundle), "-o", str(tmp_path / "pq"), "--format", "parquet",
                   "--block-size", "100", "--threads", "1"])
    assert out.returncode == 0, out.stderr
    assert "embedded 240 documents into 3 shards" in out.stderr
    assert sorted(p.name for p in (tmp_path / "pq").glob("shard-*.parquet")) == [
        "shard-000000.parquet", "shard-000001.parquet", "shard-000002.parquet"]
    got_ids, vectors, _ = job_rows(tmp_path / "pq")
    assert got_ids == ids and vectors.shape == (240, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_resume_after_a_kill_loses_and_duplicates_nothing(default_bundle, tmp_path):
    path = tmp_path / "docs.txt"
    ids = make_corpus(path, 200, ids=False)
    out = tmp_path / "emb"
    args = ["embed", str(path), "-b", str(default_bundle), "-o", str(out), "--block-size", "40", "--threads", "1",
            "-q"]
    killed = run_cli(args, env={"EDGEEMB_EMBED_CRASH_AFTER": "2"})
    assert killed.returncode == 137, killed.stderr
    assert not (out / MANIFEST).exists()
    assert len(shard_paths(out)) == 2  # the third shard's data files are there, its sidecar is not
    assert (out / "shard-000002.npy").exists()
    with pytest.raises(EmbedJobError, match="unfinished"):
        read_embeddings(out)
    done = run_cli(args)
    assert done.returncode == 0, done.stderr
    assert "(2 already done, 3 written now)" in done.stderr
    got_ids, vectors, _ = job_rows(out)
    assert got_ids == ids and len(set(got_ids)) == 200 and vectors.shape == (200, 384)


def test_a_damaged_shard_is_redone(default_bundle, corpus, tmp_path):
    path, ids = corpus
    out = tmp_path / "emb"
    embed_corpus(path, default_bundle, out, block_rows=100, threads=1)
    _, before, _ = job_rows(out)
    npy = out / "shard-000001.npy"
    data = bytearray(npy.read_bytes())
    data[-7] ^= 0xFF  # one flipped byte in a vector
    npy.write_bytes(bytes(data))
    with pytest.raises(EmbedJobError, match="sha256"):
        job_rows(out)
    res = embed_corpus(path, default_bundle, out, block_rows=100, threads=1)
    assert (res.written, res.skipped) == (1, 2)
    got_ids, after, _ = job_rows(out)
    assert got_ids == ids
    np.testing.assert_array_equal(after, before)


def test_a_foreign_output_folder_is_refused(default_bundle, corpus, tmp_path):
    path, _ = corpus
    embed_corpus(path, default_bundle, tmp_path / "emb", block_rows=100, threads=1)
    with pytest.raises(EmbedJobError, match="block_rows"):
        embed_corpus(path, default_bundle, tmp_path / "emb", block_rows=50, threads=1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(EmbedJobError, match="not an embedding job"):
        embed_corpus(path, default_bundle, tmp_path / "other", threads=1)
    with pytest.raises(EmbedJobError, match="for --engine ray"):
        embed_corpus(path, default_bundle, tmp_path / "x", workers=2)


def test_index_from_embeddings_no_reencoding_and_wrong_bundle_refused(default_bundle, bundle_copy, corpus,
                                                                      tmp_path, monkeypatch):
    import edgeemb
    from edgeemb.encode.encoder import Encoder
    from edgeemb.errors import IndexStoreError

    path, ids = corpus
    emb = tmp_path / "emb"
    embed_corpus(path, default_bundle, emb, block_rows=100, threads=1)
    _, vectors, texts = job_rows(emb)

    def no_encoding(*a, **k):
        raise AssertionError("the index build encoded texts")

    monkeypatch.setattr(Encoder, "encode", no_encoding)
    report = build_index_from_embeddings(emb, tmp_path / "ix", bundle=default_bundle)
    assert (report.count, report.added) == (240, 240)
    monkeypatch.undo()
    with edgeemb.Index.open(tmp_path / "ix", read_only=True) as ix:
        assert sorted(ix.ids()) == sorted(ids)
        hit = ix.search(vectors[17], k=1)[0]
        assert (hit.id, hit.text) == (ids[17], texts[17]) and hit.metadata == {"n": 17}
        assert ix.search(texts[5], k=1)[0].id == ids[5]  # the recorded bundle encodes queries
    # a bundle with other weights (here: another identity) is refused, in the API and the CLI
    manifest = json.loads((bundle_copy / "edgeemb.json").read_text())
    manifest["name"] = "some-other-bundle"
    (bundle_copy / "edgeemb.json").write_text(json.dumps(manifest))
    with pytest.raises(EmbedJobError, match="shards were made with bundle"):
        build_index_from_embeddings(emb, tmp_path / "ix2", bundle=bundle_copy)
    out = run_cli(["index", "build", str(bundle_copy), "--from-embeddings", str(emb), "-o", str(tmp_path / "ix3")])
    assert out.returncode == 2 and "shards were made with bundle" in out.stderr
    assert not (tmp_path / "ix3").exists()
    out = run_cli(["index", "build", "--from-embeddings", str(emb), "-o", str(tmp_path / "ix4")])
    assert out.returncode == 0 and "indexed 240 documents" in out.stdout, out.stderr
    with pytest.raises(IndexStoreError, match="already holds an index"):
        build_index_from_embeddings(emb, tmp_path / "ix4")


def test_import_and_the_local_engine_never_load_ray(default_bundle, tmp_path):
    script = ("import sys, edgeemb, edgeemb.jobs, edgeemb.cli.main\n"
              "assert not [m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow')], 'import'\n"
              "from edgeemb.jobs import embed_corpus\n"
              "embed_corpus(sys.argv[1], sys.argv[2], sys.argv[3], threads=1)\n"
              "assert not [m for m in sys.modules if m.split('.')[0] == 'ray'], 'local engine'\n")
    path = tmp_path / "docs.txt"
    make_corpus(path, 20, ids=False)
    out = subprocess.run([sys.executable, "-c", script, str(path), str(default_bundle), str(tmp_path / "e")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr


# -- Ray ------------------------------------------------------------------------------------------------------
@pytest.fixture()
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def ray_worker_count() -> int:
    """Ray worker processes on this machine (each a Python process of ~100 MB)."""
    n = 0
    for d in Path("/proc").iterdir():
        try:
            n += d.name.isdigit() and b"default_worker.py" in (d / "cmdline").read_bytes()
        except OSError:
            pass
    return n


def test_ray_engine_end_to_end_matches_local(default_bundle, corpus, tmp_path, ray_cluster):
    path, ids = corpus
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], ray_worker_count())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        res = embed_corpus(path, default_bundle, tmp_path / "ray", engine="ray", workers=2, threads=1, block_rows=8)
    finally:
        done.set()
        sampler.join(5)
    assert (res.rows, res.shards, res.written) == (240, 30, 30)
    assert ray_cluster.is_initialized()  # a cluster the caller started is left running
    assert time.perf_counter() - start < 40
    # read tasks ask for no CPU, so nothing but the engine's cap stops Ray from starting a worker per block
    # (uncapped: 25+ workers for these 30 blocks); 2 actors + their read tasks + Ray's own helpers fit in 10
    assert peak[0] <= 10, f"{peak[0]} Ray workers for 30 blocks"
    embed_corpus(path, default_bundle, tmp_path / "local", block_rows=8, threads=1)
    ray_ids, ray_vectors, _ = job_rows(tmp_path / "ray")
    local_ids, local_vectors, _ = job_rows(tmp_path / "local")
    assert ray_ids == local_ids == ids
    np.testing.assert_array_equal(ray_vectors, local_vectors)
    assert json.loads((tmp_path / "ray" / MANIFEST).read_text())["engine"] == "ray"


@pytest.mark.slow
def test_ray_actor_killed_mid_run_loses_and_duplicates_nothing(default_bundle, tmp_path, monkeypatch, ray_cluster):
    path = tmp_path / "docs.txt"
    ids = make_corpus(path, 600, ids=False)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    monkeypatch.setenv("EDGEEMB_EMBED_ACTOR_PIDS", str(pid_dir))
    monkeypatch.setenv("EDGEEMB_EMBED_DELAY", "0.5")  # blocks last long enough to be killed mid-block
    killed: list[int] = []

    def killer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(pid_dir.iterdir())) < 2:
            time.sleep(0.1)
        time.sleep(1.5)  # both actors are busy with blocks now
        pid = int(min(pid_dir.iterdir()).name)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    res = embed_corpus(path, default_bundle, tmp_path / "emb", engine="ray", workers=2, threads=1, block_rows=30)
    t.join(5)
    assert killed, "no actor was killed"
    assert len(list(pid_dir.iterdir())) >= 3  # the killed actor was replaced by a new one
    got_ids, vectors, _ = job_rows(tmp_path / "emb")
    assert res.rows == 600 and got_ids == ids and len(set(got_ids)) == 600 and vectors.shape == (600, 384)
    assert np.isfinite(vectors).all() and (np.abs(np.linalg.norm(vectors, axis=1) - 1) < 1e-3).all()


def test_a_parquet_corpus_reads_like_jsonl(default_bundle, corpus, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path, ids = corpus
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    table = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows], "n": [r["n"] for r in rows]})
    pq.write_table(table, tmp_path / "docs.parquet", row_group_size=50)  # blocks cross row groups
    embed_corpus(tmp_path / "docs.parquet", default_bundle, tmp_path / "pq", block_rows=64, threads=1)
    embed_corpus(path, default_bundle, tmp_path / "jsonl", block_rows=64, threads=1)
    pq_ids, pq_vectors, pq_texts = job_rows(tmp_path / "pq")
    js_ids, js_vectors, js_texts = job_rows(tmp_path / "jsonl")
    assert pq_ids == js_ids == ids and pq_texts == js_texts
    np.testing.assert_array_equal(pq_vectors, js_vectors)


def test_without_the_ray_extra_the_ray_engine_says_how_to_install_it(default_bundle, corpus, tmp_path, monkeypatch):
    path, _ = corpus
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(EmbedJobError, match=r"pip install edgeemb\[ray\]"):
        embed_corpus(path, default_bundle, tmp_path / "emb", engine="ray")
    assert not (tmp_path / "emb").exists()


def test_index_from_embeddings_with_another_vector_storage(default_bundle, corpus, tmp_path):
    import inspect

    import edgeemb

    if "vectors" not in inspect.signature(edgeemb.Index.create).parameters:
        pytest.skip("this Index offers one vector storage")
    path, ids = corpus
    embed_corpus(path, default_bundle, tmp_path / "emb", block_rows=100, threads=1)
    _, vectors, _ = job_rows(tmp_path / "emb")
    report = build_index_from_embeddings(tmp_path / "emb", tmp_path / "ix", vectors="binary")
    assert report.count == 240
    with edgeemb.Index.open(tmp_path / "ix", read_only=True) as ix:
        assert ix.search(vectors[42], k=1)[0].id == ids[42]
