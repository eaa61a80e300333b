"""Multilingual static bundle study (docs/results/static-multilingual.md): quality and one-core throughput.

    python -m edgeemb_bench.studies.static_multilingual quality BUNDLE... [--split dev|test] [--no-retrieval]
    taskset -c 1 python -m edgeemb_bench.studies.static_multilingual throughput BUNDLE... [--n 20000]

quality: STS-B en, STS-B zh (CNSD), LCQMC (Spearman x100) and SciFact nDCG@10 on the whole split, each bundle on
one thread (dev splits choose settings, test splits report them). throughput: each bundle in its own worker
pinned to one core (duels.side_by_side), rotating rounds of single-query latency and batch throughput on en, zh
and mixed corpus sentences; load average before and after.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from edgeemb_bench import data, probes
from edgeemb_bench.duels import Contender, side_by_side
from edgeemb_bench.harness import spread, summarize


def cmd_quality(args) -> None:
    """Each bundle on the four sets (whole split; SciFact only with the test split)."""
    import warnings

    import edgeemb
    from edgeemb.eval import data as eval_data
    from edgeemb.eval import tasks

    sts = [("stsb-en", eval_data.load_sts("en", args.split)), ("stsb-zh", eval_data.load_sts("zh", args.split))]
    pairs = [("lcqmc", eval_data.load_lcqmc(args.split))]
    out = {"split": args.split, "load_before": probes.load_average()[0], "models": {}}
    for bundle in args.bundles:
        enc = edgeemb.load(bundle, threads=1)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = tasks.sts(enc, sts) + tasks.pair(enc, pairs)
            if args.split == "test" and not args.no_retrieval:
                res += tasks.run_task("retrieval", enc, datasets=["beir_scifact"])
        row = {r.dataset: round(r.metrics.get("ndcg@10", r.metrics.get("spearman", float("nan"))), 2) for r in res}
        size = sum(f.stat().st_size for f in enc.path.iterdir() if f.is_file())
        out["models"][enc.name] = {**row, "bundle_mb": round(size / 1e6, 2), "seconds": round(time.perf_counter() - t, 1)}
        print(enc.name, json.dumps(out["models"][enc.name]), file=sys.stderr, flush=True)
    out["load_after"] = probes.load_average()[0]
    print(json.dumps(out, indent=2))


def cmd_throughput(args) -> None:
    """Sentences/s and single-query latency per bundle on en, zh and mixed sentences, one pinned core each."""
    en, zh = data.sentences("en_corpus", 0, args.n), data.sentences("zh_corpus", 0, args.n)
    mixed = [t for pair in zip(en[:args.n // 2], zh[:args.n // 2]) for t in pair]
    contenders = [Contender(b.rstrip("/").split("/")[-1], "edgeemb", {"bundle": b, "threads": 1}, batch_size=32)
                  for b in args.bundles]
    load0 = probes.load_average()
    rows, failed = side_by_side(contenders, mixed[:args.queries], args.rounds, {"en": en, "zh": zh, "mixed": mixed},
                                mixed, label="multilingual static throughput")
    if failed:
        sys.exit(f"throughput: {failed}")
    out = {"sentences": args.n, "rounds": args.rounds, "machine": probes.machine(), "load_before": load0,
           "load_after": probes.load_average(), "engines": {
               name: {"load_s": r["load_s"], "sentences_per_s": r["throughput"],
                      "spread": {k: spread(v) for k, v in r["throughput_rounds"].items()},
                      "single": summarize(r["latency_samples"]), "peak_rss_mb": r["peak_rss_mb"]}
               for name, r in rows.items()}}
    print(json.dumps(out, indent=2))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("bundles", nargs="+")
    q.add_argument("--split", choices=("dev", "test"), default="test")
    q.add_argument("--no-retrieval", action="store_true")
    q.set_defaults(func=cmd_quality)
    t = sub.add_parser("throughput")
    t.add_argument("bundles", nargs="+")
    t.add_argument("--n", type=int, default=20000, help="sentences of each corpus")
    t.add_argument("--queries", type=int, default=300)
    t.add_argument("--rounds", type=int, default=3)
    t.set_defaults(func=cmd_throughput)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
