"""Progress bars on stderr for the long tasks, drawn by tqdm.

:class:`Progress` is the small interface the commands use (``update``,
``close``, ``count``); tqdm does the drawing: count, percentage, rate and
ETA. When stderr is not a terminal (a log file, CI), each refresh is written
as a line of its own instead of being redrawn in place.
"""

from __future__ import annotations

import sys
from typing import IO, Any


class _Lines:
    """A stream for tqdm that turns its in-place redraws into separate lines."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").replace("\x1b[A", "").rstrip()
        if line.strip():
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class Progress:
    """A progress bar named ``label``.

    ``total`` (optional) gives the percentage and ETA; ``unit`` names what is
    counted; ``every`` is the least number of seconds between two redraws.
    ``data=True`` counts bytes and shows them as kB/MB/GB with a byte rate;
    ``initial`` starts the count there (a resumed task).
    """

    def __init__(self, label: str, total: int | None = None, unit: str = "it", enabled: bool = True,
                 every: float = 0.5, data: bool = False, initial: int = 0) -> None:
        from tqdm import tqdm

        self.label, self.total, self.unit = label, total, unit
        self.enabled = enabled
        self._count = initial
        stream: Any = sys.stderr if sys.stderr.isatty() else _Lines(sys.stderr)
        options: dict[str, Any] = {"unit": "B", "unit_scale": True, "unit_divisor": 1024} if data else {"unit": unit}
        if total is None and not data:  # no bar to draw: "3 games [00:01, 2.9games/s, ...]"
            options["bar_format"] = "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]"
        self._bar = tqdm(total=total, desc=label, initial=initial, disable=not enabled, mininterval=every,
                         file=stream, dynamic_ncols=True, leave=True, **options)

    @property
    def count(self) -> int:
        return self._count

    @count.setter
    def count(self, value: int) -> None:
        self._count = value
        self._bar.n = value

    @property
    def postfix(self) -> str:
        return self._bar.postfix or ""

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        if postfix is not None:
            self._bar.set_postfix_str(postfix, refresh=False)
        self._count += n
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
