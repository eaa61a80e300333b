"""The bundle manifest (edgeemb.json, format_version 1): schema, validation, reading and writing."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..errors import BundleError
from ..jsondepth import json_depth

MANIFEST = "edgeemb.json"
FORMAT_VERSION = 1
KINDS = ("static", "sentence", "llm")
QUANTIZATIONS = ("none", "fp16", "int8", "int4")
POOLINGS = {"static": ("sif", "mean"), "sentence": ("mean", "cls", "max", "last"), "llm": ("mean", "last")}
PADDING_SIDES = ("right", "left")
MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is a few KB; a larger one is refused before it is parsed
MAX_DEPTH = 16  # nesting of JSON objects/arrays; a real manifest nests 4 deep
MAX_DIM = 1 << 16
MAX_LENGTH = 1 << 20
# Fields that name files inside the bundle (docs/bundle-format.md): every one must also be listed in `files`.
FILE_FIELDS = (("tokenizer", "file"),)

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
    outputs: dict[str, list[Any]]
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
    if not 0 < data["dim"] <= MAX_DIM:
        raise BundleError(f"{where}: field 'dim' is {data['dim']}, expected 1..{MAX_DIM}")
    if not 0 < data["max_length"] <= MAX_LENGTH:
        raise BundleError(f"{where}: field 'max_length' is {data['max_length']}, expected 1..{MAX_LENGTH}")
    poolings = POOLINGS[data["kind"]]
    if data["pooling"] not in poolings:
        raise BundleError(f"{where}: field 'pooling' is {data['pooling']!r}, expected one of {', '.join(poolings)} "
                          f"for a {data['kind']} bundle")
    for name, info in data["files"].items():
        check_file_name(name, where)
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) \
                or not isinstance(info.get("size"), int) or isinstance(info.get("size"), bool) or info["size"] < 0:
            raise BundleError(f"{where}: files[{name!r}] needs 'sha256' (str) and 'size' (int >= 0)")
    _check_tokenizer(data, where)
    _check_str_map(data.get("prompts", {}), "prompts", where)
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in data.get("layers", [])):
        raise BundleError(f"{where}: field 'layers' must be a list of ints")
    if not all(isinstance(x, str) for x in data["inputs"]):
        raise BundleError(f"{where}: field 'inputs' must be a list of str")
    return Manifest(**data)


def _check_tokenizer(data: dict[str, Any], where: str) -> None:
    """The tokenizer block: its file is a plain name listed (so hashed) in `files`; ids are ints; sides known."""
    tok = data.get("tokenizer", {})
    name = tok.get("file", "tokenizer.json")
    check_file_name(name, f"{where}: field 'tokenizer.file'")
    if name not in data["files"]:
        raise BundleError(f"{where}: field 'tokenizer.file' names {name!r}, which 'files' does not list "
                          f"(every file the runtime opens must be listed and hashed)")
    for key in ("pad_id", "eos_id", "unk_id"):
        value = tok.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise BundleError(f"{where}: field 'tokenizer.{key}' is {value!r}, expected an int >= 0")
    side = tok.get("padding_side", "right")
    if side not in PADDING_SIDES:
        raise BundleError(f"{where}: field 'tokenizer.padding_side' is {side!r}, expected one of "
                          f"{', '.join(PADDING_SIDES)}")


def _check_str_map(value: dict[str, Any], field_name: str, where: str) -> None:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BundleError(f"{where}: field {field_name!r} must map str to str")


def loads_manifest(raw: bytes, where: str) -> Any:
    """Parse manifest bytes with the caps a hostile file needs: size, nesting depth, UTF-8."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where}: {len(raw)} bytes is too large for a manifest (limit {MAX_MANIFEST_BYTES})")
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError as exc:
        raise BundleError(f"{where}: not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise BundleError(f"{where}: JSON nested too deep (limit {MAX_DEPTH})") from None
    if json_depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise BundleError(f"{where}: JSON nested too deep (limit {MAX_DEPTH})")
    return data


def read_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """Read and validate <folder>/edgeemb.json without touching the other files."""
    folder = Path(folder)
    if not folder.exists():
        raise BundleError(f"bundle not found: {folder}")
    if not folder.is_dir():
        raise BundleError(f"bundle {folder} is not a folder")
    path = folder / MANIFEST
    try:
        if path.is_symlink():
            raise BundleError(f"{path}: is a symbolic link; a bundle holds only regular files")
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(f"{path}: missing manifest (is {folder} an edgeemb bundle?)") from None
    except OSError as exc:
        raise BundleError(f"{path}: unreadable ({exc.strerror or exc})") from None
    return parse_manifest(loads_manifest(raw, str(path)), str(path))


def write_manifest(folder: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Validate and write edgeemb.json atomically (temp file, fsync, rename)."""
    parse_manifest(manifest.to_dict(), "manifest being written")
    path = Path(folder) / MANIFEST
    atomic_write_bytes(path, (json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n").encode())
    return path
