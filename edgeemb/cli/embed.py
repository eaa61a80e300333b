"""`edgeemb embed`: a corpus into checksummed vector shards, in this process or on a Ray cluster (resumable)."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .parsers import Subparsers


def add_parsers(sub: Subparsers, export_sub: Subparsers) -> None:
    """Register `embed`."""
    p = sub.add_parser("embed", help="embed a corpus into vector shards (local or on Ray; resumable)",
                       description="Embed CORPUS into shards under OUT (vectors + ids, a manifest naming the bundle). "
                       "Rerunning the same command resumes: intact shards are kept, missing or damaged ones redone. "
                       "Build an index from OUT with `edgeemb index build --from-embeddings OUT -o INDEX`.")
    p.add_argument("corpus", help=".txt, .jsonl, .tsv (as `index build` reads them) or .parquet")
    p.add_argument("-b", "--bundle", default=None, help="bundle folder, .tar, 'default' or 'default-static' "
                   "(default: the embedded default); with --engine ray it must exist at that path on every node")
    p.add_argument("-o", "--out", required=True, help="output folder (new, empty, or this same job to resume)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: one process (default); ray: Ray Data actors (needs the ray extra)")
    p.add_argument("--address", default=None, help="ray: HOST:PORT of a running cluster to join, left running "
                   "after (default: start a local one here); a cluster with token authentication needs "
                   "RAY_AUTH_MODE=token")
    p.add_argument("--workers", type=int, default=None, help="ray: actors, one Encoder each (default: CPUs/threads)")
    p.add_argument("--threads", type=int, default=None,
                   help="onnxruntime threads (local default: physical cores; ray: per actor, default 1)")
    p.add_argument("--format", dest="shard_format", choices=("npy", "parquet"), default="npy",
                   help="shard files: .npy vectors + .jsonl documents (default), or one .parquet per shard")
    p.add_argument("--block-size", type=int, default=None, metavar="B",
                   help="documents per shard, the unit of work and of resuming (default 4096)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per graph call inside a block (default 32)")
    p.add_argument("--text-field", default="text", help="column or JSON field holding the text (default: text)")
    p.add_argument("--id-field", default="id", help="column or JSON field holding the id (default: id; "
                   "documents without one get doc-<n>, as in `index build`)")
    p.add_argument("--force", action="store_true", help="OUT holds another embedding job: replace it")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    from ..jobs.embed import DEFAULT_BLOCK_ROWS, embed_corpus

    res = embed_corpus(args.corpus, args.bundle, args.out, engine=args.engine, address=args.address,
                       workers=args.workers, threads=args.threads, block_rows=args.block_size or DEFAULT_BLOCK_ROWS,
                       shard_format=args.shard_format, text_field=args.text_field, id_field=args.id_field,
                       force=args.force, batch_size=args.batch_size, show_progress=not args.quiet)
    resumed = f" ({res.skipped} already done, {res.written} written now)" if res.skipped else ""
    truncated = f", {res.truncated} truncated" if res.truncated else ""
    print(f"embedded {res.rows} documents into {res.shards} shards in {res.out} in {res.seconds:.1f} s "
          f"({res.rate:,.0f} docs/s, engine {args.engine}){resumed}{truncated}", file=sys.stderr)
    print(res.out)
    return 0


def cmd_index_from_embeddings(args: argparse.Namespace) -> int:
    """`index build --from-embeddings DIR -o INDEX [BUNDLE]`: an index from a finished job's shards."""
    import time

    from ..errors import InputError
    from ..jobs.from_embeddings import build_index_from_embeddings

    if args.corpus is not None or args.coarse or args.fine:
        raise InputError("--from-embeddings takes no CORPUS and no --coarse/--fine (the shards hold the documents)")
    options = {"vectors": args.vectors} if getattr(args, "vectors", None) not in (None, "float32") else {}
    start = time.perf_counter()
    report = build_index_from_embeddings(args.from_embeddings, args.out, bundle=args.bundle, force=args.force,
                                         resume=args.resume, threads=args.threads, show_progress=True, **options)
    resumed = f" (resumed: {report.skipped} were already there, {report.added} added now)" if report.resumed else ""
    print(f"indexed {report.count} documents from {args.from_embeddings} into {args.out} in "
          f"{time.perf_counter() - start:.1f} s, no re-encoding{resumed}")
    return 0
