"""GGUF quantised tensors (Q8_0, Q4_0) for the LLM and BERT paths: tiny models written here with the `gguf`
package, their ONNX bundles checked against torch models holding the same dequantised weights (read back with
gguf's own reader and dequantiser, not edgeemb's)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
from edgeemb_export.common.errors import ExportError
from test_e5s1 import small_parity_set  # noqa: F401 (a fixture)

Q = gguf.GGMLQuantizationType


pytestmark = pytest.mark.usefixtures("small_parity_set")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "runs", "fast", "hello", "world", "这", "部", "电", "影", "很",
         "好", "看", ".", ",", "!", "?"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
WORDPIECE = SPECIALS + WORDS + LETTERS + ["##" + c for c in LETTERS] + ["##ing", "##ed"]
TEXTS = ["The cat sat on the mat.", "hello world!", "Dogs run fast, the dog runs faster?", "这部电影很好看",
         "walking talked xyz", "HELLO   WORLD", ""]


def phantom(token: str) -> str:
    """llama.cpp's convert_hf_to_gguf BERT vocabulary: word starts get U+2581, '##' continuations lose it."""
    if token.startswith("[") and token.endswith("]"):
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def hf_wordpiece():
    """The original (Hugging Face) uncased BERT tokenizer for WORDPIECE."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(WORDPIECE)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def tiny_bert(seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(WORDPIECE) + 2, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, type_vocab_size=2, pad_token_id=0)
    model = BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():  # LayerNorms and biases away from their trivial init, so a mix-up would show
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


GGUF_NAMES = {"embeddings.word_embeddings": "token_embd", "embeddings.position_embeddings": "position_embd",
              "embeddings.token_type_embeddings": "token_types", "embeddings.LayerNorm": "token_embd_norm"}
LAYER_NAMES = {"attention.self.query": "attn_q", "attention.self.key": "attn_k", "attention.self.value": "attn_v",
               "attention.output.dense": "attn_output", "attention.output.LayerNorm": "attn_output_norm",
               "intermediate.dense": "ffn_up", "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm"}


def gguf_name(hf: str) -> str:
    module, param = hf.rsplit(".", 1)
    if module in GGUF_NAMES:
        return f"{GGUF_NAMES[module]}.{param}"
    _, _, layer, rest = module.split(".", 3)
    return f"blk.{layer}.{LAYER_NAMES[rest]}.{param}"


def write_bert_gguf(path: Path, model, qtype, table_qtype=None, tokenizer_model: str = "bert") -> Path:
    """A llama.cpp-style `bert` GGUF of a transformers BertModel: 2-D linear weights and the token table in
    qtype, the rest F32."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_layer_norm_eps(cfg.layer_norm_eps)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_token_type_count(cfg.type_vocab_size)
    w.add_tokenizer_model(tokenizer_model)
    w.add_token_list([phantom(t) for t in WORDPIECE])
    w.add_bos_token_id(2)
    w.add_sep_token_id(3)
    w.add_unk_token_id(1)
    w.add_pad_token_id(0)
    for name, tensor in model.state_dict().items():
        if name.endswith(("position_ids", "token_type_ids")):
            continue
        data = tensor.numpy().astype(np.float32)
        kind = None
        if name == "embeddings.word_embeddings.weight":
            kind = table_qtype or qtype
        elif data.ndim == 2 and "embeddings" not in name:
            kind = qtype
        if kind is None or kind == Q.F32:
            w.add_tensor(gguf_name(name), data)
        else:
            w.add_tensor(gguf_name(name), gguf.quants.quantize(data, kind), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def reference_model(path: Path, like):
    """A BertModel of `like`'s config holding the GGUF's weights, dequantised by gguf-py itself."""
    from transformers import BertModel

    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    state = {}
    for name, tensor in like.state_dict().items():
        if name.endswith(("position_ids", "token_type_ids")):
            continue
        t = tensors[gguf_name(name)]
        values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        state[name] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32).reshape(tensor.shape))
    model = BertModel(like.config, add_pooling_layer=False).eval()
    model.load_state_dict(state, strict=False)
    return model


def torch_vectors(model, tokenizer, texts):
    out = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer.encode(text).ids])
            h = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
            out.append(torch.nn.functional.normalize(h.mean(0), dim=0).numpy())
    return np.stack(out)


def test_gguf_reader_dequantises_like_gguf_py(tmp_path):
    from edgeemb_export.common.gguf import read_gguf

    model = tiny_bert()
    for qtype in (Q.Q8_0, Q.Q4_0):
        path = write_bert_gguf(tmp_path / f"b-{qtype.name}.gguf", model, qtype)
        ours = read_gguf(path)
        for t in gguf.GGUFReader(str(path)).tensors:
            want = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(ours.tensors[t.name].shape)
            np.testing.assert_array_equal(ours.tensor(t.name), want)
        assert {ours.tensors[n].type_name for n in ours.tensors} == {"F32", qtype.name}


def test_phantom_vocabulary_tokenises_like_the_original():
    from edgeemb_export.sentence.bert_source import wordpiece_from_phantom

    rebuilt = wordpiece_from_phantom([phantom(t) for t in WORDPIECE], cls=2, sep=3, unk=1, where="test")
    original = hf_wordpiece()
    for text in TEXTS:
        assert rebuilt.encode(text).ids == original.encode(text).ids, text


