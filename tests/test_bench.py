"""The bench harness: arithmetic, spread, the data reader, schema, reports, the decision rule, the worker protocol
and the refusals, on fake timings and hand-written data (no benchmark runs here)."""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import pytest
from edgeemb_bench import (
    cache,
    data,
    duels,
    harness,
    indexbench,
    lowend,
    plots,
    probes,
    recommend,
    report,
    runner,
    suite,
)
from edgeemb_bench.cli import parse_mb


# -- arithmetic ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("samples", [[3.0], [5.0, 1.0], [2.0, 9.0, 4.0, 4.0, 7.5], list(np.linspace(0.1, 80, 37))])
@pytest.mark.parametrize("p", [0, 50, 95, 99, 100])
def test_percentile_matches_numpy_linear(samples, p):
    assert harness.percentile(samples, p) == pytest.approx(float(np.percentile(samples, p)))


def test_percentile_by_hand():
    # sorted 1, 2, 4, 10: p50 sits halfway between 2 and 4; p90 at position 2.7 -> 4 + 0.7 * 6
    assert harness.percentile([10.0, 1.0, 4.0, 2.0], 50) == pytest.approx(3.0)
    assert harness.percentile([10.0, 1.0, 4.0, 2.0], 90) == pytest.approx(8.2)
    assert math.isnan(harness.percentile([], 50))
    with pytest.raises(ValueError):
        harness.percentile([1.0], 101)


def test_summarize_fake_timings():
    s = harness.summarize([float(x) for x in range(1, 101)])
    assert s["n"] == 100 and s["min"] == 1.0 and s["max"] == 100.0
    assert s["p50"] == pytest.approx(50.5) and s["p95"] == pytest.approx(95.05) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5)
    assert harness.summarize([])["n"] == 0


def test_spread_by_hand():
    assert harness.spread([1.2, 0.9, 1.0]) == {"n": 3, "min": 0.9, "median": 1.0, "max": 1.2}
    assert harness.spread([4.0, 1.0, 3.0, 2.0])["median"] == 2.5  # even count: mean of the middle two
    assert harness.spread([None, float("nan"), 2.0]) == {"n": 1, "min": 2.0, "median": 2.0, "max": 2.0}
    assert harness.spread([]) is None and harness.spread([None]) is None


def test_round_ratios_pair_rounds():
    assert harness.round_ratios([2.0, 3.0, 1.0], [1.0, 2.0, 0.0]) == [2.0, 1.5, None]
    assert harness.round_ratios([1.0, 2.0], [1.0]) == [1.0]  # only rounds both sides have


def test_ratio_and_margin():
    assert harness.ratio(3.0, 2.0) == 1.5
    assert harness.ratio(None, 2.0) is None and harness.ratio(1.0, 0.0) is None
    assert harness.ratio(float("nan"), 1.0) is None
    assert harness.margin(95.0, 100.0) == pytest.approx(0.05)
    assert harness.margin(600.0, 500.0) == pytest.approx(-0.2)
    assert harness.margin(None, 100.0) is None


@pytest.mark.parametrize("value, op, bound, met", [
    (1.1, "<=", 1.15, True), (1.2, "<=", 1.15, False), (3.0, ">=", 3.0, True), (2.9, ">=", 3.0, False),
    (None, ">=", 3.0, None), (float("nan"), "<=", 1.0, None)])
def test_goal_met(value, op, bound, met):
    g = harness.Goal("g", value, bound, op)
    assert g.met is met
    assert g.to_dict()["met"] is met


def test_goal_counts_rounds_and_reports_spread():
    g = harness.Goal("p50 ratio", 1.02, 1.0, "<=", rounds=[0.96, 1.05, 0.99, None, 1.10])
    assert g.rounds_met == (2, 4)
    d = g.to_dict()
    assert d["rounds_met"] == [2, 4] and d["value_met"] is False
    assert d["met"] is None and "a verdict needs" in d["not_judged"]  # 4 rounds: too few for a yes/no
    assert d["spread"] == {"n": 4, "min": 0.96, "median": 1.02, "max": 1.1}
    assert harness.Goal("x", None, 1.0, "<=").to_dict()["spread"] is None


