"""Batch-invariance study (docs/results/invariance.md): alone vs in-batch agreement, speed and load per recipe.

    python -m edgeemb_bench.studies.invariance graphs SRC OUT            # the candidate graphs of a sentence model
    python -m edgeemb_bench.studies.invariance invariance BUNDLE [--graph G.onnx ...] [--sizes ...]
    python -m edgeemb_bench.studies.invariance speed BUNDLE [--graph G.onnx ...] [--rounds 5] [--threads 1 2]
    python -m edgeemb_bench.studies.invariance load BUNDLE [--rounds 5]  # cold start split: imports, hash, session

Run speed under `taskset -c 1` for one pinned core (threads 1). Every figure carries the 1-min load average.
Candidates (`graphs`): fp32, fp16, int8 per tensor (the old recipe), int8 per row (today's), MatMulNBits
weight-only int8 and int4 with accuracy_level 4 (block 32 and 128); each is swapped into BUNDLE's session.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from edgeemb_bench import data, probes
from edgeemb_bench.harness import rotations, spread

import edgeemb
from edgeemb.encode import invariance
from edgeemb.encode.backend import OnnxBackend


def load_with(bundle: str, graph: str | None, threads: int):
    """The bundle's encoder, its session replaced by `graph` when given."""
    enc = edgeemb.load(bundle, threads=threads)
    if graph:
        enc.backend = OnnxBackend(Path(graph), threads, enc.manifest.normalize)
    return enc


def make_graphs(src: Path, out: Path) -> dict[str, Path]:
    """Export the unfused fp32 graph of a sentence-transformers folder and every candidate quantisation of it."""
    import onnx
    from edgeemb_export.common import onnx_tools as ot
    from edgeemb_export.sentence.export import (
        build_graph_module,
        export_onnx,
        load_transformer,
        read_sentence_config,
    )

    out.mkdir(parents=True, exist_ok=True)
    cfg = read_sentence_config(src)
    model = load_transformer(cfg.transformer_dir)
    module, with_types = build_graph_module(model, cfg.pooling, cfg.normalize)
    raw = out / "fp32.onnx"
    export_onnx(module, raw, with_types, model.config.vocab_size)
    graphs = {"fp32": raw}
    ot.quantize(raw, out / "fp16.onnx", "fp16")
    ot.quantize_int8(raw, out / "int8-per-tensor.onnx", per_row=False)
    ot.quantize_int8(raw, out / "int8-per-row.onnx", per_row=True)
    for bits in (8, 4):
        for block in (32, 128):
            dst = out / f"nbits{bits}-acc4-b{block}.onnx"
            ot.quantize_nbits(raw, dst, bits, block, 4, embeddings=bits == 4)
    graphs.update({p.stem: p for p in out.glob("*.onnx")})
    for name, path in sorted(graphs.items()):
        log({"graph": name, "MB": round(path.stat().st_size / 1e6, 1),
             "nodes": len(onnx.load(str(path), load_external_data=False).graph.node)})
    return graphs


def cmd_invariance(args) -> None:
    texts = invariance.sample_texts()
    for graph in args.graph or [None]:
        encoders = {t: load_with(args.bundle, graph, t) for t in args.threads}
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", edgeemb.TruncationWarning)
            result = invariance.measure(encoders, texts, tuple(args.sizes), seed=args.seed, rounds=args.rounds)
        log({"graph": graph or args.bundle, **result.to_dict(), "seconds": round(time.perf_counter() - t0, 1),
             "load": probes.load_average()[0]})


