"""Time and ids for the sandbox; a test can move the clock forward."""

from __future__ import annotations

import itertools
import time


class Clock:
    """Wall clock with an adjustable offset, so tests can move time forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class IdSource:
    """Numeric ids that look like the platforms' and never repeat within a run."""

    def __init__(self, start: int = 1_000_000) -> None:
        self._counter = itertools.count(start)

    def next_int(self) -> int:
        return next(self._counter)

    def numeric(self, digits: int = 15) -> str:
        base = 10 ** (digits - 1)
        return str(base + self.next_int())
