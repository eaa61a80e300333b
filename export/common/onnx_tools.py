"""Graph optimisation and quantisation shared by every exporter."""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import ExportError

QUANTIZE_CHOICES = ("none", "int8", "fp16")


def optimize_transformer(src: Path, dst: Path, num_heads: int, hidden_size: int, model_type: str = "bert") -> None:
    """Fuse attention, LayerNorm and GELU with onnxruntime's transformer optimiser (portable, opt_level 0)."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(src), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                           opt_level=0)
    model.save_model_to_file(str(dst))


def quantize(src: Path, dst: Path, how: str, signed: bool = False) -> None:
    """none: copy; int8: per-channel int8 weights, activations int8 per row at run time; fp16: weights and
    activations in float16.

    signed (int8): QInt8 weights for MatMul and the embedding Gather, on an unfused graph; see quantize_int8.
    """
    import onnx

    if how == "none":
        dst.write_bytes(src.read_bytes())
    elif how == "int8" and signed:
        quantize_int8(src, dst)
    elif how == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Per channel: per tensor loses far more (0.957 mean cosine vs torch on MiniLM, PITFALLS.md).
        # Unsigned weights: the recipe the LLM exporter keeps (its parity bounds were set on it).
        # DefaultTensorType: the optimiser's fused nodes carry no type info the quantiser can find.
        # A fused Attention stays float: QAttention quantises its input per batch tensor, inside the kernel.
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QUInt8,
                         op_types_to_quantize=["MatMul", "Gather", "EmbedLayerNormalization"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        rewrite_per_row(dst)
    elif how == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
    else:
        raise ExportError(f"unknown quantization {how!r}; expected one of {', '.join(QUANTIZE_CHOICES)}")


INT8_RECIPE = "qint8-per-channel-matmul-gather/first-ffn-out-float/per-row-activations/fused"  # in int8 manifests'
# options: `edgeemb setup` rebuilds a cached default bundle made with another recipe (export/recipes.py).
# per-row-activations: one activation scale per token row instead of per batch tensor, so a text's vector is the
# same alone and in any batch (docs/results/invariance.md); the recipe before it was batch-dependent.


def rewrite_per_row(path: Path) -> int:
    """Rewrite a dynamically quantised graph file in place to per-row activation scales (per_row_activations)."""
    import onnx

    model = onnx.load(str(path))
    count = per_row_activations(model)
    save_model_proto(model, path)
    return count


def first_ffn_output(model) -> str | None:
    """Name of the first MatMul whose constant weight narrows its input (d_ff -> d_model): the first layer's
    feed-forward output projection, whose input (after GELU) has the outliers that int8 handles worst."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2:
            dims = shapes.get(node.input[1])
            if dims is not None and len(dims) == 2 and dims[0] > dims[1]:
                return node.name
    return None


