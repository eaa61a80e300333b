"""edgeemb: embedding models on the edge. A lean runtime (onnxruntime, tokenizers, numpy, hnswlib; no torch).

Names are imported on first use, so `import edgeemb` stays cheap and encoding never loads the search modules.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "BundleError": "errors", "CorpusError": "errors", "EdgeembError": "errors", "IndexMismatchError": "errors",
    "IndexStoreError": "errors", "InputError": "errors",
    "Manifest": "bundle", "read_manifest": "bundle",
    "Encoder": "encode.encoder", "TruncationWarning": "encode.encoder", "ZeroVectorWarning": "encode.encoder",
    "load": "encode.encoder",
    "Hit": "search.index", "Index": "search.index",
    "HybridRetriever": "search.hybrid",
    "cosine": "similarity", "top_k": "similarity",
    "WordNotFound": "static.words", "WordVectors": "static.words",
}
__all__ = [
    "BundleError", "CorpusError", "EdgeembError", "Encoder", "Hit", "HybridRetriever", "Index", "IndexMismatchError",
    "IndexStoreError", "InputError", "Manifest", "TruncationWarning", "WordNotFound", "WordVectors", "ZeroVectorWarning", "cosine",
    "load",
    "read_manifest", "top_k",
]

if TYPE_CHECKING:
    from .bundle import Manifest, read_manifest
    from .encode.encoder import Encoder, TruncationWarning, ZeroVectorWarning, load
    from .errors import (
        BundleError,
        CorpusError,
        EdgeembError,
        IndexMismatchError,
        IndexStoreError,
        InputError,
    )
    from .search.hybrid import HybridRetriever
    from .search.index import Hit, Index
    from .similarity import cosine, top_k
    from .static.words import WordNotFound, WordVectors


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeemb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
