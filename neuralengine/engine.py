"""Move choice without search: one network evaluation per position.

:class:`Engine` wraps an inference backend (:func:`neuralengine.backends.create_backend`)
and turns a :class:`chess.Board` into a ranked list of moves:

1. The legal moves are listed in action-index order.
2. Every candidate move gets a win probability for the side to move, from the
   model kind named in the weights metadata:

   * ``action_value`` (DeepMind's main engine): the board tokens plus each
     move's action index, all moves in one batch; the win probability is the
     expectation of the predicted return buckets.
   * ``state_value``: every child position is evaluated (one batch); the move
     scores ``1 - E[V(child)]``, because the child is seen from the opponent's
     side.
   * ``behavioral_cloning``: one pass over the board gives 1968 logits; their
     softmax, renormalised over the legal moves, is the move's policy
     probability. It is not a win probability, but it is reported in its place
     (so ``cp`` and ``wdl`` of such a model show the policy's confidence).

3. Rules the network cannot know override its scores:

   * a move that checkmates at once is always played and scores 1.0 (``mate 1``),
     unless the mate rule is turned off;
   * a move after which the game is drawn at once or can be claimed drawn
     scores exactly 0.5: a fivefold repetition or a claimable threefold
     repetition (DeepMind's rule, which needs the move history), a half-move
     clock of 100 (the fifty-move rule can be claimed; at 150 the 75-move rule
     ends the game), stalemate and insufficient material (what the Stockfish
     labels the model was trained on would say).

4. The best move is the argmax, with ties going to the lowest action index,
   or a sample from ``softmax(win_prob / T)`` when the temperature ``T`` > 0.

Nothing here knows the UCI protocol; :mod:`neuralengine.uci` drives it.
Time limits are deadlines on :func:`time.monotonic`. One evaluation of all
candidate moves is the smallest unit of work: the engine keeps an estimate of
its latency, and when the time left is too short for that evaluation it plays
at once a mate in one or else a move chosen by :func:`static_fallback`; it
never plays the best of an arbitrary part of the moves. The draw rules are
worked out before the evaluation, so that their cost is taken from the same
deadline, and their history walk is bounded by the half-move clock.
"""

from __future__ import annotations

import collections
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import chess
import numpy as np

from neuralengine.config import ACTION_VALUE, BEHAVIORAL_CLONING, STATE_VALUE
from neuralengine.encoding import MOVE_TO_ACTION, expected_win_prob, tokenize, win_prob_to_cp

if TYPE_CHECKING:
    from neuralengine.backends import Backend

#: Default number of moves sent to the network in one call. No chess position
#: has more than 218 legal moves, so the default always makes one call.
DEFAULT_BATCH_SIZE = 256

#: Seconds kept free before a deadline for the work after the last inference
#: (ranking, printing).
FINISH_RESERVE = 0.002
#: Seconds a search needs before its network call whatever the position:
#: starting the search thread, listing the moves, looking for mates.
SETUP_SECONDS = 0.003
#: A ``movetime`` whose share after ``Move Overhead`` is too short for one
#: search still gets that search when it takes at most this share of it.
MOVETIME_TROUBLE_SHARE = 0.9
#: Seconds per candidate move for the draw rules, worked out before the call
#: (measured: about 8 µs per move with python-chess; this keeps a margin).
RULE_SECONDS_PER_MOVE = 0.00003

#: Half-moves without a capture or pawn move after which either side may
#: claim a draw (the fifty-move rule); at 150 the game is drawn (75-move rule).
FIFTY_MOVE_PLIES = 100

#: Moves per network call when the latency is measured after loading.
WARM_UP_ROWS = 6

#: Rule names in :attr:`MoveScore.rule`.
RULE_MATE = "mate"
RULE_DRAW = "draw"

#: The conversion rule: when the best move's win probability is at least
#: this, every move at least this good counts as winning, and among them the
#: engine prefers progress (see :func:`conversion_order`).
CONVERT_THRESHOLD = 0.98


# --------------------------------------------------------------------------
# Scores for display
# --------------------------------------------------------------------------