def test_goal_is_judged_only_on_enough_rounds_on_one_side():
    n = harness.MIN_VERDICT_ROUNDS
    below = [0.94 + 0.01 * i for i in range(n)]
    assert harness.Goal("g", 0.96, 1.0, "<=", rounds=below).met is True
    assert harness.Goal("g", 1.04, 1.0, ">=", rounds=[x + 0.1 for x in below]).met is True
    assert harness.Goal("g", 0.96, 1.0, ">=", rounds=below).met is False  # every round misses it: a clear no
    assert harness.Goal("g", 0.96, 1.0, "<=", rounds=below[:-1]).met is None  # one round short
    noisy = harness.Goal("g", 0.99, 1.0, "<=", rounds=below[:-1] + [1.02])
    assert noisy.met is None and noisy.value_met is True and "within noise" in noisy.judgement[1]
    assert harness.Goal("g", 240.0, 250.0, "<=").met is True  # one measurement, no rounds: judged on its value


def test_rotations_and_interleave_keep_rounds_apart():
    orders = harness.rotations(["a", "b", "c"], 4)
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    calls = []

    def runner_for(name):
        def run(r):
            calls.append((r, name))
            return [float(r), float(r) + 0.5]
        return run

    out = harness.interleave({n: runner_for(n) for n in "ab"}, 3)
    assert calls == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    assert out["a"] == [[0.0, 0.5], [1.0, 1.5], [2.0, 2.5]] and out["b"] == out["a"]


def test_verdict_margins():
    v = runner.verdict({"latency": {"p95": 20.0}, "peak_rss_mb": 250.0, "n_docs": 100_000})
    assert v["meets"] and v["latency_margin"] == pytest.approx(0.8) and v["memory_margin"] == pytest.approx(0.5)
    v = runner.verdict({"latency": {"p95": 20.0}, "peak_rss_mb": 510.0})
    assert not v["meets"] and v["memory_margin"] < 0
    v = runner.verdict({"latency": {"p95": 100.0}, "peak_rss_mb": 100.0})
    assert not v["meets"]  # the limit is strict: under 100 ms


# -- duels and goals ----------------------------------------------------------------------------------------
def fake_duel():
    def row(p50s, tps=None, engine="x"):
        p50 = float(np.median(p50s))
        r = {"engine": engine, "latency": {"p50": p50, "p95": p50 * 2}, "peak_rss_mb": 200.0, "load_s": 0.1,
             "latency_samples": [p50] * 5, "latency_round_p50": p50s}
        if tps is not None:
            r["throughput"] = {"natural": float(np.median(tps)), "presorted": float(np.median(tps)) * 1.5}
            r["throughput_rounds"] = {"natural": tps, "presorted": [x * 1.5 for x in tps]}
        return r
    return {"bundle": "b", "n_queries": 5, "n_sentences": 10, "batch_size": 32, "threads": 1, "cores": 1,
            "rounds": {"latency": 3, "throughput": 3}, "warm_up": 10,
            "skipped": {"sentence-transformers torch fp32": "absent"},
            "engines": {"edgeemb": row([2.0, 2.2, 1.8], [300.0, 310.0, 290.0], "edgeemb"),
                        "floor (bare session.run)": row([1.8, 2.0, 1.8]),
                        "fastembed 0.9.1 (same int8 file)": row([2.5, 2.0, 2.0], [100.0, 100.0, 100.0],
                                                                "fastembed")}}


