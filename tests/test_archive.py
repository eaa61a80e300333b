"""Bundle archives: pack round-trips; unpack refuses every kind of malicious or damaged archive, writing nothing."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgeemb.bundle import FORMAT_VERSION, Manifest, file_entry, write_manifest
from edgeemb.bundle.archive import pack, unpack, unpack_cached
from edgeemb.errors import BundleError

FILES = {"vectors.npy": b"\x93NUMPY fake table " * 50, "vocab.txt": "king\nqueen\n国王\n".encode(),
         "tokenizer.json": b"{}"}


@pytest.fixture()
def bundle(tmp_path) -> Path:
    """A small generic bundle (static kind, numpy-like files, no graph): archives must not care what files hold."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    manifest = Manifest(format_version=FORMAT_VERSION, name="tiny", kind="static", dim=8, max_length=16,
                        pooling="mean", normalize=True, quantization="none",
                        files={n: file_entry(folder / n) for n in FILES}, inputs=[], outputs={},
                        created_with={"edgeemb": "test"})
    write_manifest(folder, manifest)
    return folder


@pytest.fixture()
def isolated_home(tmp_path, monkeypatch) -> Path:
    """Keep the unpack cache inside the test's folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("EDGEEMB_HOME", str(home))
    return home


def tree(root: Path) -> set[str]:
    """Every path under root (files, folders, links), to prove nothing appeared anywhere."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def member(name: str, data: bytes | None = None, **attrs) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def craft(path: Path, bundle: Path, extra: list, skip: tuple[str, ...] = (), replace: dict | None = None) -> Path:
    """An archive: the bundle's manifest first, its files (minus skip, with replacements), then extra members."""
    members = [member("edgeemb.json", (bundle / "edgeemb.json").read_bytes())]
    for name in FILES:
        if name not in skip:
            members.append(member(name, (replace or {}).get(name, (bundle / name).read_bytes())))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members + extra:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_pack_round_trip_is_identical_and_reproducible(bundle, tmp_path):
    a, b = pack(bundle, tmp_path / "a.tar"), pack(bundle, tmp_path / "b.tar")
    assert a.read_bytes() == b.read_bytes(), "packing the same bundle twice must give the same bytes"
    with tarfile.open(a) as tf:
        names = tf.getnames()
        assert all(m.uid == 0 and m.mtime == 0 and m.isreg() for m in tf.getmembers())
    assert names[0] == "edgeemb.json" and sorted(names[1:]) == sorted(FILES)
    out = unpack(a, tmp_path / "out")
    assert tree(out) == {"edgeemb.json", *FILES}
    for name in ["edgeemb.json", *FILES]:
        assert (out / name).read_bytes() == (bundle / name).read_bytes()


def test_pack_refuses_a_tampered_bundle_and_leaves_no_file(bundle, tmp_path):
    data = bytearray((bundle / "vocab.txt").read_bytes())
    data[0] ^= 1  # same size, different bytes
    (bundle / "vocab.txt").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="vocab.txt: sha256 differs"):
        pack(bundle, tmp_path / "x.tar")
    assert not any(p.name.endswith(".tar") or ".tmp-" in p.name for p in tmp_path.iterdir())


def test_pack_refuses_to_overwrite_without_force(bundle, tmp_path):
    out = pack(bundle, tmp_path / "a.tar")
    with pytest.raises(BundleError, match="exists; pass --force"):
        pack(bundle, out)
    pack(bundle, out, force=True)


