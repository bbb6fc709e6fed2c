"""Any LLM behind an OpenAI-compatible HTTP endpoint as a player with the engine's interface.

The game goes to the model as a PGN text: a few tags, a blank line and the
moves, ``1. e4 e5 2. Nf3``, ending right after the last move or after the
next move number (``3.``), never in whitespace (:func:`pgn_prompt`). This
is the form gpt-3.5-turbo-instruct was measured with.

:class:`HttpLlmPlayer` then finds its move in one of two ways:

* **Scoring** (mode ``score``; vLLM's completions endpoint). Every
  candidate move's text, with a space before it and the separator that
  follows it (``" O-O "`` and ``" O-O-O "`` differ; after Black's move the
  separator is the next move number, ``" 4."``), is appended to the prompt;
  all candidates go in ONE request (a list of prompts, ``echo``,
  ``logprobs``, ``max_tokens`` 0), and each move scores the sum of the
  log-probabilities of the tokens after the common prompt. The best sum is
  played (or a sample at the ``Temperature``).
* **Sampling** (mode ``sample``: llama.cpp's server, any completions
  endpoint; mode ``chat``: a chat-only API). The model continues the text;
  the first move of its answer is read as SAN (move numbers, whitespace and
  annotations are skipped) and checked with python-chess. An illegal or
  unreadable answer is asked again, at a rising temperature, up to
  ``tries`` times; then a legal move is played without the model: the
  shipped action-value model's choice when it is installed, else the
  engine's static fallback.

Mode ``auto`` first asks once whether the server echoes a prompt's
log-probabilities (one prompt, one new token), and switches to sampling for
good when the server shows it cannot score (an HTTP error other than a
timeout, overload or server fault, or an answer without the prompt's
log-probabilities).

:class:`LlmStats` counts what happened (moves scored, sampled, illegal
answers, fallbacks); the last note of every move is the running count,
``llm_http stats: moves 12, scored 0, sampled 11, illegal answers 3,
fallbacks 1, requests 15, failed requests 0``, which ``match`` adds up.

The API key is read from the ``LLMApiKey`` option or the environment
(``NEURALENGINE_LLM_API_KEY``, then ``OPENAI_API_KEY``) and goes nowhere
but the request header (see :mod:`neuralengine.textlm.http_client`).
"""

from __future__ import annotations

import math
import os
import random
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

import chess

from neuralengine.engine.rules import checkmates, static_fallback
from neuralengine.engine.scores import RULE_MATE, MoveChoice, MoveScore
from neuralengine.engine.timing import FINISH_RESERVE, SearchControl
from neuralengine.textlm.http_client import (
    DEFAULT_TIMEOUT,
    KEY_ENV,
    MODEL_ENV,
    CompletionsClient,
    LlmHttpError,
    first_env,
)

#: The kind named in descriptions and reports.
LLM_HTTP = "llm_http"

#: How the player gets its move.
MODES = ("auto", "score", "sample", "chat")

#: Requests per move when sampling, by default (the first one and the retries).
DEFAULT_TRIES = 4

#: The temperature added with each retry of a sampled move.
TEMPERATURE_STEP = 0.4

#: Tokens asked for when sampling: enough for a move number and a move (``12... Qxe8+``).
SAMPLE_TOKENS = 10

#: Seconds kept back from the deadline for choosing the fallback move and answering.
ANSWER_RESERVE = 0.05

#: Longest pause between two looks at the stop flag while a request runs (the wait ends as soon as
#: the answer comes).
STOP_POLL_SECONDS = 0.02

#: HTTP statuses that say nothing about what the server supports: try again on a later move.
TRANSIENT_STATUSES = (408, 409, 425, 429, 500, 502, 503, 504)

#: The tags before the moves. A world-championship header, as in the measurements of
#: gpt-3.5-turbo-instruct; the result is left open.
DEFAULT_TAGS: tuple[tuple[str, str], ...] = (
    ("Event", "FIDE World Championship Match"),
    ("Site", "London ENG"),
    ("Date", "2024.11.25"),
    ("Round", "6"),
    ("White", "Grandmaster, White"),
    ("Black", "Grandmaster, Black"),
    ("Result", "*"),
    ("WhiteElo", "2830"),
    ("BlackElo", "2805"),
    ("TimeControl", "7200/40:3600"),
)

