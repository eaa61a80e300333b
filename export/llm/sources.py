"""Decoder sources for export: a Hugging Face folder, a GGUF file or a llama2.c checkpoint as one LLMSource
(the base transformer in torch, its tokenizer, special tokens) and what the model allows (layers, context)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeemb.bundle import sha256_file

from ..common.errors import ExportError

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
DEFAULT_MAX_LENGTH = 512


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
