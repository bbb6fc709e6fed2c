"""Positions in, JSON out: what the page sends is checked here, and what it reads is built here.

A position travels as a starting FEN and the moves played from it (UCI), so
that the draw rules see the game's history. :func:`board_from` checks both
(with :func:`neuralengine.analyse.read_position`, the checks of ``neuralengine
analyse``), :func:`read_pgn` reads a PGN's main line, :func:`state` describes a
board (FEN, SAN history, legal moves, how the game ended) and
:func:`analysis` turns a :class:`~neuralengine.engine.MoveChoice` into the
ranked rows of ``neuralengine analyse`` (:func:`neuralengine.analyse.move_rows`),
the W/D/L of the position and the arrows of :mod:`neuralengine.picture`.

Every refusal is a :class:`~neuralengine.web.models.RequestError` with a 4xx
status and a one-line message.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any, Mapping

import chess
import chess.pgn

from neuralengine.analyse import PositionError, move_rows, read_position, value_label
from neuralengine.picture import DEFAULT_ARROWS, arrow_specs
from neuralengine.web.models import RequestError

if TYPE_CHECKING:
    from neuralengine.engine import MoveChoice

#: The most moves (plies) a request may carry: far beyond any real game, small enough to answer quickly.
MAX_PLIES = 1200

#: The longest FEN accepted (a real one is under 100 characters).
MAX_FEN = 200

#: The most arrows a request may ask for.
MAX_ARROWS = 20


def _field(data: Mapping[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = data.get(key, default)
    if value is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise RequestError(400, f"'{key}' must be {'a string' if kind is str else 'a ' + kind.__name__}")


def board_from(data: Mapping[str, Any]) -> chess.Board:
    """The board of ``data["fen"]`` (default: the start position) after ``data["moves"]`` (UCI)."""
    fen = _field(data, "fen", str)
    if fen is not None:
        fen = fen.strip()
        if len(fen) > MAX_FEN:
            raise RequestError(400, f"invalid FEN: {len(fen)} characters (a FEN has fewer than {MAX_FEN})")
        fen = fen or None
    moves = _field(data, "moves", list, [])
    if len(moves) > MAX_PLIES:
        raise RequestError(413, f"{len(moves)} moves: at most {MAX_PLIES} are accepted")
    if not all(isinstance(m, str) and len(m) <= 5 for m in moves):
        raise RequestError(400, "'moves' must be a list of moves in UCI notation (e2e4, e7e8q)")
    try:
        return read_position(fen, moves)
    except PositionError as exc:
        raise RequestError(400, str(exc)) from None


class _QuietBuilder(chess.pgn.GameBuilder):
    """python-chess's game builder, keeping the errors without logging them."""

    def handle_error(self, error: Exception) -> None:
        self.game.errors.append(error)


def read_pgn(text: object) -> tuple[chess.Board, dict[str, str]]:
    """The board at the end of the first game's main line (with its moves), and the game's headers.

    Refuses a PGN without moves, one with an illegal or unreadable move, and
    one whose FEN header is invalid.
    """
    if not isinstance(text, str):
        raise RequestError(400, "'pgn' must be a string")
    game = chess.pgn.read_game(io.StringIO(text), Visitor=_QuietBuilder)  # type: ignore[arg-type]
    if game is None:
        raise RequestError(400, "the PGN holds no game")
    if game.errors:
        played = list(game.mainline_moves())
        where = "at its start"
        if played:
            board = game.board()
            san = board.variation_san(played)
            where = f"after {san if len(san) <= 60 else '... ' + san[-56:]}"
        reason = str(game.errors[0]).split(" while parsing")[0]
        if isinstance(game.errors[0], ValueError) and "fen" in reason.lower() and not played:
            raise RequestError(400, f"the PGN's FEN header is invalid: {reason}")
        raise RequestError(400, f"the PGN has an illegal move {where}: {reason}")
    board = game.board()
    moves = list(game.mainline_moves())
    if len(moves) > MAX_PLIES:
        raise RequestError(413, f"the game has {len(moves)} moves (plies): at most {MAX_PLIES} are accepted")
    if not moves:
        raise RequestError(400, "the PGN holds no moves")
    for move in moves:
        board.push(move)
    headers = {k: v for k, v in game.headers.items() if v not in ("?", "????.??.??", "")}
    return board, headers


