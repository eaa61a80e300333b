"""Parity of an exported bundle against its source model in torch, measured at export."""
from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import ExportError

# quantization -> (min cosine, mean cosine) the bundle must reach against the torch source
PARITY_BOUNDS = {"none": (0.9999, 0.9999), "fp16": (0.999, 0.9995), "int8": (0.95, 0.99), "int4": (0.90, 0.95)}


def parity_sentences() -> list[str]:
    """The project's own mixed English/Chinese sample corpus and demo queries (varied lengths)."""
    data = resources.files("edgeemb") / "data"
    with (data / "sample_corpus.tsv").open(encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    queries = (data / "demo_queries.txt").read_text(encoding="utf-8").splitlines()
    return texts + [q for q in queries if q.strip()]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(1)


def cosine_figures(cos: np.ndarray) -> dict[str, float]:
    """Min and mean of row cosines, rounded as every manifest's parity record keeps them."""
    return {"cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6)}


def shortfall(figures: dict, bounds: tuple[float, float]) -> str | None:
    """'cosine min M / mean A vs required X / Y' when the figures miss the (min, mean) bounds, else None."""
    if figures["cosine_min"] < bounds[0] or figures["cosine_mean"] < bounds[1]:
        return (f"cosine min {figures['cosine_min']} / mean {figures['cosine_mean']} "
                f"vs required {bounds[0]} / {bounds[1]}")
    return None


def reference_sentence_transformers(src: Path, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """Embeddings of the source model in torch fp32 via sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(src), device="cpu", local_files_only=True)
    return model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False)


def check_parity(bundle: Path, src: Path, texts: list[str], bounds: tuple[float, float] | None) -> dict:
    """Encode texts with the bundle (runtime path) and the source; return figures, raise if out of bounds."""
    import edgeemb

    ref = reference_sentence_transformers(src, texts)
    got = edgeemb.load(bundle).encode(texts, batch_size=32)
    cos = cosine_rows(got, ref)
    figures = {"reference": "sentence-transformers (torch fp32)", "n": len(texts),
               "texts": "edgeemb sample corpus + demo queries (en/zh)",
               **cosine_figures(cos)}
    miss = shortfall(figures, bounds) if bounds else None
    if miss:
        raise ExportError(f"parity check failed: {miss}")
    return figures
