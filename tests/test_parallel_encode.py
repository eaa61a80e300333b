"""Both cores (issue #15): the next span tokenised in a background thread, batches dealt to several sessions.

Overlap must give the serial loop's vectors bit for bit (same spans, same batches, same session); sessions must
agree to cosine >= 0.99999; a single query must start no thread; a tokeniser or session error must reach the
caller as the same exception, and no thread may outlive the call (also on KeyboardInterrupt).
"""
from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

import edgeemb
from edgeemb.encode import encoder as encoder_module
from edgeemb.encode.parallel import SessionPool, one_ahead
from edgeemb.errors import BundleError, EdgeembError, InputError

BOUND = 0.99999
WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "stock", "markets", "fell", "and", "rivers", "rose", "over",
         "这部电影很好看", "apple"]


def mixed_texts(n: int = 300, seed: int = 0) -> list[str]:
    """n texts of 0 to ~400 words (past max_length: truncated), English and Chinese, empty ones included."""
    rng = np.random.default_rng(seed)
    lengths = rng.choice([0, 1, 3, 8, 20, 60, 400], size=n, p=[.03, .1, .2, .3, .2, .12, .05])
    return [" ".join(rng.choice(WORDS, size=k)) for k in lengths]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of a with the same row of b."""
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def edgeemb_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("edgeemb-")]


@pytest.fixture()
def started(monkeypatch):
    """Names of the threads started during the test."""
    names: list[str] = []
    real = threading.Thread.start

    def start(self):
        names.append(self.name)
        real(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    return names


@pytest.fixture()
def small_spans(monkeypatch):
    """Spans of 40 texts, so a few hundred texts are several spans."""
    monkeypatch.setattr(encoder_module, "CHUNK_TEXTS", 40)


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", edgeemb.TruncationWarning)
        return fn(*a, **kw)


def serial_and_overlap(enc, texts, **kw):
    enc.overlap = False
    serial = quiet(enc.encode, texts, **kw)
    enc.overlap = True
    return serial, quiet(enc.encode, texts, **kw)


# ---- one_ahead and SessionPool ------------------------------------------------------------------------------

def test_one_ahead_keeps_order_and_is_never_more_than_one_ahead():
    called: list[int] = []

    def fn(i):
        called.append(i)
        return i * 10

    got = []
    for i, value in enumerate(one_ahead(fn, list(range(6)))):
        assert len(called) <= i + 2  # item i in hand, at most item i + 1 computed ahead
        got.append(value)
    assert got == [0, 10, 20, 30, 40, 50] and not edgeemb_threads()


def test_one_ahead_raises_the_workers_exception_at_its_item():
    def fn(i):
        if i == 2:
            raise InputError("bad item 2")
        return i

    got = []
    with pytest.raises(InputError, match="bad item 2"):
        for value in one_ahead(fn, [0, 1, 2, 3]):
            got.append(value)  # noqa: PERF402 - the items before the error are what is checked
    assert got == [0, 1] and not edgeemb_threads()


def test_session_pool_uses_every_backend_and_raises_a_task_error():
    seen: list[str] = []
    with SessionPool(["a", "b"]) as pool:
        for _ in range(20):
            pool.submit(lambda b: (seen.append(b), threading.Event().wait(0.002)))
    assert sorted(set(seen)) == ["a", "b"] and len(seen) == 20 and not edgeemb_threads()

    def fail(b):
        raise BundleError("session broke")

    with pytest.raises(BundleError, match="session broke"), SessionPool(["a", "b"]) as pool:
        pool.submit(fail)
    assert not edgeemb_threads()


# ---- overlap: the default bundle ----------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
def test_overlap_gives_the_serial_vectors_bit_for_bit(default_bundle, small_spans, started, threads):
    enc = edgeemb.load(default_bundle, threads=threads)
    texts = mixed_texts()
    assert len(list(encoder_module.tokenize_chunks(texts, 10**6))) > 2
    serial, overlap = serial_and_overlap(enc, texts, batch_size=16)
    assert "edgeemb-tokenise" in started  # the overlap path ran
    assert np.array_equal(serial, overlap) and not edgeemb_threads()


def test_windows_overlap_gives_the_serial_vectors_bit_for_bit(default_bundle, monkeypatch, started):
    enc = edgeemb.load(default_bundle, threads=2)
    n = enc.manifest.max_length
    docs = [("pasta " * (n + 40 * i)) + "train " * (10 * i) for i in range(6)] + ["short one", ""]
    monkeypatch.setattr(encoder_module, "CHUNK_TEXTS", 2)
    serial, overlap = serial_and_overlap(enc, docs, long_text="window")
    assert "edgeemb-tokenise" in started and np.array_equal(serial, overlap)


def test_a_query_and_a_one_span_call_start_no_thread(default_bundle, started):
    enc = edgeemb.load(default_bundle, threads=2)
    enc.encode("a single query")
    enc.encode(mixed_texts(100), batch_size=8)  # one span of many batches: the plain loop
    assert started == []


def test_a_tokeniser_error_in_the_background_reaches_the_caller(default_bundle, small_spans, monkeypatch):
    enc = edgeemb.load(default_bundle, threads=2)
    real, calls = enc.tokenizer.tokenize, []

    def tokenize(texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise InputError("texts[7] is broken")
        return real(texts)

    monkeypatch.setattr(enc.tokenizer, "tokenize", tokenize)
    with pytest.raises(InputError, match="texts\\[7\\] is broken"):
        quiet(enc.encode, mixed_texts(200))
    assert not edgeemb_threads()
    monkeypatch.setattr(enc.tokenizer, "tokenize", lambda texts: (_ for _ in ()).throw(BundleError("bad vocab")))
    with pytest.raises(BundleError, match="bad vocab"):
        enc.encode(mixed_texts(200))
    assert not edgeemb_threads()


class Interrupting:
    """A backend that raises KeyboardInterrupt on its n-th run (a user's Ctrl-C while the graph runs)."""

    def __init__(self, inner, n):
        self.inner, self.normalized, self.n, self.runs = inner, inner.normalized, n, 0

    def run(self, output_names, feeds):
        self.runs += 1
        if self.runs == self.n:
            raise KeyboardInterrupt
        return self.inner.run(output_names, feeds)


def test_keyboard_interrupt_leaves_no_thread_running(default_bundle, small_spans):
    enc = edgeemb.load(default_bundle, threads=2)
    enc.backend = Interrupting(enc.backend, 3)
    with pytest.raises(KeyboardInterrupt):
        quiet(enc.encode, mixed_texts(200), batch_size=8)
    assert not edgeemb_threads()
    pair = edgeemb.load(default_bundle, threads=2, sessions=2)
    pair._sessions = tuple(Interrupting(b, 2) for b in pair._sessions)
    pair.backend = pair._sessions[0]
    with pytest.raises(KeyboardInterrupt):
        quiet(pair.encode, mixed_texts(200), batch_size=8)
    assert not edgeemb_threads()


# ---- overlap: a bundle built here (tiny BERT, today's int8 recipe) -------------------------------------------

@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory):
    pytest.importorskip("sentence_transformers", reason="needs the export extra")
    from edgeemb_export.sentence.export import export_sentence
    from test_sentence_archs import build_st_folder, train_wordpiece

    tok = train_wordpiece(WORDS * 20, 120)
    folder = tmp_path_factory.mktemp("parallel_tiny")
    src, _ = build_st_folder("bert", folder, tok)
    return export_sentence(src, folder / "int8", "int8", check=False)