def test_duel_goals_are_pairwise_ratios_with_round_spread():
    goals = {g.name: g for g in duels.duel_goals({"name": "b", "kind": "sentence"}, fake_duel(),
                                                 {"n": 100_000, "peak_rss_mb": 240.0,
                                                  "mode": "streamed in 2,048-sentence chunks"})}
    fe = goals["p50 / fastembed (same int8 file)"]
    assert fe.value == pytest.approx(2.0 / 2.0)
    assert fe.rounds == pytest.approx([0.8, 1.1, 0.9])  # round by round: 2.0/2.5, 2.2/2.0, 1.8/2.0
    assert fe.rounds_met == (2, 3) and fe.to_dict()["spread"]["max"] == pytest.approx(1.1)
    floor = goals["p50 / bare session.run on pre-tokenised input"]
    assert floor.value == pytest.approx(2.0 / 1.8) and floor.value_met is True
    assert floor.met is None  # 3 rounds are too few for a verdict
    tput = goals["throughput on unsorted text / fastembed"]
    assert tput.value == pytest.approx(3.0) and tput.rounds == pytest.approx([3.0, 3.1, 2.9])
    torch_goal = goals["throughput on unsorted text / sentence-transformers torch"]
    assert torch_goal.value is None and torch_goal.met is None and torch_goal.rounds == []
    (rss,) = [g for name, g in goals.items() if name.startswith("peak RSS encoding 100000")]
    assert rss.met is True and "2,048-sentence chunks" in rss.name  # labelled with how it was encoded


def test_static_duel_goal_vs_model2vec():
    d = {"engines": {"edgeemb": {"throughput": {"natural": 9000.0},
                                 "throughput_rounds": {"natural": [9000.0, 8000.0]}},
                     "model2vec 0.9.0": {"throughput": {"natural": 3000.0},
                                         "throughput_rounds": {"natural": [3000.0, 4000.0]}}}}
    (g,) = duels.duel_goals({"name": "s", "kind": "static"}, d, None)
    assert g.value == pytest.approx(3.0) and g.value_met and g.rounds == pytest.approx([3.0, 2.0])
    assert g.met is None and g.to_dict()["not_judged"].startswith("2 rounds")


# -- reports ------------------------------------------------------------------------------------------------
def test_pareto_front():
    pts = [(1.0, 50.0), (2.0, 60.0), (3.0, 55.0), (0.5, 40.0), (4.0, 70.0), (2.0, 58.0)]
    assert plots.pareto_front(pts) == [3, 0, 1, 4]
    assert plots.pareto_front([]) == []


def fake_doc():
    e2e = {"n_docs": 10_000, "latency": harness.summarize([3.0, 4.0, 5.0]), "latency_samples": [3.0, 4.0, 5.0],
           "peak_rss_mb": 420.0, "first_query_ms": 9.0, "threads": 1, "n_queries": 3}
    b1 = {"name": "minilm", "path": "/x", "kind": "sentence", "quantization": "int8", "dim": 384, "size_mb": 23.5,
          "single": {"load_s": 0.1, "first_query_ms": 5.0, "latency": harness.summarize([2.0, 3.0]), "threads": 1},
          "throughput": {"n": 10, "batch_size": 32, "rounds": 2, "warm_up": 5,
                         "1": {"natural": 300.0, "presorted": 350.0, "chunked": 100.0, "worker_peak_rss_mb": 150.0,
                               "spread": {"natural": harness.spread([290.0, 310.0])}}},
          "encode_corpus": {"n": 100_000, "seconds": 300.0, "sentences_per_s": 333.0, "peak_rss_mb": 200.0,
                            "mode": "streamed in 2,048-sentence chunks"},
          "index": [{"n": 10_000, "build_s": 5.0, "disk_mb": 30.0, "build_peak_rss_mb": 100.0, "open_s": 0.1,
                     "rss_mb": 90.0, "rss_over_runtime_mb": 30.0, "query": harness.summarize([0.2, 0.3]),
                     "query_between_encodes": harness.summarize([0.4, 0.5]),
                     "recall_at_10": {"16": 0.9, "64": 0.99}, "graph_query": {}, "recall_queries": 2}],
          "e2e": e2e, "verdict": runner.verdict(e2e), "errors": {}}
    b2 = {**b1, "name": "static", "kind": "static", "e2e": {**e2e, "latency": harness.summarize([0.3, 0.4]),
                                                             "peak_rss_mb": 150.0}, "index": []}
    b2["verdict"] = runner.verdict(b2["e2e"])
    goal = harness.Goal("g", 1.2, 1.15, "<=", rounds=[1.1, 1.2, 1.3]).to_dict() | {"bundle": "minilm"}
    judged = harness.Goal("h", 0.96, 1.0, "<=", rounds=[0.94, 0.95, 0.96, 0.97, 0.98, 0.96]).to_dict() | \
        {"bundle": "minilm"}
    return {"schema": "edgeemb-bench/1", "created": "2025-01-01T00:00:00", "command": "edgeemb bench --quick",
            "quick": True, "machine": {"cpu": "cpu", "flags": ["avx2"], "logical_cpus": 2, "memory_mb": 1000,
                                       "python": "3.11", "onnxruntime": "1.32.0", "load_average": [1.0, 1.0, 1.0]},
            "settings": {}, "bundles": [b1, b2], "duels": [fake_duel()], "goals": [goal, judged],
            "peers_absent": {"model2vec": "not installed: run scripts/setup_peers.sh"},
            "lowend": {"cores": 1, "rlimit_as": [{"cap_mb": 256, "passed": ["import runtime"],
                                                   "failure": {"step": "load bundle", "error": "MemoryError"},
                                                   "peak_rss_mb": 60.0}],
                       "cgroup": [], "cgroup_available": False, "summary": ["x"]},
            "notes": [], "seconds": 1.0}