def wdl_from_win_prob(win_prob: float) -> tuple[int, int, int]:
    """Win/draw/loss per mille for an expected score ``win_prob``.

    The model predicts one number, the expected score. It is split as if the
    result were the sum of two independent half-point trials each won with
    probability ``p``: ``W = p²``, ``D = 2p(1-p)``, ``L = (1-p)²``. The split
    keeps the expectation (``W + D/2 = p``), is symmetric, and shows the most
    draws (50 %) for a level position. The three numbers add up to 1000.
    """
    p = min(max(float(win_prob), 0.0), 1.0)
    w = int(round(1000 * p * p))
    loss = int(round(1000 * (1 - p) * (1 - p)))
    return w, 1000 - w - loss, loss


@dataclass
class MoveScore:
    """One candidate move and its score for the side to move."""

    move: chess.Move
    #: Index of the move in the 1968-move action table.
    action: int
    #: Score after the rules, in [0, 1].
    win_prob: float
    #: The network's own score, or ``None`` if the move was not evaluated.
    model_win_prob: float | None = None
    #: ``"mate"`` or ``"draw"`` when a rule set :attr:`win_prob`.
    rule: str | None = None

    @property
    def mate(self) -> int | None:
        """``1`` for a move the mate rule plays (mate in one), else ``None``."""
        return 1 if self.rule == RULE_MATE else None

    @property
    def cp(self) -> int:
        """Centipawns from :attr:`win_prob` (Lichess logistic, clamped)."""
        return win_prob_to_cp(self.win_prob)

    @property
    def wdl(self) -> tuple[int, int, int]:
        """Win/draw/loss per mille: certain for a rule, else :func:`wdl_from_win_prob`."""
        if self.rule == RULE_MATE:
            return 1000, 0, 0
        if self.rule == RULE_DRAW:
            return 0, 1000, 0
        return wdl_from_win_prob(self.win_prob)


@dataclass
class SearchResult:
    """What :meth:`Engine.search` found."""

    #: The move to play; ``None`` when the side to move has no legal move.
    bestmove: chess.Move | None
    #: Scored moves, the chosen one first, then by score (ties: lowest action index).
    ranked: list[MoveScore] = field(default_factory=list)
    #: Move evaluations done by the network.
    nodes: int = 0
    #: Wall-clock seconds of the whole search.
    time_s: float = 0.0
    #: ``True`` when every candidate move was evaluated.
    complete: bool = True
    #: Why a fallback move was played (nothing could be evaluated in time), else ``None``.
    fallback: str | None = None
    #: Expected reply to :attr:`bestmove`, when asked for and affordable.
    ponder: chess.Move | None = None
    #: Temperature used to choose the move.
    temperature: float = 0.0

    @property
    def nps(self) -> int:
        """Move evaluations per second."""
        return int(self.nodes / self.time_s) if self.time_s > 0 else 0


class SearchControl:
    """Shared between a running search and the thread that may cut it short.

    ``stop`` ends the search before its next network call. ``deadline`` (a
    :func:`time.monotonic` value, or ``None`` for no limit) may be changed
    while the search runs, e.g. on ``ponderhit``.
    """

    def __init__(self, deadline: float | None = None) -> None:
        self.stop = threading.Event()
        self.deadline = deadline

    def remaining(self) -> float | None:
        """Seconds until the deadline, or ``None`` without one."""
        deadline = self.deadline
        return None if deadline is None else deadline - time.monotonic()


# --------------------------------------------------------------------------
# Latency estimate
# --------------------------------------------------------------------------


