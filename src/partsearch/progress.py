"""Progress bars that read well in a log [ours].

`tqdm(...)` takes tqdm's arguments. On a terminal it is tqdm's bar, redrawn in place. When the
bar's output is not a terminal (`make demo > log 2>&1`, CI), it writes one plain line at the
start, then at most one every `LOG_INTERVAL_S` seconds, and one at the end, instead of a
carriage-return redraw for every update (a 700-step bar used to be most of a demo's log).
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm as _tqdm

LOG_INTERVAL_S = 10.0
LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


class LogLines(_tqdm):
    """A tqdm that writes whole lines, at most one per `interval` seconds, and the final count
    when it closes."""

    def __init__(self, *args, interval: float = LOG_INTERVAL_S, **kwargs):
        self._interval = interval
        self._last_line = -float("inf")
        self._shown_n: float | None = None
        self._final = False
        iterable = args[0] if args else kwargs.get("iterable")
        total = kwargs.get("total", len(iterable) if hasattr(iterable, "__len__") else None)
        kwargs.setdefault("bar_format", LINE_FORMAT if total is not None else LINE_FORMAT_NO_TOTAL)
        kwargs.pop("dynamic_ncols", None)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing a finished bar: a log keeps its lines
            return False
        now = time.monotonic()
        if msg is None and not self._final and now - self._last_line < self._interval:
            return True
        self._last_line, self._shown_n = now, self.n
        self.fp.write((msg if msg is not None else str(self)) + "\n")
        self.fp.flush()
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to erase: every line stays."""

    def close(self) -> None:
        if not self.disable:
            self._final = True
            if self.n != self._shown_n:
                self.display()
            self.leave = False  # tqdm's own final redraw would repeat the line
        super().close()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def tqdm(*args, **kwargs) -> _tqdm:
    """tqdm's bar on a terminal, `LogLines` anywhere else (the output is `file`, else stderr)."""
    stream = kwargs.get("file") or sys.stderr
    return _tqdm(*args, **kwargs) if _is_terminal(stream) else LogLines(*args, **kwargs)
