"""A bundle packed as an installable wheel loads by name (and by its default alias) with nothing but edgeemb."""
import subprocess
import sys
import zipfile

import pytest

from edgeemb.bundle.wheel import package_name, write_wheel
from edgeemb.errors import BundleError

LOAD = """
import sys, edgeemb
enc = edgeemb.load(sys.argv[1])
print(enc.name, enc.path.parent.name, enc.encode(["a cat on a mat"]).shape)
"""


@pytest.fixture(scope="module")
def static_bundle():
    from edgeemb.paths import default_bundle_path

    path = default_bundle_path("default-static")
    if not (path / "edgeemb.json").is_file():
        pytest.skip("default-static not built: run scripts/setup.sh")
    return path


def test_wheel_layout_and_record(static_bundle, tmp_path):
    wheel = write_wheel(static_bundle, tmp_path, aliases=("default-static",))
    pkg = package_name("minilm-static-256")
    assert wheel.name == f"{pkg}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record = zf.read(f"{pkg}-0.1.0.dist-info/RECORD").decode()
        entry = zf.read(f"{pkg}-0.1.0.dist-info/entry_points.txt").decode()
    assert f"{pkg}/bundle/edgeemb.json" in names and f"{pkg}/bundle/vectors.npy" in names
    assert all(line.split(",")[0] in names for line in record.splitlines())
    assert "minilm-static-256 = " in entry and "default-static = " in entry
    again = write_wheel(static_bundle, tmp_path / "again", aliases=("default-static",))
    assert again.read_bytes() == wheel.read_bytes()  # reproducible: fixed member times and order


def test_installed_wheel_loads_by_name_and_alias_without_the_cache(static_bundle, tmp_path):
    wheel = write_wheel(static_bundle, tmp_path / "w", aliases=("default-static",))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {"PYTHONPATH": str(target), "EDGEEMB_HOME": str(tmp_path / "empty-home"), "PATH": "/usr/bin:/bin"}
    for name in ("minilm-static-256", "default-static"):
        out = subprocess.run([sys.executable, "-c", LOAD, name], capture_output=True, text=True, env=env,
                             check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["minilm-static-256", package_name("minilm-static-256"), "(1,", "256)"]


def test_a_damaged_bundle_is_not_packed(static_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(static_bundle, copy)
    with open(copy / "vectors.npy", "r+b") as f:
        f.seek(200)
        f.write(b"\xff")
    with pytest.raises(BundleError, match="sha256"):
        write_wheel(copy, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.whl"))


def test_unknown_names_suggest_the_close_one(monkeypatch, tmp_path):
    from edgeemb.bundle import resolve_bundle

    with pytest.raises(BundleError, match="did you mean 'default'"):
        resolve_bundle("defualt")


def test_cli_pack_wheel_names_the_alias_of_a_default(static_bundle, tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgeemb", "pack", "default-static", "--wheel", "-o",
                          str(tmp_path / "wheels")], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    wheel = tmp_path / "wheels" / f"{package_name('minilm-static-256')}-0.1.0-py3-none-any.whl"
    assert wheel.is_file() and "load('default-static')" in out.stdout
    with zipfile.ZipFile(wheel) as zf:
        entry = zf.read(f"{package_name('minilm-static-256')}-0.1.0.dist-info/entry_points.txt").decode()
    assert "default-static = " in entry
    bad = subprocess.run([sys.executable, "-m", "edgeemb", "pack", "default-static", "--wheel", "--ort", "-o",
                          str(tmp_path / "w2")], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0 and "--wheel packs the bundle as it is" in bad.stderr
