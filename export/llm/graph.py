"""The torch side of an LLM export: the graph module (pooled hidden states, no KV cache), its ONNX export, and
the same pooling run eagerly per text as the parity reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .sources import ARCHITECTURES, hidden_layers


def pool_tokens(tokens, attention_mask, how: str):
    """Mean over real tokens, or the last real token (under left or right padding) of (b, s, d) states."""
    import torch

    mask = attention_mask.to(tokens.dtype)
    if how == "mean":
        return torch.einsum("bs,bsd->bd", mask, tokens) / mask.sum(1, keepdim=True).clamp(min=1e-9)
    positions = torch.cumsum(torch.ones_like(attention_mask), 1)  # 1..s, traced with a dynamic length
    last = (positions * attention_mask).argmax(1)
    index = last.view(-1, 1, 1).expand(-1, 1, tokens.shape[-1])
    return torch.gather(tokens, 1, index).squeeze(1)


def build_graph_module(base, arch: str, pooling: str, layers: list[int], normalize: bool, all_layers: bool):
    """Torch module: (input_ids, attention_mask, position_ids) -> sentence, token[, layer] embeddings."""
    import torch

    arch_attrs = ARCHITECTURES[arch]
    n_layers = hidden_layers(base.config)
    if not all_layers and layers[0] < n_layers:  # an intermediate layer: drop later layers and the norm
        stack = getattr(base, arch_attrs[1])
        setattr(base, arch_attrs[1], torch.nn.ModuleList(list(stack)[: layers[0]]))
        setattr(base, arch_attrs[2], torch.nn.Identity())

    class LLMGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base = base

        def forward(self, input_ids, attention_mask, position_ids):
            seq = torch.cumsum(torch.ones_like(attention_mask[0]), 0)
            causal = seq.view(1, -1) <= seq.view(-1, 1)  # key <= query
            keys = attention_mask.bool().view(attention_mask.shape[0], 1, 1, -1)
            allowed = causal.view(1, 1, *causal.shape) & keys
            zero = torch.zeros((), dtype=torch.float32)
            mask4d = torch.where(allowed, zero, torch.tensor(torch.finfo(torch.float32).min))
            out = self.base(input_ids=input_ids, attention_mask=mask4d, position_ids=position_ids,
                            use_cache=False, output_hidden_states=all_layers, return_dict=True)
            tokens = out.last_hidden_state
            pooled = pool_tokens(tokens, attention_mask, pooling)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            if not all_layers:
                return pooled, tokens
            per_layer = [pool_tokens(h, attention_mask, pooling) for h in out.hidden_states]
            return pooled, tokens, torch.stack(per_layer, 1)

    return LLMGraph().eval()


def export_onnx(module, path: Path, vocab_size: int, all_layers: bool) -> None:
    """torch.onnx.export (TorchScript, opset 17), dynamic batch and sequence; left padding in the example."""
    import warnings

    import torch

    ids = torch.randint(3, max(4, vocab_size - 1), (2, 7), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    names = ["input_ids", "attention_mask", "position_ids"]
    outputs = ["sentence_embedding", "token_embeddings"] + (["layer_embeddings"] if all_layers else [])
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["token_embeddings"]}
    axes.update({"sentence_embedding": {0: "batch"}, "layer_embeddings": {0: "batch"}})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (ids, mask, pos), str(path), input_names=names, output_names=outputs,
                          dynamic_axes={k: v for k, v in axes.items() if k in names + outputs},
                          opset_version=17, do_constant_folding=True, dynamo=False)


def name_output_dims(path: Path, dim: int, n_hidden: int) -> None:
    """Readable output shapes in graph and manifest: (batch, dim), (batch, sequence, dim), (batch, L, dim)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {"sentence_embedding": ["batch", dim], "token_embeddings": ["batch", "sequence", dim],
              "layer_embeddings": ["batch", n_hidden, dim]}
    for output in model.graph.output:
        for d, value in zip(output.type.tensor_type.shape.dim, shapes.get(output.name, [])):
            if isinstance(value, int):
                d.dim_value = value
            else:
                d.dim_param = value
    onnx.save(model, str(path))


SMALL_MODEL = 20_000_000  # parameters: below, one torch thread is faster (2-thread OpenMP spins on tiny ops)


def reference_embeddings(base, token_ids: list[list[int]], pooling: str, layers: list[int],
                         pad_id: int = 0) -> np.ndarray:
    """Each text alone, unpadded, through transformers (own causal mask): (n, len(layers), dim) float32."""
    import torch

    out = []
    threads = torch.get_num_threads()
    if sum(p.numel() for p in base.parameters()) < SMALL_MODEL:
        torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for ids in token_ids:
                out.append(_reference_one(base, ids, pooling, layers, pad_id))
    finally:
        torch.set_num_threads(threads)
    return np.stack(out).astype(np.float32)


def _reference_one(base, ids: list[int], pooling: str, layers: list[int], pad_id: int) -> np.ndarray:
    """One text through transformers; an empty text is one masked-out pad token, as at runtime."""
    import torch

    x = torch.tensor([ids or [pad_id]], dtype=torch.long)
    res = base(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False, output_hidden_states=True,
               return_dict=True)
    mask = torch.ones_like(x) if ids else torch.zeros_like(x)
    return torch.stack([pool_tokens(res.hidden_states[k], mask, pooling)[0] for k in layers]).numpy()
