"""edgeemb: embedding models on the edge. A lean runtime (onnxruntime, tokenizers, numpy, hnswlib; no torch)."""
__version__ = "0.1.0"

from .bundle import Manifest, read_manifest
from .encoder import Encoder, TruncationWarning, load
from .errors import BundleError, CorpusError, EdgeembError, IndexMismatchError, IndexStoreError, InputError
from .index import Hit, Index
from .retrieve import HybridRetriever
from .similarity import cosine, top_k
from .static import WordNotFound

__all__ = [
    "BundleError",
    "CorpusError",
    "EdgeembError",
    "Encoder",
    "Hit",
    "HybridRetriever",
    "Index",
    "IndexMismatchError",
    "IndexStoreError",
    "InputError",
    "Manifest",
    "TruncationWarning",
    "WordNotFound",
    "cosine",
    "load",
    "read_manifest",
    "top_k",
]