def quantize_int8(src: Path, dst: Path, per_row: bool = True) -> list[str]:
    """Dynamic int8 for encoder graphs: signed per-channel weights on every MatMul with a constant weight, the
    token embedding table (Gather) int8 too, except the first feed-forward output projection, kept float;
    attention scores and LayerNorms stay float; activations quantised with one scale per row (per_row, the
    default since INT8_RECIPE per-row-activations) or per batch tensor (the old, batch-dependent recipe).
    Returns the nodes kept float.

    Measured on all-minilm-l6-v2 (AVX-512 VNNI, one thread, 3,000 en_corpus sentences): ~340 sentences/s and
    p50 3.0 ms per query, vs ~180 sentences/s and 4.6 ms for unsigned weights on the offline-fused graph (whose
    QAttention kernel is the slow part). Parity vs torch on the parity set, batches of 32 as exported: cosine
    mean 0.9923 / min 0.983 at 24.7 MB; quantising that one projection too gave 0.9895 / 0.974 (23.0 MB), the
    old unsigned fused recipe 0.9900 / 0.978 (22.8 MB). Signed weights (U8S8) can saturate on x86 CPUs with
    AVX2 but no VNNI; reduce_range avoids that but cost 0.002 mean cosine here, so it is not used.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = [name for name in [first_ffn_output(onnx.load(str(src), load_external_data=False))] if name]
    quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gather"], nodes_to_exclude=keep,
                     extra_options={"MatMulConstBOnly": True})
    if per_row:
        rewrite_per_row(dst)
    return keep


def per_row_activations(model) -> int:
    """Rewrite every DynamicQuantizeLinear (one uint8 scale and zero point for the whole batch tensor) into
    symmetric int8 quantisation with one scale per row (per token), stored as uint8 around a fixed zero point
    128, in place; returns how many were rewritten.

    A row's quantised values then depend on that row alone, and MatMulInteger sums integers exactly, so a
    text's vector no longer depends on the rest of its batch or its padding (docs/results/invariance.md).
    Each row scale is max|row| / 127; the row is quantised by one blocked QuantizeLinear (opset 21, one block
    per row) where the graph converts to opset 21, else by Div -> Round -> Add 128 -> Cast (same values: both
    round half to even). Each MatMulInteger -> Cast -> Mul(scales) chain quantize_dynamic wrote becomes one
    MatMulIntegerToFloat with a_scale 1 (its a_scale must be a scalar: a per-row scale there gave wrong
    results), and the row scale multiplies its output before the bias is added. The fused form runs the same
    arithmetic in fewer passes: ~9% more batch throughput on MiniLM, vectors bit-identical.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    if not any(n.op_type == "DynamicQuantizeLinear" for n in model.graph.node):
        return 0
    blocked = _to_opset(model, 21)
    graph = model.graph
    consumers: dict[str, list] = {}
    producer: dict[str, object] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producer[name] = node
    inits = {t.name: t for t in graph.initializer}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    consts = {"rowq_eps": np.array(1e-30, np.float32), "rowq_inv127": np.array(1 / 127, np.float32),
              "rowq_offset": np.array(128, np.float32), "rowq_zero_point": np.array(128, np.uint8),
              "rowq_zp_row": np.array([128], np.uint8), "rowq_one": np.array(1.0, np.float32)}
    fused: dict[str, object] = {}  # name of a chain's first node -> the MatMulIntegerToFloat replacing the chain
    dropped: set[str] = set()
    row_scale_after: dict[str, str] = {}  # output of a fused product -> the row scale that must multiply it
    nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        count += 1
        (x,), (q, scale, zero_point) = node.input, node.output
        p = f"{node.name or x}_rowq"
        widths = set()
        for mmi in consumers.get(q, []):
            chain = [c for c in consumers.get(mmi.output[0], []) if c.op_type == "Cast"]
            muls = [m for c in chain for m in consumers.get(c.output[0], []) if m.op_type == "Mul"]
            if mmi.op_type != "MatMulInteger" or len(chain) != 1 or len(muls) != 1:
                raise ExportError(f"per-row activations: {node.name} feeds {mmi.op_type} {mmi.name}, not the "
                                  f"MatMulInteger -> Cast -> Mul chain quantize_dynamic writes")
            mul = muls[0]
            scales = producer.get(next(i for i in mul.input if i != chain[0].output[0]))
            b_scale = [i for i in getattr(scales, "input", []) if i in inits]
            if getattr(scales, "op_type", None) != "Mul" or len(b_scale) != 1 or mmi.input[1] not in inits:
                raise ExportError(f"per-row activations: {mmi.name}'s scale is not a_scale x a constant b_scale")
            widths.add(int(inits[mmi.input[1]].dims[0]))
            out = mul.output[0] + "_per_tensor"
            row_scale_after[out] = p + "_scale"
            fused[mmi.name] = helper.make_node(
                "MatMulIntegerToFloat", [mmi.input[0], mmi.input[1], "rowq_one", b_scale[0], zero_point,
                                         *(mmi.input[3:4] or [])], [out], name=mmi.name + "_rowq",
                domain="com.microsoft")
            fused[mul.name + "_rowscale"] = helper.make_node("Mul", [out, p + "_scale"], [mul.output[0]],
                                                             name=mul.name + "_rowscale")
            dropped |= {chain[0].name, mul.name, scales.name}
        nodes += [helper.make_node("Abs", [x], [p + "_abs"], name=p + "_abs"),
                  helper.make_node("ReduceMax", [p + "_abs"] + (["rowq_axis"] if opset >= 18 else []), [p + "_max"],
                                   name=p + "_max", keepdims=1, **({} if opset >= 18 else {"axes": [-1]})),
                  helper.make_node("Max", [p + "_max", "rowq_eps"], [p + "_maxe"], name=p + "_maxe"),
                  helper.make_node("Mul", [p + "_maxe", "rowq_inv127"], [p + "_scale"], name=p + "_scale")]
        if blocked:  # one pass: each row is one block with its own scale and the fixed zero point 128
            nodes += [helper.make_node("Shape", [p + "_scale"], [p + "_shape"], name=p + "_shape"),
                      helper.make_node("Expand", ["rowq_zp_row", p + "_shape"], [p + "_zp_rows"], name=p + "_zp_rows"),
                      helper.make_node("QuantizeLinear", [x, p + "_scale", p + "_zp_rows"], [q], name=p + "_q",
                                       axis=-1, block_size=max(widths))]
        else:
            nodes += [helper.make_node("Div", [x, p + "_scale"], [p + "_div"], name=p + "_div"),
                      helper.make_node("Round", [p + "_div"], [p + "_round"], name=p + "_round"),
                      helper.make_node("Add", [p + "_round", "rowq_offset"], [p + "_shift"], name=p + "_shift"),
                      helper.make_node("Cast", [p + "_shift"], [q], name=p + "_cast", to=TensorProto.UINT8)]
        nodes.append(helper.make_node("Identity", ["rowq_zero_point"], [zero_point], name=p + "_zp"))
    out_nodes = []
    for node in nodes:
        if node.name in dropped:
            if node.op_type == "Mul" and node.name + "_rowscale" in fused:
                out_nodes += [fused[node.name + "_rowscale"]]
            continue
        out_nodes.append(fused.get(node.name, node) if node.op_type == "MatMulInteger" else node)
    del graph.node[:]
    graph.node.extend(out_nodes)
    if opset >= 18:
        consts["rowq_axis"] = np.array([-1], np.int64)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    _drop_unused_initializers(model)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return count