def test_report_json_and_markdown(tmp_path):
    doc = fake_doc()
    doc["bundles"][0]["single"]["latency"]["p99"] = float("nan")
    path = report.write_json(doc, tmp_path / "bench.json")
    back = json.loads(path.read_text())
    assert back["schema"] == "edgeemb-bench/1"
    assert back["bundles"][0]["single"]["latency"]["p99"] is None  # NaN becomes null, JSON stays valid
    for key in ("machine", "settings", "bundles", "duels", "goals", "lowend", "notes"):
        assert key in back
    md = report.to_markdown(doc)
    assert "| minilm | sentence |" in md and "meets at 10,000 docs (p95 margin" in md
    assert "from a 10,000-document index" in md  # the verdict names its index size
    assert "| g | 1.20 | 1.10–1.30, median 1.20 over 3 rounds |" in md
    assert "not judged (3 rounds; a verdict needs 5)" in md and "**no**" not in md  # never from 3 rounds
    assert "| h | 0.96 | 0.94–0.98, median 0.96 over 6 rounds | <= 1.0 | **yes** (6/6 rounds) |" in md
    assert "absent: absent" in md and "**Peers absent from this run**" in md and "- model2vec: not installed" in md
    assert "1.00 (0.80–1.10, median 0.90, 3 rounds)" in md  # edgeemb p50 ÷ fastembed: min–max, median, rounds
    assert "300 (290–310)" in md  # throughput median with its spread
    assert "between encodes" in md and "0.450 / 0.495" in md  # both index query timings, labelled
    assert "streamed in 2,048-sentence chunks" in md and "one encode() call over all" in md
    assert "| rlimit_as | 256 | 1 | load bundle: MemoryError |" in md


def test_plots_written(tmp_path):
    pytest.importorskip("matplotlib")
    quality = {"minilm": {("sts", "stsb_en", "spearman"): 82.0}, "static": {("sts", "stsb_en", "spearman"): 70.0}}
    written = plots.plots(fake_doc(), tmp_path, quality)
    assert {p.name for p in written} == {"latency.png", "quality_latency.png", "memory.png"}
    assert all(p.stat().st_size > 1000 for p in written)


def test_load_quality_reads_eval_json(tmp_path):
    f = tmp_path / "eval.json"
    f.write_text(json.dumps({"bundle": "minilm", "results": [
        {"task": "retrieval", "dataset": "beir_scifact", "metrics": {"ndcg@10": 64.1, "x": None}}],
        "compare": {"static": {"results": [{"task": "sts", "dataset": "stsb_en", "metrics": {"spearman": 70.5}}]}}}))
    q = report.load_quality([f, tmp_path / "missing.json"])
    assert report.quality_of(q, "minilm", "retrieval") == 64.1
    assert report.quality_of(q, "static", "similarity") == 70.5
    assert report.quality_of(q, "minilm", "similarity") is None


