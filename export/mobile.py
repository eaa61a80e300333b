"""Mobile and edge builds of a bundle: onnxruntime's ORT format, its reduced-operator config, fp16 weight storage.

Applies to bundles whose graph is a `model.onnx` (sentence and LLM kinds); static bundles have no graph.
The result is a verified copy of the bundle; the source bundle is never modified.
"""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np

from edgeemb.bundle import Manifest, file_entry, read_manifest, verify_files, write_manifest
from edgeemb.encode.encoder import TruncationWarning

from .common.errors import ExportError
from .common.onnx_tools import step
from .common.parity import cosine_figures, cosine_rows

ONNX_MODEL, ORT_MODEL, OPS_CONFIG = "model.onnx", "model.ort", "required_operators.config"
PARITY_MIN = 0.9999  # min cosine the mobile forms must keep against the bundle's own model.onnx
FP16_MIN_ELEMENTS = 1024  # smaller float tensors (scales, norms' gains) stay float32: no gain, some risk
FP16_MAX = 65504.0  # largest finite float16
N_TEXTS = 48


@dataclass
class MobileReport:
    """What prepare_mobile made, with sizes and parity figures."""

    bundle: str
    kind: str
    onnx_size: int
    ort_size: int | None = None
    operators: int | None = None
    kept_onnx: bool = True
    figures: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        """Human summary, one fact per line."""
        out = [f"{self.bundle} ({self.kind}): model.onnx {self.onnx_size / 1e6:.2f} MB"]
        fp16 = self.figures.get("fp16_storage")
        if fp16:
            out.append(f"fp16 storage: {fp16['tensors_fp16']} tensors to float16, model.onnx "
                       f"{fp16['bytes_before'] / 1e6:.2f} -> {fp16['bytes_after'] / 1e6:.2f} MB, cosine vs float32 "
                       f"min {fp16['cosine_min']} mean {fp16['cosine_mean']} (n={fp16['n']})")
            for group, cos in fp16["kept_float32_by_consumer"].items():
                out.append(f"  kept float32: tensors read by {group} (float16 would give cosine min {cos})")
            if self.figures.get("ort") and fp16["tensors_fp16"]:
                out.append("  note: model.ort holds float32 weights again (onnxruntime's converter folds the Casts)")
        ort = self.figures.get("ort")
        if ort:
            out.append(f"model.ort {self.ort_size / 1e6:.2f} MB, {self.operators} distinct operators "
                       f"({OPS_CONFIG}), cosine vs model.onnx min {ort['cosine_min']} mean {ort['cosine_mean']} "
                       f"(n={ort['n']})")
        if not self.kept_onnx:
            out.append("model.onnx left out: the bundle runs from model.ort only")
        return out


def prepare_mobile(src: str | Path, dst: str | Path, ort: bool = True, fp16_storage: bool = False,
                   keep_onnx: bool = True, texts: list[str] | None = None,
                   min_cosine: float = PARITY_MIN) -> MobileReport:
    """Copy a bundle to `dst` (must not exist) adding model.ort / fp16 weights, each checked against model.onnx."""
    src, dst = Path(src), Path(dst)
    manifest = read_manifest(src)
    verify_files(src, manifest)
    if ONNX_MODEL not in manifest.files:
        raise ExportError(f"{src}: a {manifest.kind} bundle with no {ONNX_MODEL}; --ort and --fp16-storage apply "
                          f"to bundles with an ONNX graph (sentence, llm)")
    if not keep_onnx and not ort:
        raise ExportError("leaving model.onnx out needs --ort (the bundle would hold no model)")
    _check_no_external_data(src / ONNX_MODEL)
    if dst.exists():
        raise ExportError(f"{dst} exists; prepare_mobile writes a fresh copy")
    texts = texts or parity_texts()
    report = MobileReport(manifest.name, manifest.kind, manifest.files[ONNX_MODEL]["size"], kept_onnx=keep_onnx)
    dst.mkdir(parents=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)  # the same texts are cut the same way in every form
            _build(src, dst, manifest, report, ort, fp16_storage, texts, min_cosine)
        if not keep_onnx:
            (dst / ONNX_MODEL).unlink()
            files = {k: v for k, v in read_manifest(dst).files.items() if k != ONNX_MODEL}
            _write(dst, manifest, files, report.figures)
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)
        raise
    return report


