"""Board facts computed with python-chess: the labels that the probes predict.

Everything is framed from the side to move ("mine" and "theirs"), the way the
network is asked to judge a position. Square numbers are python-chess's
(a1 = 0, b1 = 1, ..., h8 = 63).
"""

from __future__ import annotations

from dataclasses import dataclass

import chess
import numpy as np

from neuralengine.encoding import SEQUENCE_LENGTH, VOCAB

#: Classes of the three-way square feature.
EMPTY, MINE, THEIRS = 0, 1, 2
PIECE3_CLASSES = ("empty", "mine", "theirs")

#: Classes of the 13-way square feature: empty, then my P N B R Q K, then theirs.
PIECE13_CLASSES = ("empty",) + tuple(f"my {chess.piece_name(t)}" for t in chess.PIECE_TYPES) \
    + tuple(f"their {chess.piece_name(t)}" for t in chess.PIECE_TYPES)

#: Material values for the balance feature (the king counts nothing).
MATERIAL = {chess.PAWN: 1, chess.KNIGHT: 3, chess.BISHOP: 3, chess.ROOK: 5, chess.QUEEN: 9, chess.KING: 0}
#: Values for comparing a capturer with its victim (a king never wants to be traded).
_EXCHANGE = {**MATERIAL, chess.KING: 1000}


def fen_from_tokens(tokens: np.ndarray) -> str:
    """The FEN that :func:`neuralengine.encoding.tokenize` turned into ``tokens``."""
    tokens = np.asarray(tokens)
    if tokens.shape != (SEQUENCE_LENGTH,):
        raise ValueError(f"expected {SEQUENCE_LENGTH} tokens, got shape {tokens.shape}")
    chars = [VOCAB[int(t)] for t in tokens]
    rows = []
    for r in range(8):
        row, gap = "", 0
        for c in chars[1 + 8 * r: 9 + 8 * r]:
            if c == ".":
                gap += 1
                continue
            if gap:
                row, gap = row + str(gap), 0
            row += c
        rows.append(row + (str(gap) if gap else ""))

    def field(lo: int, hi: int) -> str:
        return "".join(chars[lo:hi]).replace(".", "")

    castling = field(65, 69) or "-"
    ep = field(69, 71) or "-"
    return f"{'/'.join(rows)} {chars[0]} {castling} {ep} {field(71, 74) or '0'} {field(74, 77) or '1'}"


def piece3(board: chess.Board) -> np.ndarray:
    """[64] int: empty / the side to move's piece / the opponent's piece."""
    out = np.zeros(64, dtype=np.int64)
    for square, piece in board.piece_map().items():
        out[square] = MINE if piece.color == board.turn else THEIRS
    return out


def piece13(board: chess.Board) -> np.ndarray:
    """[64] int: 0 empty, 1-6 my pawn..king, 7-12 their pawn..king."""
    out = np.zeros(64, dtype=np.int64)
    for square, piece in board.piece_map().items():
        out[square] = piece.piece_type + (0 if piece.color == board.turn else 6)
    return out


def attacked(board: chess.Board, by_side_to_move: bool) -> np.ndarray:
    """[64] int: 1 where a piece of that side attacks the square.

    python-chess attacks: pinned pieces still attack, and a square holding a
    piece of the attacker's own colour counts (it is defended).
    """
    color = board.turn if by_side_to_move else not board.turn
    out = np.zeros(64, dtype=np.int64)
    for square in chess.SQUARES:
        out[square] = board.is_attacked_by(color, square)
    return out


def material_balance(board: chess.Board) -> int:
    """My material minus theirs, pawns 1, knights and bishops 3, rooks 5, queens 9."""
    total = 0
    for piece in board.piece_map().values():
        value = MATERIAL[piece.piece_type]
        total += value if piece.color == board.turn else -value
    return total


def leaves_piece_en_prise(board: chess.Board, move: chess.Move) -> bool:
    """Whether the moved piece can be won after ``move``.

    It stands en prise when the opponent attacks its new square and either no
    piece of the mover defends that square or the opponent's cheapest attacker
    is worth less than the piece (a promotion counts as the new piece). A king
    move is never en prise: it is legal only onto safe squares.
    """
    piece = board.piece_at(move.from_square)
    if piece is None:
        raise ValueError(f"no piece on {chess.square_name(move.from_square)} in {board.fen()}")
    kind = move.promotion or piece.piece_type
    if kind == chess.KING:
        return False
    after = board.copy(stack=False)
    after.push(move)
    attackers = after.attackers(after.turn, move.to_square)
    if not attackers:
        return False
    if not after.attackers(board.turn, move.to_square):
        return True
    cheapest = min(_EXCHANGE[after.piece_type_at(s)] for s in attackers)
    return cheapest < _EXCHANGE[kind]


@dataclass
class MoveFacts:
    capture: bool
    check: bool
    en_prise: bool


def move_facts(board: chess.Board, move: chess.Move) -> MoveFacts:
    """Facts about one legal move (captures include en passant)."""
    return MoveFacts(board.is_capture(move), board.gives_check(move), leaves_piece_en_prise(board, move))
