"""The command loop: one handler per UCI command, and :func:`serve`, which feeds them lines.

:class:`UciServer` keeps the session's state (options, position, the running
search, the loader) and handles one line at a time on the calling thread;
searches run on their own threads (:mod:`neuralengine.uci.job`). ``quit``
is seen by the reader thread as soon as it arrives, and every wait of the
handling thread gives up on it.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from neuralengine import __version__
from neuralengine.uci.go import parse_go
from neuralengine.uci.job import SearchJob
from neuralengine.uci.loader import POLL_SECONDS, Loader, LoadKey
from neuralengine.uci.options import LOAD_OPTIONS, SECRET_OPTIONS, Option, apply_setoption
from neuralengine.uci.output import Output, echo
from neuralengine.uci.position import parse_position, with_history

if TYPE_CHECKING:
    import chess

    from neuralengine.engine import Engine

ENGINE_NAME = f"neuralengine {__version__}"
ENGINE_AUTHOR = "the neuralengine authors"


def secret_hidden(tokens: list[str], line: str) -> str:
    """``line`` as it may be logged: the value of a ``setoption`` of a secret option is replaced by ``***``."""
    lower = [t.lower() for t in tokens]
    if "setoption" in lower and "value" in lower:
        at, split = lower.index("setoption"), lower.index("value")
        name = " ".join(lower[at + 2:split]) if at + 1 < len(lower) and lower[at + 1] == "name" else ""
        if name in SECRET_OPTIONS:
            return " ".join(tokens[:split + 1] + ["***"])
    return line


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
        #: Set when ``quit`` arrives (before it is handled): a wait for a search or
        #: for the weights gives up, and searches print nothing more.
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
        return (str(self.option("WeightsFile")), str(self.option("Backend")), int(self.option("Threads")),
                str(self.option("CandidateModel")), bool(self.option("Int8")))

    def start_loading(self) -> None:
        self.loader.want(self.load_key())

    def quit_arrived(self) -> None:
        """``quit`` has been read (it is handled after the lines before it): end every wait now."""
        self.quitting.set()
        self.loader.poke()

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
        apply_options = getattr(engine, "apply_options", None)
        if apply_options is not None:  # a player with options of its own (a language model over HTTP)
            apply_options(options)
        seed = int(options["seed"])
        if (generation, seed) != self.seed_applied:
            import random

            engine.rng = random.Random(seed if seed else None)
            self.seed_applied = (generation, seed)

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

    def new_board(self) -> chess.Board:
        import chess

        return chess.Board(chess960=bool(self.option("UCI_Chess960")))

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
        if not self.loader.wait(self.quitting) or self.quitting.is_set():
            return  # after quit nothing more is printed, and the load is left to itself
        with self.loader.cond:
            error, engine, announced = self.loader.error, self.loader.engine, self.loader.announced
            self.loader.announced = True
            fast_error, self.loader.fast_error = self.loader.fast_error, None
            notice, self.loader.notice = self.loader.notice, None
        if error:
            kept = f"; still playing with {engine.describe()}" if engine is not None else ""
            self.out.info(f"error: cannot load the weights: {error}{kept}")
        elif engine is not None and not announced:
            self.out.info(f"loaded {engine.describe()}")
            fast = getattr(engine, "fast", None)
            if fast is not None and fast is not engine:
                self.out.info(f"fast network for the moves the clock cannot hold: {fast.describe()}")
        if notice and not error:
            self.out.info(notice)
        if fast_error:
            self.out.info(f"error: cannot load the candidate model: {fast_error}; without a fast network, "
                          "moves the clock cannot hold are chosen without evaluation")
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
        try:
            opt = apply_setoption(self.options, args)
        except ValueError as exc:
            self.out.info(str(exc))
            return
        if opt.name.lower() in LOAD_OPTIONS:
            self.start_loading()

    def cmd_position(self, args: list[str], now: float) -> None:
        board = parse_position(args, chess960=bool(self.option("UCI_Chess960")), warn=self.out.info,
                               quitting=self.quitting)
        if board is not None:
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
        job = SearchJob(with_history(self.board), params, now,
                        options={name: opt.value for name, opt in self.options.items()}, out=self.out,
                        loader=self.loader, quitting=self.quitting, clock=self.clock, configure=self.configure)
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
            shown = secret_hidden(tokens, line.rstrip(chr(13) + chr(10)))
            self.out.log(f">> {shown[:200]}")  # the log adds its own line break
        found = self.command_of(tokens)
        if found is not None:
            i, command = found
            if i:
                self.out.info(f"ignored unknown words before {command}: {echo(' '.join(tokens[:i]))}")
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
        self.out.info(f"unknown command {echo(line.strip())}")
        return True

    def shutdown(self, eof: bool, grace: float = 5.0) -> None:
        """End the session.

        At the end of input a timed search may finish and a waiting one
        (``infinite``, ``ponder``) is stopped; both print their bestmove.
        After ``quit`` nothing more is printed: the search is stopped, and
        its running network call gets at most ``grace`` seconds to end
        before the process exits. A load in progress is never waited for
        (its thread is a daemon).
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
    order. ``quit`` is seen by the reader at once: a command that waits (for
    a search to end, for the weights) gives up, and the session ends.
    """
    inbox: queue.Queue[tuple[str, float] | None] = queue.Queue()

    def read() -> None:
        try:
            for line in lines:
                inbox.put((line, server.clock()))
                found = server.command_of(line.split())
                if found is not None and found[1] == "quit":
                    server.quit_arrived()
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