def _build(src: Path, dst: Path, manifest: Manifest, report: MobileReport, ort: bool, fp16_storage: bool,
           texts: list[str], min_cosine: float) -> None:
    """The steps of prepare_mobile, writing into dst and filling report."""
    for name in manifest.files:
        shutil.copyfile(src / name, dst / name)
    files = dict(manifest.files)
    n_steps, done = 1 + fp16_storage + 2 * ort, 1
    step(1, n_steps, f"encoding {len(texts)} sample texts with {src.name}/{ONNX_MODEL} (reference)")
    reference = _encode(src, texts)
    if fp16_storage:
        done += 1
        step(done, n_steps, "storing float32 weights as float16 where parity holds")
        stats, reference = _fp16_where_parity_holds(src / ONNX_MODEL, dst, manifest, files, reference, texts,
                                                    min_cosine)
        report.figures["fp16_storage"] = stats
        _write(dst, manifest, files, report.figures)
    if ort:
        done += 1
        step(done, n_steps, "converting to ORT format (onnxruntime.tools.convert_onnx_models_to_ort)")
        report.operators = convert_to_ort(dst / ONNX_MODEL, dst)
        files[ORT_MODEL], files[OPS_CONFIG] = file_entry(dst / ORT_MODEL), file_entry(dst / OPS_CONFIG)
        report.ort_size = files[ORT_MODEL]["size"]
        _write(dst, manifest, files, report.figures)
        done += 1
        step(done, n_steps, f"checking {ORT_MODEL} against {ONNX_MODEL} on {len(texts)} texts")
        figures = _parity(_encode(dst, texts), reference, ORT_MODEL, min_cosine)
        report.figures["ort"] = {**figures, "operators": report.operators, "optimization": "Fixed, level all"}
    _write(dst, manifest, files, report.figures)


def _fp16_where_parity_holds(src_onnx: Path, dst: Path, manifest: Manifest, files: dict, reference: np.ndarray,
                             texts: list[str], min_cosine: float) -> tuple[dict, np.ndarray]:
    """Store float16 weights, all at once or else group by group (grouped by consuming operator), keeping parity.

    Returns the figures and the embeddings of the graph finally written to dst/model.onnx.
    """
    groups = fp16_groups(src_onnx)

    def attempt(names: set[str]) -> tuple[dict, np.ndarray]:
        stats = store_fp16(src_onnx, dst / ONNX_MODEL, names)
        files[ONNX_MODEL] = file_entry(dst / ONNX_MODEL)
        _write(dst, manifest, files, {})
        got = _encode(dst, texts)
        return {**stats, **_cosines(got, reference)}, got

    stats, got = attempt(set().union(*groups.values()))
    rejected = {}
    if stats["cosine_min"] < min_cosine:
        keep: set[str] = set()
        for group, names in groups.items():
            trial, _ = attempt(names)
            if trial["cosine_min"] >= min_cosine:
                keep |= names
            else:
                rejected[group] = trial["cosine_min"]
        stats, got = attempt(keep)
        if stats["cosine_min"] < min_cosine:
            raise ExportError(f"fp16 storage changes the embeddings: cosine min {stats['cosine_min']} < {min_cosine} "
                              f"on {len(texts)} sample texts; pack without it")
    stats["kept_float32_by_consumer"] = rejected  # operator group -> cosine min it would have reached
    return stats, got


def _encode(folder: Path, texts: list[str]) -> np.ndarray:
    import edgeemb

    return edgeemb.load(folder).encode(texts)