#: Game results a model may write instead of a move.
RESULTS = ("1-0", "0-1", "1/2-1/2", "½-½", "*")

_MOVE_NUMBER = re.compile(r"^\d+\.+")
_SAN = re.compile(r"^(?:[KQRBN]?[a-h]?[1-8]?x?[a-h][1-8](?:=?[QRBNqrbn])?|[O0]-[O0](?:-[O0])?)[+#]?$")

#: System message of the chat mode.
CHAT_INSTRUCTION = ("You are a chess grandmaster. You are given a game in PGN. Answer with the next move only, "
                    "in standard algebraic notation (SAN), for example Nf3 or exd5 or O-O, and nothing else.")


# -- the text --------------------------------------------------------------------


def pgn_tags(root: chess.Board, tags: Sequence[tuple[str, str]] = DEFAULT_TAGS) -> str:
    """The tag lines of the prompt; a game that starts elsewhere than the start position gets
    ``[SetUp "1"]`` and ``[FEN ...]``."""
    lines = [f'[{name} "{value}"]' for name, value in tags]
    if root.fen() != chess.STARTING_FEN:
        lines += ['[SetUp "1"]', f'[FEN "{root.fen()}"]']
    return "\n".join(lines)


def movetext(root: chess.Board, moves: Iterable[chess.Move]) -> str:
    """The moves in PGN from ``root``, ending after the last move or after the next move number.

    ``1. e4 e5 2. Nf3`` (Black to move) or ``1. e4 e5 2.`` (White to move);
    a game that starts with Black to move begins ``12...``. The text never
    ends in whitespace.
    """
    board = root.copy(stack=False)
    parts: list[str] = []
    for move in moves:
        if board.turn == chess.WHITE:
            parts.append(f"{board.fullmove_number}.")
        elif not parts:
            parts.append(f"{board.fullmove_number}...")
        parts.append(board.san(move))
        board.push(move)
    if board.turn == chess.WHITE:
        parts.append(f"{board.fullmove_number}.")
    elif not parts:
        parts.append(f"{board.fullmove_number}...")
    return " ".join(parts)


def pgn_prompt(board: chess.Board, tags: Sequence[tuple[str, str]] = DEFAULT_TAGS) -> str:
    """The prompt for the side to move in ``board``: its game (from :meth:`chess.Board.root`) as PGN."""
    root = board.root()
    return pgn_tags(root, tags) + "\n\n" + movetext(root, board.move_stack)


def continuation(board: chess.Board, move: chess.Move) -> str:
    """What follows the prompt when ``move`` is played: a space, its SAN, and the separator after it.

    After White's move the separator is a space (Black's move follows);
    after Black's it is the next move number (``" 5."``). The separator
    tells ``O-O`` from ``O-O-O``.
    """
    san = board.san(move)
    sep = " " if board.turn == chess.WHITE else f" {board.fullmove_number + 1}."
    return f" {san}{sep}"


def read_move(board: chess.Board, text: str, *, search: bool = False) -> tuple[chess.Move | None, str]:
    """The move that ``text`` (a model's answer) starts with, and the word read as it.

    Move numbers (``3.``, ``3...``, also glued to the move: ``3.Nf3``),
    whitespace and annotations (``!``, ``?``) are skipped. A result
    (``1-0``) or anything that is not a legal SAN move gives ``None``.
    With ``search``, the first word that looks like SAN counts (for chat
    answers that wrap the move in words); otherwise the first word does.
    """
    for raw in text.replace("\n", " ").split():
        word = raw
        if _MOVE_NUMBER.match(word):
            word = _MOVE_NUMBER.sub("", word)
            if not word:
                continue
        if word in RESULTS:
            if search:
                continue
            return None, word
        word = word.strip("!?.,;:()[]*\"'`")
        word = word.rstrip("!?")
        if search and not _SAN.match(word):
            continue
        if not word:
            if search:
                continue
            return None, raw
        try:
            return board.parse_san(word), word
        except ValueError:
            return None, word
    return None, ""


# -- the scores ----------------------------------------------------------------


class ScoringUnsupported(Exception):
    """The server answered, but not with the prompt's log-probabilities."""


