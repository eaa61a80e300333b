"""Backends run a bundle's model on padded batches: the onnxruntime session, or any object with the same surface."""
from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..errors import BundleError, EdgeembError
from . import graphcache

if TYPE_CHECKING:
    import onnxruntime as ort


@runtime_checkable
class Backend(Protocol):
    """What the Encoder runs: named outputs for a dict of int64 (batch, seq) feeds.

    `normalized`: whether the `sentence_embedding` output is already unit length (fused into the graph).
    """

    normalized: bool

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


_malloc_trim: Callable[[int], int] | None = None
_looked_up = False


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim(0); a no-op elsewhere), so memory
    freed by session creation or a span's tokenising does not stay resident under the next peak (MiniLM int8, once
    after load: -3.3 to -3.7 MB peak; docs/results/encode-memory.md). It only returns free pages; it sets nothing."""
    global _malloc_trim, _looked_up
    if not _looked_up:
        _looked_up = True
        if sys.platform.startswith("linux"):
            try:
                _malloc_trim = ctypes.CDLL(None).malloc_trim  # absent from musl: AttributeError
            except (AttributeError, OSError):
                _malloc_trim = None
    if _malloc_trim is not None:
        _malloc_trim(0)


def session_options(threads: int, arena: bool = True, mem_pattern: bool = True) -> ort.SessionOptions:
    """onnxruntime options: exactly `threads` intra-op threads, one inter-op, sequential execution."""
    import onnxruntime as ort  # imported on first use: static bundles never need it (~30 MB RSS)

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_cpu_mem_arena = arena
    so.enable_mem_pattern = mem_pattern
    so.log_severity_level = 3
    if threads == 1:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OnnxBackend:
    """An onnxruntime InferenceSession on the CPU; its failures become one-line edgeemb errors."""

    def __init__(self, model: Path, threads: int, normalized: bool, arena: bool = True, mem_pattern: bool = True,
                 sha256: str | None = None, full_verify: bool = False):
        """sha256: the verified sha256 of `model`; given, the session runs graphcache's optimised copy of it
        (written on the first load), which skips most of the session's creation time."""
        self.model, self.normalized = model, normalized
        self.optimized: Path | None = None  # the optimised copy the session runs, if any
        use_cache = sha256 is not None and graphcache.enabled() and graphcache.eligible(model)
        copy = graphcache.trusted_copy(sha256, full_verify) if use_cache and sha256 else None
        if copy is not None:
            try:
                self.session = self._session(copy, threads, arena, mem_pattern, optimize=False)
                self.optimized = copy
                release_free_heap()  # the parsed graph's buffers, freed once the session holds its weights
                return
            except BundleError:
                pass  # an unreadable copy: build the session from the bundle's graph and write the copy again
        so = session_options(threads, arena, mem_pattern)
        tmp = graphcache.save_while_creating(so, sha256) if use_cache and sha256 else None
        try:
            self.session = self._create(model, so)
        except BundleError:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        if tmp is not None and sha256:
            graphcache.keep(tmp, sha256)
        release_free_heap()

    @staticmethod
    def _session(model: Path, threads: int, arena: bool, mem_pattern: bool, optimize: bool) -> ort.InferenceSession:
        import onnxruntime as ort

        so = session_options(threads, arena, mem_pattern)
        if not optimize:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return OnnxBackend._create(model, so)

    @staticmethod
    def _create(model: Path, so: ort.SessionOptions) -> ort.InferenceSession:
        import onnxruntime as ort

        try:
            return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise BundleError(f"{model}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})") from None

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph; an onnxruntime failure is an EdgeembError naming the batch size."""
        try:
            outputs: list[np.ndarray] = self.session.run(output_names, feeds)  # onnxruntime has no stubs: Any
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            rows = len(next(iter(feeds.values()))) if feeds else 0
            raise EdgeembError(f"onnxruntime failed on a batch of {rows} texts "
                               f"({str(exc).splitlines()[0][:200]})") from None
        return outputs
