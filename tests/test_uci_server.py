"""The UCI server's state machine, in-process.

:class:`UciServer` runs here on a reader thread (:func:`serve`) as in the real
executable, with three stand-ins the test controls:

* a fake engine whose searches block until the test opens their gate;
* an engine factory whose loads block the same way, or fail;
* a clock that moves only when the test moves it.

The last section puts the real :class:`~neuralengine.engine.Engine` (the tiny
test model through ONNX Runtime) into the server instead of the fake one. Its
network calls advance the same fake clock by a set time, so the time limits
of real searches are checked exactly: which moves are evaluated, and when the
answer comes on the server's clock.

Nothing sleeps and nothing is timed: the tests synchronise on events and
queues (each wait has a generous timeout that only turns a hang into a
failure) and check the exact lines the server printed.
"""

from __future__ import annotations

import queue
import random
import threading
from pathlib import Path
from typing import Iterator

import chess
import numpy as np
import pytest

from neuralengine.backends import Backend, create_backend
from neuralengine.engine import Engine, MoveChoice, MoveScore, time_budget
from neuralengine.uci import Output, UciServer, make_options, serve
from neuralengine.weights import WeightsError
from uci_pipe import info_fields

#: Seconds before a wait counts as a hang (never reached when the server works).
HANG = 20.0


