"""Decoder LLMs (HF folder, llama2.c, GGUF) -> ONNX encoder bundles: export, quantise, measure parity, write."""
from __future__ import annotations

import gc
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..common.errors import ExportError
from ..common.onnx_tools import graph_io, quantize, quantize_int4, save_model_proto, save_onnx, step
from ..common.parity import PARITY_BOUNDS, cosine_figures, cosine_rows, parity_sentences, shortfall
from ..common.quantization import canonical
from ..common.staging import finish_manifest, staging
from .graph import build_graph_module, export_onnx, name_output_dims, reference_embeddings
from .options import POOLINGS, QUANTIZATIONS, LLMOptions, int4_options, parse_layer
from .sources import LLMSource, choose_pad, context_limit, hidden_layers, load_source

# Graphs over this keep their weights in model.onnx.data, which onnxruntime memory-maps: peak RSS is about the
# weights touched, not twice the file (Qwen3-0.6B-shaped int4: 373 MB instead of 603 MB), and only the
# embedding rows a text uses are paged in.
EXTERNAL_DATA_OVER = 64 << 20
PARITY_TEXTS = 48  # an LLM forward per text in torch is slow on big models: a spread subset of the parity set


def prepare_tokenizer(tokenizer, folder: Path) -> None:
    """Save tokenizer.json with fixed padding off (the runtime pads) and no truncation baked in."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(folder / "tokenizer.json"))


def spread(items: list, n: int) -> list:
    """n items spread evenly over a list (all when shorter)."""
    if len(items) <= n:
        return list(items)
    return [items[int(i * len(items) / n)] for i in range(n)]


def export_source(source: LLMSource, out: str | Path, opts: LLMOptions, name: str | None = None,
                  check: bool = True, force: bool = False, parity_texts: list[str] | None = None) -> Path:
    """Export a loaded decoder to a bundle; parity vs transformers (each text alone) is measured and checked.

    The torch model is released (source.model = None) once the ONNX graph is written, to free memory.
    """
    from edgeemb.encode.batching import TextTokenizer

    if opts.pooling not in POOLINGS:
        raise ExportError(f"--pooling {opts.pooling!r} is not supported for LLMs; expected one of "
                          f"{', '.join(POOLINGS)}")
    opts.quantization = canonical(opts.quantization)
    if opts.quantization not in QUANTIZATIONS:
        raise ExportError(f"--quantize {opts.quantization!r} is not supported; expected one of "
                          f"{', '.join(QUANTIZATIONS)}")
    out = Path(out)
    config = source.config
    n_layers = hidden_layers(config)
    layers = parse_layer(opts.layer, n_layers)
    all_layers = opts.layer == "all"
    max_length, limit_by = context_limit(config, opts.max_length)
    pad_id, pad_token, pad_source = choose_pad(source)
    eos_id = source.special.get("eos")
    if opts.append_eos and eos_id is None:
        raise ExportError(f"{source.name}: --append-eos needs an EOS token, and the tokenizer defines none")
    name = name or f"{source.name}-{opts.quantization}"
    texts = parity_texts if parity_texts is not None else spread(parity_sentences(), PARITY_TEXTS)
    n_steps = 5
    with staging(out, force) as folder, tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        prepare_tokenizer(source.tokenizer, folder)
        runtime_tok = TextTokenizer(folder / "tokenizer.json", max_length, pad_id, "left",
                                    eos_id if opts.append_eos else None)
        token_ids = runtime_tok.tokenize(texts).ids
        step(1, n_steps, f"reference embeddings in torch ({len(texts)} texts, each alone)")
        reference = reference_embeddings(source.model, token_ids, opts.pooling, layers, pad_id)
        dim = reference.shape[-1]
        step(2, n_steps, f"exporting ONNX (opset 17): {source.architecture}, {n_layers} layers, "
                         f"pooling {opts.pooling}, layer {opts.layer}")
        raw = Path(tmp) / "raw.onnx"
        module = build_graph_module(source.model, source.architecture, opts.pooling, layers, opts.normalize,
                                    all_layers)
        export_onnx(module, raw, int(config.vocab_size), all_layers)
        del module
        source.model = None
        gc.collect()
        step(3, n_steps, f"quantizing: {opts.quantization}")
        model_files = write_model(raw, folder, opts)
        name_output_dims(folder / "model.onnx", dim, n_layers + 1)
        for f in Path(tmp).iterdir():
            f.unlink()
        inputs, outputs = graph_io(folder / "model.onnx")
        fields = {
            "name": name, "kind": "llm", "dim": dim, "max_length": max_length, "pooling": opts.pooling,
            "normalize": opts.normalize, "quantization": opts.quantization, "inputs": inputs,
            "outputs": outputs, "layers": layers,
            "prompts": {k: v for k, v in (("query", opts.query_prompt), ("document", opts.document_prompt))
                        if v},
            "source": {"name": source.name, "format": source.format, "architecture": source.architecture,
                       "files": source.files},
            "tokenizer": {"file": "tokenizer.json", "pad_id": pad_id, "pad_token": pad_token,
                          "pad_source": pad_source, "padding_side": "left",
                          **({"eos_id": eos_id} if eos_id is not None else {})},
            "options": {"append_eos": opts.append_eos, "layer": opts.layer, "n_layers": n_layers,
                        "max_length_limited_by": limit_by,
                        **({"layer_embeddings": "pooled per hidden state, not normalized"}
                           if all_layers else {}),
                        **int4_options(opts)},
        }
        files = model_files + ["tokenizer.json"]
        finish_manifest(folder, files, **fields)
        step(4, n_steps, "checking parity against transformers (torch, each text alone)")
        parity = check_llm_parity(folder, texts, reference, opts, bool(check))
        finish_manifest(folder, files, parity=parity, **fields)
        step(5, n_steps, f"parity: cosine min {parity['cosine_min']} / mean {parity['cosine_mean']}")
    return out


@contextmanager
def quiet_root_logger():
    """Silence root-logger warnings for a block and drop any handler a library's logging call installed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)


