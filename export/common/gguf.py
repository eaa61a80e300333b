"""A minimal GGUF v2/v3 reader: metadata and F32/F16/BF16/Q8_0/Q4_0 tensors (read by BERT and LLM sources)."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import ExportError
from .ggml_blocks import BlockError, block_bytes, dequantize_q4_0, dequantize_q8_0

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types -> struct format (8 string and 9 array are read specially)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
            12: "<d"}
_ARRAY_DTYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8",
                 11: "<i8", 12: "<f8"}

# ggml tensor types: the ones read here, and names for the rest so an error can say which one it met
READABLE = {0: ("F32", "<f4"), 1: ("F16", "<f2"), 30: ("BF16", "<u2")}
BLOCK_TYPES = {8: "Q8_0", 2: "Q4_0"}  # block-quantised types read through ggml_blocks (dequantised exactly)
SUPPORTED_TYPES = ", ".join([n for n, _ in READABLE.values()] + list(BLOCK_TYPES.values()))
GGML_TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
    11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
    19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
    27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}


@dataclass
class TensorInfo:
    """One tensor's entry in the GGUF header; shape in numpy (row-major) order."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the tensor data section

    @property
    def type_name(self) -> str:
        return GGML_TYPE_NAMES.get(self.ggml_type, f"type {self.ggml_type}")


@dataclass
class GGUFFile:
    """A parsed GGUF header: version, metadata and tensor table; tensors are read on demand."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]
    data_offset: int

    def info(self, name: str) -> TensorInfo:
        """A tensor's header entry, or ExportError naming the file and the tensor."""
        info = self.tensors.get(name)
        if info is None:
            raise ExportError(f"{self.path}: tensor {name!r} is missing")
        return info

    def raw(self, name: str) -> np.ndarray:
        """A block-quantised tensor's bytes (uint8), for carrying Q4_0 blocks without dequantising them."""
        info = self.info(name)
        kind = BLOCK_TYPES.get(info.ggml_type)
        if kind is None:
            raise ExportError(f"{self.path}: tensor {name!r} has GGUF type {info.type_name}, not a block type "
                              f"({', '.join(BLOCK_TYPES.values())})")
        try:
            count = block_bytes(kind, info.shape)
        except BlockError as exc:
            raise ExportError(f"{self.path}: tensor {name!r} ({kind}): {exc}") from None
        raw = np.fromfile(self.path, dtype=np.uint8, count=count, offset=self.data_offset + info.offset)
        if raw.size != count:
            raise ExportError(f"{self.path}: tensor {name!r} is truncated ({raw.size} of {count} bytes)")
        return raw

    def tensor(self, name: str) -> np.ndarray:
        """A tensor as a float32 array; unhandled quantised types raise ExportError naming the type."""
        info = self.info(name)
        if info.ggml_type in BLOCK_TYPES:
            decode = dequantize_q8_0 if BLOCK_TYPES[info.ggml_type] == "Q8_0" else dequantize_q4_0
            return decode(self.raw(name), info.shape)
        if info.ggml_type not in READABLE:
            raise ExportError(f"{self.path}: tensor {name!r} has GGUF type {info.type_name}, which edgeemb "
                              f"does not read (handled: {SUPPORTED_TYPES}); requantise the model to one of them")
        type_name, dtype = READABLE[info.ggml_type]
        count = int(np.prod(info.shape))
        raw = np.fromfile(self.path, dtype=dtype, count=count, offset=self.data_offset + info.offset)
        if raw.size != count:
            raise ExportError(f"{self.path}: tensor {name!r} is truncated ({raw.size} of {count} values)")
        if type_name == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32).reshape(info.shape)

    def arch_meta(self, key: str, default: Any = None, arch: str | None = None) -> Any:
        """Metadata `<arch>.<key>` (arch: the file's general.architecture, llama when unset), else ExportError."""
        arch = arch or self.metadata.get("general.architecture", "llama")
        value = self.metadata.get(f"{arch}.{key}", default)
        if value is None:
            raise ExportError(f"{self.path}: metadata {arch}.{key} is missing")
        return value


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise EOFError
    return struct.unpack(fmt, data)[0]


def _read_str(f: BinaryIO) -> str:
    n = _read(f, "<Q")
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data.decode("utf-8", errors="replace")


def _read_value(f: BinaryIO, vtype: int) -> Any:
    if vtype == 6:  # float32: its shortest decimal (1e-05, not 9.9999997e-06), as the writer meant it
        return float(str(np.float32(_read(f, "<f"))))
    if vtype in _SCALARS:
        return _read(f, _SCALARS[vtype])
    if vtype == 8:
        return _read_str(f)
    if vtype == 9:
        item_type, count = _read(f, "<I"), _read(f, "<Q")
        if item_type in _ARRAY_DTYPES:
            dtype = np.dtype(_ARRAY_DTYPES[item_type])
            data = f.read(dtype.itemsize * count)
            if len(data) != dtype.itemsize * count:
                raise EOFError
            return np.frombuffer(data, dtype=dtype).tolist()
        return [_read_value(f, item_type) for _ in range(count)]
    raise ValueError(f"unknown metadata value type {vtype}")


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF file's header (versions 2 and 3, little-endian)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(4) != MAGIC:
                raise ExportError(f"{path}: not a GGUF file (magic bytes are not 'GGUF')")
            version = _read(f, "<I")
            if version not in (2, 3):
                raise ExportError(f"{path}: GGUF version {version} is not supported (2 or 3)")
            n_tensors, n_kv = _read(f, "<Q"), _read(f, "<Q")
            metadata = {}
            for _ in range(n_kv):
                key = _read_str(f)
                metadata[key] = _read_value(f, _read(f, "<I"))
            tensors = {}
            for _ in range(n_tensors):
                name = _read_str(f)
                dims = [_read(f, "<Q") for _ in range(_read(f, "<I"))]
                ggml_type, offset = _read(f, "<I"), _read(f, "<Q")
                tensors[name] = TensorInfo(name, tuple(reversed(dims)), ggml_type, offset)
            align = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
            data_offset = (f.tell() + align - 1) // align * align
    except OSError as exc:
        raise ExportError(f"{path}: unreadable ({exc.strerror})") from None
    except (EOFError, ValueError, struct.error) as exc:
        why = exc or "unexpected end of file"
        raise ExportError(f"{path}: corrupt or truncated GGUF header ({why})") from None
    return GGUFFile(path, version, metadata, tensors, data_offset)