class Sink:
    """The server's stdout: complete lines go to a queue."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.buffer = b""
        #: Called with each line as it is written (on the writing thread).
        self.on_line = lambda line: None

    def write(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\n", 1)
            line = raw.decode()
            self.on_line(line)
            self.lines.put(line)

    def flush(self) -> None:
        pass


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """What the server needs of :class:`~neuralengine.engine.Engine`.

    A search blocks while :attr:`gate` is closed, like a network call that
    cannot be interrupted. It plays the first move in UCI order (``a2a3``
    from the start position), scores every move 0.5 (``cp 0``) and, when
    asked, names the first reply in UCI order as the ponder move.
    """

    def __init__(self, name: str, predicted: float = 0.01) -> None:
        self.name = name
        self.predicted = predicted
        self.batch_size = 256
        self.temperature = 0.0
        self.temperature_moves = 0
        self.mate_rule = True
        self.rng = random.Random()
        self.gate = threading.Event()
        self.gate.set()
        #: The control of every search, put when it starts.
        self.started: queue.Queue = queue.Queue()
        #: One number from :attr:`rng` per search.
        self.draws: list[float] = []
        #: A copy of the board of every search, with the move stack it was given.
        self.boards: list[chess.Board] = []
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        #: Raised by every search once set, after it has played a move on its board.
        self.failure: Exception | None = None

    def describe(self) -> str:
        return f"fake {self.name}"

    def predicted_seconds(self, board: chess.Board) -> float:
        return self.predicted

    def choose_move(self, board: chess.Board, *, control, nodes=None, searchmoves=None, ponder=False) -> MoveChoice:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            self.boards.append(board.copy())
            self.started.put(control)
            assert self.gate.wait(HANG), "the test never opened the gate"
            self.draws.append(self.rng.random())
            if self.failure is not None:
                board.push(next(iter(board.legal_moves)))  # a search that fails half-way
                raise self.failure
            moves = sorted(searchmoves or board.legal_moves, key=lambda m: m.uci())
            reply = None
            if ponder:
                board.push(moves[0])
                reply = min(board.legal_moves, key=lambda m: m.uci())
                board.pop()
            ranked = [MoveScore(m, i, 0.5, 0.5, None) for i, m in enumerate(moves)]
            return MoveChoice(moves[0], ranked=ranked, nodes=len(moves), ponder=reply)
        finally:
            with self.lock:
                self.running -= 1


class Factory:
    """Opens fake engines by path; a load can be held back or fail."""

    def __init__(self) -> None:
        self.items: dict[str, FakeEngine | Exception] = {}
        self.gates: dict[str, threading.Event] = {}
        #: Each path as its load starts.
        self.opened: queue.Queue[str] = queue.Queue()

    def add(self, path: str, item: FakeEngine | Exception) -> None:
        self.items[path] = item

    def hold(self, path: str) -> threading.Event:
        """Make the loads of ``path`` wait until the returned event is set."""
        gate = self.gates[path] = threading.Event()
        return gate

    def __call__(self, path: str, backend: str, threads: int) -> FakeEngine:
        self.opened.put(path)
        gate = self.gates.get(path)
        if gate is not None:
            assert gate.wait(HANG), "the test never let the load finish"
        item = self.items[path]
        if isinstance(item, Exception):
            raise item
        return item


class Session:
    """A server on its reader thread, fed line by line; its output read line by line."""

    def __init__(self, factory: Factory, weights: str = "good", clock: FakeClock | None = None) -> None:
        self.sink = Sink()
        self.clock = clock or FakeClock()
        self.server = UciServer(Output(self.sink), make_options(weights=weights), engine_factory=factory,
                                clock=self.clock)
        self.inbox: queue.Queue[str | None] = queue.Queue()
        #: Each line once the reader thread has taken it in (and stamped it with the clock).
        self.taken: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=serve, args=(self.server, self._lines()), kwargs={"grace": HANG},
                                       daemon=True)
        self.thread.start()

    def _lines(self) -> Iterator[str]:
        while True:
            line = self.inbox.get()
            if line is None:
                return
            yield line
            self.taken.put(line)

    def send(self, *lines: str) -> None:
        for line in lines:
            self.inbox.put(line)

    def send_taken(self, line: str) -> None:
        """Send ``line`` and return once the reader has stamped it."""
        self.send(line)
        while self.taken.get(timeout=HANG) != line:
            pass

    def read(self) -> str:
        try:
            return self.sink.lines.get(timeout=HANG)
        except queue.Empty:
            raise AssertionError("the server printed nothing more") from None

    def until(self, prefix: str) -> list[str]:
        """The lines up to and including the first that starts with ``prefix``."""
        lines = [self.read()]
        while not lines[-1].startswith(prefix):
            lines.append(self.read())
        return lines

    def sync(self) -> list[str]:
        """Everything printed before the answer to an ``isready`` (the loader must be idle)."""
        self.send("isready")
        return self.until("readyok")

    def start(self) -> None:
        """``uci`` and ``isready`` with the weights loading freely."""
        self.send("uci")
        assert self.until("uciok")[-1] == "uciok"
        assert self.sync() == ["info string loaded fake good", "readyok"]

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.server.loader.poke()

    def quit(self) -> None:
        self.send("quit")
        self.thread.join(HANG)
        assert not self.thread.is_alive()

    def nothing_more(self) -> None:
        """After :meth:`quit`: no line was left unread."""
        assert self.sink.lines.empty(), list(self.sink.lines.queue)


def info(pv: str, nodes: int = 20, time_ms: int = 0, multipv: int = 1) -> str:
    """The line the server prints for the fake engine's result."""
    nps = round(nodes * 1000 / time_ms) if time_ms else 0
    return f"info depth 1 seldepth 1 multipv {multipv} score cp 0 nodes {nodes} nps {nps} time {time_ms} pv {pv}"


def unevaluated(reason: str, pv: str, time_ms: int = 0) -> list[str]:
    """The lines of a move played without the network."""
    return [f"info string no network available ({reason}); playing a legal move without evaluation",
            f"info depth 1 seldepth 1 multipv 1 score cp 0 nodes 0 nps 0 time {time_ms} pv {pv}"]


STILL_LOADING = "the weights are still loading"
#: The move chosen without the network in the start position (the lowest action index).
FALLBACK = "b1a3"


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine("good")


@pytest.fixture
def factory(engine: FakeEngine) -> Factory:
    made = Factory()
    made.add("good", engine)
    return made


@pytest.fixture
def session(factory: Factory) -> Iterator[Session]:
    made = Session(factory)
    yield made
    # Open every gate so that no thread is left waiting.
    for gate in factory.gates.values():
        gate.set()
    for item in factory.items.values():
        if isinstance(item, FakeEngine):
            item.gate.set()
    if made.thread.is_alive():
        made.send("quit")
        made.thread.join(HANG)


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def test_stop_during_load_plays_the_fallback_at_once(session: Session, factory: Factory, engine: FakeEngine) -> None:
    load = factory.hold("good")
    session.send("uci")
    session.until("uciok")
    assert factory.opened.get(timeout=HANG) == "good"
    session.send("position startpos", "go infinite", "stop")
    assert session.until("bestmove") == unevaluated(STILL_LOADING, FALLBACK) + [f"bestmove {FALLBACK}"]
    load.set()
    assert session.sync() == ["info string loaded fake good", "readyok"]
    session.send("go movetime 1000")
    assert session.until("bestmove") == [info("a2a3"), "bestmove a2a3"]
    assert engine.started.qsize() == 1