@pytest.mark.parametrize("qtype,quantization", [(Q.Q8_0, "none"), (Q.Q4_0, "none"), (Q.Q4_0, "int4"),
                                                (Q.Q8_0, "int8")])
def test_bert_gguf_bundle_matches_torch_with_the_dequantised_weights(tmp_path, qtype, quantization):
    from edgeemb_export.sentence.export import export_sentence

    import edgeemb

    model = tiny_bert(seed=1)
    path = write_bert_gguf(tmp_path / "bert.gguf", model, qtype)
    out = export_sentence(path, tmp_path / "bundle", quantization)
    manifest = json.loads((out / "edgeemb.json").read_text())
    assert manifest["source"]["format"] == "gguf" and manifest["pooling"] == "mean"
    enc = edgeemb.load(out, threads=1)
    ref = torch_vectors(reference_model(path, model), hf_wordpiece(), TEXTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = enc.encode(TEXTS)
    cos = (got * ref).sum(1)
    bound = {"none": 0.9999, "int4": 0.999, "int8": 0.98}[quantization]
    assert cos.min() >= bound, (quantization, cos.min())
    if quantization == "int4":
        assert manifest["options"]["int4"]["matmul_nbits"] == 2 * 6
        assert manifest["options"]["int4"]["gather_block_quantized"] == 1


def test_unsupported_quant_type_is_named_and_leaves_no_bundle(tmp_path):
    from edgeemb_export.sentence.export import export_sentence

    path = write_bert_gguf(tmp_path / "q5.gguf", tiny_bert(), Q.Q8_0, table_qtype=Q.Q5_0)
    out = tmp_path / "bundles" / "b"
    with pytest.raises(ExportError) as info:
        export_sentence(path, out, "int8")
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "token_embd.weight" in msg and "Q5_0" in msg
    assert "F32, F16, BF16, Q8_0, Q4_0" in msg
    assert not out.exists()


def test_t5_tokenizer_gguf_equals_the_e5s1_tokenizer(tmp_path):
    """A unigram (`t5`) GGUF vocabulary with a precompiled_charsmap builds the same tokenizer as E5S1's."""
    from edgeemb_export.sentence.bert_source import gguf_tokenizer
    from edgeemb_export.common.gguf import read_gguf
    from edgeemb_export.sentence.spm_charsmap import compile_charsmap
    from edgeemb_export.sentence.unigram_tokenizer import tokenizer_from_map
    from test_e5s1 import NORM_MAP, tiny_vocab

    v = tiny_vocab()
    w = gguf.GGUFWriter(str(tmp_path / "t5.gguf"), "bert")
    w.add_tokenizer_model("t5")
    w.add_token_list(v.pieces)
    w.add_token_scores([float(s) for s in v.scores])
    w.add_bos_token_id(v.bos)
    w.add_eos_token_id(v.eos)
    w.add_unk_token_id(v.unk)
    w.add_pad_token_id(v.pad)
    w.add_precompiled_charsmap(compile_charsmap({chr(c): o for c, o in NORM_MAP.items()}))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    tok, pad, _ = gguf_tokenizer(read_gguf(tmp_path / "t5.gguf"))
    ref = tokenizer_from_map(v.pieces, v.scores, v.unk, v.bos, v.eos, NORM_MAP)
    assert pad == v.pad
    for text in ["the cat sat", "ＡＢ\tfullwidth", "hello  world: 这部电影"]:
        assert tok.encode(text).ids == ref.encode(text).ids


def write_llama_gguf(path: Path, weights: dict[str, np.ndarray], qtype, vocab: list[str]) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_block_count(2)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(vocab)
    w.add_token_scores([-float(i) for i in range(len(vocab))])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    for name, data in weights.items():
        if data.ndim == 2 and qtype != Q.F32:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0])
def test_llama_gguf_quantised_loads_the_dequantised_weights(tmp_path, qtype):
    """A quantised Llama GGUF loads into the same LlamaForCausalLM as an F32 GGUF of its dequantised values."""
    from edgeemb_export.llm.gguf import load_gguf

    rng = np.random.default_rng(0)
    vocab = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581a", "\u2581b", "a", "b"]
    shapes = {"token_embd.weight": (len(vocab), 64), "output_norm.weight": (64,)}
    for i in range(2):
        shapes.update({f"blk.{i}.attn_q.weight": (64, 64), f"blk.{i}.attn_k.weight": (32, 64),
                       f"blk.{i}.attn_v.weight": (32, 64), f"blk.{i}.attn_output.weight": (64, 64),
                       f"blk.{i}.attn_norm.weight": (64,), f"blk.{i}.ffn_norm.weight": (64,),
                       f"blk.{i}.ffn_gate.weight": (128, 64), f"blk.{i}.ffn_down.weight": (64, 128),
                       f"blk.{i}.ffn_up.weight": (128, 64)})
    weights = {k: (0.1 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
    quant = write_llama_gguf(tmp_path / "q.gguf", weights, qtype, vocab)
    deq = {t.name: gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(weights[t.name].shape)
           for t in gguf.GGUFReader(str(quant)).tensors}
    plain = write_llama_gguf(tmp_path / "f32.gguf", {k: np.ascontiguousarray(v, np.float32) for k, v in deq.items()},
                             Q.F32, vocab)
    a, _, _ = load_gguf(quant)
    b, _, _ = load_gguf(plain)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert not torch.equal(sa["model.embed_tokens.weight"],
                           torch.from_numpy(weights["token_embd.weight"]))  # really quantised