def continuation_logprob(choice: Any, prompt: str, start: int) -> float:
    """Sum of the log-probabilities of the tokens of ``prompt[start:]`` in one echoed ``choice``.

    Tokens are placed by ``text_offset`` (or, without it, by their lengths
    from the start of the text). A token that starts before ``start`` but
    reaches past it counts too; tokens at or after ``len(prompt)`` (a
    generated token) do not. Raises :class:`ScoringUnsupported` when the
    fields are missing or do not fit the prompt.
    """
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    if not isinstance(logprobs, dict):
        raise ScoringUnsupported("the answer has no log-probabilities")
    tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values) or not tokens:
        raise ScoringUnsupported("the answer has no token log-probabilities")
    offsets = logprobs.get("text_offset")
    if not isinstance(offsets, list) or len(offsets) != len(tokens):
        offsets, at = [], 0
        for token in tokens:
            offsets.append(at)
            at += len(str(token))
    total, counted, first, spelt = 0.0, 0, None, []
    for token, value, offset in zip(tokens, values, offsets):
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise ScoringUnsupported("a token offset is not a number")
        end = offset + len(str(token))
        if end <= start or offset >= len(prompt):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ScoringUnsupported("a move token has no log-probability (was the prompt echoed?)")
        total += float(value)
        counted += 1
        first = offset if first is None else first
        spelt.append(str(token))
    # The tokens counted must spell the end of the prompt: a server that answers with the log-probabilities of
    # generated tokens only (and offsets that do not fit) would otherwise score every move alike.
    if not counted or first is None or prompt[first:] != "".join(spelt):
        raise ScoringUnsupported("the echoed tokens do not spell the prompt")
    return total


def echoes_prompt(choice: Any, prompt: str) -> bool:
    """Whether one answer to ``prompt`` holds the log-probability of every prompt token after the first."""
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    tokens = logprobs.get("tokens") if isinstance(logprobs, dict) else None
    if not isinstance(tokens, list) or len(tokens) < 2:
        return False
    try:
        continuation_logprob(choice, prompt, len(str(tokens[0])))
    except ScoringUnsupported:
        return False
    return True


def probabilities(logprobs: Sequence[float]) -> list[float]:
    """``softmax(logprobs)``: the candidates' share of the probability the model gives them together."""
    top = max(logprobs)
    weights = [math.exp(v - top) for v in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


# -- the player ------------------------------------------------------------------


@dataclass
class LlmStats:
    """What the player did over its moves."""

    moves: int = 0
    #: Moves chosen from the log-probabilities of every candidate.
    scored: int = 0
    #: Moves read from a sampled answer.
    sampled: int = 0
    #: Sampled answers that were not a legal move (each retry counts).
    illegal_answers: int = 0
    #: Moves played without the model (no legal answer, or no answer in time).
    fallbacks: int = 0
    #: Requests sent, and requests that failed (timeout, HTTP error, garbage).
    requests: int = 0
    failed_requests: int = 0

    def summary(self) -> str:
        """``moves 3, scored 2, ...``: the counts as the ``stats:`` note gives them (``match`` reads it)."""
        return ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in asdict(self).items())


@dataclass
class LlmSettings:
    """The settings the UCI options (or the caller) give; empty strings fall back on the environment."""

    model: str = ""
    api_key: str = ""
    mode: str = "auto"
    timeout: float = DEFAULT_TIMEOUT
    tries: int = DEFAULT_TRIES

    def __repr__(self) -> str:  # the key stays out of any printed form of the settings
        return (f"LlmSettings(model={self.model!r}, api_key={'***' if self.api_key else ''!r}, "
                f"mode={self.mode!r}, timeout={self.timeout!r}, tries={self.tries!r})")


