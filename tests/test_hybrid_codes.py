"""The hybrid's third recall source: sign bits of the fine vectors, derived from fine.i8 and kept in step with the
store (add, upsert, delete, reopen, compact, a crash), and recalling what keywords and the coarse model miss."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeemb.errors import InputError
from edgeemb.search.finebits import FineBits
from edgeemb.search.hybrid import DEFAULT_SPLIT, FINE_FILE, HybridRetriever, Split, merge_shares, quotas
from edgeemb.search.int8rows import Int8Rows, quantize
from edgeemb.search.signbits import asymmetric_dots

sys.path.insert(0, str(Path(__file__).parent))
from stub_encoders import StubEncoder, make_docs
from test_hybrid import CRASHER

ROOT = Path(__file__).resolve().parent.parent
COARSE, FINE = StubEncoder(dim=16, salt=1, name="coarse"), StubEncoder(dim=48, salt=2, name="fine")
SYNONYMS = {"automobile": "car", "purchase": "buy", "cheap": "inexpensive", "vehicle": "car"}


class ParaphraseEncoder(StubEncoder):
    """A fine model that knows synonyms: a text and its paraphrase get the same vector."""

    def encode(self, texts, batch_size: int = 32, **kw) -> np.ndarray:
        return super().encode([" ".join(SYNONYMS.get(w, w) for w in t.lower().split()) for t in texts])

    encode_queries = encode
    encode_documents = encode


def assert_bits_match_rows(h: HybridRetriever) -> None:
    """The bits hold exactly the store's labels, each the sign pattern of its int8 row in fine.i8."""
    labels = h.index.store.all_labels()
    assert np.array_equal(np.sort(h.bits.labels()), labels) and len(h.bits) == len(labels)
    if not len(labels):
        return
    rows = h.fine_rows.vectors(labels)  # dequantised: scale > 0 keeps each int8 value's sign
    got = np.ascontiguousarray(h.bits.codes_of(labels).T).view(np.uint8)[:, :FINE.dim // 8]
    np.testing.assert_array_equal(got, np.packbits(rows > 0, axis=1))


def test_bits_follow_add_upsert_delete_reopen_and_compact(tmp_path):
    docs = make_docs(200)
    h = HybridRetriever(COARSE, FINE, tmp_path / "hy")
    h.add(docs, ids=[f"d{i}" for i in range(200)], batch_size=64)
    assert_bits_match_rows(h)
    h.upsert(["violin desert chess", "winter nurse"], ids=["d3", "d150"])
    h.delete([f"d{i}" for i in range(10, 40)])
    assert_bits_match_rows(h)
    assert h.bits.tombstones > 0
    h.compact(force=True)
    assert h.bits.tombstones == 0
    assert_bits_match_rows(h)
    h.close()
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as again:  # derived from fine.i8 on open
        assert_bits_match_rows(again)
        assert again.bits_open_s >= 0 and again.bits.tombstones == 0
        hit = again.search("violin desert chess", k=1, candidates=10, split=(0, 1, 0))[0]
        assert hit.id == "d3" and hit.score > 0.99
        again.delete([f"d{i}" for i in range(40, 120)])
        assert again.bits.tombstones == 0  # past 30% of the slots: dropped without a compact
        assert_bits_match_rows(again)
    with HybridRetriever(COARSE, FINE, tmp_path / "hy", read_only=True) as ro:
        assert_bits_match_rows(ro)


def test_bits_come_from_the_stored_int8_rows_not_the_floats(tmp_path):
    rng = np.random.default_rng(3)
    v = rng.normal(size=(50, 48)).astype(np.float32)
    v[:, :6] = 1e-4  # below half an int8 step: the stored rows hold 0 there, the floats are positive
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rows = Int8Rows.create(tmp_path / FINE_FILE, 48)
    rows.write(0, v)
    bits = FineBits.from_rows(tmp_path / FINE_FILE, 48, np.arange(0, 50, 2))
    want = np.packbits(quantize(v[::2])["q"] > 0, axis=1)
    got = np.ascontiguousarray(bits.codes_of(range(0, 50, 2)).T).view(np.uint8)[:, :6]
    np.testing.assert_array_equal(got, want)
    first6 = 0b11111100  # packbits puts the first dimension in the top bit
    assert not (want[:, 0] & first6).any()  # the rows' zeros there, where the floats are positive:
    assert (np.packbits(v[::2] > 0, axis=1)[:, 0] & first6 == first6).all()
    live = FineBits(48)
    live.add(np.arange(0, 50, 2), quantize(v[::2])["q"])
    np.testing.assert_array_equal(live.codes_of(range(0, 50, 2)), bits.codes_of(range(0, 50, 2)))


def test_a_paraphrase_with_no_shared_word_is_recalled_by_the_bits():
    fine = ParaphraseEncoder(dim=48, salt=2, name="fine")
    docs = make_docs(400) + ["automobile purchase cheap"]
    h = HybridRetriever(COARSE, fine)
    h.add(docs, ids=[f"d{i}" for i in range(len(docs))])
    query = "buy inexpensive car"  # no word in common with its document; the coarse model has no synonyms
    target = f"d{len(docs) - 1}"
    coarse_rank = np.argsort(-(COARSE.encode(docs) @ COARSE.encode([query])[0])).tolist().index(len(docs) - 1)
    assert coarse_rank >= 20  # far in the coarse model
    without = h.search(query, k=10, candidates=20, split=(0.5, 0, 0.5))
    assert target not in {x.id for x in without} and without.timings["bits_candidates"] == 0
    for split in (None, (0.5, 0.5, 0), (0, 1, 0), (1, 1, 1)):
        res = h.search(query, k=1, candidates=20, split=split)
        assert res[0].id == target and res[0].score > 0.99 and res.timings["bits_candidates"] > 0, split
    h.close()


def test_bits_respect_filters_and_deletes():
    docs = make_docs(300)
    h = HybridRetriever(COARSE, FINE)
    h.add(docs, ids=[f"d{i}" for i in range(300)], metadata=[{"half": i % 2} for i in range(300)])
    res = h.search(docs[7], k=10, candidates=30, split=(0, 1, 0), filter={"half": 1})
    assert res[0].id == "d7" and all(x.metadata["half"] == 1 for x in res)
    assert h.search(docs[8], k=10, candidates=30, split=(0, 1, 0), filter={"half": 1})[0].id != "d8"
    h.delete(["d7"])
    assert "d7" not in {x.id for x in h.search(docs[7], k=10, candidates=30, split=(0, 1, 0))}
    h.close()


def test_bits_search_is_hamming_then_asymmetric_over_live_documents():
    rng = np.random.default_rng(5)
    n, dim = 6000, 96
    v = rng.normal(size=(n, dim)).astype(np.float32)
    bits = FineBits(dim)
    bits.add(np.arange(n) * 3, quantize(v)["q"])  # labels need not be slots
    assert bits.mark_deleted((np.arange(0, n, 7) * 3).tolist()) == len(range(0, n, 7))
    assert bits.tombstones == len(range(0, n, 7))  # 1 in 7: kept until compact
    q = rng.normal(size=dim).astype(np.float32)
    q /= np.linalg.norm(q)
    signs = quantize(v)["q"] > 0
    ham = (signs != (q > 0)).sum(axis=1)
    live = np.arange(n) % 7 != 0
    cut = np.sort(ham[live])[499]
    pool = np.flatnonzero((ham <= cut) & live)  # ties at the cut included, deleted never
    dots = (signs[pool].astype(np.float32) @ q)
    want = (pool[np.argsort(-dots, kind="stable")][:40] * 3).tolist()
    assert bits.search(q, 40, scan=500).tolist() == want
    np.testing.assert_allclose(asymmetric_dots(q, bits.codes_of(pool * 3), dim), dots, rtol=1e-5, atol=1e-5)
    picked = bits.search(q, 40, scan=500, allowed=np.arange(0, 3 * n, 6))  # every other document
    assert len(picked) == 40 and all(lab % 6 == 0 for lab in picked.tolist())


def test_split_quotas_and_merge():
    assert quotas(100, Split(0.5, 0.5, 0)) == (50, 50, 0)
    assert quotas(100, Split(1, 1, 1)) == (34, 34, 32)
    assert quotas(7, Split(0, 1, 0)) == (0, 7, 0)
    assert sum(quotas(100, DEFAULT_SPLIT)) == 100
    a, b, c = np.array([1, 2, 3]), np.array([2, 4, 5, 6, 7]), np.array([8, 1, 9])
    labels, counts = merge_shares([(a, 3), (b, 2), (c, 2)], 7)
    assert labels.tolist() == [1, 2, 3, 4, 5, 8, 9] and counts == [3, 2, 2]
    labels, counts = merge_shares([(a[:1], 3), (b, 2), (c, 2)], 7)  # keywords short: the bits fill their room
    assert labels.tolist() == [1, 2, 4, 8, 9, 5, 6] and counts == [1, 4, 2]
    h = HybridRetriever(COARSE, FINE)
    h.add(make_docs(20))
    for bad in ((0, 0, 0), (-1, 1, 0), (1, 2), ("a", 1, 1), (float("nan"), 1, 1)):
        with pytest.raises(InputError, match="split"):
            h.search("apple", split=bad)
    h.close()


def test_a_writer_killed_after_its_fine_rows_leaves_no_bits_for_them(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EDGEEMB_CRASH_AT", None)
    out = subprocess.run([sys.executable, "-c", CRASHER, str(tmp_path / "hy"), str(Path(__file__).parent),
                          "before-commit"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 137, out.stderr
    with HybridRetriever(COARSE, FINE, tmp_path / "hy") as h:
        assert len(h) == 30 and h.fine_rows.rows >= 60  # the lost batch's rows are in the file, not the store
        assert_bits_match_rows(h)
        h.add(["cheese cheese island"], ids=["c0"])  # takes the label whose row the lost batch wrote
        assert_bits_match_rows(h)
        assert h.search("cheese cheese island", k=1, candidates=5, split=(0, 1, 0))[0].id == "c0"
