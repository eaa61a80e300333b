"""HybridRetriever: two-stage search, a cheap encoder recalls candidates and a contextual one orders them.

Over 400 lines because it is one public class over three recall sources and two stores that must be written in
one order for crash safety (fine rows, then the store, then the derived keyword index and bits); the bit code,
the keyword index and the int8 rows live in their own modules.

The coarse (e.g. static) encoder's document vectors live in the HNSW graph of an Index; the fine encoder's
document vectors are kept as int8 rows with a per-row scale in `fine.i8` beside the store, memory-mapped and
read only for the N candidates of a query ("stored" rerank). With rerank="live" the candidates' texts are
encoded at query time instead (by `live`, e.g. an LLM encoder, or the fine encoder). Fine rows are written and
fsynced before the store commits their documents, so every acknowledged document has its row.

Candidates come from up to three recall sources, each with a share of N (`split`, keywords / bits / coarse):
with lexical=True (the default for new indexes) a BM25 keyword index (`lexical.py`), which catches the rare-term
matches a static model misses; the sign bits of the fine vectors (`finebits.py`, dim/8 bytes a document in RAM,
Hamming scan then the asymmetric float-query dot), which see paraphrases the way the fine model does; and the
coarse graph. Keywords are derived from the store (snapshot `lexical.bm25`, reconciled with the store's labels on
open) and the bits from fine.i8 + the store's labels (rebuilt on every open, never written), so a crash cannot
make either disagree.
"""
from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..encode.pooling import normalize, truncate_dim
from ..errors import IndexMismatchError, IndexStoreError, InputError
from ..progress import Progress
from ..similarity import top_k
from .finebits import FineBits
from .index import STORE, Hit, Index
from .int8rows import Int8Rows, quantize
from .lexical import LexicalIndex
from .validate import as_matrix, check_ef, parse_queries, positive_int

if TYPE_CHECKING:
    from ..encode.encoder import TextEncoder

FINE_FILE = "fine.i8"
LEXICAL_FILE = "lexical.bm25"
RERANK_MODES = ("stored", "live")


class Split(NamedTuple):
    """Shares of the N candidates per recall source (any non-negative weights; a plain 3-tuple works too).

    Keywords take the first ceil(N x share) distinct candidates, the fine bits the next, the coarse graph the
    rest; a source that comes up short (few documents share a word) leaves its room to the bits' further
    candidates, then the graph's."""

    keywords: float
    bits: float
    coarse: float


DEFAULT_SPLIT = Split(0.5, 0.5, 0.0)  # measured in docs/results/hybrid.md ("Fine bits as a recall stage")


class Results(list[Hit]):
    """Hits, best first, with `.timings`: milliseconds per stage and the number of candidates."""

    def __init__(self, hits: Sequence[Hit] = (), timings: dict[str, float] | None = None):
        super().__init__(hits)
        self.timings = timings or {}


def bundle_record(encoder: TextEncoder, ref: str | None = None) -> dict[str, Any]:
    """What an index remembers of an encoder: identity, name, dimension and how to find it again."""
    return {"bundle_id": encoder.manifest.bundle_id, "name": encoder.manifest.name, "dim": encoder.dim,
            "ref": ref or str(Path(encoder.path).resolve())}


