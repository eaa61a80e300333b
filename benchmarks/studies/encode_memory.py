"""Encoding memory study (issue 14, "Memory that is not bounded"): peak RSS of encode() per case, fresh process each.

A study script, not library code: over 400 lines because the parent, its child processes and the variants they
monkeypatch share one file, so every committed figure comes from one command.

    .venv/bin/python benchmarks/studies/encode_memory.py run                 # the issue's sizes (slow on 2 cores)
    .venv/bin/python benchmarks/studies/encode_memory.py run --quick         # fewer texts, same shapes
    .venv/bin/python benchmarks/studies/encode_memory.py run --cases 16k --mem-pattern 1 0 --json out.json
    .venv/bin/python benchmarks/studies/encode_memory.py run --quick --variants base prepack=0 prefix=8
    taskset -c 1 .venv/bin/python benchmarks/studies/encode_memory.py speed --variants base prepack=0 --rounds 3
    .venv/bin/python benchmarks/studies/encode_memory.py check-ids --prefix 8     # prefix tokenising is exact

Cases (texts built from en_corpus sentences, concatenated and cut to size; never synthetic): `short` (200k
sentences, cycled), `2k` (5k texts of 2 KB), `16k` (2k texts of 16 KB), `10mb` (one text of 10 MB), and
`index-static` (Index.add of 200k sentences with the default-static bundle, the default float32 storage).
Each case runs in its own child process, which reports RSS after imports, after building its texts and after
loading the bundle (the baseline), VmHWM (the peak, read by edgeemb_bench.probes), the output's size, and
peak - output; the 1-minute load average is printed beside every figure. `speed` times encode() per variant,
the variants interleaved round by round, in CPU time (pin it to one core with taskset).

A variant is `base` or comma-separated `key=value`s: `mp` (memory patterns 0/1, default 0 as load()), `cache`
(the optimised graph copy, EDGEEMB_GRAPH_CACHE, default 1), `prepack` (0 sets session.disable_prepacking), `span`
(CHUNK_TEXTS:CHUNK_CHARS of encoder.py, monkeypatched), `prefix` (k: batching.PREFIX_CHARS_PER_TOKEN,
a word-boundary prefix of max_length * k characters tokenised first, the capped text again only where it did not
overflow; 0 turns it off), `group` (texts:chars: batching.GROUP_TEXTS:GROUP_CHARS; a huge value gives one call per
span, as before session 7), `drop` (1: the
previous span's ids freed before the next span is tokenised, as a `del tok` in encode() would), `tokens`
(max_tokens), `trim` (glibc malloc_trim(0): `0` none, as before session 7; `load`, after creating the
session, which backend.py now does by default; `tok` also after tokenising each span; `all` = load + tok); a key with a dot is an onnxruntime session config entry. `run` and
`speed` report whether each variant's vectors are bit-identical to the first variant's on the same texts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FULL = {"short": 200_000, "2k": 5_000, "16k": 2_000, "10mb": 1, "index-static": 200_000}
QUICK = {"short": 10_000, "2k": 600, "16k": 300, "10mb": 1, "index-static": 20_000}
SIZE = {"short": None, "2k": 2_048, "16k": 16_384, "10mb": 10 << 20, "index-static": None}
KEYS = ("mp", "cache", "prepack", "span", "prefix", "group", "drop", "tokens", "trim")


def texts_for(case: str, n: int, corpus: str = "en_corpus") -> list[str]:
    """The case's texts: corpus sentences (cycled past the corpus' end), or consecutive sentences joined and cut."""
    from edgeemb_bench import data

    size = SIZE[case]
    if size is None:
        rows = data.sentences(corpus)
        return [rows[i % len(rows)] for i in range(n)]
    out: list[str] = []
    parts: list[str] = []
    length = 0
    while len(out) < n:
        for sentence in data.iter_sentences(corpus):
            parts.append(sentence)
            length += len(sentence) + 1
            if length >= size:
                out.append(" ".join(parts)[:size])
                parts, length = [], 0
                if len(out) == n:
                    break
    return out


def parse_variant(spec: str) -> dict[str, str]:
    """'base' -> {}; 'k=v,k=v' -> {k: v}, keys checked (KEYS, or a dotted onnxruntime session config key)."""
    if spec in ("", "base"):
        return {}
    out = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep or (key not in KEYS and "." not in key):
            raise SystemExit(f"bad variant part {part!r}: expected key=value with a key among {KEYS} or dotted")
        out[key] = value
    return out


# ---- the prefix-first tokenisation (item 4), as batching.TextTokenizer does it since session 7 ----

def prefix_stats(tt: Any, texts: list[str]) -> tuple[int, int]:
    """How many texts TextTokenizer.tokenize cuts to a prefix first, and how many of those it tokenises again
    whole because the prefix did not overflow max_length (the same decisions as batching.TextTokenizer._encode)."""
    from edgeemb.encode import batching

    cap, short = tt.max_length * batching.CHARS_PER_TOKEN_CAP, tt.max_length * batching.PREFIX_CHARS_PER_TOKEN
    capped = [t[:cap] for t in texts]
    cuts = [t[:p] for t in capped if tt.word_local and len(t) > short
            for p in [batching._word_cut(t, short, tt._cjk)] if p > 0]
    return len(cuts), sum(1 for e in tt.tokenizer.encode_batch(cuts) if not e.overflowing)


def whole_tokenize(tt: Any, texts: list[str]) -> Any:
    """The reference: every text cut to the character cap and tokenised whole, in one call (before session 7)."""
    from edgeemb.encode.batching import CHARS_PER_TOKEN_CAP, Tokenized

    cap = tt.max_length * CHARS_PER_TOKEN_CAP
    encs = tt.tokenizer.encode_batch([t[:cap] for t in texts])
    eos = [] if tt.eos_id is None else [tt.eos_id]
    return Tokenized([e.ids + eos for e in encs], [e.type_ids + [0] * len(eos) for e in encs],
                     sum(1 for t, e in zip(texts, encs) if e.overflowing or len(t) > cap))


# ---- applying a variant ----

@contextlib.contextmanager
def loading(variant: dict[str, str]) -> Iterator[None]:
    """Load-time settings of a variant: session config entries (prepack, dotted keys) and the graph copy env."""
    from edgeemb.encode import backend

    config = {k: v for k, v in variant.items() if "." in k}
    if variant.get("prepack") == "0":
        config["session.disable_prepacking"] = "1"
    real, env = backend.session_options, os.environ.get("EDGEEMB_GRAPH_CACHE")

    def with_config(*args: Any, **kw: Any) -> Any:
        so = real(*args, **kw)
        for key, value in config.items():
            so.add_session_config_entry(key, value)
        return so

    backend.session_options = with_config  # type: ignore[assignment]
    trim = backend.release_free_heap
    if variant.get("trim") == "0":  # before session 7: no malloc_trim after creating the session
        backend.release_free_heap = lambda: None  # type: ignore[assignment]
    if "cache" in variant:
        os.environ["EDGEEMB_GRAPH_CACHE"] = variant["cache"]
    try:
        yield
    finally:
        backend.session_options = real  # type: ignore[assignment]
        backend.release_free_heap = trim  # type: ignore[assignment]
        if env is None:
            os.environ.pop("EDGEEMB_GRAPH_CACHE", None)
        else:
            os.environ["EDGEEMB_GRAPH_CACHE"] = env


def malloc_trim() -> None:
    """glibc's malloc_trim(0): hand the free pages of every malloc arena back to the system (Linux only)."""
    from edgeemb.encode.backend import release_free_heap

    release_free_heap()


