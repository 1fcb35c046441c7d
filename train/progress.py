"""How a fit shows its progress: tqdm's bar on a terminal, plain timed lines when stderr is a log file."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tqdm import tqdm

TENTH = 10         # a plain line at every tenth of the steps ...
EVERY_S = 30.0     # ... or after this many seconds without one, whichever comes first


def progress_for(stream: TextIO | None = None) -> Callable[[int], object]:
    """The loop's `progress` callable for `stream` (default stderr): a tqdm bar on a terminal; elsewhere
    (a pipe, a file) tqdm would write every redraw as a carriage-return frame on one ever-growing line."""
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        return lambda total: tqdm(total=total, unit="step", dynamic_ncols=True, leave=True, file=stream)
    return lambda total: PlainProgress(total, stream)


class PlainProgress:
    """tqdm's update / set_postfix_str / close, printed as whole lines: one per tenth of `total` steps or
    per `every_s` seconds, and a last one at close. The ETA is from the steps run in this process, timed
    from the first update on (so a compile before the first step does not count, nor do resumed steps)."""

    def __init__(self, total: int, stream: TextIO, every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.stream, self.every_s, self.clock = max(int(total), 1), stream, every_s, clock
        self.n, self.postfix, self.printed = 0, "", -1
        self.t_start = self.t_line = clock()
        self._first: tuple[int, float] | None = None   # (steps, time) at the first update

    def update(self, k: int) -> None:
        self.n += int(k)
        now = self.clock()
        if self._first is None:
            self._first = (self.n, now)
        due = self.n * TENTH // self.total > max(self.printed, 0) * TENTH // self.total
        if due or now - self.t_line >= self.every_s:
            self._line(now)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if self.printed != self.n:
            self._line(self.clock())

    def _line(self, now: float) -> None:
        pct = 100 * self.n // self.total
        eta = ""
        if self._first is not None and self.n > self._first[0] and now > self._first[1]:
            rate = (self.n - self._first[0]) / (now - self._first[1])
            eta = f"  ETA {tqdm.format_interval((self.total - self.n) / rate)}"
        post = f"  {self.postfix}" if self.postfix else ""
        print(f"step {self.n}/{self.total} ({pct}%){post}  elapsed "
              f"{tqdm.format_interval(now - self.t_start)}{eta}", file=self.stream, flush=True)
        self.printed, self.t_line = self.n, now
