"""Timing arithmetic and worker processes: percentiles, spread over rounds, ratios, interleaved rounds, Workers.

Every benchmark here (the `edgeemb bench` suite and the studies) times through these pieces: a Worker is a
subprocess speaking JSON lines whose peak RSS is read from outside (probes.peak_rss_mb); engines compared with
each other run in rotating rounds (rotations/interleave) so machine drift hits all of them alike; a ratio is
reported with its spread over rounds (spread), never as a bare pass/fail.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .probes import peak_rss_mb

WORKER = Path(__file__).with_name("worker.py")


def log(msg: str) -> None:
    """One progress line on stderr."""
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# -- arithmetic ---------------------------------------------------------------------------------------------
def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    if not samples:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0-100")
    xs = sorted(samples)
    pos = (len(xs) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """n, mean, min, p50, p95, p99 and max of latencies in ms (rounded to 0.1 µs)."""
    if not samples_ms:
        return {"n": 0, "mean": math.nan, "min": math.nan, "p50": math.nan, "p95": math.nan, "p99": math.nan,
                "max": math.nan}
    out: dict[str, float | int] = {"n": len(samples_ms), "mean": sum(samples_ms) / len(samples_ms),
                                   "min": min(samples_ms)}
    for p in (50, 95, 99):
        out[f"p{p}"] = percentile(samples_ms, p)
    out["max"] = max(samples_ms)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing, not finite, or b is zero."""
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return None
    return a / b


