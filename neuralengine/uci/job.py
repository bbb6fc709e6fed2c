"""One ``go``: the search job on its own thread, and the one owner of its deadline.

A job moves through these states, each a step of :meth:`SearchJob._run`:

1. *waiting for the engine's modules* (right after start-up), then
2. *waiting for the weights* asked for, each wait only as long as the time allows;
3. *searching* with the engine, or else playing the move chosen without the
   network (:mod:`neuralengine.uci.fallback`, the one route for every case);
4. *holding the bestmove* until it may be printed: at once for a timed
   ``go``, after ``ponderhit`` or ``stop`` for ``go ponder``, after ``stop``
   for ``go infinite``;
5. *answered*, then *done* when the thread ends.

:class:`SearchDeadline` alone decides when the move must be chosen; the
waits above and the engine read it, and ``ponderhit`` moves it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

from neuralengine.uci.fallback import NO_NETWORK, unevaluated_move
from neuralengine.uci.go import GoParams, provisional_limit, time_limit
from neuralengine.uci.loader import Loader
from neuralengine.uci.output import Output, echo, result_lines, score_line
from neuralengine.uci.position import parse_move

if TYPE_CHECKING:
    import chess

    from neuralengine.engine import Engine

#: Seconds kept before the deadline when waiting for the weights: enough to
#: play the fallback move and print it.
LOAD_MARGIN = 0.01

#: Why a move is played without the network while the weights load.
STILL_LOADING = "the weights are still loading"


class SearchDeadline:
    """When the move of one ``go`` must be chosen; also the engine's search control.

    The deadline is worked out in one place (:meth:`_update`) from what is
    known at the time, and again whenever that changes:

    * the limits of the ``go`` and when its clock started: the ``go``'s
      arrival, or the ``ponderhit`` (while pondering there is no deadline);
    * whether the engine's time management is imported (until then a
      provisional limit holds, :func:`~neuralengine.uci.go.provisional_limit`);
    * the engine's predicted time for a complete search, for the time-trouble
      rule of :func:`~neuralengine.uci.go.time_limit`.

    The engine reads it as its search control: :attr:`stop`,
    :attr:`deadline` and :meth:`remaining` (the interface of
    :class:`neuralengine.engine.SearchControl`). Every change wakes the
    threads waiting for the loader through ``on_change``.
    """

    def __init__(self, params: GoParams, *, white: bool, overhead: float, started: float,
                 clock: Callable[[], float], engine_timing: bool, on_change: Callable[[], None]) -> None:
        #: Set by ``stop``: the waits end, and the engine stops before its next network call.
        self.stop = threading.Event()
        self._params = params
        self._white = white
        self._overhead = overhead
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._start = started
        self._pondering = params.ponder
        self._engine_timing = engine_timing
        self._needed: float | None = None
        self._deadline: float | None = None
        with self._lock:
            self._update()

    @property
    def deadline(self) -> float | None:
        """When the move must be chosen (on the server's clock), or ``None`` for no limit."""
        return self._deadline

    @property
    def pondering(self) -> bool:
        """Whether this is a ponder search whose ``ponderhit`` has not come."""
        return self._pondering

    def remaining(self) -> float | None:
        """Seconds until the deadline, or ``None`` without one."""
        deadline = self._deadline
        return None if deadline is None else deadline - self._clock()

    @property
    def slack(self) -> float | None:
        """Seconds from the deadline to the ``go``'s own limit (its ``movetime`` or the clock, whichever is
        less), ``None`` without either: how late a last-resort evaluation may end
        (:data:`~neuralengine.engine.core.LAST_RESORT_GRACE` at most)."""
        deadline, params = self._deadline, self._params
        if deadline is None:
            return None
        clock = params.wtime if self._white else params.btime
        limits = [max(t, 0) / 1000.0 for t in (params.movetime, clock) if t is not None]
        return None if not limits else max(self._start + min(limits) - deadline, 0.0)

    def wait_limit(self) -> float | None:
        """When a wait for the engine must give up: :data:`LOAD_MARGIN` before the deadline."""
        deadline = self._deadline
        return None if deadline is None else deadline - LOAD_MARGIN

    def use_engine_timing(self, needed: float | None = None) -> None:
        """The engine's time management is imported; ``needed`` is its predicted time of a search, once known."""
        with self._lock:
            self._engine_timing = True
            self._needed = needed
            self._update()
        self._on_change()

    def ponderhit(self, now: float) -> bool:
        """The clock runs from ``now``; ``False`` (and nothing changes) if this search was not pondering."""
        with self._lock:
            if not self._pondering:
                return False
            self._pondering = False
            self._start = now
            self._update()
        self._on_change()
        return True

    def _update(self) -> None:
        """Work out the deadline; call with the lock held."""
        params = self._params
        if params.infinite or self._pondering:
            self._deadline = None
            return
        if self._engine_timing:
            budget = time_limit(params, self._white, self._overhead, self._needed)
        else:
            budget = provisional_limit(params, self._white)
        self._deadline = None if budget is None else self._start + budget


class SearchJob(threading.Thread):
    """One ``go``: finds a move within the time and prints ``info`` and exactly one ``bestmove``.

    The reader thread may call :meth:`stop` and :meth:`ponderhit` at any
    time. The time of the move runs from ``started``, when the ``go`` line
    arrived, or from the ``ponderhit``.

    :param board: the position, with the history :func:`~neuralengine.uci.position.with_history` keeps.
    :param options: option values (keyed by lower-case name) when the ``go`` came;
        later ``setoption`` commands do not change them.
    :param configure: ``configure(engine, options, generation)`` applies the
        options to the engine before the search.
    :param quitting: set when ``quit`` has come: the search prints nothing more.
    """

    def __init__(self, board: chess.Board, params: GoParams, started: float, *, options: dict[str, Any],
                 out: Output, loader: Loader, quitting: threading.Event, clock: Callable[[], float],
                 configure: Callable[[Engine, dict[str, Any], int], None]) -> None:
        super().__init__(name="neuralengine-search", daemon=True)
        self.board = board
        #: The position as it was, for the move played should the search fail half-way.
        self.root = board.copy(stack=False)
        self.params = params
        self.started = started
        self.options = options
        self.out = out
        self.loader = loader
        self.quitting = quitting
        self.clock = clock
        self.configure = configure
        self.deadline = SearchDeadline(params, white=board.turn, overhead=int(options["move overhead"]) / 1000.0,
                                       started=started, clock=clock, engine_timing=loader.modules is True,
                                       on_change=loader.poke)
        #: Set when ``bestmove`` may be printed: from the start for a timed ``go``;
        #: for ``go ponder`` on ``ponderhit`` or ``stop``; for ``go infinite`` on ``stop`` only.
        self.release = threading.Event()
        if not (params.ponder or params.infinite):
            self.release.set()
        #: Whether a ``ponderhit`` turned this ponder search into the real one.
        self.hit = False
        #: The search's info lines printed while it was still pondering. GUIs and
        #: python-chess (so lichess-bot) drop what a ponder search prints before
        #: ``ponderhit``, so these are printed again before the ``bestmove``.
        self.pondered_report: list[str] = []
        self.answered = threading.Event()  # set just before bestmove is written
        self.done = threading.Event()

    def option(self, name: str) -> Any:
        return self.options[name.lower()]

    # -- what the reader thread calls ------------------------------------------

    def stop(self) -> None:
        self.deadline.stop.set()
        self.release.set()
        self.loader.poke()

    def ponderhit(self, now: float) -> None:
        """The opponent played the expected move: think on the clock from ``now``."""
        if self.deadline.ponderhit(now):
            self.hit = True
            if not self.params.infinite:
                self.release.set()

    def waits_for_release(self) -> bool:
        """Whether the bestmove waits for ``stop`` or ``ponderhit``."""
        return not self.release.is_set()

    # -- output ------------------------------------------------------------------

    def _send(self, line: str) -> None:
        """Print a line of this search, unless ``quit`` has come (then the GUI reads no more)."""
        if not self.quitting.is_set():
            self.out.send(line)

    def _send_report(self, line: str) -> None:
        """Print one of the search's score lines, remembering it when it comes during pondering."""
        if self.deadline.pondering:
            self.pondered_report.append(line)
        self._send(line)

    def _info(self, text: str) -> None:
        if not self.quitting.is_set():
            self.out.info(text)

    def _elapsed(self) -> float:
        return max(self.clock() - self.started, 0.0)

    # -- the search ------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # never leave the GUI without a bestmove
            self._info(f"error: search failed: {type(exc).__name__}: {exc}")
            if self.out.debug:
                import traceback

                self.out.log(traceback.format_exc())
            if not self.answered.is_set():
                self.board = self.root  # the failed search may have left moves on its board
                self._play_unevaluated("the search failed")
        finally:
            self.done.set()

    def _run(self) -> None:
        board = self.board
        if not any(board.generate_legal_moves()):
            score = "mate 0" if board.is_check() else "cp 0"
            self._info("game over: " + ("checkmate" if board.is_check() else "stalemate"))
            self._send(f"info depth 0 score {score}")
            self._finish(None, None)
            return
        searchmoves = self._searchmoves()
        loader, deadline = self.loader, self.deadline
        # 1. The engine's modules: its time management and fallback move need them.
        loader.wait_for(lambda: loader.modules is not None, deadline.wait_limit, deadline.stop)
        modules = loader.modules
        if modules is not True:
            self._play_unevaluated("the engine is still starting" if modules is None
                                   else f"the engine cannot be imported: {modules}")
            return
        deadline.use_engine_timing()
        # 2. The weights asked for, as long as the time allows; else the previous ones, if any.
        loader.wait_for(loader.current, deadline.wait_limit, deadline.stop)
        with loader.cond:
            engine, error, generation, current = loader.engine, loader.error, loader.generation, loader.current()
        if engine is None:
            self._play_unevaluated(error if current and error else STILL_LOADING)
            return
        if not current:
            self._info(f"the new weights are still loading; searching with {engine.describe()}")
        # 3. The search.
        self.configure(engine, self.options, generation)
        deadline.use_engine_timing(engine.predicted_seconds(board))  # the time-trouble rule needs its speed
        result = engine.choose_move(board, control=deadline, nodes=self.params.nodes, searchmoves=searchmoves,
                               ponder=bool(self.option("Ponder")))
        notes, lines = result_lines(board, result, elapsed=self._elapsed(), multipv=int(self.option("MultiPV")),
                                    show_wdl=bool(self.option("UCI_ShowWDL")))
        for note in notes:
            self._info(note)
        for line in lines:
            self._send_report(line)
        self._finish(result.bestmove, result.ponder)

    def _searchmoves(self) -> list[chess.Move] | None:
        if not self.params.searchmoves:
            return None
        moves = []
        for text in self.params.searchmoves:
            try:
                moves.append(parse_move(self.board, text))
            except ValueError:
                self._info(f"searchmoves: {echo(text)} is not a legal move here; ignored")
        if not moves:
            self._info("searchmoves: no legal move given; searching all moves")
            return None
        return moves

    def _play_unevaluated(self, reason: str) -> None:
        """Play a move chosen without the network, and say why."""
        move, score = unevaluated_move(self.board)
        self._info(f"{NO_NETWORK} ({reason}); playing a legal move without evaluation")
        self._send(score_line(multipv=1, score=score, nodes=0, nps=0, time_ms=int(self._elapsed() * 1000),
                              pv=self.board.uci(move)))
        self._finish(move, None)

    def _finish(self, move: chess.Move | None, ponder: chess.Move | None) -> None:
        """4 and 5: wait until the bestmove may be printed, then print it, once."""
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
