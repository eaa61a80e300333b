"""Finding a bundle: an embedded default's name, a folder, or a packed .tar (verified and unpacked once)."""
from __future__ import annotations

import difflib
import os
from pathlib import Path

from ..errors import BundleError, InputError
from ..paths import DEFAULT_BUNDLES, bundles_dir, default_bundle_path
from .installed import available_bundles, installed_bundle
from .manifest import Manifest, read_manifest
from .verify import verify_files


def resolve_bundle(ref: str | os.PathLike[str] | None) -> Path:
    """A bundle's folder (or .tar): a path, an embedded default's name ("default", "default-static", None), or
    the name of a bundle built in the cache or installed as a wheel (`edgeemb pack --wheel`)."""
    name = "default" if ref is None else str(ref)
    if name in DEFAULT_BUNDLES:
        folder = default_bundle_path(name)
        if folder.is_dir():
            return folder
        installed = installed_bundle(name)
        if installed is not None:
            return installed
        raise BundleError(f"the {name} bundle is not built yet ({folder}); run `edgeemb setup` (needs the export "
                          f"extra), install a model wheel (`edgeemb pack BUNDLE --wheel`), or pass a bundle path")
    path = Path(name)
    if path.exists() or os.sep in name or "/" in name or path.suffix:
        return path
    installed = installed_bundle(name)
    if installed is not None:
        return installed
    if (bundles_dir() / name).is_dir():
        return bundles_dir() / name
    known = sorted({*DEFAULT_BUNDLES, *(b.name for b in available_bundles())})
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known names: {', '.join(known)})" if known else ""
    raise BundleError(f"bundle not found: {name}{hint}")


def open_bundle(ref: str | os.PathLike[str] | None, verify: bool | str = True) -> tuple[Path, Manifest]:
    """The folder and validated manifest of a bundle; its files are checked against the manifest when verify
    (a file hashed before and unchanged since is trusted; verify="full" re-hashes every file).

    A .tar from `edgeemb pack` is unpacked into the cache once, every checksum verified on the way.
    """
    if verify not in (True, False, "full"):
        raise InputError(f"verify must be True, False or 'full', got {verify!r}")
    folder = resolve_bundle(ref)
    if folder.is_file():
        from .archive import unpack_cached

        folder, verify = unpack_cached(folder, bool(verify)), False
    manifest = read_manifest(folder)
    if verify:
        verify_files(folder, manifest, cache=verify != "full")
    return folder, manifest
