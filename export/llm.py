"""Decoder LLMs (HF folder, llama2.c, GGUF) -> ONNX encoder bundles: pooled hidden states, no KV cache.

Over 400 lines: sources, graph wrapper and export in one file; the split into export/llm/ (sources, graph,
export) is the open part of issue #12."""
from __future__ import annotations

import gc
import json
import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeemb.bundle import sha256_file

from .bundle_writer import finish_manifest, staging
from .errors import ExportError
from .onnx_tools import graph_io, quantize, quantize_int4, save_model_proto, save_onnx, step
from .parity import PARITY_BOUNDS, cosine_rows, parity_sentences
from .quantization import canonical

# config.architectures name -> (base-model attribute of the *ForCausalLM, decoder-layer list, final norm)
ARCHITECTURES = {
    "LlamaForCausalLM": ("model", "layers", "norm"),
    "Qwen2ForCausalLM": ("model", "layers", "norm"),
    "Qwen3ForCausalLM": ("model", "layers", "norm"),
    "MistralForCausalLM": ("model", "layers", "norm"),
    "GPT2LMHeadModel": ("transformer", "h", "ln_f"),
}
BASE_MODELS = {"LlamaModel": "LlamaForCausalLM", "Qwen2Model": "Qwen2ForCausalLM",
               "Qwen3Model": "Qwen3ForCausalLM", "MistralModel": "MistralForCausalLM",
               "GPT2Model": "GPT2LMHeadModel"}
MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
               "mistral": "MistralForCausalLM", "gpt2": "GPT2LMHeadModel"}
POOLINGS = ("last", "mean")
QUANTIZATIONS = ("none", "int8", "int4")
DEFAULT_MAX_LENGTH = 512
# Graphs over this keep their weights in model.onnx.data, which onnxruntime memory-maps: peak RSS is about the
# weights touched, not twice the file (Qwen3-0.6B-shaped int4: 373 MB instead of 603 MB), and only the
# embedding rows a text uses are paged in.
EXTERNAL_DATA_OVER = 64 << 20
PARITY_TEXTS = 48  # an LLM forward per text in torch is slow on big models: a spread subset of the parity set


@dataclass
class LLMSource:
    """A decoder loaded for export: the base transformer (no LM head), its tokenizer, and its origin."""

    model: Any  # transformers base model (LlamaModel, GPT2Model, ...), fp32, eval mode
    tokenizer: Any  # tokenizers.Tokenizer
    architecture: str
    name: str
    format: str  # huggingface | llama2.c | gguf | memory
    special: dict[str, int] = field(default_factory=dict)  # bos/eos/pad/unk ids the source defines
    special_tokens: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # source file -> sha256

    @property
    def config(self):
        return self.model.config


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


def supported_list() -> str:
    return ", ".join(ARCHITECTURES)


def resolve_architecture(config: dict, where: str) -> str:
    """The supported *ForCausalLM name a config.json describes, or ExportError naming it and the list."""
    names = list(config.get("architectures") or [])
    for name in names:
        if name in ARCHITECTURES:
            return name
        if name in BASE_MODELS:
            return BASE_MODELS[name]
    if not names and config.get("model_type") in MODEL_TYPES:
        return MODEL_TYPES[config["model_type"]]
    found = names[0] if names else f"model_type {config.get('model_type')!r}"
    raise ExportError(f"{where}: architecture {found} is not supported; supported: {supported_list()}")


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def hf_special_tokens(folder: Path, tokenizer, config: dict) -> tuple[dict[str, int], dict[str, str]]:
    """bos/eos/pad/unk ids from tokenizer_config.json or special_tokens_map.json, else config.json."""
    special, names = {}, {}
    for fname in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / fname
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in ("bos", "eos", "pad", "unk"):
            token = _token_content(data.get(f"{key}_token"))
            if key not in special and token is not None and tokenizer.token_to_id(token) is not None:
                special[key], names[key] = tokenizer.token_to_id(token), token
    for key in ("bos", "eos", "pad"):
        value = config.get(f"{key}_token_id")
        value = value[0] if isinstance(value, list) and value else value
        if key not in special and isinstance(value, int) and 0 <= value < tokenizer.get_vocab_size(True):
            special[key], names[key] = value, tokenizer.id_to_token(value)
    return special, names


