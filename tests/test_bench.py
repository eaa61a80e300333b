"""The bench harness: arithmetic, schema, reports, the decision rule and the worker protocol on fake timings."""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import pytest
from edgeemb_bench import harness, lowend, recommend, report, runner
from edgeemb_bench.cli import parse_mb


@pytest.mark.parametrize("samples", [[3.0], [5.0, 1.0], [2.0, 9.0, 4.0, 4.0, 7.5], list(np.linspace(0.1, 80, 37))])
@pytest.mark.parametrize("p", [0, 50, 95, 99, 100])
def test_percentile_matches_numpy_linear(samples, p):
    assert harness.percentile(samples, p) == pytest.approx(float(np.percentile(samples, p)))


def test_percentile_edges():
    assert math.isnan(harness.percentile([], 50))
    with pytest.raises(ValueError):
        harness.percentile([1.0], 101)


def test_summarize_fake_timings():
    s = harness.summarize([float(x) for x in range(1, 101)])
    assert s["n"] == 100 and s["min"] == 1.0 and s["max"] == 100.0
    assert s["p50"] == pytest.approx(50.5) and s["p95"] == pytest.approx(95.05) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5)
    assert harness.summarize([])["n"] == 0


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


def test_rotations_and_interleave_cover_every_engine_each_round():
    orders = harness.rotations(["a", "b", "c"], 4)
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    calls = []

    def runner_for(name):
        def run(r):
            calls.append((r, name))
            return [float(r)]
        return run

    out = harness.interleave({n: runner_for(n) for n in "ab"}, 3)
    assert calls == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    assert out == {"a": [0.0, 1.0, 2.0], "b": [0.0, 1.0, 2.0]}


def test_verdict_margins():
    v = runner.verdict({"latency": {"p95": 20.0}, "peak_rss_mb": 250.0, "n_docs": 100_000})
    assert v["meets"] and v["latency_margin"] == pytest.approx(0.8) and v["memory_margin"] == pytest.approx(0.5)
    v = runner.verdict({"latency": {"p95": 20.0}, "peak_rss_mb": 510.0})
    assert not v["meets"] and v["memory_margin"] < 0
    v = runner.verdict({"latency": {"p95": 100.0}, "peak_rss_mb": 100.0})
    assert not v["meets"]  # the limit is strict: under 100 ms


def fake_duel(ours_p50=2.0, ours_tp=300.0):
    def row(p50, tp=None, engine="x"):
        r = {"engine": engine, "latency": {"p50": p50, "p95": p50 * 2}, "peak_rss_mb": 200.0, "load_s": 0.1,
             "latency_samples": [p50] * 5}
        if tp is not None:
            r["throughput"] = {"natural": tp, "presorted": tp * 1.5}
        return r
    return {"bundle": "b", "n_queries": 5, "n_sentences": 10, "batch_size": 32, "threads": 1, "cores": 1,
            "rounds": {"latency": 2, "throughput": 1}, "skipped": {"sentence-transformers torch fp32": "absent"},
            "engines": {"edgeemb": row(ours_p50, ours_tp, "edgeemb"), "floor (bare session.run)": row(1.8),
                        "fastembed 0.9.1 (same int8 file)": row(2.5, 100.0, "fastembed")}}


def test_duel_goals_are_pairwise_ratios():
    goals = {g.name: g for g in runner.duel_goals({"name": "b", "kind": "sentence"}, fake_duel(),
                                                  {"n": 100_000, "peak_rss_mb": 240.0})}
    assert goals["p50 / fastembed (same int8 file)"].value == pytest.approx(0.8)
    assert goals["p50 / bare session.run on pre-tokenised input"].value == pytest.approx(2.0 / 1.8)
    assert goals["p50 / bare session.run on pre-tokenised input"].met is True
    assert goals["throughput on unsorted text / fastembed"].value == pytest.approx(3.0)
    torch_goal = goals["throughput on unsorted text / sentence-transformers torch"]
    assert torch_goal.value is None and torch_goal.met is None
    assert goals["peak RSS encoding 100000 sentences (MB)"].met is True


def test_static_duel_goal_vs_model2vec():
    d = {"engines": {"edgeemb": {"throughput": {"natural": 9000.0}},
                     "model2vec 0.9.0": {"throughput": {"natural": 3000.0}}}}
    (g,) = runner.duel_goals({"name": "s", "kind": "static"}, d, None)
    assert g.value == pytest.approx(3.0) and g.met


def test_pareto_front():
    pts = [(1.0, 50.0), (2.0, 60.0), (3.0, 55.0), (0.5, 40.0), (4.0, 70.0), (2.0, 58.0)]
    assert report.pareto_front(pts) == [3, 0, 1, 4]
    assert report.pareto_front([]) == []


