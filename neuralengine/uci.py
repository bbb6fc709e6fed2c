"""The UCI protocol on stdin/stdout.

``neuralengine`` (or ``neuralengine uci``) runs this loop; chess GUIs,
cutechess-cli, fastchess and lichess-bot start it directly.

Design:

* ``uci`` is answered from the standard library alone. NumPy, python-chess,
  ONNX Runtime and the weights are imported and loaded afterwards on a
  background thread; ``isready`` waits for them.
* A reader thread stamps each input line with its arrival time, and the
  main thread handles the lines in order (:func:`serve`): a ``go`` counts its
  time from its arrival.
* Searches run on a worker thread, so ``stop``, ``ponderhit``, ``isready``
  and ``quit`` are answered while the engine thinks. One search runs at a
  time, and each ``go`` gets exactly one ``bestmove``.
* A search waits for the weights only as long as its time allows; new
  weights replace the loaded ones only once they have loaded.
* Every input line is handled on its own: a bad line gets an
  ``info string`` that explains the problem, and the engine keeps its last
  valid state. Input is read as bytes (invalid UTF-8 is replaced, overlong
  lines are skipped), stdout carries protocol lines only and is flushed after
  each one, and debug logs go to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable

from neuralengine import __version__

if TYPE_CHECKING:
    import chess

    from neuralengine.engine import Engine, MoveChoice

ENGINE_NAME = f"neuralengine {__version__}"
ENGINE_AUTHOR = "the neuralengine authors"

#: Backend names (the same as :data:`neuralengine.backends.BACKENDS`, written
#: out here so that ``uci`` needs no NumPy import).
BACKEND_CHOICES = ("auto", "onnx", "torch-cpu", "torch-cuda")
#: The start of the ``info string`` of a move played without the network
#: (``neuralengine puzzles`` looks for it to fail a run whose model did not load).
NO_NETWORK = "no network available"

#: Longest input line handled; longer lines are skipped with a message.
MAX_LINE_BYTES = 1 << 20

#: Longest piece of user input echoed back in an ``info string``.
ECHO_CHARS = 60


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


@dataclass
class Option:
    """One UCI option: its declaration and its current value."""

    name: str
    type: str  # check, spin, combo, string, button
    default: Any
    min: int | None = None
    max: int | None = None
    choices: tuple[str, ...] = ()
    #: Extra check for string options: returns an error message or ``None``.
    validate: Callable[[str], str | None] | None = None
    value: Any = None

    def __post_init__(self) -> None:
        self.value = self.default

    def declaration(self) -> str:
        """The ``option name … type …`` line."""
        line = f"option name {self.name} type {self.type}"
        if self.type == "check":
            line += f" default {'true' if self.default else 'false'}"
        elif self.type == "spin":
            line += f" default {self.default} min {self.min} max {self.max}"
        elif self.type == "combo":
            line += f" default {self.default}" + "".join(f" var {c}" for c in self.choices)
        elif self.type == "string":
            line += f" default {self.default if self.default != '' else '<empty>'}"
        return line

    def parse(self, raw: str | None) -> Any:
        """The value of ``raw`` for this option; raises ``ValueError`` with a message."""
        text = "" if raw is None else raw.strip()
        if self.type == "button":
            return True
        if self.type == "check":
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            raise ValueError(f"{self.name} takes true or false, not {_echo(text)}")
        if self.type == "spin":
            try:
                number = int(text)
            except ValueError:
                raise ValueError(f"{self.name} takes an integer, not {_echo(text)}") from None
            assert self.min is not None and self.max is not None
            if not self.min <= number <= self.max:
                raise ValueError(f"{self.name} must be between {self.min} and {self.max}, not {number}")
            return number
        if self.type == "combo":
            for choice in self.choices:
                if choice.lower() == text.lower():
                    return choice
            raise ValueError(f"{self.name} takes one of {', '.join(self.choices)}, not {_echo(text)}")
        if text == "<empty>":
            text = ""
        if self.validate is not None:
            problem = self.validate(text)
            if problem:
                raise ValueError(problem)
        return text


#: Highest accepted ``Temperature``.
MAX_TEMPERATURE = 100.0


def _check_temperature(text: str) -> str | None:
    try:
        value = float(text)
    except ValueError:
        return f"Temperature takes a number such as 0 or 0.005, not {_echo(text)}"
    if not math.isfinite(value) or not 0.0 <= value <= MAX_TEMPERATURE:
        return f"Temperature must be between 0 and {MAX_TEMPERATURE:g}, not {_echo(text)}"
    return None


def default_weights_path() -> str:
    from neuralengine.paths import default_weights

    return str(default_weights())


def make_options(weights: str | None = None, backend: str = "auto", threads: int = 1) -> dict[str, Option]:
    """The option table, keyed by lower-case name."""
    options = [
        Option("WeightsFile", "string", weights if weights is not None else default_weights_path()),
        Option("Backend", "combo", backend, choices=BACKEND_CHOICES),
        Option("Threads", "spin", threads, 1, 256),
        Option("BatchSize", "spin", 256, 1, 4096),
        Option("MultiPV", "spin", 1, 1, 256),
        Option("Move Overhead", "spin", 30, 0, 10000),
        Option("Temperature", "string", "0", validate=_check_temperature),
        Option("TemperatureMoves", "spin", 0, 0, 10000),
        Option("Seed", "spin", 0, 0, 2**31 - 1),
        Option("MateRule", "check", True),
        Option("ConvertRule", "check", True),
        Option("Ponder", "check", False),
        Option("UCI_ShowWDL", "check", False),
        Option("UCI_Chess960", "check", False),
    ]
    return {o.name.lower(): o for o in options}


#: Options whose change needs the weights to be loaded again.
LOAD_OPTIONS = ("weightsfile", "backend", "threads")


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def _echo(text: str) -> str:
    """User input made safe to quote in one protocol line."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    if len(text) > ECHO_CHARS:
        text = text[:ECHO_CHARS] + f"... ({len(text)} characters)"
    return repr(text)


