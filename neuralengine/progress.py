"""A small progress bar on stderr: count, rate and ETA (no dependencies)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, unit: str = "it", enabled: bool = True,
                 every: float = 0.5) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.enabled = enabled
        self.every = every
        self.count = 0
        self.start = self._last = time.monotonic()
        self.postfix = ""

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.count += n
        if postfix is not None:
            self.postfix = postfix
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every:
            self._last = now
            self._draw(now)

    def _draw(self, now: float, end: str = "\r") -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.count / elapsed
        text = f"{self.label}: {self.count}"
        if self.total:
            text += f"/{self.total} ({100 * self.count / self.total:.0f}%)"
            if rate > 0:
                text += f" ETA {_fmt(max(self.total - self.count, 0) / rate)}"
        text += f" {rate:.1f} {self.unit}/s {_fmt(elapsed)}"
        if self.postfix:
            text += f" {self.postfix}"
        sys.stderr.write("\x1b[2K" + text + end if sys.stderr.isatty() else text + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic(), end="\n")


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
