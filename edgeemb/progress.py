"""A minimal progress bar on stderr (no tqdm in the runtime)."""
from __future__ import annotations

import sys
import time


class Progress:
    """Counts work done and redraws one stderr line at most 10 times a second."""

    def __init__(self, total: int, desc: str, enabled: bool = True, unit: str = "it"):
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled = enabled and total > 0
        self.done = 0
        self._start = self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        """Add n to the count and redraw when due."""
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(1.0, self.done / self.total)
        bar = "#" * int(frac * 24)
        rate = self.done / max(now - self._start, 1e-9)
        sys.stderr.write(f"\r{self.desc}: {frac:6.1%} |{bar:<24}| {self.done}/{self.total} {rate:,.0f} {self.unit}/s")
        sys.stderr.flush()

    def close(self) -> None:
        """End the line the bar was drawn on."""
        if self.enabled:
            self._draw(time.perf_counter())
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.enabled = False

    def __enter__(self) -> Progress:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
