"""A test clock for code that hands work to a thread and hears back through
``callFromThread`` (the HLS disk store, the recording writer)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock


class ThreadedClock(Clock):
    """A Clock that also takes calls from other threads; ``run`` plays both."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._from_threads: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:  # noqa: N802
        with self._lock:
            self._from_threads.append((f, args))

    def run(self, until: Callable[[], bool], timeout: float = 10.0) -> None:
        """Play due timers and the threads' calls until ``until()`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            self.advance(0)
            with self._lock:
                calls, self._from_threads = self._from_threads, []
            for f, args in calls:
                f(*args)
            if until():
                return
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.002)