def test_timed_go_during_load_answers_when_its_time_is_up(session: Session, factory: Factory) -> None:
    load = factory.hold("good")
    session.send("uci")
    session.until("uciok")
    assert factory.opened.get(timeout=HANG) == "good"
    session.send_taken("position startpos")
    session.send_taken("go movetime 100")
    session.advance(0.1)
    assert session.until("bestmove") == unevaluated(STILL_LOADING, FALLBACK, 100) + [f"bestmove {FALLBACK}"]
    assert not session.server.loader.ready()  # answered without the weights, which are still loading
    load.set()
    assert session.sync() == ["info string loaded fake good", "readyok"]


def test_go_counts_its_time_from_its_arrival(session: Session, factory: Factory, engine: FakeEngine) -> None:
    # The go waits behind an isready that waits for the weights; its time runs meanwhile.
    load = factory.hold("good")
    session.send("uci")
    session.until("uciok")
    session.send_taken("isready")
    arrived = session.clock.now
    session.send_taken("go movetime 100")
    session.advance(1.0)
    load.set()
    control = engine.started.get(timeout=HANG)
    assert control.deadline == pytest.approx(arrived + time_budget(movetime=0.1, overhead=0.03))
    assert session.until("bestmove") == ["info string loaded fake good", "readyok",
                                         "info string go without a position: searching the start position",
                                         info("a2a3", time_ms=1000), "bestmove a2a3"]


def test_quit_while_isready_waits_for_a_stuck_load() -> None:
    # A load that never ends, as reading a FIFO that nobody writes to: quit is still obeyed at once.
    opened, stuck = threading.Event(), threading.Event()

    def open_stuck(path: str, backend: str, threads: int) -> FakeEngine:
        opened.set()
        stuck.wait()
        raise OSError("the load was released by the test")

    session = Session(open_stuck)  # type: ignore[arg-type]
    try:
        session.send("uci")
        session.until("uciok")
        assert opened.wait(HANG)
        session.send("isready", "quit")
        session.thread.join(HANG)
        assert not session.thread.is_alive(), "quit was not handled while isready waited"
        session.nothing_more()  # no readyok after quit
        assert session.server.loader.busy  # the load is still stuck; nothing waited for it
    finally:
        stuck.set()


def test_bad_weights_keep_the_previous_model(session: Session, factory: Factory, engine: FakeEngine) -> None:
    factory.add("broken.safetensors", WeightsError("broken.safetensors: not a safetensors file"))
    session.start()
    session.send("setoption name WeightsFile value broken.safetensors")
    assert session.sync() == ["info string error: cannot load the weights: broken.safetensors: not a safetensors "
                              "file; still playing with fake good", "readyok"]
    session.send("position startpos", "go movetime 1000")
    assert session.until("bestmove") == [info("a2a3"), "bestmove a2a3"]
    assert engine.started.qsize() == 1


def test_new_weights_replace_the_model_once_loaded(session: Session, factory: Factory, engine: FakeEngine) -> None:
    other = FakeEngine("other")
    factory.add("other", other)
    session.start()
    load = factory.hold("other")
    session.send("setoption name WeightsFile value other")
    assert factory.opened.get(timeout=HANG) == "good"
    assert factory.opened.get(timeout=HANG) == "other"
    # A timed go whose time runs out during the load plays the model it has.
    session.send_taken("position startpos")
    session.send_taken("go movetime 100")
    session.advance(0.1)
    control = engine.started.get(timeout=HANG)
    assert control is not None and other.started.empty()
    assert session.until("bestmove") == ["info string the new weights are still loading; searching with fake good",
                                         info("a2a3", time_ms=100), "bestmove a2a3"]
    load.set()
    assert session.sync() == ["info string loaded fake other", "readyok"]
    session.send("go movetime 100")
    assert session.until("bestmove") == [info("a2a3"), "bestmove a2a3"]
    assert other.started.qsize() == 1