def spread(values: Sequence[float | None]) -> dict[str, float | int] | None:
    """min, median and max of per-round values (missing or non-finite ones left out); None when none is left."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    return {"n": len(xs), "min": round(min(xs), 4), "median": round(statistics.median(xs), 4),
            "max": round(max(xs), 4)}


def round_ratios(a: Sequence[float | None], b: Sequence[float | None]) -> list[float | None]:
    """The ratio a[r] / b[r] of each round r (rounds where either side is missing give None)."""
    return [ratio(x, y) for x, y in zip(a, b)]


def margin(value: float | None, limit: float) -> float | None:
    """How far under a limit a value is, as a fraction of the limit (negative when over)."""
    if value is None or not math.isfinite(value) or limit <= 0:
        return None
    return (limit - value) / limit


MIN_VERDICT_ROUNDS = 5  # a ratio goal gets a yes/no only from at least this many interleaved rounds


@dataclass
class Goal:
    """A target such as "p50 ratio ≤ 1.15": the measured value, the bound, and the per-round values beside it.

    A goal measured in rounds is judged only when at least `min_rounds` rounds were measured and every one of
    them falls on the same side of the bound as the value; otherwise it is "not judged" (too few rounds, or the
    bound lies within the noise), never a bare pass/fail. A single measurement (no rounds) is judged on its value.
    """

    name: str
    value: float | None
    bound: float
    op: str  # "<=" or ">="
    note: str = ""
    rounds: list[float | None] = field(default_factory=list)  # the same ratio in each interleaved round
    min_rounds: int = MIN_VERDICT_ROUNDS

    def _meets(self, x: float | None) -> bool | None:
        if x is None or not math.isfinite(x):
            return None
        return x <= self.bound if self.op == "<=" else x >= self.bound

    @property
    def value_met(self) -> bool | None:
        """Whether the value alone is on the right side of the bound (None when missing)."""
        return self._meets(self.value)

    @property
    def judgement(self) -> tuple[bool | None, str]:
        """(met, why not judged): (True/False, "") for a verdict, (None, reason) otherwise."""
        value_met = self.value_met
        if value_met is None:
            return None, "not measured"
        if not self.rounds:
            return value_met, ""
        met, measured = self.rounds_met
        if measured < self.min_rounds:
            return None, f"{measured} round{'s' if measured != 1 else ''}; a verdict needs {self.min_rounds}"
        if 0 < met < measured:
            return None, f"within noise: {met}/{measured} rounds meet it"
        if (met == measured) != value_met:
            return None, "every round disagrees with the pooled value"
        return value_met, ""

    @property
    def met(self) -> bool | None:
        """True or False when judged; None when not measured (a peer was absent) or not judged."""
        return self.judgement[0]

    @property
    def rounds_met(self) -> tuple[int, int]:
        """(rounds meeting the bound, rounds measured)."""
        verdicts = [self._meets(x) for x in self.rounds]
        return sum(v is True for v in verdicts), sum(v is not None for v in verdicts)

    def to_dict(self) -> dict[str, Any]:
        met, measured = self.rounds_met
        judged, why = self.judgement
        return {"name": self.name, "value": None if self.value is None else round(self.value, 4),
                "bound": self.bound, "op": self.op, "met": judged, "not_judged": why, "value_met": self.value_met,
                "min_rounds": self.min_rounds, "note": self.note, "spread": spread(self.rounds),
                "rounds_met": [met, measured] if measured else None}


def rotations(names: Sequence[str], rounds: int) -> list[list[str]]:
    """Round-robin orders: each round starts one name later, so no engine always runs first (drift cancels)."""
    n = len(names)
    return [[names[(r + i) % n] for i in range(n)] for r in range(rounds)] if n else []


def interleave(runners: dict[str, Callable[[int], list[float]]], rounds: int) -> dict[str, list[list[float]]]:
    """Call each runner(round) once per round in rotating order; the samples of each name, one list per round."""
    samples: dict[str, list[list[float]]] = {name: [] for name in runners}
    for r, order in enumerate(rotations(list(runners), rounds)):
        for name in order:
            samples[name].append(list(runners[name](r)))
    return samples


def one_thread() -> None:
    """Pin this process to one CPU and keep every library to one thread (for in-process studies)."""
    for var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass


# -- workers ------------------------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """A worker process failed or answered with an error."""


@dataclass
class Limits:
    """Low-end constraints applied to a worker before it starts: CPU cores and address-space cap."""

    cores: int | None = None
    address_space_mb: int | None = None
    cgroup: str | None = None  # a cgroup v1 memory folder the worker joins (see lowend.py)

    def preexec(self) -> Callable[[], None] | None:
        """A function run in the child between fork and exec that applies the limits."""
        if not (self.cores or self.address_space_mb or self.cgroup):
            return None
        cores, cap, cgroup = self.cores, self.address_space_mb, self.cgroup

        def apply() -> None:
            import resource

            if cgroup:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            if cores:
                allowed = sorted(os.sched_getaffinity(0))
                os.sched_setaffinity(0, allowed[:cores])
            if cap:
                resource.setrlimit(resource.RLIMIT_AS, (cap << 20, cap << 20))
        return apply


def op_ref(fn: Callable[..., dict]) -> str:
    """How a worker finds an op function `fn(state, **args) -> dict`: "module:name", or "file.py:name" for a
    script run by path (a module run with -m is named by its import name); worker.resolve imports it."""
    module = fn.__module__
    if module == "__main__":
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        module = spec.name if spec is not None and spec.name else os.path.abspath(main.__file__)
    return f"{module}:{fn.__name__}"


@dataclass
class Worker:
    """A long-lived benchmark process speaking JSON lines; peak RSS is read from outside (/proc VmHWM).

    call(op, **args) runs one of worker.py's ops ("load", "latency", "throughput", "warm", "hwm", "import") or any
    function `fn(state, **args) -> dict` passed itself (the worker imports it by op_ref).
    """

    python: str
    label: str
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] | None = None
    proc: subprocess.Popen | None = None
    peak_rss_mb: float | None = None
    exit_status: int | None = None
    stderr_tail: str = ""

    def start(self) -> Worker:
        """Spawn the worker (stderr to a temp file so a chatty library never blocks it)."""
        self._err = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 (lives as long as the worker)
        env = dict(os.environ, **(self.env or {}))
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.proc = subprocess.Popen([self.python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, env=env, preexec_fn=self.limits.preexec(),  # noqa: PLW1509
                                     text=True, bufsize=1)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def call(self, op: str | Callable[..., dict], **args: Any) -> dict[str, Any]:
        """Send one request and wait for its answer; a dead or failing worker raises WorkerError."""
        name = op if isinstance(op, str) else op_ref(op)
        if self.proc is None or self.proc.poll() is not None:
            raise WorkerError(f"{self.label}: worker is not running ({self._tail()})")
        try:
            self.proc.stdin.write(json.dumps({"op": name, **args}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.stop()
            raise WorkerError(f"{self.label}: worker died ({self._tail()})") from None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise WorkerError(f"{self.label}: worker died during {name.rpartition(':')[2]} ({self._tail()})")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise WorkerError(f"{self.label}: {name.rpartition(':')[2]} failed: {answer.get('error')}")
        return answer

    def hwm_mb(self) -> float | None:
        """Peak RSS so far, from /proc/<pid>/status."""
        return peak_rss_mb(self.proc.pid) if self.proc else None

    def stop(self) -> float | None:
        """Ask the worker to quit, reap it with wait4 and keep its peak RSS (/proc VmHWM; ru_maxrss as fallback).

        ru_maxrss of a forked child starts from the parent's size at fork, so it overstates small workers
        spawned by a large parent; VmHWM is the worker's own high-water mark.
        """
        if self.proc is None:
            return self.peak_rss_mb
        hwm = self.hwm_mb()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        rusage_mb = None
        try:
            deadline = time.monotonic() + 30
            while True:
                pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
                if pid:
                    self.exit_status = os.waitstatus_to_exitcode(status)
                    rusage_mb = usage.ru_maxrss / 1024.0  # kB on Linux
                    self.proc.returncode = self.exit_status
                    break
                if time.monotonic() > deadline:
                    self.proc.kill()
                    deadline = time.monotonic() + 5
                time.sleep(0.02)
        except ChildProcessError:  # already reaped by Popen
            self.exit_status = self.proc.returncode
        self.peak_rss_mb = hwm if hwm is not None else rusage_mb
        self.stderr_tail = self._tail()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.proc = None
        return self.peak_rss_mb

    def _tail(self, n: int = 400) -> str:
        try:
            self._err.seek(0, os.SEEK_END)
            size = self._err.tell()
            self._err.seek(max(0, size - n))
            lines = self._err.read().decode("utf-8", "replace").strip().splitlines()
            return lines[-1] if lines else "no stderr"
        except (AttributeError, OSError, ValueError):
            return "no stderr"


def run_worker(label: str, limits: Limits, steps: list[tuple[str | Callable[..., dict], dict]],
               python: str | None = None) -> tuple[list[dict], float | None, Worker]:
    """Start a worker, run steps in order, stop it; answers, peak RSS (MB) seen from outside, the worker."""
    worker = Worker(python or sys.executable, label, limits).start()
    answers = []
    try:
        for op, args in steps:
            answers.append(worker.call(op, **args))
    finally:
        peak = worker.stop()
    return answers, peak, worker