def load_variant(variant: dict[str, str]) -> Any:
    """The default bundle loaded with one thread under the variant's load-time settings."""
    import edgeemb

    with loading(variant):
        enc = edgeemb.load(threads=1, mem_pattern=variant.get("mp", "0") == "1")
    if variant.get("trim") in ("load", "all"):
        malloc_trim()
    if "tokens" in variant:
        enc.max_tokens = int(variant["tokens"])
    return enc


@contextlib.contextmanager
def encoding(variant: dict[str, str]) -> Iterator[None]:
    """Encode-time settings of a variant: the tokenising span (encoder.py's constants) and prefix tokenising."""
    from edgeemb.encode import batching
    from edgeemb.encode import encoder as encoder_module

    saved = (encoder_module.CHUNK_TEXTS, encoder_module.CHUNK_CHARS, batching.TextTokenizer.tokenize,
             batching.PREFIX_CHARS_PER_TOKEN, batching.GROUP_TEXTS, batching.GROUP_CHARS)
    if "span" in variant:
        texts, chars = variant["span"].split(":")
        encoder_module.CHUNK_TEXTS, encoder_module.CHUNK_CHARS = int(texts), int(chars)
    if "prefix" in variant:  # 0: no prefix path (every cut lands at 0)
        batching.PREFIX_CHARS_PER_TOKEN = int(variant["prefix"])
    if "group" in variant:  # tokenise a span in groups: the tokenizer's encodings live per group, not per span
        batching.GROUP_TEXTS, batching.GROUP_CHARS = (int(x) for x in variant["group"].split(":"))
    tokenize = saved[2]
    if variant.get("drop") == "1":  # as `del tok` at the end of encode()'s span loop: the previous span's id
        done: list[Any] = []  # lists are freed before the next span is tokenised, not after
        keep = tokenize

        def tokenize(self: Any, texts: list[str]) -> Any:
            while done:
                old = done.pop()
                old.ids.clear()
                old.type_ids.clear()
            done.append(keep(self, texts))
            return done[-1]
    if variant.get("trim") in ("tok", "all"):  # trim after tokenising each span: its transient heap goes back
        inner = tokenize

        def tokenize(self: Any, texts: list[str]) -> Any:
            out = inner(self, texts)
            malloc_trim()
            return out
    batching.TextTokenizer.tokenize = tokenize  # type: ignore[method-assign]
    try:
        yield
    finally:
        (encoder_module.CHUNK_TEXTS, encoder_module.CHUNK_CHARS, batching.TextTokenizer.tokenize,
         batching.PREFIX_CHARS_PER_TOKEN, batching.GROUP_TEXTS, batching.GROUP_CHARS) = saved


