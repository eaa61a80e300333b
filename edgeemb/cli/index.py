"""Index subcommands: `index build` (plain or hybrid) and `search` (one opening of the index per call)."""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path


def add_parsers(sub, export_sub) -> None:
    """Register `index build` and `search`."""
    p = sub.add_parser("index", help="build a search index from a corpus file")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="embed a corpus (.txt, .jsonl, .tsv) into an index folder")
    b.add_argument("bundle", nargs="?", default=None, help="bundle folder, 'default' or 'default-static' "
                   "(default: the embedded default; leave out with --coarse/--fine)")
    b.add_argument("corpus", help=".txt (one doc per line), .jsonl (text field) or .tsv (header with text column)")
    b.add_argument("--coarse", default=None, help="hybrid index: bundle whose vectors go in the HNSW graph")
    b.add_argument("--fine", default=None, help="hybrid index: bundle whose int8 vectors re-score the candidates")
    b.add_argument("--coarse-dim", type=int, default=None, help="hybrid: keep the first N coarse dims (smaller graph)")
    b.add_argument("--no-lexical", action="store_true", help="hybrid: no BM25 keyword index (the graph recalls all)")
    b.add_argument("-o", "--out", required=True, help="index folder to create")
    b.add_argument("--text-field", default="text", help="column or JSON field holding the text (default: text)")
    b.add_argument("--force", action="store_true", help="replace an existing index folder")
    b.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: physical cores)")
    b.set_defaults(func=cmd_index_build)

    p = sub.add_parser("search", help="query an index folder")
    p.add_argument("index", help="index folder made by `edgeemb index build`")
    p.add_argument("query", help="query text")
    p.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    p.add_argument("--bundle", default=None, help="bundle to encode the query (default: the one that built the index)")
    p.add_argument("--json", action="store_true", help="print JSON (with per-stage timings for a hybrid index)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: physical cores)")
    p.add_argument("--candidates", type=int, default=None,
                   help="hybrid: coarse candidates to re-score (default 100); plain index: HNSW ef")
    p.add_argument("--rerank", choices=("stored", "live"), default="stored",
                   help="hybrid: re-score with the stored fine vectors or encode the candidates now")
    p.add_argument("--fine", default=None, help="hybrid with --rerank live: bundle that encodes the candidates")
    p.add_argument("--no-lexical", action="store_true", help="hybrid: recall with the coarse graph only")
    p.set_defaults(func=cmd_search)


def bundle_ref(arg: str | None, folder: Path) -> str:
    """What an index records to find its bundle again: the default's short name or an absolute path."""
    from ..paths import DEFAULT_BUNDLES

    return arg if arg in DEFAULT_BUNDLES else "default" if arg is None else str(folder.resolve())


def cmd_index_build(args) -> int:
    from ..corpus import read_corpus
    from ..encode.encoder import load
    from ..errors import IndexStoreError, InputError
    from ..search.index import STORE, Index

    out = Path(args.out)
    if (out / STORE).exists():
        if not args.force:
            raise IndexStoreError(f"{out} already holds an index; pass --force to replace it")
        shutil.rmtree(out)
    corpus = read_corpus(args.corpus, text_field=args.text_field)
    if args.coarse or args.fine:
        return build_hybrid(args, corpus)
    if args.no_lexical:
        raise InputError("--no-lexical is for a hybrid index (--coarse and --fine)")
    enc = load(args.bundle, threads=args.threads)
    start = time.perf_counter()
    with Index.create(out, enc, capacity=len(corpus.texts), bundle_ref=bundle_ref(args.bundle, enc.path)) as index:
        index.add(corpus.texts, ids=corpus.ids, metadata=corpus.metadata, show_progress=True)
        n = len(index)
    skipped = f", {corpus.skipped_empty} empty lines skipped" if corpus.skipped_empty else ""
    truncated = f", {enc.truncated} truncated to {enc.manifest.max_length} tokens" if enc.truncated else ""
    print(f"indexed {n} documents into {out} in {time.perf_counter() - start:.1f} s{skipped}{truncated}")
    return 0


def build_hybrid(args, corpus) -> int:
    """`index build --coarse A --fine B`: coarse vectors in the graph, fine int8 vectors beside the store."""
    from ..encode.encoder import load
    from ..errors import InputError
    from ..search.hybrid import HybridRetriever

    if args.bundle is not None or not (args.coarse and args.fine):
        raise InputError("a hybrid index needs both --coarse and --fine (and no BUNDLE argument)")
    coarse, fine = load(args.coarse, threads=args.threads), load(args.fine, threads=args.threads)
    start = time.perf_counter()
    with HybridRetriever(coarse, fine, args.out, coarse_dim=args.coarse_dim, threads=args.threads or 1,
                         coarse_ref=bundle_ref(args.coarse, coarse.path), fine_ref=bundle_ref(args.fine, fine.path),
                         lexical=not args.no_lexical) as h:
        h.add(corpus.texts, ids=corpus.ids, metadata=corpus.metadata, show_progress=True)
        n = len(h)
    print(f"indexed {n} documents into {args.out} (hybrid: coarse {coarse.name} dim {h.coarse_dim}, fine "
          f"{fine.name} int8, {'no keywords' if h.lexical is None else 'BM25 keywords'}) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


def cmd_search(args) -> int:
    from ..encode.encoder import load
    from ..errors import InputError
    from ..search.index import Index

    index = Index.open(args.index, load(args.bundle, threads=args.threads) if args.bundle else None,
                       read_only=True, threads=args.threads or 1)
    try:
        if index.meta.get("kind") == "hybrid":
            hits, timings = search_hybrid(args, index)
            ms = timings["total_ms"]
        else:
            if args.rerank == "live" or args.fine:
                raise InputError(f"{args.index} is a plain index: --rerank live and --fine need a hybrid index")
            index.encoder  # noqa: B018 - load the recorded bundle before the clock starts
            start = time.perf_counter()
            hits = index.search(args.query, k=args.k, ef=args.candidates)
            ms = (time.perf_counter() - start) * 1e3
            timings = {"total_ms": round(ms, 3)}
    finally:
        index.close()
    if args.json:
        json.dump({"query": args.query, "latency_ms": round(ms, 3), "timings": timings,
                   "hits": [h.__dict__ for h in hits]}, sys.stdout, ensure_ascii=False)
        print()
    else:
        for rank, h in enumerate(hits, 1):
            print(f"{rank:>3}. {h.score:.4f}  {h.id}  {snippet(h.text)}")
        print(f"({len(hits)} hits in {ms:.1f} ms)")
    return 0


def search_hybrid(args, index) -> tuple[list, dict]:
    """Search an open hybrid index with the bundles it records (--fine: another bundle for --rerank live)."""
    from ..encode.encoder import load
    from ..search.hybrid import HybridRetriever

    coarse = load(index.meta["coarse"]["ref"], threads=args.threads)
    fine = load(index.meta["fine"]["ref"], threads=args.threads)
    live = load(args.fine, threads=args.threads) if args.fine else None
    with HybridRetriever(coarse, fine, index, read_only=True, live=live) as h:
        res = h.search(args.query, k=args.k, candidates=args.candidates or 100, rerank=args.rerank,
                       lexical=False if args.no_lexical else None)
    return list(res), res.timings


def snippet(text: str, width: int = 90) -> str:
    """One line of a document, cut to `width` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