def load_hf(src: Path) -> LLMSource:
    """A local Hugging Face decoder folder: config.json, weights, tokenizer.json."""
    from tokenizers import Tokenizer

    cfg_file = src / "config.json"
    if not cfg_file.is_file():
        raise ExportError(f"{src} is not a Hugging Face model folder: {cfg_file} is missing")
    config = json.loads(cfg_file.read_text(encoding="utf-8"))
    arch = resolve_architecture(config, str(cfg_file))
    tok_file = src / "tokenizer.json"
    if not tok_file.is_file():
        raise ExportError(f"{tok_file} is missing (edgeemb needs a fast tokenizer.json)")
    tokenizer = Tokenizer.from_file(str(tok_file))
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(str(src), local_files_only=True, dtype="float32",
                                          attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise ExportError(f"{src}: cannot load the model ({str(exc).splitlines()[0][:200]})") from None
    special, names = hf_special_tokens(src, tokenizer, config)
    weights = sorted(src.glob("*.safetensors")) or sorted(src.glob("*.bin"))
    return LLMSource(model.eval(), tokenizer, arch, src.name, "huggingface", special, names,
                     {f.name: sha256_file(f) for f in weights})


def from_causal_lm(model, tokenizer, special: dict[str, int], name: str, fmt: str,
                   files: dict[str, str]) -> LLMSource:
    """Wrap a transformers *ForCausalLM (converted llama2.c / GGUF, or built in memory) as a source."""
    arch = type(model).__name__
    if arch not in ARCHITECTURES:
        raise ExportError(f"architecture {arch} is not supported; supported: {supported_list()}")
    model.config._attn_implementation = "eager"
    base = getattr(model, ARCHITECTURES[arch][0])
    names = {k: tokenizer.id_to_token(v) for k, v in special.items()}
    return LLMSource(base.eval(), tokenizer, arch, name, fmt, dict(special), names, files)


def load_source(src: str | Path, tokenizer: str | Path | None = None) -> LLMSource:
    """A folder (Hugging Face), a .gguf file, or a llama2.c checkpoint (.bin + tokenizer.bin)."""
    src = Path(src)
    if not src.exists():
        raise ExportError(f"source not found: {src}")
    if src.is_dir():
        return load_hf(src)
    files = {src.name: sha256_file(src)}
    with open(src, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        from .gguf import load_gguf

        model, tok, special = load_gguf(src)
        return from_causal_lm(model, tok, special, src.stem, "gguf", files)
    from .llama2c import find_tokenizer, load_llama2c, read_header

    tok_path = Path(tokenizer) if tokenizer else find_tokenizer(src, read_header(src)["vocab_size"])
    files[tok_path.name] = sha256_file(tok_path)
    model, tok, special = load_llama2c(src, tok_path)
    return from_causal_lm(model, tok, special, src.stem, "llama2.c", files)


def choose_pad(source: LLMSource) -> tuple[int, str, str]:
    """The pad id to record: the tokenizer's own, else EOS, else UNK, else 0 (pads are masked out anyway)."""
    for key in ("pad", "eos", "unk"):
        if key in source.special:
            pad_id = source.special[key]
            return pad_id, source.tokenizer.id_to_token(pad_id) or "", "tokenizer" if key == "pad" else key
    return 0, source.tokenizer.id_to_token(0) or "", "id 0"


def hidden_layers(config) -> int:
    """Number of decoder layers of a transformers config (num_hidden_layers or GPT-2's n_layer)."""
    return int(getattr(config, "num_hidden_layers", None) or config.n_layer)


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


def context_limit(config, max_length: int | None) -> tuple[int, str]:
    """max_length: asked for, else min(model positions, 512); never past positions or a sliding window."""
    positions = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 0)
                    or 1 << 30)
    window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    limit = min(positions, int(window)) if window else positions
    n = max_length or min(limit, DEFAULT_MAX_LENGTH)
    if n > limit:
        raise ExportError(f"--max-length {n} exceeds the model's limit {limit} "
                          f"({'sliding window' if window and window < positions else 'position embeddings'})")
    return n, ("sliding window" if window and window == limit else "positions")


def pool_tokens(tokens, attention_mask, how: str):
    """Mean over real tokens, or the last real token (under left or right padding) of (b, s, d) states."""
    import torch

    mask = attention_mask.to(tokens.dtype)
    if how == "mean":
        return torch.einsum("bs,bsd->bd", mask, tokens) / mask.sum(1, keepdim=True).clamp(min=1e-9)
    positions = torch.cumsum(torch.ones_like(attention_mask), 1)  # 1..s, traced with a dynamic length
    last = (positions * attention_mask).argmax(1)
    index = last.view(-1, 1, 1).expand(-1, 1, tokens.shape[-1])
    return torch.gather(tokens, 1, index).squeeze(1)


