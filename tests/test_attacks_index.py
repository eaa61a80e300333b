"""Attacks on the index and its builder (issue #14): a rebuild next to a live writer, an interrupted build or
create, read-only media, a full disk at close, non-finite vectors, hostile corpora and arguments."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeemb.cli import main
from edgeemb.corpus import CorpusReader
from edgeemb.errors import CorpusError, IndexStoreError, InputError
from edgeemb.search.hybrid import HybridRetriever
from edgeemb.search.index import STORE, Index
from edgeemb.search.lexical import LexicalIndex

sys.path.insert(0, str(Path(__file__).parent))
from stub_encoders import StubEncoder, make_docs

ROOT = Path(__file__).resolve().parent.parent
DIM = 16
COARSE, FINE = StubEncoder(dim=16, salt=1, name="coarse"), StubEncoder(dim=48, salt=2, name="fine")


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    if "EDGEEMB_CRASH_AT" not in extra:
        e.pop("EDGEEMB_CRASH_AT", None)
    return e


def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeemb", *args], capture_output=True, text=True, timeout=600,
                          env=env(**extra), check=False)


def vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def static_bundle() -> Path:
    """The embedded static default (fast to build an index with); skip when setup has not built it."""
    from edgeemb.paths import default_bundle_path

    path = default_bundle_path("default-static")
    if not (path / "edgeemb.json").is_file():
        pytest.skip(f"default-static bundle not built at {path}")
    return path


def corpus_file(tmp_path: Path, n: int, name: str = "docs.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(make_docs(n)) + "\n", encoding="utf-8")
    return path


# -- index build --force / --resume -----------------------------------------------------------------------
LIVE_WRITER = """
import sys, time, numpy as np
from edgeemb.search.index import Index
ix = Index.create(sys.argv[1], dim=16)
ix.add_vectors(np.ones((3, 16), np.float32), ["a", "b", "c"], ["a", "b", "c"])
print("ready", flush=True)
sys.stdin.readline()
ix.add_vectors(np.ones((1, 16), np.float32), ["d"], ["d"])
ix.close()
print("closed", flush=True)
"""


def test_force_refuses_an_index_open_for_writing_elsewhere(tmp_path):
    out = tmp_path / "ix"
    corpus = corpus_file(tmp_path, 5)
    writer = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(out)], env=env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        res = cli("index", "build", "default-static", str(corpus), "-o", str(out), "--force")
        assert res.returncode == 2 and "open for writing by another process" in res.stderr, res.stderr
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "closed", writer.stderr.read()
    finally:
        writer.kill()
        writer.wait()
    with Index.open(out) as ix:  # the writer's acknowledged documents are all there
        assert ix.ids() == ["a", "b", "c", "d"]


def test_force_replaces_only_the_index_files(tmp_path, static_bundle):
    out = tmp_path / "ix"
    assert main(["index", "build", str(static_bundle), str(corpus_file(tmp_path, 30)), "-o", str(out)]) == 0
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    (out / "sub").mkdir()
    (out / "sub" / "keep.md").write_text("also mine", encoding="utf-8")
    corpus = tmp_path / "other.txt"
    corpus.write_text("apple pie recipe\nriver mountain walk\n", encoding="utf-8")
    assert main(["index", "build", str(static_bundle), str(corpus), "-o", str(out), "--force"]) == 0
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (out / "sub" / "keep.md").read_text(encoding="utf-8") == "also mine"
    with Index.open(out) as ix:
        assert ix.count() == 2 and ix.get("doc-0").text == "apple pie recipe"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.txt", "ix", "other.txt"]  # no partial, no old copy


def test_interrupted_build_keeps_the_old_index_and_resume_finishes(tmp_path, static_bundle):
    out = tmp_path / "ix"
    assert main(["index", "build", str(static_bundle), str(corpus_file(tmp_path, 20, "old.txt")), "-o", str(out)]) == 0
    corpus = corpus_file(tmp_path, 1300)
    res = cli("index", "build", str(static_bundle), str(corpus), "-o", str(out), "--force",
              EDGEEMB_CRASH_AT="build-chunk")  # killed after the first chunk (512 documents) committed
    assert res.returncode == 137, res.stderr
    with Index.open(out, read_only=True) as ix:
        assert ix.count() == 20  # the old index, untouched
    partial = tmp_path / ".ix.partial"
    with Index.open(partial, read_only=True) as ix:
        assert ix.count() == 512
    res = cli("index", "build", str(static_bundle), str(corpus), "-o", str(out), "--force")
    assert res.returncode == 2 and "--resume" in res.stderr
    res = cli("index", "build", str(static_bundle), str(corpus), "-o", str(out), "--force", "--resume")
    assert res.returncode == 0, res.stderr
    assert "indexed 1300 documents" in res.stdout and "512 were already there, 788 added" in res.stdout
    assert not partial.exists()
    docs = make_docs(1300)
    with Index.open(out) as ix:
        assert ix.count() == 1300 and ix.get("doc-1299").text == docs[1299] and ix.get("doc-3").text == docs[3]


def test_build_refuses_a_folder_of_other_files_and_writes_nothing(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("x", encoding="utf-8")
    for extra in ([], ["--force"]):
        assert main(["index", "build", "default-static", str(corpus_file(tmp_path, 3)), "-o", str(out), *extra]) == 2
    assert sorted(os.listdir(out)) == ["notes.txt"]
    with pytest.raises(IndexStoreError, match="not an index.*notes.txt"):
        Index.create(out, dim=8)
    assert sorted(os.listdir(out)) == ["notes.txt"]


# -- Index.create killed midway ---------------------------------------------------------------------------
CREATOR = "import sys; from edgeemb.search.index import Index; Index.create(sys.argv[1], dim=8)"


def test_create_killed_before_its_settings_commit_leaves_a_folder_create_accepts(tmp_path):
    path = tmp_path / "ix"
    out = subprocess.run([sys.executable, "-c", CREATOR, str(path)], env=env(EDGEEMB_CRASH_AT="store-schema"),
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 137, out.stderr
    assert (path / STORE).is_file()
    with pytest.raises(IndexStoreError, match="never finished"):
        Index.open(path)
    with Index.create(path, dim=8) as ix:
        ix.add_vectors(np.ones((1, 8), np.float32), ["a"], ["a"])
    with Index.open(path) as ix:
        assert ix.count() == 1


def test_a_store_left_by_an_older_non_atomic_create_is_replaced(tmp_path):
    path = tmp_path / "ix"
    path.mkdir()
    db = sqlite3.connect(path / STORE)  # what the old create left when killed after its first CREATE TABLE
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.close()
    with pytest.raises(IndexStoreError, match="never finished"):
        Index.open(path)
    Index.create(path, dim=8, exist_ok=True).close()
    with Index.open(path) as ix:
        assert ix.count() == 0 and ix.dim == 8


# -- read-only media --------------------------------------------------------------------------------------
@pytest.fixture
def read_only_view(tmp_path):
    """A read-only view of a folder: a read-only bind mount (root), else chmod (non-root), else skip."""
    views = []

    def make(src: Path) -> Path:
        dst = tmp_path / f"ro-{len(views)}"
        dst.mkdir()
        if os.geteuid() == 0:
            ok = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True).returncode == 0 and \
                subprocess.run(["mount", "-o", "remount,ro,bind", str(dst)], capture_output=True).returncode == 0
            if not ok:
                subprocess.run(["umount", str(dst)], capture_output=True)
                pytest.skip("cannot make a read-only bind mount here (and chmod does not stop root)")
            views.append(("mount", dst))
            return dst
        dst.rmdir()
        shutil.copytree(src, dst)
        for p in [dst, *dst.iterdir()]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        views.append(("chmod", dst))
        return dst

    yield make
    for kind, dst in views:
        if kind == "mount":
            subprocess.run(["umount", str(dst)], capture_output=True)
        else:
            dst.chmod(0o755)


def test_a_cleanly_closed_index_opens_read_only_on_read_only_media(tmp_path, read_only_view):
    src = tmp_path / "ix"
    x = vecs(50)
    with Index.create(src, dim=DIM) as ix:
        ix.add_vectors(x, [f"t{i}" for i in range(50)], [f"d{i}" for i in range(50)], [{"n": i} for i in range(50)])
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:
        h.add(make_docs(20), ids=[f"h{i}" for i in range(20)])
    ro, ro_hybrid = read_only_view(src), read_only_view(tmp_path / "hy")
    with pytest.raises(OSError):
        (ro / "probe").write_text("x")
    with Index.open(ro, read_only=True) as ix:
        assert ix.count() == 50 and ix.search(x[7], k=1)[0].id == "d7"
        assert {h.id for h in ix.search(x[0], k=5, filter={"n": {"$lt": 3}})} == {"d0", "d1", "d2"}
    with HybridRetriever(COARSE, FINE, ro_hybrid, read_only=True) as h:
        assert h.search(make_docs(20)[4], k=1)[0].id == "h4"
    with pytest.raises(IndexStoreError, match="read_only=True"):
        Index.open(ro)  # a writer cannot: the message says what to do


# -- full disk at close, non-finite vectors -------------------------------------------------------------------
def test_hybrid_close_on_a_full_disk_releases_everything_and_says_what_was_not_saved(tmp_path, monkeypatch):
    path = tmp_path / "hy"
    h = HybridRetriever(COARSE, FINE, path)
    h.add(make_docs(30), ids=[f"d{i}" for i in range(30)])

    def full(self, file):
        raise IndexStoreError(f"cannot save {file} (No space left on device)")

    monkeypatch.setattr(LexicalIndex, "save", full)
    with pytest.raises(IndexStoreError, match="not saved: the keyword index.*No space left"):
        h.close()
    assert h.index.closed
    monkeypatch.undo()
    with HybridRetriever(COARSE, FINE, path) as again:  # same process: the flock was released
        assert again.count() == 30 and again.lexical_repaired == 30
        assert again.search(make_docs(30)[11], k=1)[0].id == "d11"


@pytest.mark.parametrize("which", ["fine", "coarse"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_vectors_are_refused_in_hybrid_add_vectors(tmp_path, which, bad):
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:
        coarse = np.ones((2, COARSE.dim), np.float32)
        fine = np.ones((2, FINE.dim), np.float32)
        (fine if which == "fine" else coarse)[1, 3] = bad
        with pytest.raises(InputError, match="NaN or infinity"):
            h.add_vectors(coarse, fine, ["a", "b"], ids=["a", "b"])
        assert h.count() == 0


# -- arguments that used to give raw TypeErrors or pass silently ---------------------------------------------
@pytest.fixture
def index(tmp_path):
    ix = Index.create(tmp_path / "ix", StubEncoder(dim=DIM))
    ix.add(make_docs(20), ids=[f"d{i}" for i in range(20)])
    yield ix
    ix.close()


@pytest.mark.parametrize("call, message", [
    (lambda ix: ix.search(b"bytes query"), "query is bytes"),
    (lambda ix: ix.search([["nested"]]), "must hold numbers|str"),
    (lambda ix: ix.search([1.0, "a"]), r"queries\[0\] is float"),
    (lambda ix: ix.search({"q": 1}), "got dict"),
    (lambda ix: ix.search(np.array(["a", "b"])), "numbers"),
    (lambda ix: ix.search("apple", ef="x"), "ef must be a positive int"),
    (lambda ix: ix.search("apple", ef=10**30), "ef must be a positive int.*at most"),
    (lambda ix: ix.search("apple", ef=0), "ef must be"),
    (lambda ix: ix.search("apple", k=True), "k must be a positive int"),
    (lambda ix: ix.search("apple", k=2.5), "k must be a positive int"),
    (lambda ix: ix.search(""), "empty"),
    (lambda ix: ix.search("  \n"), "empty"),
    (lambda ix: ix.search("bad \udcff text"), "not valid Unicode"),
    (lambda ix: ix.add(["fine", "bad \ud800"]), r"texts\[1\] is not valid Unicode"),
    (lambda ix: ix.add_vectors(np.array([["a"] * DIM]), ["a"]), "must hold numbers"),
    (lambda ix: ix.add_vectors(np.array([[None] * DIM], dtype=object), ["a"]), "must hold numbers"),
    (lambda ix: ix.add_vectors([[1.0] * DIM, [1.0]], ["a", "b"]), "rectangular"),
    (lambda ix: ix.add_vectors(np.ones((1, DIM)), ["a"], metadata=[{"s": "\ud800"}]), "not valid Unicode"),
    (lambda ix: ix.delete(None), "ids or a filter"),
    (lambda ix: ix.delete("d1"), "not one str"),
    (lambda ix: ix.delete([None]), r"ids\[0\]"),
    (lambda ix: ix.update(["d1"], [{"a": 1}, {"b": 2}]), "1 ids and 2 metadata"),
    (lambda ix: ix.add(["a"], batch_size=True), "batch_size"),
])
def test_bad_arguments_are_input_errors_naming_them(index, call, message):
    with pytest.raises(InputError, match=message):
        call(index)
    assert index.count() == 20


@pytest.mark.parametrize("kw, message", [
    ({"dim": -3}, "dim must be a positive int"), ({"dim": 0}, "dim"), ({"dim": "8"}, "dim"),
    ({"dim": 8, "M": 0}, "M must"), ({"dim": 8, "ef_construction": True}, "ef_construction"),
    ({"dim": 8, "capacity": -1}, "capacity"), ({"dim": 8, "compact_threshold": 0}, "compact_threshold"),
])
def test_create_refuses_bad_settings_and_writes_nothing(tmp_path, kw, message):
    with pytest.raises(InputError, match=message):
        Index.create(tmp_path / "ix", **kw)
    assert not (tmp_path / "ix").exists()


def test_hybrid_search_refuses_bool_k_and_empty_queries(tmp_path):
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:
        h.add(make_docs(5))
        for kw, message in (({"k": True}, "k must"), ({"candidates": False}, "candidates must"),
                            ({"ef": "x"}, "ef must")):
            with pytest.raises(InputError, match=message):
                h.search("apple", **kw)
        with pytest.raises(InputError, match="empty"):
            h.search("")


# -- hostile corpora ------------------------------------------------------------------------------------------
def reader_docs(path: Path, **kw) -> list[str]:
    return [d.text for d in CorpusReader(path, **kw)]


def test_txt_lines_split_at_newline_only(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("one\fstill one\r\ntwo\u2028two\nthree\x85three\x1cthree\vthree\n\nfour".encode())
    assert reader_docs(path) == ["one\fstill one", "two\u2028two", "three\x85three\x1cthree\vthree", "four"]


@pytest.mark.parametrize("name, content, message", [
    ("big-int.jsonl", b'{"text": "a"}\n{"text": "b", "n": ' + b"9" * 5000 + b"}\n", "line 2 is not valid JSON"),
    ("deep.jsonl", b'{"text": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", "line 1 nests JSON"),
    ("deep-ok.jsonl", b'{"text": "a", "x": ' + b"[" * 100 + b"]" * 100 + b"}\n", "line 1 nests JSON more than 64"),
    ("nan.jsonl", b'{"text": "a", "x": NaN}\n', "line 1 holds a value the index cannot store"),
    ("surrogate.jsonl", b'{"text": "a \\ud800 b"}\n', "line 1 holds a lone surrogate"),
    ("long.tsv", b"id\ttext\n1\t" + b"w" * (16 * 2**20 + 10) + b"\n", "line 2 is longer than 1,048,576 bytes"),
    ("fields.tsv", b"id\ttext\n1\ta\tb\n", "line 2 has 3 tab-separated fields"),
    ("noid.jsonl", b'{"text": "a", "id": "x"}\n{"text": "b"}\n', "line 2: some documents have an 'id'"),
    ("dup.jsonl", b'{"text": "a", "id": "x"}\n{"text": "b", "id": "x"}\n', "line 2: id 'x' appears earlier"),
    ("badid.jsonl", b'{"text": "a", "id": ""}\n', "line 1: field 'id' must be"),
    ("header.tsv", b"source\tsentence\nx\ty\n", "no 'text' column.*--text-field"),
])
def test_hostile_corpus_lines_are_one_line_errors_naming_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        CorpusReader(path).scan()


def test_the_line_limit_can_be_raised(tmp_path):
    path = tmp_path / "long.tsv"
    path.write_bytes(b"id\ttext\n1\t" + b"w" * (17 * 2**20) + b"\n")  # over the csv module's 16 MB field limit
    assert [len(t) for t in reader_docs(path, max_line_bytes=20 * 2**20)] == [17 * 2**20]


def test_a_gigabyte_without_newlines_is_refused_at_once_with_nothing_left(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(2**30)  # sparse: one "line" of NUL bytes
    start = time.perf_counter()
    res = cli("index", "build", "default-static", str(big), "-o", str(tmp_path / "ix"))
    assert res.returncode == 2 and "line 1 is longer than 1,048,576 bytes" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and time.perf_counter() - start < 60
    assert sorted(os.listdir(tmp_path)) == ["big.txt"]


def test_an_empty_corpus_is_an_error_and_builds_nothing(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n\n", encoding="utf-8")
    res = cli("index", "build", "default-static", str(path), "-o", str(tmp_path / "ix"))
    assert res.returncode == 2 and "no documents (3 empty lines skipped)" in res.stderr, res.stderr
    assert not (tmp_path / "ix").exists() and not (tmp_path / ".ix.partial").exists()


def test_search_on_a_bundle_folder_says_it_is_a_bundle(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "edgeemb.json").write_text("{}", encoding="utf-8")
    assert main(["search", str(tmp_path / "b"), "query"]) == 2
    err = capsys.readouterr().err
    assert "is a bundle, not an index" in err and "edgeemb index build" in err and err.count("\n") == 1
    assert main(["search", str(tmp_path / "b"), "bad \udcff"]) == 2  # argv decoded with surrogateescape
    assert "not valid Unicode" in capsys.readouterr().err
