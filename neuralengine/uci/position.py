"""The ``position`` command: the board it describes, and the history a search keeps of it.

:func:`parse_position` builds the board from ``startpos`` or a FEN and plays
the moves after it, explaining every problem; :func:`parse_move` reads a
move as GUIs write it. :func:`with_history` keeps of a game only the moves
the engine's draw rules can look at, so that a game of any length costs a
search the same.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from neuralengine.uci.output import echo

if TYPE_CHECKING:
    import chess

#: The longest history that decides a draw. Only positions since the last
#: capture or pawn move can repeat, and the half-move clock counts the plies
#: since then; from 100 plies on, the fifty-move rule applies whatever the
#: history holds. (The engine's draw rules walk back at most that far.)
HISTORY_PLIES = 100

#: A game of at most this many plies keeps its whole move stack: text models
#: read the game from its first move (its transcript). No transcript of more
#: plies fits a context of 1,024 characters (each ply takes at least three).
GAME_PLIES = 340


def with_history(board: chess.Board) -> chess.Board:
    """A copy of ``board`` with its whole game when it has at most :data:`GAME_PLIES` plies, else with the
    moves of its last ``min(halfmove clock, HISTORY_PLIES)`` plies only.

    Copying the whole move stack costs time in proportion to the game's
    length (a quarter of a second for 50,000 plies); this copy costs at most
    that of :data:`GAME_PLIES` plies for every game, and the repetition rules
    read the same on it.
    """
    plies = len(board.move_stack)
    return board.copy(stack=plies if plies <= GAME_PLIES else min(board.halfmove_clock, HISTORY_PLIES))


def parse_move(board: chess.Board, text: str) -> chess.Move:
    """``text`` as a legal move of ``board`` (raises ``ValueError``).

    The promotion letter may be upper case (``e7e8Q``), as Stockfish accepts.
    """
    if len(text) == 5:
        text = text[:4] + text[4].lower()
    return board.parse_uci(text)


def _problems(status: int) -> list[str]:
    """The names of the python-chess status flags set in ``status``."""
    import chess

    return [name[7:].lower().replace("_", " ") for name in dir(chess)
            if name.startswith("STATUS_") and name != "STATUS_VALID" and status & getattr(chess, name)]


def parse_position(args: list[str], *, chess960: bool, warn: Callable[[str], None],
                   quitting: threading.Event) -> chess.Board | None:
    """The board described by the words after ``position``, or ``None`` to keep the previous one.

    A move list stops before its first illegal move (with a message through
    ``warn``), and as soon as ``quitting`` is set: a long list takes a while,
    and ``quit`` must not wait for it. The board keeps the history that
    :func:`with_history` keeps.
    """
    import chess

    if not args:
        warn("usage: position startpos|fen FEN [moves MOVE...]")
        return None
    lower = [a.lower() for a in args]
    moves_at = lower.index("moves") if "moves" in lower else len(args)
    kind = lower[0]
    try:
        if kind == "startpos":
            if moves_at > 1:
                warn(f"position: unexpected words after startpos ignored: {echo(' '.join(args[1:moves_at]))}")
            board = chess.Board(chess960=chess960)
        elif kind == "fen":
            fen = " ".join(args[1:moves_at])
            if not fen:
                raise ValueError("position fen needs a FEN")
            board = chess.Board(fen, chess960=chess960)
        else:
            raise ValueError("position needs startpos or fen")
    except ValueError as exc:
        warn(f"invalid position ({exc}); keeping the previous position")
        return None
    fatal = (chess.STATUS_EMPTY | chess.STATUS_NO_WHITE_KING | chess.STATUS_NO_BLACK_KING
             | chess.STATUS_TOO_MANY_KINGS | chess.STATUS_OPPOSITE_CHECK | chess.STATUS_PAWNS_ON_BACKRANK)
    status = board.status()
    if status & fatal:
        warn(f"invalid position ({', '.join(_problems(status & fatal))}); keeping the previous position")
        return None
    if status != chess.STATUS_VALID:
        warn("warning: unusual position (" + ", ".join(_problems(status)) + ")")
    for index, text in enumerate(args[moves_at + 1:]):
        if quitting.is_set():
            break
        try:
            move = parse_move(board, text)
            if not move:
                raise ValueError("null move")
        except ValueError:
            warn(f"illegal move {echo(text)} (move {index + 1} of the list) in {board.fen()}; "
                 f"the position stops before it")
            break
        board.push(move)
    return with_history(board)
