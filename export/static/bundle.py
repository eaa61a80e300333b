"""A static bundle from a vocabulary and its table: tokenizer, quantised rows (+ scales, SIF weights, n-grams)
and the manifest; shared by `export static` and `distill`."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgeemb.static.backend import NGRAM_SCALES, NGRAMS, SCALES, VECTORS, WEIGHTS

from ..common.errors import ExportError
from ..common.parity import cosine_figures
from ..common.quantization import canonical
from ..common.staging import finish_manifest
from .options import QUANTIZATIONS

SIF_A = 1e-4  # SIF's a (Arora et al. 2017); model2vec's default
MAX_LENGTH = 512  # tokens per text; model2vec's default cut
UNK = "[UNK]"
CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")


def segmentation_for(words: list[str]) -> str:
    """'longest-match' when at least a fifth of the vocabulary is CJK (no spaces between words), else 'words'."""
    cjk = sum(1 for w in words if CJK.search(w))
    return "longest-match" if cjk * 5 >= len(words) else "words"


def build_tokenizer(words: list[str], segmentation: str, lowercase: bool):
    """A tokenizers.Tokenizer over the vocabulary: id i is words[i], the unknown token is id len(words).

    words: WordLevel after splitting on whitespace and punctuation runs (English and other spaced scripts).
    longest-match: Unigram with equal piece scores after splitting on whitespace and punctuation, i.e. the
    segmentation into the fewest vocabulary pieces (maximal matching; ties go to more frequent pieces). Unlike
    WordPiece's greedy match it never turns a whole phrase into [UNK] for one unknown character: only the
    unknown run is skipped. Single-character vocabularies segment into characters.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    unk = UNK
    taken = set(words)
    while unk in taken:
        unk = f"[{unk}]"
    if segmentation == "words":
        vocab = {w: i for i, w in enumerate(words)}
        vocab[unk] = len(words)
        tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
    elif segmentation == "longest-match":
        n = len(words)
        pieces = [(w, -1.0 - 0.01 * i / n) for i, w in enumerate(words)] + [(unk, 0.0)]
        tok = Tokenizer(models.Unigram(pieces, unk_id=n, byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    else:
        raise ExportError(f"unknown segmentation {segmentation!r}; expected words or longest-match")
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    return tok


def check_quantization(name: str) -> str:
    """The vocabulary's name for a table precision static bundles support (fp32 -> none), else ExportError."""
    quant = canonical(name)
    if quant not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {name!r}; expected one of {', '.join(QUANTIZATIONS)}")
    return quant


def quantize_rows(x: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray | None]:
    """fp32/none: as is; fp16: half floats; int8: symmetric per-row scales (max |v| maps to 127)."""
    how = canonical(how)
    if how == "none":
        return np.ascontiguousarray(x, np.float32), None
    if how == "fp16":
        if np.abs(x).max(initial=0) > 65504:
            raise ExportError("vectors exceed the float16 range; use --quantize int8 or fp32")
        return x.astype(np.float16), None
    if how == "int8":
        scales = (np.abs(x).max(axis=1) / 127).astype(np.float32)
        safe = np.where(scales > 0, scales, 1)
        q = np.clip(np.rint(x / safe[:, None]), -127, 127).astype(np.int8)
        return q, scales
    raise ExportError(f"unknown quantization {how!r}; expected one of {', '.join(QUANTIZATIONS)}")


def quantization_parity(x: np.ndarray, q: np.ndarray, scales: np.ndarray | None) -> dict:
    """Row cosine of the stored table against the source vectors (fp32)."""
    deq = q.astype(np.float32) * (scales[:, None] if scales is not None else 1)
    na, nb = np.linalg.norm(x, axis=1), np.linalg.norm(deq, axis=1)
    ok = (na > 0) & (nb > 0)
    cos = (x[ok] * deq[ok]).sum(1) / (na[ok] * nb[ok]) if ok.any() else np.ones(1)
    return {"reference": "source vectors (fp32)", "n": int(ok.sum()), **cosine_figures(cos)}


def sif_weights(n: int, counts: np.ndarray | None = None, a: float = SIF_A) -> np.ndarray:
    """SIF weights a / (a + p(w)); p from counts, else Zipf's law over the rank (model2vec's estimate)."""
    if counts is not None and counts.sum() > 0:
        p = counts.astype(np.float64) / counts.sum()
    else:
        inv = 1.0 / np.arange(2, n + 2, dtype=np.float64)
        p = inv / inv.sum()
    return (a / (a + p)).astype(np.float32)


def write_static_bundle(folder: Path, vectors: np.ndarray, tokenizer, quantization: str, *, name: str,
                        unk_id: int, pooling: str, weights: np.ndarray | None, options: dict, source: dict,
                        ngrams: np.ndarray | None = None) -> None:
    """Write vectors (+ scales, weights, n-grams), tokenizer.json and edgeemb.json into a staging folder."""
    quant = check_quantization(quantization)
    q, scales = quantize_rows(vectors, quant)
    np.save(folder / VECTORS, q)
    files = [VECTORS]
    if scales is not None:
        np.save(folder / SCALES, scales)
        files.append(SCALES)
    if weights is not None:
        np.save(folder / WEIGHTS, weights.astype(np.float32))
        files.append(WEIGHTS)
    if ngrams is not None:
        nq, nscales = quantize_rows(ngrams, quant)
        np.save(folder / NGRAMS, nq)
        files.append(NGRAMS)
        if nscales is not None:
            np.save(folder / NGRAM_SCALES, nscales)
            files.append(NGRAM_SCALES)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(folder / "tokenizer.json"))
    files.append("tokenizer.json")
    dim = int(vectors.shape[1])
    options = {"backend": "numpy", "vocab_size": int(vectors.shape[0]), "unk_id": int(unk_id),
               "sif_a": SIF_A if weights is not None else None, **options}
    finish_manifest(folder, files, name=name, kind="static", dim=dim, max_length=MAX_LENGTH, pooling=pooling,
                    normalize=True, quantization=quant, inputs=["input_ids", "attention_mask"],
                    outputs={"sentence_embedding": ["batch", dim]}, source=source,
                    tokenizer={"file": "tokenizer.json", "pad_id": int(unk_id), "padding_side": "right"},
                    options=options, parity=quantization_parity(vectors, q, scales))
