"""What the benchmark scripts share (not a benchmark itself: a leading underscore): a clock of
wall and process CPU time, and the machine's CPU name for their result lines."""

from __future__ import annotations

import platform
import time


class Clock:
    """Wall and process CPU time (all threads) of one timed region."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
