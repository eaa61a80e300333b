"""What a measurement ran on and how much memory a process holds: the benchmarks' one RSS probe and one machine().

Peak RSS is VmHWM from /proc/<pid>/status (edgeemb.sysinfo.peak_rss_mb, read from outside the measured process);
resident_kb gives the same file's breakdown of what is resident now (anonymous vs file-backed pages), which
studies of memory-mapped indexes need and VmHWM does not give.
"""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeemb.sysinfo import peak_rss_mb, physical_cores

__all__ = ["FLAGS_OF_INTEREST", "cpu", "load_average", "machine", "peak_rss_mb", "resident_kb", "versions"]

# CPU features that change which onnxruntime kernels run (int8 dot products, bf16), hence the figures
FLAGS_OF_INTEREST = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                     "amx_int8")
RESIDENT_KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")
DISTRIBUTIONS = ("edgeemb", "onnxruntime", "tokenizers", "numpy", "hnswlib")


def resident_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, RssShmem and VmHWM of a process in kB, from /proc (empty where unavailable)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in RESIDENT_KEYS:
                    out[key] = int(value.split()[0])
    except (OSError, ValueError):
        return {}
    return out


def cpu() -> tuple[str, list[str]]:
    """The CPU model name and which of FLAGS_OF_INTEREST it reports (/proc/cpuinfo; platform as fallback)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or "unknown", [f for f in FLAGS_OF_INTEREST if f in flags]


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages, rounded (the machine may be shared: print it beside every figure)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def versions() -> dict[str, str | None]:
    """Python and the installed versions of the runtime's distributions (read from metadata, nothing imported)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model and flags, cores, memory, load, platform, versions."""
    model, flags = cpu()
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    v = versions()
    return {"cpu": model, "flags": flags, "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(),
            "affinity": affinity, "memory_mb": mem, "python": v["python"], "onnxruntime": v["onnxruntime"],
            "versions": v, "platform": platform.platform(), "load_average": load_average()}