class HttpLlmPlayer:
    """Chooses moves by asking a language model behind an OpenAI-compatible endpoint.

    It has the interface the UCI search and the tools use of
    :class:`~neuralengine.engine.Engine`: :meth:`choose_move`,
    :meth:`describe`, :meth:`predicted_seconds`, and the settings
    ``batch_size``, ``temperature``, ``temperature_moves``, ``mate_rule``,
    ``convert_rule`` and ``rng``; :meth:`apply_options` reads its own UCI
    options (``LLMModel``, ``LLMApiKey``, ``LLMMode``, ``LLMTimeout``,
    ``LLMTries``).

    :param url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
    :param settings: model, key, mode, timeout, tries (empty model and key
        are taken from the environment).
    :param fallback: the engine that plays the moves the model does not
        give (``None``: the static fallback move); :meth:`open` opens the
        shipped model for it.
    :param environ: where the environment is read (default :data:`os.environ`).
    """

    kind = LLM_HTTP

    def __init__(self, url: str, settings: LlmSettings | None = None, *, fallback: Any = None,
                 environ: dict[str, str] | None = None, clock: Callable[[], float] = time.monotonic,
                 tags: Sequence[tuple[str, str]] = DEFAULT_TAGS) -> None:
        self.environ = dict(os.environ) if environ is None else environ
        self.settings = settings or LlmSettings()
        self.client = CompletionsClient(url, timeout=self.settings.timeout)
        self.clock = clock
        self.tags = tuple(tags)
        self.fallback_engine = fallback
        #: What reports ask for ``describe()`` and ``device`` (the backends' interface).
        self.backend = self.client
        self.batch_size = 256
        self.temperature = 0.0
        self.temperature_moves = 0
        self.mate_rule = True
        self.convert_rule = True
        self.rng = random.Random()
        self.stats = LlmStats()
        #: ``False`` once the server has shown it cannot score (mode ``auto``), and why.
        self.can_score: bool | None = None
        self.no_scoring_reason = ""
        #: ``max_tokens`` of a scoring request: 0, or 1 for a server that refuses 0.
        self._echo_tokens = 0
        #: The model name asked of ``/models`` when none is set, once found.
        self._listed_model: str | None = None
        #: Seconds of the last requests (the latest first), for :meth:`predicted_seconds`.
        self._latencies: list[float] = []
        self._apply_settings()

    @classmethod
    def open(cls, url: str, backend: str = "auto", threads: int = 1, warm_up: bool = True,
             fallback_weights: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None,
             settings: LlmSettings | None = None, seed: int | None = None,
             **engine_settings: Any) -> "HttpLlmPlayer":
        """The player of ``url``, with the fallback model (default: the shipped weights) opened with
        ``backend`` and ``threads``.

        Nothing is sent to the server yet: a server that is down costs the
        moves it cannot give, not the load. ``engine_settings`` are the
        engine's (``mate_rule=False``, ...); an unknown one raises
        ``TypeError`` as :class:`~neuralengine.engine.Engine` would.
        """
        unknown = set(engine_settings) - set(ENGINE_SETTINGS)
        if unknown:
            raise TypeError(f"unexpected setting {sorted(unknown)[0]!r}")
        from neuralengine.textlm.player import open_fallback

        player = cls(url, settings, environ=environ,
                     fallback=open_fallback(fallback_weights, backend, threads, warm_up))
        for name, value in engine_settings.items():
            setattr(player, name, value)
        if seed is not None:
            player.rng = random.Random(seed)
        return player

    @staticmethod
    def fallback(board: chess.Board) -> chess.Move | None:
        """A legal move without any model (the engine's static rule)."""
        from neuralengine.engine.core import Engine

        return Engine.fallback(board)

    # -- settings ----------------------------------------------------------------

    def _apply_settings(self) -> None:
        s = self.settings
        if s.mode not in MODES:
            raise ValueError(f"LLM mode must be one of {', '.join(MODES)}, not {s.mode!r}")
        self.client.api_key = s.api_key or first_env(KEY_ENV, self.environ)
        self.client.timeout = max(0.1, float(s.timeout))

    def apply_options(self, options: dict[str, Any]) -> None:
        """Take the LLM options from UCI option values keyed by lower-case name (missing ones stay)."""
        s = self.settings
        model = str(options.get("llmmodel", s.model))
        mode = str(options.get("llmmode", s.mode)).lower()
        if mode != s.mode:
            self.can_score, self.no_scoring_reason = None, ""
        self.settings = LlmSettings(model=model, api_key=str(options.get("llmapikey", s.api_key)), mode=mode,
                                    timeout=float(options.get("llmtimeout", s.timeout)),
                                    tries=int(options.get("llmtries", s.tries)))
        self._apply_settings()

    def model_name(self, timeout: float | None = None) -> str:
        """The model asked for: the setting, the environment, else the first the server lists (``""``: none)."""
        name = self.settings.model or first_env(MODEL_ENV, self.environ)
        if name:
            return name
        if self._listed_model is None:
            try:
                names = self.client.model_names(timeout)
                self._listed_model = names[0] if names else ""
            except LlmHttpError as exc:
                if exc.kind == "transport" or exc.status in TRANSIENT_STATUSES:
                    return ""  # asked again on the next request
                self._listed_model = ""  # no list here: requests go without a name (llama.cpp needs none)
            finally:
                self._count_requests()
        return self._listed_model

    def describe(self) -> str:
        """One line: the endpoint, the model and the mode (never the key)."""
        name = self.settings.model or first_env(MODEL_ENV, self.environ) or self._listed_model or "the server's model"
        mode = self.settings.mode
        if mode == "auto" and self.can_score is False:
            mode = "auto (sampling)"
        return f"{self.client.describe()}: {LLM_HTTP}, model {name}, mode {mode}"

    # -- time ------------------------------------------------------------------

    def predicted_seconds(self, board: chess.Board) -> float | None:
        """The median of the last requests' times (``None`` before any), plus the finish."""
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        return ordered[len(ordered) // 2] + FINISH_RESERVE

    def _time_left(self, control: SearchControl) -> float | None:
        """Seconds a request may take now, or ``None`` for the configured timeout only."""
        remaining = control.remaining()
        return None if remaining is None else remaining - ANSWER_RESERVE

    def _post(self, path: str, payload: dict[str, Any], control: SearchControl) -> Any:
        """One request within the move's time; ``stop`` ends the wait at once.

        The request runs on its own thread, so that ``stop`` (a GUI's stop
        button, the end of ``go infinite``) is answered without waiting for
        the server; an abandoned request ends by its own timeout.
        """
        limit = self._time_left(control)
        if control.stop.is_set():
            raise LlmHttpError("stopped before the request", "transport")
        start = self.clock()
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def send() -> None:
            try:
                outcome["answer"] = self.client.request(path, payload, limit)
            except LlmHttpError as exc:
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=send, name="neuralengine-llm-request", daemon=True).start()
        try:
            while not done.wait(STOP_POLL_SECONDS):
                if control.stop.is_set():
                    raise LlmHttpError("stopped while waiting for the server", "transport")
        finally:
            self._latencies = ([self.clock() - start] + self._latencies)[:9]
            self._count_requests()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["answer"]

    def _count_requests(self) -> None:
        self.stats.requests = self.client.requests
        self.stats.failed_requests = self.client.failures

    # -- choosing a move -----------------------------------------------------------

    def effective_temperature(self, board: chess.Board) -> float:
        if self.temperature <= 0:
            return 0.0
        if self.temperature_moves and board.fullmove_number > self.temperature_moves:
            return 0.0
        return self.temperature

    def choose_move(self, board: chess.Board, *, control: SearchControl | None = None, nodes: int | None = None,
                    searchmoves: Iterable[chess.Move] | None = None, ponder: bool = False) -> MoveChoice:
        """Choose a move for ``board``, whose move stack (from :meth:`chess.Board.root`) is the game.

        ``nodes`` has no meaning here; ``ponder`` is not offered (it would
        cost a second request). The result's ``notes`` say how the move was
        found and what the player has counted so far.
        """
        del nodes, ponder
        start = self.clock()
        control = control or SearchControl()
        moves = list(board.legal_moves)
        if searchmoves is not None:
            wanted = set(searchmoves)
            moves = [m for m in moves if m in wanted] or moves
        if not moves:
            return MoveChoice(None, time_s=self.clock() - start)
        notes: list[str] = []
        choice = self._mate_choice(board, moves)
        if choice is None:
            choice = self._model_choice(board, moves, control, notes)
        if choice is None:
            choice = self._fallback_choice(board, moves, control, notes)
        self.stats.moves += 1
        self._count_requests()
        notes.append(f"{LLM_HTTP} stats: {self.stats.summary()}")
        choice.notes = notes
        choice.time_s = self.clock() - start
        return choice

    def _mate_choice(self, board: chess.Board, moves: list[chess.Move]) -> MoveChoice | None:
        """The mate rule: a move that checkmates at once is played without asking (when the rule is on)."""
        if not self.mate_rule:
            return None
        for move in moves:
            if checkmates(board, move):
                from neuralengine.encoding import move_action

                return MoveChoice(move, ranked=[MoveScore(move, move_action(board, move), 1.0, None, RULE_MATE)])
        return None

    def _model_choice(self, board: chess.Board, moves: list[chess.Move], control: SearchControl,
                      notes: list[str]) -> MoveChoice | None:
        mode = self.settings.mode
        if mode in ("score", "auto") and self.can_score is not False:
            try:
                if mode == "auto" and self.can_score is None:
                    self._probe(board, control)
                choice = self._scored_choice(board, moves, control)
                self.can_score = True
                self.stats.scored += 1
                return choice
            except ScoringUnsupported as exc:
                if mode == "score":
                    notes.append(f"{LLM_HTTP}: cannot score the moves: {exc}")
                    return None
                self.can_score, self.no_scoring_reason = False, str(exc)
                notes.append(f"{LLM_HTTP}: the server does not score prompts ({exc}); sampling from now on")
            except LlmHttpError as exc:
                notes.append(f"{LLM_HTTP}: scoring request failed: {exc}")
                return None
        return self._sampled_choice(board, moves, control, notes, chat=mode == "chat")

    def _probe(self, board: chess.Board, control: SearchControl) -> None:
        """Mode ``auto``, before the first scoring: does the server echo the prompt's log-probabilities?

        One prompt (this position's) with ``echo``, ``logprobs`` and ``max_tokens`` 1, which every
        server can answer quickly. Some servers read ``max_tokens`` 0 as "no limit"; and some answer
        ``echo`` with the generated token's log-probability alone. Neither is sent the batch.
        Raises :class:`ScoringUnsupported`, or :class:`LlmHttpError` when the server could not answer.
        """
        prompt = pgn_prompt(board, self.tags)
        payload: dict[str, Any] = {"prompt": prompt, "max_tokens": 1, "echo": True, "logprobs": 1,
                                   "temperature": 0.0}
        name = self.model_name(self._time_left(control))
        if name:
            payload["model"] = name
        try:
            answer = self._post("/completions", payload, control)
        except LlmHttpError as exc:
            if exc.kind == "garbage" or (exc.kind == "status" and exc.status not in TRANSIENT_STATUSES):
                raise ScoringUnsupported(str(exc)) from None
            raise
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or not choices or not echoes_prompt(choices[0], prompt):
            raise ScoringUnsupported("the answer to an echo request has no log-probabilities of the prompt")

    def _scored_choice(self, board: chess.Board, moves: list[chess.Move], control: SearchControl) -> MoveChoice:
        """Every candidate's log-probability from ONE request, and the move they choose.

        Raises :class:`ScoringUnsupported` when the server cannot score
        (an HTTP error that is not transient, or an answer without the
        fields), :class:`LlmHttpError` on a timeout or a transient error.
        """
        prompt = pgn_prompt(board, self.tags)
        texts = [prompt + continuation(board, move) for move in moves]
        payload: dict[str, Any] = {"prompt": texts, "max_tokens": self._echo_tokens, "echo": True, "logprobs": 1,
                                   "temperature": 0.0}
        name = self.model_name(self._time_left(control))
        if name:
            payload["model"] = name
        try:
            try:
                answer = self._post("/completions", payload, control)
            except LlmHttpError as exc:
                if exc.kind != "status" or exc.status not in (400, 422) or self._echo_tokens:
                    raise
                # Some servers want at least one new token; it comes after the prompt and is not counted.
                payload["max_tokens"] = 1
                answer = self._post("/completions", payload, control)
                self._echo_tokens = 1
        except LlmHttpError as exc:
            if exc.kind == "garbage" or (exc.kind == "status" and exc.status not in TRANSIENT_STATUSES):
                raise ScoringUnsupported(str(exc)) from None
            raise
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or len(choices) != len(texts):
            raise ScoringUnsupported(f"the answer has {len(choices) if isinstance(choices, list) else 'no'} "
                                     f"choices for {len(texts)} prompts")
        by_index: dict[int, Any] = {}
        for position, item in enumerate(choices):
            index = item.get("index", position) if isinstance(item, dict) else position
            if not isinstance(index, int) or not 0 <= index < len(texts) or index in by_index:
                raise ScoringUnsupported("the answer's choices do not match the prompts one to one")
            by_index[index] = item
        logprobs = [continuation_logprob(by_index[i], texts[i], len(prompt)) for i in range(len(texts))]
        return self._rank(board, moves, logprobs)

    def _rank(self, board: chess.Board, moves: list[chess.Move], logprobs: list[float]) -> MoveChoice:
        """The candidates ranked by log-probability (ties: the order of ``moves``); a sample at a temperature."""
        from neuralengine.encoding import move_action

        shares = probabilities(logprobs)
        order = sorted(range(len(moves)), key=lambda i: -logprobs[i])
        ranked = [MoveScore(moves[i], move_action(board, moves[i]), shares[i], shares[i], None) for i in order]
        temperature = self.effective_temperature(board)
        if temperature > 0:
            top = max(logprobs)
            weights = [math.exp((logprobs[i] - top) / temperature) for i in order]
            pick = self.rng.choices(range(len(order)), weights=weights, k=1)[0]
            ranked.insert(0, ranked.pop(pick))
        return MoveChoice(ranked[0].move, ranked=ranked, nodes=len(moves), temperature=temperature)

    def _sampled_choice(self, board: chess.Board, moves: list[chess.Move], control: SearchControl,
                        notes: list[str], chat: bool) -> MoveChoice | None:
        """Ask for a continuation until it starts with a legal candidate, at most ``tries`` times."""
        prompt = pgn_prompt(board, self.tags)
        allowed = set(moves)
        wrong: list[str] = []
        for attempt in range(max(1, self.settings.tries)):
            temperature = self.effective_temperature(board) + TEMPERATURE_STEP * attempt
            try:
                text = self._sample(prompt, temperature, control, chat)
            except LlmHttpError as exc:
                notes.append(f"{LLM_HTTP}: request failed: {exc}")
                break
            move, word = read_move(board, text, search=chat)
            if move is not None and move in allowed:
                self.stats.sampled += 1
                if wrong:
                    notes.append(f"{LLM_HTTP}: illegal answers before {board.san(move)}: {', '.join(wrong)}")
                return MoveChoice(move, nodes=attempt + 1, temperature=temperature)
            self.stats.illegal_answers += 1
            wrong.append(_quote(word or text))
        if wrong:
            notes.append(f"{LLM_HTTP}: no legal move in {len(wrong)} answers ({', '.join(wrong)})")
        return None

    def _sample(self, prompt: str, temperature: float, control: SearchControl, chat: bool) -> str:
        """One sampled continuation of ``prompt`` (its text)."""
        name = self.model_name(self._time_left(control))
        payload: dict[str, Any] = {"max_tokens": SAMPLE_TOKENS, "temperature": temperature}
        if name:
            payload["model"] = name
        if chat:
            payload["messages"] = [{"role": "system", "content": CHAT_INSTRUCTION},
                                   {"role": "user", "content": prompt}]
            answer = self._post("/chat/completions", payload, control)
        else:
            payload["prompt"] = prompt
            payload["stop"] = ["\n"]
            answer = self._post("/completions", payload, control)
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
        except (KeyError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            self.client.failures += 1
            raise LlmHttpError(f"the answer of {self.client.describe()} holds no completion text", "garbage")
        return text

    def _fallback_choice(self, board: chess.Board, moves: list[chess.Move], control: SearchControl,
                         notes: list[str]) -> MoveChoice:
        """A legal move without the language model: the fallback engine's, else the static one."""
        self.stats.fallbacks += 1
        engine = self.fallback_engine
        choice = None
        if engine is not None:
            try:
                choice = engine.choose_move(board, control=control, searchmoves=moves)
            except Exception:  # the fallback of the fallback must not fail
                choice = None
        if choice is None or choice.bestmove is None:
            choice = MoveChoice(static_fallback(board, moves))
            how = "the static fallback"
        else:
            how = f"the fallback model {engine.describe().split(':')[0]}"
        choice.fallback = None
        notes.append(f"{LLM_HTTP}: no move from the language model; playing {board.san(choice.bestmove)} "
                     f"chosen by {how}")
        return choice


def _quote(text: str) -> str:
    """A model's answer, short and on one line, for a note."""
    text = " ".join(text.split())
    return repr(text[:24] + ("..." if len(text) > 24 else ""))


#: Engine settings :meth:`HttpLlmPlayer.open` takes as keywords, as :meth:`Engine.open` does.
ENGINE_SETTINGS = ("batch_size", "temperature", "temperature_moves", "mate_rule", "convert_rule", "clock")


def stats_dict(player: HttpLlmPlayer) -> dict[str, int]:
    """The player's counts as a plain dictionary (for JSON reports)."""
    return asdict(player.stats)