class LatencyModel:
    """Predicts the seconds of one network call of ``n`` rows.

    The model is ``fixed + n * per_row``, fitted on two warm-up calls, times a
    correction factor that follows the calls actually made (it jumps up at
    once when a call was slower than predicted and decays slowly). A move
    played without evaluation because the prediction did not fit halves the
    factor (:meth:`relax`): otherwise one call slowed by a busy machine would
    keep the engine from evaluating for the rest of a fast game, since only
    calls bring the factor down. Predictions include a safety factor, because
    a call cannot be interrupted.
    """

    SAFETY = 1.3

    def __init__(self) -> None:
        self.fixed: float | None = None
        self.per_row: float = 0.0
        self.scale = 1.0

    @property
    def known(self) -> bool:
        return self.fixed is not None

    def fit(self, n_small: int, t_small: float, n_large: int, t_large: float) -> None:
        """Fit the line through two timed calls."""
        if n_large > n_small:
            self.per_row = max((t_large - t_small) / (n_large - n_small), 0.0)
        else:
            self.per_row = t_large / max(n_large, 1)
        self.fixed = max(t_small - self.per_row * n_small, 0.0)
        self.scale = 1.0

    def _raw(self, rows: int) -> float:
        return (self.fixed or 0.0) + self.per_row * rows

    def predict(self, rows: int) -> float | None:
        """Predicted seconds for ``rows`` rows (with safety margin), ``None`` if unknown."""
        if not self.known:
            return None
        return self.SAFETY * self.scale * self._raw(rows) + 0.0005

    def max_rows(self, seconds: float, limit: int) -> int:
        """The most rows (up to ``limit``) one call can take within ``seconds``."""
        if not self.known:
            return limit
        if seconds <= 0:
            return 0
        budget = (seconds - 0.0005) / (self.SAFETY * self.scale) - (self.fixed or 0.0)
        if budget < 0:
            return 0
        if self.per_row <= 0:
            return limit
        return max(0, min(limit, int(budget / self.per_row)))

    def relax(self) -> None:
        """A move went without evaluation for lack of predicted time: halve the correction (not below 1).
        If the machine really is that slow, the next call raises it again at once."""
        self.scale = max(1.0, self.scale / 2)

    def observe(self, rows: int, seconds: float) -> None:
        """Record a call that took ``seconds`` for ``rows`` rows."""
        if not self.known:
            self.fit(rows, seconds, rows, seconds)
            return
        raw = self._raw(rows)
        if raw <= 0:
            return
        ratio = seconds / raw
        self.scale = ratio if ratio > self.scale else 0.8 * self.scale + 0.2 * ratio
        self.scale = min(max(self.scale, 0.25), 20.0)


# --------------------------------------------------------------------------
# Encoding helpers (Chess960-aware)
# --------------------------------------------------------------------------


