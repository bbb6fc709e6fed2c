"""What the engine writes: the thread-safe protocol writer and the format of its ``info`` lines.

:class:`Output` owns stdout (one lock, one flush per line, nothing after
``quit``) and the debug log on stderr. The functions below turn user input
into a safe quote and a search's result into ``info`` lines; they are the
only place that knows the layout of those lines.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import chess

    from neuralengine.engine import MoveChoice

#: Longest piece of user input echoed back in an ``info string``.
ECHO_CHARS = 60


def echo(text: str) -> str:
    """User input made safe to quote in one protocol line."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    if len(text) > ECHO_CHARS:
        text = text[:ECHO_CHARS] + f"... ({len(text)} characters)"
    return repr(text)


class Output:
    """Writes protocol lines to stdout under a lock, flushing each one."""

    def __init__(self, stream: BinaryIO, log: Any = None) -> None:
        self.stream = stream
        self.log_stream = log
        self.lock = threading.Lock()
        self.debug = False
        self.broken = False

    def send(self, line: str) -> None:
        with self.lock:
            if self.broken:
                return
            try:
                self.stream.write(line.encode("utf-8", "replace") + b"\n")
                self.stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.broken = True
        if self.debug:
            self.log(f"<< {line}")

    def close(self) -> None:
        """Write nothing more (after ``quit``)."""
        with self.lock:
            self.broken = True

    def info(self, text: str) -> None:
        """An ``info string`` line (one line, whatever ``text`` holds)."""
        self.send("info string " + " ".join(text.split()))

    def log(self, text: str) -> None:
        """A debug line on stderr."""
        stream = self.log_stream if self.log_stream is not None else sys.stderr
        try:
            stream.write(f"[neuralengine {time.monotonic():.3f}] {text}\n")
            stream.flush()
        except (OSError, ValueError):
            pass


def score_line(*, multipv: int, score: str, nodes: int, nps: int, time_ms: int, pv: str) -> str:
    """One ``info depth 1`` line: every move this engine plays is a search of depth one."""
    return (f"info depth 1 seldepth 1 multipv {multipv} score {score} nodes {nodes} nps {nps} "
            f"time {time_ms} pv {pv}")


def result_lines(board: chess.Board, result: MoveChoice, *, elapsed: float, multipv: int,
                 show_wdl: bool) -> tuple[list[str], list[str]]:
    """The lines that report ``result`` for ``board``, ``elapsed`` seconds after the ``go``.

    Returns the notes (texts of ``info string`` lines: why the move went
    without evaluation) and the score lines, one
    per ``multipv`` rank.
    """
    assert result.bestmove is not None
    time_ms = int(elapsed * 1000)
    nps = round(result.nodes / elapsed) if elapsed > 0 else 0
    notes = list(result.notes)
    if result.fallback:
        notes.append(f"{result.fallback}; playing {board.uci(result.bestmove)} without evaluation")
    if not result.ranked:
        from neuralengine.engine import fallback_score

        return notes, [score_line(multipv=1, score=fallback_score(board, result.bestmove), nodes=result.nodes,
                                  nps=nps, time_ms=time_ms, pv=board.uci(result.bestmove))]
    lines = []
    for rank, scored in enumerate(result.ranked[:multipv], start=1):
        score = f"mate {scored.mate}" if scored.mate else f"cp {scored.cp}"
        if show_wdl:
            score += " wdl {} {} {}".format(*scored.wdl)
        pv = board.uci(scored.move)
        if rank == 1 and result.ponder is not None:
            board.push(scored.move)
            pv += " " + board.uci(result.ponder)
            board.pop()
        lines.append(score_line(multipv=rank, score=score, nodes=result.nodes, nps=nps, time_ms=time_ms, pv=pv))
    return notes, lines
