"""The ``pgn_lm`` player: a text model chooses the move from the game's transcript.

:class:`TextLMEngine` has the public interface of
:class:`neuralengine.engine.Engine` that the UCI server, ``analyse``,
``bench``, ``puzzles`` and ``match`` use (``choose_move`` returning a
:class:`~neuralengine.engine.MoveChoice`, ``describe``, ``warm_up``, the
latency estimate, the search settings), so every command plays it the same
way.

A move choice:

1. The candidates are the legal moves (or the ``searchmoves``), in action
   order. A move that mates at once is played when the mate rule is on.
2. The game's :func:`~neuralengine.textlm.transcript.prefix` is read once;
   its keys and values are kept, so that the next move of the same game
   reads only the characters added since (:class:`PrefixCache`).
3. Each candidate's text (move number where due, SAN, separator) is scored
   by the sum of its characters' log-probabilities, all candidates in one
   batched call on the cached prefix (their shared beginnings read once,
   :meth:`~neuralengine.textlm.model.TextLM.score`).
4. The move is the most probable one, or a sample from
   ``softmax(log_prob / temperature)`` when the temperature is above 0. The
   probabilities renormalised over the candidates are reported in place of
   win probabilities (like a behavioural-cloning policy).

A position without a transcript (set up from a FEN, or a game whose history
was not kept), a game longer than the model's context, or a move the
vocabulary cannot spell goes to the fallback model (the shipped
action-value model), with a note saying why; without one, to the engine's
static fallback move. The choice never fails for lack of a transcript.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import chess
import numpy as np

from neuralengine.config import PGN_LM, TEXT_KINDS
from neuralengine.encoding import legal_actions
from neuralengine.engine.rules import checkmates, static_fallback
from neuralengine.engine.scores import RULE_MATE, MoveChoice, MoveScore
from neuralengine.engine.timing import FINISH_RESERVE, SETUP_SECONDS, LatencyModel, SearchControl
from neuralengine.textlm.model import ContextError, KVCache, TextLM
from neuralengine.textlm.transcript import SEPARATOR, TranscriptError, Vocabulary, VocabularyError, candidate_texts

if TYPE_CHECKING:
    from neuralengine.engine import Engine

#: Characters read per candidate move when no position is at hand (``evaluation_seconds``): the moves'
#: beginnings are shared, so about three per move.
TYPICAL_MOVE_CHARS = 3


class PrefixCache:
    """The keys and values of the last prefix read, reused for any text that starts the same way.

    A token's keys and values depend only on the tokens up to it, so the
    cache of a text is valid for the longest common beginning of that text
    and the next one; only the rest is read.
    """

    def __init__(self, model: TextLM) -> None:
        self.model = model
        self.tokens: list[int] = []
        self.cache: KVCache | None = None
        self.last_logits: np.ndarray | None = None

    def uncached(self, tokens: Sequence[int]) -> int:
        """How many of ``tokens`` a :meth:`read` would compute."""
        return len(tokens) - self._reusable(tokens)

    def _reusable(self, tokens: Sequence[int]) -> int:
        common = 0
        for a, b in zip(self.tokens, tokens):
            if a != b:
                break
            common += 1
        if common == len(tokens) == len(self.tokens):
            return common
        return min(common, len(tokens) - 1)  # the last token is read again for its logits

    def read(self, tokens: Sequence[int]) -> tuple[KVCache, np.ndarray]:
        """The cache of ``tokens`` and the logits after the last one."""
        keep = self._reusable(tokens)
        if keep == len(tokens) == len(self.tokens) and self.cache is not None and self.last_logits is not None:
            return self.cache, self.last_logits
        past = None
        if keep and self.cache is not None:
            past = KVCache([k[:, :, :keep] for k in self.cache.keys], [v[:, :, :keep] for v in self.cache.values])
        cache, logits = self.model.read(tokens[keep:], past)
        self.tokens, self.cache, self.last_logits = list(tokens), cache, logits
        return cache, logits

    def clear(self) -> None:
        self.tokens, self.cache, self.last_logits = [], None, None


class NoText(Exception):
    """Why the text model cannot score this position (the message is the note shown)."""


class TextLMEngine:
    """Plays a ``pgn_lm`` model; the settings are the :class:`~neuralengine.engine.Engine`'s.

    :param model: the network.
    :param fallback: the engine that plays positions the text model cannot
        read (``None``: the static fallback move).
    :param batch_size: accepted for the interface; every candidate is scored
        in one call whatever its value.
    :param convert_rule: accepted for the interface; a text model has no win
        probability to convert.
    """

    kind = PGN_LM

    def __init__(self, model: TextLM, *, fallback: Engine | None = None, batch_size: int = 256,
                 temperature: float = 0.0, temperature_moves: int = 0, mate_rule: bool = True,
                 convert_rule: bool = True, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        #: The object reports ask for ``device`` and ``describe()`` (the backends' interface).
        self.backend = model
        self.vocabulary = Vocabulary(model.config.vocabulary)
        self.fallback_engine = fallback
        self.batch_size = batch_size
        self.temperature = temperature
        self.temperature_moves = temperature_moves
        self.mate_rule = mate_rule
        self.convert_rule = convert_rule
        self.rng = random.Random(seed)
        self.clock = clock
        self.latency = LatencyModel()
        self.prefixes = PrefixCache(model)
        self._texts_memo: tuple[tuple, tuple[list[int], list[list[int]]]] | None = None

    @classmethod
    def open(cls, weights_path: str | os.PathLike[str], backend: str = "auto", threads: int = 1,
             warm_up: bool = True, fallback_weights: str | os.PathLike[str] | None = None,
             **kwargs: object) -> "TextLMEngine":
        """Open a ``pgn_lm`` weights file, and the fallback model (default: the shipped weights).

        ``backend`` and ``threads`` are the fallback model's; the text model
        runs on NumPy. A fallback model that cannot be opened leaves the
        static fallback move in its place.
        """
        model = TextLM.load(weights_path)
        engine = cls(model, fallback=open_fallback(fallback_weights, backend, threads, warm_up), **kwargs)  # type: ignore[arg-type]
        if warm_up:
            engine.warm_up()
        return engine

    def describe(self) -> str:
        cfg = self.model.config
        name = os.path.basename(str(self.model.weights_path)) if self.model.weights_path else "pgn_lm model"
        fallback = (os.path.basename(str(self.fallback_engine.backend.weights_path))
                    if self.fallback_engine is not None else "the static fallback move")
        return (f"{name}: {self.kind}, {cfg.n_layer} layers x {cfg.n_embd}, {cfg.num_parameters():,} parameters, "
                f"context {cfg.block_size} characters, backend {self.model.describe()}; fallback {fallback}")

    # -- time ------------------------------------------------------------

    def warm_up(self) -> None:
        """Score the start position (and a short game) and fit the latency estimate."""
        board = chess.Board()
        self.prefixes.clear()
        start = self.clock()
        rows_one = self._score(board, list(board.legal_moves)[:1])[1]
        first = self.clock() - start
        board.push_san("e4")
        self.prefixes.clear()
        start = self.clock()
        rows_many = self._score(board, list(board.legal_moves))[1]
        many = self.clock() - start
        self.latency.fit(rows_one, first, rows_many, many)
        if self.fallback_engine is not None and not self.fallback_engine.latency.known:
            self.fallback_engine.warm_up()

    def evaluation_seconds(self, n_moves: int) -> float | None:
        """Predicted seconds to score ``n_moves`` moves of a typical length on a cached prefix."""
        return self.latency.predict(n_moves * TYPICAL_MOVE_CHARS)

    def predicted_seconds(self, board: chess.Board) -> float | None:
        """Predicted time of a complete move choice in ``board``, from ``go`` to the answer."""
        try:
            work = self._rows(board, list(board.legal_moves))
        except NoText:
            if self.fallback_engine is not None:
                return self.fallback_engine.predicted_seconds(board)
            return SETUP_SECONDS + FINISH_RESERVE
        network = self.latency.predict(work)
        return None if network is None else SETUP_SECONDS + network + FINISH_RESERVE

    def effective_temperature(self, board: chess.Board) -> float:
        if self.temperature <= 0:
            return 0.0
        if self.temperature_moves and board.fullmove_number > self.temperature_moves:
            return 0.0
        return self.temperature

    # -- the network -------------------------------------------------------

    def _texts(self, board: chess.Board, moves: Sequence[chess.Move]) -> tuple[list[int], list[list[int]]]:
        """The prefix's tokens and each move's; :class:`NoText` says why there are none.

        The last answer is kept: a ``go`` asks for the same position's texts up to three times.
        """
        key = (board.root().fen(), tuple(board.move_stack), tuple(moves))
        if self._texts_memo is not None and self._texts_memo[0] == key:
            return self._texts_memo[1]
        found = self._make_texts(board, moves)
        self._texts_memo = (key, found)
        return found

    def _make_texts(self, board: chess.Board, moves: Sequence[chess.Move]) -> tuple[list[int], list[list[int]]]:
        try:
            texts = candidate_texts(board, moves)
        except TranscriptError:
            raise NoText("no transcript: the game does not start from the initial position "
                         "(a position set up from a FEN, or a game too long to keep whole)") from None
        try:
            prefix = self.vocabulary.encode(texts.prefix)
        except VocabularyError as exc:
            raise NoText(f"the game's transcript cannot be written in the model's vocabulary ({exc})") from None
        encoded = []
        for text in texts.texts:
            try:
                encoded.append(self.vocabulary.encode(text))
            except VocabularyError as exc:
                raise NoText(f"the move {text.strip()} cannot be written in the model's vocabulary ({exc})") from None
        longest = max((len(t) for t in encoded), default=1)
        if len(prefix) + longest - 1 > self.model.config.block_size:
            raise NoText(f"the game's transcript ({len(prefix)} characters) is longer than the model's context "
                         f"of {self.model.config.block_size} characters")
        return prefix, encoded

    def _rows(self, board: chess.Board, moves: Sequence[chess.Move]) -> int:
        """Characters the network computes to score ``moves``: the prefix not cached, and the moves' tree."""
        return self._work(*self._texts(board, moves))

    def _work(self, prefix: list[int], encoded: list[list[int]]) -> int:
        tree = {tuple(t[:i]) for t in encoded for i in range(1, len(t))}  # what TextLM.score reads
        return self.prefixes.uncached(prefix) + len(tree)

    def _score(self, board: chess.Board, moves: Sequence[chess.Move]) -> tuple[np.ndarray, int]:
        """Log-probability of each move's text (one batched call after the prefix), and the characters computed."""
        prefix, encoded = self._texts(board, moves)
        rows = self._work(prefix, encoded)
        start = self.clock()
        try:
            cache, logits = self.prefixes.read(prefix)
            scores = self.model.score(cache, logits, encoded)
        except ContextError as exc:  # checked in _texts; kept as a message should it still happen
            raise NoText(str(exc)) from None
        self.latency.observe(max(rows, 1), self.clock() - start)
        return scores, rows

    def log_probs(self, board: chess.Board, moves: Iterable[chess.Move] | None = None) -> dict[chess.Move, float]:
        """The log-probability of each move's text (default: every legal move); raises ``ValueError`` without text."""
        moves = list(board.legal_moves) if moves is None else list(moves)
        try:
            scores, _ = self._score(board, moves)
        except NoText as exc:
            raise ValueError(str(exc)) from None
        return dict(zip(moves, (float(s) for s in scores)))

    def unmasked_move(self, board: chess.Board, max_chars: int = 16) -> tuple[str, chess.Move | None]:
        """The model's own next move, not restricted to legal moves: its greedy characters after the prefix
        up to the separator, and the move they spell if it is legal here (else ``None``).

        This is what the legal-move rate measures. Raises ``ValueError`` when the game has no transcript.
        """
        try:
            prefix, _ = self._texts(board, [])
        except NoText as exc:
            raise ValueError(str(exc)) from None
        separator = self.vocabulary.index.get(SEPARATOR)
        cache, logits = self.prefixes.read(prefix)
        text = self.vocabulary.decode(self.model.greedy(cache, logits, -1 if separator is None else separator,
                                                        max_chars))
        san = text.strip()
        if board.turn == chess.WHITE and san.startswith(f"{board.fullmove_number}."):
            san = san[len(f"{board.fullmove_number}."):]
        try:
            return text, board.parse_san(san) if san else None
        except ValueError:
            return text, None

    # -- choosing a move ---------------------------------------------------

    def choose_move(self, board: chess.Board, *, control: SearchControl | None = None, nodes: int | None = None,
                    searchmoves: Iterable[chess.Move] | None = None, ponder: bool = False) -> MoveChoice:
        """Choose a move for ``board`` (its move stack is the game); see the module's description."""
        del nodes  # one evaluation of every candidate is the smallest unit of work
        start = self.clock()
        control = control or SearchControl()
        moves, actions = self._candidates(board, searchmoves)
        if not moves:
            return MoveChoice(None, time_s=self.clock() - start)
        mates = [i for i, m in enumerate(moves) if checkmates(board, m)] if self.mate_rule else []
        if mates:
            pick = mates[0]
            choice = MoveChoice(moves[pick], ranked=[MoveScore(moves[pick], actions[pick], 1.0, None, RULE_MATE)])
            choice.time_s = self.clock() - start
            return choice
        try:
            rows = self._rows(board, moves)
        except NoText as exc:
            return self._hand_over(board, str(exc), control, searchmoves, ponder, start)
        predicted = self.latency.predict(rows)
        if not self._fits(control, predicted):
            choice = MoveChoice(static_fallback(board, moves), fallback="no time for an evaluation")
            self.latency.relax()
            choice.time_s = self.clock() - start
            return choice
        scores, _ = self._score(board, moves)
        choice = self._choose(board, moves, actions, scores)
        choice.nodes = len(moves)
        if ponder:
            choice.ponder = self._ponder_move(board, choice.bestmove, control)
        choice.time_s = self.clock() - start
        return choice

    @staticmethod
    def _candidates(board: chess.Board,
                    searchmoves: Iterable[chess.Move] | None) -> tuple[list[chess.Move], list[int]]:
        moves, indices = legal_actions(board)
        actions = indices.tolist()
        if searchmoves is not None:
            wanted = set(searchmoves)
            keep = [i for i, m in enumerate(moves) if m in wanted]
            if keep:
                moves = [moves[i] for i in keep]
                actions = [actions[i] for i in keep]
        return moves, actions

    def _fits(self, control: SearchControl, seconds: float | None) -> bool:
        if control.stop.is_set():
            return False
        remaining = control.remaining()
        return remaining is None or seconds is None or seconds <= remaining - FINISH_RESERVE

    def _choose(self, board: chess.Board, moves: list[chess.Move], actions: list[int],
                scores: np.ndarray) -> MoveChoice:
        """The most probable move (ties: the lower action index), or a sample at the temperature."""
        top = float(np.max(scores))
        probs = np.exp(scores - top)
        probs = probs / probs.sum()
        ranked = [MoveScore(m, a, float(p), float(p), None) for m, a, p in zip(moves, actions, probs)]
        order = sorted(range(len(moves)), key=lambda i: (-float(scores[i]), actions[i]))
        ranked = [ranked[i] for i in order]
        temperature = self.effective_temperature(board)
        if temperature > 0:
            from neuralengine.engine.core import sample_softmax

            chosen = sample_softmax([float(scores[i]) for i in order], temperature, self.rng)
            ranked.insert(0, ranked.pop(chosen))
        return MoveChoice(ranked[0].move, ranked=ranked, temperature=temperature)

    def _ponder_move(self, board: chess.Board, move: chess.Move | None, control: SearchControl) -> chess.Move | None:
        """The reply the model expects to ``move``, if one more call fits the deadline."""
        if move is None:
            return None
        board.push(move)
        try:
            replies = list(board.legal_moves)
            if not replies:
                return None
            rows = self._rows(board, replies)
            if not self._fits(control, self.latency.predict(rows)):
                return None
            scores, _ = self._score(board, replies)
            return replies[int(np.argmax(scores))]
        except NoText:
            return None
        finally:
            board.pop()

    def _hand_over(self, board: chess.Board, why: str, control: SearchControl,
                   searchmoves: Iterable[chess.Move] | None, ponder: bool, start: float) -> MoveChoice:
        """The fallback model's choice, with a note saying why the text model did not choose."""
        fallback = self.fallback_engine
        if fallback is None:
            moves, _ = legal_actions(board)
            choice = MoveChoice(static_fallback(board, moves))
            choice.fallback = f"{why}, and there is no fallback model"
        else:
            fallback.temperature = self.temperature
            fallback.temperature_moves = self.temperature_moves
            fallback.mate_rule = self.mate_rule
            fallback.convert_rule = self.convert_rule
            fallback.batch_size = self.batch_size
            fallback.rng = self.rng
            choice = fallback.choose_move(board, control=control, searchmoves=searchmoves, ponder=ponder)
            choice.notes.insert(0, f"{why}; playing with the fallback model "
                                   f"{os.path.basename(str(fallback.backend.weights_path))}")
        choice.time_s = self.clock() - start
        return choice

    @staticmethod
    def fallback(board: chess.Board) -> chess.Move | None:
        from neuralengine.engine.core import Engine

        return Engine.fallback(board)


def open_fallback(weights: str | os.PathLike[str] | None, backend: str, threads: int,
                  warm_up: bool) -> Engine | None:
    """The board model that plays what the text model cannot read: ``weights`` or the shipped model.

    ``None`` when it cannot be opened (or is itself a text model).
    """
    from neuralengine.engine.core import Engine
    from neuralengine.paths import default_weights
    from neuralengine.weights import WeightsError, read_metadata, weights_kind

    path = Path(weights) if weights is not None else default_weights()
    try:
        if weights_kind(read_metadata(path)) in TEXT_KINDS:
            return None
        return Engine.open(path, backend, threads, warm_up=warm_up)
    except (WeightsError, ValueError, OSError, ImportError):
        return None
