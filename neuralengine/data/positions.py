"""The positions file: one position per line, with the game it came from.

``neuralengine datagen`` writes, and ``neuralengine annotate`` reads, plain
UTF-8 text with one line per position::

    FEN<TAB>GAME_ID

* ``FEN`` is python-chess ``board.fen()`` (six fields, en passant only when a
  legal capture exists).
* ``GAME_ID`` names the game the position came from, e.g. ``sp7-000042``
  (self-play: seed 7, game 42) or ``lichess_db.pgn#1234`` (the 1235th game of
  that file). Lines of one game are consecutive, in the order played.

Readers also accept lines without a game id, plain FENs and EPD lines (four
fields plus ``;``-terminated operations, ``hmvc``/``fmvn`` honoured); blank
lines and lines starting with ``#`` are skipped. Files may be gzip (``.gz``)
or xz (``.xz``) compressed.
"""

from __future__ import annotations

import os
from typing import Iterator

import chess

from neuralengine.data.text import open_text


class PositionError(ValueError):
    """A line that holds no valid chess position."""


def parse_position(line: str) -> tuple[chess.Board, str | None]:
    """Parse one line into a board and its game id (``None`` if absent).

    :raises PositionError: for text that is not a FEN/EPD, or for positions
        no engine should see (no king, side not to move in check, ...).
    """
    text, _, game_id = line.strip().partition("\t")
    text = text.strip()
    fields = text.split()
    try:
        if len(fields) >= 6 and fields[4].isdigit() and fields[5].isdigit() and ";" not in fields[5]:
            board = chess.Board(" ".join(fields[:6]))
        else:
            board, _ = chess.Board.from_epd(text)
    except (ValueError, IndexError) as exc:
        raise PositionError(f"not a FEN or EPD: {text[:90]!r} ({exc})") from None
    if not board.is_valid():
        raise PositionError(f"illegal position: {text[:90]!r} ({board.status()!r})")
    return board, (game_id.strip() or None)


def iter_position_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for every line of a positions file.

    Line numbers count from 0 and include skipped lines, so they stay stable
    positions in the file (annotation shards are ranges of them).
    """
    with open_text(path) as fh:
        for number, line in enumerate(fh):
            yield number, line


def is_position_line(line: str) -> bool:
    """False for blank lines and ``#`` comments."""
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def format_position(board: chess.Board, game_id: str) -> str:
    """One line of a positions file (with its newline)."""
    if "\t" in game_id or "\n" in game_id:
        raise ValueError(f"game id must not contain tabs or newlines: {game_id!r}")
    return f"{board.fen()}\t{game_id}\n"
