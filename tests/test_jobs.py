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


# -- Ray: joining a running cluster, a wrong address, a killed driver -------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_naming(text: str) -> list[int]:
    """Live processes whose command line contains `text`."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and text.encode() in (d / "cmdline").read_bytes():
                found.append(int(d.name))
        except OSError:
            pass
    return found


@pytest.fixture()
def ray_head():
    """A head node started with `ray start --head` on 127.0.0.1 in its own session and temp dir; yields its
    address and temp dir. Stopped by signalling its process group, not `ray stop`, which would stop every Ray
    cluster on the machine (another test's, another user's)."""
    import shutil
    import tempfile

    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("no `ray` command beside this Python")
    # Ray's sockets live under the temp dir and an AF_UNIX path holds 107 bytes: tmp_path is too deep for it
    temp = tempfile.mkdtemp(prefix="edgeemb-ray-")
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}",
                             "--disable-usage-stats"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out = proc.communicate(timeout=120)[0].decode(errors="replace")
        if proc.returncode != 0:
            pytest.skip(f"`ray start --head` failed here: {out.strip().splitlines()[-1:]}")
        yield f"127.0.0.1:{port}", temp
    finally:
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            for pid in pids_naming(temp):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and pids_naming(temp):
                time.sleep(0.2)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_engine_joins_a_running_cluster_and_leaves_it_running(default_bundle, corpus, tmp_path, ray_head):
    address, temp = ray_head
    path, ids = corpus
    cluster = [p for p in pids_naming(temp) if b"gcs_server" in Path(f"/proc/{p}/cmdline").read_bytes()
               or b"raylet" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(cluster) >= 2, "no gcs_server / raylet of the head node found"
    # the API in a fresh interpreter: after an in-process local cluster (the tests above), a second ray.init in
    # the same process saw its actors cancelled before they ran (Ray Data state kept across clusters)
    script = ("import sys, ray\nfrom edgeemb.jobs import embed_corpus\n"
              "res = embed_corpus(sys.argv[1], sys.argv[2], sys.argv[3], engine='ray', address=sys.argv[4], "
              "workers=2, threads=1, block_rows=40)\n"
              "assert (res.rows, res.shards) == (240, 6), res\n"
              "assert not ray.is_initialized(), 'the job left its connection open'\n")
    api = subprocess.run([sys.executable, "-c", script, str(path), str(default_bundle), str(tmp_path / "api"),
                          address], capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "RAY_AUTH_MODE": "disabled"})  # the head's mode
    assert api.returncode == 0, api.stderr[-3000:]
    assert all(Path(f"/proc/{p}").exists() for p in cluster)  # the cluster it joined is left running
    cli = run_cli(["embed", str(path), "-b", str(default_bundle), "-o", str(tmp_path / "cli"), "--engine", "ray",
                   "--address", address, "--workers", "2", "--threads", "1", "--block-size", "40", "-q"],
                  env={"RAY_AUTH_MODE": "disabled"})
    assert cli.returncode == 0, cli.stderr
    assert "engine ray" in cli.stderr
    assert all(Path(f"/proc/{p}").exists() for p in cluster)
    embed_corpus(path, default_bundle, tmp_path / "local", block_rows=40, threads=1)
    local_ids, local_vectors, _ = job_rows(tmp_path / "local")
    for name in ("api", "cli"):
        got_ids, vectors, _ = job_rows(tmp_path / name)
        assert got_ids == local_ids == ids
        np.testing.assert_array_equal(vectors, local_vectors)
        assert json.loads((tmp_path / name / MANIFEST).read_text())["engine"] == "ray"


def test_ray_engine_wrong_address_is_one_quick_line(default_bundle, corpus, tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    path, _ = corpus
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(EmbedJobError, match=f"cannot join the Ray cluster at {address}") as info:
        embed_corpus(path, default_bundle, tmp_path / "api", engine="ray", address=address)
    assert "\n" not in str(info.value)
    assert time.perf_counter() - start < 30  # Ray alone retries for minutes
    out = run_cli(["embed", str(path), "-b", str(default_bundle), "-o", str(tmp_path / "cli"), "--engine", "ray",
                   "--address", address, "-q"], timeout=120)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot join the Ray cluster at {address}" in lines[0], out.stderr


def ray_descendants(root: int) -> dict[int, int]:
    """pid -> start time of the live descendants of `root` whose command line names ray."""
    from edgeemb.jobs.ray_guard import descendants, names_ray

    return {pid: t for pid, t in descendants(root).items() if names_ray(pid)}


def alive(pid: int, started: int) -> bool:
    from edgeemb.jobs.ray_guard import _stat

    st = _stat(pid)
    return st is not None and st[1] == started and st[2] not in "ZX"


@pytest.mark.slow
def test_a_killed_driver_leaves_no_ray_processes(default_bundle, tmp_path):
    pytest.importorskip("ray")
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    path = tmp_path / "docs.txt"
    make_corpus(path, 400, ids=False)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    script = ("import sys\nfrom edgeemb.jobs import embed_corpus\n"
              "embed_corpus(sys.argv[1], sys.argv[2], sys.argv[3], engine='ray', workers=2, threads=1, "
              "block_rows=20)\n")
    driver = subprocess.Popen([sys.executable, "-c", script, str(path), str(default_bundle), str(tmp_path / "emb")],
                              env={**os.environ, "EDGEEMB_EMBED_ACTOR_PIDS": str(pid_dir),
                                   "EDGEEMB_EMBED_DELAY": "0.5"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and len(list(pid_dir.iterdir())) < 2 and driver.poll() is None:
            time.sleep(0.2)
        assert len(list(pid_dir.iterdir())) >= 2, "the actors never started"
        time.sleep(1.0)  # the guard records twice a second
        before = ray_descendants(driver.pid)
        names = {Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0] for p in before if alive(p, before[p])}
        assert any(b"raylet" in n for n in names) and any(b"DashboardAgent" in n for n in names), names
    finally:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + 10  # without the guard, Ray's agents outlived the driver by ~61 s
    while time.monotonic() < deadline and any(alive(p, t) for p, t in before.items()):
        time.sleep(0.5)
    left = [p for p, t in before.items() if alive(p, t)]
    for pid in left:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} Ray processes outlived the killed driver"
