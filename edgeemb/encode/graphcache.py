"""An onnxruntime-optimised copy of a bundle's graph in the cache home, so later loads skip graph optimisation.

Creating a session optimises the graph every time (fusions, constant folding): for the MiniLM int8 bundle that is
about three quarters of the session's creation time. The first load of a graph saves the optimised graph
(ORT_ENABLE_EXTENDED, the level whose output onnxruntime documents as portable across machines with the same
execution provider) under <home>/graphs/, named by the source graph's sha256 and the onnxruntime version; later
loads open that copy with optimisation off. The vectors are the same (the session runs the same optimised graph).

What it trades: disk (one more copy of each graph used, e.g. 25 MB for MiniLM int8) for load time. The copy's
own sha256 is recorded beside it and checked through the same size+mtime hash cache as bundle files, so a
truncated or changed copy is rebuilt, never run. Graphs with external weight files and graphs over
MAX_BYTES are not copied. EDGEEMB_GRAPH_CACHE=0 turns it off.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_write_bytes, fsync_dir

if TYPE_CHECKING:
    import onnxruntime as ort

GRAPHS_DIR = "graphs"
MAX_BYTES = 1 << 30  # larger graphs (LLMs) keep their weights in external files, which this copy would not hold
MAX_COPIES = 16  # past this many, writing a copy removes the oldest ones


def enabled() -> bool:
    """Whether load() may use and write optimised copies (EDGEEMB_GRAPH_CACHE=0 turns it off)."""
    return os.environ.get("EDGEEMB_GRAPH_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def eligible(model: Path) -> bool:
    """A graph worth copying: a plain .onnx file under MAX_BYTES with no external weight file beside it."""
    try:
        size = model.stat().st_size
    except OSError:
        return False
    return (model.suffix == ".onnx" and size <= MAX_BYTES
            and not any(p.name.startswith(model.name) and p.suffix == ".data" for p in model.parent.iterdir()))


def copy_path(sha256: str) -> Path:
    """Where the optimised copy of the graph with this sha256 lives, for this onnxruntime version."""
    import onnxruntime as ort

    from ..paths import home

    return home() / GRAPHS_DIR / f"{sha256[:40]}-ort{ort.__version__}.onnx"


def trusted_copy(sha256: str, full: bool = False) -> Path | None:
    """The optimised copy if it exists and matches its recorded sha256 (hashed once per unchanged file, or
    every time with full)."""
    from ..bundle.verify import file_matches

    path = copy_path(sha256)
    try:
        record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("size") != size or not isinstance(record.get("sha256"), str):
        return None
    return path if file_matches(path, record["sha256"], cache=not full) else None


def save_while_creating(so: ort.SessionOptions, sha256: str) -> Path | None:
    """Point the session options at a temporary file in the graphs folder, so the session being created writes
    its optimised graph there; returns that file (None when the folder cannot be written)."""
    import onnxruntime as ort

    folder = copy_path(sha256).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".onnx.tmp")
        os.close(fd)
    except OSError:
        return None
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = tmp
    return Path(tmp)


def keep(tmp: Path, sha256: str) -> None:
    """Move a freshly written optimised graph into place with its sha256 record; drop copies of the same graph
    made by other onnxruntime versions and, past MAX_COPIES, the oldest others. Failing to write only costs the optimisation next time."""
    from ..bundle.verify import file_entry

    dst = copy_path(sha256)
    try:
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise OSError("onnxruntime wrote no optimised graph")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        entry = file_entry(tmp)
        os.replace(tmp, dst)
        atomic_write_bytes(dst.with_suffix(".json"), json.dumps(entry).encode())
        fsync_dir(dst.parent)
        others = sorted((p for p in dst.parent.glob("*.onnx") if p != dst), key=lambda p: p.stat().st_mtime)
        stale = [p for p in others if p.name.startswith(sha256[:40])]  # the same graph, another onnxruntime
        rest = [p for p in others if p not in stale]
        for old in stale + rest[:max(0, len(rest) + 1 - MAX_COPIES)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
    except OSError:
        tmp.unlink(missing_ok=True)
