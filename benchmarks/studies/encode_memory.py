"""Encoding memory study (issue 14, "Memory that is not bounded"): peak RSS of encode() per case, fresh process each.

    .venv/bin/python benchmarks/studies/encode_memory.py run                 # the issue's sizes (slow on 2 cores)
    .venv/bin/python benchmarks/studies/encode_memory.py run --quick         # fewer texts, same shapes
    .venv/bin/python benchmarks/studies/encode_memory.py run --cases 16k --mem-pattern 1 0 --json out.json
    taskset -c 1 .venv/bin/python benchmarks/studies/encode_memory.py speed --mem-pattern 1 0 --rounds 3

Cases (texts built from en_corpus sentences, concatenated and cut to size; never synthetic): `short` (200k
sentences, cycled), `2k` (5k texts of 2 KB), `16k` (2k texts of 16 KB), `10mb` (one text of 10 MB), and
`index-static` (Index.add of 200k sentences with the default-static bundle, the default float32 storage).
Each case runs in its own child process, which reports RSS after imports, after building its texts and after
loading the bundle (the baseline), VmHWM (the peak, read by edgeemb_bench.probes), the output's size, and
peak - output; the 1-minute load average is printed beside every figure. `speed` times encode() of 3,000
sentences per setting, the settings interleaved round by round (pin it to one core with taskset).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL = {"short": 200_000, "2k": 5_000, "16k": 2_000, "10mb": 1, "index-static": 200_000}
QUICK = {"short": 10_000, "2k": 600, "16k": 300, "10mb": 1, "index-static": 20_000}
SIZE = {"short": None, "2k": 2_048, "16k": 16_384, "10mb": 10 << 20, "index-static": None}


def texts_for(case: str, n: int) -> list[str]:
    """The case's texts: corpus sentences (cycled past the corpus' end), or consecutive sentences joined and cut."""
    from edgeemb_bench import data

    size = SIZE[case]
    if size is None:
        rows = data.sentences("en_corpus")
        return [rows[i % len(rows)] for i in range(n)]
    out: list[str] = []
    parts: list[str] = []
    length = 0
    while len(out) < n:
        for sentence in data.iter_sentences("en_corpus"):
            parts.append(sentence)
            length += len(sentence) + 1
            if length >= size:
                out.append(" ".join(parts)[:size])
                parts, length = [], 0
                if len(out) == n:
                    break
    return out


def child(case: str, n: int, mem_pattern: bool, max_tokens: int | None) -> dict:
    """One measurement in this (fresh) process: RSS at each stage, the peak, the output."""
    from edgeemb_bench import probes

    import numpy as np  # noqa: F401 - counted in the imports' RSS, as onnxruntime and tokenizers
    import onnxruntime  # noqa: F401
    import tokenizers  # noqa: F401

    def rss() -> float:
        return probes.resident_kb().get("VmRSS", 0) / 1024

    stages = {"imports": rss()}
    texts = texts_for(case, n)
    stages["texts"] = rss()
    import edgeemb

    start = time.perf_counter()
    if case == "index-static":
        enc = edgeemb.load("default-static", threads=1)
        stages["load"] = rss()
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
            index = edgeemb.Index.create(Path(tmp) / "idx", enc)
            index.add(texts)
            out_mb = 0.0
            index.close()
    else:
        enc = edgeemb.load(threads=1, mem_pattern=mem_pattern)
        if max_tokens:
            enc.max_tokens = max_tokens
        stages["load"] = rss()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = enc.encode(texts)
        out_mb = out.nbytes / 2**20
    seconds = time.perf_counter() - start
    peak = probes.peak_rss_mb() or 0.0
    return {"case": case, "texts": n, "chars": sum(map(len, texts)), "mem_pattern": mem_pattern,
            "max_tokens": max_tokens or enc.max_tokens, "rss_mb": {k: round(v, 1) for k, v in stages.items()},
            "peak_mb": round(peak, 1), "output_mb": round(out_mb, 1), "peak_minus_output_mb": round(peak - out_mb, 1),
            "seconds": round(seconds, 1), "load_average": probes.load_average()}


def spawn(*args: str) -> dict:
    """Run this file's `child` in a fresh interpreter and return its JSON line."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed(n: int, settings: list[int], rounds: int) -> list[dict]:
    """encode() of n sentences per mem_pattern setting, interleaved over rounds, in one process (sessions warm)."""
    from edgeemb_bench import data, probes

    import edgeemb

    texts = data.sentences("en_corpus", 0, n)
    encs = {s: edgeemb.load(threads=1, mem_pattern=bool(s)) for s in settings}
    outs = {s: encs[s].encode(texts[:64]) for s in settings}  # warm-up
    times: dict[int, list[float]] = {s: [] for s in settings}
    for r in range(rounds):
        for s in settings if r % 2 == 0 else settings[::-1]:
            t = time.process_time()
            outs[s] = encs[s].encode(texts)
            times[s].append(time.process_time() - t)
    ref = outs[settings[0]]
    return [{"mem_pattern": bool(s), "texts_per_cpu_s": [round(n / t) for t in times[s]],
             "identical_to_first": bool((outs[s] == ref).all()), "load_average": probes.load_average()}
            for s in settings]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="every case in a fresh process")
    run.add_argument("--cases", nargs="*", default=list(FULL), choices=list(FULL))
    run.add_argument("--quick", action="store_true", help="fewer texts per case (the peak minus output holds)")
    run.add_argument("--mem-pattern", nargs="*", type=int, default=[0], help="onnxruntime memory patterns: 1, 0")
    run.add_argument("--max-tokens", type=int, default=None)
    run.add_argument("--json", type=Path, default=None, help="write the rows here too")
    sp = sub.add_parser("speed", help="throughput per mem_pattern setting, interleaved")
    sp.add_argument("--mem-pattern", nargs="*", type=int, default=[1, 0])
    sp.add_argument("--texts", type=int, default=3000)
    sp.add_argument("--rounds", type=int, default=3)
    ch = sub.add_parser("child")
    ch.add_argument("case")
    ch.add_argument("n", type=int)
    ch.add_argument("mem_pattern", type=int)
    ch.add_argument("max_tokens", type=int)
    args = ap.parse_args(argv)
    if args.cmd == "child":
        print(json.dumps(child(args.case, args.n, bool(args.mem_pattern), args.max_tokens or None)))
        return
    if args.cmd == "speed":
        for row in speed(args.texts, args.mem_pattern, args.rounds):
            print(json.dumps(row))
        return
    rows = []
    sizes = QUICK if args.quick else FULL
    for case in args.cases:
        for mp in ([1] if case == "index-static" else args.mem_pattern):
            row = spawn("child", case, str(sizes[case]), str(mp), str(args.max_tokens or 0))
            rows.append(row)
            print(f"{case:12s} n={row['texts']:<7d} mem_pattern={int(mp)} load {row['rss_mb']['load']:6.1f} MB  "
                  f"peak {row['peak_mb']:6.1f}  output {row['output_mb']:6.1f}  peak-output "
                  f"{row['peak_minus_output_mb']:6.1f}  {row['seconds']:7.1f} s  load avg {row['load_average'][0]}",
                  flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
