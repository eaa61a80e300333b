"""Batch invariance: is a text's vector the same alone as inside any batch, at any position, with any threads?

An index holds documents encoded in batches and a query is encoded alone, so the two must agree. This module
measures the worst disagreement on a set of texts: each text encoded alone (a batch of one, one thread) is the
reference; random batches (random sizes, compositions with repeats, orders, so random positions and padding)
are encoded as one padded batch each, in the order drawn, and compared row by row.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .encoder import Encoder

DEFAULT_SIZES = (1, 2, 3, 7, 16, 33, 64, 128, 256)


@dataclass
class Invariance:
    """The worst alone-vs-batch agreement seen: cosine, largest absolute difference, and over what."""

    worst_cosine: float
    max_abs_diff: float
    batches: int
    rows: int
    sizes: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Every row bit-identical to its text encoded alone."""
        return self.max_abs_diff == 0.0

    def to_dict(self) -> dict[str, Any]:
        """Figures for a manifest or a JSON report (rounded down so a bound is never overstated)."""
        d = asdict(self)
        d["worst_cosine"] = float(np.floor(self.worst_cosine * 1e7 + 1e-3) / 1e7)  # + float64 noise of 1.0
        d["identical"] = self.identical
        return d


def encode_alone(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """Each text as its own batch of one, normalised: (n, dim) float32."""
    return np.stack([encode_in_order(encoder, [t])[0] for t in texts]) if texts else np.zeros((0, encoder.dim))


def encode_in_order(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """The texts as one padded batch in exactly this order (no length sorting, no splitting), normalised."""
    tok = encoder.tokenizer.tokenize(list(texts))
    batch = encoder.tokenizer._pad(np.arange(len(texts)), tok)
    return encoder._embed_batch(batch, True)


def random_batches(n_texts: int, sizes: Iterable[int], rng: np.random.Generator) -> list[np.ndarray]:
    """One batch of row indices per size: drawn with repeats when the size exceeds the texts, in random order."""
    return [rng.choice(n_texts, size=s, replace=s > n_texts) for s in sizes]


def measure(encoders: dict[int, Encoder], texts: Sequence[str], sizes: Sequence[int] = DEFAULT_SIZES,
            seed: int = 0, rounds: int = 1, alone: np.ndarray | None = None) -> Invariance:
    """Worst alone-vs-batch figures over random batches of each size, on every encoder (keyed by threads).

    The reference is each text alone on the encoder with the fewest threads (or `alone`, when given).
    """
    rng = np.random.default_rng(seed)
    threads = sorted(encoders)
    ref = encode_alone(encoders[threads[0]], texts) if alone is None else alone
    worst_cos, worst_abs, n_batches, n_rows = 1.0, 0.0, 0, 0
    for _ in range(rounds):
        for t in threads:
            for rows in random_batches(len(texts), sizes, rng):
                got = encode_in_order(encoders[t], [texts[i] for i in rows])
                want = ref[rows]
                cos = row_cosines(got, want)
                worst_cos = float(np.minimum(worst_cos, cos.min()))  # NaN propagates: never hidden
                worst_abs = float(np.maximum(worst_abs, np.abs(got - want).max()))
                n_batches, n_rows = n_batches + 1, n_rows + len(rows)
    return Invariance(worst_cos, worst_abs, n_batches, n_rows, list(sizes), threads)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of matching rows; two zero rows (an empty text in a static bundle) agree fully."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return np.where((na == 0) & (nb == 0), 1.0, dots / np.maximum(na * nb, 1e-30))


def sample_texts() -> list[str]:
    """The built-in sample: the packaged corpus (English and Chinese, short to long) and demo queries."""
    import csv
    from importlib import resources

    data = resources.files("edgeemb") / "data"
    with (data / "sample_corpus.tsv").open(encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    queries = (data / "demo_queries.txt").read_text(encoding="utf-8").splitlines()
    return texts + [q for q in queries if q.strip()] + ["", "x"]