class HybridRetriever:
    """Recall from keywords, the fine vectors' sign bits and a coarse HNSW graph, then exact re-scoring of the
    candidates with a finer encoder.

    path None: a temporary index, removed on close(). An existing index folder (or an open Index, which the
    retriever then owns) is opened and checked against both encoders; otherwise one is created. coarse_dim keeps only the first dims of the coarse vectors
    (sensible for PCA-ordered static tables), which shrinks the graph's memory. lexical: keep a BM25 keyword
    index as a recall source (a setting of a new index; an existing one keeps its own). The fine vectors' sign
    bits, the third source, are derived from fine.i8 on open (`bits_open_s`), so any hybrid index has them.
    """

    def __init__(self, coarse: TextEncoder, fine: TextEncoder, path: str | Path | Index | None = None, *,
                 read_only: bool = False, live: TextEncoder | None = None, coarse_dim: int | None = None,
                 M: int = 16, ef_construction: int = 200, threads: int = 1, coarse_ref: str | None = None,
                 fine_ref: str | None = None, lexical: bool = True) -> None:
        if coarse is None or fine is None:
            raise InputError("HybridRetriever needs a coarse and a fine encoder")
        self.coarse, self.fine, self.live = coarse, fine, live
        self._tmp = None
        self.lexical: LexicalIndex | None = None
        self.lexical_repaired = 0  # documents added to the keyword index from the store when opening
        self._lexical_dirty = False
        self.bits_open_s = 0.0  # seconds spent deriving the fine bits from fine.i8 when opening
        if path is None:
            if read_only:
                raise InputError("a temporary hybrid index cannot be read-only")
            self._tmp = tempfile.TemporaryDirectory(prefix="edgeemb-hybrid-")
            path = self._tmp.name
        opened = path if isinstance(path, Index) else None
        path = path.path if isinstance(path, Index) else Path(path)
        if opened is not None or (path / STORE).is_file():
            self.index = opened or Index.open(path, read_only=read_only, threads=threads)
            read_only = self.index.read_only
            try:
                self._check(path)
                self.fine_rows = self._open_fine(path, read_only)
                t = time.perf_counter()
                self.bits = FineBits.from_rows(self.fine_rows.path, fine.dim, self.index.store.all_labels())
                self.bits_open_s = time.perf_counter() - t
            except BaseException:
                self.index.close()
                raise
            if self.index.meta.get("lexical"):
                self._open_lexical(path)
        else:
            if read_only:
                raise IndexStoreError(f"no index at {path} ({STORE} missing)")
            cdim = coarse.dim if coarse_dim is None else int(coarse_dim)
            if not 0 < cdim <= coarse.dim:
                raise InputError(f"coarse_dim must be in 1..{coarse.dim}, got {coarse_dim}")
            self.index = Index.create(path, dim=cdim, M=M, ef_construction=ef_construction, threads=threads,
                                      ef_search=100, extra_meta={
                                          "kind": "hybrid", "coarse": bundle_record(coarse, coarse_ref),
                                          "fine": bundle_record(fine, fine_ref), "fine_file": FINE_FILE,
                                          "lexical": bool(lexical)})
            self.fine_rows = Int8Rows.create(path / FINE_FILE, fine.dim)
            self.bits, self.bits_open_s = FineBits(fine.dim), 0.0
            self.lexical = LexicalIndex() if lexical else None
            self._lexical_dirty = bool(lexical)
        self.coarse_dim = self.index.dim

    @property
    def path(self) -> Path:
        """The index folder."""
        return self.index.path

    def __len__(self) -> int:
        return len(self.index)

    def __enter__(self) -> HybridRetriever:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Save what changed, close the store and drop the memory map (and a temporary folder).

        Everything is closed and the writer lock released even when a save fails (a full disk); the error then
        names what was not saved. Documents are never among it: they are durable when add returns."""
        unsaved = []
        try:
            if not self.index.closed and not self.index.read_only and self._tmp is None:
                try:
                    self._save_lexical()
                except (IndexStoreError, OSError) as exc:
                    unsaved.append(f"the keyword index ({exc}; it is rebuilt from the stored documents on the next "
                                   f"open)")
            try:
                self.index.close()
            except (IndexStoreError, OSError) as exc:
                unsaved.append(f"the graph ({exc}; it is repaired from the store on the next open)")
        finally:
            self.fine_rows.close()
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
        if unsaved:
            raise IndexStoreError(f"{self.path} is closed, but not saved: {'; '.join(unsaved)}")

    # -- writing ------------------------------------------------------------------------------------------
    def add(self, texts: Sequence[str], ids: Sequence[str] | None = None,
            metadata: Sequence[dict[str, Any]] | None = None, batch_size: int = 256,
            show_progress: bool = False) -> list[str]:
        """Encode documents with both encoders and add them; each chunk of batch_size is one transaction."""
        return self._write(texts, ids, metadata, batch_size, show_progress, False, False)

    def add_vectors(self, coarse: np.ndarray, fine: np.ndarray, texts: Sequence[str], ids: Sequence[str] | None = None,
                    metadata: Sequence[dict[str, Any]] | None = None, batch_size: int = 4096,
                    show_progress: bool = False) -> list[str]:
        """Add documents whose coarse and fine vectors were computed elsewhere (same bundles, document side)."""
        coarse, fine = as_matrix(coarse, "coarse vectors"), as_matrix(fine, "fine vectors")
        n = len(texts) if isinstance(texts, (list, tuple)) else -1
        if coarse.shape not in ((n, self.coarse.dim), (n, self.coarse_dim)) or fine.shape != (n, self.fine.dim):
            raise InputError(f"vectors have shapes {coarse.shape} and {fine.shape}, expected ({n}, {self.coarse.dim}) "
                             f"and ({n}, {self.fine.dim})")
        return self._write(texts, ids, metadata, batch_size, show_progress, False, False,
                           lambda sl: (self._cut(coarse[sl]), normalize(fine[sl])))

    def upsert(self, texts: Sequence[str], ids: Sequence[str],
               metadata: Sequence[dict[str, Any]] | None = None, must_exist: bool = False,
               batch_size: int = 256) -> list[str]:
        """Add or replace documents by id (must_exist: every id must already be there)."""
        return self._write(texts, ids, metadata, batch_size, False, True, must_exist)

    def delete(self, ids: Sequence[str] | None = None, missing_ok: bool = False, *,
               filter: dict[str, Any] | None = None) -> int:
        """Delete documents by id or by filter (an unknown id is an error unless missing_ok). Their fine rows
        become dead."""
        with self.index.writing():
            labels = self.index.resolve_delete(ids, filter, missing_ok)
            n = self.index.delete_labels(labels)
            self.bits.mark_deleted(labels)
            if self.lexical is not None and n:
                self.lexical.delete(labels)
                self._lexical_dirty = True
        return n

    def update(self, ids: Sequence[str], metadata: dict[str, Any] | Sequence[dict[str, Any]]) -> int:
        """Merge metadata into stored documents without re-encoding them (Index.update)."""
        return self.index.update(ids, metadata)

    def count(self) -> int:
        """Number of stored documents."""
        return len(self.index)

    def save(self) -> None:
        """Save the coarse graph and the keyword index (documents and fine rows are durable as soon as add
        returns; both saved structures are rebuilt from the store where they lag behind it)."""
        self._save_lexical()
        self.index.save()

    def compact(self, force: bool = False) -> bool:
        """Rebuild the coarse graph without tombstones when due (or forced); the fine bits drop theirs too."""
        with self.index.writing():
            done = self.index.compact(force)
            if done or force:
                self.bits.compact()
        return done

    def get(self, ids: str | Sequence[str]) -> Hit | None | list[Hit | None]:
        """The stored document with this id, or None; a list of ids gives a list."""
        return self.index.get(ids)

    # -- reading ------------------------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, candidates: int = 100, rerank: str = "stored",
               filter: dict[str, Any] | None = None, ef: int | None = None, lexical: bool | None = None,
               split: Split | tuple[float, float, float] | None = None) -> Results:
        """Top-k documents: `candidates` recalled by keywords, the fine bits and the coarse graph (shares: split,
        default DEFAULT_SPLIT), re-scored by the fine encoder.

        rerank "stored": cosine against the stored int8 fine vectors; "live": encode the candidates now.
        ef: HNSW search breadth (default N + min(N, 200)). lexical: False gives the keywords' share to the others
        (None: use the keyword index when this index has one). Hit scores are fine-encoder cosines; `.timings`
        gives ms per stage and how many candidates each source contributed.
        """
        if not isinstance(query, str):
            raise InputError(f"query must be a str, got {type(query).__name__}")
        parse_queries(query, self.coarse_dim)  # an empty query, a lone surrogate: InputError
        if rerank not in RERANK_MODES:
            raise InputError(f"rerank must be one of {', '.join(RERANK_MODES)}, got {rerank!r}")
        k, candidates, ef = positive_int("k", k), positive_int("candidates", candidates), check_ef(ef)
        if lexical and self.lexical is None:
            raise InputError(f"{self.path} has no keyword index (it was built with lexical=False)")
        shares = check_split(DEFAULT_SPLIT if split is None else split)
        if self.lexical is None or lexical is False:
            shares = check_split(shares._replace(keywords=0.0))
        n = max(candidates, k)
        n_kw, n_bits, n_coarse = quotas(n, shares)
        ms: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        clock = [time.perf_counter()]
        start = clock[0]

        def lap(stage: str) -> None:
            now = time.perf_counter()
            ms[stage] += (now - clock[0]) * 1e3
            clock[0] = now

        cq = self._coarse([query], query=True)[0] if n_coarse else None
        lap("coarse_encode_ms")
        reranker = self.fine if rerank == "stored" else (self.live or self.fine)
        rq = normalize(reranker.encode_queries([query])[0])
        fq = rq if reranker is self.fine or not n_bits else normalize(self.fine.encode_queries([query])[0])
        lap("fine_encode_ms")
        empty = np.zeros(0, np.int64)
        with self.index.reading():
            allowed = self.index.filter_labels(filter) if filter is not None else None
            graph = empty
            if cq is not None:
                pairs = self.index.candidates(cq, n, ef=ef or default_ef(n, int(self.index.meta["ef_search"])),
                                              allowed=allowed)
                graph = np.array([p[0] for p in pairs], dtype=np.int64)
            lap("ann_ms")
            keyword = empty
            if n_kw:
                assert self.lexical is not None  # quotas give keywords a share only when there is an index
                keyword = self.lexical.search(query, n_kw, allowed)[0].astype(np.int64)
            lap("lexical_ms")
            bits = self.bits.search(fq, n, allowed=allowed) if n_bits else empty
            lap("bits_ms")
            labels, counts = merge_shares([(keyword, n_kw), (bits, n_bits), (graph, n_coarse)], n)
            if rerank == "stored":
                scores = self.fine_rows.scores(labels, rq)
                idx, best = top_k(scores, int(k))
                chosen, chosen_scores = labels[idx[0]], best[0]
                lap("rerank_ms")
                docs = self.index.documents(chosen.tolist())
            else:
                docs = self.index.documents(labels.tolist())
        if rerank == "live":
            labels = np.array([lab for lab in labels.tolist() if lab in docs], dtype=np.int64)
            lap("fetch_ms")
            if len(labels):
                dv = reranker.encode_documents([docs[lab].text for lab in labels.tolist()], batch_size=32)
                scores = normalize(dv) @ rq
            else:
                scores = np.zeros(0, np.float32)
            idx, best = top_k(scores, int(k))
            chosen, chosen_scores = labels[idx[0]], best[0]
            lap("rerank_ms")
        hits = [Hit(docs[lab].id, float(s), docs[lab].text, docs[lab].metadata)
                for lab, s in zip(chosen.tolist(), chosen_scores.tolist()) if lab in docs]
        lap("fetch_ms")
        timings: dict[str, float] = {key: round(v, 4) for key, v in ms.items()}
        timings["total_ms"] = round((time.perf_counter() - start) * 1e3, 4)
        timings.update(candidates=len(labels), lexical_candidates=counts[0], bits_candidates=counts[1])
        return Results(hits, timings)

    # -- internals ----------------------------------------------------------------------------------------
    def _coarse(self, texts: list[str], query: bool) -> np.ndarray:
        enc = self.coarse.encode_queries if query else self.coarse.encode_documents
        return self._cut(enc(texts, batch_size=256))

    def _cut(self, vecs: np.ndarray) -> np.ndarray:
        """Keep the first coarse_dim dimensions (renormalised)."""
        return truncate_dim(vecs, self.coarse_dim) if self.coarse_dim < vecs.shape[1] else vecs

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self._coarse(texts, query=False), normalize(self.fine.encode_documents(texts, batch_size=32))

    def _write(self, texts: Sequence[str], ids: Sequence[str] | None,
               metadata: Sequence[dict[str, Any]] | None, batch_size: int, show_progress: bool, upsert: bool,
               must_exist: bool,
               vectors: Callable[[slice], tuple[np.ndarray, np.ndarray]] | None = None) -> list[str]:
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        index = self.index
        insert = index.upsert_vectors if upsert else index.add_vectors
        with index.writing():
            texts, ids, metas = index.check_documents(texts, ids, metadata, "upsert" if upsert else "add", must_exist)
            index.reserve(len(texts))
            self.fine_rows.reserve(int(index.meta["next_label"]) + len(texts))
            with Progress(len(texts), f"index {index.path.name}", show_progress, "docs") as bar:
                for s in range(0, len(texts), batch_size):
                    sl = slice(s, s + batch_size)
                    coarse, fine = vectors(sl) if vectors else self._encode(texts[sl])
                    old = list(index.store.labels_of(ids[sl]).values()) if upsert else []
                    written: list[np.ndarray] = []

                    def write_fine(labels: np.ndarray, fine: np.ndarray = fine,
                                   written: list[np.ndarray] = written) -> None:
                        self.fine_rows.write(int(labels[0]), fine)
                        written.append(labels)

                    insert(coarse, texts[sl], ids[sl], metas[sl], before_commit=write_fine)
                    self.bits.mark_deleted(old)  # the store has committed: the bits and keywords follow it
                    self.bits.add(written[0], quantize(fine)["q"])  # the rows' signs, exactly as written
                    if self.lexical is not None:
                        self.lexical.delete(old)
                        self.lexical.add(written[0].tolist(), texts[sl])
                        self._lexical_dirty = True
                    bar.update(len(texts[sl]))
        return ids

    def _open_lexical(self, path: Path) -> None:
        """Load the keyword snapshot and bring it in line with the store: what the store lacks is deleted,
        what the snapshot lacks (written after it was saved, or all of it if the file is missing or damaged)
        is analysed from the stored texts."""
        file = path / LEXICAL_FILE
        stale = not file.is_file()
        try:
            lexical = LexicalIndex() if stale else LexicalIndex.load(file)
        except IndexStoreError:  # damaged: rebuilt from the store below, and saved again
            lexical, stale = LexicalIndex(), True
        in_store = self.index.store.all_labels()
        known = lexical.labels()
        gone = np.setdiff1d(known, in_store, assume_unique=True)
        lexical.delete(gone.tolist())
        missing = np.setdiff1d(in_store, known, assume_unique=True)
        for s in range(0, len(missing), 4096):
            docs = self.index.documents(missing[s:s + 4096].tolist())
            lexical.add(list(docs), [d.text for d in docs.values()])
        self.lexical, self.lexical_repaired = lexical, len(missing)
        self._lexical_dirty = stale or bool(len(missing)) or bool(len(gone))

    def _save_lexical(self) -> None:
        if self.lexical is not None and self._lexical_dirty and not self.index.read_only:
            self.lexical.save(self.path / LEXICAL_FILE)
            self._lexical_dirty = False

    def _check(self, path: Path) -> None:
        meta = self.index.meta
        if meta.get("kind") != "hybrid":
            raise IndexStoreError(f"{path} is a plain index (bundle {meta.get('bundle_name')!r}), not a hybrid one")
        for role, enc in (("coarse", self.coarse), ("fine", self.fine)):
            rec = meta.get(role) or {}
            if enc.manifest.bundle_id != rec.get("bundle_id") or enc.dim != rec.get("dim"):
                raise IndexMismatchError(f"hybrid index {path} was built with {role} bundle {rec.get('name')!r} "
                                         f"(dim {rec.get('dim')}), not {enc.manifest.name!r} (dim {enc.dim})")

    def _open_fine(self, path: Path, read_only: bool) -> Int8Rows:
        file = path / self.index.meta.get("fine_file", FINE_FILE)
        if not file.is_file():
            if len(self.index) or read_only:
                raise IndexStoreError(f"{file} is missing: the fine vectors of {len(self.index)} documents are "
                                      f"gone; rebuild the index from its corpus")
            return Int8Rows.create(file, self.fine.dim)
        rows = Int8Rows.open(file, self.fine.dim, read_only)
        top = self.index.store.max_label()
        rows.check_rows(0 if top is None else top + 1)
        return rows


STAGES = ("coarse_encode_ms", "fine_encode_ms", "ann_ms", "lexical_ms", "bits_ms", "rerank_ms", "fetch_ms")


def check_split(split: Split | tuple[float, float, float]) -> Split:
    """A Split from any 3 non-negative finite weights, not all zero (InputError otherwise)."""
    try:
        got = Split(*(float(x) for x in split))
    except (TypeError, ValueError):
        raise InputError(f"split must be 3 numbers (keywords, bits, coarse), got {split!r}") from None
    if not all(math.isfinite(x) and x >= 0 for x in got) or not sum(got) > 0:
        raise InputError(f"split must be 3 non-negative numbers, not all zero (keywords, bits, coarse), got "
                         f"{tuple(split)!r}")
    return got


def quotas(n: int, split: Split) -> tuple[int, int, int]:
    """Candidates per source for N: keywords ceil(N x share), then the bits, the graph what is left."""
    total = sum(split)
    n_kw = min(n, math.ceil(n * split.keywords / total)) if split.keywords else 0
    n_bits = min(n - n_kw, math.ceil(n * split.bits / total)) if split.bits else 0
    return n_kw, n_bits, (n - n_kw - n_bits) if split.coarse else 0


def merge_shares(sources: Sequence[tuple[np.ndarray, int]], n: int) -> tuple[np.ndarray, list[int]]:
    """Each source's first `quota` labels not taken yet, in order; while fewer than n, the sources' further
    labels in the same order. Returns the labels and how many each source gave."""
    seen: set[int] = set()
    out: list[int] = []
    counts = [0] * len(sources)
    used = [0] * len(sources)
    for rnd in (0, 1):
        for i, (labels, quota) in enumerate(sources):
            items = labels.tolist()
            limit = n if rnd else min(n, len(out) + quota)
            while used[i] < len(items) and len(out) < limit:
                lab = items[used[i]]
                used[i] += 1
                if lab not in seen:
                    seen.add(lab)
                    out.append(lab)
                    counts[i] += 1
    return np.array(out, dtype=np.int64), counts


def default_ef(candidates: int, ef_search: int) -> int:
    """HNSW breadth for N candidates: N + min(N, 200). Static vectors are anisotropic, so ef = N finds only ~80%
    of the true coarse top N (measured on en_corpus); the extra breadth matters most for small N."""
    return max(ef_search, candidates + min(candidates, 200))
