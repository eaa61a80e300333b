"""ggml quantised blocks in numpy: Q4_0 / Q8_0 dequantisation, and Q4_0 carried bit-exactly into onnxruntime's
4-bit layouts (com.microsoft MatMulNBits and GatherBlockQuantized), so a 4-bit source is never rounded twice.

Q4_0 block (18 bytes, 32 weights): fp16 scale d, then 16 bytes; byte j holds weight j in its low nibble and
weight j+16 in its high nibble; value = (nibble - 8) * d. Q8_0 block (34 bytes): fp16 scale d, 32 int8 q;
value = q * d. onnxruntime packs 4-bit codes low-first along K (byte i = code 2i | code 2i+1 << 4) and, with
no zero_points input, uses 8 as every block's zero point (MatMulNBits, and GatherBlockQuantized on uint8 data),
so Q4_0's nibbles and fp16 scales map onto it exactly: only the nibble order within a block changes.
"""
from __future__ import annotations

import numpy as np

QK = 32  # weights per block (Q4_0, Q8_0)
Q4_0_BYTES = 2 + QK // 2
Q8_0_BYTES = 2 + QK
ZERO_POINT = 8  # Q4_0's offset, and onnxruntime's default 4-bit zero point

_Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
_Q8_0 = np.dtype([("d", "<f2"), ("qs", "i1", (QK,))])


class BlockError(ValueError):
    """Raw bytes that cannot be the blocks of the shape asked for (callers name the file and tensor)."""


def block_bytes(kind: str, shape: tuple[int, ...]) -> int:
    """Bytes a Q4_0 / Q8_0 tensor of `shape` (row-major, blocks along the last axis) occupies."""
    if not shape or shape[-1] % QK:
        raise BlockError(f"last dimension of {tuple(shape)} is not a multiple of {QK}")
    per = {"Q4_0": Q4_0_BYTES, "Q8_0": Q8_0_BYTES}[kind]
    return int(np.prod(shape)) // QK * per


def _blocks(raw, dtype: np.dtype, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """View raw bytes as (rows..., blocks) structured blocks, checking the size."""
    buf = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.reshape(-1).view(np.uint8)
    need = block_bytes(kind, shape)
    if buf.size != need:
        raise BlockError(f"{kind} tensor of shape {tuple(shape)} needs {need} bytes, got {buf.size}")
    return buf.view(dtype).reshape(*shape[:-1], shape[-1] // QK)


def q4_0_parts(raw, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 bytes -> (fp16 scales (..., n_blocks), unsigned nibbles uint8 (..., n_blocks, 32) in weight order)."""
    blocks = _blocks(raw, _Q4_0, shape, "Q4_0")
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # weights 0..15 low, 16..31 high
    return blocks["d"].copy(), nibbles


def dequantize_q4_0(raw, shape: tuple[int, ...]) -> np.ndarray:
    """Q4_0 bytes -> float32 array of `shape`: (nibble - 8) * scale, computed exactly in float32."""
    scales, nibbles = q4_0_parts(raw, shape)
    values = (nibbles.astype(np.int8) - ZERO_POINT).astype(np.float32) * scales.astype(np.float32)[..., None]
    return values.reshape(shape)


def dequantize_q8_0(raw, shape: tuple[int, ...]) -> np.ndarray:
    """Q8_0 bytes -> float32 array of `shape`: q * scale."""
    blocks = _blocks(raw, _Q8_0, shape, "Q8_0")
    values = blocks["qs"].astype(np.float32) * blocks["d"].astype(np.float32)[..., None]
    return values.reshape(shape)


def pack_low_first(nibbles: np.ndarray) -> np.ndarray:
    """(..., 32) nibble codes -> (..., 16) bytes, code 2i in the low and 2i+1 in the high half (onnxruntime)."""
    return (nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)).astype(np.uint8)


def q4_0_to_nbits(raw, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 weight (rows, cols), blocks along cols -> MatMulNBits B uint8 (rows, cols/32, 16), scales float32
    (rows, cols/32). For a Linear weight (out, in) that is MatMulNBits' (N, K) with no zero_points input."""
    scales, nibbles = q4_0_parts(raw, (rows, cols))
    return pack_low_first(nibbles), scales.astype(np.float32)


def q4_0_to_gather(raw, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 table (rows, cols) -> GatherBlockQuantized uint8 data (rows, cols/2), scales float32 (rows, cols/32)
    (gather_axis 0, quantize_axis 1, block_size 32, bits 4, no zero_points: 8)."""
    packed, scales = q4_0_to_nbits(raw, rows, cols)
    return packed.reshape(rows, cols // 2), scales


def dequantize_nbits(packed: np.ndarray, scales: np.ndarray, zero_point: int = ZERO_POINT) -> np.ndarray:
    """Inverse view, for checks: onnxruntime 4-bit packed codes (rows, blocks, 16) or (rows, cols/2) and scales
    (rows, blocks) -> float32 (rows, cols) = (code - zero_point) * scale."""
    rows = packed.shape[0]
    codes = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(rows, -1, QK)
    values = (codes.astype(np.int8) - zero_point).astype(np.float32) * scales.astype(np.float32)[..., None]
    return values.reshape(rows, -1)
