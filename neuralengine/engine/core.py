"""The engine: a move for a position from one network evaluation, no search.

:class:`Engine` wraps an inference backend (:func:`neuralengine.backends.create_backend`).
:meth:`Engine.choose_move` turns a :class:`chess.Board` into a
:class:`~neuralengine.engine.scores.MoveChoice` in five steps, one method each:

1. **Candidates** (:meth:`Engine._candidates`): the legal moves (or the
   ``searchmoves``) in action-index order.
2. **Rule scores** (:meth:`Engine._rule_scores`): rules the network cannot
   know. A move that checkmates at once scores 1.0 (``mate 1``) and is always
   played, unless the mate rule is turned off. A move after which the game is
   drawn at once or can be claimed drawn scores exactly 0.5: a fivefold
   repetition or a claimable threefold repetition (DeepMind's rule, which
   needs the move history), a half-move clock of 100 (the fifty-move rule can
   be claimed; at 150 the 75-move rule ends the game), stalemate and
   insufficient material (what the Stockfish labels the model was trained on
   would say); see :class:`~neuralengine.engine.rules.DrawRules`.
3. **Network scores** (:meth:`Engine._network_scores`): a win probability for
   every candidate, from the model kind named in the weights metadata:

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

4. **Choice** (:meth:`Engine._choose`): the rule scores override the
   network's; the best move is the argmax, with ties going to the lowest
   action index, or a sample from ``softmax(win_prob / T)`` when the
   temperature ``T`` > 0. In a clearly won position the conversion rule
   orders the winning moves by progress
   (:func:`~neuralengine.engine.rules.conversion_order`). Without a whole
   evaluation, :meth:`Engine._fallback_choice` plays instead (see below).
5. **Ponder** (:meth:`Engine._ponder_move`): the expected reply, when asked
   for and one more network call fits the deadline.

Time limits are deadlines on :func:`time.monotonic`
(:class:`~neuralengine.engine.timing.SearchControl`), or on the clock the
engine is given (the UCI server's), which also times the network calls. One evaluation of all
candidate moves is the smallest unit of work, and a move is chosen from whole
evaluations only: the engine keeps an estimate of its latency, and when the
time left is too short for the evaluation it plays at once a mate in one or
else a move chosen by :func:`~neuralengine.engine.rules.static_fallback`.
With ``BatchSize`` below the number of candidates the evaluation takes
several network calls; should ``stop`` come or the deadline pass between
them (the latency was mispredicted), the scores of the calls made are
dropped and the same fallback is played. The engine never plays the best of
a part of the moves. The draw rules are worked out before the evaluation, so
that their cost is taken from the same deadline, and their history walk is
bounded by the half-move clock.

Nothing here knows the UCI protocol; :mod:`neuralengine.uci` drives it.
"""

from __future__ import annotations

import math
import os
import random
import time
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import chess
import numpy as np

from neuralengine.config import ACTION_VALUE, BEHAVIORAL_CLONING, STATE_VALUE
from neuralengine.encoding import expected_win_prob, legal_actions, tokenize_board
from neuralengine.engine.rules import (
    CONVERT_THRESHOLD,
    DrawRules,
    checkmates,
    conversion_order,
    mate_in_one,
    static_fallback,
)
from neuralengine.engine.scores import RULE_DRAW, RULE_MATE, MoveChoice, MoveScore
from neuralengine.engine.timing import (
    FINISH_RESERVE,
    RULE_SECONDS_PER_MOVE,
    SETUP_SECONDS,
    LatencyModel,
    SearchControl,
)

if TYPE_CHECKING:
    from neuralengine.backends import Backend

#: Default number of moves sent to the network in one call. No chess position
#: has more than 218 legal moves, so the default always makes one call.
DEFAULT_BATCH_SIZE = 256

#: Moves per network call when the latency is measured after loading.
WARM_UP_ROWS = 6


