"""Word-level queries on a static bundle, with gensim's KeyedVectors names and semantics."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from .backend import StaticModel


class WordNotFound(InputError, KeyError):
    """A word is not in a static bundle's vocabulary (and has no subword n-grams to build it from)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WordVectors:
    """The vocabulary and vectors of a static bundle (`Encoder.wv`), queried as gensim's KeyedVectors are.

    `words`/`index_to_key` (bundle order, usually by frequency), `key_to_index`, `vectors` (float32, V x dim),
    `kv["word"]`, `"word" in kv`, `len(kv)`, most_similar (3CosAdd), most_similar_cosmul, similar_by_word,
    similar_by_vector, similarity, n_similarity, distance(s), doesnt_match. Results equal gensim's for fp32
    bundles; int8 tables round each vector, which can swap near-tied ranks (docs/results/static.md).
    """

    def __init__(self, model: StaticModel):
        self.model = model
        self._words: list[str] | None = None
        self._index: dict[str, int] | None = None
        self._dense: np.ndarray | None = None
        self._norms: np.ndarray | None = None

    @property
    def index_to_key(self) -> list[str]:
        """The vocabulary in table order (frequency order for word2vec, GloVe and fastText files)."""
        if self._words is None:
            words = [""] * self.model.vocab_size
            assert self.model.tokenizer is not None  # set by load_static before any word query
            for word, i in self.model.tokenizer.tokenizer.get_vocab(with_added_tokens=True).items():
                if 0 <= i < self.model.vocab_size:
                    words[i] = word
            self._words = words
        return self._words

    @property
    def vectors(self) -> np.ndarray:
        """The table as float32 (V, dim), dequantised, without SIF weights; computed once."""
        if self._dense is None:
            dense = np.asarray(self.model.table, dtype=np.float32)
            self._dense = dense * self.model.scales[:, None] if self.model.scales is not None else dense
        return self._dense

    @property
    def key_to_index(self) -> dict[str, int]:
        """Word -> row (the first row of a word listed twice; the unknown token left out)."""
        if self._index is None:
            index: dict[str, int] = {}
            for i, w in enumerate(self.index_to_key):
                if i != self.model.unk_id and w:
                    index.setdefault(w, i)
            self._index = index
        return self._index

    def __len__(self) -> int:
        return self.model.vocab_size

    def __contains__(self, word: object) -> bool:
        """True when the word has a vector: its own row, or (fastText) one built from its n-grams."""
        return isinstance(word, str) and (self._row(word) is not None or self._subword_vector(word) is not None)

    def __getitem__(self, key: str | Sequence[str]) -> np.ndarray:
        """kv["word"] is get_vector("word"); a list of words gives their vectors stacked."""
        if isinstance(key, str):
            return self.get_vector(key)
        return np.vstack([self.get_vector(k) for k in key])

    def _row(self, word: str) -> int | None:
        index = self.key_to_index
        i = index.get(word)
        return index.get(self.model.normal_word(word)) if i is None else i

    def has_index_for(self, word: str) -> bool:
        """True when the word has its own row (not counting fastText n-gram vectors)."""
        return self._row(word) is not None

    def _subword_vector(self, word: str) -> np.ndarray | None:
        subwords = self.model.subwords
        return subwords.vector(self.model.normal_word(word)) if subwords is not None else None

    def get_vector(self, word: str, norm: bool = False) -> np.ndarray:
        """The word's float32 vector (fastText bundles build unknown words from n-grams); KeyError if none."""
        i = self._row(word)
        if i is not None:
            vec = self.vectors[i]
        else:
            vec = self._subword_vector(word)
            if vec is None:
                raise WordNotFound(f"word {word!r} is not in the vocabulary of {self.model.manifest.name}")
        if norm:
            n = float(np.linalg.norm(vec))
            return np.asarray(vec / n if n > 0 else vec.copy())
        return np.asarray(vec.copy())

    def _norm_rows(self) -> np.ndarray:
        if self._norms is None:
            self._norms = np.asarray(np.linalg.norm(self.vectors, axis=1))
        return self._norms

    def _weighted_keys(self, positive: Any, negative: Any) -> tuple[list[Any], list[float]]:
        positive, negative = _as_list(positive), _as_list(negative)
        keys: list[Any] = []
        weights: list[float] = []
        for item, default in [(p, 1.0) for p in positive] + [(n, -1.0) for n in negative]:
            if isinstance(item, tuple):
                keys.append(item[0])
                weights.append(float(item[1]))
            else:
                keys.append(item)
                weights.append(default)
        return keys, weights

    def _scores(self, mean: np.ndarray, restrict_vocab: int | None) -> np.ndarray:
        end = min(restrict_vocab or self.model.vocab_size, self.model.vocab_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            dists = self.vectors[:end] @ mean / self._norm_rows()[:end]
        return np.asarray(np.nan_to_num(dists, nan=-np.inf))

    def _exclude(self, keys: list[Any]) -> set[int]:
        return {i for k in keys if isinstance(k, str) and (i := self._row(k)) is not None}

    def most_similar(self, positive: Any = None, negative: Any = None, topn: int | None = 10,
                     restrict_vocab: int | None = None) -> list[tuple[str, float]] | np.ndarray:
        """Words nearest to the mean of unit vectors (+positive, -negative): 3CosAdd, as gensim computes it."""
        if topn is not None and topn < 1:
            return []
        keys, weights = self._weighted_keys(positive, negative)
        if not keys:
            raise InputError("most_similar needs at least one positive or negative word")
        mean = np.zeros(self.model.manifest.dim, np.float32)
        for key, w in zip(keys, weights):
            vec = np.asarray(key, np.float32) if isinstance(key, np.ndarray) else self.get_vector(key, norm=True)
            mean += np.float32(w) * vec
        mean /= np.float32(sum(abs(w) for w in weights))
        n = float(np.linalg.norm(mean))
        mean = mean / n if n > 0 else mean
        return self._top(self._scores(mean, restrict_vocab), topn, self._exclude(keys))

    def most_similar_cosmul(self, positive: Any = None, negative: Any = None, topn: int | None = 10,
                            restrict_vocab: int | None = None) -> list[tuple[str, float]] | np.ndarray:
        """3CosMul (Levy & Goldberg 2014, cosines shifted to [0, 1]), as gensim computes it."""
        if topn is not None and topn < 1:
            return []
        positive, negative = _as_list(positive), _as_list(negative)
        if not positive:
            raise InputError("most_similar_cosmul needs at least one positive word")

        def shifted(terms: list[Any]) -> list[np.ndarray]:
            return [(1 + self._scores(t if isinstance(t, np.ndarray) else self.get_vector(t, norm=True),
                                      restrict_vocab)) / 2 for t in terms]

        neg = shifted(negative)
        dists = np.prod(shifted(positive), axis=0) / ((np.prod(neg, axis=0) if neg else 1.0) + 1e-6)
        return self._top(dists, topn, self._exclude(positive + negative))

    def _top(self, dists: np.ndarray, topn: int | None, exclude: set[int]) -> list[tuple[str, float]] | np.ndarray:
        if not topn:
            return dists
        k = min(topn + len(exclude), len(dists))
        best = np.argpartition(-dists, k - 1)[:k] if k < len(dists) else np.arange(len(dists))
        best = best[np.argsort(-dists[best], kind="stable")]
        words = self.index_to_key
        return [(words[i], float(dists[i])) for i in best if i not in exclude][:topn]

    def similar_by_word(self, word: str, topn: int | None = 10,
                        restrict_vocab: int | None = None) -> list[tuple[str, float]] | np.ndarray:
        """The topn words nearest to a word (most_similar of that word alone)."""
        return self.most_similar(positive=[word], topn=topn, restrict_vocab=restrict_vocab)

    def similar_by_vector(self, vector: np.ndarray, topn: int | None = 10,
                          restrict_vocab: int | None = None) -> list[tuple[str, float]] | np.ndarray:
        """The topn words nearest to a vector (no word is excluded)."""
        return self.most_similar(positive=[np.asarray(vector, np.float32)], topn=topn, restrict_vocab=restrict_vocab)

    def similarity(self, w1: str, w2: str) -> float:
        """Cosine of two words' vectors; KeyError for a word with no vector."""
        return float(self.get_vector(w1, norm=True) @ self.get_vector(w2, norm=True))

    def n_similarity(self, ws1: Sequence[str], ws2: Sequence[str]) -> float:
        """Cosine of the means of two word sets' raw vectors (gensim's n_similarity)."""
        if not len(ws1) or not len(ws2):
            raise InputError("n_similarity needs two non-empty lists of words")
        a, b = self[list(ws1)].mean(axis=0), self[list(ws2)].mean(axis=0)
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0

    def distance(self, w1: str, w2: str) -> float:
        """1 - cosine of two words' vectors."""
        return 1.0 - self.similarity(w1, w2)

    def distances(self, word_or_vector: str | np.ndarray, other_words: Sequence[str] = ()) -> np.ndarray:
        """1 - cosine from a word (or vector) to each of other_words, or to every word when none are given."""
        vec = self.get_vector(word_or_vector, norm=True) if isinstance(word_or_vector, str) \
            else np.asarray(word_or_vector, np.float32)
        if not other_words:
            return 1.0 - self._scores(vec / max(float(np.linalg.norm(vec)), 1e-12), None)
        others = self[list(other_words)]
        sims = others @ vec / np.maximum(np.linalg.norm(others, axis=1) * np.linalg.norm(vec), 1e-12)
        return np.asarray((1.0 - sims).astype(np.float32))

    def doesnt_match(self, words: Sequence[str]) -> str:
        """The word furthest from the mean of the given words' unit vectors; words with no vector are ignored."""
        used = [w for w in _as_list(words) if self._row(w) is not None or self.model.subwords is not None]
        if not used:
            raise InputError("doesnt_match needs at least one word with a vector")
        vecs = np.vstack([self.get_vector(w, norm=True) for w in used]).astype(np.float32)
        mean = vecs.mean(axis=0)
        n = float(np.linalg.norm(mean))
        dists = vecs @ (mean / n if n > 0 else mean)
        return str(min(zip(dists.tolist(), used))[1])


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    if isinstance(x, (str, np.ndarray, tuple)):
        return [x]
    return list(x)