def child(case: str, n: int, spec: str, save: str) -> dict:
    """One measurement in this (fresh) process: RSS at each stage, the peak, the output."""
    import numpy as np
    import onnxruntime  # noqa: F401 - counted in the imports' RSS, as numpy and tokenizers
    import tokenizers  # noqa: F401
    from edgeemb_bench import probes

    def rss() -> float:
        return probes.resident_kb().get("VmRSS", 0) / 1024

    variant = parse_variant(spec)
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
        enc = load_variant(variant)
        stages["load"] = rss()
        load_peak = probes.peak_rss_mb() or 0.0
        import warnings

        with warnings.catch_warnings(), encoding(variant):
            warnings.simplefilter("ignore")
            out = enc.encode(texts)
        out_mb = out.nbytes / 2**20
        if save:
            np.save(save, out)
    seconds = time.perf_counter() - start
    peak = probes.peak_rss_mb() or 0.0
    kb = probes.resident_kb()
    return {"case": case, "texts": n, "chars": sum(map(len, texts)), "variant": spec,
            "max_tokens": enc.max_tokens, "rss_mb": {k: round(v, 1) for k, v in stages.items()},
            "load_peak_mb": round(load_peak, 1) if case != "index-static" else None,
            "end_anon_file_mb": [round(kb.get("RssAnon", 0) / 1024, 1), round(kb.get("RssFile", 0) / 1024, 1)],
            "peak_mb": round(peak, 1), "output_mb": round(out_mb, 1), "peak_minus_output_mb": round(peak - out_mb, 1),
            "seconds": round(seconds, 1), "load_average": probes.load_average()}


