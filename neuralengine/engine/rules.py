"""Chess rules the network cannot know, and moves chosen without it.

* :func:`mate_in_one` (and :func:`checkmates` for one move): the mate rule.
* :class:`DrawRules`: whether a move ends the game in a draw or lets one be
  claimed at once (repetitions, the fifty- and 75-move rules, stalemate,
  insufficient material), with the positions compared by
  :func:`repetition_key`.
* :func:`conversion_order`: the order of the winning moves of a clearly won
  position (the conversion rule).
* :func:`static_fallback` and :func:`fallback_score`: a move and its score
  when no network evaluation fits the time.
"""

from __future__ import annotations

import collections
import math
from typing import Sequence

import chess

from neuralengine.encoding import legal_actions
from neuralengine.engine.scores import MoveScore

#: Half-moves without a capture or pawn move after which either side may
#: claim a draw (the fifty-move rule); at 150 the game is drawn (75-move rule).
FIFTY_MOVE_PLIES = 100

#: The conversion rule: when the best move's win probability is at least
#: this, every move at least this good counts as winning, and among them the
#: engine prefers progress (see :func:`conversion_order`).
CONVERT_THRESHOLD = 0.98

#: Piece values for the fallback move, in pawns.
PIECE_VALUES = {chess.PAWN: 1, chess.KNIGHT: 3, chess.BISHOP: 3, chess.ROOK: 5, chess.QUEEN: 9, chess.KING: 0}


# --------------------------------------------------------------------------
# Mate in one
# --------------------------------------------------------------------------


def checkmates(board: chess.Board, move: chess.Move) -> bool:
    """Whether the legal ``move`` checkmates at once (``board`` is left as it was)."""
    if not board.gives_check(move):
        return False
    board.push(move)
    try:
        return board.is_checkmate()
    finally:
        board.pop()


def mate_in_one(board: chess.Board, moves: Sequence[chess.Move] | None = None) -> chess.Move | None:
    """The first move that checkmates at once, in action-index order, or ``None``.

    ``moves`` (legal moves of ``board`` in action-index order) defaults to
    all legal moves (:func:`~neuralengine.encoding.legal_actions`).
    """
    if moves is None:
        moves = legal_actions(board)[0]
    return next((move for move in moves if checkmates(board, move)), None)


# --------------------------------------------------------------------------
# Draw rules
# --------------------------------------------------------------------------


def repetition_key(board: chess.Board) -> tuple:
    """What makes two positions "the same" for the repetition rules.

    Piece placement, side to move, castling rights and an en passant square
    only when a capture there is legal: the same identity python-chess uses
    for its repetition checks.
    """
    return (board.pawns, board.knights, board.bishops, board.rooks, board.queens, board.kings,
            board.occupied_co[chess.WHITE], board.occupied_co[chess.BLACK], board.turn,
            board.clean_castling_rights(), board.ep_square if board.has_legal_en_passant() else None)


class DrawRules:
    """The draw rules for the positions one move after ``board``, prepared once.

    The repetition rules need the positions since the last irreversible move.
    They are read once, here, walking back at most ``halfmove_clock`` plies
    (every reversible move raises the clock, so the stretch is never longer),
    and only when the clock is below 99: from 99 on, every reversible move
    reaches the fifty-move rule anyway and an irreversible one starts a new
    stretch. The walk is therefore at most 98 plies however long the game.
    Afterwards each move costs a lookup, plus a look at the opponent's replies
    only when one of them can reach a position that occurred twice.

    The result agrees with python-chess's ``is_fivefold_repetition()`` and
    ``can_claim_threefold_repetition()`` on the position after the move.
    """

    def __init__(self, board: chess.Board) -> None:
        #: How often each position of the current stretch occurred (``board`` included).
        self.seen: collections.Counter[tuple] = collections.Counter()
        #: Plies of history read.
        self.walked = 0
        #: Positions that occurred twice or more: all, and those with ``board``'s side to move.
        self._twice: set[tuple] = set()
        self._twice_ours: list[tuple] = []
        clock = board.halfmove_clock
        if clock + 1 >= FIFTY_MOVE_PLIES or clock < 2 or not board.move_stack:
            return
        depth = min(clock, len(board.move_stack))
        probe = board.copy(stack=depth)
        self.seen[repetition_key(probe)] += 1
        while probe.move_stack:
            move = probe.pop()
            self.walked += 1
            if probe.is_irreversible(move):
                break
            self.seen[repetition_key(probe)] += 1
        self._twice = {key for key, count in self.seen.items() if count >= 2}
        self._twice_ours = [key for key in self._twice if key[8] == board.turn]

    def draw_after(self, board: chess.Board, move: chess.Move) -> bool:
        """Whether ``move`` (legal in ``board``) ends in a draw or lets one be claimed at once.

        ``board`` is left as it was.
        """
        reversible = not board.is_irreversible(move)
        board.push(move)
        try:
            if board.halfmove_clock >= FIFTY_MOVE_PLIES:
                return not board.is_checkmate()
            if board.is_stalemate() or board.is_insufficient_material():
                return True
            return reversible and self._repetition(board)
        finally:
            board.pop()

    def _repetition(self, child: chess.Board) -> bool:
        if not self._twice:
            return False  # every claim needs a position that occurred twice already
        if self.seen[repetition_key(child)] + 1 >= 3:
            return True  # a threefold repetition now (a fivefold one included)
        # The opponent may claim with a reply that reaches a position seen twice.
        # Only a reversible reply can, and it moves one of the opponent's pieces to
        # an empty square: the two positions differ on exactly two squares, which
        # names the reply.
        them = child.occupied_co[child.turn]
        for key in self._twice_ours:
            theirs_then = key[6] if child.turn == chess.WHITE else key[7]
            left = them & ~theirs_then
            arrived = theirs_then & ~them
            if chess.popcount(left) != 1 or chess.popcount(arrived) != 1 or arrived & child.occupied:
                continue
            reply = chess.Move(chess.lsb(left), chess.lsb(arrived))
            if not child.is_legal(reply):
                continue
            child.push(reply)
            hit = repetition_key(child) == key
            child.pop()
            if hit:
                return True
        return False