# --------------------------------------------------------------------------
# One search at a time
# --------------------------------------------------------------------------


def test_go_during_a_search_waits_for_its_bestmove(session: Session, engine: FakeEngine) -> None:
    session.start()
    engine.gate.clear()
    session.send("position startpos", "go infinite")
    first = engine.started.get(timeout=HANG)
    session.send("go movetime 1000")
    assert session.read() == "info string go while a search is running: the running search is stopped first"
    assert first.stop.wait(HANG)
    # The first search is still in its network call; the second has not started.
    assert engine.started.empty()
    engine.gate.set()
    assert session.until("bestmove") == [info("a2a3"), "bestmove a2a3"]
    assert session.until("bestmove") == [info("a2a3"), "bestmove a2a3"]
    assert engine.started.qsize() == 1 and engine.most_running == 1
    assert session.sync() == ["readyok"]


def test_ucinewgame_during_a_search_waits_for_its_bestmove(session: Session, engine: FakeEngine) -> None:
    session.start()
    engine.gate.clear()
    session.send("position startpos moves e2e4", "go wtime 60000 btime 60000")
    first = engine.started.get(timeout=HANG)
    session.send("ucinewgame", "go movetime 1000")
    assert first.stop.wait(HANG)
    assert engine.started.empty()  # the go after ucinewgame waits
    engine.gate.set()
    # The timed search is stopped and answers; the next go searches the start position.
    assert session.until("bestmove") == [info("a7a5"), "bestmove a7a5"]
    assert session.until("bestmove") == ["info string go without a position: searching the start position",
                                         info("a2a3"), "bestmove a2a3"]
    assert engine.most_running == 1


def test_go_right_after_bestmove_finds_the_search_answered(session: Session, engine: FakeEngine) -> None:
    seen: list[bool] = []

    def on_line(line: str) -> None:
        if line.startswith("bestmove"):
            # What a go sent as soon as this line is read would find.
            seen.append(session.server.job.answered.is_set())

    session.sink.on_line = on_line
    session.start()
    session.send("position startpos")
    for _ in range(3):
        session.send("go movetime 1000")
        assert session.until("bestmove") == [info("a2a3"), "bestmove a2a3"]
    assert seen == [True, True, True]


def test_isready_during_a_search_is_answered_at_once(session: Session, engine: FakeEngine) -> None:
    session.start()
    engine.gate.clear()
    session.send("position startpos", "go movetime 1000")
    engine.started.get(timeout=HANG)
    assert session.sync() == ["readyok"]
    engine.gate.set()
    assert session.until("bestmove") == [info("a2a3"), "bestmove a2a3"]


def test_setoption_during_a_search_applies_to_the_next_one(session: Session, factory: Factory,
                                                           engine: FakeEngine) -> None:
    other = FakeEngine("other")
    factory.add("other", other)
    session.start()
    engine.gate.clear()
    session.send("position startpos", "go infinite")
    engine.started.get(timeout=HANG)
    session.send("setoption name MultiPV value 2", "setoption name WeightsFile value other")
    assert session.sync() == ["info string loaded fake other", "readyok"]
    session.send("stop")
    engine.gate.set()
    assert session.until("bestmove") == [info("a2a3"), "bestmove a2a3"]
    session.send("go movetime 1000")
    assert session.until("bestmove") == [info("a2a3"), info("a2a4", multipv=2), "bestmove a2a3"]
    assert engine.started.empty() and other.started.qsize() == 1


def test_quit_during_a_long_evaluation_prints_nothing_more(session: Session, engine: FakeEngine) -> None:
    session.start()
    engine.gate.clear()
    session.send("position startpos", "go infinite")
    control = engine.started.get(timeout=HANG)
    session.send("go movetime 1000", "quit")
    assert session.read() == "info string go while a search is running: the running search is stopped first"
    assert control.stop.wait(HANG) and session.server.quitting.wait(HANG)
    engine.gate.set()  # the network call ends; after quit, the search prints nothing
    session.thread.join(HANG)
    assert not session.thread.is_alive()
    session.nothing_more()
    assert engine.started.empty() and len(engine.draws) == 1  # the second go never searched


