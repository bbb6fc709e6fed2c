"""The ``go`` command: its words, and the time they allow for a move.

:func:`parse_go` reads the limits as sent (milliseconds). :func:`time_limit`
turns them into seconds with the engine's time management, and
:func:`provisional_limit` gives a safe limit for the moments after start-up
when that is not imported yet. Which of the two applies, and from when the
time runs, is decided by the search's deadline (:mod:`neuralengine.uci.job`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from neuralengine.uci.output import echo


@dataclass
class GoParams:
    """The parsed ``go`` command (times in milliseconds, as sent)."""

    wtime: int | None = None
    btime: int | None = None
    winc: int = 0
    binc: int = 0
    movestogo: int | None = None
    movetime: int | None = None
    nodes: int | None = None
    depth: int | None = None
    mate: int | None = None
    infinite: bool = False
    ponder: bool = False
    searchmoves: list[str] = field(default_factory=list)


GO_INT_KEYS = ("wtime", "btime", "winc", "binc", "movestogo", "movetime", "nodes", "depth", "mate")
GO_KEYWORDS = set(GO_INT_KEYS) | {"infinite", "ponder", "searchmoves"}


def parse_go(tokens: list[str], warn: Callable[[str], None]) -> GoParams:
    """Parse the words after ``go``; bad words are reported through ``warn`` and skipped."""
    params = GoParams()
    i = 0
    while i < len(tokens):
        word = tokens[i].lower()
        if word in GO_INT_KEYS:
            if i + 1 >= len(tokens):
                warn(f"go {word} needs a number")
                i += 1
                continue
            try:
                value = int(tokens[i + 1])
            except ValueError:
                warn(f"go {word} needs a number, not {echo(tokens[i + 1])}; ignored")
                i += 2
                continue
            if word in ("winc", "binc"):
                value = max(value, 0)
            setattr(params, word, value)
            i += 2
        elif word == "infinite":
            params.infinite = True
            i += 1
        elif word == "ponder":
            params.ponder = True
            i += 1
        elif word == "searchmoves":
            i += 1
            while i < len(tokens) and tokens[i].lower() not in GO_KEYWORDS:
                params.searchmoves.append(tokens[i])
                i += 1
        else:
            warn(f"unknown go parameter {echo(tokens[i])} ignored")
            i += 1
    return params


def time_limit(params: GoParams, white: bool, overhead: float, needed: float | None) -> float | None:
    """Seconds this ``go`` may use (``None``: no limit), by the engine's time management.

    :param overhead: the ``Move Overhead`` option, in seconds.
    :param needed: the predicted seconds of one complete search, once known
        (the time-trouble rule of :func:`neuralengine.engine.time_budget`).
    """
    from neuralengine.engine import time_budget

    clock = params.wtime if white else params.btime
    inc = params.winc if white else params.binc
    return time_budget(movetime=None if params.movetime is None else params.movetime / 1000.0,
                       time_left=None if clock is None else clock / 1000.0, increment=inc / 1000.0,
                       movestogo=params.movestogo, overhead=overhead, needed=needed)


def provisional_limit(params: GoParams, white: bool) -> float | None:
    """A time limit that is safe before the engine's time management is imported.

    Half of ``movetime``, and half of the clock's default share: never more
    than :func:`time_limit` would allow, give or take the ``Move Overhead``.
    It bounds only the wait for the engine's modules right after start-up;
    ``None`` without a limit.
    """
    limits = []
    if params.movetime is not None:
        limits.append(max(params.movetime, 0) / 2000.0)
    clock = params.wtime if white else params.btime
    if clock is not None:
        limits.append(max(clock, 0) / 1000.0 / 60.0)
    return min(limits) if limits else None
