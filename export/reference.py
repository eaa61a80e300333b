"""The torch reference for `edgeemb eval --reference sentence-transformers:PATH` (registered as an entry point)."""
from __future__ import annotations

import numpy as np
from sentence_transformers import SentenceTransformer  # ImportError here tells eval the extra is missing


class SentenceTransformerModel:
    """A sentence-transformers model behind the eval suite's `encode(texts, batch_size=, show_progress=)`."""

    def __init__(self, path: str):
        self.model = SentenceTransformer(path)

    def encode(self, texts: list[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        """Embed texts as a float32 (n, dim) array."""
        out = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                show_progress_bar=show_progress)
        return np.asarray(out, dtype=np.float32)
