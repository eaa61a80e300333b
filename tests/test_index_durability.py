"""Durability: kill a writer process (at named points and at random moments) and check what reopens.

Every acknowledged add/upsert/delete must be visible afterwards, with the right vector and text; the operation
in flight at the kill must be all there or not there at all; every stored document must be found by the graph.
"""
from __future__ import annotations

import inspect
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgeemb.search.index import STORE, Index

DIM = 8
ROOT = Path(__file__).resolve().parent.parent



def vec(doc_id: str, version: int) -> np.ndarray:
    """The vector a document has at a version: the same in the writer process and here."""
    return np.random.default_rng(zlib.crc32(f"{doc_id}:{version}".encode())).normal(size=DIM).astype(np.float32)


VEC = f"\nimport zlib\nimport numpy as np\nDIM = {DIM}\n" + inspect.getsource(vec)

WRITER = """
import json, os, random, sys, zlib
import numpy as np
from edgeemb.search.index import Index, STORE
""" + VEC + """
path, seed = sys.argv[1], int(sys.argv[2])
ix = Index.open(path) if os.path.exists(os.path.join(path, STORE)) else Index.create(path, dim=DIM, capacity=32)
live = ix.ids()
rng = random.Random(seed)
say = lambda obj: print(json.dumps(obj), flush=True)
say({"ready": True})
for step in range(1, 10**6):
    r = rng.random()
    if r < 0.45 or len(live) < 5:
        ids = [f"s{seed}-{step}-{j}" for j in range(rng.randint(1, 40))]
        say({"op": "add", "ids": ids, "v": 0})
        ix.add_vectors(np.stack([vec(i, 0) for i in ids]), [f"text {i} v0" for i in ids], ids, [{"v": 0}] * len(ids))
        live += ids
    elif r < 0.65:
        ids = rng.sample(live, min(len(live), rng.randint(1, 6)))
        say({"op": "upsert", "ids": ids, "v": step})
        ix.upsert_vectors(np.stack([vec(i, step) for i in ids]), [f"text {i} v{step}" for i in ids], ids,
                          [{"v": step}] * len(ids))
    elif r < 0.85:
        ids = rng.sample(live, min(len(live), rng.randint(1, 8)))
        say({"op": "delete", "ids": ids})
        ix.delete(ids)
        live = [i for i in live if i not in set(ids)]
    else:
        say({"op": "save"})
        ix.save()
    say({"ack": step})
"""

def apply(state: dict[str, int], op: dict) -> dict[str, int]:
    """The document state after an operation: id -> version."""
    state = dict(state)
    if op["op"] in ("add", "upsert"):
        state.update({i: op["v"] for i in op["ids"]})
    elif op["op"] == "delete":
        for i in op["ids"]:
            state.pop(i, None)
    return state


def replay(lines: list[str], state: dict[str, int]) -> tuple[dict[str, int], dict | None]:
    """Acknowledged state after the child's log, and the operation in flight when it died (if any)."""
    pending = None
    for line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:  # the last line may be cut by the kill
            continue
        if "op" in obj:
            pending = obj
        elif "ack" in obj:
            state, pending = apply(state, pending), None
    return state, pending


def stored_state(path: Path) -> dict[str, tuple[int, str, np.ndarray]]:
    db = sqlite3.connect(path / STORE)
    rows = db.execute("SELECT id, metadata, text, vector FROM docs").fetchall()
    db.close()
    return {i: (json.loads(m)["v"], t, np.frombuffer(v, np.float32)) for i, m, t, v in rows}


