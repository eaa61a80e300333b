"""Embedding engines as the worker runs them: edgeemb, the bare-session floor, and the peers.

Loaded inside a worker process (possibly another venv), so this module imports only the stdlib and numpy
at the top and each library inside its engine.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np


class Engine:
    """load() once; prepare() untimed; query() one item; encode() a list in one call."""

    def load(self, spec: dict[str, Any]) -> None:
        raise NotImplementedError

    def prepare(self, texts: list[str]) -> list[Any]:
        """Turn texts into what query() takes (the floor pre-tokenises here, outside the timing)."""
        return list(texts)

    def query(self, item: Any) -> Any:
        raise NotImplementedError

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        raise NotImplementedError


class EdgeembEngine(Engine):
    """edgeemb.load(bundle, threads) and Encoder.encode."""

    def load(self, spec):
        import edgeemb

        self.enc = edgeemb.load(spec["bundle"], threads=spec.get("threads"))

    def query(self, item):
        return self.enc.encode(item)

    def encode(self, texts, batch_size):
        return self.enc.encode(texts, batch_size=batch_size)

    def encode_documents(self, texts: list[str], batch_size: int) -> np.ndarray:
        """encode() with the bundle's document prompt (what an index stores)."""
        return self.enc.encode_documents(texts, batch_size=batch_size)

    def encode_chunked(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Batches in input order, no length sorting across them (what a naive caller gets)."""
        return np.concatenate([self.enc.encode(texts[s:s + batch_size], batch_size=batch_size)
                               for s in range(0, len(texts), batch_size)])


class EdgeembWordsEngine(EdgeembEngine):
    """A static edgeemb bundle's word API: query = the 10 nearest words (gensim's most_similar)."""

    def prepare(self, texts):
        return [t for t in texts if self.enc.wv.has_index_for(t)]

    def query(self, item):
        return self.enc.wv.most_similar(positive=[item], topn=10)


class FloorEngine(Engine):
    """A bare onnxruntime session.run on pre-tokenised input: the fastest a Python caller can go."""

    def load(self, spec):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from edgeemb.encode.backend import session_options

        folder = spec["bundle"]
        self.session = ort.InferenceSession(os.path.join(folder, "model.onnx"),
                                            session_options(spec.get("threads") or 1),
                                            providers=["CPUExecutionProvider"])
        self.tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(int(spec.get("max_length", 256)))
        self.inputs = [i.name for i in self.session.get_inputs()]

    def prepare(self, texts):
        items = []
        for e in self.tok.encode_batch(texts):
            ids = np.asarray([e.ids], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            items.append({k: feeds[k] for k in self.inputs})
        return items

    def query(self, item):
        return self.session.run(["sentence_embedding"], item)[0]


class FastembedEngine(Engine):
    """fastembed's TextEmbedding on a local ONNX file (custom model, mean pooling of token_embeddings)."""

    def load(self, spec):
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        name = spec.get("model_name", "edgeemb-bench/local-model")
        try:
            TextEmbedding.add_custom_model(model=name, pooling=PoolingType.MEAN, normalization=True,
                                           sources=ModelSource(hf=name), dim=int(spec["dim"]),
                                           model_file="model.onnx", output_name=spec.get("output_name"))
        except ValueError:  # already registered in this process
            pass
        self.model = TextEmbedding(model_name=name, specific_model_path=spec["folder"],
                                   threads=spec.get("threads"), local_files_only=True)

    def query(self, item):
        return next(iter(self.model.embed([item], batch_size=1)))

    def encode(self, texts, batch_size):
        return np.stack(list(self.model.embed(texts, batch_size=batch_size)))


class SentenceTransformersEngine(Engine):
    """sentence-transformers with the torch backend or its ONNX backend (fp32 or int8 file)."""

    def load(self, spec):
        threads = spec.get("threads")
        backend = spec.get("backend", "torch")
        kwargs: dict[str, Any] = {}
        if backend == "torch":
            import torch

            if threads:
                torch.set_num_threads(threads)
        else:
            import onnxruntime as ort

            so = ort.SessionOptions()
            if threads:
                so.intra_op_num_threads = threads
                so.inter_op_num_threads = 1
            kwargs["model_kwargs"] = {"file_name": spec["file_name"], "provider": "CPUExecutionProvider",
                                      "session_options": so}
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(spec["path"], device="cpu", backend=backend, local_files_only=True, **kwargs)

    def query(self, item):
        return self.model.encode([item], batch_size=1, show_progress_bar=False)

    def encode(self, texts, batch_size):
        return self.model.encode(texts, batch_size=batch_size, show_progress_bar=False)


class Model2VecEngine(Engine):
    """model2vec StaticModel, single process (no multiprocessing, so RSS seen from outside is all of it)."""

    def load(self, spec):
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(spec["path"])

    def query(self, item):
        return self.model.encode([item], show_progress_bar=False, use_multiprocessing=False)

    def encode(self, texts, batch_size):
        return self.model.encode(texts, batch_size=batch_size, show_progress_bar=False, use_multiprocessing=False)


class GensimEngine(Engine):
    """gensim KeyedVectors: word lookups (query = a word's 10 nearest words)."""

    def load(self, spec):
        from gensim.models import KeyedVectors

        self.kv = KeyedVectors.load_word2vec_format(spec["path"], binary=False, no_header=spec.get("no_header", True))
        self.kv.fill_norms()

    def prepare(self, texts):
        return [t for t in texts if t in self.kv.key_to_index]

    def query(self, item):
        return self.kv.most_similar(item, topn=10)

    def encode(self, texts, batch_size):
        return np.stack([self.kv[t] for t in texts if t in self.kv.key_to_index])


ENGINES = {"edgeemb": EdgeembEngine, "edgeemb-words": EdgeembWordsEngine, "floor": FloorEngine, "fastembed": FastembedEngine,
           "sentence-transformers": SentenceTransformersEngine, "model2vec": Model2VecEngine,
           "gensim": GensimEngine}