def test_a_failed_search_plays_the_move_without_the_network(session: Session, engine: FakeEngine) -> None:
    session.start()
    engine.failure = RuntimeError("boom")
    session.send("position startpos", "go movetime 1000")
    assert session.until("bestmove") == (["info string error: search failed: RuntimeError: boom"]
                                         + unevaluated("the search failed", FALLBACK) + [f"bestmove {FALLBACK}"])
    engine.failure = None
    session.send("go movetime 1000")  # the position is as it was
    assert session.until("bestmove") == [info("a2a3"), "bestmove a2a3"]


# --------------------------------------------------------------------------
# Pondering
# --------------------------------------------------------------------------


def test_ponderhit_during_the_search_uses_the_time_trouble_budget(session: Session, engine: FakeEngine) -> None:
    engine.predicted = 0.15  # longer than the clock's share of 2 s, short enough for the time-trouble rule
    with_rule = time_budget(time_left=2.0, overhead=0.03, needed=0.15)
    assert with_rule != time_budget(time_left=2.0, overhead=0.03)  # the rule matters here
    session.start()
    engine.gate.clear()
    session.send("setoption name Ponder value true", "position startpos", "go ponder wtime 2000 btime 2000")
    control = engine.started.get(timeout=HANG)
    assert control.deadline is None  # pondering: no limit yet
    session.advance(5.0)
    hit = session.clock.now
    session.send("ponderhit")
    assert session.sync() == ["readyok"]
    assert control.deadline == pytest.approx(hit + with_rule)
    engine.gate.set()
    assert session.until("bestmove") == [info("a2a3 a7a5", time_ms=5000), "bestmove a2a3 ponder a7a5"]


def test_ponderhit_after_the_search_ended(session: Session, engine: FakeEngine) -> None:
    session.start()
    session.send("setoption name Ponder value true", "position startpos", "go ponder wtime 2000 btime 2000")
    assert session.read() == info("a2a3 a7a5")  # the search has ended; the bestmove waits
    assert session.sync() == ["readyok"]
    session.send("ponderhit")
    # python-chess (and so lichess-bot) drops what a ponder search printed
    # before ponderhit: the score comes again, then the move.
    assert session.read() == info("a2a3 a7a5")
    assert session.read() == "bestmove a2a3 ponder a7a5"
    assert session.sync() == ["readyok"]


def test_stop_ends_a_ponder_search(session: Session, engine: FakeEngine) -> None:
    session.start()
    session.send("setoption name Ponder value true", "position startpos", "go ponder wtime 2000 btime 2000")
    assert session.read() == info("a2a3 a7a5")
    assert session.sync() == ["readyok"]
    session.send("stop")
    assert session.read() == "bestmove a2a3 ponder a7a5"
    session.send("ponderhit", "stop")  # after the bestmove they do nothing
    assert session.sync() == ["readyok"]


def test_ponderhit_on_go_ponder_infinite_still_waits_for_stop(session: Session, engine: FakeEngine) -> None:
    session.start()
    engine.gate.clear()
    session.send("setoption name Ponder value true", "position startpos", "go ponder infinite")
    control = engine.started.get(timeout=HANG)
    session.send("ponderhit")
    assert session.sync() == ["readyok"]
    assert control.deadline is None
    engine.gate.set()
    assert session.read() == info("a2a3 a7a5")
    assert session.sync() == ["readyok"]
    session.send("stop")
    assert session.read() == "bestmove a2a3 ponder a7a5"


def test_ponderhit_during_load_keeps_the_deadline(session: Session, factory: Factory) -> None:
    load = factory.hold("good")
    session.send("uci")
    session.until("uciok")
    assert factory.opened.get(timeout=HANG) == "good"
    session.send("position startpos", "go ponder wtime 2000 btime 2000")
    session.send_taken("ponderhit")
    session.advance(1.0)  # far past the share of a 2 s clock
    assert session.until("bestmove") == unevaluated(STILL_LOADING, FALLBACK, 1000) + [f"bestmove {FALLBACK}"]
    load.set()
    assert session.sync() == ["info string loaded fake good", "readyok"]


