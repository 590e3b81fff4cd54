"""A small progress bar on stderr, shown only on a terminal and silenced by ``--quiet``."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int | None, desc: str, *, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = (self.stream.isatty() if enabled is None else enabled)
        self.total, self.desc, self.n = total, desc, 0
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.n == self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if self.total:
            filled = int(30 * self.n / self.total)
            bar = "#" * filled + "." * (30 - filled)
            text = f"\r{self.desc} [{bar}] {self.n}/{self.total} {rate:.1f}/s"
        else:
            text = f"\r{self.desc} {self.n} {rate:.1f}/s"
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
