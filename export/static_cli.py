"""CLI for static bundles: `edgeemb export static` (word vector files) and `edgeemb distill` (from a sentence model)."""
from __future__ import annotations

from .cli import needs_export_extra
from .common.quantization import add_quantize_option
from .static.options import FORMATS, LOWERCASE, POOLINGS, SEGMENTATIONS
from .static.options import QUANTIZATIONS as QUANTIZE


def add_parsers(sub, export_sub) -> None:
    """Register `export static` and `distill`."""
    p = export_sub.add_parser("static", help="a word-vector file: word2vec, GloVe or fastText (.vec/.bin)")
    p.add_argument("src", help="vector file (dialect sniffed when --format is absent)")
    p.add_argument("-o", "--out", required=True, help="bundle folder to write")
    p.add_argument("--format", choices=FORMATS, default=None, help="file dialect (default: sniffed)")
    add_quantize_option(p, QUANTIZE, "int8", "table precision; int8 uses per-row scales")
    p.add_argument("--max-vocab", type=int, default=None, help="keep only the first N words (files are by frequency)")
    p.add_argument("--lowercase", choices=LOWERCASE, default="auto",
                   help="auto: lowercase texts when the vocabulary has no uppercase words")
    p.add_argument("--pooling", choices=POOLINGS, default="sif",
                   help="sentence vectors: SIF/Zipf-weighted mean (default) or plain mean")
    p.add_argument("--segmentation", choices=SEGMENTATIONS, default="auto",
                   help="words: split on spaces and punctuation; longest-match: fewest vocabulary pieces (CJK); "
                        "auto picks longest-match when a fifth of the vocabulary is CJK")
    p.add_argument("--name", default=None, help="bundle name (default: <file stem>-<quantize>)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    p.set_defaults(func=cmd_export_static)

    p = sub.add_parser("distill", help="a static bundle distilled from a sentence model (model2vec-style)")
    p.add_argument("src", help="local sentence-transformers folder (the teacher)")
    p.add_argument("-o", "--out", required=True, help="bundle folder to write")
    p.add_argument("--dims", type=int, default=256, help="PCA dimensions (default 256)")
    p.add_argument("--vocab-size", type=int, default=None, help="keep the first N token ids of the teacher's vocabulary")
    add_quantize_option(p, QUANTIZE, "int8", "table precision; int8 uses per-row scales")
    p.add_argument("--name", default=None, help="bundle name (default: <src>-static-<dims>)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    p.set_defaults(func=cmd_distill)


def cmd_export_static(args) -> int:
    try:
        from .static.export import export_static
    except ImportError as exc:
        return needs_export_extra(exc)
    out = export_static(args.src, args.out, args.format, args.quantize, args.max_vocab, args.lowercase, args.name,
                        args.pooling, args.segmentation, args.force)
    print(f"wrote {out}")
    return 0


def cmd_distill(args) -> int:
    try:
        from .static.distill import distill
    except ImportError as exc:
        return needs_export_extra(exc)
    out = distill(args.src, args.out, args.dims, args.vocab_size, args.quantize, args.name, args.force)
    print(f"wrote {out}")
    return 0
