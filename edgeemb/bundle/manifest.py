"""The bundle manifest (edgeemb.json, format_version 1): schema, validation, reading and writing."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..errors import BundleError

MANIFEST = "edgeemb.json"
FORMAT_VERSION = 1
KINDS = ("static", "sentence", "llm")
QUANTIZATIONS = ("none", "fp16", "int8", "int4")

# field -> (required, type). Unknown fields are rejected so a typo never passes silently.
SCHEMA: dict[str, tuple[bool, type | tuple[type, ...]]] = {
    "format_version": (True, int),
    "name": (True, str),
    "kind": (True, str),
    "dim": (True, int),
    "max_length": (True, int),
    "pooling": (True, str),
    "normalize": (True, bool),
    "quantization": (True, str),
    "files": (True, dict),
    "inputs": (True, list),
    "outputs": (True, dict),
    "created_with": (True, dict),
    "source": (False, dict),
    "prompts": (False, dict),
    "layers": (False, list),
    "parity": (False, dict),
    "tokenizer": (False, dict),
    "options": (False, dict),
}


@dataclass
class Manifest:
    """A parsed and validated edgeemb.json."""

    format_version: int
    name: str
    kind: str
    dim: int
    max_length: int
    pooling: str
    normalize: bool
    quantization: str
    files: dict[str, dict[str, Any]]
    inputs: list[str]
    outputs: dict[str, list]
    created_with: dict[str, str]
    source: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    layers: list[int] = field(default_factory=list)
    parity: dict[str, Any] = field(default_factory=dict)
    tokenizer: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in schema order, ready for JSON."""
        return {k: getattr(self, k) for k in SCHEMA}

    @property
    def bundle_id(self) -> str:
        """Identity of the bundle's weights: name plus the first model file's sha256 prefix."""
        model = next((f for f in ("model.onnx", "model.ort", "vectors.npy") if f in self.files), None)
        digest = self.files[model]["sha256"][:16] if model else "nofile"
        return f"{self.name}@{digest}"


def check_file_name(name: str, where: str) -> None:
    """A manifest file name must be a plain name inside the bundle: not absolute, no '..', no folders."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or os.path.isabs(name) or "\x00" in name:
        raise BundleError(f"{where}: file name {name!r} is not a plain file name inside the bundle")


def parse_manifest(data: Any, where: str = MANIFEST) -> Manifest:
    """Validate a manifest dict against the schema; errors name the field."""
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected a JSON object")
    version = data.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise BundleError(f"{where}: format_version {version} is newer than this edgeemb reads "
                          f"({FORMAT_VERSION}); upgrade edgeemb")
    unknown = sorted(set(data) - set(SCHEMA))
    if unknown:
        raise BundleError(f"{where}: unknown field {unknown[0]!r}")
    for key, (required, typ) in SCHEMA.items():
        if key not in data:
            if required:
                raise BundleError(f"{where}: missing field {key!r}")
            continue
        value = data[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise BundleError(f"{where}: field {key!r} has type {type(value).__name__}, "
                              f"expected {getattr(typ, '__name__', typ)}")
    if version != FORMAT_VERSION:
        raise BundleError(f"{where}: format_version {version} is not supported (expected {FORMAT_VERSION})")
    if data["kind"] not in KINDS:
        raise BundleError(f"{where}: field 'kind' is {data['kind']!r}, expected one of {', '.join(KINDS)}")
    if data["quantization"] not in QUANTIZATIONS:
        raise BundleError(f"{where}: field 'quantization' is {data['quantization']!r}, "
                          f"expected one of {', '.join(QUANTIZATIONS)}")
    if data["dim"] <= 0 or data["max_length"] <= 0:
        raise BundleError(f"{where}: fields 'dim' and 'max_length' must be positive")
    for name, info in data["files"].items():
        check_file_name(name, where)
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) \
                or not isinstance(info.get("size"), int):
            raise BundleError(f"{where}: files[{name!r}] needs 'sha256' (str) and 'size' (int)")
    return Manifest(**data)


def read_manifest(folder: str | os.PathLike) -> Manifest:
    """Read and validate <folder>/edgeemb.json without touching the other files."""
    folder = Path(folder)
    if not folder.exists():
        raise BundleError(f"bundle not found: {folder}")
    if not folder.is_dir():
        raise BundleError(f"bundle {folder} is not a folder")
    path = folder / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{path}: missing manifest (is {folder} an edgeemb bundle?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: unreadable ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_manifest(data, str(path))


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> Path:
    """Validate and write edgeemb.json atomically (temp file, fsync, rename)."""
    parse_manifest(manifest.to_dict(), "manifest being written")
    path = Path(folder) / MANIFEST
    atomic_write_bytes(path, (json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n").encode())
    return path
