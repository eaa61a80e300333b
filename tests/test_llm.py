"""LLM encoders: tiny random Llama, Qwen2, Qwen3, Mistral, GPT-2 decoders exported and checked vs torch."""
import json
import warnings

import numpy as np
import pytest

import edgeemb

torch = pytest.importorskip("torch", reason="LLM export needs the export extra")
transformers = pytest.importorskip("transformers", reason="LLM export needs the export extra")

from edgeemb_export.common.errors import ExportError
from edgeemb_export.llm.export import export_llm, export_source
from edgeemb_export.llm.options import LLMOptions
from edgeemb_export.llm.sources import from_causal_lm
from edgeemb_export.common.onnx_tools import quantize, quantize_int4
from torch_helpers import cosines, one_torch_thread, report  # noqa: F401

# mixed lengths, English and Chinese, one text far longer than the rest
TEXTS = ["the cat", "a quick brown fox jumps over the lazy dog while the cat sat on the mat " * 3,
         "这部电影很好看", "hello world and more words", "x", "the mat"]
COMMON = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}
SLOW = pytest.mark.slow  # near-copies of Llama's graph: run with -m slow
ARCHS = {  # name -> (builder, pooling): both poolings run under both padding sides
    "llama": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**COMMON)), "mean"),
    "qwen2": (lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**COMMON)), "mean"),
    "qwen3": (lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=16, **COMMON)), "last"),
    "mistral": (lambda: transformers.MistralForCausalLM(
        transformers.MistralConfig(sliding_window=128, **COMMON)), "last"),
    "gpt2": (lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=320, n_embd=64, n_layer=2, n_head=4, n_positions=256)), "last"),
}
PARAMS = [pytest.param(name, marks=SLOW) if name in ("qwen2", "mistral") else name for name in ARCHS]


@pytest.fixture(scope="module")
def bpe_json():
    """A byte-level BPE tokenizer trained here (no BOS, no pad token: GPT-2 style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 10, trainer)
    return tok.to_str()


def new_tokenizer(bpe_json):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(bpe_json)


def torch_pooled(base, ids_list, pooling, layers):
    """Independent reference: each text alone through transformers, pooled per hidden state -> (n, L, dim)."""
    out = []
    with torch.no_grad():
        for ids in ids_list:
            hs = base(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
            pooled = [hs[k][0, -1] if pooling == "last" else hs[k][0].mean(0) for k in layers]
            out.append(torch.stack(pooled).numpy())
    return np.stack(out)


def encode_quietly(enc, texts, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", edgeemb.TruncationWarning)
        return enc.encode(texts, **kw)


@pytest.fixture(scope="module", params=PARAMS)
def arch_bundle(request, tmp_path_factory, bpe_json):
    """One fp32 export per architecture (--layer all), plus int8 and int4 graphs quantised from it."""
    builder, pooling = ARCHS[request.param]
    torch.manual_seed(0)
    model = builder().eval()
    source = from_causal_lm(model, new_tokenizer(bpe_json), {"eos": 0}, request.param, "memory", {})
    base = source.model
    out = tmp_path_factory.mktemp(request.param) / "fp32"
    export_source(source, out, LLMOptions(pooling=pooling, layer="all", quantization="none"),
                  parity_texts=TEXTS[:3])
    quantize(out / "model.onnx", out.parent / "int8.onnx", "int8")
    quantize_int4(out / "model.onnx", out.parent / "int4.onnx")
    return request.param, pooling, base, out


def backend(enc, path):
    """The same bundle's encoder running another graph (int8/int4 beside the fp32 one)."""
    from edgeemb.encode.backend import OnnxBackend

    return OnnxBackend(path, threads=1, normalized=enc.manifest.normalize)


def test_fp32_matches_torch_under_left_and_right_padding(arch_bundle):
    name, pooling, base, out = arch_bundle
    enc = edgeemb.load(out, threads=1)
    assert enc.manifest.tokenizer["padding_side"] == "left" and "position_ids" in enc.manifest.inputs
    ids = enc.tokenizer.tokenize(TEXTS).ids
    ref = torch_pooled(base, ids, pooling, enc.manifest.layers)
    for side in ("left", "right"):
        enc.tokenizer.padding_side = side
        got = encode_quietly(enc, TEXTS, batch_size=len(TEXTS), normalize=False)
        layers = encode_quietly(enc, TEXTS, batch_size=len(TEXTS), layer="all", normalize=False)
        report(family="llm", arch=name, pooling=pooling, check=f"fp32 vs torch, {side} padding",
               cosine_min=cosines(got, ref[:, -1]).min(), all_layers_cosine_min=cosines(layers, ref).min())
        assert cosines(got, ref[:, -1]).min() >= 0.9999, (name, side)
        assert layers.shape == (len(TEXTS), 3, 64)
        assert cosines(layers, ref).min() >= 0.9999, (name, side)
        one = encode_quietly(enc, TEXTS, layer=1, normalize=False)
        np.testing.assert_allclose(one, layers[:, 1], atol=1e-6)