def check_index(path: Path, acked: dict[str, int], pending: dict | None) -> dict[str, int]:
    """Reopen, check it holds exactly the acknowledged state (± the whole in-flight op); return the new state."""
    with Index.open(path) as ix:
        stored = stored_state(path)
        state = {i: v for i, (v, _, _) in stored.items()}
        allowed = [acked] + ([apply(acked, pending)] if pending else [])
        assert state in allowed, (f"store differs from the acknowledged state (pending {pending and pending['op']}): "
                                  f"missing {sorted(set(acked) - set(state))[:5]}, "
                                  f"extra {sorted(set(state) - set(acked))[:5]}")
        assert len(ix) == len(state)
        for doc_id, (v, text, vector) in stored.items():
            assert text == f"text {doc_id} v{v}" and np.array_equal(vector, vec(doc_id, v)), doc_id
            hit = ix.search(vec(doc_id, v), k=1, ef=200)[0]
            assert hit.id == doc_id and hit.score > 0.999, (doc_id, hit)
        assert not list(path.glob(".graph.*.tmp"))
    return state


def kill_rounds(path: Path, rounds: int, seed: int, writer: str = WRITER, check=None,
                extra_args: tuple[str, ...] = ()) -> None:
    """Start `writer` (argv: path, seed, *extra_args), SIGKILL it at a random moment, check what reopens."""
    check = check or check_index
    rng = random.Random(seed)
    acked: dict[str, int] = {}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EDGEEMB_CRASH_AT", None)
    for r in range(rounds):
        child = subprocess.Popen([sys.executable, "-c", writer, str(path), str(seed * 1000 + r), *extra_args],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = child.stdout.readline()
        assert "ready" in first, child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.5))
        child.send_signal(signal.SIGKILL)
        out, err = child.stdout.read(), child.stderr.read()  # not communicate(): readline() buffered some output
        child.wait(timeout=60)
        assert child.returncode == -signal.SIGKILL, err
        acked, pending = replay(out.splitlines(), acked)
        acked = check(path, acked, pending)


def test_killed_writer_loses_nothing_acknowledged(tmp_path):
    kill_rounds(tmp_path / "ix", rounds=5, seed=1)


@pytest.mark.slow
def test_killed_writer_loses_nothing_acknowledged_many_times(tmp_path):
    kill_rounds(tmp_path / "ix", rounds=60, seed=2)


SAVER = """
import os, sys, numpy as np
from edgeemb.search.index import Index
""" + VEC + """
ix = Index.create(sys.argv[1], dim=DIM)
ids = [f"a{i}" for i in range(50)]
ix.add_vectors(np.stack([vec(i, 0) for i in ids]), [f"text {i} v0" for i in ids], ids, [{"v": 0}] * 50)
ix.save()
if sys.argv[2] == "store-committed":  # die inside the next add, after its commit, before its graph update
    os.environ["EDGEEMB_CRASH_AT"] = sys.argv[2]
more = [f"b{i}" for i in range(30)]
ix.add_vectors(np.stack([vec(i, 0) for i in more]), [f"text {i} v0" for i in more], more, [{"v": 0}] * 30)
ix.delete(["a1", "a2"])
print("acked", flush=True)
os.environ["EDGEEMB_CRASH_AT"] = sys.argv[2]
ix.save()
print("saved", flush=True)
"""


@pytest.mark.parametrize("point", ["graph-written", "graph-renamed", "generation-committed", "store-committed"])
def test_process_killed_during_save_reopens_to_last_good_state(tmp_path, point):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EDGEEMB_CRASH_AT", None)
    out = subprocess.run([sys.executable, "-c", SAVER, str(tmp_path / "ix"), point], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 137, out.stderr
    first = {f"a{i}": 0 for i in range(50)}
    pending = None
    if point == "store-committed":  # killed inside an unacknowledged add: all of it or none of it
        assert out.stdout == ""
        pending = {"op": "add", "ids": [f"b{i}" for i in range(30)], "v": 0}
        expected = first
    else:  # killed inside save: everything acknowledged before it is there
        assert out.stdout.split() == ["acked"]
        expected = {i: 0 for i in first if i not in ("a1", "a2")} | {f"b{i}": 0 for i in range(30)}
    state = check_index(tmp_path / "ix", expected, pending)
    with Index.open(tmp_path / "ix") as again:  # and the repaired state itself saves and reopens cleanly
        assert again.repaired == 0 and len(again) == len(state)
