"""A bundle as an installable wheel (spaCy's model-package convention): `pip install` it, then load it by name.

The wheel holds one small package, `edgeemb_model_<name>`, whose `bundle/` folder is the verified bundle, and
registers it in the entry-point group `edgeemb.bundles` under the manifest's name (and under an embedded
default's alias, e.g. `default`, when it was made from one). It needs nothing but edgeemb at install time: no
build step, no network. Written with the standard library only (a wheel is a zip with a few metadata files).
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import zipfile
from pathlib import Path

from ..atomic import atomic_writer
from ..errors import BundleError
from .installed import ENTRY_GROUP
from .manifest import MANIFEST, read_manifest
from .verify import verify_files

_ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed member times: the same bundle gives the same wheel


def package_name(bundle_name: str) -> str:
    """The import name of a bundle's wheel package: edgeemb_model_ + the name with non-alphanumerics as _."""
    return "edgeemb_model_" + re.sub(r"[^0-9A-Za-z]+", "_", bundle_name).strip("_").lower()


def write_wheel(bundle_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], version: str = "0.1.0",
                aliases: tuple[str, ...] = ()) -> Path:
    """Write `<out_dir>/edgeemb_model_<name>-<version>-py3-none-any.whl` from a verified bundle folder."""
    folder, out_dir = Path(bundle_dir), Path(out_dir)
    manifest = read_manifest(folder)
    verify_files(folder, manifest, cache=False)
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", version):
        raise BundleError(f"wheel version {version!r} must be dotted numbers, e.g. 0.1.0")
    pkg = package_name(manifest.name)
    dist = f"{pkg}-{version}"
    names = [manifest.name, *(a for a in aliases if a != manifest.name)]
    members: list[tuple[str, bytes | Path]] = [
        (f"{pkg}/__init__.py", _init_py(manifest.name).encode()),
        (f"{pkg}/bundle/{MANIFEST}", folder / MANIFEST),
        *((f"{pkg}/bundle/{name}", folder / name) for name in manifest.files),
        (f"{dist}.dist-info/METADATA", _metadata(pkg, version, manifest.name, manifest.kind).encode()),
        (f"{dist}.dist-info/WHEEL", (b"Wheel-Version: 1.0\nGenerator: edgeemb\nRoot-Is-Purelib: true\n"
                                    b"Tag: py3-none-any\n")),
        (f"{dist}.dist-info/entry_points.txt",
         (f"[{ENTRY_GROUP}]\n" + "".join(f"{n} = {pkg}:BUNDLE\n" for n in names)).encode()),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{dist}-py3-none-any.whl"
    record = []
    try:
        with atomic_writer(wheel) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            for arcname, content in members:
                digest, size = _add(zf, arcname, content)
                record.append(f"{arcname},sha256={digest},{size}")
            record.append(f"{dist}.dist-info/RECORD,,")
            _add(zf, f"{dist}.dist-info/RECORD", ("\n".join(record) + "\n").encode())
    except OSError as exc:
        raise BundleError(f"cannot write {wheel} ({exc.strerror or exc})") from None
    return wheel


def _add(zf: zipfile.ZipFile, arcname: str, content: bytes | Path) -> tuple[str, int]:
    """Add one member (bytes, or a file streamed in chunks); return its RECORD digest and size."""
    info = zipfile.ZipInfo(arcname, _ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    h, size = hashlib.sha256(), 0
    with zf.open(info, "w", force_zip64=True) as dst:
        if isinstance(content, bytes):
            dst.write(content)
            h.update(content)
            size = len(content)
        else:
            with open(content, "rb") as src:
                while block := src.read(1 << 20):
                    dst.write(block)
                    h.update(block)
                    size += len(block)
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode(), size


def _init_py(bundle_name: str) -> str:
    return (f'"""The edgeemb bundle {bundle_name!r}: edgeemb.load({bundle_name!r}) finds it through an entry point."""\n'
            "from pathlib import Path\n\n"
            'BUNDLE = str(Path(__file__).resolve().parent / "bundle")\n')


def _metadata(pkg: str, version: str, bundle_name: str, kind: str) -> str:
    return (f"Metadata-Version: 2.1\nName: {pkg}\nVersion: {version}\n"
            f"Summary: edgeemb {kind} bundle {bundle_name}\nRequires-Dist: edgeemb>=0.1\n")
