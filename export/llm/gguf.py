"""GGUF Llama files -> transformers LlamaForCausalLM + tokenizer (the weights in llama2.c's layout)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..common.errors import ExportError
from ..common.gguf import GGUFFile, read_gguf


def gguf_weights(g: GGUFFile) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Llama hyper-parameters and weights of a GGUF file, in llama2.c's (interleaved RoPE) layout."""
    arch = g.metadata.get("general.architecture")
    if arch != "llama":
        raise ExportError(f"{g.path}: GGUF architecture {arch!r} is not supported (supported: llama)")
    token_embd = g.tensor("token_embd.weight")
    dim = int(g.arch_meta("embedding_length"))
    n_heads = int(g.arch_meta("attention.head_count"))
    params = {
        "dim": dim, "hidden_dim": int(g.arch_meta("feed_forward_length")),
        "n_layers": int(g.arch_meta("block_count")),
        "n_heads": n_heads, "n_kv_heads": int(g.arch_meta("attention.head_count_kv", n_heads)),
        "vocab_size": token_embd.shape[0], "seq_len": int(g.arch_meta("context_length")),
        "norm_eps": float(g.arch_meta("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(g.arch_meta("rope.freq_base", 10000.0)),
    }
    names = {"wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output", "rms_att": "attn_norm",
             "rms_ffn": "ffn_norm", "w1": "ffn_gate", "w2": "ffn_down", "w3": "ffn_up"}
    w = {"tok_embeddings": token_embd, "norm": g.tensor("output_norm.weight")}
    for key, gname in names.items():
        w[key] = np.stack([g.tensor(f"blk.{i}.{gname}.weight") for i in range(params["n_layers"])])
    w["output"] = g.tensor("output.weight") if "output.weight" in g.tensors else token_embd
    return params, w


def gguf_vocab(g: GGUFFile) -> tuple[list[str], list[float], dict[str, int]]:
    """SentencePiece pieces, scores and special ids from a GGUF's tokenizer metadata."""
    model = g.metadata.get("tokenizer.ggml.model")
    if model != "llama":
        raise ExportError(f"{g.path}: tokenizer.ggml.model {model!r} is not supported (supported: llama, "
                          f"i.e. SentencePiece)")
    pieces = list(g.metadata["tokenizer.ggml.tokens"])
    scores = [float(s) for s in g.metadata.get("tokenizer.ggml.scores", [0.0] * len(pieces))]
    special = {k: int(g.metadata[f"tokenizer.ggml.{k}_token_id"])
               for k in ("bos", "eos", "unknown", "padding") if f"tokenizer.ggml.{k}_token_id" in g.metadata}
    return pieces, scores, special


def load_gguf(path: str | Path):
    """A GGUF Llama file -> (transformers LlamaForCausalLM, tokenizers.Tokenizer, special ids)."""
    from .llama2c import build_llama, spm_tokenizer

    g = read_gguf(path)
    params, weights = gguf_weights(g)
    pieces, scores, special = gguf_vocab(g)
    if len(pieces) != params["vocab_size"]:
        raise ExportError(f"{g.path}: {len(pieces)} tokenizer pieces but token_embd has "
                          f"{params['vocab_size']} rows")
    model = build_llama(params, weights)
    bos, eos, unk = special.get("bos", 1), special.get("eos", 2), special.get("unknown", 0)
    return model, spm_tokenizer(pieces, scores, unk, bos, eos), {"bos": bos, "eos": eos, "unk": unk}