def test_recommend_rule():
    doc = fake_doc()
    cands = recommend.candidates(doc, {}, "retrieval", 100, 500)
    chosen, why = recommend.choose(cands, "retrieval", 100, 500, gpu=False)
    assert chosen.name == "minilm" and "tight budget" in why  # both fit: the small sentence encoder first
    cands = recommend.candidates(doc, {}, "retrieval", 100, 300)
    chosen, _ = recommend.choose(cands, "retrieval", 100, 300, gpu=False)
    assert chosen.name == "static"  # only the static bundle fits 300 MB
    cands = recommend.candidates(doc, {}, "analogy", 100, 500)
    chosen, _ = recommend.choose(cands, "analogy", 100, 500, gpu=False)
    assert chosen.name == "static"
    cands = recommend.candidates(doc, {}, "contextual", 1, 100)
    chosen, why = recommend.choose(cands, "contextual", 1, 100, gpu=False)
    assert chosen.name == "minilm" and why.startswith("none fits")
    quality = {"static": {("retrieval", "beir_scifact", "ndcg@10"): 70.0},
               "minilm": {("retrieval", "beir_scifact", "ndcg@10"): 60.0}}
    cands = recommend.candidates(doc, quality, "retrieval", 100, 500)
    chosen, why = recommend.choose(cands, "retrieval", 100, 500, gpu=False)
    assert chosen.name == "static" and "ndcg@10" in why  # measured quality beats the kind preference
    assert "**yes**" in recommend.table(cands, chosen)


@pytest.mark.parametrize("text, mb", [("500M", 500), ("1G", 1024), ("750MB", 750), ("512", 512), ("2048k", 2)])
def test_parse_mb(text, mb):
    if mb < 16:
        with pytest.raises(argparse.ArgumentTypeError):
            parse_mb(text)
    else:
        assert parse_mb(text) == mb


def test_lowend_summary_names_first_failure():
    sim = {"rlimit_as": [{"cap_mb": 512, "failure": None}, {"cap_mb": 256, "failure": {"step": "open index",
                                                                                         "error": "bad_alloc"}},
                         {"cap_mb": 128, "failure": {"step": "load bundle", "error": "MemoryError"}}]}
    (line,) = lowend.summarize(sim)
    assert "≥ 512 MB" in line and "at 256 MB" in line and "open index" in line


