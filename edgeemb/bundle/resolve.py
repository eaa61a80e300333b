"""Finding a bundle: an embedded default's name, a folder, or a packed .tar (verified and unpacked once)."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import BundleError
from ..paths import DEFAULT_BUNDLES, default_bundle_path
from .manifest import Manifest, read_manifest
from .verify import verify_files


def resolve_bundle(ref: str | os.PathLike | None) -> Path:
    """A bundle path (folder or .tar), or the folder of an embedded default ("default", "default-static", None)."""
    if ref is None or str(ref) in DEFAULT_BUNDLES:
        name = "default" if ref is None else str(ref)
        folder = default_bundle_path(name)
        if not folder.is_dir():
            raise BundleError(f"the {name} bundle is not built yet ({folder}); run `edgeemb setup` "
                              f"(needs the export extra) or pass a bundle path")
        return folder
    return Path(ref)


def open_bundle(ref: str | os.PathLike | None, verify: bool = True) -> tuple[Path, Manifest]:
    """The folder and validated manifest of a bundle; its files are checked against the manifest when verify.

    A .tar from `edgeemb pack` is unpacked into the cache once, every checksum verified on the way.
    """
    folder = resolve_bundle(ref)
    if folder.is_file():
        from .archive import unpack_cached

        folder, verify = unpack_cached(folder, verify), False
    manifest = read_manifest(folder)
    if verify:
        verify_files(folder, manifest)
    return folder, manifest
