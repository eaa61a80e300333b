"""ggml block codecs: Q4_0 / Q8_0 dequantisation, and Q4_0 carried bit-exactly into onnxruntime's 4-bit ops."""
from __future__ import annotations

import numpy as np
import pytest
from edgeemb_export.common.ggml_blocks import (
    Q4_0_BYTES,
    Q8_0_BYTES,
    BlockError,
    dequantize_nbits,
    dequantize_q4_0,
    dequantize_q8_0,
    q4_0_parts,
    q4_0_to_gather,
    q4_0_to_nbits,
)


def random_q4_0(rng, rows: int, cols: int) -> np.ndarray:
    """Random Q4_0 bytes: finite fp16 scales (some negative, some tiny) and random nibbles."""
    n = rows * cols // 32
    scales = (rng.standard_normal(n) * 0.02).astype(np.float16)
    scales[::7] = np.float16(6e-5)  # fp16 subnormal range
    blocks = np.zeros((n, Q4_0_BYTES), np.uint8)
    blocks[:, :2] = scales.view(np.uint8).reshape(n, 2)
    blocks[:, 2:] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    return blocks.reshape(-1)


def reference_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 decoded one block at a time, written from ggml's definition (scalar loop)."""
    out = np.zeros(rows * cols, np.float32)
    blocks = raw.reshape(-1, Q4_0_BYTES)
    for b, block in enumerate(blocks):
        d = np.float32(block[:2].view(np.float16)[0])
        for j in range(16):
            out[b * 32 + j] = np.float32((int(block[2 + j]) & 0x0F) - 8) * d
            out[b * 32 + j + 16] = np.float32((int(block[2 + j]) >> 4) - 8) * d
    return out.reshape(rows, cols)


def test_q4_0_nibble_order_matches_ggml():
    rng = np.random.default_rng(0)
    raw = random_q4_0(rng, 3, 64)
    np.testing.assert_array_equal(dequantize_q4_0(raw, (3, 64)), reference_q4_0(raw, 3, 64))
    # one hand-made block: byte 0 = 0x1F -> weight 0 nibble 0xF (7 * d), weight 16 nibble 0x1 (-7 * d)
    block = np.zeros(Q4_0_BYTES, np.uint8)
    block[:2] = np.array([0.5], np.float16).view(np.uint8)
    block[2] = 0x1F
    block[3:] = 0x88
    w = dequantize_q4_0(block, (32,))
    assert w[0] == 3.5 and w[16] == -3.5 and not w[1:16].any() and not w[17:].any()


def test_q8_0_dequantises():
    rng = np.random.default_rng(1)
    n = 4
    d = rng.standard_normal(n).astype(np.float16)
    q = rng.integers(-128, 128, (n, 32), dtype=np.int8)
    raw = np.concatenate([d.view(np.uint8).reshape(n, 2), q.view(np.uint8)], axis=1).reshape(-1)
    assert raw.size == n * Q8_0_BYTES
    want = q.astype(np.float32) * d.astype(np.float32)[:, None]
    np.testing.assert_array_equal(dequantize_q8_0(raw, (2, 64)), want.reshape(2, 64))


def test_sizes_are_checked():
    with pytest.raises(BlockError, match="needs 36 bytes"):
        dequantize_q4_0(np.zeros(35, np.uint8), (64,))
    with pytest.raises(BlockError, match="multiple of 32"):
        dequantize_q8_0(np.zeros(34, np.uint8), (2, 16))


def test_nbits_initialisers_are_the_q4_0_blocks_bit_for_bit():
    rng = np.random.default_rng(2)
    rows, cols = 48, 96
    raw = random_q4_0(rng, rows, cols)
    packed, scales = q4_0_to_nbits(raw, rows, cols)
    assert packed.shape == (rows, cols // 32, 16) and packed.dtype == np.uint8 and scales.dtype == np.float32
    src_scales, nibbles = q4_0_parts(raw, (rows, cols))
    # scales: the very fp16 values (fp32 holds every fp16 exactly)
    np.testing.assert_array_equal(scales.astype(np.float16).view(np.uint16), src_scales.view(np.uint16))
    # codes: low-first packing of the same nibbles, in weight order
    codes = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(rows, cols // 32, 32)
    np.testing.assert_array_equal(codes, nibbles)
    np.testing.assert_array_equal(dequantize_nbits(packed, scales), dequantize_q4_0(raw, (rows, cols)))
    data, gscales = q4_0_to_gather(raw, rows, cols)
    assert data.shape == (rows, cols // 2)
    np.testing.assert_array_equal(dequantize_nbits(data, gscales), dequantize_q4_0(raw, (rows, cols)))


def _session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("accuracy_level", [0, 4])
def test_onnxruntime_matmulnbits_equals_numpy_dequant(accuracy_level):
    """MatMulNBits with no zero_points on the carried blocks computes x @ dequant(W).T."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    n, k = 40, 128
    raw = random_q4_0(rng, n, k)
    packed, scales = q4_0_to_nbits(raw, n, k)
    node = helper.make_node("MatMulNBits", ["x", "B", "scales"], ["y"], domain="com.microsoft", K=k, N=n, bits=4,
                            block_size=32, accuracy_level=accuracy_level)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])],
                              [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(scales, "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    x = rng.standard_normal((5, k)).astype(np.float32)
    got = _session(model).run(None, {"x": x})[0]
    want = x.astype(np.float64) @ dequantize_q4_0(raw, (n, k)).astype(np.float64).T
    tol = 1e-4 if accuracy_level == 0 else 3e-2  # level 4 quantises x to int8 per block inside the kernel
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_onnxruntime_gather_block_quantized_equals_dequant_rows():
    """Exact with fp32 scales (fp16 scales would make the op output fp16, which rounds the products)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    rows, cols = 50, 64
    raw = random_q4_0(rng, rows, cols)
    data, scales = q4_0_to_gather(raw, rows, cols)
    node = helper.make_node("GatherBlockQuantized", ["data", "ids", "scales"], ["y"], domain="com.microsoft",
                            gather_axis=0, quantize_axis=1, block_size=32, bits=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", cols])],
                              [numpy_helper.from_array(data, "data"), numpy_helper.from_array(scales, "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    ids = np.array([0, 7, 49, 7, 13], np.int64)
    got = _session(model).run(None, {"ids": ids})[0]
    np.testing.assert_array_equal(got, dequantize_q4_0(raw, (rows, cols))[ids])
