"""int4 from Q4_0 blocks, carried bit-exactly: in an fp32 graph exported from the dequantised weights, each MatMul
whose constant weight came from a Q4_0 tensor becomes com.microsoft.MatMulNBits, and the token-embedding
Gather over a Q4_0 table becomes com.microsoft.GatherBlockQuantized, both holding the source's own nibbles and
scales (no zero_points input: onnxruntime's default 4-bit zero point is 8, Q4_0's offset). Biases, LayerNorms
and position tables stay fp32."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..common.errors import ExportError
from ..common.ggml_blocks import QK, q4_0_to_gather, q4_0_to_nbits

MS_DOMAIN = "com.microsoft"


def fingerprint(values: np.ndarray) -> bytes:
    """Identity of a float32 array's values and shape (to find a source tensor among a graph's initializers)."""
    a = np.ascontiguousarray(values, dtype=np.float32)
    return hashlib.sha1(repr(a.shape).encode() + a.tobytes()).digest()


@dataclass
class CarryReport:
    """What the rewrite replaced."""

    matmuls: list[str] = field(default_factory=list)  # source tensor names carried into MatMulNBits
    gathers: list[str] = field(default_factory=list)  # ... into GatherBlockQuantized
    float_matmuls: int = 0  # constant-weight MatMuls left fp32 (weights that were not Q4_0)

    def as_dict(self) -> dict:
        return {"matmul_nbits": len(self.matmuls), "gather_block_quantized": len(self.gathers),
                "float_matmuls": self.float_matmuls}


def carry_q4_0(src: Path, dst: Path, blocks: dict[str, np.ndarray], prints: dict[bytes, str],
               accuracy_level: int = 0) -> CarryReport:
    """Rewrite src.onnx into dst.onnx. blocks: source name -> raw Q4_0 bytes of a (rows, cols) weight (rows = out
    features for a Linear, vocabulary rows for an embedding table); prints: fingerprint(dequantised (rows, cols))
    -> source name. A MatMul's weight is (K, N), so its transpose is fingerprinted; a Gather table as it is.

    Scales are fp32 (every fp16 scale exactly): MatMulNBits needs the activations' type, and fp16 scales on the
    table would make GatherBlockQuantized output fp16, which rounds (nibble - 8) * scale (15 significant bits).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    report = CarryReport()
    nodes, added = [], []
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            weight = numpy_helper.to_array(inits[node.input[1]])
            name = prints.get(fingerprint(weight.T)) if weight.ndim == 2 else None
            if name is None:
                report.float_matmuls += 1
                nodes.append(node)
                continue
            k, n = weight.shape
            packed, scales = q4_0_to_nbits(blocks[name], n, k)
            b_name, s_name = f"{name}.q4", f"{name}.scales"
            added += [numpy_helper.from_array(packed, b_name), numpy_helper.from_array(scales, s_name)]
            nodes.append(helper.make_node("MatMulNBits", [node.input[0], b_name, s_name], list(node.output),
                                          name=f"{node.name or name}_nbits", domain=MS_DOMAIN, K=k, N=n, bits=4,
                                          block_size=QK, accuracy_level=accuracy_level))
            report.matmuls.append(name)
        elif node.op_type == "Gather" and node.input[0] in inits:
            table = numpy_helper.to_array(inits[node.input[0]])
            name = prints.get(fingerprint(table)) if table.ndim == 2 else None
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if name is None or axis != 0:
                nodes.append(node)
                continue
            rows, cols = table.shape
            data, scales = q4_0_to_gather(blocks[name], rows, cols)
            d_name, s_name = f"{name}.q4", f"{name}.scales"
            added += [numpy_helper.from_array(data, d_name), numpy_helper.from_array(scales, s_name)]
            nodes.append(helper.make_node("GatherBlockQuantized", [d_name, node.input[1], s_name],
                                          list(node.output), name=f"{node.name or name}_q4", domain=MS_DOMAIN,
                                          gather_axis=0, quantize_axis=1, block_size=QK, bits=4))
            report.gathers.append(name)
        else:
            nodes.append(node)
    missing = sorted(set(blocks) - set(report.matmuls) - set(report.gathers))
    if missing:
        raise ExportError(f"int4: Q4_0 tensor {missing[0]} was not found among the graph's weights "
                          f"({len(missing)} not found); the exported graph does not use it as a MatMul or Gather")
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(model, str(dst))
    return report
