"""`edgeemb export llm`: a decoder LLM (HF folder, llama2.c checkpoint, GGUF) to an encoder bundle."""
from __future__ import annotations

import argparse

from .cli import needs_export_extra
from .common.quantization import add_quantize_option
from .llm.options import POOLINGS, QUANTIZATIONS, LLMOptions


def layer_arg(value: str) -> int | str:
    """--layer: an int hidden-state index (0 = embeddings, -1 = last) or 'all'."""
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or 'all', got {value!r}") from None


def add_parsers(sub, export_sub) -> None:
    """Register `export llm`."""
    p = export_sub.add_parser("llm", help="a decoder LLM (HF folder, llama2.c .bin, .gguf) as an encoder")
    p.add_argument("src", help="Hugging Face folder (Llama, Qwen2, Qwen3, Mistral, GPT-2), llama2.c .bin, "
                               "or .gguf")
    p.add_argument("-o", "--out", required=True, help="bundle folder to write")
    p.add_argument("--pooling", choices=POOLINGS, default="last", help="last real token (default) or mean")
    p.add_argument("--layer", type=layer_arg, default=-1,
                   help="hidden state to pool: -1 last (default), N (0 = embeddings), or 'all' (adds "
                        "layer_embeddings, so a layer sweep is one run)")
    add_quantize_option(p, QUANTIZATIONS, "int8",
                        "int8: per-channel weights, per-row activations; int4: weight-only MatMulNBits, block 32")
    p.add_argument("--accuracy-level", type=int, choices=(0, 1, 2, 3, 4), default=None,
                   help="int4 only: MatMulNBits compute precision (4: int8 activations, faster with VNNI)")
    p.add_argument("--fp32-embeddings", action="store_true",
                   help="int4 only: keep the token-embedding table in float32")
    p.add_argument("--query-prompt", default="",
                   help="prefix encode_queries() adds, e.g. 'Instruct: ...\\nQuery: '")
    p.add_argument("--document-prompt", default="", help="prefix encode_documents() adds")
    p.add_argument("--append-eos", action="store_true", help="the runtime appends EOS to every text")
    p.add_argument("--no-normalize", action="store_true", help="do not L2-normalise the pooled vector")
    p.add_argument("--max-length", type=int, default=None,
                   help="token limit (default: min(model positions, 512))")
    p.add_argument("--tokenizer", default=None,
                   help="llama2.c tokenizer.bin (default: tok<vocab>.bin beside SRC)")
    p.add_argument("--name", default=None, help="bundle name (default: <src>-<quantize>)")
    p.add_argument("--no-check", action="store_true", help="record parity but do not fail on it")
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    p.set_defaults(func=cmd_export_llm)


def cmd_export_llm(args) -> int:
    try:
        from .llm.export import export_llm
    except ImportError as exc:
        return needs_export_extra(exc)
    opts = LLMOptions(pooling=args.pooling, layer=args.layer, quantization=args.quantize,
                      query_prompt=args.query_prompt, document_prompt=args.document_prompt,
                      append_eos=args.append_eos, normalize=not args.no_normalize, max_length=args.max_length,
                      accuracy_level=args.accuracy_level, quantize_embeddings=not args.fp32_embeddings)
    out = export_llm(args.src, args.out, opts, name=args.name, tokenizer=args.tokenizer,
                     check=not args.no_check, force=args.force)
    print(f"wrote {out}")
    return 0
