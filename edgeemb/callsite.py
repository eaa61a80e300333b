"""Where a warning should point: the first stack frame outside the edgeemb package (the caller's line)."""
from __future__ import annotations

import os
import sys

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """The stacklevel, for a warnings.warn call made by the caller of this function, that names the first frame
    outside edgeemb: a TruncationWarning then points at the app's encode()/Index.add() line, however deep."""
    frame = sys._getframe(1)  # the function about to warn: stacklevel 1
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level
