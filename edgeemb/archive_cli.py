"""`edgeemb pack` and `edgeemb unpack`: one-file bundles to ship, optionally in onnxruntime's mobile format."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def add_parsers(sub, export_sub) -> None:
    """Register `pack` and `unpack`."""
    p = sub.add_parser("pack", help="pack a bundle folder into one .tar (optionally with model.ort for mobile)")
    p.add_argument("bundle", help="bundle folder, 'default' or 'default-static'")
    p.add_argument("-o", "--out", required=True, help="archive to write (FILE.tar, uncompressed)")
    p.add_argument("--ort", action="store_true",
                   help="add model.ort (onnxruntime mobile format) and required_operators.config for a reduced "
                        "build; bundles with a model.onnx only; needs the export extra")
    p.add_argument("--ort-only", action="store_true",
                   help="like --ort, but leave model.onnx out: the smallest archive, run from model.ort alone")
    p.add_argument("--fp16-storage", action="store_true",
                   help="store the graph's float32 weights as float16 (computed in float32) when parity holds; "
                        "needs the export extra")
    p.add_argument("--force", action="store_true", help="replace an existing archive")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("unpack", help="verify and extract a bundle archive (.tar) into a folder")
    p.add_argument("archive", help="archive made by `edgeemb pack`")
    p.add_argument("-o", "--out", required=True, help="bundle folder to create")
    p.add_argument("--force", action="store_true", help="replace a non-empty folder")
    p.set_defaults(func=cmd_unpack)


def cmd_pack(args) -> int:
    from .archive import pack
    from .encoder import resolve_bundle

    folder, out = resolve_bundle(args.bundle), Path(args.out)
    if out.exists() and not args.force:
        from .errors import BundleError

        raise BundleError(f"{out} exists; pass --force to replace it")
    if not (args.ort or args.ort_only or args.fp16_storage):
        pack(folder, out, force=args.force, show_progress=True)
        return _done(out)
    try:
        from edgeemb_export.mobile import prepare_mobile
    except ImportError as exc:
        return _needs_export_extra(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        report = prepare_mobile(folder, Path(tmp) / "bundle", ort=args.ort or args.ort_only,
                                fp16_storage=args.fp16_storage, keep_onnx=not args.ort_only)
        pack(Path(tmp) / "bundle", out, force=args.force, show_progress=True)
    for line in report.lines():
        print(line)
    return _done(out)


def cmd_unpack(args) -> int:
    from .archive import unpack

    out = unpack(args.archive, args.out, force=args.force, show_progress=True)
    print(f"unpacked {args.archive} into {out} (every checksum verified)")
    return 0


def _done(out: Path) -> int:
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _needs_export_extra(exc: ImportError) -> int:
    try:
        from edgeemb_export.cli import needs_export_extra
    except ImportError:
        print(f"edgeemb pack: --ort and --fp16-storage need the export extra ({exc.name} is not installed)",
              file=sys.stderr)
        return 2
    return needs_export_extra(exc)
