"""Bit-exact encoding of DeepMind's searchless-chess inputs and outputs.

* :func:`tokenize` turns a FEN into the 77 tokens the model reads;
  :func:`model_fen` is the FEN the model is shown for a board (counters
  clamped, Chess960 castling rights in ``KQkq`` notation) and
  :func:`tokenize_board` tokenizes it.
* :data:`ACTIONS` is the 1968-move action table in DeepMind's generation order;
  :func:`move_action` is a legal move's index (Chess960 castling included) and
  :func:`legal_actions` lists a board's legal moves in action-index order, the
  order every part of the package uses.
* Return buckets: the 128 (or K) win-probability bins, their centres, and the
  conversions between win probability and centipawns.

This module needs only NumPy and python-chess, so the UCI front end can import
it cheaply.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import chess
import numpy as np

# --------------------------------------------------------------------------
# FEN tokenizer
# --------------------------------------------------------------------------

#: The 31 token characters; the token id is the index in this string.
VOCAB = "0123456789abcdefghpnrkqPBNRQKw."
_CHAR_TO_ID = {c: i for i, c in enumerate(VOCAB)}
_EMPTY = _CHAR_TO_ID["."]

#: Number of tokens a FEN becomes.
SEQUENCE_LENGTH = 77


class TokenizeError(ValueError):
    """A FEN the DeepMind tokenizer cannot represent."""


def _field(text: str, width: int, name: str) -> list[int]:
    if len(text) > width:
        raise TokenizeError(f"{name} field {text!r} is longer than {width} characters")
    try:
        ids = [_CHAR_TO_ID[c] for c in text]
    except KeyError as exc:
        raise TokenizeError(f"{name} field {text!r} has a character outside the vocabulary") from exc
    return ids + [_EMPTY] * (width - len(ids))


def tokenize(fen: str) -> np.ndarray:
    """Return the 77 uint8 tokens of ``fen``.

    Pass python-chess ``board.fen()``: the model was trained on that
    normalisation (legal en-passant squares only, castling as ``KQkq``).
    """
    parts = fen.split(" ")
    if len(parts) != 6:
        raise TokenizeError(f"FEN {fen!r} must have 6 space-separated fields")
    placement, side, castling, ep, halfmove, fullmove = parts
    if side not in ("w", "b"):
        raise TokenizeError(f"side to move {side!r} must be 'w' or 'b'")
    out = [_CHAR_TO_ID[side]]
    squares: list[int] = []
    for c in placement:
        if c == "/":
            continue
        if c in "0123456789":  # not str.isdigit(), which accepts '²' and other digits
            squares.extend([_EMPTY] * int(c))
        elif c in _CHAR_TO_ID and c not in "0123456789acdefghw.":
            squares.append(_CHAR_TO_ID[c])
        else:
            raise TokenizeError(f"placement {placement!r} has an invalid character {c!r}")
    if len(squares) != 64:
        raise TokenizeError(f"placement {placement!r} does not describe 64 squares")
    out.extend(squares)
    out.extend(_field("" if castling == "-" else castling, 4, "castling"))
    if castling != "-" and any(c not in "KQkq" for c in castling):
        raise TokenizeError(f"castling field {castling!r} is not in KQkq notation")
    out.extend(_field("" if ep == "-" else ep, 2, "en-passant"))
    out.extend(_field(halfmove, 3, "halfmove clock"))
    out.extend(_field(fullmove, 3, "fullmove number"))
    return np.asarray(out, dtype=np.uint8)


def square_token_index(square: int) -> int:
    """Where ``square`` sits in the 77 FEN tokens (the side to move comes first,
    then the placement from a8 to h1, rank by rank)."""
    if not 0 <= square < 64:
        raise ValueError(f"square {square} is outside the board")
    rank, file = divmod(square, 8)
    return 1 + (7 - rank) * 8 + file


def model_fen(board: chess.Board) -> str:
    """The FEN the network reads for ``board``.

    This is python-chess ``board.fen()`` (DeepMind's normalisation), with the
    move counters clamped to 999 (DeepMind's tokenizer has three digits for
    each and fails on more; a real game can reach them) and, for Chess960
    positions, the castling rights written as ``KQkq`` by the side of the
    king the rook stands on: the tokenizer has no Shredder/X-FEN letters, so
    a 960 position is shown to the model as the nearest standard one.
    """
    parts = board.fen().split(" ")
    if any(c not in "KQkq-" for c in parts[2]):
        rights = ""
        for color, king_side, queen_side in ((chess.WHITE, "K", "Q"), (chess.BLACK, "k", "q")):
            king = board.king(color)
            rooks = board.clean_castling_rights() & board.occupied_co[color] & chess.BB_BACKRANKS
            if king is None:
                continue
            files = [chess.square_file(sq) for sq in chess.scan_forward(rooks)]
            if any(f > chess.square_file(king) for f in files):
                rights += king_side
            if any(f < chess.square_file(king) for f in files):
                rights += queen_side
        parts[2] = rights or "-"
    parts[4] = str(min(board.halfmove_clock, 999))
    parts[5] = str(min(board.fullmove_number, 999))
    return " ".join(parts)


def tokenize_board(board: chess.Board) -> np.ndarray:
    """The 77 tokens of :func:`model_fen` of ``board``."""
    return tokenize(model_fen(board))


# --------------------------------------------------------------------------
# Action table
# --------------------------------------------------------------------------


def _build_actions() -> list[str]:
    moves: list[str] = []
    for square in range(64):
        name = chess.square_name(square)
        for piece in (chess.QUEEN, chess.KNIGHT):
            board = chess.Board(None)
            board.set_piece_at(square, chess.Piece(piece, chess.WHITE))
            moves.extend(name + chess.square_name(to) for to in board.attacks(square))
    files = "abcdefgh"
    for from_rank, to_rank in ((2, 1), (7, 8)):
        for i, f in enumerate(files):
            targets = [f]
            if i > 0:
                targets.append(files[i - 1])
            if i < 7:
                targets.append(files[i + 1])
            for t in targets:
                for piece in "qrbn":
                    moves.append(f"{f}{from_rank}{t}{to_rank}{piece}")
    return moves


#: Move strings (UCI) in action-index order.
ACTIONS: tuple[str, ...] = tuple(_build_actions())
#: UCI string to action index.
MOVE_TO_ACTION: dict[str, int] = {m: i for i, m in enumerate(ACTIONS)}
NUM_ACTIONS = len(ACTIONS)
assert NUM_ACTIONS == 1968

#: SHA-256 of the action strings joined with newlines (DeepMind's order).
ACTIONS_SHA256 = "0c85cec259a31318539a7171623ab73b01e25cd6d71fd43475e54d6e14f02e09"


def actions_sha256(actions: Sequence[str] = ACTIONS) -> str:
    return hashlib.sha256("\n".join(actions).encode()).hexdigest()


def tokenizer_sha256() -> str:
    """Fingerprint of the tokenizer: its vocabulary and sequence length."""
    return hashlib.sha256(f"{VOCAB}|{SEQUENCE_LENGTH}".encode()).hexdigest()


def move_to_action(move: chess.Move | str) -> int:
    """Action index of a move; raises KeyError for moves outside the table."""
    return MOVE_TO_ACTION[move if isinstance(move, str) else move.uci()]


def move_action(board: chess.Board, move: chess.Move) -> int:
    """Action index of a legal ``move`` of ``board``.

    Castling is king-to-g/c-file in DeepMind's table (``e1g1``). python-chess
    writes Chess960 castling as king-takes-rook; when the king and rook stand
    on their standard squares that is translated back, otherwise the
    king-to-rook move (also in the table) stands for it.
    """
    uci = move.uci()
    if board.chess960 and board.is_castling(move):
        king_file = chess.square_file(move.from_square)
        rook_file = chess.square_file(move.to_square)
        if king_file == 4 and rook_file in (0, 7):
            uci = uci[:2] + ("g" if rook_file == 7 else "c") + uci[3]
    return MOVE_TO_ACTION[uci]


def legal_actions(board: chess.Board) -> tuple[list[chess.Move], np.ndarray]:
    """Legal moves of ``board`` sorted by action index (:func:`move_action`), and their indices."""
    pairs = sorted((move_action(board, m), m) for m in board.legal_moves)
    return [m for _, m in pairs], np.fromiter((a for a, _ in pairs), dtype=np.int64, count=len(pairs))


# --------------------------------------------------------------------------
# Return buckets and win probabilities
# --------------------------------------------------------------------------

NUM_BUCKETS = 128


def bucket_edges(num_buckets: int = NUM_BUCKETS) -> np.ndarray:
    """Interior bucket edges k/K for k = 1..K-1."""
    return np.linspace(0.0, 1.0, num_buckets + 1)[1:-1]


def bucket_values(num_buckets: int = NUM_BUCKETS) -> np.ndarray:
    """Bucket centres (2k+1)/(2K)."""
    return (2 * np.arange(num_buckets) + 1) / (2.0 * num_buckets)


def win_prob_to_bucket(p: np.ndarray | float, num_buckets: int = NUM_BUCKETS) -> np.ndarray:
    """Bucket label of a win probability; values on an edge go to the lower bucket."""
    return np.searchsorted(bucket_edges(num_buckets), p, side="left")


def expected_win_prob(log_probs: np.ndarray) -> np.ndarray:
    """Expected win probability from bucket log-probabilities ``[..., K]``."""
    values = bucket_values(log_probs.shape[-1])
    return np.exp(log_probs.astype(np.float64)) @ values


#: Slope of the Lichess logistic (per centipawn).
CP_SLOPE = 0.00368208


def cp_to_win_prob(cp: float | np.ndarray) -> float | np.ndarray:
    """Lichess formula: win probability of a centipawn score for the side to move."""
    return 0.5 + 0.5 * (2.0 / (1.0 + np.exp(-CP_SLOPE * np.asarray(cp, dtype=np.float64))) - 1.0)


def win_prob_to_cp(p: float) -> int:
    """Inverse of :func:`cp_to_win_prob`, rounded to whole centipawns."""
    p = min(max(float(p), 1e-9), 1.0 - 1e-9)
    return int(round(math.log(p / (1.0 - p)) / CP_SLOPE))


#: Promotion piece of an action: 0 none, then q, r, b, n.
_PROMOTIONS = "qrbn"


def action_square_tokens() -> tuple[list[int], list[int], list[int]]:
    """For every action: the board-sequence index (BOS = 0) of its from-square
    and to-square tokens, and its promotion class.

    The sequence is BOS, then the 77 FEN tokens (:func:`square_token_index`).
    """
    def token(name: str) -> int:
        return 1 + square_token_index(chess.parse_square(name))

    src = [token(m[:2]) for m in ACTIONS]
    dst = [token(m[2:4]) for m in ACTIONS]
    promo = [1 + _PROMOTIONS.index(m[4]) if len(m) == 5 else 0 for m in ACTIONS]
    return src, dst, promo
