"""Standalone studies behind docs/results (hybrid, static, llm, ...): each runs on the suite's shared pieces.

Run one as `.venv/bin/python -m edgeemb_bench.studies.NAME --help`. A study reads data only through `data`,
times only through `harness` (Worker, interleaved rounds, percentiles, spread) and describes the machine and
memory only through `probes`; the three lines to use them:

    from edgeemb_bench import data, harness, probes
    texts = data.sentences("en_corpus", n=1000); queries = data.scifact_queries(300)  # EDGEEMB_DATA honoured
    w = harness.Worker(sys.executable, "x").start(); ms = w.call("latency", texts=queries)["ms"]; peak = w.stop()

(after `w.call("load", engine="edgeemb", spec={"bundle": "default", "threads": 1})`). Then
`harness.summarize(ms)`, `harness.spread(per_round_values)` and `probes.machine()` go in the results; a study's
own worker op is any `def op_x(state, **args) -> dict` passed as `w.call(op_x, ...)`, and
`probes.resident_kb(w.pid)` reads what that worker holds from outside. Vectors of a dataset by a bundle are
cached once for all studies: `cache.ensure_vectors(bundle, "en_corpus", n)`.
"""