def build_graph_module(base, arch: str, pooling: str, layers: list[int], normalize: bool, all_layers: bool):
    """Torch module: (input_ids, attention_mask, position_ids) -> sentence, token[, layer] embeddings."""
    import torch

    arch_attrs = ARCHITECTURES[arch]
    n_layers = hidden_layers(base.config)
    if not all_layers and layers[0] < n_layers:  # an intermediate layer: drop later layers and the norm
        stack = getattr(base, arch_attrs[1])
        setattr(base, arch_attrs[1], torch.nn.ModuleList(list(stack)[: layers[0]]))
        setattr(base, arch_attrs[2], torch.nn.Identity())

    class LLMGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base = base

        def forward(self, input_ids, attention_mask, position_ids):
            seq = torch.cumsum(torch.ones_like(attention_mask[0]), 0)
            causal = seq.view(1, -1) <= seq.view(-1, 1)  # key <= query
            keys = attention_mask.bool().view(attention_mask.shape[0], 1, 1, -1)
            allowed = causal.view(1, 1, *causal.shape) & keys
            zero = torch.zeros((), dtype=torch.float32)
            mask4d = torch.where(allowed, zero, torch.tensor(torch.finfo(torch.float32).min))
            out = self.base(input_ids=input_ids, attention_mask=mask4d, position_ids=position_ids,
                            use_cache=False, output_hidden_states=all_layers, return_dict=True)
            tokens = out.last_hidden_state
            pooled = pool_tokens(tokens, attention_mask, pooling)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            if not all_layers:
                return pooled, tokens
            per_layer = [pool_tokens(h, attention_mask, pooling) for h in out.hidden_states]
            return pooled, tokens, torch.stack(per_layer, 1)

    return LLMGraph().eval()


def export_onnx(module, path: Path, vocab_size: int, all_layers: bool) -> None:
    """torch.onnx.export (TorchScript, opset 17), dynamic batch and sequence; left padding in the example."""
    import warnings

    import torch

    ids = torch.randint(3, max(4, vocab_size - 1), (2, 7), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    names = ["input_ids", "attention_mask", "position_ids"]
    outputs = ["sentence_embedding", "token_embeddings"] + (["layer_embeddings"] if all_layers else [])
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["token_embeddings"]}
    axes.update({"sentence_embedding": {0: "batch"}, "layer_embeddings": {0: "batch"}})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (ids, mask, pos), str(path), input_names=names, output_names=outputs,
                          dynamic_axes={k: v for k, v in axes.items() if k in names + outputs},
                          opset_version=17, do_constant_folding=True, dynamo=False)


SMALL_MODEL = 20_000_000  # parameters: below, one torch thread is faster (2-thread OpenMP spins on tiny ops)


def reference_embeddings(base, token_ids: list[list[int]], pooling: str, layers: list[int],
                         pad_id: int = 0) -> np.ndarray:
    """Each text alone, unpadded, through transformers (own causal mask): (n, len(layers), dim) float32."""
    import torch

    out = []
    threads = torch.get_num_threads()
    if sum(p.numel() for p in base.parameters()) < SMALL_MODEL:
        torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for ids in token_ids:
                out.append(_reference_one(base, ids, pooling, layers, pad_id))
    finally:
        torch.set_num_threads(threads)
    return np.stack(out).astype(np.float32)


def _reference_one(base, ids: list[int], pooling: str, layers: list[int], pad_id: int) -> np.ndarray:
    """One text through transformers; an empty text is one masked-out pad token, as at runtime."""
    import torch

    x = torch.tensor([ids or [pad_id]], dtype=torch.long)
    res = base(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False, output_hidden_states=True,
               return_dict=True)
    mask = torch.ones_like(x) if ids else torch.zeros_like(x)
    return torch.stack([pool_tokens(res.hidden_states[k], mask, pooling)[0] for k in layers]).numpy()


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


def int4_options(opts: LLMOptions) -> dict:
    if opts.quantization != "int4":
        return {}
    return {"int4": {"block_size": 32, "accuracy_level": opts.accuracy_level or 0,
                     "embeddings_quantized": opts.quantize_embeddings}}


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


def name_output_dims(path: Path, dim: int, n_hidden: int) -> None:
    """Readable output shapes in graph and manifest: (batch, dim), (batch, sequence, dim), (batch, L, dim)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {"sentence_embedding": ["batch", dim], "token_embeddings": ["batch", "sequence", dim],
              "layer_embeddings": ["batch", n_hidden, dim]}
    for output in model.graph.output:
        for d, value in zip(output.type.tensor_type.shape.dim, shapes.get(output.name, [])):
            if isinstance(value, int):
                d.dim_value = value
            else:
                d.dim_param = value
    onnx.save(model, str(path))


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
               "cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6)}
    if per_layer:
        figures["cosine_min_per_layer"] = per_layer
    bounds = PARITY_BOUNDS[opts.quantization]
    if enforce and (figures["cosine_min"] < bounds[0] or figures["cosine_mean"] < bounds[1]):
        raise ExportError(f"parity check failed: cosine min {figures['cosine_min']} / mean "
                          f"{figures['cosine_mean']} vs required {bounds[0]} / {bounds[1]}")
    return figures


def export_llm(src: str | Path, out: str | Path, opts: LLMOptions | None = None, name: str | None = None,
               tokenizer: str | Path | None = None, check: bool = True, force: bool = False,
               parity_texts: list[str] | None = None) -> Path:
    """Load a decoder (HF folder, llama2.c .bin, .gguf) and export it to an edgeemb LLM bundle."""
    step(0, 5, f"loading {src}")
    source = load_source(src, tokenizer)
    return export_source(source, out, opts or LLMOptions(), name, check, force, parity_texts)
