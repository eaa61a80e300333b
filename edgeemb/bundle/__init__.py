"""Bundles: the manifest schema, verification of files, archives, and finding a bundle by name or path."""
from ..atomic import atomic_write_bytes, fsync_dir
from .manifest import (
                       FORMAT_VERSION,
                       KINDS,
                       MANIFEST,
                       QUANTIZATIONS,
                       SCHEMA,
                       Manifest,
                       check_file_name,
                       parse_manifest,
                       read_manifest,
                       write_manifest,
)
from .resolve import open_bundle, resolve_bundle
from .verify import file_entry, sha256_file, verify_files

__all__ = [
    "FORMAT_VERSION", "KINDS", "MANIFEST", "QUANTIZATIONS", "SCHEMA", "Manifest", "atomic_write_bytes",
    "check_file_name", "file_entry", "fsync_dir", "open_bundle", "parse_manifest", "read_manifest",
    "resolve_bundle", "sha256_file", "verify_files", "write_manifest",
]
