"""Errors edgeemb raises: one line, naming the file, field or item at fault."""


class EdgeembError(Exception):
    """Base class of every error edgeemb raises on purpose."""


class BundleError(EdgeembError):
    """A bundle is missing, unreadable, tampered with, or its manifest is invalid."""


class InputError(EdgeembError, ValueError):
    """Bad input to encode, index or search (None, non-str, wrong dimension...)."""


class IndexStoreError(EdgeembError):
    """An index folder is missing, corrupt, or cannot be written."""


class IndexMismatchError(IndexStoreError):
    """An index was built with another bundle (different id or dimension)."""


class CorpusError(EdgeembError):
    """A corpus file cannot be read (wrong format, undecodable bytes, missing text column)."""

