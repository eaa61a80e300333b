"""Backends run a bundle's model on padded batches: the onnxruntime session, or any object with the same surface."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..errors import BundleError, EdgeembError

if TYPE_CHECKING:
    import onnxruntime as ort


@runtime_checkable
class Backend(Protocol):
    """What the Encoder runs: named outputs for a dict of int64 (batch, seq) feeds.

    `normalized`: whether the `sentence_embedding` output is already unit length (fused into the graph).
    """

    normalized: bool

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


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

    def __init__(self, model: Path, threads: int, normalized: bool, arena: bool = True, mem_pattern: bool = True):
        import onnxruntime as ort

        self.model, self.normalized = model, normalized
        try:
            self.session = ort.InferenceSession(str(model), session_options(threads, arena, mem_pattern),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise BundleError(f"{model}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})") from None

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph; an onnxruntime failure is an EdgeembError naming the batch size."""
        try:
            return self.session.run(output_names, feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            rows = len(next(iter(feeds.values()))) if feeds else 0
            raise EdgeembError(f"onnxruntime failed on a batch of {rows} texts "
                               f"({str(exc).splitlines()[0][:200]})") from None
