"""Progress lines with elapsed time, and the timings of each training phase."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Progress = Callable[[str], None]


Progress = Callable[[str], None]


class Clock:
    """Prints what is happening and how long each phase took; keeps the timings."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    def say(self, message: str) -> None:
        self.progress(f"[{time.perf_counter() - self.started:7.1f}s] {message}")

    @contextmanager
    def phase(self, name: str, message: str) -> Iterator[None]:
        self.say(message + " …")
        t0 = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t0
        self.say(f"{message}: done in {self.timings[name]:.1f}s")