class Output:
    """Writes protocol lines to stdout under a lock, flushing each one."""

    def __init__(self, stream: BinaryIO, log: Any = None) -> None:
        self.stream = stream
        self.log_stream = log
        self.lock = threading.Lock()
        self.debug = False
        self.broken = False

    def send(self, line: str) -> None:
        with self.lock:
            if self.broken:
                return
            try:
                self.stream.write(line.encode("utf-8", "replace") + b"\n")
                self.stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.broken = True
        if self.debug:
            self.log(f"<< {line}")

    def close(self) -> None:
        """Write nothing more (after ``quit``)."""
        with self.lock:
            self.broken = True

    def info(self, text: str) -> None:
        """An ``info string`` line (one line, whatever ``text`` holds)."""
        self.send("info string " + " ".join(text.split()))

    def log(self, text: str) -> None:
        """A debug line on stderr."""
        stream = self.log_stream if self.log_stream is not None else sys.stderr
        try:
            stream.write(f"[neuralengine {time.monotonic():.3f}] {text}\n")
            stream.flush()
        except (OSError, ValueError):
            pass


# --------------------------------------------------------------------------
# Loading the weights in the background
# --------------------------------------------------------------------------


LoadKey = tuple[str, str, int]

#: Longest pause of a waiting thread between two looks at the clock. A wait
#: ends as soon as what it waits for happens (the loader notifies, and so do
#: ``stop`` and ``ponderhit``); the pause only bounds how late a deadline is
#: noticed.
POLL_SECONDS = 0.02