def cmd_speed(args) -> None:
    """Single-query p50 (each text alone) and batch throughput, candidates interleaved round by round."""
    docs = data.sample_sentences(args.docs, seed=1)
    queries = data.held_out_queries(args.queries)
    names = args.graph or [None]
    encs = {(g, t): load_with(args.bundle, g, t) for g in names for t in args.threads}
    for enc in encs.values():
        enc.encode(queries[:8])
    # wall clock, and this process's CPU time: on a loaded machine (other jobs on the core) CPU time per text
    # is the steadier figure for one thread; wall clock is what a user sees
    figures: dict = {k: {"p50_ms": [], "cpu_p50_ms": [], "sentences_per_s": [], "cpu_sentences_per_s": []}
                     for k in encs}
    loads = []
    for order in rotations(list(encs), args.rounds):
        loads.append(probes.load_average()[0])
        for key in order:
            enc, fig = encs[key], figures[key]
            wall, cpu = [], []
            for q in queries:
                t, c = time.perf_counter(), time.process_time()
                enc.encode(q)
                wall.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            fig["p50_ms"].append(float(np.median(wall)) * 1e3)
            fig["cpu_p50_ms"].append(float(np.median(cpu)) * 1e3)
            t, c = time.perf_counter(), time.process_time()
            enc.encode(docs, batch_size=32)
            fig["sentences_per_s"].append(len(docs) / (time.perf_counter() - t))
            fig["cpu_sentences_per_s"].append(len(docs) / max(time.process_time() - c, 1e-9))
    for key, fig in figures.items():
        log({"graph": key[0] or args.bundle, "threads": key[1], **{k: spread(v) for k, v in fig.items()},
             "queries": len(queries), "docs": len(docs), "load": spread(loads)})


LOAD_SNIPPET = """
import time, sys
t0 = time.perf_counter()
import edgeemb
t1 = time.perf_counter()
from edgeemb.bundle import open_bundle
folder, m = open_bundle(sys.argv[1], verify=True)
t2 = time.perf_counter()
enc = edgeemb.load(sys.argv[1], threads=1)
t3 = time.perf_counter()
enc.encode("hello world")
t4 = time.perf_counter()
print(f"{t1 - t0} {t2 - t1} {t3 - t2} {t4 - t3}")
"""


def cmd_load(args) -> None:
    """Process start to first vector (wall), and inside it: import, verify (cached hash), load, first encode;
    with the optimised-graph copy (edgeemb/encode/graphcache.py) and without it, interleaved round by round."""
    import os

    configs = {"graph copy": "1", "no graph copy": "0"}
    rows: dict[str, list] = {k: [] for k in configs}
    loads = []
    subprocess.run([sys.executable, "-c", LOAD_SNIPPET, args.bundle], capture_output=True, check=True)  # warm
    for order in rotations(list(configs), args.rounds):
        loads.append(probes.load_average()[0])
        for name in order:
            env = {**os.environ, "EDGEEMB_GRAPH_CACHE": configs[name]}
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, args.bundle], capture_output=True,
                                 text=True, check=True, env=env)
            wall = time.perf_counter() - t
            rows[name].append([wall, *map(float, out.stdout.split())])
    cols = ("process_to_first_vector_s", "import_s", "open_verify_s", "load_s", "first_encode_s")
    for name, got in rows.items():
        log({"bundle": args.bundle, "config": name, **{c: spread([r[i] for r in got]) for i, c in enumerate(cols)},
             "load": spread(loads)})


def log(row: dict) -> None:
    print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("graphs")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    for name in ("invariance", "speed", "load"):
        p = sub.add_parser(name)
        p.add_argument("bundle")
        p.add_argument("--graph", nargs="+", default=None)
        p.add_argument("--threads", type=int, nargs="+", default=[1, 2] if name == "invariance" else [1])
        p.add_argument("--rounds", type=int, default=1 if name == "invariance" else 5)
        p.add_argument("--sizes", type=int, nargs="+", default=list(invariance.DEFAULT_SIZES))
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--docs", type=int, default=1000)
        p.add_argument("--queries", type=int, default=100)
    args = parser.parse_args(argv)
    if args.cmd == "graphs":
        make_graphs(args.src, args.out)
    else:
        {"invariance": cmd_invariance, "speed": cmd_speed, "load": cmd_load}[args.cmd](args)


if __name__ == "__main__":
    main()
