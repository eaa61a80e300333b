"""Fuzz (issue #14): random manifests and corpus lines never raise anything but edgeemb's own errors."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeemb.bundle import MANIFEST, parse_manifest, read_manifest
from edgeemb.bundle.manifest import loads_manifest
from edgeemb.corpus import CorpusReader
from edgeemb.errors import EdgeembError

VALID = {
    "format_version": 1, "name": "b", "kind": "sentence", "dim": 8, "max_length": 16, "pooling": "mean",
    "normalize": True, "quantization": "int8",
    "files": {"model.onnx": {"sha256": "0" * 64, "size": 3}, "tokenizer.json": {"sha256": "0" * 64, "size": 2}},
    "inputs": ["input_ids"], "outputs": {"sentence_embedding": ["batch", 8]}, "created_with": {"edgeemb": "x"},
    "tokenizer": {"file": "tokenizer.json", "pad_id": 0, "padding_side": "right"},
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10 ** 20), 10 ** 20) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(key=st.sampled_from(sorted(VALID) + ["extra"]), value=json_values)
def test_a_manifest_with_any_one_field_replaced_parses_or_is_a_bundle_error(key, value):
    data = json.loads(json.dumps(VALID))
    data[key] = value
    try:
        parse_manifest(data)
    except EdgeembError:
        pass


@FUZZ
@given(sub=st.sampled_from(["tokenizer", "files", "outputs", "created_with"]), key=st.text(max_size=12),
       value=json_values)
def test_a_manifest_with_a_nested_field_replaced_parses_or_is_a_bundle_error(sub, key, value):
    data = json.loads(json.dumps(VALID))
    data[sub][key] = value
    try:
        parse_manifest(data)
    except EdgeembError:
        pass


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_manifest_bytes_parse_or_are_a_bundle_error(raw, tmp_path_factory):
    try:
        loads_manifest(raw, "fuzz")
    except EdgeembError:
        pass
    folder = tmp_path_factory.mktemp("m")
    (folder / MANIFEST).write_bytes(raw)
    try:
        read_manifest(folder)
    except EdgeembError:
        pass


@FUZZ
@given(suffix=st.sampled_from([".txt", ".jsonl", ".tsv"]),
       lines=st.lists(st.binary(max_size=80) | st.text(max_size=80).map(str.encode)
                      | json_values.map(lambda v: json.dumps(v).encode()), min_size=1, max_size=6))
def test_any_corpus_lines_read_or_are_an_edgeemb_error(suffix, lines, tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / f"corpus{suffix}"
    header = [b"id\ttext"] if suffix == ".tsv" else []
    path.write_bytes(b"\n".join(header + [line.replace(b"\n", b" ") for line in lines]) + b"\n")
    try:
        for doc in CorpusReader(path):
            assert isinstance(doc.text, str)
    except EdgeembError:
        pass