# --------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------


def seeded(seed: int, count: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(count)]


def test_seed_zero_after_a_fixed_seed_draws_a_fresh_sequence(session: Session, engine: FakeEngine) -> None:
    session.start()
    session.send("setoption name Seed value 5", "position startpos")
    for _ in range(2):
        session.send("go movetime 1000")
        session.until("bestmove")
    session.send("ucinewgame", "position startpos", "go movetime 1000")  # the sequence starts again
    session.until("bestmove")
    assert engine.draws == seeded(5, 2) + seeded(5, 1)
    session.send("setoption name Seed value 0", "go movetime 1000")
    session.until("bestmove")
    assert engine.draws[3] not in seeded(5, 3)  # a fresh generator, not the seeded one continued


def test_a_new_engine_is_seeded_even_at_the_same_address(session: Session, factory: Factory,
                                                         engine: FakeEngine) -> None:
    factory.add("again", engine)  # the new engine is the same object, as a reused id() would make it look
    session.start()
    session.send("setoption name Seed value 7", "position startpos", "go movetime 1000")
    session.until("bestmove")
    session.send("setoption name WeightsFile value again")
    assert session.sync() == ["info string loaded fake good", "readyok"]
    session.send("go movetime 1000")
    session.until("bestmove")
    assert engine.draws == seeded(7, 1) * 2  # each load starts the seeded sequence again


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------


#: A knight dance of four reversible plies that comes back to its first position.
DANCE = ["g1f3", "g8f6", "f3g1", "f6g8"]


def test_a_long_move_list_gives_the_search_a_bounded_history(session: Session, engine: FakeEngine) -> None:
    # 400 reversible plies, then a pawn move and two more dances: the position
    # after e2e4 has occurred three times.
    moves = DANCE * 100 + ["e2e4"] + ["g8f6", "g1f3", "f6g8", "f3g1"] * 2
    full = chess.Board()
    for move in moves:
        full.push_uci(move)
    session.start()
    session.send("position startpos moves " + " ".join(DANCE * 100), "go movetime 1000")
    session.until("bestmove")
    # The half-move clock (400) is past the fifty-move rule: no earlier position matters.
    assert len(engine.boards[-1].move_stack) <= 100
    assert len(session.server.board.move_stack) <= 100
    session.send("position startpos moves " + " ".join(moves), "go movetime 1000")
    session.until("bestmove")
    searched = engine.boards[-1]
    assert searched.fen() == full.fen()
    assert len(searched.move_stack) == full.halfmove_clock == 8  # the plies since the pawn move, no more
    # python-chess's repetition rules read the same on the bounded history as on the whole game.
    claims = set()
    for move in full.legal_moves:
        verdicts = []
        for board in (full, searched):
            board.push(move)
            verdicts.append((board.can_claim_threefold_repetition(), board.is_fivefold_repetition()))
            board.pop()
        assert verdicts[0] == verdicts[1], move
        if verdicts[0][0]:
            claims.add(move.uci())
    assert "g8f6" in claims  # the history the draw rules need is there


def test_upper_case_promotion_letters_are_accepted(session: Session, engine: FakeEngine) -> None:
    session.start()
    session.send("position fen 4k3/1P6/8/8/8/8/8/4K3 w - - 0 1 moves b7b8Q e8d7", "d")
    assert session.until("info string fen")[-1] == "info string fen 1Q6/3k4/8/8/8/8/8/4K3 w - - 1 2"
    assert session.read().endswith("legal moves; white to move")
    session.send("position fen 4k3/1P6/8/8/8/8/8/4K3 w - - 0 1", "go movetime 1000 searchmoves b7b8N")
    assert session.until("bestmove") == [info("b7b8n", nodes=1), "bestmove b7b8n"]


# --------------------------------------------------------------------------
# The real engine on the server's clock
# --------------------------------------------------------------------------


