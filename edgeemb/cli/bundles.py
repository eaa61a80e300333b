"""Bundle subcommands: info, encode, pack (optionally in onnxruntime's mobile format) and unpack."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .parsers import Subparsers

MOBILE_GROUP = "edgeemb.mobile"  # entry point `prepare`: (src, dst, ort=, fp16_storage=, keep_onnx=) -> report


class MobileReport(Protocol):
    """What the toolchain's mobile preparation returns: a summary printed line by line."""

    def lines(self) -> list[str]: ...


class MobilePreparer(Protocol):
    """The `edgeemb.mobile` entry point `prepare`, as `pack` calls it."""

    def __call__(self, src: Path, dst: Path, *, ort: bool, fp16_storage: bool,
                 keep_onnx: bool) -> MobileReport: ...


def add_parsers(sub: Subparsers, export_sub: Subparsers) -> None:
    """Register info, encode, pack and unpack."""
    p = sub.add_parser("info", help="show a bundle's manifest and verify its checksums")
    p.add_argument("bundle", nargs="?", default=None, help="bundle folder, .tar, 'default' or 'default-static'")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("encode", help="embed texts and print JSON vectors")
    p.add_argument("bundle", help="bundle folder, .tar, 'default' or 'default-static'")
    p.add_argument("texts", nargs="+", help="texts to embed; a lone '-' reads them from stdin, one per line")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: physical cores)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("pack", help="pack a bundle into one .tar (optionally with model.ort for mobile), or into an "
                                    "installable model wheel (--wheel)")
    p.add_argument("bundle", help="bundle folder, 'default' or 'default-static'")
    p.add_argument("-o", "--out", required=True,
                   help="archive to write (FILE.tar, uncompressed); with --wheel, the folder the wheel goes into")
    p.add_argument("--wheel", action="store_true",
                   help="write DIR/edgeemb_model_<name>-<version>-py3-none-any.whl: `pip install` it and "
                        "edgeemb.load(NAME) finds the bundle offline (a default's wheel also answers its alias)")
    p.add_argument("--version", default="0.1.0", help="the model wheel's version (with --wheel)")
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


def shown(text: str) -> str:
    """Text safe to print on a terminal: control characters (newlines, ESC codes) escaped, other text as is."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def cmd_info(args: argparse.Namespace) -> int:
    from ..bundle import open_bundle

    folder, manifest = open_bundle(args.bundle, verify=True)
    m = manifest.to_dict()
    size = sum(f["size"] for f in m["files"].values())
    print(f"bundle   {shown(str(folder))}")
    for key in ("name", "kind", "dim", "max_length", "pooling", "normalize", "quantization"):
        print(f"{key:<12} {shown(str(m[key]))}")
    print(f"{'files':<12} " + ", ".join(f"{shown(n)} ({f['size'] / 1e6:.1f} MB)" for n, f in m["files"].items())
          + f"; {size / 1e6:.1f} MB in all, checksums ok")
    if m.get("parity"):
        print(f"{'parity':<12} " + json.dumps(m["parity"], ensure_ascii=False))
    print(f"{'created_with':<12} " + json.dumps(m["created_with"]))
    return 0


def stdin_texts() -> list[str]:
    """Texts from stdin, one per line (line ends dropped; a blank line is an empty text, as in the output)."""
    from ..errors import InputError

    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"encode -: stdin is not UTF-8 text (bad byte at offset {exc.start})") from None
    texts = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")] if text else []
    if not texts:
        raise InputError("encode -: stdin held no lines (pipe one text per line, or pass texts as arguments)")
    return texts


def cmd_encode(args: argparse.Namespace) -> int:
    from ..encode.encoder import load

    texts = stdin_texts() if args.texts == ["-"] else args.texts
    enc = load(args.bundle, threads=args.threads)
    vecs = enc.encode(texts)
    json.dump({"bundle": enc.name, "dim": enc.dim, "vectors": [[round(float(x), 6) for x in v] for v in vecs]},
              sys.stdout)
    print()
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from ..bundle import resolve_bundle
    from ..bundle.archive import pack
    from ..errors import BundleError

    folder, out = resolve_bundle(args.bundle), Path(args.out)
    if args.wheel:
        return _pack_wheel(args, folder, out)
    if out.exists() and not args.force:
        raise BundleError(f"{out} exists; pass --force to replace it")
    if not (args.ort or args.ort_only or args.fp16_storage):
        pack(folder, out, force=args.force, show_progress=True)
        return _done(out)
    prepare = _mobile_preparer()
    if prepare is None:
        print("edgeemb pack: --ort, --ort-only and --fp16-storage need the export extra: "
              "pip install torch==2.13.0 && pip install 'edgeemb[export]'", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        report = prepare(folder, Path(tmp) / "bundle", ort=args.ort or args.ort_only,
                         fp16_storage=args.fp16_storage, keep_onnx=not args.ort_only)
        pack(Path(tmp) / "bundle", out, force=args.force, show_progress=True)
    for line in report.lines():
        print(line)
    return _done(out)


def cmd_unpack(args: argparse.Namespace) -> int:
    from ..bundle.archive import unpack

    out = unpack(args.archive, args.out, force=args.force, show_progress=True)
    print(f"unpacked {args.archive} into {out} (every checksum verified)")
    return 0


def _pack_wheel(args: argparse.Namespace, folder: Path, out_dir: Path) -> int:
    """`pack --wheel`: the verified bundle as a wheel, answering its manifest name and any default alias it is."""
    from ..bundle import read_manifest
    from ..bundle.wheel import write_wheel
    from ..errors import InputError
    from ..paths import DEFAULT_BUNDLES

    if args.ort or args.ort_only or args.fp16_storage:
        raise InputError("--wheel packs the bundle as it is; --ort, --ort-only and --fp16-storage make a .tar")
    name = read_manifest(folder).name
    aliases = tuple(alias for alias, target in DEFAULT_BUNDLES.items() if target == name)
    if out_dir.is_file():
        raise InputError(f"{out_dir} is a file; with --wheel, -o names the folder the wheel goes into")
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = write_wheel(folder, out_dir, version=args.version, aliases=aliases)
    print(f"wrote {wheel} ({wheel.stat().st_size / 1e6:.1f} MB); pip install it, then edgeemb.load({name!r})"
          + (f" or load({aliases[0]!r})" if aliases else ""))
    return 0


def _mobile_preparer() -> MobilePreparer | None:
    """The installed toolchain's mobile preparation (entry point), or None without the export extra."""
    for ep in entry_points(group=MOBILE_GROUP, name="prepare"):
        try:
            prepare: MobilePreparer = ep.load()
        except ImportError:
            return None
        return prepare
    return None


def _done(out: Path) -> int:
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