@pytest.mark.parametrize("case, message", [
    ("traversal", r"'\.\./x' points outside the bundle"),
    ("absolute", r"has an absolute path"),
    ("folder", r"'sub/vocab.txt' is inside a folder"),
    ("symlink", r"is a symbolic link \(to '/etc/passwd'\)"),
    ("hardlink", r"is a hard link"),
    ("device", r"is a device file"),
    ("fifo", r"is a FIFO"),
    ("directory", r"is a folder"),
    ("contiguous", r"'vocab.txt' is not a plain regular file \(tar type b'7'\)"),
    ("extra", r"'extra.bin' is not listed in the manifest"),
    ("duplicate", r"'vocab.txt' appears twice"),
    ("manifest_twice", r"'edgeemb.json' appears twice"),
    ("checksum", r"'vocab.txt' sha256 differs from the manifest"),
    ("oversized", r"'vocab.txt' is \d+ bytes, more than the \d+ the manifest declares"),
    ("undersized", r"'vocab.txt' is \d+ bytes, less than the \d+ the manifest declares"),
    ("declared_huge", r"'vocab.txt' is 10000000000 bytes, more than the \d+ the manifest declares"),
    ("huge_data", r"archive is \d+ bytes, more than its manifest's files account for"),
    ("missing", r"the manifest lists 'vocab.txt' but the archive lacks it"),
])
def test_malicious_archives_are_refused_and_write_nothing(bundle, tmp_path, case, message):
    outside = tmp_path / "outside"
    vocab = (bundle / "vocab.txt").read_bytes()
    extra, skip, replace = [], ("vocab.txt",), None
    if case == "traversal":
        extra = [member("../x", b"pwned")]
    elif case == "absolute":
        extra = [member(str(outside / "x"), b"pwned")]
    elif case == "folder":
        extra = [member("sub/vocab.txt", vocab)]
    elif case == "symlink":
        extra = [member("vocab.txt", None, type=tarfile.SYMTYPE, linkname="/etc/passwd")]
    elif case == "hardlink":
        extra = [member("vocab.txt", None, type=tarfile.LNKTYPE, linkname="vectors.npy")]
    elif case == "device":
        extra = [member("vocab.txt", None, type=tarfile.CHRTYPE, devmajor=1, devminor=3)]
    elif case == "fifo":
        extra = [member("vocab.txt", None, type=tarfile.FIFOTYPE)]
    elif case == "directory":
        extra = [member("vocab.txt", None, type=tarfile.DIRTYPE)]
    elif case == "contiguous":
        extra = [member("vocab.txt", vocab, type=tarfile.CONTTYPE)]
    elif case == "extra":
        skip, extra = (), [member("extra.bin", b"not in the manifest")]
    elif case == "duplicate":
        skip, extra = (), [member("vocab.txt", vocab)]
    elif case == "manifest_twice":
        extra = [member("edgeemb.json", (bundle / "edgeemb.json").read_bytes())]
    elif case == "checksum":
        skip, replace = (), {"vocab.txt": vocab[:-1] + b"!"}
    elif case == "oversized":
        skip, replace = (), {"vocab.txt": vocab + b"more"}
    elif case == "undersized":
        skip, replace = (), {"vocab.txt": vocab[:-2]}
    elif case == "declared_huge":  # the header claims 10 GB (pax size record); no data follows
        extra = [member("vocab.txt", None, size=10_000_000_000)]
    elif case == "huge_data":  # declared small in the manifest, 4 MB of real data in the archive
        skip, replace = (), {"vocab.txt": b"\0" * (4 << 20)}
    tar = craft(tmp_path / "evil.tar", bundle, extra, skip, replace)
    (tmp_path / "deep").mkdir()  # so that '../x' from beside the target still lands inside tmp_path
    before = tree(tmp_path)
    with pytest.raises(BundleError, match=message) as err:
        unpack(tar, tmp_path / "deep" / "target")
    assert "\n" not in str(err.value) and str(tar) in str(err.value)
    assert tree(tmp_path) == before, "a refused archive must leave no file or folder behind"


@pytest.mark.parametrize("case, message", [
    ("gzip", r"not an uncompressed tar archive|first member must be"),
    ("not_first", r"first member must be the plain file edgeemb.json, found 'vocab.txt'"),
    ("pax_first", r"found an extended header \(make bundle archives with `edgeemb pack`\)"),
    ("empty", r"not an uncompressed tar archive"),
    ("huge_manifest", r"member edgeemb.json is \d+ bytes, more than a manifest may be"),
])
def test_archives_without_a_leading_manifest_are_refused(bundle, tmp_path, case, message):
    tar = tmp_path / "bad.tar"
    if case == "gzip":
        with tarfile.open(tar, "w:gz") as tf:
            tf.add(bundle / "edgeemb.json", "edgeemb.json")
    elif case == "not_first":
        with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as tf:
            tf.add(bundle / "vocab.txt", "vocab.txt")
            tf.add(bundle / "edgeemb.json", "edgeemb.json")
    elif case == "pax_first":  # tarfile.add in pax format stores mtime in an extended header
        with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
            tf.add(bundle / "edgeemb.json", "edgeemb.json")
    elif case == "empty":
        tar.write_bytes(b"")
    else:
        with tarfile.open(tar, "w") as tf:
            tf.addfile(member("edgeemb.json", None, size=50 << 20)[0])
    before = tree(tmp_path)
    with pytest.raises(BundleError, match=message):
        unpack(tar, tmp_path / "target")
    assert tree(tmp_path) == before


