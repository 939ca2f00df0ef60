"""Injectable clocks: wall time for schedules, monotonic time for durations."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What the scheduler and the store need to know about time."""

    def time(self) -> float:
        """Unix seconds (wall clock): stored next-attempt times use it."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps: durations use it."""
        ...


class SystemClock:
    """The real clocks."""

    def time(self) -> float:
        """Unix seconds."""
        return time.time()

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()


class FakeClock:
    """A clock that tests move by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        """The current fake unix time."""
        return self.now

    def monotonic(self) -> float:
        """The same value: a fake clock never jumps backwards."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds
