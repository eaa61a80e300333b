"""The optimised-graph copy (edgeemb/encode/graphcache.py): written on the first load, run on later loads with the
same vectors, rebuilt when damaged, never used for an unverified bundle; and load(verify="full")."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import edgeemb
from edgeemb.encode import graphcache
from edgeemb.errors import BundleError, InputError

TEXTS = ["the weather in spring", "a football match ended late", "股票价格下跌"]


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """A private cache home, so the copies and the hash cache start empty."""
    monkeypatch.setenv("EDGEEMB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEEMB_GRAPH_CACHE", raising=False)
    return tmp_path / "home"


def copies(home: Path) -> list[Path]:
    return sorted((home / graphcache.GRAPHS_DIR).glob("*.onnx")) if (home / graphcache.GRAPHS_DIR).is_dir() else []


def test_first_load_writes_the_copy_and_later_loads_run_it_with_the_same_vectors(home, bundle_copy, monkeypatch):
    first = edgeemb.load(bundle_copy, threads=1)
    assert first.backend.optimized is None and len(copies(home)) == 1
    record = json.loads(copies(home)[0].with_suffix(".json").read_text())
    assert record["size"] == copies(home)[0].stat().st_size
    second = edgeemb.load(bundle_copy, threads=1)
    assert second.backend.optimized == copies(home)[0]
    monkeypatch.setenv("EDGEEMB_GRAPH_CACHE", "0")
    plain = edgeemb.load(bundle_copy, threads=1)
    assert plain.backend.optimized is None
    np.testing.assert_array_equal(second.encode(TEXTS), plain.encode(TEXTS))
    np.testing.assert_array_equal(first.encode(TEXTS), plain.encode(TEXTS))


def test_turned_off_or_unverified_writes_and_runs_no_copy(home, bundle_copy, monkeypatch):
    monkeypatch.setenv("EDGEEMB_GRAPH_CACHE", "off")
    edgeemb.load(bundle_copy, threads=1)
    assert copies(home) == []
    monkeypatch.delenv("EDGEEMB_GRAPH_CACHE")
    edgeemb.load(bundle_copy, threads=1)  # writes the copy
    # verify=False: the graph on disk may not be the one the manifest's sha256 names, so no copy keyed by it
    assert edgeemb.load(bundle_copy, threads=1, verify=False).backend.optimized is None


def test_a_damaged_copy_is_rebuilt_not_run(home, bundle_copy):
    edgeemb.load(bundle_copy, threads=1)
    (copy,) = copies(home)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))  # same size, new mtime: re-hashed, mismatch
    enc = edgeemb.load(bundle_copy, threads=1)
    assert enc.backend.optimized is None
    assert copy.read_bytes() != bytes(data)  # that load wrote it again
    assert edgeemb.load(bundle_copy, threads=1).backend.optimized == copy
    copy.write_bytes(b"not an onnx graph")  # truncated: its record's size no longer matches
    assert edgeemb.load(bundle_copy, threads=1).backend.optimized is None
    assert edgeemb.load(bundle_copy, threads=1).backend.optimized == copy


def test_an_unwritable_cache_home_only_costs_the_optimisation(home, bundle_copy):
    home.mkdir(parents=True)
    (home / graphcache.GRAPHS_DIR).write_text("a file where the folder should be")
    enc = edgeemb.load(bundle_copy, threads=1)
    assert enc.backend.optimized is None and enc.encode(TEXTS).shape == (3, 384)


def test_verify_full_rehashes_a_file_the_hash_cache_trusts(home, bundle_copy):
    edgeemb.load(bundle_copy, threads=1)  # hashes every file once; later loads trust unchanged ones
    tok = bundle_copy / "tokenizer.json"
    st = tok.stat()
    raw = tok.read_bytes()
    tok.write_bytes(raw.replace(b'"[UNK]"', b'"[UNX]"', 1))
    os.utime(tok, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime forged back: the documented trade
    assert tok.stat().st_size == st.st_size
    edgeemb.load(bundle_copy, threads=1)  # trusted by the hash cache
    with pytest.raises(BundleError, match="sha256 differs"):
        edgeemb.load(bundle_copy, threads=1, verify="full")
    with pytest.raises(InputError, match="verify must be"):
        edgeemb.load(bundle_copy, verify="yes")


def test_copies_are_capped_oldest_first(home, bundle_copy, monkeypatch):
    monkeypatch.setattr(graphcache, "MAX_COPIES", 2)
    folder = home / graphcache.GRAPHS_DIR
    folder.mkdir(parents=True)
    for i, name in enumerate(["a" * 40, "b" * 40]):
        (folder / f"{name}-ort0.onnx").write_bytes(b"x")
        os.utime(folder / f"{name}-ort0.onnx", (1000 + i, 1000 + i))
    edgeemb.load(bundle_copy, threads=1)
    names = sorted(p.name[:1] for p in copies(home))
    assert len(names) == 2 and "a" not in names and "b" in names


def test_a_graph_onnxruntime_refuses_is_one_line_and_leaves_no_temporary_copy(home, bundle_copy):
    from edgeemb.bundle import file_entry, read_manifest, write_manifest

    (bundle_copy / "model.onnx").write_bytes(b"\x08\x07 not a graph")
    m = read_manifest(bundle_copy)
    m.files["model.onnx"] = file_entry(bundle_copy / "model.onnx")  # hashed as listed: onnxruntime must refuse
    write_manifest(bundle_copy, m)
    with pytest.raises(BundleError, match="onnxruntime cannot load it"):
        edgeemb.load(bundle_copy, threads=1)
    folder = home / graphcache.GRAPHS_DIR
    assert not folder.is_dir() or list(folder.iterdir()) == []
