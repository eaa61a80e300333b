"""Batch jobs: embed a corpus into checksummed shards (in one process or on Ray) and build an index from them.

    from edgeemb.jobs import embed_corpus, build_index_from_embeddings
    res = embed_corpus("corpus.jsonl", "default", "emb/", engine="ray", workers=2)   # or engine="local"
    build_index_from_embeddings("emb/", "my.idx")                                     # no re-encoding

Nothing here imports ray or pyarrow until a Ray run or a Parquet file asks for it.
"""
from .embed import EmbedResult, embed_corpus
from .from_embeddings import build_index_from_embeddings, read_embeddings
from .shards import EmbedJobError

__all__ = ["EmbedJobError", "EmbedResult", "build_index_from_embeddings", "embed_corpus", "read_embeddings"]