def test_refused_archive_leaves_an_existing_target_untouched(bundle, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    tar = craft(tmp_path / "evil.tar", bundle, [member("../x", b"pwned")], skip=("vocab.txt",))
    with pytest.raises(BundleError):
        unpack(tar, target, force=True)
    assert tree(target) == {"keep.txt"}
    with pytest.raises(BundleError, match="not empty; pass --force"):
        unpack(pack(bundle, tmp_path / "ok.tar"), target)
    with pytest.raises(BundleError, match="is not a bundle"):  # --force never deletes a user's folder
        unpack(tmp_path / "ok.tar", target, force=True)
    assert tree(target) == {"keep.txt"}
    bundle_target = tmp_path / "bundle_target"
    unpack(tmp_path / "ok.tar", bundle_target)
    (bundle_target / "keep.txt").write_text("mine")
    unpack(tmp_path / "ok.tar", bundle_target, force=True)  # a bundle is replaced, the user's file kept
    assert tree(bundle_target) == {"edgeemb.json", "keep.txt", *FILES}


def test_unpack_cached_reuses_a_valid_folder_and_repairs_a_damaged_one(bundle, tmp_path, isolated_home):
    tar = pack(bundle, tmp_path / "a.tar")
    folder = unpack_cached(tar)
    assert folder.parent == isolated_home / "unpacked"
    stamp = (folder / "vocab.txt").stat().st_ino
    assert unpack_cached(tar) == folder and (folder / "vocab.txt").stat().st_ino == stamp
    (folder / "vocab.txt").write_bytes(b"damaged")
    assert unpack_cached(tar) == folder
    assert (folder / "vocab.txt").read_bytes() == FILES["vocab.txt"]


def test_cli_pack_and_unpack(bundle, tmp_path, capsys):
    from edgeemb.cli import main

    tar = tmp_path / "b.tar"
    assert main(["pack", str(bundle), "-o", str(tar)]) == 0
    assert main(["unpack", str(tar), "-o", str(tmp_path / "u")]) == 0
    assert json.loads((tmp_path / "u" / "edgeemb.json").read_text())["name"] == "tiny"
    evil = craft(tmp_path / "evil.tar", bundle, [member("../x", b"pwned")], skip=("vocab.txt",))
    assert main(["unpack", str(evil), "-o", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("edgeemb unpack: error:") and "points outside the bundle" in err


def test_default_bundle_round_trips_to_identical_embeddings(default_bundle, tmp_path, isolated_home):
    import edgeemb

    texts = ["a packed bundle must embed exactly like its folder", "这部电影很好看", ""]
    tar = pack(default_bundle, tmp_path / "default.tar")
    from_tar = edgeemb.load(tar, threads=1)
    assert from_tar.path.parent == isolated_home / "unpacked"
    assert from_tar.manifest.bundle_id == edgeemb.load(default_bundle, threads=1).manifest.bundle_id
    assert np.array_equal(from_tar.encode(texts), edgeemb.load(default_bundle, threads=1).encode(texts))


def test_loading_an_archive_stays_torch_free(default_bundle, tmp_path):
    import subprocess
    import sys

    tar = pack(default_bundle, tmp_path / "default.tar")
    script = ("import sys, edgeemb; edgeemb.load(sys.argv[1], threads=1).encode(['x']); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'onnx')))")
    out = subprocess.run([sys.executable, "-c", script, str(tar)], capture_output=True, text=True, check=False,
                         timeout=120, env={**os.environ, "EDGEEMB_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
