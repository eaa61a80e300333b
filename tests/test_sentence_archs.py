"""Sentence exporter breadth: tiny random BERT, RoBERTa, XLM-R, DeBERTa-v2 and T5-encoder folders vs torch.

Position encodings covered: learned absolute (BERT), learned from pad-aware positions (RoBERTa/XLM-R),
relative (DeBERTa-v2 disentangled attention, T5 relative bias). T5 runs sentence-t5 style: mean pooling,
a Dense layer, then Normalize.
"""
import json
import warnings

import numpy as np
import pytest

import edgeemb

torch = pytest.importorskip("torch", reason="sentence export needs the export extra")
transformers = pytest.importorskip("transformers", reason="sentence export needs the export extra")
pytest.importorskip("sentence_transformers", reason="sentence export needs the export extra")

from torch_helpers import cosines, one_torch_thread, report  # noqa: F401

TEXTS = ["the cat", "a quick brown fox jumps over the lazy dog while the cat sat on the mat " * 2,
         "这部电影很好看", "hello world", "x", "the mat and the dog"]
H = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
     "vocab_size": 256, "max_position_embeddings": 128}
# name -> (model builder, pooling, whether left padding also gives the same vectors). Bundles record right
# padding; left is checked where the graph is exact under it: not the BERT family, whose fused Attention op
# (onnxruntime's BERT optimiser) is exact only under right padding (XLM-R left: cosine 0.99986), nor BERT's
# absolute positions, nor CLS pooling, which reads position 0. The unfused relative-position graphs are.
ARCHS = {
    "bert": (lambda: transformers.BertModel(transformers.BertConfig(**H)), "mean", False),
    "roberta": (lambda: transformers.RobertaModel(transformers.RobertaConfig(pad_token_id=0, **H)), "cls",
                False),
    "xlm-roberta": (lambda: transformers.XLMRobertaModel(transformers.XLMRobertaConfig(pad_token_id=0, **H)),
                    "mean", False),
    "deberta-v2": (lambda: transformers.DebertaV2Model(transformers.DebertaV2Config(
        relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"],
        position_buckets=16, type_vocab_size=0, **H)), "mean", True),
    "t5": (lambda: transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu")),
        "mean", True),
}


def train_wordpiece(texts, vocab_size):
    """A BERT-style WordPiece tokenizer trained on texts ([CLS] $A [SEP]), for the tiny models of the tests."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


@pytest.fixture(scope="module")
def wordpiece():
    return train_wordpiece(TEXTS * 10, 200)


def build_st_folder(name, folder, tokenizer):
    """A sentence-transformers folder around a tiny random model (T5: + Dense, sentence-t5 style)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as stm

    builder, pooling, _ = ARCHS[name]
    torch.manual_seed(0)
    hf = folder / "hf"
    builder().save_pretrained(hf)
    no_types = {"model_input_names": ["input_ids", "attention_mask"]} if name in ("t5", "deberta-v2") else {}
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                         cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                         **no_types).save_pretrained(hf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        width = 64 if name == "t5" else 32
        modules = [stm.Transformer(str(hf), max_seq_length=64), stm.Pooling(width, pooling)]
        if name == "t5":
            modules.append(stm.Dense(64, 24, bias=False, activation_function=torch.nn.Identity()))
        modules.append(stm.Normalize())
    st = SentenceTransformer(modules=modules, device="cpu")
    st.save(str(folder / "st"))
    return folder / "st", st


@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) if n == "xlm-roberta" else n
                                        for n in ARCHS])  # XLM-R runs RoBERTa's code: -m slow
def arch(request, tmp_path_factory, wordpiece):
    """fp32 bundle from export_sentence, int8/int4 graphs quantised from it, and the torch reference."""
    from edgeemb_export.common.onnx_tools import quantize, quantize_int4
    from edgeemb_export.sentence.export import export_sentence

    folder = tmp_path_factory.mktemp(request.param)
    src, st = build_st_folder(request.param, folder, wordpiece)
    out = export_sentence(src, folder / "fp32", "none")
    quantize(out / "model.onnx", folder / "int8.onnx", "int8")
    quantize_int4(out / "model.onnx", folder / "int4.onnx")
    reference = np.stack([st.encode([t], batch_size=1)[0] for t in TEXTS])  # each text alone, unpadded
    return request.param, out, reference


def test_export_records_parity_and_only_the_inputs_the_model_takes(arch):
    name, out, _ = arch
    m = edgeemb.read_manifest(out)
    assert m.parity["cosine_min"] >= 0.9999
    assert ("token_type_ids" in m.inputs) == (name in ("bert", "roberta", "xlm-roberta"))
    assert m.dim == (24 if name == "t5" else 32)


def test_fp32_matches_torch_in_a_padded_batch(arch):
    name, out, reference = arch
    enc = edgeemb.load(out, threads=1)
    sides = ("right", "left") if ARCHS[name][2] else ("right",)  # the bundle itself records "right"
    for side in sides:
        enc.tokenizer.padding_side = side
        got = enc.encode(TEXTS, batch_size=len(TEXTS))
        report(family="sentence", arch=name, pooling=ARCHS[name][1], check=f"fp32 vs torch, {side} padding",
               cosine_min=cosines(got, reference).min())
        assert cosines(got, reference).min() >= 0.9999, (name, side)


def test_text_alone_equals_text_in_padded_batch(arch):
    _, out, _ = arch
    enc = edgeemb.load(out, threads=1)
    batch = enc.encode(TEXTS, batch_size=len(TEXTS))
    alone = np.stack([enc.encode(t) for t in TEXTS])
    report(family="sentence", arch=arch[0], check="alone vs in padded batch",
           cosine_min=cosines(batch, alone).min())
    assert cosines(batch, alone).min() >= 0.9999


def test_int8_and_int4_stay_close_to_fp32(arch):
    from edgeemb.encode.backend import OnnxBackend

    name, out, _ = arch
    enc = edgeemb.load(out, threads=1)
    fp32 = enc.encode(TEXTS, batch_size=len(TEXTS))
    for graph, bound in (("int8.onnx", 0.99), ("int4.onnx", 0.95)):
        enc.backend = OnnxBackend(out.parent / graph, threads=1, normalized=enc.manifest.normalize)
        cos = cosines(enc.encode(TEXTS, batch_size=len(TEXTS)), fp32)
        report(family="sentence", arch=name, check=f"{graph[:4]} vs fp32", cosine_min=cos.min(),
               cosine_mean=cos.mean())
        assert cos.min() >= bound, (name, graph)


def test_unsupported_module_is_named(tmp_path):

    from edgeemb_export.common.errors import ExportError
    from edgeemb_export.sentence.export import read_sentence_config

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_LayerNorm",
                "type": "sentence_transformers.models.LayerNorm"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ExportError, match="LayerNorm is not supported"):
        read_sentence_config(tmp_path)