def test_overlap_and_sessions_on_a_built_int8_bundle(tiny_int8, small_spans, started):
    texts = mixed_texts(250, seed=1)
    enc = edgeemb.load(tiny_int8, threads=2)
    serial, overlap = serial_and_overlap(enc, texts)
    assert "edgeemb-tokenise" in started and np.array_equal(serial, overlap)
    pair = quiet(edgeemb.load(tiny_int8, threads=2, sessions=2).encode, texts)
    assert cosines(pair, serial)[np.linalg.norm(serial, axis=1) > 0].min() >= BOUND


# ---- sessions ------------------------------------------------------------------------------------------------

class Recording:
    """Passes runs to the real backend and counts the rows it ran."""

    def __init__(self, inner):
        self.inner, self.normalized, self.rows = inner, inner.normalized, 0

    def run(self, output_names, feeds):
        self.rows += len(feeds["input_ids"])
        return self.inner.run(output_names, feeds)


def test_two_sessions_share_the_threads_and_agree_with_one(default_bundle, small_spans, started):
    one = edgeemb.load(default_bundle, threads=2)
    pair = edgeemb.load(default_bundle, threads=2, sessions=2)
    assert pair.sessions == 2 and one.sessions == 1 and "sessions=2" in repr(pair)
    assert [b.session.get_session_options().intra_op_num_threads for b in pair._backends()] == [1, 1]
    pair._sessions = tuple(Recording(b) for b in pair._sessions)
    pair.backend = pair._sessions[0]
    texts = mixed_texts(200)
    want, got = quiet(one.encode, texts, batch_size=8), quiet(pair.encode, texts, batch_size=8)
    rows = [b.rows for b in pair._sessions]
    assert sum(rows) == len(texts) and min(rows) > 0, rows  # every batch ran once, on both sessions
    assert any(n.startswith("edgeemb-session-") for n in started) and not edgeemb_threads()
    cos = cosines(want, got)
    live = np.linalg.norm(want, axis=1) > 0
    assert cos[live].min() >= BOUND, float(cos[live].min())
    print(f"sessions=2 vs 1: worst cosine {cos[live].min():.9f}, max abs diff {np.abs(want - got).max():.3g}")
    windows = [("pasta " * 300) + "train " * 20 * i for i in range(5)]
    a, b = one.encode(windows, long_text="window"), pair.encode(windows, long_text="window")
    assert (cosines(a, b) >= BOUND).all()