def spawn(*args: str) -> dict:
    """Run this file's `child` in a fresh interpreter and return its JSON line."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed(case: str, n: int, specs: list[str], rounds: int) -> list[dict]:
    """encode() of n texts of a case per variant, interleaved over rounds, in one process (sessions warm)."""
    import warnings

    from edgeemb_bench import probes

    texts = texts_for(case, n)
    variants = [parse_variant(s) for s in specs]
    encs = [load_variant(v) for v in variants]
    times: list[list[float]] = [[] for _ in specs]
    outs: list[Any] = [None] * len(specs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for enc, v in zip(encs, variants):  # warm-up
            with encoding(v):
                enc.encode(texts[:64])
        for r in range(rounds):
            order = list(range(len(specs)))
            for i in order if r % 2 == 0 else order[::-1]:
                with encoding(variants[i]):
                    t = time.process_time()
                    outs[i] = encs[i].encode(texts)
                    times[i].append(time.process_time() - t)
    ref = outs[0]
    return [{"case": case, "variant": s, "texts_per_cpu_s": [round(n / t, 1) for t in times[i]],
             "identical_to_first": bool((outs[i] == ref).all()),
             "max_abs_diff": float(abs(outs[i] - ref).max()), "load_average": probes.load_average()}
            for i, s in enumerate(specs)]


def adversarial_texts(max_length: int, k: int) -> list[str]:
    """Texts whose cut point sits where a non-local tokeniser would go wrong: a word, accent, special token or
    ideograph across the cut, runs of spaces and other whitespace, no space at all."""
    short = max_length * k
    word = "antidisestablishmentarianism "
    base = (word * (short // len(word) + 40))
    out = [base, base.replace(" ", "\u00a0"), base.replace(" ", "\t"), base.replace(" ", "\n"),
           "x" * (short + 500), "a " * (short // 2 + 300),  # one-character words: overflows late
           ("e\u0301 " * (short // 3 + 200)), ("[SEP] [CLS]" * (short // 10 + 50)),
           ("中文" * (short // 2 + 100)), ("ab中" * (short // 3 + 100)),
           ("Ünïcödé wörds, with punctuation!? " * (short // 30 + 40)),
           (" " * (short + 10)) + "tail words here", "\u3000".join(["漢字"] * (short // 3 + 50))]
    for shift in range(-3, 4):  # the cut lands inside, before and after a long word
        out.append("w" * (short + shift) + " " + "tokens " * 400)
        out.append("word " * ((short + shift) // 5) + "x" * 120 + " more " * 300)
    for m in range(0, short // 9, 2):  # a many-token word straddles both the cut and the max_length-th token
        out.append("thousand " * m + "antidisestablishmentarianism " * (short // 20))
    for m in range(short // 12, short // 9, 3):  # a word over WordPiece's 100 characters ([UNK] whole) across
        out.append("thousand " * m + ("abcdefghij" * 15 + " ") * (short // 100))  # the cut: a piece of it is not
    return out


def check_ids(k: int, n_per_case: int) -> list[dict]:
    """TextTokenizer.tokenize (prefix-first and grouped, PREFIX_CHARS_PER_TOKEN = k) against whole tokenising on
    en/zh 2 KB and 16 KB texts and adversarial texts: the ids, type ids and truncation count must be identical;
    the seconds of each are printed."""
    import edgeemb
    from edgeemb.encode import batching

    batching.PREFIX_CHARS_PER_TOKEN = k

    enc = edgeemb.load(threads=1)
    tt = enc.tokenizer
    rows = []
    sets = [(f"{corpus}/{case}", texts_for(case, n_per_case, corpus))
            for corpus in ("en_corpus", "zh_corpus") for case in ("short", "2k", "16k")]
    sets.append(("adversarial", adversarial_texts(tt.max_length, k)))
    for name, texts in sets:
        t = time.process_time()
        old = whole_tokenize(tt, texts)
        t_old = time.process_time() - t
        t = time.process_time()
        new = tt.tokenize(texts)
        t_new = time.process_time() - t
        cut, redo = prefix_stats(tt, texts)
        bad = [i for i in range(len(texts)) if old.ids[i] != new.ids[i] or old.type_ids[i] != new.type_ids[i]]
        rows.append({"set": name, "texts": len(texts), "word_local": tt.word_local,
                     "prefix_cut": cut, "retokenised": redo,
                     "differing": len(bad), "truncated_old_new": [old.truncated, new.truncated],
                     "cpu_s_old_new": [round(t_old, 3), round(t_new, 3)]})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="every case in a fresh process")
    run.add_argument("--cases", nargs="*", default=list(FULL), choices=list(FULL))
    run.add_argument("--quick", action="store_true", help="fewer texts per case (the peak minus output holds)")
    run.add_argument("--mem-pattern", nargs="*", type=int, default=[0], help="shorthand for variants mp=1, mp=0")
    run.add_argument("--variants", nargs="*", default=None, help="variants (see the module doc); overrides --mem-pattern")
    run.add_argument("--max-tokens", type=int, default=None)
    run.add_argument("--json", type=Path, default=None, help="write the rows here too")
    sp = sub.add_parser("speed", help="throughput per variant, interleaved")
    sp.add_argument("--case", default="short", choices=["short", "2k", "16k"])
    sp.add_argument("--mem-pattern", nargs="*", type=int, default=[1, 0])
    sp.add_argument("--variants", nargs="*", default=None)
    sp.add_argument("--texts", type=int, default=3000)
    sp.add_argument("--rounds", type=int, default=3)
    ci = sub.add_parser("check-ids", help="prefix tokenising gives the same ids")
    ci.add_argument("--prefix", type=int, default=8)
    ci.add_argument("--texts", type=int, default=300)
    ch = sub.add_parser("child")
    ch.add_argument("case")
    ch.add_argument("n", type=int)
    ch.add_argument("variant")
    ch.add_argument("save", nargs="?", default="")
    args = ap.parse_args(argv)
    if args.cmd == "child":
        print(json.dumps(child(args.case, args.n, args.variant, args.save)))
        return
    if args.cmd == "check-ids":
        for row in check_ids(args.prefix, args.texts):
            print(json.dumps(row), flush=True)
        return
    specs = args.variants if args.variants is not None else [f"mp={m}" for m in args.mem_pattern]
    if getattr(args, "max_tokens", None):
        specs = [",".join(filter(None, [s if s != "base" else "", f"tokens={args.max_tokens}"])) for s in specs]
    if args.cmd == "speed":
        for row in speed(args.case, args.texts, specs, args.rounds):
            print(json.dumps(row), flush=True)
        return
    rows = []
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="encode_memory.") as tmp:
        for case in args.cases:
            first = None
            for j, spec in enumerate(["base"] if case == "index-static" else specs):
                save = str(Path(tmp) / f"{case}-{j}.npy") if len(specs) > 1 and case != "index-static" else ""
                row = spawn("child", case, str(sizes[case]), spec, save)
                if save:
                    import numpy as np

                    out = np.load(save)
                    first = out if first is None else first
                    row["identical_to_first"] = bool(out.shape == first.shape and (out == first).all())
                    Path(save).unlink() if j else None
                rows.append(row)
                print(f"{case:12s} n={row['texts']:<7d} {spec:28s} load {row['rss_mb']['load']:6.1f} MB  "
                      f"peak {row['peak_mb']:6.1f}  output {row['output_mb']:6.1f}  peak-output "
                      f"{row['peak_minus_output_mb']:6.1f}  {row['seconds']:7.1f} s  "
                      f"same={row.get('identical_to_first', '-')}  load avg {row['load_average'][0]}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