def write_model(raw: Path, folder: Path, opts: LLMOptions) -> list[str]:
    """Quantise raw.onnx into folder/model.onnx (+ model.onnx.data when over 2 GB); return the file names."""
    dst = folder / "model.onnx"
    if opts.quantization == "int4":
        quantize_int4(raw, dst, block_size=32, accuracy_level=opts.accuracy_level,
                      embeddings=opts.quantize_embeddings)
    elif opts.quantization == "int8":
        with quiet_root_logger():  # quantize_dynamic logs a pre-processing hint through the root logger
            quantize(raw, dst, "int8")
    else:
        save_onnx(raw, dst)
    if dst.stat().st_size > EXTERNAL_DATA_OVER:
        import onnx

        save_model_proto(onnx.load(str(dst)), dst, external=True)
    return sorted(f.name for f in folder.iterdir() if f.name.startswith("model.onnx"))


def check_llm_parity(folder: Path, texts: list[str], reference: np.ndarray, opts: LLMOptions,
                     enforce: bool) -> dict:
    """Encode the texts with the runtime (left-padded batches) and compare with the torch reference."""
    import warnings

    import edgeemb

    enc = edgeemb.load(folder, threads=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", edgeemb.TruncationWarning)  # counted in the figures instead
        got = enc.encode(texts, batch_size=16, normalize=False, layer="all" if opts.layer == "all" else None)
    if opts.layer == "all":
        cos = np.stack([cosine_rows(got[:, i], reference[:, i]) for i in range(reference.shape[1])], 1)
        per_layer = [round(float(c), 6) for c in cos.min(0)]
        cos = cos.min(1)
    else:
        cos, per_layer = cosine_rows(got, reference[:, 0]), None
    figures = {"reference": "transformers (torch fp32), each text alone, unpadded", "n": len(texts),
               "truncated": enc.truncated,
               "texts": "edgeemb sample corpus + demo queries (en/zh), spread subset",
               **cosine_figures(cos)}
    if per_layer:
        figures["cosine_min_per_layer"] = per_layer
    miss = shortfall(figures, PARITY_BOUNDS[opts.quantization])
    if enforce and miss:
        raise ExportError(f"parity check failed: {miss}")
    return figures


def export_llm(src: str | Path, out: str | Path, opts: LLMOptions | None = None, name: str | None = None,
               tokenizer: str | Path | None = None, check: bool = True, force: bool = False,
               parity_texts: list[str] | None = None) -> Path:
    """Load a decoder (HF folder, llama2.c .bin, .gguf) and export it to an edgeemb LLM bundle."""
    step(0, 5, f"loading {src}")
    source = load_source(src, tokenizer)
    return export_source(source, out, opts or LLMOptions(), name, check, force, parity_texts)