class TimedBackend(Backend):
    """The real network's scores; each call advances the fake clock by ``fixed + per_row * rows`` seconds.

    :attr:`slow` holds factors for the next calls' durations (a call slowed by
    a busy machine); :attr:`rows` records the rows of every call.
    """

    name = "timed"

    def __init__(self, inner: Backend, clock: FakeClock, fixed: float, per_row: float) -> None:
        super().__init__(inner.config, inner.weights_path, inner.weights_sha256)
        self.inner = inner
        self.clock = clock
        self.fixed = fixed
        self.per_row = per_row
        self.slow: list[float] = []
        self.rows: list[int] = []

    def evaluate(self, boards: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        rows = boards.shape[0] if actions is None else actions.shape[1]
        self.rows.append(rows)
        factor = self.slow.pop(0) if self.slow else 1.0
        self.clock.now += factor * (self.fixed + self.per_row * rows)
        return self.inner.evaluate(boards, actions)


#: Simulated network time: 4 ms a call plus 0.1 ms a move (6 ms for the 20 moves of the start position).
CALL_FIXED, CALL_PER_ROW = 0.004, 0.0001


class RealSession(Session):
    """A session whose engine is the real one, its network calls timed on the session's fake clock."""

    def __init__(self, weights: Path) -> None:
        clock = FakeClock()
        self.backend = TimedBackend(create_backend(weights, "onnx"), clock, CALL_FIXED, CALL_PER_ROW)
        self.engine = Engine(self.backend, clock=clock)
        self.engine.warm_up()  # measured on the fake clock: exactly the simulated times
        super().__init__(lambda path, backend, threads: self.engine, clock=clock)  # type: ignore[arg-type]
        self.send("uci")
        self.until("uciok")
        assert self.sync() == [f"info string loaded {self.engine.describe()}", "readyok"]
        self.backend.rows.clear()

    def go(self, command: str) -> tuple[dict[str, str], str, float]:
        """Send ``command``: its first score line (word -> value), its bestmove and the time it took
        on the fake clock."""
        before = self.clock.now
        self.send(command)
        lines = self.until("bestmove")
        return score_fields(lines), lines[-1], self.clock.now - before

    def close(self) -> None:
        if self.thread.is_alive():
            self.quit()


def score_fields(lines: list[str]) -> dict[str, str]:
    """The first ``info depth`` line as word -> value, ``string`` holding the ``info string`` texts."""
    notes = [line[len("info string "):] for line in lines if line.startswith("info string ")]
    words_line = next(line for line in lines if line.startswith("info depth"))
    return {"string": "; ".join(notes), **info_fields(words_line)}


@pytest.fixture
def real(tiny_weights: Path) -> Iterator[RealSession]:
    made = RealSession(tiny_weights)
    yield made
    made.close()


def call_seconds(rows: int) -> float:
    return CALL_FIXED + CALL_PER_ROW * rows


def test_real_engine_short_clocks_evaluate_every_move(real: RealSession) -> None:
    # The engine plays itself with a clock running down from 1 s, as in a 1+0 game: every
    # move comes from one evaluation of all legal moves, and the answer comes as soon as
    # it is done, well within the clock.
    moves: list[str] = []
    board = chess.Board()
    for ply in range(40):
        clock = 1000 - 20 * ply  # down to 220 ms
        real.send("position startpos" + (" moves " + " ".join(moves) if moves else ""))
        fields, best, took = real.go(f"go wtime {clock} btime {clock}")
        legal = board.legal_moves.count()
        assert fields["nodes"] == str(legal) and not fields["string"], (ply, fields)
        assert real.backend.rows == [legal]  # one call; no ponder without the Ponder option
        assert took == pytest.approx(call_seconds(legal)) and took < clock / 1000 - 0.03
        assert fields["time"] == str(int(took * 1000))
        real.backend.rows.clear()
        move = best.split()[1]
        moves.append(move)
        board.push_uci(move)
        if board.is_game_over(claim_draw=True):
            break
    assert len(moves) >= 10
    # A large Move Overhead leaves a share of nothing, but the clock still holds a search.
    real.send("setoption name Move Overhead value 5000", "position startpos")
    fields, _, took = real.go("go wtime 60000")
    assert fields["nodes"] == "20" and took == pytest.approx(call_seconds(20))


def test_real_engine_without_time_plays_the_fallback_at_once(real: RealSession) -> None:
    # 10 ms on the clock and the default 30 ms overhead: the budget is nothing. The engine
    # is its own fast network: its evaluation, predicted at 9.9 ms, ends within
    # LAST_RESORT_GRACE of the deadline, so it is made as the last resort.
    real.send("position startpos moves e2e4 e7e5 g1f3 b8c6 f1b5 a7a6")
    fields, best, took = real.go("go wtime 10 winc 0")
    assert fields["nodes"] == "32" and "no time for an evaluation" in fields["string"]
    assert "all 32 moves evaluated anyway, as the last resort" in fields["string"]
    assert real.backend.rows == [32] and took == pytest.approx(call_seconds(32))
    board = chess.Board("r1bqkbnr/1ppp1ppp/p1n5/1B2p3/4P3/5N2/PPPP1PPP/RNBQK2R w KQkq - 0 4")
    assert chess.Move.from_uci(best.split()[1]) in board.legal_moves
    # When not even that fits (a machine three times slower than measured), no
    # evaluation is started: the static move comes at once.
    real.backend.rows.clear()
    real.engine.latency.scale = 3.0
    fields, best, took = real.go("go wtime 10 winc 0")
    assert fields["nodes"] == "0" and "no time for an evaluation" in fields["string"]
    assert real.backend.rows == [] and took == 0.0 and fields["time"] == "0"
    assert chess.Move.from_uci(best.split()[1]) in board.legal_moves


@pytest.mark.parametrize("movetime, evaluated", [(5, False), (10, True), (20, True), (50, True), (100, True),
                                                 (200, True)])
def test_real_engine_movetime(real: RealSession, movetime: int, evaluated: bool) -> None:
    # A search is predicted at about 14 ms (the 6 ms call with the safety margin, the
    # rules, setting up and finishing): 20 ms holds it, although the share after the 30 ms
    # Move Overhead is 10 ms. 10 ms does not, but the engine is its own fast network: its
    # evaluation, predicted at 8.3 ms, ends before the movetime, and is made as the last
    # resort. At 5 ms it would not: the static move comes at once.
    real.send("position startpos")
    fields, _, took = real.go(f"go movetime {movetime}")
    if evaluated:
        assert fields["nodes"] == "20" and real.backend.rows == [20]
        assert took == pytest.approx(call_seconds(20))
    else:
        assert fields["nodes"] == "0" and real.backend.rows == [] and took == 0.0
    assert took <= movetime / 1000


def test_real_engine_slow_call_overruns_by_that_call_only(real: RealSession) -> None:
    # BatchSize 8 splits the 20 moves into three calls. The first is 30 times slower
    # than predicted, as on a loaded machine: the deadline passes during it, the other
    # two are never made, and the fallback is played at once. The answer is late by
    # what is left of that one call, never by the whole evaluation.
    real.send("setoption name BatchSize value 8", "position startpos")
    real.backend.slow = [30.0]
    fields, best, took = real.go("go movetime 100")
    assert real.backend.rows == [8]
    assert "the deadline passed after 8 of 20 move evaluations" in fields["string"] and fields["nodes"] == "8"
    assert took == pytest.approx(30 * call_seconds(8)) and took > 0.1
    assert best == "bestmove b1a3"  # the documented fallback of the start position
    # The estimate jumped after the slow call; each move without evaluation halves the
    # correction, so evaluations come back within a few moves and the answers stay in time.
    kinds = []
    for _ in range(10):
        real.backend.rows.clear()
        fields, _, took = real.go("go movetime 100")
        assert took <= 0.1
        kinds.append(fields["nodes"])
        if fields["nodes"] == "20":
            break
    assert kinds[0] == "0" and kinds[-1] == "20" and set(kinds[:-1]) == {"0"} and real.backend.rows == [8, 8, 4]


def test_debug_echo_is_one_log_line_per_input_line(factory: Factory) -> None:
    """With ``debug on`` each input line is echoed on the log as one line, without
    the blank line its own line break would add."""
    import io

    log = io.StringIO()
    server = UciServer(Output(Sink(), log=log), make_options(weights="good"), engine_factory=factory,
                       clock=FakeClock())
    assert server.handle("debug on\n") and server.handle("debug off\r\n")
    lines = log.getvalue().split("\n")
    assert lines[-1] == "" and "" not in lines[:-1], lines
    assert lines[0].endswith(">> debug off"), lines
