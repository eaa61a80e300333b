"""Mobile builds: ORT format + operator config, fp16 weight storage, parity checks, and the device memory options."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="mobile conversion needs the export extra (onnx)")

from edgeemb_export.common.errors import ExportError
from edgeemb_export.mobile import count_operators, fp16_groups, parity_texts, prepare_mobile, store_fp16

import edgeemb
from edgeemb.bundle import read_manifest, sha256_file, verify_files

DIM = 32


def tiny_sentence_bundle(folder: Path, offset: float = 0.0) -> Path:
    """A real, tiny sentence bundle: word-level tokenizer, embedding table, masked mean, projection.

    offset: add it to the table and subtract it after the lookup, so the table needs float32 precision.
    """
    from edgeemb_export.common.staging import finish_manifest
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder.mkdir(parents=True)
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(parity_texts(200), trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tok.save(str(folder / "tokenizer.json"))
    rng = np.random.default_rng(0)
    table = (rng.normal(size=(tok.get_vocab_size(), DIM)) + offset).astype(np.float32)
    proj = rng.normal(size=(DIM, DIM)).astype(np.float32)
    consts = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(proj, "proj"),
              numpy_helper.from_array(np.array([-1], np.int64), "last"),
              numpy_helper.from_array(np.array([1], np.int64), "seq_axis"),
              numpy_helper.from_array(np.array(1e-9, np.float32), "eps"),
              numpy_helper.from_array(np.full(DIM, offset, np.float32), "center")]
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["looked_up"]),
             helper.make_node("Sub", ["looked_up", "center"], ["token_embeddings"]),
             helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),
             helper.make_node("Mul", ["token_embeddings", "mask3"], ["masked"]),
             helper.make_node("ReduceSum", ["masked", "seq_axis"], ["summed"], keepdims=0),
             helper.make_node("ReduceSum", ["mask3", "seq_axis"], ["count"], keepdims=0),
             helper.make_node("Max", ["count", "eps"], ["denom"]),
             helper.make_node("Div", ["summed", "denom"], ["mean"]),
             helper.make_node("MatMul", ["mean", "proj"], ["sentence_embedding"])]
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
            for n in ("input_ids", "attention_mask")]
    outs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", DIM]),
            helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["batch", "sequence", DIM])]
    graph = helper.make_graph(nodes, "tiny", ints, outs, consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    finish_manifest(folder, ["model.onnx", "tokenizer.json"], name="tiny", kind="sentence", dim=DIM,
                    max_length=64, pooling="mean", normalize=False, quantization="none",
                    inputs=["input_ids", "attention_mask"],
                    outputs={"sentence_embedding": ["batch", DIM], "token_embeddings": ["batch", "sequence", DIM]},
                    tokenizer={"file": "tokenizer.json", "pad_id": 0, "padding_side": "right"})
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_sentence_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture()
def isolated_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EDGEEMB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


TEXTS = ["the first text", "一个中文句子", "", "a longer text about cooking pasta in salted water"]


def test_ort_copy_adds_model_ort_and_operator_config(tiny, tmp_path):
    src_manifest = sha256_file(tiny / "edgeemb.json")
    report = prepare_mobile(tiny, tmp_path / "m", ort=True)
    manifest = read_manifest(tmp_path / "m")
    verify_files(tmp_path / "m", manifest)  # both new files are checksummed in the manifest
    assert {"model.onnx", "model.ort", "required_operators.config", "tokenizer.json"} == set(manifest.files)
    config = (tmp_path / "m" / "required_operators.config").read_text()
    assert "Gather" in config and "MatMul" in config and str(tmp_path) not in config
    assert report.operators == count_operators(tmp_path / "m" / "required_operators.config") >= 5
    assert manifest.parity["mobile"]["ort"]["cosine_min"] >= 0.9999
    enc = edgeemb.load(tmp_path / "m", threads=1)
    assert enc.backend.session._model_path.endswith("model.ort"), "the runtime must prefer model.ort when listed"
    np.testing.assert_allclose(enc.encode(TEXTS), edgeemb.load(tiny, threads=1).encode(TEXTS), atol=1e-5)
    assert sha256_file(tiny / "edgeemb.json") == src_manifest, "the source bundle must not change"


def test_ort_only_archive_loads_and_matches(tiny, tmp_path, isolated_home):
    from edgeemb.cli import main

    tar = tmp_path / "tiny.tar"
    assert main(["pack", str(tiny), "-o", str(tar), "--ort-only"]) == 0
    with tarfile.open(tar) as tf:
        names = tf.getnames()
    assert names[0] == "edgeemb.json" and "model.ort" in names and "model.onnx" not in names
    enc = edgeemb.load(tar, threads=1)
    np.testing.assert_allclose(enc.encode(TEXTS), edgeemb.load(tiny, threads=1).encode(TEXTS), atol=1e-5)
    assert not any(p.name.startswith(".tiny.tar") for p in tmp_path.iterdir()), "temporary copy left behind"


def test_fp16_storage_halves_the_graph_and_keeps_parity(tiny, tmp_path):
    report = prepare_mobile(tiny, tmp_path / "h", ort=False, fp16_storage=True)
    fig = report.figures["fp16_storage"]
    assert fig["tensors_fp16"] == 2 and fig["cosine_min"] >= 0.9999
    assert (tmp_path / "h" / "model.onnx").stat().st_size < 0.6 * (tiny / "model.onnx").stat().st_size
    kinds = {t.name: t.data_type for t in onnx.load(str(tmp_path / "h" / "model.onnx")).graph.initializer}
    assert kinds["table__fp16"] == onnx.TensorProto.FLOAT16 and kinds["eps"] == onnx.TensorProto.FLOAT
    assert json.loads((tmp_path / "h" / "edgeemb.json").read_text())["parity"]["mobile"]["fp16_storage"]


def test_fp16_storage_keeps_groups_that_would_lose_parity_in_float32(tmp_path):
    src = tiny_sentence_bundle(tmp_path / "offset", offset=2048.0)  # float16 steps are 2.0 at 2048
    report = prepare_mobile(src, tmp_path / "h", ort=False, fp16_storage=True)
    fig = report.figures["fp16_storage"]
    assert fig["tensors_fp16"] == 1 and fig["cosine_min"] >= 0.9999
    assert list(fig["kept_float32_by_consumer"]) == ["Gather"] and fig["kept_float32_by_consumer"]["Gather"] < 0.99
    kinds = {t.name: t.data_type for t in onnx.load(str(tmp_path / "h" / "model.onnx")).graph.initializer}
    assert kinds["table"] == onnx.TensorProto.FLOAT and kinds["proj__fp16"] == onnx.TensorProto.FLOAT16


def test_fp16_candidates_leave_out_small_and_out_of_range_tensors(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    big = np.linspace(-1, 1, 2048, dtype=np.float32)
    huge = np.full(2048, 1e6, dtype=np.float32)  # beyond float16's 65504
    small = np.ones(1, dtype=np.float32)
    nodes = [helper.make_node("Add", ["x", "big"], ["a"]), helper.make_node("Add", ["a", "huge"], ["b"]),
             helper.make_node("Mul", ["b", "small"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2048])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2048])],
                              [numpy_helper.from_array(a, n) for a, n in ((big, "big"), (huge, "huge"), (small, "small"))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(tmp_path / "a.onnx"))
    assert fp16_groups(tmp_path / "a.onnx") == {"Add": {"big"}}
    assert store_fp16(tmp_path / "a.onnx", tmp_path / "b.onnx")["tensors_fp16"] == 1
    import onnxruntime as ort

    x = np.zeros(2048, dtype=np.float32)
    y = ort.InferenceSession(str(tmp_path / "b.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, (x + big + huge) * 1.0, rtol=1e-3)


def test_parity_failure_is_refused_and_leaves_nothing(tiny, tmp_path):
    with pytest.raises(ExportError, match=r"model.ort changes the embeddings: cosine min .* < 1.5"):
        prepare_mobile(tiny, tmp_path / "m", ort=True, min_cosine=1.5)
    assert not (tmp_path / "m").exists()


def test_bundle_without_a_graph_is_refused(tmp_path):
    from edgeemb.bundle import FORMAT_VERSION, Manifest, file_entry, write_manifest

    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "vectors.npy").write_bytes(b"x" * 64)
    (folder / "tokenizer.json").write_bytes(b"{}")
    write_manifest(folder, Manifest(format_version=FORMAT_VERSION, name="s", kind="static", dim=4, max_length=8,
                                    pooling="mean", normalize=True, quantization="none",
                                    files={n: file_entry(folder / n) for n in ("vectors.npy", "tokenizer.json")},
                                    inputs=[],
                                    outputs={}, created_with={}))
    with pytest.raises(ExportError, match="static bundle with no model.onnx; --ort and --fp16-storage apply"):
        prepare_mobile(folder, tmp_path / "m", ort=True)


@pytest.mark.parametrize("kw, expected", [
    ({"low_memory": True}, (1, True, False)),
    ({"low_memory": True, "threads": 2}, (2, True, False)),
    ({"arena": False, "threads": 1}, (1, False, False)),
    ({"mem_pattern": True, "threads": 2}, (2, True, True)),
    ({"threads": 1}, (1, True, False)),  # memory patterns are off by default (docs/results/encode-memory.md)
])
def test_memory_options_reach_the_session(tiny, kw, expected):
    so = edgeemb.load(tiny, **kw).backend.session.get_session_options()
    assert (so.intra_op_num_threads, so.enable_cpu_mem_arena, so.enable_mem_pattern) == expected


@pytest.mark.slow
def test_default_bundle_ort_keeps_parity(default_bundle, tmp_path):
    report = prepare_mobile(default_bundle, tmp_path / "m", ort=True)
    assert report.figures["ort"]["cosine_min"] >= 0.9999 and report.operators > 5
    a = edgeemb.load(tmp_path / "m", threads=1).encode(TEXTS)
    b = edgeemb.load(default_bundle, threads=1).encode(TEXTS)
    assert (np.sum(a * b, axis=1) >= 0.9999).all()