def fake_doc():
    e2e = {"n_docs": 100_000, "latency": harness.summarize([3.0, 4.0, 5.0]), "latency_samples": [3.0, 4.0, 5.0],
           "peak_rss_mb": 420.0, "first_query_ms": 9.0}
    b1 = {"name": "minilm", "path": "/x", "kind": "sentence", "quantization": "int8", "dim": 384, "size_mb": 23.5,
          "single": {"load_s": 0.1, "first_query_ms": 5.0, "latency": harness.summarize([2.0, 3.0])},
          "throughput": {"n": 10, "batch_size": 32, "1": {"natural": 300.0, "presorted": 350.0, "chunked": 100.0,
                                                            "worker_peak_rss_mb": 150.0}},
          "encode_corpus": {"n": 100_000, "seconds": 300.0, "sentences_per_s": 333.0, "peak_rss_mb": 200.0},
          "index": [{"n": 10_000, "build_s": 5.0, "disk_mb": 30.0, "build_peak_rss_mb": 100.0, "open_s": 0.1,
                     "rss_mb": 90.0, "rss_over_runtime_mb": 30.0, "query": harness.summarize([0.2, 0.3]),
                     "recall_at_10": {"16": 0.9, "64": 0.99}, "graph_query": {}, "recall_queries": 2}],
          "e2e": e2e, "verdict": runner.verdict(e2e), "errors": {}}
    b2 = {**b1, "name": "static", "kind": "static", "e2e": {**e2e, "latency": harness.summarize([0.3, 0.4]),
                                                             "peak_rss_mb": 150.0}, "index": []}
    b2["verdict"] = runner.verdict(b2["e2e"])
    return {"schema": "edgeemb-bench/1", "created": "2025-01-01T00:00:00", "command": "edgeemb bench --quick",
            "quick": True, "machine": {"cpu": "cpu", "logical_cpus": 2, "memory_mb": 1000, "python": "3.11",
                                       "onnxruntime": "1.32.0", "load_average": [1.0, 1.0, 1.0]},
            "settings": {}, "bundles": [b1, b2], "duels": [fake_duel()],
            "goals": [harness.Goal("g", 1.2, 1.15, "<=").to_dict() | {"bundle": "minilm"}],
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
    assert "| minilm | sentence |" in md and "meets (p95 margin" in md
    assert "**no**" in md  # the failed goal is reported as not met
    assert "skipped: absent" in md
    assert "| rlimit_as | 256 | 1 | load bundle: MemoryError |" in md


def test_plots_written(tmp_path):
    pytest.importorskip("matplotlib")
    quality = {"minilm": {("sts", "stsb_en", "spearman"): 82.0}, "static": {("sts", "stsb_en", "spearman"): 70.0}}
    written = report.plots(fake_doc(), tmp_path, quality)
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


def test_worker_protocol_and_rss_from_outside():
    w = harness.Worker(sys.executable, "test").start()
    try:
        assert w.call("hwm")["mb"] > 0
        with pytest.raises(harness.WorkerError, match="latency failed"):
            w.call("latency", texts=["x"])  # no engine loaded: the error comes back as a message
    finally:
        peak = w.stop()
    assert peak is not None and peak > 1 and w.exit_status == 0


def test_cli_registers_bench_and_recommend():
    from edgeemb.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--memory-limit", "1G", "b1"])
    assert args.quick and args.memory_limit == 1024 and args.bundles == ["b1"]
    args = build_parser().parse_args(["recommend", "--task", "analogy", "--gpu", "yes"])
    assert args.task == "analogy" and args.gpu == "yes" and args.latency_ms == 100.0


def test_embedding_cache_is_shared_by_name_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEEMB_BENCH_CACHE", str(tmp_path))
    path = runner.embedding_cache("all-minilm-l6-v2-int8", 100_000)
    assert path == tmp_path / "en_corpus_minilm_int8_100k.npy"  # the name other tools write too
    np.save(path, np.zeros((20, 4), np.float32))
    info = {"name": "all-minilm-l6-v2-int8", "path": "/nonexistent", "bundle_id": "x"}
    found, measured = runner.ensure_embeddings(info, 10, runner.make_plan(True), runner.Options())
    assert found == path  # reused: no encoding (the bundle path does not even exist)
    assert "not measured" in measured["note"]
    path.with_suffix(".json").write_text(json.dumps({"n": 100_000, "peak_rss_mb": 200.0}))
    _, measured = runner.ensure_embeddings(info, 10, runner.make_plan(False), runner.Options())
    assert measured["peak_rss_mb"] == 200.0


def test_plans():
    quick, full = runner.make_plan(True), runner.make_plan(False)
    assert quick.index_sizes == (10_000,) and not quick.torch_peers
    assert full.index_sizes == (10_000, 100_000) and full.n_throughput == 10_000 and full.torch_peers
    small = runner.make_plan(False, sentences=300)
    assert (small.n_throughput, small.n_duel, small.n_chunked) == (300, 300, 300)