def _to_opset(model, version: int) -> bool:
    """Convert the graph's default domain to `version` in place if it is older; False if it cannot be."""
    from onnx import version_converter

    current = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if current >= version:
        return True
    try:
        converted = version_converter.convert_version(model, version)
    except Exception:  # noqa: BLE001 - the converter raises plain RuntimeErrors for ops it cannot move
        return False
    model.CopyFrom(converted)
    return True


def _drop_unused_initializers(model) -> None:
    """Remove initializers no node (or graph output) reads."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


PROTOBUF_LIMIT = 2_000_000_000  # bytes; larger graphs keep their weights in <name>.data beside them


def save_model_proto(model, dst: Path, external: bool | None = None) -> None:
    """onnx.save, with all weights in one external file (<dst>.data) when asked or past 2 GB."""
    import onnx

    size = sum(t.ByteSize() for t in model.graph.initializer)
    if not external and size < PROTOBUF_LIMIT:
        onnx.save(model, str(dst))
    else:
        onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=dst.name + ".data", size_threshold=1024)
        dst.with_name(dst.name + ".data").chmod(0o644)  # onnx makes it private; bundles are shared


def save_onnx(src: Path, dst: Path) -> None:
    """Re-save an ONNX file (loading any external data) as dst, itself external past 2 GB."""
    import onnx

    save_model_proto(onnx.load(str(src)), dst)


def token_table_gather(model, share: float = 0.1) -> str | None:
    """Name of the Gather reading the largest constant table when that table is >= `share` of all weights.

    That is the token-embedding table, which dominates the size of large-vocabulary models; small tables
    (positions, relative-position buckets) stay float.
    """
    import numpy as np

    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    gathers = [(sizes[n.input[0]], n.name) for n in model.graph.node
               if n.op_type == "Gather" and n.input[0] in sizes and n.name]
    if not gathers:
        return None
    size, name = max(gathers)
    return name if size >= share * sum(sizes.values()) else None


def quantize_int4(src: Path, dst: Path, block_size: int = 32, accuracy_level: int | None = None,
                  embeddings: bool = True) -> None:
    """Weight-only int4, asymmetric, block-wise: MatMul -> MatMulNBits, token table -> GatherBlockQuantized."""
    quantize_nbits(src, dst, 4, block_size, accuracy_level, embeddings)


def quantize_nbits(src: Path, dst: Path, bits: int = 4, block_size: int = 32, accuracy_level: int | None = None,
                   embeddings: bool = True, exclude: tuple[str, ...] = ()) -> None:
    """Weight-only int4/int8, asymmetric, block-wise: MatMul -> MatMulNBits, token table -> GatherBlockQuantized.

    accuracy_level 4 runs MatMulNBits on int8 activations quantised per block of each row inside the kernel,
    so a row's result never depends on the other rows of its batch (docs/results/invariance.md).
    The quantiser raises the default opset to 21 when it touches a Gather (for int4 DequantizeLinear, which
    the QOperator format never emits); every new node is a com.microsoft contrib op, so the graph's own opset
    is put back, else opset-17 nodes (ReduceMean with an axes attribute) turn invalid. int4 needs IR 10.
    """
    import logging

    import onnx

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    for handler in [h for h in root.handlers if h not in handlers]:  # its import runs logging.basicConfig
        root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    model = onnx.load(str(src))
    opsets = {o.domain: o.version for o in model.opset_import}
    table = token_table_gather(model) if embeddings else None
    others = [n.name for n in model.graph.node if n.op_type == "Gather" and n.name != table] + list(exclude)
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=False,
                                     accuracy_level=accuracy_level, nodes_to_exclude=others,
                                     op_types_to_quantize=("MatMul", "Gather") if table else ("MatMul",),
                                     quant_axes=(("MatMul", 0), ("Gather", 1)))
    quantizer.process()
    out = quantizer.model.model
    for opset in out.opset_import:
        if opset.domain in opsets:
            opset.version = opsets[opset.domain]
    out.ir_version = max(out.ir_version, 10)
    save_model_proto(out, dst)


def graph_io(path: Path) -> tuple[list[str], dict[str, list]]:
    """Input names and output shapes (symbolic dims as names) of an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inputs = [i.name for i in model.graph.input]

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return inputs, {o.name: dims(o) for o in model.graph.output}


def step(i: int, n: int, msg: str) -> None:
    """Print one export step to stderr, so long exports show where they are."""
    print(f"[{i}/{n}] {msg}", file=sys.stderr, flush=True)
