"""The engine on raw pipes, for tests that speak UCI line by line."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from pathlib import Path


class Uci:
    """The engine on raw pipes; every read has a timeout, so a hang fails the test."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd=cwd)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr_reader = threading.Thread(target=lambda: self.stderr.append(self.proc.stderr.read()), daemon=True)
        self.stderr_reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self.lines.put(None)

    def send(self, text: str | bytes) -> None:
        data = text if isinstance(text, bytes) else text.encode() + b"\n"
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read(self, timeout: float = 10.0) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s; so far: {self.seen[-10:]}") from None
        if line is None:
            raise AssertionError(f"engine exited; output: {self.seen[-10:]}")
        self.seen.append(line)
        return line

    def until(self, prefix: str, timeout: float = 10.0) -> list[str]:
        """Lines up to and including the first one starting with ``prefix``."""
        end = time.monotonic() + timeout
        got = []
        while True:
            line = self.read(max(end - time.monotonic(), 0.001))
            got.append(line)
            if line.startswith(prefix):
                return got

    def quiet(self, seconds: float) -> list[str]:
        """Lines printed within ``seconds``."""
        end = time.monotonic() + seconds
        got = []
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(end - time.monotonic(), 0.001))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            got.append(line)
        return got

    def ready(self) -> list[str]:
        self.send("isready")
        return self.until("readyok", timeout=60)

    def go(self, command: str = "go", timeout: float = 30.0) -> tuple[list[str], str]:
        self.send(command)
        lines = self.until("bestmove", timeout)
        return lines[:-1], lines[-1]

    def close(self) -> None:
        """``quit``, wait for the exit (killing a hung engine) and for stderr to be read to its end."""
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self.stderr_reader.join(10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def info_fields(line: str) -> dict[str, str]:
    """An ``info depth ...`` line as word -> value: ``score`` keeps its two words and
    ``pv`` holds the rest of the line."""
    words = line.split()
    fields: dict[str, str] = {}
    i = 1
    while i < len(words):
        if words[i] == "pv":
            fields["pv"] = " ".join(words[i + 1:])
            break
        width = 2 if words[i] == "score" else 1
        fields[words[i]] = " ".join(words[i + 1:i + 1 + width])
        i += 1 + width
    return fields
