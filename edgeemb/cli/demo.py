"""The demo: index the built-in sample corpus with the default bundle and answer the demo queries."""
from __future__ import annotations

import csv
import tempfile
import time
from importlib import resources
from typing import TYPE_CHECKING, cast

from ..sysinfo import peak_rss_mb
from .index import snippet

if TYPE_CHECKING:
    from ..encode.encoder import Encoder
    from ..search.index import Index
    from ..search.store import Hit
    from .parsers import Subparsers


def add_parsers(sub: Subparsers, export_sub: Subparsers) -> None:
    """Register `demo`."""
    p = sub.add_parser("demo", help="index the built-in sample corpus and run a few queries")
    p.add_argument("--bundle", default=None, help="bundle to use (default: the embedded default)")
    p.add_argument("-k", type=int, default=3, help="hits shown per query (default 3)")
    p.set_defaults(func=lambda args: run_demo(args.bundle, args.k))


def sample_corpus() -> tuple[list[str], list[str], list[dict[str, str]]]:
    """The project's own sample corpus: ids, texts, metadata (lang, topic)."""
    with (resources.files("edgeemb") / "data" / "sample_corpus.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["id"] for r in rows], [r["text"] for r in rows], [{"lang": r["lang"], "topic": r["topic"]} for r in rows]


def demo_queries() -> list[str]:
    """The demo's queries (English and Chinese)."""
    text = (resources.files("edgeemb") / "data" / "demo_queries.txt").read_text(encoding="utf-8")
    return [q for q in text.splitlines() if q.strip()]


def is_chinese(text: str) -> bool:
    """True when text holds a CJK ideograph (the demo's Chinese queries)."""
    return any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text)


def multilingual_encoder() -> Encoder | None:
    """The multilingual default (multilingual-e5-small) when `edgeemb setup` has built it, else None with a note."""
    from ..encode.encoder import load
    from ..errors import BundleError

    try:
        return load(MULTILINGUAL)
    except (BundleError, KeyError, ValueError, OSError) as exc:
        print(f"(multilingual default not built, so the Chinese queries use the English default: {exc}; "
              f"build it with `edgeemb setup`)\n")
        return None


MULTILINGUAL = "default-multilingual"


def run_demo(bundle: str | None = None, k: int = 3) -> int:
    """Index the sample corpus in a temporary folder, run the queries, print hits, latency and peak RSS.
    With the embedded defaults (no --bundle), the Chinese queries go to the multilingual default when built."""
    from ..encode.encoder import load

    start = time.perf_counter()
    enc = load(bundle)
    print(f"bundle: {enc.name} ({enc.kind}, dim {enc.dim}, {enc.manifest.quantization}) "
          f"loaded in {(time.perf_counter() - start) * 1e3:.0f} ms, {enc.threads} threads")
    multi = multilingual_encoder() if bundle is None else None
    if multi is not None:
        print(f"multilingual bundle for the Chinese queries: {multi.name} ({multi.kind}, dim {multi.dim}, "
              f"{multi.manifest.quantization})")
    ids, texts, meta = sample_corpus()
    with tempfile.TemporaryDirectory(prefix="edgeemb-demo-") as tmp:
        index = _demo_index(f"{tmp}/main", enc, ids, texts, meta)
        indexes = {enc.name: index}
        if multi is not None:
            indexes[multi.name] = _demo_index(f"{tmp}/multi", multi, ids, texts, meta)
        print()
        latencies = []
        for query in demo_queries():
            name = multi.name if multi is not None and is_chinese(query) else enc.name
            t0 = time.perf_counter()
            hits = cast("list[Hit]", indexes[name].search(query, k=k))  # a str: one list of hits
            latencies.append((time.perf_counter() - t0) * 1e3)
            print(f"query: {query}   [{latencies[-1]:.1f} ms" + (f", {name}]" if multi is not None else "]"))
            for h in hits:
                print(f"  {h.score:.3f}  {h.id:<18} {snippet(h.text, 80)}")
            print()
        if multi is not None:
            run_cross_lingual(indexes[multi.name], k)
        for ix in indexes.values():
            ix.close()
    latencies.sort()
    print(f"per-query latency (encode + search): median {latencies[len(latencies) // 2]:.1f} ms, "
          f"max {latencies[-1]:.1f} ms; peak RSS {peak_rss_mb():.0f} MB")
    if bundle is None:
        run_static_demo()
    return 0


CROSS_LINGUAL = (("how to lower blood pressure without medicine", "zh"), ("如何保护网上账户不被黑客攻击", "en"))


def run_cross_lingual(index: Index, k: int) -> None:
    """Queries in one language against the documents of the other, on the multilingual index (a lang filter)."""
    for query, lang in CROSS_LINGUAL:
        t0 = time.perf_counter()
        hits = cast("list[Hit]", index.search(query, k=k, filter={"lang": lang}))  # a str: one list
        print(f"cross-lingual: {query} -> {lang} documents   [{(time.perf_counter() - t0) * 1e3:.1f} ms]")
        for h in hits:
            print(f"  {h.score:.3f}  {h.id:<18} {snippet(h.text, 80)}")
        print()


def _demo_index(folder: str, enc: Encoder, ids: list[str], texts: list[str], meta: list[dict[str, str]]) -> Index:
    """The sample corpus indexed with enc in folder (timed)."""
    from ..search.index import Index

    index = Index.create(folder, enc, capacity=len(texts))
    start = time.perf_counter()
    index.add(texts, ids=ids, metadata=meta)
    print(f"indexed {len(index)} sample documents (en + zh, 6 topics) with {enc.name} in "
          f"{time.perf_counter() - start:.1f} s")
    return index


def run_static_demo() -> None:
    """The second default, a static bundle distilled from MiniLM: each query's top hit and its latency."""
    from ..encode.encoder import load
    from ..errors import BundleError
    from ..search.index import Index

    start = time.perf_counter()
    try:
        enc = load("default-static")
    except BundleError as exc:
        print(f"\n(static default skipped: {exc})")
        return
    print(f"\nstatic bundle: {enc.name} (dim {enc.dim}, {enc.manifest.quantization}, no transformer) loaded in "
          f"{(time.perf_counter() - start) * 1e3:.0f} ms; top hit per query:")
    ids, texts, meta = sample_corpus()
    latencies = []
    with tempfile.TemporaryDirectory(prefix="edgeemb-demo-") as tmp:
        index = Index.create(tmp, enc, capacity=len(texts))
        index.add(texts, ids=ids, metadata=meta)
        for query in demo_queries():
            t0 = time.perf_counter()
            hit = cast("list[Hit]", index.search(query, k=1))[0]  # a str: one list of hits
            latencies.append((time.perf_counter() - t0) * 1e3)
            print(f"  [{latencies[-1]:.2f} ms] {snippet(query, 40):<40} -> {hit.score:.3f}  {hit.id}")
        index.close()
    latencies.sort()
    print(f"static per-query latency (encode + search): median {latencies[len(latencies) // 2]:.2f} ms")
