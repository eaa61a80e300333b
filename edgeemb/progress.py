"""Progress on stderr: a tqdm bar on a terminal, plain newline-ended lines elsewhere (logs, CI, pipes)."""
from __future__ import annotations

import sys
import time
from typing import IO, Any

PLAIN_EVERY_S = 30.0  # off a terminal: one plain line this often, and a final one


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return False


def _scale(unit: str) -> dict[str, object]:
    """Bytes in k/M/G steps of 1000 (so the rate reads MB/s); counted things as plain numbers."""
    return {"unit_scale": True, "unit_divisor": 1000} if unit == "B" else {}


class Progress:
    """Counts work done: on a terminal a tqdm bar (ETA, elapsed, rate in `unit`/s); off one, no `\\r` frames,
    only a plain line every PLAIN_EVERY_S seconds and a final one with the elapsed time and the rate."""

    def __init__(self, total: int, desc: str, enabled: bool = True, unit: str = "it"):
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled = enabled and total > 0
        self.done = 0
        self._stream: IO[str] = sys.stderr
        self._start = self._last = time.perf_counter()
        self._bar: Any = None  # a tqdm bar; tqdm is imported only when a bar is shown (~35 ms)
        if self.enabled and _is_terminal(self._stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self._stream, mininterval=0.1,
                             dynamic_ncols=True, leave=True, **_scale(unit))

    def update(self, n: int = 1) -> None:
        """Add n to the count (the bar redraws at most 10 times a second)."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled:
            now = time.perf_counter()
            if now - self._last >= PLAIN_EVERY_S and self.done < self.total:
                self._last = now
                self._line(now)

    def line(self, now: float | None = None) -> str:
        """The plain status: `desc: 42% 420/1,000 docs, 00:03 elapsed, ETA 00:04, 140 docs/s`."""
        from tqdm import tqdm

        now = time.perf_counter() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        if self.unit == "B":
            counts = f"{tqdm.format_sizeof(self.done, divisor=1000)}B/{tqdm.format_sizeof(self.total, divisor=1000)}B"
            speed = f"{tqdm.format_sizeof(rate, divisor=1000)}B/s"
        else:
            counts = f"{self.done:,}/{self.total:,} {self.unit}"
            speed = f"{rate:,.0f} {self.unit}/s" if rate >= 10 else f"{rate:.2f} {self.unit}/s"
        text = f"{self.desc}: {frac:.0%} {counts}, {tqdm.format_interval(elapsed)} elapsed"
        if self.done < self.total and rate > 0:
            text += f", ETA {tqdm.format_interval((self.total - self.done) / rate)}"
        return f"{text}, {speed}"

    def _line(self, now: float) -> None:
        self._stream.write(self.line(now) + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Finish the bar (or write the final plain line); later calls do nothing."""
        if not self.enabled:
            return
        self.enabled = False
        if self._bar is not None:
            self._bar.close()
        else:
            self._line(time.perf_counter())

    def __enter__(self) -> Progress:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
