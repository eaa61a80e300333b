"""Real benchmark inputs from ../shared/data: SciFact queries and en/zh corpus sentences (never synthetic text)."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

EN_CORPUS = ("en_corpus", "en_sentences.tsv")
ZH_CORPUS = ("zh_corpus", "zh_sentences.tsv")
SCIFACT_QUERIES = ("beir_scifact", "queries.jsonl")


class DataMissing(FileNotFoundError):
    """A benchmark data file is not on this machine."""


def data_root() -> Path:
    """$EDGEEMB_DATA, else <checkout>/../shared/data."""
    env = os.environ.get("EDGEEMB_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_file(parts: tuple[str, str]) -> Path:
    """Path of a data file; DataMissing names it when absent."""
    path = data_root().joinpath(*parts)
    if not path.is_file():
        raise DataMissing(f"benchmark data not found: {path} (set EDGEEMB_DATA)")
    return path


def corpus_sentences(parts: tuple[str, str] = EN_CORPUS, n: int | None = None, skip: int = 0) -> list[str]:
    """Sentences of a corpus TSV (header; source<TAB>sentence) in file order, rows skip..skip+n."""
    out: list[str] = []
    with open(data_file(parts), encoding="utf-8") as f:
        next(f, None)
        for i, line in enumerate(f):
            if i < skip:
                continue
            if n is not None and len(out) >= n:
                break
            _, _, text = line.rstrip("\n").partition("\t")
            if text.strip():
                out.append(text)
    return out


def scifact_queries(n: int | None = None) -> list[str]:
    """SciFact query texts in file order (the BEIR queries file)."""
    out = []
    with open(data_file(SCIFACT_QUERIES), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line)["text"])
                if n is not None and len(out) >= n:
                    break
    return out


def sample_sentences(n: int, seed: int = 0, zh_share: float = 0.0) -> list[str]:
    """A fixed random sample of corpus sentences (mixed lengths, corpus order shuffled): the throughput set."""
    rng = random.Random(seed)
    n_zh = round(n * zh_share)
    en = corpus_sentences(EN_CORPUS)
    picked = rng.sample(en, n - n_zh)
    if n_zh:
        picked += rng.sample(corpus_sentences(ZH_CORPUS, n=200_000), n_zh)
        rng.shuffle(picked)
    return picked


def held_out_queries(n: int, start: int = 100_000) -> list[str]:
    """en_corpus sentences after the indexed ones: in-distribution queries for recall."""
    return corpus_sentences(EN_CORPUS, n=n, skip=start)


def similarity_words() -> list[str]:
    """The distinct words of WordSim-353 and SimLex-999 (real word queries), in file order."""
    words: dict[str, None] = {}
    for name in ("wordsim353.tsv", "simlex999.txt"):
        with open(data_file(("word_similarity_en", name)), encoding="utf-8") as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                for w in line.split("\t")[:2]:
                    words[w.strip()] = None
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