def model_fen(board: chess.Board) -> str:
    """The FEN the network reads for ``board``.

    This is python-chess ``board.fen()`` (DeepMind's normalisation), with the
    move counters clamped to 999 (the tokenizer has three digits for each)
    and, for Chess960 positions, the castling rights written as ``KQkq`` by
    the side of the king the rook stands on: DeepMind's tokenizer has no
    Shredder/X-FEN letters, so a 960 position is shown to the model as the
    nearest standard one.
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


def candidate_moves(board: chess.Board) -> tuple[list[chess.Move], list[int]]:
    """Legal moves sorted by action index, and their indices."""
    pairs = sorted((move_action(board, m), m) for m in board.legal_moves)
    return [m for _, m in pairs], [a for a, _ in pairs]


def position_key(board: chess.Board) -> tuple:
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
        self.seen[position_key(probe)] += 1
        while probe.move_stack:
            move = probe.pop()
            self.walked += 1
            if probe.is_irreversible(move):
                break
            self.seen[position_key(probe)] += 1
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
        if self.seen[position_key(child)] + 1 >= 3:
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
            hit = position_key(child) == key
            child.pop()
            if hit:
                return True
        return False


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
            seen = rules.seen[position_key(board)] > 0
            replies = board.legal_moves.count()
        finally:
            board.pop()
        return (seen, not queen, not progress, replies, -s.win_prob, s.action)

    return sorted(winning, key=key) + rest


def sample_softmax(values: Sequence[float], temperature: float, rng: random.Random) -> int:
    """Index drawn from ``softmax(values / temperature)``."""
    top = max(values)
    weights = [math.exp((v - top) / temperature) for v in values]
    return rng.choices(range(len(values)), weights=weights, k=1)[0]


# --------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------


class Engine:
    """Chooses moves for :class:`chess.Board` positions with one backend.

    :param backend: an open :class:`~neuralengine.backends.Backend`.
    :param batch_size: the most moves sent to the network in one call.
    :param temperature: 0 plays the best move; above 0 samples from
        ``softmax(win_prob / temperature)``.
    :param temperature_moves: apply the temperature only up to this full move
        number (0: always).
    :param mate_rule: always play a move that checkmates at once.
    :param convert_rule: in a clearly won position, choose among the winning
        moves by progress rather than by the network's tiny differences
        (:func:`conversion_order`).
    :param seed: seed of the sampling RNG (``None``: from the system).

    One search runs at a time; the settings may be changed between searches.
    """

    def __init__(self, backend: Backend, *, batch_size: int = DEFAULT_BATCH_SIZE, temperature: float = 0.0,
                 temperature_moves: int = 0, mate_rule: bool = True, convert_rule: bool = True,
                 seed: int | None = None) -> None:
        self.backend = backend
        self.kind = backend.config.kind
        self.batch_size = batch_size
        self.temperature = temperature
        self.temperature_moves = temperature_moves
        self.mate_rule = mate_rule
        self.convert_rule = convert_rule
        self.rng = random.Random(seed)
        self.latency = LatencyModel()

    @classmethod
    def open(cls, weights_path: str | os.PathLike[str], backend: str = "auto", threads: int = 1,
             warm_up: bool = True, **kwargs: object) -> "Engine":
        """Open a weights file with the named backend and measure its latency.

        Raises :class:`~neuralengine.weights.WeightsError` or ``ValueError``
        with a message that names the problem.
        """
        from neuralengine.backends import create_backend
        from neuralengine.deepmind import resolve_weights
        from neuralengine.weights import read_metadata

        # A released model's name or a DeepMind checkpoint folder becomes its converted file.
        weights_path = resolve_weights(weights_path)
        read_metadata(weights_path)  # a missing or broken file fails here, before any backend import
        engine = cls(create_backend(weights_path, backend, threads), **kwargs)  # type: ignore[arg-type]
        if warm_up:
            engine.warm_up()
        return engine

    def describe(self) -> str:
        """One line naming the model and backend."""
        cfg = self.backend.config
        return (f"{os.path.basename(str(self.backend.weights_path))}: {self.kind}, {cfg.num_layers} layers x "
                f"{cfg.embed_dim}, {cfg.num_parameters():,} parameters, backend {self.backend.describe()}")

    # -- network calls ---------------------------------------------------

    def _rows_needed(self, n_moves: int) -> int:
        return 1 if self.kind == BEHAVIORAL_CLONING else n_moves

    def _call(self, board: chess.Board, moves: Sequence[chess.Move], actions: Sequence[int]) -> np.ndarray:
        """Scores for ``moves`` from one network call (no rules applied)."""
        start = time.monotonic()
        if self.kind == ACTION_VALUE:
            boards = tokenize(model_fen(board))[None, :]
            log_probs = self.backend.evaluate(boards, np.asarray(actions, dtype=np.int64)[None, :])
            scores = expected_win_prob(np.asarray(log_probs)[0])
            rows = len(actions)
        elif self.kind == STATE_VALUE:
            children = []
            for move in moves:
                board.push(move)
                children.append(tokenize(model_fen(board)))
                board.pop()
            log_probs = self.backend.evaluate(np.stack(children))
            scores = 1.0 - expected_win_prob(np.asarray(log_probs))
            rows = len(moves)
        else:
            raise AssertionError(f"no chunked call for {self.kind}")
        self.latency.observe(rows, time.monotonic() - start)
        return np.asarray(scores, dtype=np.float64)

    def _policy(self, board: chess.Board, actions: Sequence[int]) -> np.ndarray:
        """Behavioural cloning: policy probabilities renormalised over ``actions``."""
        start = time.monotonic()
        logits = np.asarray(self.backend.evaluate(tokenize(model_fen(board))[None, :]), dtype=np.float64)[0]
        self.latency.observe(1, time.monotonic() - start)
        legal = logits[np.asarray(actions, dtype=np.int64)]
        legal = legal - legal.max()
        probs = np.exp(legal)
        return probs / probs.sum()

    def warm_up(self) -> None:
        """Run the network on the start position and fit the latency estimate."""
        board = chess.Board()
        moves, actions = candidate_moves(board)
        if self.kind == BEHAVIORAL_CLONING:
            self._policy(board, actions)
            start = time.monotonic()
            self._policy(board, actions)
            elapsed = time.monotonic() - start
            self.latency.fit(1, elapsed, 1, elapsed)
            return
        # A few rows keep the warm-up short even for a large model on a CPU;
        # the estimate is corrected by every real call afterwards.
        rows = min(WARM_UP_ROWS, len(moves))
        start = time.monotonic()
        self._call(board, moves[:rows], actions[:rows])  # first call: allocations, kernel selection
        repeats = 3 if time.monotonic() - start < 0.25 else 1
        t_one, t_many = [], []
        for _ in range(repeats):
            start = time.monotonic()
            self._call(board, moves[:1], actions[:1])
            t_one.append(time.monotonic() - start)
            start = time.monotonic()
            self._call(board, moves[:rows], actions[:rows])
            t_many.append(time.monotonic() - start)
        self.latency.fit(1, sorted(t_one)[len(t_one) // 2], rows, sorted(t_many)[len(t_many) // 2])

    # -- search ------------------------------------------------------------

    def _calls(self, n_moves: int) -> tuple[int, int]:
        """Network calls needed to score ``n_moves`` moves, and the rows of the largest call."""
        if self.kind == BEHAVIORAL_CLONING:
            return 1, 1
        batch = max(1, self.batch_size)
        return -(-n_moves // batch), min(n_moves, batch)

    def evaluation_seconds(self, n_moves: int) -> float | None:
        """Predicted seconds of the network calls that score ``n_moves`` moves (``None`` before any measurement)."""
        calls, rows = self._calls(n_moves)
        per_call = self.latency.predict(rows)
        return None if per_call is None else calls * per_call

    def _fits(self, control: SearchControl, seconds: float | None) -> bool:
        """Whether work predicted to take ``seconds`` can start now and end ``FINISH_RESERVE`` before the deadline."""
        if control.stop.is_set():
            return False
        remaining = control.remaining()
        return remaining is None or seconds is None or seconds <= remaining - FINISH_RESERVE

    def _evaluate(self, board: chess.Board, moves: list[chess.Move], actions: list[int],
                  control: SearchControl) -> tuple[dict[int, float], bool]:
        """Network scores by position in ``moves``; ``complete`` is False if cut short.

        The caller has checked that the whole evaluation fits the deadline: it
        is one call, or ``ceil(moves / batch_size)`` calls when ``BatchSize``
        is below the number of moves. Between such calls, ``stop`` or a
        deadline already passed (the latency was mispredicted) ends it early.
        """
        scores: dict[int, float] = {}
        if not moves:
            return scores, True
        if self.kind == BEHAVIORAL_CLONING:
            all_moves, all_actions = candidate_moves(board)
            probs = self._policy(board, all_actions)
            by_action = dict(zip(all_actions, probs))
            return {i: float(by_action[a]) for i, a in enumerate(actions)}, True
        done = 0
        batch = max(1, self.batch_size)
        while done < len(moves):
            if done:
                remaining = control.remaining()
                if control.stop.is_set() or (remaining is not None and remaining <= 0):
                    return scores, False
            size = min(batch, len(moves) - done)
            values = self._call(board, moves[done:done + size], actions[done:done + size])
            for k, value in enumerate(values):
                scores[done + k] = float(value)
            done += size
        return scores, True

    def search(self, board: chess.Board, *, control: SearchControl | None = None, nodes: int | None = None,
               searchmoves: Iterable[chess.Move] | None = None, ponder: bool = False) -> SearchResult:
        """Choose a move for ``board`` (which keeps its move stack; it is restored on return).

        :param control: deadline and stop flag (default: no limit).
        :param nodes: the ``go nodes`` limit. One evaluation of all candidate
            moves is the smallest unit of work, so every limit plays the move
            a search without limit plays, as Lc0 plays its policy's best move
            at ``nodes 1``; :attr:`SearchResult.nodes` still counts the moves
            evaluated.
        :param searchmoves: only these moves are candidates (illegal ones are
            ignored; if none is legal, all moves are).
        :param ponder: also predict the opponent's reply with a second
            inference, if the deadline allows it.
        """
        del nodes  # no limit below one evaluation; see above
        start = time.monotonic()
        control = control or SearchControl()
        moves, actions = candidate_moves(board)
        if not moves:
            return SearchResult(None, time_s=time.monotonic() - start)
        if searchmoves is not None:
            wanted = set(searchmoves)
            keep = [i for i, m in enumerate(moves) if m in wanted]
            if keep:
                moves = [moves[i] for i in keep]
                actions = [actions[i] for i in keep]

        # Mates need no network; they are found first so that even a search
        # without time for any inference can play one.
        mates = set()
        for i, move in enumerate(moves):
            if board.gives_check(move):
                board.push(move)
                if board.is_checkmate():
                    mates.add(i)
                board.pop()

        # All moves are evaluated, or none: a part of them, in action order,
        # would be an arbitrary choice. The draw rules come first, so that
        # their time counts against the same deadline as the network's.
        terminal: dict[int, str] = {i: RULE_MATE for i in mates}
        model: dict[int, float] = {}
        complete = False
        rules: DrawRules | None = None
        network = self.evaluation_seconds(len(moves))
        if self._fits(control, None if network is None else network + RULE_SECONDS_PER_MOVE * len(moves)):
            rules = DrawRules(board)
            for i, move in enumerate(moves):
                if i not in mates and rules.draw_after(board, move):
                    terminal[i] = RULE_DRAW
            if self._fits(control, network):
                model, complete = self._evaluate(board, moves, actions, control)

        scored: list[MoveScore] = []
        for i, move in enumerate(moves):
            rule = terminal.get(i)
            value = model.get(i)
            if rule == RULE_MATE and self.mate_rule:
                scored.append(MoveScore(move, actions[i], 1.0, value, RULE_MATE))
            elif value is None:
                continue
            elif rule == RULE_DRAW:
                scored.append(MoveScore(move, actions[i], 0.5, value, RULE_DRAW))
            else:
                scored.append(MoveScore(move, actions[i], value, value, None))

        result = SearchResult(None, nodes=len(model), complete=complete)
        if not scored:
            pick = min(mates) if mates else moves.index(static_fallback(board, moves))
            result.bestmove = moves[pick]
            if control.stop.is_set():
                result.fallback = "stopped before any evaluation"
            else:
                result.fallback = "no time for an evaluation"
                self.latency.relax()
            if mates:
                result.ranked = [MoveScore(moves[pick], actions[pick], 1.0, None, RULE_MATE)]
            result.time_s = time.monotonic() - start
            return result

        # Best first; ties keep the lower action index (moves are in action order).
        scored.sort(key=lambda s: (s.rule != RULE_MATE, -s.win_prob, s.action))
        if (self.convert_rule and rules is not None and scored[0].rule is None
                and scored[0].win_prob >= CONVERT_THRESHOLD):
            scored = conversion_order(board, scored, rules)
        temperature = self.effective_temperature(board)
        chosen = 0
        if temperature > 0 and scored[0].rule != RULE_MATE:
            chosen = sample_softmax([s.win_prob for s in scored], temperature, self.rng)
        if chosen:
            scored.insert(0, scored.pop(chosen))
        result.ranked = scored
        result.bestmove = scored[0].move
        result.temperature = temperature
        if ponder:
            result.ponder = self._ponder_move(board, scored[0].move, control)
        result.time_s = time.monotonic() - start
        return result

    def predicted_seconds(self, board: chess.Board) -> float | None:
        """Predicted time of a complete search of ``board``, from ``go`` to the answer
        (``None`` before any measurement): setting up, the draw rules, the
        network calls and the finish."""
        n = board.legal_moves.count()
        network = self.evaluation_seconds(n)
        if network is None:
            return None
        return SETUP_SECONDS + RULE_SECONDS_PER_MOVE * n + network + FINISH_RESERVE

    def effective_temperature(self, board: chess.Board) -> float:
        """The temperature for a move in ``board`` (0 after ``temperature_moves``)."""
        if self.temperature <= 0:
            return 0.0
        if self.temperature_moves and board.fullmove_number > self.temperature_moves:
            return 0.0
        return self.temperature

    def _ponder_move(self, board: chess.Board, move: chess.Move, control: SearchControl) -> chess.Move | None:
        """The opponent's best reply to ``move``, if one more inference fits the deadline."""
        board.push(move)
        try:
            replies, reply_actions = candidate_moves(board)
            if not replies:
                return None
            remaining = control.remaining()
            rows = self._rows_needed(len(replies))
            if control.stop.is_set():
                return None
            if remaining is not None:
                predicted = self.latency.predict(rows)
                if predicted is None or predicted > remaining - FINISH_RESERVE or rows > self.batch_size:
                    return None
            for reply in replies:
                board.push(reply)
                mate = board.is_checkmate()
                board.pop()
                if mate:
                    return reply
            if self.kind == BEHAVIORAL_CLONING:
                values = self._policy(board, reply_actions)
            else:
                values = self._call(board, replies, reply_actions)
            return replies[int(np.argmax(values))]
        finally:
            board.pop()

    @staticmethod
    def fallback(board: chess.Board) -> chess.Move | None:
        """A legal move without the network: a mate in one, else :func:`static_fallback`."""
        moves, _ = candidate_moves(board)
        for move in moves:
            if board.gives_check(move):
                board.push(move)
                mate = board.is_checkmate()
                board.pop()
                if mate:
                    return move
        return static_fallback(board, moves) if moves else None


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


