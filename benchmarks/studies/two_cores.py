"""Two-cores study (issue #15, "Speed: use both cores, beat the floor"): edgeemb's batch throughput vs the floor.

    taskset -c 0,1 .venv/bin/python benchmarks/studies/two_cores.py run              # 5 rounds, 3,000 sentences
    taskset -c 0,1 .venv/bin/python benchmarks/studies/two_cores.py run --rounds 7 --chunk-texts 1024
    taskset -c 0,1 .venv/bin/python benchmarks/studies/two_cores.py gil              # do the workers drop the GIL?

`run`, one process, the configurations interleaved round by round (each round starts one later):
  floor        a 2-thread session's bare run() over pre-tokenised feeds: the same length-sorted batches edgeemb
               makes (same spans), made once before timing
  floor 2x1    two 1-thread sessions over the same feeds, batches dealt to both (the data-parallel ceiling)
  serial       edgeemb threads=2, overlap off (today's loop)
  overlap      edgeemb threads=2, the next span tokenised in a background thread (a call of one span, such as
               3,000 sentences under CHUNK_TEXTS 4096, takes the serial path: pass --chunk-texts to see it)
  sessions 2   edgeemb threads=2 sessions=2 (two 1-thread sessions) with overlap
  threads 1    edgeemb threads=1, for reference
Per configuration: min/median/max sentences/s over rounds and the ratio to the same round's floor; the 1-min
load average per round; vectors: overlap vs serial bit-identical, sessions 2 vs serial worst cosine and max abs
difference. Rows go to stdout and to .cache/two_cores/results.json. Estimated 2-3 minutes at load 1 (it took
17 minutes at load 5-9).
`gil`: while tokenizers' encode_batch, a 1-thread session.run or (control) sum(range(n)) runs in a thread, the
main thread reads the clock in a loop; a call that keeps the GIL leaves a gap as long as itself (keeps_gil).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(".cache/two_cores/results.json")


def feeds_of(enc: Any, texts: list[str], batch_size: int) -> list[dict[str, np.ndarray]]:
    """The graph inputs of every batch edgeemb would run for `texts` (same spans, same length-sorted batches)."""
    from edgeemb.encode import encoder as encoder_module
    from edgeemb.encode.batching import CHARS_PER_TOKEN_CAP

    feeds = []
    cap = enc.tokenizer.max_length * CHARS_PER_TOKEN_CAP
    for start, end in encoder_module.tokenize_chunks(texts, cap):
        tok = enc.tokenizer.tokenize(texts[start:end])
        for batch in enc.tokenizer.batches(tok, batch_size, enc.max_tokens):
            f = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                 "token_type_ids": batch.token_type_ids}
            if "position_ids" in enc.manifest.inputs:
                f["position_ids"] = np.clip(np.cumsum(batch.attention_mask, axis=1) - 1, 0, None)
            feeds.append({k: f[k] for k in enc.manifest.inputs})
    return feeds


def floor(session: Any, feeds: list[dict[str, np.ndarray]]) -> None:
    """Bare session.run over pre-made feeds."""
    for f in feeds:
        session.run(["sentence_embedding"], f)


def floor_pool(sessions: list[Any], feeds: list[dict[str, np.ndarray]]) -> None:
    """The same feeds dealt to several sessions, one thread each (edgeemb's SessionPool)."""
    from edgeemb.encode.parallel import SessionPool

    with SessionPool(sessions) as pool:
        for f in feeds:
            pool.submit(lambda s, f=f: s.run(["sentence_embedding"], f))


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of a with the same row of b."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return np.asarray((a * b).sum(axis=1) / np.maximum(na * nb, 1e-30))


def cmd_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from edgeemb_bench import data, probes
    from edgeemb_bench.harness import rotations, spread

    import edgeemb
    from edgeemb.encode import encoder as encoder_module

    if args.chunk_texts:
        encoder_module.CHUNK_TEXTS = args.chunk_texts
    texts = data.sample_sentences(args.texts, seed=1)
    bundle = args.bundle
    enc2, enc22, enc1 = (edgeemb.load(bundle, threads=2), edgeemb.load(bundle, threads=2, sessions=2),
                         edgeemb.load(bundle, threads=1))
    feeds = feeds_of(enc2, texts, args.batch_size)
    pair = [b.session for b in enc22._backends()]
    outs: dict[str, np.ndarray] = {}

    def edgeemb_run(enc: Any, overlap: bool, name: str) -> Callable[[], None]:
        def go() -> None:
            enc.overlap = overlap
            outs[name] = enc.encode(texts, batch_size=args.batch_size)
        return go

    runs: dict[str, Callable[[], None]] = {
        "floor": lambda: floor(enc2.backend.session, feeds),
        "floor 2x1": lambda: floor_pool(pair, feeds),
        "serial": edgeemb_run(enc2, False, "serial"),
        "overlap": edgeemb_run(enc2, True, "overlap"),
        "sessions 2": edgeemb_run(enc22, True, "sessions 2"),
        "threads 1": edgeemb_run(enc1, True, "threads 1"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for go in runs.values():  # warm-up: arenas sized, graph copies paged in
            go()
        rates: dict[str, list[float]] = {k: [] for k in runs}
        loads: list[float] = []
        for r, order in enumerate(rotations(list(runs), args.rounds)):
            loads.append(probes.load_average()[0])
            for name in order:
                t = time.perf_counter()
                runs[name]()
                rates[name].append(len(texts) / (time.perf_counter() - t))
            print(json.dumps({"round": r, "load_1min": loads[-1],
                              "sentences_per_s": {k: round(v[-1]) for k, v in rates.items()}}), flush=True)
    serial = outs["serial"]
    cos = row_cosines(outs["sessions 2"], serial)
    common = {"texts": len(texts), "batch_size": args.batch_size, "batches": len(feeds),
              "chunk_texts": encoder_module.CHUNK_TEXTS, "rounds": args.rounds, "bundle": str(enc2.path),
              "affinity": sorted(os.sched_getaffinity(0)), "load_1min": spread(loads)}
    rows: list[dict[str, Any]] = [{"setup": True, **common}]
    for name, got in rates.items():
        ratios = [g / f for g, f in zip(got, rates["floor"])]
        rows.append({"config": name, "sentences_per_s": spread(got), "ratio_to_floor": spread(ratios),
                     "per_round": [round(g) for g in got], "ratio_per_round": [round(x, 3) for x in ratios]})
    rows.append({"vectors": True, "overlap_bit_identical_to_serial": bool(np.array_equal(outs["overlap"], serial)),
                 "sessions2_worst_cosine_vs_serial": float(cos.min()),
                 "sessions2_max_abs_diff_vs_serial": float(np.abs(outs["sessions 2"] - serial).max()),
                 "threads1_max_abs_diff_vs_serial": float(np.abs(outs["threads 1"] - serial).max())})
    return rows


def gaps_beside(calls: list[Callable[[], object]]) -> tuple[float, list[float]]:
    """Run `calls` one after another in a thread while this thread loops reading the clock: the longest gap
    between two readings (how long this thread could not run Python) and each call's seconds."""
    done = threading.Event()
    took: list[float] = []

    def go() -> None:
        for call in calls:
            t = time.perf_counter()
            call()
            took.append(time.perf_counter() - t)
        done.set()

    th = threading.Thread(target=go)
    prev = time.perf_counter()
    th.start()
    gap = 0.0
    while not done.is_set():
        now = time.perf_counter()
        gap, prev = max(gap, now - prev), now
    th.join()
    return gap, took


def cmd_gil(args: argparse.Namespace) -> list[dict[str, Any]]:
    """A call that keeps the GIL stops this thread for its whole length (longest gap >= the call); one that
    releases it leaves gaps of the switch interval (5 ms) and of the OS scheduler (more under load)."""
    from edgeemb_bench import data, probes

    import edgeemb

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one tokenizer thread: the question is the GIL, not rayon
    texts = data.sample_sentences(args.texts, seed=1)
    enc = edgeemb.load(args.bundle, threads=1)
    feeds = feeds_of(enc, texts, 32)[:20]
    tok = enc.tokenizer.tokenizer
    session = enc.backend.session
    n = 10**6
    while _seconds(lambda n=n: sum(range(n))) < 0.2:  # a C loop that never drops the GIL, ~0.2 s a call
        n *= 2
    works: dict[str, list[Callable[[], object]]] = {
        "tokenizers encode_batch": [lambda: tok.encode_batch(texts)],
        "session.run, 1 thread": [lambda f=f: session.run(["sentence_embedding"], f) for f in feeds],
        "sum(range(n)) (control: keeps the GIL)": [lambda: sum(range(n))] * 3}
    rows = []
    for name, calls in works.items():
        calls[0]()
        for _ in range(args.rounds):
            gap, took = gaps_beside(calls)
            rows.append({"work": name, "calls": len(took), "shortest_call_s": round(min(took), 4),
                         "longest_gap_s": round(gap, 4), "keeps_gil": gap >= 0.5 * min(took),
                         "texts": len(texts), "affinity": sorted(os.sched_getaffinity(0)),
                         "load_1min": probes.load_average()[0]})
    return rows


def _seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="throughput per configuration, interleaved rounds")
    run.add_argument("--bundle", default=None, help="bundle (default: the embedded default)")
    run.add_argument("--texts", type=int, default=3000)
    run.add_argument("--rounds", type=int, default=5)
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--chunk-texts", type=int, default=None, help="texts per tokenised span (edgeemb: 4096)")
    run.add_argument("--out", type=Path, default=OUT)
    gil = sub.add_parser("gil", help="does each worker release the GIL (timed)")
    gil.add_argument("--bundle", default=None)
    gil.add_argument("--texts", type=int, default=3000)
    gil.add_argument("--rounds", type=int, default=3)
    gil.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = cmd_run(args) if args.cmd == "run" else cmd_gil(args)
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
