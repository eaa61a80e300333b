"""What an LLM export is asked for (pooling, layer, quantisation, prompts), checked; light, so the CLI reads it."""
from __future__ import annotations

from dataclasses import dataclass

from ..common.errors import ExportError

POOLINGS = ("last", "mean")
QUANTIZATIONS = ("none", "int8", "int4")


@dataclass
class LLMOptions:
    """What to export: pooling, which hidden layer(s), quantisation and the usage rules the bundle carries."""

    pooling: str = "last"
    layer: int | str = -1  # hidden-state index (0 = embeddings, -1 = last) or "all"
    quantization: str = "int8"
    query_prompt: str = ""
    document_prompt: str = ""
    append_eos: bool = False
    normalize: bool = True
    max_length: int | None = None
    accuracy_level: int | None = None  # int4 MatMulNBits compute precision (4: int8 activations)
    quantize_embeddings: bool = True  # int4: the token table too (GatherBlockQuantized)


def parse_layer(layer: int | str, n_layers: int) -> list[int]:
    """Hidden-state indices the graph exposes: [k] for one layer (0 = embeddings, n = last), all for 'all'."""
    if layer == "all":
        return list(range(n_layers + 1))
    try:
        k = int(layer)
    except (TypeError, ValueError):
        raise ExportError(f"--layer must be an int or 'all', got {layer!r}") from None
    if not -(n_layers + 1) <= k <= n_layers:
        raise ExportError(f"--layer {k} is out of range: the model has hidden states 0..{n_layers} "
                          f"({n_layers} layers; negative counts from the end)")
    return [k % (n_layers + 1)]


def int4_options(opts: LLMOptions) -> dict:
    if opts.quantization != "int4":
        return {}
    return {"int4": {"block_size": 32, "accuracy_level": opts.accuracy_level or 0,
                     "embeddings_quantized": opts.quantize_embeddings}}