def convert_to_ort(onnx_path: Path, out_dir: Path) -> int:
    """Write model.ort and required_operators.config into out_dir with onnxruntime's converter; return the op count.

    Fixed optimisation style at level "all" (what onnxruntime advises for the CPU provider), without the
    x86-only NCHWc layout (the converter leaves it out unless told the target is amd64), so the file runs on ARM.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".ort-") as tmp:
        tmp = Path(tmp)
        log = io.StringIO()
        quiet = logging.getLogger("ort_format_model.utils")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(log):
                convert_onnx_models_to_ort(onnx_path, output_dir=tmp, optimization_styles=[OptimizationStyle.Fixed])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(f"{onnx_path}: onnxruntime cannot convert it to ORT format "
                              f"({str(exc).splitlines()[0][:200]})") from None
        finally:
            quiet.setLevel(level)
        ort_file = tmp / f"{onnx_path.stem}.ort"
        config = tmp / f"{onnx_path.stem}.required_operators.config"
        if not ort_file.is_file() or not config.is_file():
            raise ExportError(f"{onnx_path}: the ORT converter wrote no model ({log.getvalue().strip()[-200:]})")
        shutil.move(str(ort_file), str(out_dir / ORT_MODEL))
        (out_dir / OPS_CONFIG).write_text(_portable_config(config.read_text(encoding="utf-8")), encoding="utf-8")
    return count_operators(out_dir / OPS_CONFIG)


def count_operators(config: Path) -> int:
    """Distinct (domain, operator) pairs in a required_operators.config (`domain;opset;Op1,Op2` lines)."""
    ops = set()
    for line in config.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            domain, _opset, names = line.split(";", 2)
            ops.update((domain, name.split("{")[0].strip()) for name in names.split(","))
    return len(ops)


def fp16_groups(path: Path) -> dict[str, set[str]]:
    """Float32 initializers worth storing as float16, grouped by the operator types that read them.

    Left out: small tensors (no gain) and values beyond float16's range (they would become inf).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inputs = {i.name for i in graph.input}
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    groups: dict[str, set[str]] = {}
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name in inputs or _size(init) < FP16_MIN_ELEMENTS:
            continue
        arr = numpy_helper.to_array(init)
        if np.isfinite(arr).all() and float(np.abs(arr).max()) <= FP16_MAX:
            groups.setdefault("+".join(sorted(readers.get(init.name, {"unused"}))), set()).add(init.name)
    return groups


def store_fp16(src: Path, dst: Path, names: set[str] | None = None) -> dict:
    """Store the named float32 initializers (default: every fp16_groups one) as float16, Cast back to float32.

    Compute stays float32 (onnxruntime folds the Casts when it loads the graph); only the file shrinks.
    Graphs with dynamic int8 activations amplify the rounding (int8 MiniLM: only its BiasGelu biases rounded
    to float16 already give cosine min 0.991, Cast or not), so prepare_mobile measures parity per group.
    """
    import onnx
    from onnx import helper, numpy_helper

    if names is None:
        names = set().union(*fp16_groups(src).values())
    if not names:
        shutil.copyfile(src, dst)
        return {"tensors_fp16": 0, "bytes_before": src.stat().st_size, "bytes_after": dst.stat().st_size}
    model = onnx.load(str(src))
    graph = model.graph
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    casts = []
    for init in graph.initializer:
        if init.name not in names:
            continue
        name, half = init.name, f"{init.name}__fp16"
        while half in taken:
            half += "_"
        taken.add(half)
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), half))
        casts.append(helper.make_node("Cast", [half], [name], to=onnx.TensorProto.FLOAT, name=f"{half}__cast"))
    nodes = casts + list(graph.node)  # Casts read only initializers, so they may lead the topological order
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return {"tensors_fp16": len(casts), "bytes_before": src.stat().st_size, "bytes_after": dst.stat().st_size}


def _size(init) -> int:
    return int(np.prod(init.dims)) if init.dims else 1


def parity_texts(n: int = N_TEXTS) -> list[str]:
    """n texts spread evenly over edgeemb's own sample corpus (English and Chinese, short and long)."""
    with (resources.files("edgeemb") / "data" / "sample_corpus.tsv").open(encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    idx = np.linspace(0, len(texts) - 1, min(n, len(texts))).round().astype(int)
    return [texts[i] for i in sorted(set(idx.tolist()))]


def _cosines(got: np.ndarray, ref: np.ndarray) -> dict:
    cos = cosine_rows(got, ref)
    return {"n": len(cos), **cosine_figures(cos)}


def _parity(got: np.ndarray, ref: np.ndarray, what: str, min_cosine: float) -> dict:
    figures = _cosines(got, ref)
    if figures["cosine_min"] < min_cosine:
        raise ExportError(f"{what} changes the embeddings: cosine min {figures['cosine_min']} < {min_cosine} "
                          f"on {figures['n']} sample texts; pack without it")
    return figures


def _write(dst: Path, manifest: Manifest, files: dict, figures: dict) -> None:
    parity = dict(manifest.parity)
    if figures:
        parity["mobile"] = figures
    write_manifest(dst, replace(manifest, files=dict(files), parity=parity))


def _portable_config(text: str) -> str:
    """The converter's comment names our temporary folder; keep the file reproducible."""
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    return "\n".join([f"# Operators {ORT_MODEL} needs, for an onnxruntime build with --include_ops_by_config"]
                     + lines) + "\n"


def _check_no_external_data(path: Path) -> None:
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    if any(uses_external_data(t) for t in model.graph.initializer):
        raise ExportError(f"{path}: keeps its weights in external data (>2 GB graph); the ORT format and fp16 "
                          f"storage here need a single-file graph")
