"""`edgeemb export static`: a word-vector file -> a static bundle (numpy gather backend)."""
from __future__ import annotations

from pathlib import Path

from edgeemb.bundle import sha256_file

from ..common.errors import ExportError
from ..common.staging import staging
from .bundle import build_tokenizer, check_quantization, segmentation_for, sif_weights, write_static_bundle
from .options import POOLINGS
from .readers import apply_lowercase, read_vectors


def export_static(src: str | Path, out: str | Path, fmt: str | None = None, quantization: str = "int8",
                  max_vocab: int | None = None, lowercase: str = "auto", name: str | None = None,
                  pooling: str = "sif", segmentation: str = "auto", force: bool = False,
                  show_progress: bool = True) -> Path:
    """Convert a word-vector file to a static bundle (numpy gather backend); returns the bundle folder."""
    src, out = Path(src), Path(out)
    if pooling not in POOLINGS:
        raise ExportError(f"--pooling must be sif or mean, got {pooling!r}")
    check_quantization(quantization)
    fmt, wv = read_vectors(src, fmt, max_vocab, show_progress)
    lower = apply_lowercase(wv, lowercase, src)
    seg = segmentation_for(wv.words) if segmentation == "auto" else segmentation
    words = wv.words
    tokenizer = build_tokenizer(words, seg, lower)
    weights = sif_weights(len(words), wv.counts) if pooling == "sif" else None
    options = {"lowercase": lower, "segmentation": seg, "weights_from": None if weights is None else
               ("counts" if wv.counts is not None else "rank")}
    if wv.ngrams is not None:
        options["subwords"] = {"minn": wv.minn, "maxn": wv.maxn, "bucket": len(wv.ngrams)}
    source = {"name": src.name, "format": fmt, "files": {src.name: sha256_file(src)}, "read": wv.notes}
    with staging(out, force) as folder:
        write_static_bundle(folder, wv.vectors, tokenizer, quantization, name=name or f"{src.stem}-{quantization}",
                            unk_id=len(words), pooling=pooling, weights=weights, options=options, source=source,
                            ngrams=wv.ngrams)
    return out
