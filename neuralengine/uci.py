"""The UCI protocol on stdin/stdout.

``neuralengine`` (or ``neuralengine uci``) runs this loop; chess GUIs,
cutechess-cli, fastchess and lichess-bot start it directly.

Design:

* ``uci`` is answered from the standard library alone. NumPy, python-chess,
  ONNX Runtime and the weights are imported and loaded afterwards on a
  background thread; ``isready`` waits for them.
* Searches run on a worker thread, so ``stop``, ``ponderhit``, ``isready``
  and ``quit`` are answered while the engine thinks.
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
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

from neuralengine import __version__

if TYPE_CHECKING:
    import chess

    from neuralengine.engine import Engine, SearchResult

ENGINE_NAME = f"neuralengine {__version__}"
ENGINE_AUTHOR = "the neuralengine authors"

#: Backend names (the same as :data:`neuralengine.backends.BACKENDS`, written
#: out here so that ``uci`` needs no NumPy import).
BACKEND_CHOICES = ("auto", "onnx", "torch-cpu", "torch-cuda")

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


class Loader:
    """Loads the engine for the wanted (weights, backend, threads) on a thread.

    :meth:`want` records the wanted key and starts the thread if it is idle;
    the thread loads, and loads again if the key changed meanwhile.
    :meth:`wait` blocks until the engine for the current key is ready (or
    failed).
    """

    def __init__(self, output: Output) -> None:
        self.output = output
        self.cond = threading.Condition()
        self.wanted: LoadKey | None = None
        self.loaded: LoadKey | None = None
        self.engine: Engine | None = None
        self.error: str | None = None
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
        while True:
            with self.cond:
                key = self.wanted
                if key is None or key == self.loaded:
                    self.busy = False
                    self.cond.notify_all()
                    return
            engine, error = self._load(key)
            with self.cond:
                self.engine, self.error, self.loaded = engine, error, key
                self.announced = False
                self.cond.notify_all()

    def _load(self, key: LoadKey) -> tuple[Engine | None, str | None]:
        path, backend, threads = key
        started = time.monotonic()
        if self.output.debug:
            self.output.log(f"loading {path} with backend {backend}, {threads} threads")
        try:
            from neuralengine.engine import Engine

            # Free the previous model before the next one is read.
            with self.cond:
                self.engine = None
            engine = Engine.open(os.path.expanduser(path), backend, threads)
        except Exception as exc:  # every failure becomes a message, never a crash
            message = str(exc) or type(exc).__name__
            if not path:
                message = "no weights file set (setoption name WeightsFile value PATH)"
            return None, message
        if self.output.debug:
            self.output.log(f"loaded in {time.monotonic() - started:.2f}s: {engine.describe()}")
        return engine, None

    def ready(self) -> bool:
        with self.cond:
            return not self.busy and self.loaded == self.wanted

    def wait(self, timeout: float | None = None, stop: threading.Event | None = None) -> bool:
        """Wait until the wanted engine is loaded or failed; ``False`` on timeout or stop."""
        end = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.busy or self.loaded != self.wanted:
                if stop is not None and stop.is_set():
                    return False
                left = 0.05 if end is None else min(0.05, end - time.monotonic())
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True


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


class SearchJob(threading.Thread):
    """One ``go``: runs the engine and prints ``info`` and ``bestmove``."""

    def __init__(self, server: "UciServer", board: chess.Board, params: GoParams, started: float) -> None:
        super().__init__(name="neuralengine-search", daemon=True)
        from neuralengine.engine import SearchControl

        self.server = server
        #: Option values when the search started (later setoption calls do not change it).
        self.options = {name: opt.value for name, opt in server.options.items()}
        self.board = board
        #: The position as it was, for a fallback move should the search fail half-way.
        self.root = board.copy(stack=False)
        self.params = params
        self.started = started
        #: When the clock started for this move: the ``go``, or the ``ponderhit``.
        self.clock_start = started
        self.budget = server.budget(board, params, self.options)
        waiting = params.infinite or params.ponder
        self.control = SearchControl(None if waiting or self.budget is None else started + self.budget)
        self.wait_for_stop = waiting
        self.release = threading.Event()  # set by stop or ponderhit
        self.answered = threading.Event()  # set once bestmove is out
        self.done = threading.Event()

    def option(self, name: str) -> Any:
        return self.options[name.lower()]

    def stop(self) -> None:
        self.control.stop.set()
        self.release.set()

    def ponderhit(self) -> None:
        """The opponent played the expected move: think on the clock from now."""
        self.clock_start = time.monotonic()
        if self.budget is not None:
            self.control.deadline = self.clock_start + self.budget
        self.wait_for_stop = False
        self.release.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # never leave the GUI without a bestmove
            out = self.server.out
            out.info(f"error: search failed: {type(exc).__name__}: {exc}")
            if self.server.out.debug:
                import traceback

                out.log(traceback.format_exc())
            self.board = self.root
            moves = list(self.root.legal_moves)
            self._finish(moves[0] if moves else None, None)
        finally:
            self.done.set()

    def _finish(self, move: chess.Move | None, ponder: chess.Move | None) -> None:
        if self.wait_for_stop:
            self.release.wait()
        if move is None:
            line = "bestmove (none)"
        else:
            line = f"bestmove {self.board.uci(move)}"
            if ponder is not None and self.option("Ponder"):
                self.board.push(move)
                line += f" ponder {self.board.uci(ponder)}"
                self.board.pop()
        self.server.out.send(line)
        self.answered.set()

    def _searchmoves(self) -> list[chess.Move] | None:
        if not self.params.searchmoves:
            return None
        moves = []
        for text in self.params.searchmoves:
            try:
                moves.append(self.board.parse_uci(text))
            except ValueError:
                self.server.out.info(f"searchmoves: {_echo(text)} is not a legal move here; ignored")
        if not moves:
            self.server.out.info("searchmoves: no legal move given; searching all moves")
            return None
        return moves

    def _run(self) -> None:
        out = self.server.out
        board = self.board
        if not any(board.generate_legal_moves()):
            score = "mate 0" if board.is_check() else "cp 0"
            out.info("game over: " + ("checkmate" if board.is_check() else "stalemate"))
            out.send(f"info depth 0 score {score}")
            self._finish(None, None)
            return
        searchmoves = self._searchmoves()
        loader = self.server.loader
        remaining = self.control.remaining()
        loader.wait(None if remaining is None else max(remaining - 0.01, 0.0), self.control.stop)
        with loader.cond:
            engine, error, ready = loader.engine, loader.error, loader.loaded == loader.wanted and not loader.busy
        if engine is None or not ready:
            self._fallback(error if ready else "the weights are still loading")
            return
        self.server.configure(engine, self.options)
        if self.control.deadline is not None:
            # Now that the network's speed is known, time trouble may allow one evaluation.
            budget = self.server.budget(board, self.params, self.options, engine.predicted_seconds(board))
            if budget is not None:
                self.budget = budget
                self.control.deadline = self.clock_start + budget
        result = engine.search(board, control=self.control, nodes=self.params.nodes, searchmoves=searchmoves,
                               ponder=bool(self.option("Ponder")))
        self._report(result)
        self._finish(result.bestmove, result.ponder)

    def _fallback(self, reason: str | None) -> None:
        out = self.server.out
        try:
            from neuralengine.engine import Engine

            move = Engine.fallback(self.board)
        except Exception:
            move = next(iter(self.board.legal_moves))
        out.info(f"no network available ({reason}); playing a legal move without evaluation")
        elapsed = int((time.monotonic() - self.started) * 1000)
        from neuralengine.engine import fallback_score

        out.send(f"info depth 1 seldepth 1 multipv 1 score {fallback_score(self.board, move)} nodes 0 nps 0 "
                 f"time {elapsed} pv {self.board.uci(move)}")
        self._finish(move, None)

    def _report(self, result: SearchResult) -> None:
        out = self.server.out
        board = self.board
        elapsed = max(time.monotonic() - self.started, 1e-6)
        time_ms = int(elapsed * 1000)
        nps = int(result.nodes / elapsed)
        if result.fallback:
            out.info(f"{result.fallback}; playing {board.uci(result.bestmove)} without evaluation")  # type: ignore[arg-type]
        elif not result.complete:
            out.info(f"evaluated {result.nodes} of {self.board.legal_moves.count()} moves before the limit")
        if not result.ranked:
            assert result.bestmove is not None
            from neuralengine.engine import fallback_score

            out.send(f"info depth 1 seldepth 1 multipv 1 score {fallback_score(board, result.bestmove)} "
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
            out.send(f"info depth 1 seldepth 1 multipv {rank} score {score} nodes {result.nodes} nps {nps} "
                     f"time {time_ms} pv {pv}")


# --------------------------------------------------------------------------
# The command loop
# --------------------------------------------------------------------------


class UciServer:
    """Handles UCI commands, one line at a time."""

    def __init__(self, out: Output, options: dict[str, Option]) -> None:
        self.out = out
        self.options = options
        self.loader = Loader(out)
        self.board: chess.Board | None = None
        self.position_set = False
        self.job: SearchJob | None = None
        self.seed_applied: tuple[int, int] | None = None
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

    def configure(self, engine: Engine, options: dict[str, Any]) -> None:
        """Copy the search options (values keyed by lower-case name) onto ``engine``."""
        engine.batch_size = int(options["batchsize"])
        engine.temperature = float(options["temperature"])
        engine.temperature_moves = int(options["temperaturemoves"])
        engine.mate_rule = bool(options["materule"])
        seed = int(options["seed"])
        if seed and (id(engine), seed) != self.seed_applied:
            import random

            engine.rng = random.Random(seed)
        self.seed_applied = (id(engine), seed)

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

    def stop_search(self, wait: bool = True) -> None:
        job = self.job
        if job is not None and not job.done.is_set():
            job.stop()
            if wait:
                job.done.wait(10.0)

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
            self.out.info(f"error: cannot load the weights: {error}")
        elif engine is not None and not announced:
            self.out.info(f"loaded {engine.describe()}")
        self.out.send("readyok")

    def cmd_ucinewgame(self, args: list[str], now: float) -> None:
        self.stop_search()
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
                move = board.parse_uci(text)
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
        if self.job is not None and not self.job.done.is_set():
            if self.job.answered.is_set():
                self.job.done.wait()  # the bestmove is out; the thread is only returning
            else:
                self.out.info("go while a search is running: the running search is stopped first")
                self.stop_search()
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
        self.stop_search(wait=False)

    def cmd_ponderhit(self, args: list[str], now: float) -> None:
        job = self.job
        if job is not None and not job.done.is_set() and job.params.ponder:
            job.ponderhit()

    def cmd_display(self, args: list[str], now: float) -> None:
        board = self.board if self.board is not None else self.new_board()
        for row in str(board).splitlines():
            self.out.info(row)
        self.out.info(f"fen {board.fen()}")
        self.out.info(f"{board.legal_moves.count()} legal moves; {'white' if board.turn else 'black'} to move")

    # -- the loop ------------------------------------------------------------

    def handle(self, line: str, now: float | None = None) -> bool:
        """Handle one line; ``False`` means quit."""
        now = time.monotonic() if now is None else now
        tokens = line.split()
        if not tokens:
            return True
        if self.out.debug:
            self.out.log(f">> {line[:200]}")
        # Unknown leading words are skipped, as the UCI specification asks.
        for i, word in enumerate(tokens):
            command = word.lower() if word.lower() in self.commands or word.lower() == "quit" else None
            if command is None:
                continue
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

    def shutdown(self, eof: bool) -> None:
        """End the session: at end of input a timed search may finish; otherwise stop it."""
        job = self.job
        if job is None or job.done.is_set():
            return
        if eof and not job.wait_for_stop:
            job.done.wait(60.0)
        job.stop()
        job.done.wait(5.0)


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
    eof = True
    try:
        for line in read_lines(sys.stdin.buffer, out):
            if not server.handle(line):
                eof = False
                break
        server.shutdown(eof)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
