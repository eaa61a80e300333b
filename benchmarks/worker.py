"""A benchmark worker: reads JSON requests on stdin, answers one JSON line each; run as a script.

It times inside itself (perf_counter around each call) so pipe overhead is not counted; the parent reads its
peak RSS from outside. Library chatter on stdout is redirected to stderr so answers stay parseable.
The engine ops below work in any venv that has numpy (peers run here too); an op named "module:function"
(harness.op_ref) is imported on first use and called as function(state, **args).
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import engines  # beside this script: importable in a peers venv without the package
import numpy as np

STATE: dict = {}


def op_load(state: dict, engine: str, spec: dict) -> dict:
    """Import and load an engine; report seconds."""
    start = time.perf_counter()
    eng = engines.ENGINES[engine]()
    eng.load(spec)
    state["engine"] = eng
    return {"load_s": time.perf_counter() - start}


def op_latency(state: dict, texts: list[str], warmup: int = 0) -> dict:
    """Per-item latency in ms of engine.query, after `warmup` untimed calls on the first items."""
    eng = state["engine"]
    items = eng.prepare(texts)
    for item in items[:warmup]:
        eng.query(item)
    ms = []
    for item in items:
        start = time.perf_counter()
        eng.query(item)
        ms.append((time.perf_counter() - start) * 1e3)
    return {"ms": ms, "skipped": len(texts) - len(items)}


def op_throughput(state: dict, texts: list[str], batch_size: int, mode: str = "call") -> dict:
    """Seconds to embed all texts in one call (mode 'call') or batch by batch in input order ('chunked')."""
    eng = state["engine"]
    start = time.perf_counter()
    vecs = eng.encode_chunked(texts, batch_size) if mode == "chunked" else eng.encode(texts, batch_size)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "n": len(vecs), "dim": int(np.asarray(vecs).shape[-1])}


def op_warm(state: dict, texts: list[str], batch_size: int) -> dict:
    """Encode texts once, untimed by the caller: pages a memory-mapped table in and grows the arenas first."""
    start = time.perf_counter()
    state["engine"].encode(texts, batch_size)
    return {"seconds": time.perf_counter() - start}


def op_hwm(state: dict) -> dict:
    """This process's VmHWM in MB (for progress lines; the parent's reading from outside is the one kept)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return {"mb": int(line.split()[1]) / 1024.0}
    return {"mb": None}


def op_import(state: dict, modules: list[str]) -> dict:
    """Import modules, so the parent can read what they cost before the step it measures."""
    import importlib

    for name in modules:
        importlib.import_module(name)
    return {}


OPS = {"load": op_load, "latency": op_latency, "throughput": op_throughput, "warm": op_warm, "hwm": op_hwm,
       "import": op_import}
_RESOLVED: dict = {}


def dispatch(request: dict) -> dict:
    op = request.pop("op")
    if op in OPS:
        return OPS[op](STATE, **request)
    if ":" not in op:
        raise KeyError(f"unknown op {op!r}")
    if op not in _RESOLVED:
        _RESOLVED[op] = resolve(op)
    return _RESOLVED[op](STATE, **request)


def resolve(ref: str):
    """The function a harness.op_ref names: "package.module:name" or "/path/to/script.py:name"."""
    import importlib
    import importlib.util

    module, _, name = ref.rpartition(":")
    if module.endswith(".py"):
        spec = importlib.util.spec_from_file_location(os.path.basename(module)[:-3], module)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(module)
    return getattr(mod, name)


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