def outcome_text(board: chess.Board) -> str | None:
    """How the game ended at ``board`` (the rules that end it by themselves), or ``None``."""
    outcome = board.outcome(claim_draw=False)
    if outcome is None:
        return None
    reason = {
        chess.Termination.CHECKMATE: "checkmate", chess.Termination.STALEMATE: "stalemate",
        chess.Termination.INSUFFICIENT_MATERIAL: "insufficient material",
        chess.Termination.SEVENTYFIVE_MOVES: "the 75-move rule", chess.Termination.FIVEFOLD_REPETITION:
            "fivefold repetition"}.get(outcome.termination, outcome.termination.name.lower())
    return f"{reason} ({outcome.result()})"


def state(board: chess.Board) -> dict[str, Any]:
    """The position the page shows: FENs, the game's moves (UCI and SAN), legal moves, the outcome."""
    root = board.root()
    replay = root.copy(stack=False)
    sans, fens = [], [replay.fen()]
    for move in board.move_stack:
        sans.append(replay.san(move))
        replay.push(move)
        fens.append(replay.fen())
    return {
        "start_fen": root.fen(), "moves": [m.uci() for m in board.move_stack], "sans": sans, "fens": fens,
        "fen": board.fen(), "turn": "w" if board.turn == chess.WHITE else "b",
        "legal": [board.uci(m) for m in board.legal_moves], "check": board.is_check(),
        "last_move": board.move_stack[-1].uci() if board.move_stack else None,
        "first_move_number": root.fullmove_number, "game_over": outcome_text(board),
    }


def white_view(wdl: tuple[int, int, int] | list[int], turn: bool) -> list[int]:
    """W/D/L per mille of the side to move, seen from White."""
    w, d, loss = wdl
    return [w, d, loss] if turn == chess.WHITE else [loss, d, w]


def analysis(board: chess.Board, choice: "MoveChoice", kind: str, arrows: int = DEFAULT_ARROWS) -> dict[str, Any]:
    """The analysis of ``board``: every legal move ranked (as ``neuralengine analyse`` lists them), the position's
    W/D/L (its best move's), the rule that decided the best move, and the arrows."""
    rows = move_rows(board, choice)
    best = choice.ranked[0] if choice.ranked else None
    top = max((s.win_prob for s in choice.ranked), default=None)
    rule = None
    if best is not None and best.rule == "mate":
        rule = f"mate in 1: {board.san(best.move)} (the mate rule plays it whatever the network says)"
    elif best is not None and best.rule == "draw":
        rule = f"draw by rule after {board.san(best.move)} (repetition, fifty moves, stalemate or no material)"
    drawn = sorted(board.san(s.move) for s in choice.ranked if s.rule == "draw")
    return {
        "label": value_label(kind), "kind": kind, "rows": rows,
        "arrows": [a.as_dict() for a in arrow_specs(board, choice.ranked, arrows)],
        "win_prob": top, "wdl": list(best.wdl) if best else None,
        "wdl_white": white_view(best.wdl, board.turn) if best else None,
        "white_win": None if top is None else (top if board.turn == chess.WHITE else 1.0 - top),
        "rule": rule, "draw_moves": drawn, "time_ms": round(choice.time_s * 1000, 2), "nodes": choice.nodes,
    }


def arrows_field(data: Mapping[str, Any]) -> int:
    value = _field(data, "arrows", int, DEFAULT_ARROWS)
    if not 0 <= value <= MAX_ARROWS:
        raise RequestError(400, f"'arrows' must be between 0 and {MAX_ARROWS}")
    return value


def temperature_field(data: Mapping[str, Any]) -> float:
    """The ``temperature`` of a play request: a number from 0 to 100 (as the UCI option)."""
    value = data.get("temperature", 0)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RequestError(400, f"temperature {value[:20]!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 100:
        raise RequestError(400, "temperature must be a number from 0 to 100")
    return float(value)
