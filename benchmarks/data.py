"""The benchmarks' only reader of data: en/zh corpus sentences, SciFact, similarity words (never synthetic text).

One data root for everything: edgeemb.eval.data.data_root() ($EDGEEMB_DATA, else <checkout>/../shared/data).
Corpus row i is data line i of the TSV after its header, the text after the first tab; the index benchmarks
name documents "en-<row>" and the vector cache stores row i at row i, so every reader here keeps that order.
"""
from __future__ import annotations

import functools
import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from edgeemb.eval import data as eval_data
from edgeemb.eval.data import DataNotFound

DataMissing = DataNotFound  # one exception for a missing benchmark or eval file
CORPORA = {"en_corpus": ("en_corpus", "en_sentences.tsv"), "zh_corpus": ("zh_corpus", "zh_sentences.tsv")}
SCIFACT = "beir_scifact"
DATASETS = (*CORPORA, "scifact_corpus")  # what the vector cache can encode (cache.py)


def data_root() -> Path:
    """Where the data lives: $EDGEEMB_DATA, else <checkout>/../shared/data (the eval suite's root)."""
    return eval_data.data_root()


def data_file(folder: str, name: str) -> Path:
    """Path of a data file; DataMissing names it when absent."""
    path = data_root() / folder / name
    if not path.is_file():
        raise DataMissing(f"benchmark data not found: {path} (set EDGEEMB_DATA to the folder holding {folder}/)")
    return path


def require(folders: Iterable[str]) -> None:
    """Raise DataMissing naming every folder of `folders` absent under the data root (checked before a run)."""
    missing = [f for f in folders if not (data_root() / f).is_dir()]
    if missing:
        raise DataMissing(f"benchmark data not found under {data_root()}: {', '.join(missing)} "
                          "(set EDGEEMB_DATA to the folder holding them)")


def iter_sentences(corpus: str = "en_corpus", start: int = 0, n: int | None = None) -> Iterator[str]:
    """Rows start..start+n of a corpus TSV (header; source<TAB>sentence), in file order, streamed."""
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; expected one of {tuple(CORPORA)}")
    with open(data_file(*CORPORA[corpus]), encoding="utf-8") as f:
        next(f, None)
        for i, line in enumerate(f):
            if n is not None and i >= start + n:
                return
            if i >= start:
                yield line.rstrip("\n").partition("\t")[2]


def sentences(corpus: str = "en_corpus", start: int = 0, n: int | None = None) -> list[str]:
    """Rows start..start+n of a corpus, as a list."""
    return list(iter_sentences(corpus, start, n))


@functools.lru_cache(maxsize=2)
def _all_sentences(corpus: str, root: Path) -> tuple[str, ...]:
    return tuple(iter_sentences(corpus))  # root: the cache key (EDGEEMB_DATA may change between calls)


def sample_sentences(n: int, seed: int = 0, zh_share: float = 0.0) -> list[str]:
    """A fixed random sample of corpus sentences (mixed lengths, corpus order shuffled): the throughput set."""
    rng = random.Random(seed)
    n_zh = round(n * zh_share)
    picked = rng.sample(_all_sentences("en_corpus", data_root()), n - n_zh)
    if n_zh:
        picked += rng.sample(_all_sentences("zh_corpus", data_root()), n_zh)
        rng.shuffle(picked)
    return picked


def held_out_queries(n: int, start: int = 100_000) -> list[str]:
    """en_corpus rows after the indexed ones: in-distribution queries for recall."""
    return sentences("en_corpus", start, n)


def scifact(split: str = "test") -> eval_data.RetrievalSet:
    """BEIR SciFact as the eval suite reads it: corpus (title + " " + text), the split's queries, qrels."""
    return _scifact(split, data_root())


@functools.lru_cache(maxsize=2)
def _scifact(split: str, root: Path) -> eval_data.RetrievalSet:
    return eval_data.load_scifact(split, data_dir=root)


def scifact_queries(n: int | None = None) -> list[str]:
    """SciFact query texts: the test queries, then the train ones (1,109 in all), in qrels order."""
    texts = list(scifact("test").queries.values()) + list(scifact("train").queries.values())
    return texts[:n] if n is not None else texts


def scifact_corpus() -> tuple[list[str], list[str]]:
    """SciFact document ids and texts, in corpus.jsonl order."""
    corpus = scifact("test").corpus
    return list(corpus), list(corpus.values())


def dataset_texts(name: str) -> Iterator[str]:
    """The texts of a dataset the vector cache encodes, row by row: a corpus, or the SciFact documents."""
    if name == "scifact_corpus":
        return iter(scifact_corpus()[1])
    return iter_sentences(name)


def similarity_words() -> list[str]:
    """The distinct words of WordSim-353 and SimLex-999 (real word queries), in file order."""
    words: dict[str, None] = {}
    for name in ("wordsim353", "simlex999"):
        for w1, w2, _ in eval_data.load_wordsim(name, data_dir=data_root()):
            words[w1] = words[w2] = None
    return list(words)


def sort_by_tokens(texts: list[str], tokenizer_json: str | os.PathLike) -> list[str]:
    """The texts ordered by token count under a tokenizer.json (the 'presorted' input a peer is given)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.no_truncation()
    lengths = [len(e.ids) for e in tok.encode_batch(texts)]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    return [texts[i] for i in order]