#: Piece values for the fallback move, in pawns.
PIECE_VALUES = {chess.PAWN: 1, chess.KNIGHT: 3, chess.BISHOP: 3, chess.ROOK: 5, chess.QUEEN: 9, chess.KING: 0}


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


# --------------------------------------------------------------------------
# Time management
# --------------------------------------------------------------------------

#: Moves assumed left in the game when ``movestogo`` is not given.
DEFAULT_MOVES_TO_GO = 30
#: The most seconds of margin for a slow start that time trouble adds to the
#: one search it allows (see :func:`time_budget`).
TROUBLE_SLACK_CAP = 0.1


def time_budget(*, movetime: float | None = None, time_left: float | None = None, increment: float = 0.0,
                movestogo: int | None = None, overhead: float = 0.03, needed: float | None = None) -> float | None:
    """Seconds the engine may think about a move, or ``None`` for no limit.

    All arguments are in seconds. With ``movetime`` the budget is
    ``movetime - overhead`` (but at least half of ``movetime``); when that is
    shorter than ``needed`` but ``needed`` is at most
    :data:`MOVETIME_TROUBLE_SHARE` of ``movetime``, the budget is ``needed``,
    so a short ``movetime`` that holds one search gets one. With a clock,
    the share is ``time_left / movestogo + 3/4 increment``, at most half the
    clock, and the budget is that share minus ``overhead``. ``needed`` is the
    predicted time of one complete search (:meth:`Engine.predicted_seconds`).
    When the share is shorter than twice that, but the clock minus
    ``overhead`` (the usable clock) still holds twice that, the engine is in
    time trouble but can afford one search: the budget is ``needed`` plus a
    margin for delays before the search starts (a busy machine, a slow thread
    start), the larger of ``needed`` and a tenth of the usable clock (at most
    ``TROUBLE_SLACK_CAP``). The engine stops after its one evaluation, so the
    margin is rarely spent, and every legal move is evaluated. Below that the
    share stands, and when it is too short the engine answers at
    once with its fallback move. When both limits are given the smaller one
    counts. The result is never negative; 0 means "answer at once".
    """
    budgets: list[float] = []
    if movetime is not None:
        movetime = max(movetime, 0.0)
        fixed = movetime - min(overhead, movetime / 2)
        if needed is not None and fixed < max(needed, 0.0) <= MOVETIME_TROUBLE_SHARE * movetime:
            # A short movetime that still holds one search with a margin: take it.
            fixed = max(needed, 0.0)
        budgets.append(fixed)
    if time_left is not None:
        time_left = max(time_left, 0.0)
        mtg = movestogo if movestogo and movestogo > 0 else DEFAULT_MOVES_TO_GO
        share = min(time_left / mtg + 0.75 * max(increment, 0.0), time_left / 2)
        clock_budget = share - overhead
        usable = time_left - overhead
        if needed is not None and clock_budget < 2 * needed <= usable:
            needed = max(needed, 0.0)
            clock_budget = needed + max(needed, min(usable / 10, TROUBLE_SLACK_CAP))
        budgets.append(clock_budget)
    if not budgets:
        return None
    return max(min(budgets), 0.0)
