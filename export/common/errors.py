"""Errors of the export toolchain."""
from edgeemb.errors import EdgeembError


class ExportError(EdgeembError):
    """A source model cannot be exported, or the exported bundle fails its parity check."""
