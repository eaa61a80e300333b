"""Bundle archives: pack a bundle folder into one plain .tar, unpack one safely (stdlib tarfile only).

An archive is an uncompressed tar whose first member is edgeemb.json, followed by exactly the files its
manifest lists, each a plain name (no folders). Unpacking trusts nothing in the archive: every member is
checked against the manifest (type, name, size, sha256) while it streams into a temporary folder beside the
target, and only a fully verified folder is renamed into place. No compression, so no decompression bombs;
the archive's own size is bounded by the sizes its manifest declares.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..atomic import atomic_writer, fsync_dir
from ..errors import BundleError
from ..paths import home
from ..progress import Progress
from .manifest import MANIFEST, MAX_MANIFEST_BYTES, Manifest, loads_manifest, parse_manifest, read_manifest
from .verify import sha256_file, verify_files

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
MEMBER_SLACK = 4 * BLOCK  # per member: its header plus room for a short pax header


def pack(bundle_dir: str | os.PathLike[str], out_tar: str | os.PathLike[str], force: bool = False,
         show_progress: bool = False) -> Path:
    """Write the bundle's manifest and listed files into one uncompressed .tar, atomically.

    Every file is checked against the manifest's size and sha256 as it is copied, so a damaged bundle
    never becomes an archive. Members carry no owner, time or mode from this machine (reproducible).
    """
    folder, out = Path(bundle_dir), Path(out_tar)
    manifest = read_manifest(folder)
    raw = (folder / MANIFEST).read_bytes()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{folder / MANIFEST}: {len(raw)} bytes, more than an archive allows ({MAX_MANIFEST_BYTES})")
    if out.exists() and not force:
        raise BundleError(f"{out} exists; pass --force to replace it")
    for name, info in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != info["size"]:
            raise BundleError(f"{path}: size {path.stat().st_size} differs from the manifest's {info['size']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    total = sum(info["size"] for info in manifest.files.values())
    try:
        with atomic_writer(out) as f, Progress(total, f"pack {out.name}", show_progress, "B") as bar, \
                tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
            tf.addfile(_member_info(MANIFEST, len(raw)), io.BytesIO(raw))
            for name, info in manifest.files.items():
                with open(folder / name, "rb") as src:
                    reader = _HashingReader(src, bar)
                    tf.addfile(_member_info(name, info["size"]), reader)
                if reader.hexdigest() != info["sha256"]:
                    raise BundleError(f"{folder / name}: sha256 differs from the manifest (file changed or "
                                      f"corrupt); not packed")
    except OSError as exc:
        raise BundleError(f"cannot write {out} ({exc.strerror or exc})") from None
    return out


def unpack(tar: str | os.PathLike[str], out_dir: str | os.PathLike[str], force: bool = False,
           show_progress: bool = False) -> Path:
    """Verify and extract an archive into out_dir (created; must be empty unless force); return out_dir.

    Extraction goes into a temporary folder beside out_dir, renamed into place only once every member has
    passed; on any failure nothing is left behind and out_dir is untouched.
    """
    tar, out = Path(tar), Path(out_dir)
    if not tar.is_file():
        raise BundleError(f"archive not found: {tar}")
    if out.is_symlink():
        raise BundleError(f"{out} is a symbolic link; unpack into a real folder (the link's target, say)")
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise BundleError(f"{out} exists and is not empty; pass --force to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.unpack-", dir=out.parent))
    except OSError as exc:
        raise BundleError(f"cannot create {out} ({exc.strerror or exc}: {exc.filename or out.parent})") from None
    try:
        extract_verified(tar, tmp, show_progress)
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        _move_into_place(tmp, out, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def unpack_cached(tar: str | os.PathLike[str], verify: bool = True) -> Path:
    """The verified folder of an archive under <home>/unpacked/<archive sha256>, unpacking it when needed."""
    tar = Path(tar)
    if not tar.is_file():
        raise BundleError(f"archive not found: {tar}")
    folder = home() / "unpacked" / sha256_file(tar)
    if folder.is_dir():
        if _is_valid(folder, verify):
            return folder
        shutil.rmtree(folder, ignore_errors=True)  # damaged or half-removed: unpack again
    try:
        return unpack(tar, folder)
    except BundleError:
        if _is_valid(folder, verify):  # another process unpacked the same archive first
            return folder
        raise


def extract_verified(tar: Path, dest: Path, show_progress: bool = False) -> Manifest:
    """Stream every member of `tar` into the empty folder `dest`, refusing anything the manifest does not vouch for."""
    manifest_size = _check_first_header(tar)
    try:
        with tarfile.open(tar, mode="r:") as tf:  # "r:" reads plain tar only: no decompression at all
            members = iter(tf)
            first = next(members)
            if first.name != MANIFEST or not first.isreg():
                raise BundleError(f"{tar}: the first member must be the plain file {MANIFEST}")
            raw = _read_member(tf, first, manifest_size)
            manifest = _parse_manifest(raw, tar)
            _check_archive_size(tar, manifest, len(raw))
            _extract_members(tf, members, manifest, tar, dest, show_progress)
    except tarfile.TarError as exc:
        raise BundleError(f"{tar}: corrupt or truncated archive ({exc})") from None
    except OSError as exc:
        raise BundleError(f"{tar}: cannot unpack ({exc.strerror or exc})") from None
    with open(dest / MANIFEST, "xb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(dest)
    return manifest


def archive_size_bound(manifest_size: int, manifest: Manifest) -> int:
    """Largest archive the manifest can account for: its files, headers, padding and the end-of-archive record."""
    sizes: list[int] = [manifest_size] + [int(info["size"]) for info in manifest.files.values()]
    return sum(-(-s // BLOCK) * BLOCK + MEMBER_SLACK for s in sizes) + 2 * BLOCK + tarfile.RECORDSIZE


def _check_first_header(tar: Path) -> int:
    """Read the first 512-byte header raw: it must be a plain regular file edgeemb.json of sane size."""
    with open(tar, "rb") as f:
        block = f.read(BLOCK)
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise BundleError(f"{tar}: not an uncompressed tar archive ({exc})") from None
    if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                     tarfile.GNUTYPE_LONGLINK):
        raise BundleError(f"{tar}: the first member must be the plain file {MANIFEST}, found an extended header "
                          f"(make bundle archives with `edgeemb pack`)")
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.name != MANIFEST:
        raise BundleError(f"{tar}: the first member must be the plain file {MANIFEST}, found {info.name!r}")
    if info.size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{tar}: member {MANIFEST} is {info.size} bytes, more than a manifest may be "
                          f"({MAX_MANIFEST_BYTES})")
    return info.size


def _parse_manifest(raw: bytes, tar: Path) -> Manifest:
    where = f"{tar}:{MANIFEST}"
    manifest = parse_manifest(loads_manifest(raw, where), where)
    if MANIFEST in manifest.files:
        raise BundleError(f"{where}: field 'files' must not list {MANIFEST} itself")
    return manifest


def _check_archive_size(tar: Path, manifest: Manifest, manifest_size: int) -> None:
    size, bound = tar.stat().st_size, archive_size_bound(manifest_size, manifest)
    if size > bound:
        raise BundleError(f"{tar}: archive is {size} bytes, more than its manifest's files account for ({bound}); "
                          f"refusing it")


def _extract_members(tf: tarfile.TarFile, members: Iterator[tarfile.TarInfo], manifest: Manifest, tar: Path, dest: Path,
                     show_progress: bool) -> None:
    declared_total = sum(info["size"] for info in manifest.files.values())
    seen: set[str] = set()
    total = 0
    with Progress(declared_total, f"unpack {tar.name}", show_progress, "B") as bar:
        for member in members:
            _check_member(member, tar)
            name = member.name
            if name == MANIFEST or name in seen:
                raise BundleError(f"{tar}: member {name!r} appears twice")
            if name not in manifest.files:
                raise BundleError(f"{tar}: member {name!r} is not listed in the manifest's files")
            declared = manifest.files[name]["size"]
            if member.size != declared:
                what = "more than" if member.size > declared else "less than"
                raise BundleError(f"{tar}: member {name!r} is {member.size} bytes, {what} the {declared} "
                                  f"the manifest declares")
            total += member.size
            if total > declared_total:
                raise BundleError(f"{tar}: members exceed the manifest's declared total of {declared_total} bytes")
            seen.add(name)
            digest = _copy_member(tf, member, dest / name, bar)
            if digest != manifest.files[name]["sha256"]:
                raise BundleError(f"{tar}: member {name!r} sha256 differs from the manifest (corrupt or tampered)")
    missing = sorted(set(manifest.files) - seen)
    if missing:
        raise BundleError(f"{tar}: the manifest lists {missing[0]!r} but the archive lacks it")


def _check_member(member: tarfile.TarInfo, tar: Path) -> None:
    """Only plain regular files with plain names; say exactly why anything else is refused."""
    name = member.name
    if member.issym():
        raise BundleError(f"{tar}: member {name!r} is a symbolic link (to {member.linkname!r}); refused")
    if member.islnk():
        raise BundleError(f"{tar}: member {name!r} is a hard link (to {member.linkname!r}); refused")
    if member.ischr() or member.isblk():
        raise BundleError(f"{tar}: member {name!r} is a device file; refused")
    if member.isfifo():
        raise BundleError(f"{tar}: member {name!r} is a FIFO; refused")
    if member.isdir():
        raise BundleError(f"{tar}: member {name!r} is a folder; a bundle archive holds plain files only")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.issparse():
        sparse = ", sparse" if member.issparse() else ""
        raise BundleError(f"{tar}: member {name!r} is not a plain regular file (tar type {member.type!r}{sparse}); "
                          f"refused")
    if not name or "\x00" in name:
        raise BundleError(f"{tar}: member with an empty or invalid name")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise BundleError(f"{tar}: member {name!r} has an absolute path; refused")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise BundleError(f"{tar}: member {name!r} points outside the bundle ('..'); refused")
    if len(parts) > 1 or name in (".", ".."):
        raise BundleError(f"{tar}: member {name!r} is inside a folder; a bundle archive holds plain names only")


def _read_member(tf: tarfile.TarFile, member: tarfile.TarInfo, size: int) -> bytes:
    """The data of a small member, read with a bound."""
    src = tf.extractfile(member)
    data = src.read(size + 1) if src else b""
    if len(data) != size or member.size != size:
        raise BundleError(f"member {member.name!r}: expected {size} bytes, read {len(data)}")
    return data


def _copy_member(tf: tarfile.TarFile, member: tarfile.TarInfo, path: Path, bar: Progress) -> str:
    """Stream one member into a new file with bounded reads; return its sha256."""
    src = tf.extractfile(member)
    if src is None:
        raise BundleError(f"member {member.name!r} is not a regular file")
    digest = hashlib.sha256()
    left = member.size
    with open(path, "xb") as dst:
        while left:
            block = src.read(min(CHUNK, left))
            if not block:
                raise BundleError(f"member {member.name!r} is truncated ({left} bytes missing)")
            digest.update(block)
            dst.write(block)
            left -= len(block)
            bar.update(len(block))
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


def _move_into_place(tmp: Path, out: Path, force: bool) -> None:
    """Rename the verified folder to `out`; an existing empty `out` is replaced, a bundle only with force.

    force replaces only a bundle's own files (its manifest and the files either manifest lists): any other file
    in `out` is carried over into the new folder, and a folder that is not a bundle (an index, a user's folder)
    is refused, never deleted."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    old, kept = None, []
    if out.exists():
        if not force:
            raise BundleError(f"{out} exists and is not empty; pass --force to replace it")
        kept = _foreign_files(out, tmp)
        for name in kept:
            (out / name).rename(tmp / name)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError as exc:
        if old is not None:
            old.rename(out)
            for name in kept:
                (tmp / name).rename(out / name)
        raise BundleError(f"cannot move the unpacked bundle to {out} ({exc.strerror or exc})") from None
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _foreign_files(out: Path, new: Path) -> list[str]:
    """Names in `out` that belong to neither its bundle nor the new one; refuse a folder that is not a bundle."""
    from ..search.store import STORE  # an index folder is never a bundle to replace

    if not out.is_dir() or out.is_symlink():
        raise BundleError(f"{out} is not a folder; --force replaces only a bundle folder")
    if (out / STORE).exists():
        raise BundleError(f"{out} holds a search index, not a bundle; --force will not replace it")
    if not (out / MANIFEST).is_file():
        raise BundleError(f"{out} is not a bundle (no {MANIFEST}); --force replaces only a bundle's own files, "
                          f"so choose an empty or new folder")
    own = {MANIFEST, *(p.name for p in new.iterdir())}
    try:
        own.update(read_manifest(out).files)
    except BundleError:
        pass  # a damaged old manifest: its listed files are unknown, so only the new bundle's names go
    return sorted(p.name for p in out.iterdir() if p.name not in own)


def _is_valid(folder: Path, verify: bool) -> bool:
    try:
        manifest = read_manifest(folder)
        if verify:
            verify_files(folder, manifest)
        return True
    except BundleError:
        return False


def _member_info(name: str, size: int) -> tarfile.TarInfo:
    """A regular-file header with no trace of this machine (owner, time), so archives are reproducible."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, 0, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _HashingReader:
    """Wraps a file: hashes what is read through it and reports progress."""

    def __init__(self, src: BinaryIO, bar: Progress | None = None):
        self.src, self.bar, self.digest = src, bar, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        block = self.src.read(n)
        self.digest.update(block)
        if self.bar:
            self.bar.update(len(block))
        return block

    def hexdigest(self) -> str:
        return self.digest.hexdigest()
