"""Distil a static bundle from a sentence-transformers model, as model2vec does.

Each vocabulary token of the teacher's tokenizer goes through the transformer alone ([CLS] token [SEP], mean
of the output states); PCA brings the table to --dims; SIF weights from Zipf's law over the token rank give
frequent tokens less say. Texts are then tokenised with the teacher's own tokenizer (no special tokens) and
pooled as a weighted mean, so a 30k x 256 table stands in for MiniLM where a transformer does not fit.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np

from edgeemb.bundle import sha256_file
from edgeemb.progress import Progress

from ..common.errors import ExportError
from ..common.onnx_tools import step
from ..common.staging import staging
from ..sentence.export import read_sentence_config
from .bundle import sif_weights, write_static_bundle

DEFAULT_DIMS = 256
SKIP_TOKENS = re.compile(r"\[unused\d+\]")  # BERT's placeholder tokens, never produced by the tokenizer


def token_states(model, ids: list[int], bos: list[int], eos: list[int], batch_size: int = 512,
                 show_progress: bool = True) -> np.ndarray:
    """Mean output state of each token run through the model alone, wrapped as bos + [id] + eos."""
    import torch

    seqs = torch.tensor([bos + [i] + eos for i in ids], dtype=torch.long)  # all the same length: no padding
    out = np.empty((len(ids), model.config.hidden_size), np.float32)
    with_types = "token_type_ids" in inspect.signature(model.forward).parameters
    with torch.inference_mode(), Progress(len(ids), "teacher forward over the vocabulary", show_progress,
                                          "tokens") as bar:
        for lo in range(0, len(ids), batch_size):
            batch = seqs[lo:lo + batch_size]
            kw = {"token_type_ids": torch.zeros_like(batch)} if with_types else {}
            states = model(input_ids=batch, attention_mask=torch.ones_like(batch), **kw).last_hidden_state
            out[lo:lo + len(batch)] = states.float().mean(dim=1).numpy()
            bar.update(len(batch))
    return out


def pca(x: np.ndarray, dims: int) -> tuple[np.ndarray, float]:
    """Project centred rows onto the top `dims` principal axes; returns (projection, explained variance)."""
    x = x.astype(np.float64)
    centred = x - x.mean(axis=0)
    cov = centred.T @ centred / max(len(x) - 1, 1)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:dims]
    explained = float(vals[order].sum() / max(vals.sum(), 1e-12))
    return (centred @ vecs[:, order]).astype(np.float32), explained


def teacher_tokenizer(transformer_dir: Path):
    """The teacher's tokenizer.json with padding and truncation removed (the post-processor stays for probing)."""
    from tokenizers import Tokenizer

    path = transformer_dir / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"{path} is missing (distillation needs the teacher's fast tokenizer.json)")
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()  # MiniLM's file pads to 128: the probe below and the bundle must see unpadded ids
    tok.no_truncation()
    return tok


def special_ids(tok) -> tuple[list[int], list[int], int]:
    """(bos ids, eos ids, unk id) from the teacher tokenizer's post-processor and model."""
    probe = tok.encode("a")
    plain = tok.encode("a", add_special_tokens=False)
    n = len(plain.ids)
    start = next((i for i in range(len(probe.ids) - n + 1) if probe.ids[i:i + n] == plain.ids), 0)
    bos, eos = probe.ids[:start], probe.ids[start + n:]
    vocab = tok.get_vocab()
    unk_token = getattr(tok.model, "unk_token", None)
    return bos, eos, vocab.get(unk_token, -1) if unk_token else -1


def distill(src: str | Path, out: str | Path, dims: int = DEFAULT_DIMS, vocab_size: int | None = None,
            quantization: str = "int8", name: str | None = None, force: bool = False, batch_size: int = 512,
            show_progress: bool = True) -> Path:
    """Distil a static bundle (kind static, SIF pooling) from a local sentence-transformers folder."""
    import torch
    from transformers import AutoModel

    src, out = Path(src), Path(out)
    cfg = read_sentence_config(src)
    tok = teacher_tokenizer(cfg.transformer_dir)
    bos, eos, unk_id = special_ids(tok)
    vocab = tok.get_vocab(with_added_tokens=True)
    size = max(vocab.values()) + 1
    if vocab_size is not None:
        if vocab_size < 1:
            raise ExportError(f"--vocab-size must be positive, got {vocab_size}")
        size = min(size, vocab_size)
    if dims < 1:
        raise ExportError(f"--dims must be positive, got {dims}")
    words = [""] * size
    for word, i in vocab.items():
        if i < size:
            words[i] = word
    keep = [i for i, w in enumerate(words) if w and i != unk_id and not SKIP_TOKENS.fullmatch(w)]
    if not keep:
        raise ExportError(f"{src}: empty vocabulary after removing unknown and placeholder tokens")
    step(1, 4, f"loading {src}")
    model = AutoModel.from_pretrained(str(cfg.transformer_dir), local_files_only=True).eval()
    dims = min(dims, model.config.hidden_size, len(keep))
    step(2, 4, f"running {len(keep)} vocabulary tokens through the teacher ({torch.get_num_threads()} threads)")
    states = token_states(model, keep, bos, eos, batch_size, show_progress)
    step(3, 4, f"PCA {states.shape[1]} -> {dims} dims, SIF weights from Zipf ranks")
    reduced, explained = pca(states, dims)
    table = np.zeros((size, dims), np.float32)
    table[keep] = reduced
    weights = np.zeros(size, np.float32)
    weights[keep] = sif_weights(len(keep))  # rank = order among the kept tokens, as model2vec ranks them
    tok.post_processor = None
    step(4, 4, f"writing {out} ({quantization})")
    lowercase = tok.normalizer is not None and tok.normalizer.normalize_str("A") == "a"
    options = {"lowercase": lowercase, "segmentation": "teacher", "weights_from": "rank",
               "distilled": {"teacher": src.name, "teacher_dim": int(states.shape[1]), "dims": dims,
                             "wrap": [tok.id_to_token(i) for i in bos] + ["token"] + [tok.id_to_token(i) for i in eos],
                             "tokens": len(keep), "explained_variance": round(explained, 4)}}
    source = {"name": src.name, "format": "sentence-transformers (distilled)",
              "files": {f.name: sha256_file(f) for f in sorted(cfg.transformer_dir.glob("*.safetensors"))}}
    with staging(out, force) as folder:
        write_static_bundle(folder, table, tok, quantization, name=name or f"{src.name}-static-{dims}",
                            unk_id=unk_id if unk_id >= 0 else size, pooling="sif", weights=weights,
                            options=options, source=source)
    return out
