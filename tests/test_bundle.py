"""Manifest validation and checksum verification: each bad bundle is refused with a message naming the problem."""
import json

import pytest

import edgeemb
from edgeemb.bundle import MANIFEST, parse_manifest
from edgeemb.errors import BundleError


def edit_manifest(folder, change):
    path = folder / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_valid_bundle_loads_with_path_and_manifest(bundle_copy):
    enc = edgeemb.load(bundle_copy, threads=1)
    assert enc.path == bundle_copy
    assert enc.manifest.kind == "sentence" and enc.dim == 384
    assert enc.manifest.parity["cosine_mean"] >= 0.99


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("dim"), "missing field 'dim'"),
    (lambda d: d.update(colour="red"), "unknown field 'colour'"),
    (lambda d: d.update(format_version=99), "newer than this edgeemb reads"),
    (lambda d: d.update(dim="384"), "field 'dim' has type str"),
    (lambda d: d.update(kind="audio"), "field 'kind'"),
    (lambda d: d["files"].update({"../evil.onnx": {"sha256": "0" * 64, "size": 1}}), "not a plain file name"),
    (lambda d: d["files"].update({"/etc/passwd": {"sha256": "0" * 64, "size": 1}}), "not a plain file name"),
])
def test_bad_manifest_is_refused(bundle_copy, change, message):
    edit_manifest(bundle_copy, change)
    with pytest.raises(BundleError, match=message):
        edgeemb.load(bundle_copy)


def test_missing_and_unreadable_bundles(tmp_path):
    with pytest.raises(BundleError, match="bundle not found"):
        edgeemb.load(tmp_path / "nope")
    with pytest.raises(BundleError, match="missing manifest"):
        edgeemb.load(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="invalid JSON"):
        edgeemb.load(tmp_path)


def test_tampered_or_truncated_model_is_refused(bundle_copy):
    model = bundle_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 differs"):
        edgeemb.load(bundle_copy)
    model.write_bytes(bytes(data[:1000]))
    with pytest.raises(BundleError, match="truncated"):
        edgeemb.load(bundle_copy)
    model.unlink()
    with pytest.raises(BundleError, match="missing"):
        edgeemb.load(bundle_copy)


def test_parse_manifest_needs_an_object():
    with pytest.raises(BundleError, match="JSON object"):
        parse_manifest([1, 2])