def test_a_session_error_reaches_the_caller(default_bundle):
    pair = edgeemb.load(default_bundle, threads=2, sessions=2)

    class Broken:
        normalized = True

        def run(self, output_names, feeds):
            raise EdgeembError("onnxruntime failed on a batch of 8 texts (test)")

    pair._sessions = (pair._sessions[0], Broken())
    with pytest.raises(EdgeembError, match="batch of 8 texts"):
        quiet(pair.encode, mixed_texts(200), batch_size=8)
    assert not edgeemb_threads()


def test_replacing_the_backend_drops_the_other_sessions(default_bundle):
    pair = edgeemb.load(default_bundle, threads=2, sessions=2)
    pair.backend = Recording(pair.backend)
    pair.encode(mixed_texts(50), batch_size=8)
    assert pair.sessions == 1 and pair.backend.rows == 50


@pytest.mark.parametrize("sessions", [0, 3, -1, True, 1.5, "2"])
def test_sessions_are_validated(default_bundle, sessions):
    with pytest.raises(InputError, match="sessions must be a positive int no larger than threads \\(2\\)"):
        edgeemb.load(default_bundle, threads=2, sessions=sessions)


def test_static_bundles_ignore_sessions():
    from edgeemb.paths import default_bundle_path

    if not (default_bundle_path("default-static") / "edgeemb.json").is_file():
        pytest.skip("default-static bundle not built")
    enc = edgeemb.load("default-static", threads=2, sessions=2)
    assert enc.sessions == 1 and not enc.overlap
    assert enc.encode(["a cat on the mat"]).shape == (1, enc.dim)


def test_low_memory_tokenises_nothing_ahead(default_bundle):
    assert not edgeemb.load(default_bundle, low_memory=True).overlap
    assert edgeemb.load(default_bundle, threads=1).overlap


def test_index_build_takes_sessions(default_bundle, tmp_path):
    from edgeemb.cli.main import main

    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(mixed_texts(60, seed=2)[i] or "empty" for i in range(60)) + "\n", encoding="utf-8")
    assert main(["index", "build", str(default_bundle), str(corpus), "-o", str(tmp_path / "ix"), "--threads", "2",
                 "--sessions", "2"]) == 0
    assert main(["index", "build", str(default_bundle), str(corpus), "-o", str(tmp_path / "iy"),
                 "--sessions", "0"]) != 0
