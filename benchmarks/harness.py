"""Timing arithmetic and worker processes: percentiles, ratios, interleaved rounds, peak RSS from outside."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")


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
    """n, mean, min, p50, p95, p99 and max of latencies in ms (rounded to µs)."""
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


@dataclass
class Goal:
    """A target such as "p50 ratio ≤ 1.15": the measured value, the bound, and whether it is met."""

    name: str
    value: float | None
    bound: float
    op: str  # "<=" or ">="
    note: str = ""

    @property
    def met(self) -> bool | None:
        """True or False when measured; None when the value is missing (a peer was absent)."""
        if self.value is None or not math.isfinite(self.value):
            return None
        return self.value <= self.bound if self.op == "<=" else self.value >= self.bound

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": None if self.value is None else round(self.value, 4),
                "bound": self.bound, "op": self.op, "met": self.met, "note": self.note}


def margin(value: float | None, limit: float) -> float | None:
    """How far under a limit a value is, as a fraction of the limit (negative when over)."""
    if value is None or not math.isfinite(value) or limit <= 0:
        return None
    return (limit - value) / limit


def rotations(names: Sequence[str], rounds: int) -> list[list[str]]:
    """Round-robin orders: each round starts one name later, so no engine always runs first (drift cancels)."""
    n = len(names)
    return [[names[(r + i) % n] for i in range(n)] for r in range(rounds)] if n else []


def interleave(runners: dict[str, Callable[[int], list[float]]], rounds: int) -> dict[str, list[float]]:
    """Call each runner(round) once per round in rotating order; concatenate the samples they return."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for r, order in enumerate(rotations(list(runners), rounds)):
        for name in order:
            samples[name].extend(runners[name](r))
    return samples


def read_hwm_mb(pid: int) -> float | None:
    """Peak resident set (VmHWM) of a live process, in MB, read from /proc; None where unavailable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return None
    return None


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


@dataclass
class Worker:
    """A long-lived benchmark process speaking JSON lines; peak RSS is read from outside (/proc, wait4)."""

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
        import tempfile

        self._err = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 (lives as long as the worker)
        env = dict(os.environ, **(self.env or {}))
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.proc = subprocess.Popen([self.python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, env=env, preexec_fn=self.limits.preexec(),  # noqa: PLW1509
                                     text=True, bufsize=1)
        return self

    def call(self, op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Send one request and wait for its answer; a dead or failing worker raises WorkerError."""
        if self.proc is None or self.proc.poll() is not None:
            raise WorkerError(f"{self.label}: worker is not running ({self._tail()})")
        try:
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.stop()
            raise WorkerError(f"{self.label}: worker died ({self._tail()})") from None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise WorkerError(f"{self.label}: worker died during {op} ({self._tail()})")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise WorkerError(f"{self.label}: {op} failed: {answer.get('error')}")
        return answer

    def hwm_mb(self) -> float | None:
        """Peak RSS so far, from /proc/<pid>/status."""
        return read_hwm_mb(self.proc.pid) if self.proc else None

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


def main_python() -> str:
    """The interpreter running edgeemb (the main venv)."""
    return sys.executable
