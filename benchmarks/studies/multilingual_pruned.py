"""Full vs pruned-vocabulary multilingual-e5-small int4 bundles (docs/results/multilingual-pruned.md): sizes, memory,
token sequences and vector agreement; quality goes through `studies.multilingual quality` with both bundles.

    python -m edgeemb_bench.studies.multilingual_pruned tokens --full FULL --pruned PRUNED [--out J]
    taskset -c 1 python -m edgeemb_bench.studies.multilingual_pruned rss --bundle FULL --bundle PRUNED [--n 20000]

tokens: pieces, tokenizer.json / model.onnx sizes; on the multilingual parity texts (shipped samples, and the
mixed set drawn from the shared data) and the STS-B en / zh test texts: the share of texts whose pieces equal the
full tokenizer's, and cosine pruned vs full (documents, one thread), over all texts and over those that differ.
rss: per bundle a fresh process on the caller's cores, one thread: RSS after imports, after load, and VmHWM after
encoding --n en_corpus sentences (a fixed sample, seed 3) in chunks of 1,000, batch 32 (--low-memory: the
load(low_memory=True) preset, 512 padded tokens a batch); load average beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _status_mb() -> dict[str, float]:
    with open("/proc/self/status", encoding="ascii") as f:
        rows = [line.split() for line in f if line.startswith(("VmRSS", "VmHWM"))]
    return {r[0].rstrip(":"): round(int(r[1]) / 1024, 1) for r in rows}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def text_sets() -> dict[str, list[str]]:
    """The parity texts (shipped, and mixed from the shared data) and the STS-B en / zh test texts."""
    from edgeemb_export.sentence.multilingual_texts import builtin_texts, mixed_texts

    from edgeemb.eval.data import data_root, load_sts

    sets = {"parity, shipped samples": builtin_texts(), "parity, mixed (shared data)": mixed_texts(data_root())}
    for lang in ("en", "zh"):
        sets[f"STS-B {lang} test"] = sorted({t for p in load_sts(lang, "test") for t in p[:2]})
    return sets


def cmd_tokens(args) -> None:
    """Sizes, identical-segmentation shares and cosines, pruned vs full."""
    from tokenizers import Tokenizer

    import edgeemb

    out: dict = {"bundles": {}, "sets": {}, "load_before": _load()}
    toks, encs = {}, {}
    for side, path in (("full", Path(args.full)), ("pruned", Path(args.pruned))):
        toks[side] = Tokenizer.from_file(str(path / "tokenizer.json"))
        encs[side] = edgeemb.load(path, threads=args.threads)
        out["bundles"][side] = {"pieces": toks[side].get_vocab_size(),
                                "tokenizer_json_mb": round((path / "tokenizer.json").stat().st_size / 1e6, 1),
                                "model_onnx_mb": round((path / "model.onnx").stat().st_size / 1e6, 1)}
    for name, texts in text_sets().items():
        same = np.array([a.tokens == b.tokens for a, b in zip(toks["full"].encode_batch(texts),
                                                               toks["pruned"].encode_batch(texts))])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, b = (encs[s].encode_documents(texts, batch_size=32) for s in ("full", "pruned"))
        cos = (a * b).sum(1)
        diff = cos[~same]
        out["sets"][name] = {"n": len(texts), "identical_pieces": round(float(same.mean()), 4),
                             "cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5),
                             "differing_cosine_mean": round(float(diff.mean()), 5) if len(diff) else None,
                             "differing_cosine_min": round(float(diff.min()), 5) if len(diff) else None}
        print(name, json.dumps(out["sets"][name]), file=sys.stderr, flush=True)
    out["load_after"] = _load()
    _emit(args.out, out)


def cmd_rss_one(args) -> None:
    """(In a fresh process.) RSS after imports, after loading the bundle, VmHWM after encoding the texts."""
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401
    import tokenizers  # noqa: F401

    imports = _status_mb()
    import edgeemb

    texts = Path(args.texts).read_text(encoding="utf-8").splitlines()
    start = time.perf_counter()
    enc = edgeemb.load(args.bundle, threads=1, low_memory=args.low_memory)
    loaded = _status_mb()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vecs = np.empty((len(texts), enc.dim), np.float32)  # every vector kept, written chunk by chunk
        for s in range(0, len(texts), 1000):
            vecs[s:s + 1000] = enc.encode_documents(texts[s:s + 1000], batch_size=32)
    print(json.dumps({"bundle": enc.name, "n": len(vecs), "imports_mb": imports["VmRSS"],
                      "after_load_mb": loaded["VmRSS"], "load_s": round(t0 - start, 2),
                      "peak_mb": _status_mb()["VmHWM"], "encode_s": round(time.perf_counter() - t0, 1)}))


def cmd_rss(args) -> None:
    """One fresh process per bundle (same cores as this one), in turn."""
    from edgeemb_bench import data

    texts = data.sample_sentences(args.n, seed=3)
    out = {"n": len(texts), "affinity": sorted(os.sched_getaffinity(0)), "bundles": []}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        f.write("\n".join(t.replace("\n", " ") for t in texts) + "\n")
    try:
        for bundle in args.bundle:
            before = _load()
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            cmd = [sys.executable, "-m", "edgeemb_bench.studies.multilingual_pruned", "rss-one", bundle, f.name]
            cmd += ["--low-memory"] if args.low_memory else []
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            row = {**json.loads(res.stdout.strip().splitlines()[-1]), "low_memory": args.low_memory,
                   "load_before": before, "load_after": _load()}
            print(json.dumps(row), file=sys.stderr, flush=True)
            out["bundles"].append(row)
    finally:
        os.unlink(f.name)
    _emit(args.out, out)


def _emit(path: str | None, doc: dict) -> None:
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n", encoding="utf-8")
    print(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="edgeemb_bench.studies.multilingual_pruned", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tokens")
    t.add_argument("--full", required=True)
    t.add_argument("--pruned", required=True)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--out")
    t.set_defaults(func=cmd_tokens)
    r = sub.add_parser("rss")
    r.add_argument("--bundle", action="append", required=True)
    r.add_argument("--n", type=int, default=20_000)
    r.add_argument("--low-memory", action="store_true", help="edgeemb.load(low_memory=True): 512-token batches")
    r.add_argument("--out")
    r.set_defaults(func=cmd_rss)
    o = sub.add_parser("rss-one")
    o.add_argument("bundle")
    o.add_argument("texts")
    o.add_argument("--low-memory", action="store_true")
    o.set_defaults(func=cmd_rss_one)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
