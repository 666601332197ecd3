"""Progress of a long ingest: a bar with an ETA on a terminal, one line every few seconds in a log.

On a terminal (stderr is a TTY) tqdm draws its bar, rate and ETA. Into a file or pipe, a bar's
carriage-return updates would write one line per frame, so instead one plain line is written every
`LOG_EVERY_S` seconds: `NAME: DONE/TOTAL frames (P%), R frames/s, ETA S s`.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

LOG_EVERY_S = 10.0


class Progress:
    """`update(1)` per processed frame, `close()` at the end; silent when `enabled` is False."""

    def __init__(self, name: str, total: int | None, enabled: bool = True, stream: TextIO | None = None,
                 every_s: float = LOG_EVERY_S, clock=time.monotonic):
        self.name, self.total, self.done = name, total, 0
        self._stream = stream if stream is not None else sys.stderr
        self._clock, self._every = clock, every_s
        self._start = self._last = clock()
        self._bar = None
        self._enabled = enabled
        if enabled and self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=name, unit="frame", leave=False, dynamic_ncols=True, file=self._stream)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self._clock()
        if self._enabled and now - self._last >= self._every:
            self._last = now
            self._stream.write(self.line(now) + "\n")
            self._stream.flush()

    def line(self, now: float) -> str:
        rate = self.done / max(now - self._start, 1e-9)
        if self.total:
            eta = max(0.0, (self.total - self.done) / rate) if rate > 0 else float("inf")
            return (f"{self.name}: {self.done}/{self.total} frames ({100 * self.done / self.total:.0f}%), "
                    f"{rate:.1f} frames/s, ETA {eta:.0f} s")
        return f"{self.name}: {self.done} frames, {rate:.1f} frames/s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
