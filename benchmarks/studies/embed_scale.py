"""Embedding-job scale study (issue 18): `edgeemb.jobs.embed_corpus` on en_corpus, local vs Ray Data.

    .venv/bin/python benchmarks/studies/embed_scale.py run --n 50000            # the four configurations
    .venv/bin/python benchmarks/studies/embed_scale.py run --n 5000 --rounds 3  # on a loaded machine

Each configuration runs in a fresh process pinned with taskset (1-core ones on core 1, 2-core ones on cores 0-1;
the Ray cluster, started by that process, inherits the pinning): local 1 thread, local 2 threads, Ray 1 actor x 1
thread, Ray 2 actors x 1 thread. Timed: the whole `embed_corpus` call (bundle load, corpus scan, actors starting
and loading their bundle, encoding, shard writing); the Ray cluster's own start is timed apart. Peak RSS: the
process's (local) or each actor's VmHWM, sampled from /proc while it runs. The 1-minute load average is recorded
before and after each run. Results go to .cache/embed_scale/ (JSON) and a Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "data" / "en_corpus" / "en_sentences.tsv"
WORK = ROOT / ".cache" / "embed_scale"
CONFIGS = {  # name -> (engine, workers, threads, cores to pin)
    "local-1t": ("local", None, 1, "1"),
    "local-2t": ("local", None, 2, "0,1"),
    "ray-1x1": ("ray", 1, 1, "1"),
    "ray-2x1": ("ray", 2, 1, "0,1"),
}


def load1() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def subset(n: int) -> Path:
    """The first n sentences of en_corpus as a .tsv (header kept) under .cache (never in the repo)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"en_{n}.tsv"
    if not path.is_file():
        with open(CORPUS, encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i > n:
                    break
                dst.write(line)
    return path


class HwmSampler:
    """Polls /proc/<pid>/status VmHWM of the actor pids the embed job's test hook writes into a folder."""

    def __init__(self, folder: Path):
        self.folder, self.peaks = folder, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for p in self.folder.iterdir():
                try:
                    with open(f"/proc/{p.name}/status", encoding="ascii") as f:
                        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
                except (OSError, StopIteration, ValueError):
                    continue
                self.peaks[p.name] = max(self.peaks.get(p.name, 0), kb)

    def __enter__(self) -> HwmSampler:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_one(name: str, corpus: Path, block: int) -> dict:
    """One configuration in this process: embed `corpus` into a temporary folder and return the figures."""
    from edgeemb.jobs import embed_corpus

    engine, workers, threads, _ = CONFIGS[name]
    row = {"config": name, "load_before": load1()}
    with tempfile.TemporaryDirectory(prefix="embed-scale-") as tmp:
        pids = Path(tmp) / "pids"
        pids.mkdir()
        if engine == "ray":
            import ray

            os.environ["EDGEEMB_EMBED_ACTOR_PIDS"] = str(pids)
            start = time.perf_counter()
            ray.init(num_cpus=workers * threads, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            row["cluster_start_s"] = round(time.perf_counter() - start, 2)
        with HwmSampler(pids) as hwm:
            res = embed_corpus(corpus, "default", Path(tmp) / "out", engine=engine, workers=workers, threads=threads,
                               block_rows=block, text_field="sentence")
        if engine == "ray":
            ray.shutdown()
    w, times = workers or 1, res.shard_times
    row.update({"rows": res.rows, "seconds": round(res.seconds, 2), "docs_per_s": round(res.rows / res.seconds, 1),
                "first_shard_s": times[w - 1] if len(times) >= w else None,
                "encode_s": round(res.encode_seconds, 2),  # summed over workers
                "worker_docs_per_s": round(res.encoded / res.encode_seconds, 1) if res.encode_seconds else None,
                "busy_share": round(res.encode_seconds / (w * res.seconds), 3),
                "write_s": round(res.write_seconds, 2), "load_after": load1(),
                "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
    if hwm.peaks:
        row["actor_peak_rss_mb"] = sorted(round(kb / 1024) for kb in hwm.peaks.values())
    return row


def cmd_run(args) -> int:
    corpus = subset(args.n)
    results = []
    for rnd in range(args.rounds):
        for name in args.configs:
            cores = CONFIGS[name][3]
            cmd = ["taskset", "-c", cores, sys.executable, __file__, "one", name, str(corpus), "--block",
                   str(args.block)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=args.timeout)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            row = {**json.loads(out.stdout.strip().splitlines()[-1]), "round": rnd, "cores": cores}
            print(json.dumps(row), file=sys.stderr)
            results.append(row)
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"results-{args.n}.json"
    path.write_text(json.dumps({"n": args.n, "block": args.block, "rounds": args.rounds, "cpu": cpu_name(),
                                "results": results}, indent=1))
    print(table(results))
    print(f"\n(results in {path.relative_to(ROOT)})")
    return 0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def w_of(name: str) -> int:
    """Workers of a configuration (1 for local)."""
    return CONFIGS[name][1] or 1


def table(results: list[dict]) -> str:
    """Markdown: per configuration the best and median rate over rounds, loads, peak RSS; then the ratios."""
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["config"], []).append(r)
    lines = [("| configuration | cores | docs/s end to end, best (median) | workers x docs/s of encoding time, best | s to first shard "
              "| load 1-min before/after | peak RSS MB (driver; actors) | cluster start s |"),
             "|---|---|---|---|---|---|---|---|"]
    best, steady = {}, {}
    for name, rows in by.items():
        top = max(rows, key=lambda r: r["docs_per_s"])
        best[name] = top["docs_per_s"]
        steady[name] = w_of(name) * max((r["worker_docs_per_s"] or 0) for r in rows)
        med = statistics.median(r["docs_per_s"] for r in rows)
        loads = ", ".join(f"{r['load_before']}/{r['load_after']}" for r in rows)
        rss = f"{top['driver_peak_rss_mb']}" + (f"; {top['actor_peak_rss_mb']}" if "actor_peak_rss_mb" in top else "")
        lines.append(f"| {name} | {top['cores']} | {top['docs_per_s']:,.0f} ({med:,.0f}) | {steady[name]:,.0f} | "
                     f"{top['first_shard_s']} | {loads} | {rss} | {top.get('cluster_start_s', '')} |")
    ratios = []
    for what, rate in (("end to end", best), ("encoding time only", steady)):
        if {"ray-1x1", "ray-2x1"} <= rate.keys() and rate["ray-1x1"]:
            ratios.append(f"{what}: Ray 2 actors / 1 actor {rate['ray-2x1'] / rate['ray-1x1']:.2f}x (goal >= 1.8x)")
        for cores, (loc, ray) in (("1", ("local-1t", "ray-1x1")), ("2", ("local-2t", "ray-2x1"))):
            if {loc, ray} <= rate.keys() and rate[loc]:
                ratios.append(f"{what}: Ray overhead vs local at {cores} core(s) "
                              f"{(1 - rate[ray] / rate[loc]) * 100:+.1f}% (goal <= 15%)")
    return "\n".join(lines + [""] + [f"- {r}" for r in ratios])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the configurations, each in a pinned fresh process")
    r.add_argument("--n", type=int, default=50000, help="en_corpus sentences (default 50000)")
    r.add_argument("--rounds", type=int, default=1, help="repeat every configuration (best and median reported)")
    r.add_argument("--block", type=int, default=1000, help="documents per shard (default 1000)")
    r.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    r.add_argument("--timeout", type=int, default=900, help="seconds per configuration run")
    o = sub.add_parser("one", help="(internal) one configuration in this process; prints one JSON line")
    o.add_argument("config", choices=list(CONFIGS))
    o.add_argument("corpus", type=Path)
    o.add_argument("--block", type=int, default=1000)
    args = p.parse_args(argv)
    if args.cmd == "one":
        print(json.dumps(run_one(args.config, args.corpus, args.block)))
        return 0
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
