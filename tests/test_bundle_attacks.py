"""Hostile bundles (issue #14): every file the runtime opens is listed, name-checked and hashed; links, bad values,
deep or huge manifests and control characters in names are refused or escaped with a message naming the field."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import edgeemb
from edgeemb.bundle import MANIFEST
from edgeemb.bundle.archive import pack, unpack
from edgeemb.errors import BundleError
from edgeemb.search.store import STORE


def edit_manifest(folder, change):
    path = folder / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("tokenizer_file, message", [
    ("/tmp/evil_tokenizer.json", "not a plain file name"),
    ("../evil_tokenizer.json", "not a plain file name"),
    ("other.json", "which 'files' does not list"),
])
def test_tokenizer_file_must_be_a_listed_plain_name(bundle_copy, tokenizer_file, message):
    edit_manifest(bundle_copy, lambda d: d["tokenizer"].update(file=tokenizer_file))
    with pytest.raises(BundleError, match=message):
        edgeemb.load(bundle_copy)


def test_unlisted_tokenizer_is_refused_and_a_listed_one_is_hashed(bundle_copy):
    edit_manifest(bundle_copy, lambda d: d["files"].pop("tokenizer.json"))
    with pytest.raises(BundleError, match="tokenizer.file.*does not list"):
        edgeemb.load(bundle_copy)


def test_swapped_tokenizer_fails_its_checksum(bundle_copy):
    tok = bundle_copy / "tokenizer.json"
    data = json.loads(tok.read_text())
    vocab = data["model"]["vocab"]
    vocab["good"], vocab["terrible"] = vocab["terrible"], vocab["good"]  # same size, different meaning
    tok.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="tokenizer.json: (sha256|size)"):
        edgeemb.load(bundle_copy, verify="full")


def test_listed_file_that_is_a_symlink_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "outside.json"
    shutil.copy(bundle_copy / "tokenizer.json", outside)
    (bundle_copy / "tokenizer.json").unlink()
    (bundle_copy / "tokenizer.json").symlink_to(outside)  # same bytes, so only the link itself can be refused
    with pytest.raises(BundleError, match="symbolic link"):
        edgeemb.load(bundle_copy)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(dim=128), "field 'dim' is 128 but the graph's output"),
    (lambda d: d.update(dim=10 ** 12), "field 'dim' is 1000000000000"),
    (lambda d: d["tokenizer"].update(pad_id="x"), "tokenizer.pad_id"),
    (lambda d: d.update(pooling="median"), "field 'pooling' is 'median'"),
    (lambda d: d["tokenizer"].update(padding_side="middle"), "padding_side"),
    (lambda d: d.update(max_length=-3), "field 'max_length'"),
    (lambda d: d.update(prompts={"query": 3}), "field 'prompts'"),
    (lambda d: d.update(inputs=["input_ids", "pixels"]), "does not take"),
])
def test_manifest_values_are_checked_at_load(bundle_copy, change, message):
    edit_manifest(bundle_copy, change)
    with pytest.raises(BundleError, match=message):
        edgeemb.load(bundle_copy)


def test_deeply_nested_manifest_is_one_clear_error(bundle_copy):
    (bundle_copy / MANIFEST).write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(BundleError, match="nested too deep"):
        edgeemb.load(bundle_copy)
    nested = 1
    for _ in range(20):
        nested = [nested]
    (bundle_copy / MANIFEST).write_text(json.dumps({"a": nested}))
    with pytest.raises(BundleError, match="nested too deep"):
        edgeemb.load(bundle_copy)


def test_huge_manifest_is_refused_unread(bundle_copy):
    with open(bundle_copy / MANIFEST, "w") as f:
        f.write(" " * (50 << 20) + "{}")
    with pytest.raises(BundleError, match="too large for a manifest"):
        edgeemb.load(bundle_copy)


def test_info_escapes_control_characters_in_names(bundle_copy):
    edit_manifest(bundle_copy, lambda d: d.update(name="evil\n\x1b[31mname"))
    out = subprocess.run([sys.executable, "-m", "edgeemb", "info", str(bundle_copy)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "evil\\n\\x1b[31mname" in out.stdout


def test_unpack_force_keeps_other_files_and_refuses_non_bundles(bundle_copy, tmp_path):
    tar = tmp_path / "b.tar"
    pack(bundle_copy, tar)
    target = tmp_path / "target"
    unpack(tar, target)
    (target / "notes.txt").write_text("mine")
    unpack(tar, target, force=True)
    assert (target / "notes.txt").read_text() == "mine" and (target / MANIFEST).is_file()
    edgeemb.load(target)  # the replaced bundle is whole

    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(BundleError, match="is not a bundle"):
        unpack(tar, user, force=True)
    assert (user / "thesis.tex").read_text() == "years of work"

    index = tmp_path / "index"
    index.mkdir()
    (index / STORE).write_bytes(b"")
    (index / MANIFEST).write_text("{}")
    with pytest.raises(BundleError, match="holds a search index"):
        unpack(tar, index, force=True)
    assert (index / STORE).exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir() if p.is_dir() and "old" in p.name), \
        os.listdir(tmp_path)


def test_unpack_onto_a_symlink_or_under_a_file_is_a_clear_error(bundle_copy, tmp_path):
    tar = tmp_path / "b.tar"
    pack(bundle_copy, tar)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(BundleError, match="symbolic link"):
        unpack(tar, tmp_path / "link")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="cannot create"):
        unpack(tar, tmp_path / "dangling" / "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="cannot create"):
        unpack(tar, tmp_path / "file" / "x")
    assert not any((tmp_path / "real").iterdir())