def test_text_alone_equals_text_in_padded_batch(arch_bundle):
    _, _, _, out = arch_bundle
    enc = edgeemb.load(out, threads=1)
    batch = encode_quietly(enc, TEXTS, batch_size=len(TEXTS))
    alone = np.stack([encode_quietly(enc, t) for t in TEXTS])
    report(family="llm", arch=arch_bundle[0], check="alone vs in padded batch",
           cosine_min=cosines(batch, alone).min())
    assert cosines(batch, alone).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_int8_and_int4_stay_close_to_fp32(arch_bundle):
    name, _, _, out = arch_bundle
    enc = edgeemb.load(out, threads=1)
    fp32 = encode_quietly(enc, TEXTS, batch_size=len(TEXTS))
    for graph, bound in (("int8.onnx", 0.99), ("int4.onnx", 0.95)):
        enc.backend = backend(enc, out.parent / graph)
        got = encode_quietly(enc, TEXTS, batch_size=len(TEXTS))
        report(family="llm", arch=name, check=f"{graph[:4]} vs fp32", cosine_min=cosines(got, fp32).min(),
               cosine_mean=cosines(got, fp32).mean())
        assert cosines(got, fp32).min() >= bound, (name, graph)


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory, bpe_json):
    """A Hugging Face GPT-2 folder whose tokenizer has no pad token."""
    folder = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    torch.manual_seed(1)
    ARCHS["gpt2"][0]().save_pretrained(folder)
    transformers.PreTrainedTokenizerFast(tokenizer_object=new_tokenizer(bpe_json), eos_token="<|endoftext|>",
                                         bos_token="<|endoftext|>").save_pretrained(folder)
    return folder


def test_hf_folder_options_prompts_eos_truncation_and_intermediate_layer(gpt2_folder, tmp_path, monkeypatch):
    """--layer 1 --append-eos --max-length 8 + prompts: carried by the manifest, applied by the runtime.

    The weights go to model.onnx.data, as they do for big models (here forced by a zero threshold).
    """
    import edgeemb_export.llm.export

    monkeypatch.setattr(edgeemb_export.llm.export, "EXTERNAL_DATA_OVER", 0)
    opts = LLMOptions(pooling="last", layer=1, quantization="none", append_eos=True, max_length=8,
                      query_prompt="query: ", document_prompt="passage: ")
    out = export_llm(gpt2_folder, tmp_path / "b", opts)
    m = edgeemb.read_manifest(out)
    assert set(m.files) == {"model.onnx", "model.onnx.data", "tokenizer.json"}
    assert (out / "model.onnx.data").stat().st_size > (out / "model.onnx").stat().st_size
    assert m.kind == "llm" and m.layers == [1] and m.prompts == {"query": "query: ", "document": "passage: "}
    assert m.options["append_eos"] is True and m.parity["cosine_min"] >= 0.9999
    eos = m.tokenizer["eos_id"]
    assert m.tokenizer["pad_source"] == "eos" and m.tokenizer["pad_id"] == eos  # no pad token: EOS, recorded
    enc = edgeemb.load(out, threads=1)
    long_text = TEXTS[1]
    with pytest.warns(edgeemb.TruncationWarning, match="1 of 2 texts"):
        got = enc.encode([long_text, "the cat"], normalize=False)
    assert enc.truncated == 1
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(gpt2_folder / "tokenizer.json"))
    kept = raw.encode(long_text).ids[:7] + [eos]  # the last kept token is the appended EOS
    base = transformers.AutoModel.from_pretrained(str(gpt2_folder)).eval()
    ref = torch_pooled(base, [kept, raw.encode("the cat").ids + [eos]], "last", [1])[:, 0]
    assert cosines(got, ref).min() >= 0.9999
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", edgeemb.TruncationWarning)  # the prompts push "the cat" past 8 tokens
        np.testing.assert_allclose(enc.encode_queries("the cat"), enc.encode("query: the cat"), atol=1e-6)
        np.testing.assert_allclose(enc.encode_documents("the cat"), enc.encode("passage: the cat"), atol=1e-6)
        assert not np.allclose(enc.encode_queries("the cat"), enc.encode("the cat"), atol=1e-3)
    with pytest.raises(edgeemb.InputError, match="--layer all"):
        enc.encode("x", layer=0)


def test_unsupported_architecture_names_it_and_the_supported_list(tmp_path):
    config = {"architectures": ["BertForMaskedLM"], "model_type": "bert"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=r"BertForMaskedLM is not supported; supported: LlamaForCausalLM.*"
                                          r"GPT2LMHeadModel"):
        export_llm(tmp_path, tmp_path / "out")


def test_bad_layer_and_pooling_are_refused(gpt2_folder, tmp_path):
    with pytest.raises(ExportError, match="--layer 5 is out of range"):
        export_llm(gpt2_folder, tmp_path / "a", LLMOptions(layer=5))
    with pytest.raises(ExportError, match="--pooling 'cls'"):
        export_llm(gpt2_folder, tmp_path / "b", LLMOptions(pooling="cls"))


def test_cli_registers_export_llm():
    from edgeemb.cli import build_parser

    args = build_parser().parse_args(["export", "llm", "src", "-o", "out", "--layer", "all",
                                      "--quantize", "int4", "--append-eos", "--query-prompt", "q: "])
    assert args.layer == "all" and args.quantize == "int4" and args.append_eos and args.query_prompt == "q: "