class Loader:
    """Loads the engine for the wanted (weights, backend, threads) on a thread.

    :meth:`want` records the wanted key and starts the thread if it is idle.
    The thread first imports the engine's modules (python-chess, NumPy: a
    search needs them for its time budget and its fallback move), then loads
    the key, and loads again if the key changed meanwhile. A new engine
    replaces the current one only once it has loaded: when a load fails, the
    previous engine stays in use and :attr:`error` says why. (For a moment
    both models are in memory.)

    :param opener: ``opener(path, backend, threads)`` returns an engine or
        raises with a message; the default is :meth:`Engine.open`.
    :param clock: the time source of the deadlines given to :meth:`wait_for`.
    """

    def __init__(self, output: Output, opener: Callable[[str, str, int], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.output = output
        self.opener = opener
        self.clock = clock
        self.cond = threading.Condition()
        self.wanted: LoadKey | None = None
        self.loaded: LoadKey | None = None
        #: The engine searches use: the last one that loaded.
        self.engine: Engine | None = None
        #: Why the load of :attr:`loaded` failed, or ``None``.
        self.error: str | None = None
        #: Engines loaded so far; a search reseeds its engine when this changes.
        self.generation = 0
        #: ``None`` until the engine's modules are imported, then ``True``, or why the import failed.
        self.modules: bool | str | None = None
        self.busy = False
        self.announced = True

    def want(self, key: LoadKey) -> None:
        """Ask for ``key``; a load that failed is tried again (the file may have been fixed)."""
        with self.cond:
            self.wanted = key
            if self.busy:
                return
            if self.loaded == key:
                if self.error is None:
                    return
                self.loaded = None
            self.busy = True
        threading.Thread(target=self._run, name="neuralengine-loader", daemon=True).start()

    def _run(self) -> None:
        self._import_modules()
        while True:
            with self.cond:
                key = self.wanted
                if key is None or key == self.loaded:
                    self.busy = False
                    self.cond.notify_all()
                    return
            engine, error = self._load(key)
            with self.cond:
                if engine is not None:
                    self.engine = engine
                    self.generation += 1
                self.error, self.loaded = error, key
                self.announced = False
                self.cond.notify_all()

    def _import_modules(self) -> None:
        with self.cond:
            if self.modules is True:
                return
        try:
            import chess  # noqa: F401

            import neuralengine.engine  # noqa: F401
            state: bool | str = True
        except Exception as exc:  # a broken installation still gets legal moves
            state = f"{type(exc).__name__}: {exc}"
        with self.cond:
            self.modules = state
            self.cond.notify_all()

    def _load(self, key: LoadKey) -> tuple[Engine | None, str | None]:
        path, backend, threads = key
        started = time.monotonic()
        if self.output.debug:
            self.output.log(f"loading {path} with backend {backend}, {threads} threads")
        try:
            if self.opener is not None:
                engine = self.opener(path, backend, threads)
            else:
                from neuralengine.engine import Engine

                engine = Engine.open(os.path.expanduser(path), backend, threads)
        except Exception as exc:  # every failure becomes a message, never a crash
            message = str(exc) or type(exc).__name__
            if not path:
                message = "no weights file set (setoption name WeightsFile value PATH)"
            return None, message
        if self.output.debug:
            self.output.log(f"loaded in {time.monotonic() - started:.2f}s: {engine.describe()}")
        return engine, None

    def current(self) -> bool:
        """Whether the wanted key has been loaded (or has failed); call with :attr:`cond` held."""
        return not self.busy and self.loaded == self.wanted

    def ready(self) -> bool:
        with self.cond:
            return self.current()

    def wait_for(self, ready: Callable[[], bool], deadline: Callable[[], float | None] = lambda: None,
                 stop: threading.Event | None = None) -> bool:
        """Wait until ``ready()`` (called with :attr:`cond` held) is true.

        Returns ``False`` when ``stop`` is set, or the time ``deadline()``
        returns has come, first. ``deadline`` is asked again at every wake-up,
        so it may move (``ponderhit``) or appear while the wait runs.
        """
        with self.cond:
            while not ready():
                if stop is not None and stop.is_set():
                    return False
                timeout = POLL_SECONDS
                end = deadline()
                if end is not None:
                    left = end - self.clock()
                    if left <= 0:
                        return False
                    timeout = min(timeout, left)
                self.cond.wait(timeout)
            return True

    def wait(self) -> None:
        """Wait until the wanted engine is loaded or has failed."""
        self.wait_for(self.current)

    def poke(self) -> None:
        """Wake the waiting threads, so that they look at their stop flag and deadline again."""
        with self.cond:
            self.cond.notify_all()


# --------------------------------------------------------------------------
# Searches
# --------------------------------------------------------------------------


@dataclass
class GoParams:
    """The parsed ``go`` command (times in milliseconds, as sent)."""

    wtime: int | None = None
    btime: int | None = None
    winc: int = 0
    binc: int = 0
    movestogo: int | None = None
    movetime: int | None = None
    nodes: int | None = None
    depth: int | None = None
    mate: int | None = None
    infinite: bool = False
    ponder: bool = False
    searchmoves: list[str] = field(default_factory=list)


GO_INT_KEYS = ("wtime", "btime", "winc", "binc", "movestogo", "movetime", "nodes", "depth", "mate")
GO_KEYWORDS = set(GO_INT_KEYS) | {"infinite", "ponder", "searchmoves"}


def parse_go(tokens: list[str], warn: Callable[[str], None]) -> GoParams:
    """Parse the words after ``go``; bad words are reported through ``warn`` and skipped."""
    params = GoParams()
    i = 0
    while i < len(tokens):
        word = tokens[i].lower()
        if word in GO_INT_KEYS:
            if i + 1 >= len(tokens):
                warn(f"go {word} needs a number")
                i += 1
                continue
            try:
                value = int(tokens[i + 1])
            except ValueError:
                warn(f"go {word} needs a number, not {_echo(tokens[i + 1])}; ignored")
                i += 2
                continue
            if word in ("winc", "binc"):
                value = max(value, 0)
            setattr(params, word, value)
            i += 2
        elif word == "infinite":
            params.infinite = True
            i += 1
        elif word == "ponder":
            params.ponder = True
            i += 1
        elif word == "searchmoves":
            i += 1
            while i < len(tokens) and tokens[i].lower() not in GO_KEYWORDS:
                params.searchmoves.append(tokens[i])
                i += 1
        else:
            warn(f"unknown go parameter {_echo(tokens[i])} ignored")
            i += 1
    return params


#: Seconds kept before the deadline when waiting for the weights: enough to
#: play the fallback move and print it.
LOAD_MARGIN = 0.01


def provisional_budget(white: bool, params: GoParams) -> float | None:
    """A time limit that is safe before the engine's time management is imported.

    Half of ``movetime``, and half of the clock's default share: never more
    than :func:`neuralengine.engine.time_budget` would allow, give or take
    the ``Move Overhead``. It bounds only the wait for the engine's modules
    right after start-up; ``None`` without a limit.
    """
    limits = []
    if params.movetime is not None:
        limits.append(max(params.movetime, 0) / 2000.0)
    clock = params.wtime if white else params.btime
    if clock is not None:
        limits.append(max(clock, 0) / 1000.0 / 60.0)
    return min(limits) if limits else None


def parse_move(board: chess.Board, text: str) -> chess.Move:
    """``text`` as a legal move of ``board`` (raises ``ValueError``).

    The promotion letter may be upper case (``e7e8Q``), as Stockfish accepts.
    """
    if len(text) == 5:
        text = text[:4] + text[4].lower()
    return board.parse_uci(text)


class SearchJob(threading.Thread):
    """One ``go``: finds a move within the time and prints ``info`` and exactly one ``bestmove``.

    The thread waits for the engine (its modules, then the weights) only as
    long as its time allows, and plays a move without the network otherwise.
    The reader thread may call :meth:`stop` and :meth:`ponderhit` at any
    time. The time of the move runs from ``started``, when the ``go`` line
    arrived, or from the ``ponderhit``.
    """

    def __init__(self, server: "UciServer", board: chess.Board, params: GoParams, started: float) -> None:
        super().__init__(name="neuralengine-search", daemon=True)
        self.server = server
        self.clock = server.clock
        #: Option values when the search started (later setoption calls do not change it).
        self.options = {name: opt.value for name, opt in server.options.items()}
        self.board = board
        #: The position as it was, for a fallback move should the search fail half-way.
        self.root = board.copy(stack=False)
        self.params = params
        self.started = started
        #: When the clock started for this move: the ``go``, or the ``ponderhit``.
        self.clock_start = started
        #: Guards the deadline and the ponder state, which ``ponderhit`` changes.
        self.lock = threading.Lock()
        #: Set by ``stop``; it is the stop flag of the engine's search too.
        self.stop_event = threading.Event()
        #: Set when ``bestmove`` may be printed: from the start for a timed ``go``;
        #: for ``go ponder`` on ``ponderhit`` or ``stop``; for ``go infinite`` on ``stop`` only.
        self.release = threading.Event()
        if not (params.ponder or params.infinite):
            self.release.set()
        self.pondering = params.ponder
        #: Whether a ``ponderhit`` turned this ponder search into the real one.
        self.hit = False
        #: The search's info lines printed while it was still pondering. GUIs and
        #: python-chess (so lichess-bot) drop what a ponder search prints before
        #: ``ponderhit``, so these are printed again before the ``bestmove``.
        self.pondered_report: list[str] = []
        #: The engine's :class:`~neuralengine.engine.SearchControl`, once its module is imported.
        self.control: Any = None
        #: Predicted seconds of a complete search, once the engine is known (the time-trouble rule).
        self.needed: float | None = None
        #: When the move must be chosen (on :attr:`clock`), or ``None`` for no limit.
        self.deadline: float | None = None
        self.answered = threading.Event()  # set just before bestmove is written
        self.done = threading.Event()
        with self.lock:
            self._set_deadline()

    def option(self, name: str) -> Any:
        return self.options[name.lower()]

    def _send(self, line: str) -> None:
        """Print a line of this search, unless ``quit`` has come (then the GUI reads no more)."""
        if not self.server.quitting.is_set():
            self.server.out.send(line)

    def _send_report(self, line: str) -> None:
        """Print one of the search's info lines, remembering it when it comes during pondering."""
        with self.lock:
            if self.pondering:
                self.pondered_report.append(line)
        self._send(line)

    def _info(self, text: str) -> None:
        if not self.server.quitting.is_set():
            self.server.out.info(text)

    def _set_deadline(self) -> None:
        """Work out :attr:`deadline` and hand it to the engine; call with :attr:`lock` held."""
        if self.params.infinite or self.pondering:
            deadline = None
        else:
            if self.server.loader.modules is True:
                budget = self.server.budget(self.board, self.params, self.options, self.needed)
            else:
                budget = provisional_budget(self.board.turn, self.params)
            deadline = None if budget is None else self.clock_start + budget
        self.deadline = deadline
        if self.control is not None:
            self.control.deadline = deadline
        self.server.loader.poke()

    def _wait_deadline(self) -> float | None:
        deadline = self.deadline
        return None if deadline is None else deadline - LOAD_MARGIN

    def stop(self) -> None:
        self.stop_event.set()
        self.release.set()
        self.server.loader.poke()

    def ponderhit(self, now: float) -> None:
        """The opponent played the expected move: think on the clock from ``now``."""
        with self.lock:
            if not self.pondering:
                return
            self.pondering = False
            self.hit = True
            self.clock_start = now
            self._set_deadline()
            if not self.params.infinite:
                self.release.set()

    def waits_for_release(self) -> bool:
        """Whether the bestmove waits for ``stop`` or ``ponderhit``."""
        return not self.release.is_set()

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # never leave the GUI without a bestmove
            self._info(f"error: search failed: {type(exc).__name__}: {exc}")
            if self.server.out.debug:
                import traceback

                self.server.out.log(traceback.format_exc())
            if not self.answered.is_set():
                self.board = self.root
                moves = list(self.root.legal_moves)
                self._finish(moves[0] if moves else None, None)
        finally:
            self.done.set()

    def _finish(self, move: chess.Move | None, ponder: chess.Move | None) -> None:
        self.release.wait()
        if self.answered.is_set():
            return
        if self.hit:
            for info in self.pondered_report:
                self._send(info)
        if move is None:
            line = "bestmove (none)"
        else:
            line = f"bestmove {self.board.uci(move)}"
            if ponder is not None and self.option("Ponder"):
                self.board.push(move)
                line += f" ponder {self.board.uci(ponder)}"
                self.board.pop()
        # Marked before the line is written: a go that follows this bestmove
        # must find the search answered, not running.
        self.answered.set()
        self._send(line)

    def _searchmoves(self) -> list[chess.Move] | None:
        if not self.params.searchmoves:
            return None
        moves = []
        for text in self.params.searchmoves:
            try:
                moves.append(parse_move(self.board, text))
            except ValueError:
                self._info(f"searchmoves: {_echo(text)} is not a legal move here; ignored")
        if not moves:
            self._info("searchmoves: no legal move given; searching all moves")
            return None
        return moves

    def _run(self) -> None:
        board = self.board
        if not any(board.generate_legal_moves()):
            score = "mate 0" if board.is_check() else "cp 0"
            self._info("game over: " + ("checkmate" if board.is_check() else "stalemate"))
            self._send(f"info depth 0 score {score}")
            self._finish(None, None)
            return
        searchmoves = self._searchmoves()
        loader = self.server.loader
        # 1. The engine's modules: its time management and fallback move need them.
        loader.wait_for(lambda: loader.modules is not None, self._wait_deadline, self.stop_event)
        modules = loader.modules
        if modules is not True:
            self._without_engine("the engine is still starting" if modules is None
                                 else f"the engine cannot be imported: {modules}")
            return
        from neuralengine.engine import SearchControl

        with self.lock:
            self.control = SearchControl(None)
            self.control.stop = self.stop_event
            self._set_deadline()
        # 2. The weights asked for, as long as the time allows; else the previous ones, if any.
        loader.wait_for(loader.current, self._wait_deadline, self.stop_event)
        with loader.cond:
            engine, error, generation, current = loader.engine, loader.error, loader.generation, loader.current()
        if engine is None:
            self._fallback(error if current and error else "the weights are still loading")
            return
        if not current:
            self._info(f"the new weights are still loading; searching with {engine.describe()}")
        self.server.configure(engine, self.options, generation)
        with self.lock:
            self.needed = engine.predicted_seconds(board)
            self._set_deadline()  # the time-trouble rule needs the engine's speed
        result = engine.choose_move(board, control=self.control, nodes=self.params.nodes, searchmoves=searchmoves,
                                    ponder=bool(self.option("Ponder")))
        self._report(result)
        self._finish(result.bestmove, result.ponder)

    def _elapsed(self) -> float:
        return max(self.clock() - self.started, 0.0)

    def _unevaluated(self, reason: str, move: chess.Move, score: str) -> None:
        """Play ``move``, chosen without the network, and say why."""
        self._info(f"{NO_NETWORK} ({reason}); playing a legal move without evaluation")
        self._send(f"info depth 1 seldepth 1 multipv 1 score {score} nodes 0 nps 0 "
                             f"time {int(self._elapsed() * 1000)} pv {self.board.uci(move)}")
        self._finish(move, None)

    def _fallback(self, reason: str) -> None:
        from neuralengine.engine import Engine, fallback_score

        try:
            move = Engine.fallback(self.board)
        except Exception:
            move = None
        if move is None:
            move = next(iter(self.board.legal_moves))
        self._unevaluated(reason, move, fallback_score(self.board, move))

    def _without_engine(self, reason: str) -> None:
        """A legal move from python-chess alone: a mate in one, else the first move generated."""
        board = self.board
        moves = list(board.legal_moves)
        for move in moves:
            board.push(move)
            mate = board.is_checkmate()
            board.pop()
            if mate:
                self._unevaluated(reason, move, "mate 1")
                return
        self._unevaluated(reason, moves[0], "cp 0")

    def _report(self, result: MoveChoice) -> None:
        board = self.board
        elapsed = self._elapsed()
        time_ms = int(elapsed * 1000)
        nps = round(result.nodes / elapsed) if elapsed > 0 else 0
        if result.fallback:
            self._info(f"{result.fallback}; playing {board.uci(result.bestmove)} without evaluation")  # type: ignore[arg-type]
        if not result.ranked:
            assert result.bestmove is not None
            from neuralengine.engine import fallback_score

            self._send_report(f"info depth 1 seldepth 1 multipv 1 score {fallback_score(board, result.bestmove)} "
                              f"nodes {result.nodes} nps {nps} time {time_ms} pv {board.uci(result.bestmove)}")
            return
        show_wdl = bool(self.option("UCI_ShowWDL"))
        lines = result.ranked[:int(self.option("MultiPV"))]
        for rank, scored in enumerate(lines, start=1):
            score = f"mate {scored.mate}" if scored.mate else f"cp {scored.cp}"
            if show_wdl:
                score += " wdl {} {} {}".format(*scored.wdl)
            pv = board.uci(scored.move)
            if rank == 1 and result.ponder is not None:
                board.push(scored.move)
                pv += " " + board.uci(result.ponder)
                board.pop()
            self._send_report(f"info depth 1 seldepth 1 multipv {rank} score {score} nodes {result.nodes} "
                              f"nps {nps} time {time_ms} pv {pv}")


# --------------------------------------------------------------------------
# The command loop
# --------------------------------------------------------------------------


class UciServer:
    """Handles UCI commands, one line at a time (see :func:`serve`).

    One search runs at a time: a ``go`` or ``ucinewgame`` that comes during a
    search stops it and waits until it has printed its ``bestmove``, however
    long its running network call takes.

    :param engine_factory: ``factory(path, backend, threads)`` opens an
        engine (default: :meth:`Engine.open`); tests pass a fake one.
    :param clock: the time source of every deadline; the real engine needs
        :func:`time.monotonic`, the default.
    """

    def __init__(self, out: Output, options: dict[str, Option], *,
                 engine_factory: Callable[[str, str, int], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.options = options
        self.clock = clock
        self.loader = Loader(out, engine_factory, clock)
        self.board: chess.Board | None = None
        self.position_set = False
        self.job: SearchJob | None = None
        #: (engine generation, seed) last applied to an engine's random generator.
        self.seed_applied: tuple[int, int] | None = None
        #: Set when ``quit`` arrives (before it is handled): a wait for a search gives up, and
        #: searches print nothing more.
        self.quitting = threading.Event()
        self.commands: dict[str, Callable[[list[str], float], None]] = {
            "uci": self.cmd_uci,
            "isready": self.cmd_isready,
            "ucinewgame": self.cmd_ucinewgame,
            "position": self.cmd_position,
            "go": self.cmd_go,
            "stop": self.cmd_stop,
            "ponderhit": self.cmd_ponderhit,
            "debug": self.cmd_debug,
            "setoption": self.cmd_setoption,
            "register": lambda args, t: None,
            "d": self.cmd_display,
        }

    # -- helpers -----------------------------------------------------------

    def option(self, name: str) -> Any:
        return self.options[name.lower()].value

    def load_key(self) -> LoadKey:
        return (str(self.option("WeightsFile")), str(self.option("Backend")), int(self.option("Threads")))

    def start_loading(self) -> None:
        self.loader.want(self.load_key())

    def configure(self, engine: Engine, options: dict[str, Any], generation: int) -> None:
        """Copy the search options (values keyed by lower-case name) onto ``engine``.

        ``generation`` counts the loads (:attr:`Loader.generation`): the
        random generator is seeded again when the engine or the seed changed
        since the last search, and after ``ucinewgame``. A fixed seed then
        starts its sequence again; ``Seed 0`` draws a fresh one.
        """
        engine.batch_size = int(options["batchsize"])
        engine.temperature = float(options["temperature"])
        engine.temperature_moves = int(options["temperaturemoves"])
        engine.mate_rule = bool(options["materule"])
        engine.convert_rule = bool(options["convertrule"])
        seed = int(options["seed"])
        if (generation, seed) != self.seed_applied:
            import random

            engine.rng = random.Random(seed if seed else None)
            self.seed_applied = (generation, seed)

    def budget(self, board: chess.Board, params: GoParams, options: dict[str, Any],
               needed: float | None = None) -> float | None:
        """Seconds this ``go`` may use (``None``: no limit)."""
        from neuralengine.engine import time_budget

        white = board.turn
        clock = params.wtime if white else params.btime
        inc = params.winc if white else params.binc
        overhead = int(options["move overhead"]) / 1000.0
        return time_budget(movetime=None if params.movetime is None else params.movetime / 1000.0,
                           time_left=None if clock is None else clock / 1000.0, increment=inc / 1000.0,
                           movestogo=params.movestogo, overhead=overhead, needed=needed)

    def wait_for_search(self, job: SearchJob) -> bool:
        """Wait until ``job`` has ended, without a time limit; ``False`` if ``quit`` has come."""
        while not job.done.wait(POLL_SECONDS):
            if self.quitting.is_set():
                return False
        return not self.quitting.is_set()

    def stop_search(self) -> bool:
        """Stop the running search, if any, and wait until it has ended; ``False`` if ``quit`` came first."""
        job = self.job
        if job is None or job.done.is_set():
            return True
        job.stop()
        return self.wait_for_search(job)

    def new_board(self, fen: str | None = None) -> chess.Board:
        import chess

        chess960 = bool(self.option("UCI_Chess960"))
        return chess.Board(chess960=chess960) if fen is None else chess.Board(fen, chess960=chess960)

    # -- commands ----------------------------------------------------------

    def cmd_uci(self, args: list[str], now: float) -> None:
        self.out.send(f"id name {ENGINE_NAME}")
        self.out.send(f"id author {ENGINE_AUTHOR}")
        for opt in self.options.values():
            self.out.send(opt.declaration())
        self.out.send("uciok")
        self.start_loading()

    def cmd_isready(self, args: list[str], now: float) -> None:
        self.start_loading()
        self.loader.wait()
        with self.loader.cond:
            error, engine, announced = self.loader.error, self.loader.engine, self.loader.announced
            self.loader.announced = True
        if error:
            kept = f"; still playing with {engine.describe()}" if engine is not None else ""
            self.out.info(f"error: cannot load the weights: {error}{kept}")
        elif engine is not None and not announced:
            self.out.info(f"loaded {engine.describe()}")
        self.out.send("readyok")

    def cmd_ucinewgame(self, args: list[str], now: float) -> None:
        if not self.stop_search():
            return
        self.board = None
        self.position_set = False
        self.seed_applied = None  # the next search starts the seeded sequence again
        self.start_loading()

    def cmd_debug(self, args: list[str], now: float) -> None:
        if args and args[0].lower() in ("on", "off"):
            self.out.debug = args[0].lower() == "on"
        else:
            self.out.info("usage: debug on|off")

    def cmd_setoption(self, args: list[str], now: float) -> None:
        lower = [a.lower() for a in args]
        if not args or lower[0] != "name":
            self.out.info("usage: setoption name NAME [value VALUE]")
            return
        if "value" in lower[1:]:
            split = lower.index("value", 1)
            name, raw = " ".join(args[1:split]), " ".join(args[split + 1:])
        else:
            name, raw = " ".join(args[1:]), None
        opt = self.options.get(name.lower())
        if opt is None:
            self.out.info(f"unknown option {_echo(name)}; known options: "
                          + ", ".join(o.name for o in self.options.values()))
            return
        if raw is None and opt.type not in ("button", "string"):
            self.out.info(f"setoption {opt.name} needs a value")
            return
        try:
            opt.value = opt.parse(raw)
        except ValueError as exc:
            self.out.info(f"{exc}; {opt.name} stays {opt.value}")
            return
        if opt.name.lower() in LOAD_OPTIONS:
            self.start_loading()

    def cmd_position(self, args: list[str], now: float) -> None:
        import chess

        if not args:
            self.out.info("usage: position startpos|fen FEN [moves MOVE...]")
            return
        lower = [a.lower() for a in args]
        moves_at = lower.index("moves") if "moves" in lower else len(args)
        kind = lower[0]
        try:
            if kind == "startpos":
                if moves_at > 1:
                    self.out.info(f"position: unexpected words after startpos ignored: {_echo(' '.join(args[1:moves_at]))}")
                board = self.new_board()
            elif kind == "fen":
                fen = " ".join(args[1:moves_at])
                if not fen:
                    raise ValueError("position fen needs a FEN")
                board = self.new_board(fen)
            else:
                raise ValueError("position needs startpos or fen")
        except ValueError as exc:
            self.out.info(f"invalid position ({exc}); keeping the previous position")
            return
        fatal = (chess.STATUS_EMPTY | chess.STATUS_NO_WHITE_KING | chess.STATUS_NO_BLACK_KING
                 | chess.STATUS_TOO_MANY_KINGS | chess.STATUS_OPPOSITE_CHECK | chess.STATUS_PAWNS_ON_BACKRANK)
        status = board.status()
        if status & fatal:
            problems = [name[7:].lower().replace("_", " ") for name in dir(chess)
                        if name.startswith("STATUS_") and name != "STATUS_VALID" and status & getattr(chess, name) & fatal]
            self.out.info(f"invalid position ({', '.join(problems)}); keeping the previous position")
            return
        if status != chess.STATUS_VALID:
            self.out.info("warning: unusual position (" + ", ".join(
                name[7:].lower().replace("_", " ") for name in dir(chess)
                if name.startswith("STATUS_") and name != "STATUS_VALID" and status & getattr(chess, name)) + ")")
        for index, text in enumerate(args[moves_at + 1:]):
            try:
                move = parse_move(board, text)
                if not move:
                    raise ValueError("null move")
            except ValueError:
                self.out.info(f"illegal move {_echo(text)} (move {index + 1} of the list) in {board.fen()}; "
                              f"the position stops before it")
                break
            board.push(move)
        self.board = board
        self.position_set = True

    def cmd_go(self, args: list[str], now: float) -> None:
        job = self.job
        if job is not None and not job.done.is_set():
            if not job.answered.is_set():
                self.out.info("go while a search is running: the running search is stopped first")
                job.stop()
            # Once answered, the thread is only returning; otherwise it prints its bestmove first.
            if not self.wait_for_search(job):
                return
        if not self.position_set:
            self.out.info("go without a position: searching the start position")
        if self.board is None:
            self.board = self.new_board()
        params = parse_go(args, self.out.info)
        if self.loader.wanted is None:
            self.start_loading()
        job = SearchJob(self, self.board.copy(), params, now)
        self.job = job
        job.start()

    def cmd_stop(self, args: list[str], now: float) -> None:
        job = self.job
        if job is not None and not job.done.is_set():
            job.stop()

    def cmd_ponderhit(self, args: list[str], now: float) -> None:
        job = self.job
        if job is not None and not job.done.is_set():
            job.ponderhit(now)

    def cmd_display(self, args: list[str], now: float) -> None:
        board = self.board if self.board is not None else self.new_board()
        for row in str(board).splitlines():
            self.out.info(row)
        self.out.info(f"fen {board.fen()}")
        self.out.info(f"{board.legal_moves.count()} legal moves; {'white' if board.turn else 'black'} to move")

    # -- the loop ------------------------------------------------------------

    def command_of(self, tokens: list[str]) -> tuple[int, str] | None:
        """The position and name of the first known command word; unknown leading words are skipped,
        as the UCI specification asks."""
        for i, word in enumerate(tokens):
            lower = word.lower()
            if lower in self.commands or lower == "quit":
                return i, lower
        return None

    def handle(self, line: str, now: float | None = None) -> bool:
        """Handle one line that arrived at ``now`` (default: the clock now); ``False`` means quit."""
        now = self.clock() if now is None else now
        tokens = line.split()
        if not tokens:
            return True
        if self.out.debug:
            self.out.log(f">> {line[:200]}")
        found = self.command_of(tokens)
        if found is not None:
            i, command = found
            if i:
                self.out.info(f"ignored unknown words before {command}: {_echo(' '.join(tokens[:i]))}")
            if command == "quit":
                return False
            try:
                self.commands[command](tokens[i + 1:], now)
            except Exception as exc:  # one bad line never ends the engine
                self.out.info(f"error: {command} failed: {type(exc).__name__}: {exc}")
                if self.out.debug:
                    import traceback

                    self.out.log(traceback.format_exc())
            return True
        self.out.info(f"unknown command {_echo(line.strip())}")
        return True

    def shutdown(self, eof: bool, grace: float = 5.0) -> None:
        """End the session.

        At the end of input a timed search may finish and a waiting one
        (``infinite``, ``ponder``) is stopped; both print their bestmove.
        After ``quit`` nothing more is printed: the search is stopped, and
        its running network call gets at most ``grace`` seconds to end
        before the process exits.
        """
        job = self.job
        if eof and job is not None and not job.waits_for_release():
            job.done.wait(60.0)
        if not eof:
            self.quitting.set()
            self.out.close()
        if job is not None and not job.done.is_set():
            job.stop()
            job.done.wait(grace)


def serve(server: UciServer, lines: Iterable[str], grace: float = 5.0) -> None:
    """Run ``server`` on ``lines`` until ``quit`` or their end.

    A reader thread takes the lines in and stamps each with the time it
    arrived, so that a ``go`` counts its time from then even when the lines
    before it took a while to handle (as the first ``position`` does, while
    python-chess is being imported). The calling thread handles the lines in
    order. ``quit`` is seen by the reader at once: a command that waits for a
    search to end gives up, and the session ends.
    """
    inbox: queue.Queue[tuple[str, float] | None] = queue.Queue()

    def read() -> None:
        try:
            for line in lines:
                inbox.put((line, server.clock()))
                found = server.command_of(line.split())
                if found is not None and found[1] == "quit":
                    server.quitting.set()
                    return
        finally:
            inbox.put(None)

    threading.Thread(target=read, name="neuralengine-reader", daemon=True).start()
    eof = True
    while True:
        item = inbox.get()
        if item is None:
            break
        if not server.handle(*item):
            eof = False
            break
    server.shutdown(eof, grace)


def read_lines(stream: BinaryIO, out: Output):  # type: ignore[no-untyped-def]
    """Yield decoded input lines; overlong lines are skipped with a message."""
    while True:
        try:
            raw = stream.readline(MAX_LINE_BYTES + 1)
        except (OSError, ValueError):
            return
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            skipped = len(raw)
            while True:
                rest = stream.readline(MAX_LINE_BYTES)
                skipped += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            out.info(f"input line of {skipped} bytes is longer than {MAX_LINE_BYTES} bytes; skipped")
            continue
        yield raw.decode("utf-8", "replace").replace("\x00", " ")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralengine uci",
        description="Run the UCI protocol on stdin/stdout. The flags set option defaults; "
                    "setoption still changes them.")
    parser.add_argument("--weights", help="weights file (the WeightsFile option)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="inference backend")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the backend")
    return parser


def protocol_stream() -> BinaryIO:
    """A private handle on stdout for protocol lines.

    File descriptor 1 is then pointed at stderr, so that whatever a library
    prints (Python or native code, e.g. during an ONNX export) cannot corrupt
    the protocol.
    """
    try:
        sys.stdout.flush()
        fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return os.fdopen(fd, "wb")
    except (OSError, ValueError, AttributeError):
        return sys.stdout.buffer


def main(argv: list[str] | None = None) -> int:
    """Run the UCI loop until ``quit`` or the end of input; returns the exit code."""
    args = build_parser().parse_args([] if argv is None else argv)
    out = Output(protocol_stream())
    server = UciServer(out, make_options(args.weights, args.backend, max(1, min(args.threads, 256))))
    try:
        serve(server, read_lines(sys.stdin.buffer, out))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