def sample_softmax(values: Sequence[float], temperature: float, rng: random.Random) -> int:
    """Index drawn from ``softmax(values / temperature)``."""
    top = max(values)
    weights = [math.exp((v - top) / temperature) for v in values]
    return rng.choices(range(len(values)), weights=weights, k=1)[0]


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
    :param clock: the time source of the latency measurements, the same as
        the deadlines' (:func:`time.monotonic` by default; tests pass a fake
        clock that only the network calls advance).

    One move choice runs at a time; the settings may be changed between them.
    """

    def __init__(self, backend: Backend, *, batch_size: int = DEFAULT_BATCH_SIZE, temperature: float = 0.0,
                 temperature_moves: int = 0, mate_rule: bool = True, convert_rule: bool = True,
                 seed: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.clock = clock
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

        A model of another kind (a text model) is opened by its own player
        (:mod:`neuralengine.engine.players`), which has this class's interface.

        Raises :class:`~neuralengine.weights.WeightsError` or ``ValueError``
        with a message that names the problem.
        """
        from neuralengine.backends import create_backend
        from neuralengine.deepmind import resolve_weights
        from neuralengine.engine.players import player_for
        from neuralengine.weights import read_metadata

        # A released model's name or a DeepMind checkpoint folder becomes its converted file.
        weights_path = resolve_weights(weights_path)
        meta = read_metadata(weights_path)  # a missing or broken file fails here, before any backend import
        player = player_for(meta)
        if player is not None:
            return player.open(weights_path, backend, threads, warm_up=warm_up, **kwargs)  # type: ignore[no-any-return]
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
        start = self.clock()
        if self.kind == ACTION_VALUE:
            boards = tokenize_board(board)[None, :]
            log_probs = self.backend.evaluate(boards, np.asarray(actions, dtype=np.int64)[None, :])
            scores = expected_win_prob(np.asarray(log_probs)[0])
            rows = len(actions)
        elif self.kind == STATE_VALUE:
            children = []
            for move in moves:
                board.push(move)
                children.append(tokenize_board(board))
                board.pop()
            log_probs = self.backend.evaluate(np.stack(children))
            scores = 1.0 - expected_win_prob(np.asarray(log_probs))
            rows = len(moves)
        else:
            raise AssertionError(f"no chunked call for {self.kind}")
        self.latency.observe(rows, self.clock() - start)
        return np.asarray(scores, dtype=np.float64)

    def _policy(self, board: chess.Board, actions: Sequence[int]) -> np.ndarray:
        """Behavioural cloning: policy probabilities renormalised over ``actions``."""
        start = self.clock()
        logits = np.asarray(self.backend.evaluate(tokenize_board(board)[None, :]), dtype=np.float64)[0]
        self.latency.observe(1, self.clock() - start)
        legal = logits[np.asarray(actions, dtype=np.int64)]
        legal = legal - legal.max()
        probs = np.exp(legal)
        return probs / probs.sum()

    def warm_up(self) -> None:
        """Run the network on the start position and fit the latency estimate."""
        board = chess.Board()
        moves, indices = legal_actions(board)
        actions = indices.tolist()
        if self.kind == BEHAVIORAL_CLONING:
            self._policy(board, actions)
            start = self.clock()
            self._policy(board, actions)
            elapsed = self.clock() - start
            self.latency.fit(1, elapsed, 1, elapsed)
            return
        # A few rows keep the warm-up short even for a large model on a CPU;
        # the estimate is corrected by every real call afterwards.
        rows = min(WARM_UP_ROWS, len(moves))
        start = self.clock()
        self._call(board, moves[:rows], actions[:rows])  # first call: allocations, kernel selection
        repeats = 3 if self.clock() - start < 0.25 else 1
        t_one, t_many = [], []
        for _ in range(repeats):
            start = self.clock()
            self._call(board, moves[:1], actions[:1])
            t_one.append(self.clock() - start)
            start = self.clock()
            self._call(board, moves[:rows], actions[:rows])
            t_many.append(self.clock() - start)
        self.latency.fit(1, sorted(t_one)[len(t_one) // 2], rows, sorted(t_many)[len(t_many) // 2])

    # -- time ------------------------------------------------------------

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

    # -- choosing a move ---------------------------------------------------

    def choose_move(self, board: chess.Board, *, control: SearchControl | None = None, nodes: int | None = None,
                    searchmoves: Iterable[chess.Move] | None = None, ponder: bool = False) -> MoveChoice:
        """Choose a move for ``board`` (which keeps its move stack; it is restored on return).

        :param control: deadline and stop flag (default: no limit).
        :param nodes: the ``go nodes`` limit. One evaluation of all candidate
            moves is the smallest unit of work, so every limit plays the move
            a choice without limit plays, as Lc0 plays its policy's best move
            at ``nodes 1``; :attr:`MoveChoice.nodes` still counts the moves
            evaluated.
        :param searchmoves: only these moves are candidates (illegal ones are
            ignored; if none is legal, all moves are).
        :param ponder: also predict the opponent's reply with a second
            inference, if the deadline allows it.
        """
        del nodes  # no limit below one evaluation; see above
        start = self.clock()
        control = control or SearchControl()
        moves, actions = self._candidates(board, searchmoves)
        if not moves:
            return MoveChoice(None, time_s=self.clock() - start)
        verdicts, rules = self._rule_scores(board, moves, control)
        scores, evaluated = self._network_scores(board, moves, actions, control) if rules is not None else (None, 0)
        choice = self._choose(board, moves, actions, verdicts, scores, rules)
        if choice is None:
            choice = self._fallback_choice(board, moves, actions, verdicts, control, evaluated)
        elif ponder:
            choice.ponder = self._ponder_move(board, choice.bestmove, control)
        choice.nodes = evaluated
        choice.time_s = self.clock() - start
        return choice

    def _candidates(self, board: chess.Board,
                    searchmoves: Iterable[chess.Move] | None) -> tuple[list[chess.Move], list[int]]:
        """Step 1: the candidate moves in action-index order, and their action indices."""
        moves, indices = legal_actions(board)
        actions = indices.tolist()
        if searchmoves is not None:
            wanted = set(searchmoves)
            keep = [i for i, m in enumerate(moves) if m in wanted]
            if keep:
                moves = [moves[i] for i in keep]
                actions = [actions[i] for i in keep]
        return moves, actions

    def _rule_scores(self, board: chess.Board, moves: list[chess.Move],
                     control: SearchControl) -> tuple[dict[int, str], DrawRules | None]:
        """Step 2: the rule (``"mate"`` or ``"draw"``) of each candidate a rule decides, by position in ``moves``.

        Mates need no network; they are found first so that even a move
        choice without time for any inference can play one. The draw rules
        matter only next to the network's scores: they are worked out (and
        returned) only when they and the whole evaluation fit the deadline,
        so that their time counts against the same deadline as the network's.
        """
        verdicts = {i: RULE_MATE for i, move in enumerate(moves) if checkmates(board, move)}
        network = self.evaluation_seconds(len(moves))
        if not self._fits(control, None if network is None else network + RULE_SECONDS_PER_MOVE * len(moves)):
            return verdicts, None
        rules = DrawRules(board)
        for i, move in enumerate(moves):
            if i not in verdicts and rules.draw_after(board, move):
                verdicts[i] = RULE_DRAW
        return verdicts, rules

    def _network_scores(self, board: chess.Board, moves: list[chess.Move], actions: list[int],
                        control: SearchControl) -> tuple[list[float] | None, int]:
        """Step 3: the network's score of every candidate, or ``None``; and the moves the network scored.

        All moves are evaluated, or none is used: a part of them, in action
        order, would be an arbitrary choice. The evaluation starts only when
        it is predicted to fit the deadline. It is one call, or
        ``ceil(moves / batch_size)`` calls when ``BatchSize`` is below the
        number of moves; between such calls, ``stop`` or a deadline already
        passed (the latency was mispredicted) abandons it, and the scores of
        the calls made are dropped (they still count as nodes).
        """
        if not self._fits(control, self.evaluation_seconds(len(moves))):
            return None, 0
        if self.kind == BEHAVIORAL_CLONING:
            legal = legal_actions(board)[1].tolist()
            by_action = dict(zip(legal, self._policy(board, legal)))
            return [float(by_action[a]) for a in actions], len(moves)
        scores: list[float] = []
        batch = max(1, self.batch_size)
        while len(scores) < len(moves):
            if scores:
                remaining = control.remaining()
                if control.stop.is_set() or (remaining is not None and remaining <= 0):
                    return None, len(scores)
            done = len(scores)
            size = min(batch, len(moves) - done)
            scores.extend(float(v) for v in self._call(board, moves[done:done + size], actions[done:done + size]))
        return scores, len(scores)

    def _choose(self, board: chess.Board, moves: list[chess.Move], actions: list[int], verdicts: dict[int, str],
                scores: list[float] | None, rules: DrawRules | None) -> MoveChoice | None:
        """Step 4: the move to play from the rule and network scores, ``None`` when nothing is scored.

        The rules override the network; the ranking puts the mates first,
        then goes by score, ties keeping the lower action index. Then the
        conversion rule, and the best move or a sample.
        """
        ranked = self._rank(moves, actions, verdicts, scores)
        if not ranked:
            return None
        if (self.convert_rule and rules is not None and ranked[0].rule is None
                and ranked[0].win_prob >= CONVERT_THRESHOLD):
            ranked = conversion_order(board, ranked, rules)
        temperature = self.effective_temperature(board)
        chosen = 0
        if temperature > 0 and ranked[0].rule != RULE_MATE:
            chosen = sample_softmax([s.win_prob for s in ranked], temperature, self.rng)
        if chosen:
            ranked.insert(0, ranked.pop(chosen))
        return MoveChoice(ranked[0].move, ranked=ranked, temperature=temperature)

    def _rank(self, moves: list[chess.Move], actions: list[int], verdicts: dict[int, str],
              scores: list[float] | None) -> list[MoveScore]:
        """The scored candidates, best first (moves are in action order, so ties keep the lower index).

        Without network scores only the mates are scored (when the mate rule is on).
        """
        ranked: list[MoveScore] = []
        for i, move in enumerate(moves):
            rule = verdicts.get(i)
            value = None if scores is None else scores[i]
            if rule == RULE_MATE and self.mate_rule:
                ranked.append(MoveScore(move, actions[i], 1.0, value, RULE_MATE))
            elif value is None:
                continue
            elif rule == RULE_DRAW:
                ranked.append(MoveScore(move, actions[i], 0.5, value, RULE_DRAW))
            else:
                ranked.append(MoveScore(move, actions[i], value, value, None))
        ranked.sort(key=lambda s: (s.rule != RULE_MATE, -s.win_prob, s.action))
        return ranked

    def _fallback_choice(self, board: chess.Board, moves: list[chess.Move], actions: list[int],
                         verdicts: dict[int, str], control: SearchControl, evaluated: int) -> MoveChoice:
        """The move when no whole evaluation is there: a mate in one, else :func:`static_fallback`.

        ``evaluated`` counts the moves of an evaluation cut short, for the reason given.
        """
        mates = [i for i, rule in verdicts.items() if rule == RULE_MATE]
        pick = min(mates) if mates else moves.index(static_fallback(board, moves))
        choice = MoveChoice(moves[pick])
        if control.stop.is_set():
            choice.fallback = (f"stopped after {evaluated} of {len(moves)} move evaluations" if evaluated
                               else "stopped before any evaluation")
        elif evaluated:
            choice.fallback = f"the deadline passed after {evaluated} of {len(moves)} move evaluations"
        else:
            choice.fallback = "no time for an evaluation"
            self.latency.relax()
        if mates:
            choice.ranked = [MoveScore(moves[pick], actions[pick], 1.0, None, RULE_MATE)]
        return choice

    def predicted_seconds(self, board: chess.Board) -> float | None:
        """Predicted time of a complete move choice in ``board``, from ``go`` to the answer
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
        """Step 5: the opponent's best reply to ``move``, if one more inference fits the deadline."""
        board.push(move)
        try:
            replies, indices = legal_actions(board)
            reply_actions = indices.tolist()
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
            mate = mate_in_one(board, replies)
            if mate is not None:
                return mate
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
        moves, _ = legal_actions(board)
        if not moves:
            return None
        mate = mate_in_one(board, moves)
        return mate if mate is not None else static_fallback(board, moves)
