"""A benchmark worker: reads JSON requests on stdin, answers one JSON line each; run as a script.

It times inside itself (perf_counter around each call) so pipe overhead is not counted; the parent reads its
peak RSS from outside. Library chatter on stdout is redirected to stderr so answers stay parseable.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import engines
import numpy as np

STATE: dict = {}


def op_load(engine: str, spec: dict) -> dict:
    """Import and load an engine; report seconds."""
    start = time.perf_counter()
    eng = engines.ENGINES[engine]()
    eng.load(spec)
    STATE["engine"] = eng
    return {"load_s": time.perf_counter() - start}


def op_latency(texts: list[str], warmup: int = 0) -> dict:
    """Per-item latency in ms of engine.query, after `warmup` untimed calls on the first items."""
    eng = STATE["engine"]
    items = eng.prepare(texts)
    for item in items[:warmup]:
        eng.query(item)
    ms = []
    for item in items:
        start = time.perf_counter()
        eng.query(item)
        ms.append((time.perf_counter() - start) * 1e3)
    return {"ms": ms, "skipped": len(texts) - len(items)}


def op_throughput(texts: list[str], batch_size: int, mode: str = "call") -> dict:
    """Seconds to embed all texts in one call (mode 'call') or batch by batch in input order ('chunked')."""
    eng = STATE["engine"]
    start = time.perf_counter()
    if mode == "chunked":
        vecs = eng.encode_chunked(texts, batch_size)
    else:
        vecs = eng.encode(texts, batch_size)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "n": len(vecs), "dim": int(np.asarray(vecs).shape[-1])}


def op_encode_to_npy(corpus: str, n: int, out: str, chunk: int = 2048, batch_size: int = 32) -> dict:
    """Stream the first n sentences of a corpus TSV into a float32 .npy, chunk by chunk (bounded memory)."""
    eng = STATE["engine"]
    tmp = f"{out}.tmp-{os.getpid()}"
    done, dim, start = 0, None, time.perf_counter()
    with open(corpus, encoding="utf-8") as src, open(tmp, "wb") as dst:
        next(src, None)
        buf: list[str] = []
        rows = (line.rstrip("\n").partition("\t")[2] for line in src)
        for text in rows:
            if done + len(buf) >= n:
                break
            buf.append(text)
            if len(buf) == chunk:
                dim = _write_chunk(eng, buf, dst, dim, n, batch_size)
                done += len(buf)
                buf = []
        if buf:
            dim = _write_chunk(eng, buf, dst, dim, n, batch_size)
            done += len(buf)
        dst.flush()
        os.fsync(dst.fileno())
    if done != n:
        os.unlink(tmp)
        raise ValueError(f"{corpus} has only {done} sentences, {n} asked")
    os.replace(tmp, out)
    return {"seconds": time.perf_counter() - start, "n": done, "dim": dim}


def _write_chunk(eng, texts: list[str], dst, dim: int | None, n: int, batch_size: int) -> int:
    vecs = np.ascontiguousarray(eng.encode(texts, batch_size), dtype="<f4")
    if dim is None:
        dim = int(vecs.shape[1])
        np.lib.format.write_array_header_1_0(dst, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
    dst.write(vecs.tobytes())
    return dim


def op_hwm() -> dict:
    """This process's VmHWM in MB (for progress lines; the parent's reading from outside is the one kept)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return {"mb": int(line.split()[1]) / 1024.0}
    return {"mb": None}


def dispatch(request: dict) -> dict:
    op = request.pop("op")
    local = globals().get(f"op_{op}")
    if local is not None:
        return local(**request)
    from edgeemb_bench import indexbench  # index and end-to-end ops need edgeemb (main venv)

    return getattr(indexbench, f"op_{op}")(STATE, **request)


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # anything a library prints goes to stderr
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        try:
            answer = {"ok": True, **dispatch(request)}
        except Exception as exc:  # noqa: BLE001 (every failure, MemoryError under a cap included, goes to the parent)
            traceback.print_exc(file=sys.stderr)
            first = (str(exc).splitlines() or [""])[0][:300]
            answer = {"ok": False, "error": f"{type(exc).__name__}: {first}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