# -- the data reader ----------------------------------------------------------------------------------------
@pytest.fixture()
def fake_data(tmp_path, monkeypatch):
    """A data root with a 6-row en_corpus, a 3-row zh_corpus, a 2+1-query SciFact and two word files."""
    root = tmp_path / "data"
    (root / "en_corpus").mkdir(parents=True)
    (root / "en_corpus" / "en_sentences.tsv").write_text(
        "source\tsentence\n" + "".join(f"src\ten {i}, with a \"quote\"\n" for i in range(6)), encoding="utf-8")
    (root / "zh_corpus").mkdir()
    (root / "zh_corpus" / "zh_sentences.tsv").write_text("source\tsentence\ns\t一\ns\t二\ns\t三\n", encoding="utf-8")
    sf = root / "beir_scifact"
    (sf / "qrels").mkdir(parents=True)
    (sf / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": f"body {i}"}) + "\n"
                                             for i in range(3)), encoding="utf-8")
    (sf / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n"
                                              for i in range(4)), encoding="utf-8")
    (sf / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td0\t1\nq0\td1\t1\n", encoding="utf-8")
    (sf / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td2\t1\n", encoding="utf-8")
    (root / "word_similarity_en").mkdir()
    (root / "word_similarity_en" / "wordsim353.tsv").write_text("# c\ntiger\tcat\t7.35\ncat\tdog\t6.0\n")
    (root / "word_similarity_en" / "simlex999.txt").write_text("old\tnew\t1.58\ntiger\tlion\t8.0\n")
    monkeypatch.setenv("EDGEEMB_DATA", str(root))
    return root


def test_data_reader_rows_in_file_order(fake_data):
    assert data.data_root() == fake_data
    assert data.sentences("en_corpus", 0, 2) == ['en 0, with a "quote"', 'en 1, with a "quote"']
    assert data.sentences("en_corpus", 4) == ['en 4, with a "quote"', 'en 5, with a "quote"']  # to the end
    assert data.held_out_queries(1, start=3) == ['en 3, with a "quote"']
    assert data.sentences("zh_corpus") == ["一", "二", "三"]
    assert list(data.dataset_texts("scifact_corpus")) == ["T0 body 0", "T1 body 1", "T2 body 2"]
    with pytest.raises(ValueError, match="unknown corpus"):
        data.sentences("fr_corpus")


def test_data_reader_samples_are_fixed(fake_data):
    a, b = data.sample_sentences(4, seed=3), data.sample_sentences(4, seed=3)
    assert a == b and len(set(a)) == 4 and set(a) <= set(data.sentences("en_corpus"))
    mixed = data.sample_sentences(4, seed=3, zh_share=0.5)
    assert sum(t in ("一", "二", "三") for t in mixed) == 2


def test_data_reader_scifact_and_words(fake_data):
    assert data.scifact_queries() == ["query 2", "query 0", "query 3"]  # test queries (qrels order), then train
    assert data.scifact_queries(1) == ["query 2"]
    assert data.scifact_corpus() == (["d0", "d1", "d2"], ["T0 body 0", "T1 body 1", "T2 body 2"])
    assert data.similarity_words() == ["tiger", "cat", "dog", "old", "new", "lion"]


def test_data_reader_names_what_is_missing(fake_data, tmp_path, monkeypatch):
    data.require(["en_corpus", "beir_scifact"])
    with pytest.raises(data.DataMissing, match="stsb_en, lcqmc"):
        data.require(["en_corpus", "stsb_en", "lcqmc"])
    monkeypatch.setenv("EDGEEMB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(data.DataMissing, match="en_sentences.tsv"):
        data.sentences("en_corpus")


# -- refusals: no data, no bundle, nothing measured ---------------------------------------------------------
def test_quick_bench_without_data_refuses_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from edgeemb.cli import main

    monkeypatch.setenv("EDGEEMB_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("EDGEEMB_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["bench", "--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "benchmark data not found" in err and "en_corpus, beir_scifact" in err and "nothing written" in err
    assert not out.exists() and not (tmp_path / "cache" / "latest.json").exists()
    # recommend would run that quick bench when nothing was measured yet: it refuses the same way
    assert main(["recommend"]) == 2
    assert "refused" in capsys.readouterr().err and not (tmp_path / "cache" / "latest.json").exists()


def test_bench_without_bundles_refuses(fake_data, tmp_path, monkeypatch, capsys):
    from edgeemb.cli import main

    monkeypatch.setenv("EDGEEMB_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(suite, "default_bundles", list)
    assert main(["bench", "--quick", "--out", str(tmp_path / "out")]) == 2
    assert "no bundle to measure" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_run_that_measured_nothing_refuses(fake_data, tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "default_bundles", lambda: [tmp_path])
    monkeypatch.setattr(suite, "bench_bundle", lambda folder, plan, opts, doc: {
        "name": "b", "errors": {"single": "worker died"}, "single": None, "throughput": None})
    monkeypatch.setattr(duels, "word_duel", lambda plan: {"skipped": "no GloVe"})
    with pytest.raises(suite.NothingToMeasure, match="b: single: worker died"):
        suite.run_bench([], True, runner.Options())


# -- workers, probes, caches --------------------------------------------------------------------------------
def test_worker_protocol_and_rss_from_outside():
    w = harness.Worker(sys.executable, "test").start()
    try:
        assert w.call("hwm")["mb"] > 0
        with pytest.raises(harness.WorkerError, match="latency failed"):
            w.call("latency", texts=["x"])  # no engine loaded: the error comes back as a message
        assert w.call("import", modules=["json"]) == {"ok": True}
        assert w.call(indexbench.op_baseline) == {"ok": True}  # a function op, imported by the worker
        assert probes.resident_kb(w.pid)["VmRSS"] > 1000
    finally:
        peak = w.stop()
    assert peak is not None and peak > 1 and w.exit_status == 0
    assert harness.op_ref(indexbench.op_baseline) == "edgeemb_bench.indexbench:op_baseline"


def test_side_by_side_keeps_every_round(default_bundle):
    """Two real engines on the default bundle, 2 rounds of 3 queries and 4 sentences in two orders."""
    queries = ["what is a cell?", "vitamin d and bones", "a third query"]
    texts = ["one sentence.", "a second, longer sentence here.", "three", "and the fourth one of them"]
    contenders = [duels.Contender("edgeemb", "edgeemb", {"bundle": str(default_bundle), "threads": 1}),
                  duels.Contender("floor", "floor", {"bundle": str(default_bundle), "threads": 1}, throughput=False),
                  duels.Contender("broken", "edgeemb", {"bundle": "/nonexistent", "threads": 1})]
    rows, failed = duels.side_by_side(contenders, queries, 2, {"natural": texts, "presorted": texts[::-1]},
                                      warm=texts, label="test")
    assert set(rows) == {"edgeemb", "floor"} and "failed to load" in failed["broken"]
    ours = rows["edgeemb"]
    assert ours["latency"]["n"] == 6 and len(ours["latency_round_p50"]) == 2
    assert {m: len(v) for m, v in ours["throughput_rounds"].items()} == {"natural": 2, "presorted": 2}
    assert "throughput" not in rows["floor"] and rows["floor"]["peak_rss_mb"] > 10


def test_machine_description():
    m = probes.machine()
    assert m["logical_cpus"] >= 1 and m["physical_cores"] >= 1 and len(m["load_average"]) == 3
    assert m["versions"]["onnxruntime"] == m["onnxruntime"] and m["cpu"]
    assert set(m["flags"]) <= set(probes.FLAGS_OF_INTEREST)


def test_cli_registers_bench_and_recommend():
    from edgeemb.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--memory-limit", "1G", "b1"])
    assert args.quick and args.memory_limit == 1024 and args.bundles == ["b1"]
    args = build_parser().parse_args(["recommend", "--task", "analogy", "--gpu", "yes"])
    assert args.task == "analogy" and args.gpu == "yes" and args.latency_ms == 100.0


def test_vector_cache_is_keyed_by_bundle_id_and_reused(default_bundle, tmp_path, monkeypatch):
    from edgeemb import read_manifest

    monkeypatch.setenv("EDGEEMB_BENCH_CACHE", str(tmp_path))
    bundle_id = read_manifest(default_bundle).bundle_id
    path = cache.vectors_path("en_corpus", bundle_id)
    assert path.parent == tmp_path / "vectors" and "@" not in path.name
    path.parent.mkdir()
    np.save(path, np.zeros((20, 4), np.float32))
    found, measured = cache.ensure_vectors(default_bundle, "en_corpus", 10)
    assert found == path and "not measured" in measured["note"]  # reused: 20 rows serve 10, no encoding
    path.with_suffix(".json").write_text(json.dumps({"n": 20, "peak_rss_mb": 200.0}))
    _, measured = cache.ensure_vectors(default_bundle, "en_corpus", 10, measure=True)
    assert measured["peak_rss_mb"] == 200.0


def test_plans():
    quick, full = runner.make_plan(True), runner.make_plan(False)
    assert quick.index_sizes == (10_000,) and not quick.torch_peers
    assert full.index_sizes == (10_000, 100_000) and full.n_throughput == 10_000 and full.torch_peers
    assert full.ratio_rounds == 6 and full.n_latency == 300  # ratio verdicts: 6 rounds of 300 queries
    assert full.ratio_rounds >= harness.MIN_VERDICT_ROUNDS > quick.ratio_rounds  # a quick run judges no ratio
    small = runner.make_plan(False, sentences=300)
    assert (small.n_throughput, small.n_duel, small.n_chunked) == (300, 300, 300)