# --------------------------------------------------------------------------
# The conversion rule
# --------------------------------------------------------------------------


def conversion_order(board: chess.Board, scored: list[MoveScore], rules: DrawRules) -> list[MoveScore]:
    """Reorder the winning moves of a clearly won position by progress.

    An action-value model rates almost every move of a won position near 1,
    so its argmax is decided by differences of a hundredth of a percent, and
    it shuffles pieces until a repetition or the fifty-move rule draws the
    game (DeepMind's paper reports the same and broke such ties with
    Stockfish). Without any search, the moves rated at least
    :data:`CONVERT_THRESHOLD` are put in this order instead, one ply deep:

    1. moves to a position not seen before in the game's current stretch;
    2. captures and pawn moves (they reset the fifty-move count and change
       the position for good), promotions to a queen first;
    3. fewer legal replies for the opponent (the usual way to drive a lone
       king to the edge and mate it);
    4. the network's value.

    The other moves follow in their own order. ``scored`` is sorted best first.
    """
    winning = [s for s in scored if s.rule is None and s.win_prob >= CONVERT_THRESHOLD]
    if len(winning) < 2:
        return scored
    rest = [s for s in scored if not (s.rule is None and s.win_prob >= CONVERT_THRESHOLD)]

    def key(s: MoveScore) -> tuple:
        move = s.move
        progress = board.is_capture(move) or board.piece_type_at(move.from_square) == chess.PAWN
        queen = move.promotion == chess.QUEEN
        board.push(move)
        try:
            seen = rules.seen[repetition_key(board)] > 0
            replies = board.legal_moves.count()
        finally:
            board.pop()
        return (seen, not queen, not progress, replies, -s.win_prob, s.action)

    return sorted(winning, key=key) + rest


# --------------------------------------------------------------------------
# Without the network
# --------------------------------------------------------------------------


def static_fallback(board: chess.Board, moves: Sequence[chess.Move]) -> chess.Move:
    """The move played when no network evaluation fits the time: cheap material sense.

    Each move scores the material it wins (capture, promotion) minus what it
    leaves hanging on its destination square (the moved piece if the square
    is attacked and not defended, or the difference to the cheapest attacker
    if it is defended). Ties go to the lowest action index (``moves`` must be
    in action order). This takes about a millisecond; it is no substitute for
    the network, only better than an arbitrary legal move.
    """
    best, best_score = moves[0], -math.inf
    for move in moves:
        gain = 0
        if board.is_en_passant(move):
            gain = 1
        else:
            captured = board.piece_type_at(move.to_square)
            if captured is not None and board.color_at(move.to_square) != board.turn:
                gain = PIECE_VALUES[captured]
        moved = board.piece_type_at(move.from_square) or chess.PAWN
        if move.promotion:
            gain += PIECE_VALUES[move.promotion] - 1
            moved = move.promotion
        board.push(move)
        try:
            attackers = board.attackers(board.turn, move.to_square)
            if attackers and not board.is_castling(board.peek()):
                cheapest = min(PIECE_VALUES[board.piece_type_at(sq) or chess.PAWN] for sq in attackers)
                defended = bool(board.attackers(not board.turn, move.to_square))
                loss = PIECE_VALUES[moved] if not defended else max(0, PIECE_VALUES[moved] - cheapest)
            else:
                loss = 0
        finally:
            board.pop()
        score = gain - loss
        if score > best_score:
            best, best_score = move, score
    return best


def fallback_score(board: chess.Board, move: chess.Move) -> str:
    """A UCI ``score`` for a move chosen without the network: ``mate 1`` for a
    mate in one, else the material balance after the move (side to move's
    view, 100 cp a pawn, within the network's ±1505 cp range). Resign and
    draw logic in front ends read a score from every search."""
    board.push(move)
    try:
        if board.is_checkmate():
            return "mate 1"
        mover = not board.turn
        balance = sum(PIECE_VALUES[p.piece_type] * (1 if p.color == mover else -1) for p in board.piece_map().values())
    finally:
        board.pop()
    return f"cp {max(-1500, min(1500, 100 * balance))}"
