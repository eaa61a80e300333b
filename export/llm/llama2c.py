"""llama2.c checkpoints (legacy header) + tokenizer.bin -> transformers LlamaForCausalLM + tokenizer.json."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..common.errors import ExportError

HEADER_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
LLAMA2C_MAGIC = 0x616B3432  # "ak42": the versioned llama2.c export formats, not read here
SPIECE_SPACE = "\u2581"


def read_header(path: str | Path) -> dict[str, Any]:
    """The legacy llama2.c header: 7 int32 (a negative vocab_size means an unshared classifier)."""
    path = Path(path)
    try:
        header = np.fromfile(path, dtype="<i4", count=7)
    except OSError as exc:
        raise ExportError(f"{path}: unreadable ({exc.strerror})") from None
    if header.size < 7:
        raise ExportError(f"{path}: too short for a llama2.c header")
    if int(header[0]) == LLAMA2C_MAGIC:
        raise ExportError(f"{path}: versioned llama2.c export (version {int(header[1])}) is not supported; "
                          f"export with --version 0 (legacy header)")
    p = dict(zip(HEADER_FIELDS, (int(x) for x in header)))
    shared = p["vocab_size"] > 0
    p["vocab_size"] = abs(p["vocab_size"])
    if min(p.values()) <= 0 or p["dim"] % p["n_heads"] or p["n_heads"] % p["n_kv_heads"]:
        raise ExportError(f"{path}: implausible llama2.c header {p}")
    return {**p, "shared_classifier": shared}


def read_llama2c(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Hyper-parameters and weights of a legacy llama2.c checkpoint (7 int32 header, then float32 weights)."""
    path = Path(path)
    p = read_header(path)
    shared = p.pop("shared_classifier")
    data = np.fromfile(path, dtype="<f4", offset=28)
    dim, hid, n, vocab = p["dim"], p["hidden_dim"], p["n_layers"], p["vocab_size"]
    head = dim // p["n_heads"]
    kv = head * p["n_kv_heads"]
    shapes = [("tok_embeddings", (vocab, dim)), ("rms_att", (n, dim)), ("wq", (n, dim, dim)),
              ("wk", (n, kv, dim)), ("wv", (n, kv, dim)), ("wo", (n, dim, dim)), ("rms_ffn", (n, dim)),
              ("w1", (n, hid, dim)), ("w2", (n, dim, hid)), ("w3", (n, hid, dim)), ("norm", (dim,)),
              ("freq_cis_real", (p["seq_len"], head // 2)), ("freq_cis_imag", (p["seq_len"], head // 2))]
    if not shared:
        shapes.append(("output", (vocab, dim)))
    need = sum(int(np.prod(s)) for _, s in shapes)
    if data.size != need:
        raise ExportError(f"{path}: holds {data.size} floats after the header, the header implies {need}")
    weights, offset = {}, 0
    for name, shape in shapes:
        size = int(np.prod(shape))
        weights[name] = data[offset: offset + size].reshape(shape)
        offset += size
    if shared:
        weights["output"] = weights["tok_embeddings"]
    p.update(norm_eps=1e-5, rope_theta=10000.0)  # llama2.c's fixed values
    return p, weights


def read_llama2c_tokenizer(path: str | Path, vocab_size: int) -> tuple[list[str], list[float]]:
    """Pieces (SentencePiece spelling, spaces as U+2581) and scores of a llama2.c tokenizer.bin."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ExportError(f"{path}: unreadable ({exc.strerror})") from None
    pieces, scores, off = [], [], 4
    try:
        for _ in range(vocab_size):
            score, n = struct.unpack_from("<fi", raw, off)
            piece = raw[off + 8: off + 8 + n]
            if len(piece) != n:
                raise struct.error("piece runs past the end")
            pieces.append(piece.decode("utf-8", errors="replace"))
            scores.append(score)
            off += 8 + n
    except struct.error:
        raise ExportError(f"{path}: truncated llama2.c tokenizer (read {len(pieces)} of {vocab_size} "
                          f"pieces)") from None
    # llama2.c writes BOS/EOS as "\n<s>\n" / "\n</s>\n" and SentencePiece's U+2581 as a plain space
    pieces = [p.strip("\n") if p.strip("\n") in ("<s>", "</s>") else p.replace(" ", SPIECE_SPACE)
              for p in pieces]
    return pieces, scores


def spm_tokenizer(pieces: list[str], scores: list[float], unk_id: int = 0, bos_id: int = 1, eos_id: int = 2):
    """A tokenizers BPE equal to SentencePiece BPE (llama2.c's encode): dummy prefix, byte fallback, BOS."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE

    specials = {unk_id, bos_id, eos_id}
    vocab = {}
    for i, piece in enumerate(pieces):
        vocab.setdefault(piece, i)
    mergeable = {p for i, p in enumerate(pieces) if i not in specials and not is_byte_piece(p)}
    merges = []  # (score of the merged piece, left id, right id, left, right): best score merges first
    for piece in mergeable:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in mergeable and right in mergeable:
                merges.append((-scores[vocab[piece]], vocab[piece], vocab[left], left, right))
    merges.sort()
    tok = Tokenizer(BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], unk_token=pieces[unk_id],
                        byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE_SPACE),
                                           normalizers.Replace(" ", SPIECE_SPACE)])
    tok.decoder = decoders.Sequence([decoders.Replace(SPIECE_SPACE, " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False) for i in sorted(specials)])
    bos = pieces[bos_id]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, bos_id)])
    return tok


def is_byte_piece(piece: str) -> bool:
    """SentencePiece byte-fallback pieces look like <0x0A>."""
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")


def unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Interleaved-pair RoPE rows (llama2.c, GGUF) -> transformers' half-split layout, per head."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def build_llama(p: dict[str, Any], w: dict[str, np.ndarray]):
    """A transformers LlamaForCausalLM from llama2.c-layout weights (float32, eval mode)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tied = w["output"] is w["tok_embeddings"] or np.array_equal(w["output"], w["tok_embeddings"])
    config = LlamaConfig(vocab_size=p["vocab_size"], hidden_size=p["dim"], intermediate_size=p["hidden_dim"],
                         num_hidden_layers=p["n_layers"], num_attention_heads=p["n_heads"],
                         num_key_value_heads=p["n_kv_heads"], max_position_embeddings=p["seq_len"],
                         rms_norm_eps=p["norm_eps"], rope_theta=p["rope_theta"], tie_word_embeddings=tied,
                         bos_token_id=1, eos_token_id=2, torch_dtype="float32", attn_implementation="eager")
    state = {"model.embed_tokens.weight": w["tok_embeddings"], "model.norm.weight": w["norm"]}
    for i in range(p["n_layers"]):
        pre = f"model.layers.{i}."
        state.update({
            pre + "input_layernorm.weight": w["rms_att"][i],
            pre + "self_attn.q_proj.weight": unpermute_rope(w["wq"][i], p["n_heads"]),
            pre + "self_attn.k_proj.weight": unpermute_rope(w["wk"][i], p["n_kv_heads"]),
            pre + "self_attn.v_proj.weight": w["wv"][i],
            pre + "self_attn.o_proj.weight": w["wo"][i],
            pre + "post_attention_layernorm.weight": w["rms_ffn"][i],
            pre + "mlp.gate_proj.weight": w["w1"][i],
            pre + "mlp.down_proj.weight": w["w2"][i],
            pre + "mlp.up_proj.weight": w["w3"][i],
        })
    if not tied:
        state["lm_head.weight"] = w["output"]
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    model.load_state_dict(tensors, strict=False, assign=True)
    if tied:
        model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # its buffers were made on meta
    missing = [n for n, t in model.state_dict().items() if t.is_meta]
    if missing:
        raise ExportError(f"converted Llama is missing weights: {', '.join(missing[:4])}")
    return model.eval()


def find_tokenizer(checkpoint: Path, vocab_size: int) -> Path:
    """tokenizer.bin or tok<vocab>.bin beside a llama2.c checkpoint."""
    for name in (f"tok{vocab_size}.bin", "tokenizer.bin"):
        if (checkpoint.parent / name).is_file():
            return checkpoint.parent / name
    raise ExportError(f"{checkpoint}: no llama2.c tokenizer found beside it (tok{vocab_size}.bin or "
                      f"tokenizer.bin); pass --tokenizer")


def load_llama2c(path: str | Path, tokenizer: str | Path | None = None):
    """A llama2.c checkpoint + tokenizer -> (LlamaForCausalLM, tokenizers.Tokenizer, special ids)."""
    path = Path(path)
    params, weights = read_llama2c(path)
    tok_path = Path(tokenizer) if tokenizer else find_tokenizer(path, params["vocab_size"])
    pieces, scores = read_llama2c_tokenizer(tok_path, params["vocab_size"])
    return build_llama(params, weights), spm_tokenizer(pieces, scores), {"bos": 1, "eos": 2, "unk": 0}
