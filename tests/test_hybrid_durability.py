"""Durability of the hybrid index: kill a HybridRetriever writer at random moments, reopen, and check that the
store, the fine rows and the keyword index all hold exactly the acknowledged documents (± the operation in
flight). Every document's text carries a word of its own, so the keyword index can be asked for each one."""
from __future__ import annotations

import sys
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_index_durability as durability
from stub_encoders import StubEncoder
from test_index_durability import apply, stored_state

from edgeemb.search.hybrid import HybridRetriever

ROOT = Path(__file__).resolve().parent.parent
COARSE, FINE = StubEncoder(dim=16, salt=1, name="coarse"), StubEncoder(dim=48, salt=2, name="fine")


def text(doc_id: str, version: int) -> str:
    """A document's text at a version, with one word no other document (or version) has."""
    return f"apple river k{zlib.crc32(f'{doc_id}:{version}'.encode())} v{version}"


WRITER = """
import json, random, sys, zlib
sys.path.insert(0, sys.argv[3])
from stub_encoders import StubEncoder
from edgeemb.search.hybrid import HybridRetriever
def text(doc_id, version):
    return f"apple river k{zlib.crc32(f'{doc_id}:{version}'.encode())} v{version}"
path, seed = sys.argv[1], int(sys.argv[2])
h = HybridRetriever(StubEncoder(dim=16, salt=1, name="coarse"), StubEncoder(dim=48, salt=2, name="fine"), path)
live = h.index.ids()
rng = random.Random(seed)
say = lambda obj: print(json.dumps(obj), flush=True)
say({"ready": True})
for step in range(1, 10**6):
    r = rng.random()
    if r < 0.45 or len(live) < 5:
        ids = [f"s{seed}-{step}-{j}" for j in range(rng.randint(1, 30))]
        say({"op": "add", "ids": ids, "v": 0})
        h.add([text(i, 0) for i in ids], ids=ids, metadata=[{"v": 0}] * len(ids))  # one transaction (<= 30)
        live += ids
    elif r < 0.65:
        ids = rng.sample(live, min(len(live), rng.randint(1, 6)))
        say({"op": "upsert", "ids": ids, "v": step})
        h.upsert([text(i, step) for i in ids], ids=ids, metadata=[{"v": step}] * len(ids))
    elif r < 0.85:
        ids = rng.sample(live, min(len(live), rng.randint(1, 8)))
        say({"op": "delete", "ids": ids})
        h.delete(ids)
        live = [i for i in live if i not in set(ids)]
    else:
        say({"op": "save"})
        h.save()
    say({"ack": step})
"""


def check_hybrid(path: Path, acked: dict[str, int], pending: dict | None) -> dict[str, int]:
    """Reopen; the store must hold the acknowledged state (± the in-flight op) and so must the keyword index and
    the fine bits."""
    with HybridRetriever(COARSE, FINE, path) as h:
        stored = stored_state(path)
        state = {i: v for i, (v, _, _) in stored.items()}
        allowed = [acked] + ([apply(acked, pending)] if pending else [])
        assert state in allowed, f"store differs from the acknowledged state (pending {pending and pending['op']})"
        assert len(h) == len(h.lexical) == len(h.bits) == len(state)
        labels = h.index.store.labels_of(list(stored))
        assert sorted(h.bits.labels().tolist()) == sorted(labels.values())  # the fine bits: the store's labels
        for doc_id, (v, got, _) in stored.items():
            assert got == text(doc_id, v)
            found, _ = h.lexical.search(text(doc_id, v).split()[2], 3)
            assert found.tolist() == [labels[doc_id]], (doc_id, found)  # its own word finds it, and only it
            if v:  # an upserted document's earlier text is gone from the keyword index
                assert h.lexical.search(text(doc_id, 0).split()[2], 3)[0].size == 0
            hit = h.search(text(doc_id, v), k=1, candidates=4)[0]
            assert hit.id == doc_id and hit.score > 0.99
            assert h.search(text(doc_id, v), k=1, candidates=4, split=(0, 1, 0))[0].id == doc_id  # bits alone
    return state


def kill_rounds(path: Path, rounds: int, seed: int) -> None:
    durability.kill_rounds(path, rounds, seed, writer=WRITER, check=check_hybrid,
                           extra_args=(str(Path(__file__).parent),))


def test_killed_hybrid_writer_loses_nothing_acknowledged(tmp_path):
    kill_rounds(tmp_path / "hy", rounds=5, seed=11)


@pytest.mark.slow
def test_killed_hybrid_writer_loses_nothing_acknowledged_many_times(tmp_path):
    kill_rounds(tmp_path / "hy", rounds=50, seed=12)

