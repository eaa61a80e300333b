"""Assemble a bundle folder atomically: write into a temporary sibling, then rename into place."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import edgeemb
from edgeemb.bundle import FORMAT_VERSION, Manifest, file_entry, write_manifest


@contextmanager
def staging(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `out`; on success it replaces `out` (the old one is kept until then)."""
    out = Path(out)
    if out.exists() and not force and any(out.iterdir()):
        from .errors import ExportError

        raise ExportError(f"{out} exists and is not empty; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def created_with() -> dict[str, str]:
    """Versions that made a bundle."""
    versions = {"edgeemb": edgeemb.__version__}
    for dist in ("onnx", "onnxruntime"):  # by metadata, not import: static exports need no onnx installed
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


def finish_manifest(folder: Path, files: list[str], **fields) -> Manifest:
    """Checksum the listed files and write a validated manifest."""
    manifest = Manifest(format_version=FORMAT_VERSION, files={f: file_entry(folder / f) for f in files},
                        created_with=created_with(), **fields)
    write_manifest(folder, manifest)
    return manifest
