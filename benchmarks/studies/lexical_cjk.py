"""Keyword analysis for Chinese: BM25 over single CJK characters (what edgeemb does) vs overlapping character
bigrams (Lucene's CJKAnalyzer) vs both, on two Chinese retrieval sets built from the shared data.

Sets: `lcqmc_retrieval` (edgeemb.eval.data.load_zh_retrieval: LCQMC test paraphrase pairs, first question as the
query, second as the relevant document, among every second question and 20k zh_corpus sentences) and STS-B zh
test pairs scored >= 4 (first sentence as the query) among all second sentences and the same distractors.
SciFact checks that English is untouched. The variants are swapped in for the study only.

    .venv/bin/python -m edgeemb_bench.studies.lexical_cjk [--scifact]
"""
from __future__ import annotations

import argparse
import itertools
import re
import time

import numpy as np
from edgeemb_bench import probes

import edgeemb.search.lexical as lex
from edgeemb.eval.data import RetrievalSet, load_scifact, load_sts, load_zh_retrieval
from edgeemb.eval.metrics import ndcg_at_k, recall_at_k

_RUNS = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+)")
UNIGRAM = lex.analyze


def bigrams(text: str) -> list[str]:
    """CJK runs as overlapping bigrams (a lone character stays a unigram); other text as edgeemb analyses it."""
    out: list[str] = []
    for i, part in enumerate(_RUNS.split(text.lower())):
        if i % 2:  # a CJK run
            out += [part] if len(part) == 1 else [a + b for a, b in itertools.pairwise(part)]
        elif part:
            out += UNIGRAM(part)
    return out


def both(text: str) -> list[str]:
    return UNIGRAM(text) + [t for t in bigrams(text) if len(t) == 2 and _RUNS.fullmatch(t)]


def stsb_zh_set(distractors: dict[str, str]) -> RetrievalSet:
    pairs = load_sts("zh", "test")
    ids: dict[str, str] = {}
    for _, b, _ in pairs:
        ids.setdefault(b, f"d{len(ids)}")
    queries = {f"q{i}": a for i, (a, b, s) in enumerate(pairs) if s >= 4 and a != b}
    qrels = {q: {ids[pairs[int(q[1:])][1]]: 1} for q in queries}
    return RetrievalSet({**{d: t for t, d in ids.items()}, **distractors}, queries, qrels)


def measure(name: str, analyzer, ds: RetrievalSet) -> dict:
    lex.analyze = analyzer  # LexicalIndex analyses with the module's function
    try:
        docs = list(ds.corpus)
        t0 = time.perf_counter()
        index = lex.LexicalIndex()
        index.add(range(len(docs)), [ds.corpus[d] for d in docs])
        build_s = time.perf_counter() - t0
        ndcg, r10, r100, ms = [], [], [], []
        for q, text in ds.queries.items():
            t = time.perf_counter()
            labels, _ = index.search(text, 100)
            ms.append((time.perf_counter() - t) * 1e3)
            ranked = [docs[i] for i in labels.tolist()]
            ndcg.append(ndcg_at_k(ranked, ds.qrels[q], 10))
            r10.append(recall_at_k(ranked, ds.qrels[q], 10))
            r100.append(recall_at_k(ranked, ds.qrels[q], 100))
    finally:
        lex.analyze = UNIGRAM
    return {"analyzer": name, "ndcg@10": 100 * np.mean(ndcg), "recall@10": 100 * np.mean(r10),
            "recall@100": 100 * np.mean(r100), "terms": len(index.vocab), "build_s": build_s,
            "query_p50_ms": float(np.median(ms))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scifact", action="store_true", help="also check SciFact (English) is unchanged")
    args = ap.parse_args()
    zh = load_zh_retrieval("test")
    distractors = {d: t for d, t in zh.corpus.items() if d.startswith("zh-")}
    sets = {"lcqmc_retrieval": zh, "stsb_zh_ge4": stsb_zh_set(distractors)}
    if args.scifact:
        sets["beir_scifact"] = load_scifact()
    print(f"machine: {probes.machine()}")
    for set_name, ds in sets.items():
        print(f"\n{set_name}: {len(ds.queries)} queries, {len(ds.corpus)} documents")
        print("| analyser | nDCG@10 | R@10 | R@100 | terms | build s | query p50 ms |\n|---|---:|---:|---:|---:|---:|---:|")
        for name, fn in (("single characters", UNIGRAM), ("bigrams", bigrams), ("both", both)):
            r = measure(name, fn, ds)
            print(f"| {name} | {r['ndcg@10']:.2f} | {r['recall@10']:.2f} | {r['recall@100']:.2f} | {r['terms']} "
                  f"| {r['build_s']:.1f} | {r['query_p50_ms']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
