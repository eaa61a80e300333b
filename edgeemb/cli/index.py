"""Index subcommands: `index build` (plain or hybrid, streamed, resumable) and `search` (one opening per call)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from ..corpus import CorpusReader, CorpusStats
    from ..search.build import BuildReport, FolderBuild
    from ..search.hybrid import HybridRetriever
    from ..search.index import Index
    from ..search.store import Hit
    from .parsers import Subparsers


def add_parsers(sub: Subparsers, export_sub: Subparsers) -> None:
    """Register `index build` and `search`."""
    p = sub.add_parser("index", help="build a search index from a corpus file")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="embed a corpus (.txt, .jsonl, .tsv) into an index folder")
    b.add_argument("bundle", nargs="?", default=None, help="bundle folder, 'default' or 'default-static' "
                   "(default: the embedded default; leave out with --coarse/--fine)")
    b.add_argument("corpus", nargs="?", default=None,
                   help=".txt (one doc per line, split at \\n only), .jsonl (text field) or .tsv (header "
                   "with a text column); a line holds at most --max-doc-bytes")
    b.add_argument("--coarse", default=None, help="hybrid index: bundle whose vectors go in the HNSW graph")
    b.add_argument("--fine", default=None, help="hybrid index: bundle whose int8 vectors re-score the candidates")
    b.add_argument("--coarse-dim", type=int, default=None, help="hybrid: keep the first N coarse dims (smaller graph)")
    b.add_argument("--no-lexical", action="store_true", help="hybrid: no BM25 keyword index (the graph recalls all)")
    b.add_argument("-o", "--out", required=True, help="index folder to create (new or empty; built beside it in "
                   ".OUT.partial and moved in place when complete)")
    b.add_argument("--from-embeddings", default=None, metavar="DIR", help="build from the shards of a finished "
                   "`edgeemb embed` job (no re-encoding; no CORPUS; BUNDLE, if given, must be the one that made them)")
    b.add_argument("--text-field", default="text", help="column or JSON field holding the text (default: text)")
    b.add_argument("--force", action="store_true", help="replace an existing index (refused while another process "
                   "has it open for writing; other files in the folder are kept)")
    b.add_argument("--resume", action="store_true", help="continue an interrupted build (.OUT.partial), skipping the "
                   "documents whose ids it already holds")
    b.add_argument("--max-doc-bytes", type=int, default=None, metavar="N",
                   help="longest corpus line accepted, in bytes (default 1048576); longer lines are an error")
    b.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: physical cores)")
    b.add_argument("--sessions", type=int, default=1, help="onnxruntime sessions sharing --threads, batches dealt "
                   "to them (2 on 2 cores: faster encoding, one more session's memory; default 1)")
    b.add_argument("--vectors", choices=("float32", "binary"), default="float32",
                   help="vector storage: float32 (hnswlib graph in RAM) or binary (bits in RAM, re-scored with "
                   "int8 rows read from disk; ~30x less RAM)")
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


def cmd_index_build(args: argparse.Namespace) -> int:
    from ..corpus import MAX_LINE_BYTES, CorpusReader
    from ..encode.encoder import load
    from ..errors import CorpusError, InputError
    from ..search.build import FolderBuild
    from ..search.index import Index

    if args.from_embeddings:
        from .embed import cmd_index_from_embeddings

        return cmd_index_from_embeddings(args)
    if args.corpus is None:  # `index build CORPUS`: the one positional given is the corpus
        args.bundle, args.corpus = None, args.bundle
    if args.corpus is None:
        raise InputError("index build needs a CORPUS (or --from-embeddings DIR)")
    hybrid = bool(args.coarse or args.fine)
    if hybrid and (args.bundle is not None or not (args.coarse and args.fine)):
        raise InputError("a hybrid index needs both --coarse and --fine (and no BUNDLE argument)")
    if args.no_lexical and not hybrid:
        raise InputError("--no-lexical is for a hybrid index (--coarse and --fine)")
    if hybrid and args.vectors != "float32":
        raise InputError("--vectors binary is for a plain index (a hybrid index keeps its coarse graph in float32)")
    reader = CorpusReader(args.corpus, text_field=args.text_field, max_line_bytes=args.max_doc_bytes or MAX_LINE_BYTES)
    with FolderBuild(args.out, force=args.force, resume=args.resume) as build:
        stats = reader.scan()  # every line checked before anything is written
        if stats.docs == 0:
            raise CorpusError(f"{args.corpus}: no documents ({stats.skipped_empty} empty lines skipped); nothing was "
                              f"built")
        start = time.perf_counter()
        if hybrid:
            return build_hybrid(args, build, reader, stats, start)
        enc = load(args.bundle, threads=args.threads, sessions=args.sessions)

        def make(path: Path, exists: bool) -> Index:
            if exists:
                index = Index.open(path, enc, threads=args.threads or 1)
                if index.vectors_kind != args.vectors:
                    index.close()
                    raise InputError(f"the interrupted build holds {index.vectors_kind} vectors, not {args.vectors}; "
                                     f"resume with --vectors {index.vectors_kind}")
                return index
            return Index.create(path, enc, capacity=stats.docs, bundle_ref=bundle_ref(args.bundle, enc.path),
                                threads=args.threads or 1, vectors=args.vectors)

        report = build.run(make, reader, stats.docs)
    skipped = f", {stats.skipped_empty} empty lines skipped" if stats.skipped_empty else ""
    truncated = f", {enc.truncated} truncated to {enc.manifest.max_length} tokens" if enc.truncated else ""
    print(f"indexed {report.count} documents into {args.out} in {time.perf_counter() - start:.1f} s"
          f"{resumed(report)}{skipped}{truncated}")
    return 0


def resumed(report: BuildReport) -> str:
    """The note a resumed build adds to its summary."""
    return f" (resumed: {report.skipped} were already there, {report.added} added now)" if report.resumed else ""


def build_hybrid(args: argparse.Namespace, build: FolderBuild, reader: CorpusReader, stats: CorpusStats,
                 start: float) -> int:
    """`index build --coarse A --fine B`: coarse vectors in the graph, fine int8 vectors beside the store."""
    from ..encode.encoder import load
    from ..search.hybrid import HybridRetriever

    coarse = load(args.coarse, threads=args.threads, sessions=args.sessions)
    fine = load(args.fine, threads=args.threads, sessions=args.sessions)

    made: list[HybridRetriever] = []

    def make(path: Path, exists: bool) -> HybridRetriever:
        made.append(HybridRetriever(coarse, fine, path, coarse_dim=args.coarse_dim, threads=args.threads or 1,
                                    coarse_ref=bundle_ref(args.coarse, coarse.path),
                                    fine_ref=bundle_ref(args.fine, fine.path), lexical=not args.no_lexical))
        return made[-1]

    report = build.run(make, reader, stats.docs)
    h = made[-1]
    print(f"indexed {report.count} documents into {args.out} (hybrid: coarse {coarse.name} dim {h.coarse_dim}, "
          f"fine {fine.name} int8, {'no keywords' if h.lexical is None else 'BM25 keywords'}) in "
          f"{time.perf_counter() - start:.1f} s{resumed(report)}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ..encode.encoder import load
    from ..errors import InputError
    from ..search.index import Index
    from ..search.validate import parse_queries

    parse_queries(args.query, 1)  # an empty query or invalid Unicode in argv: say so before loading anything
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
            hits = cast("list[Hit]", index.search(args.query, k=args.k, ef=args.candidates))  # a str: one list
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


def search_hybrid(args: argparse.Namespace, index: Index) -> tuple[list[Hit], dict[str, float]]:
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
