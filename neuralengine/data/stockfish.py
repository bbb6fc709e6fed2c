"""A small, fast UCI client for Stockfish over raw pipes.

The data tools talk to Stockfish directly instead of through
:mod:`chess.engine`: annotating every legal move produces a couple of hundred
``info`` lines per position, and reading only the few fields we need keeps the
Python side far below one percent of Stockfish's own time.

Scores are returned in the text format of :mod:`neuralengine.data.text`:
centipawns as ``"35"`` and mates as ``"#3"`` / ``"#-2"``, from the point of view
of the side to move in the searched position.

Reads have time limits (the handshake and ``isready`` always, searches when
a ``search_timeout`` is given, as every worker of the data tools does): an
engine that stops answering is killed and the call raises
:class:`EngineError`, so the caller can start a new one and redo its work
(:class:`EngineSlot`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from neuralengine.paths import find_stockfish


class EngineError(RuntimeError):
    """Stockfish misbehaved: it died, hung or answered something unexpected."""


class EngineNotFoundError(EngineError):
    """No Stockfish binary at the given path or on ``PATH``."""


def resolve_engine(path: str | None = None) -> list[str]:
    """Turn an engine path (or ``None`` for the default) into a command line.

    The binary is looked up by :func:`neuralengine.paths.find_stockfish`: with
    ``None``, ``stockfish`` on ``PATH`` or in a usual install place. A path
    containing spaces is split like a shell would, so a wrapper such as
    ``"taskset -c 1 stockfish"`` works.

    :raises EngineNotFoundError: with a hint on how to install Stockfish.
    """
    if path is None:
        found = find_stockfish()
        if found is None:
            raise EngineNotFoundError("Stockfish not found on PATH or in /usr/games; install it "
                                      "(apt-get install stockfish) or pass --stockfish PATH")
        return [found]
    command = shlex.split(path)
    if not command:
        raise EngineNotFoundError("empty Stockfish command")
    exe = command[0]
    found = find_stockfish(exe)
    if found is None:
        if os.path.isfile(exe):
            raise EngineNotFoundError(f"Stockfish binary {exe!r} is not executable")
        raise EngineNotFoundError(f"Stockfish binary {exe!r} not found; install it (apt-get install stockfish) "
                                  "or pass --stockfish PATH")
    return [found, *command[1:]]


def search_timeout_for(go: str) -> float:
    """A generous time limit for one search with ``go <go>``, far beyond what
    Stockfish needs even on a slow, busy CPU, so that only a hung engine
    reaches it: 60 s, doubled for each ply of ``depth`` above 10; for
    ``nodes N``, 60 s plus a second per 5,000 nodes; for ``movetime``, 60 s
    more than the move time.
    """
    words = go.split()
    try:
        value = int(words[1])
    except (IndexError, ValueError):
        return 600.0
    if words[0] == "depth":
        return 60.0 * 2.0 ** max(0, value - 10)
    if words[0] == "nodes":
        return 60.0 + value / 5000
    if words[0] == "movetime":
        return 60.0 + value / 1000
    return 600.0


def _enlarge_pipe(stream: object) -> None:
    """Give the engine's output pipe 1 MiB (Linux), so that Stockfish never
    blocks on a full pipe while this process waits for the CPU."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)  # type: ignore[attr-defined]
    except (ImportError, OSError, AttributeError, ValueError):
        pass


def search_command(fen: str, go: str, moves: Sequence[str] = ()) -> str:
    """The ``position`` and ``go`` lines of one search."""
    return f"position fen {fen}" + (" moves " + " ".join(moves) if moves else "") + f"\ngo {go}\n"


@dataclass
class SearchLine:
    """One ``info`` line that carries a score and a principal variation."""

    multipv: int
    move: str
    score: str
    exact: bool
    depth: int


@dataclass
class StockfishSearch:
    """What one Stockfish search reported that the data tools use."""

    bestmove: str | None
    #: Last exact score per first move (text format: ``"35"``, ``"#3"``).
    exact: dict[str, str] = field(default_factory=dict)
    #: Last bound (lower/upper) score per first move: never a label, it only tells
    #: a move that got a bound from one that got no score at all.
    bound: dict[str, str] = field(default_factory=dict)
    #: Latest line per MultiPV rank.
    lines: dict[int, SearchLine] = field(default_factory=dict)
    #: The deepest completed depth reported.
    depth: int = 0


def parse_info(line: str) -> SearchLine | None:
    """Parse the fields we need from one ``info`` line, or ``None``.

    Lines without a score or a PV (``currmove``, ``string``, ``nodes`` only)
    give ``None``.
    """
    if not line.startswith("info ") or " pv " not in line or " score " not in line:
        return None
    tokens = line.split()
    try:
        i = tokens.index("score")
        kind, value = tokens[i + 1], tokens[i + 2]
        exact = not (len(tokens) > i + 3 and tokens[i + 3] in ("lowerbound", "upperbound"))
        move = tokens[tokens.index("pv") + 1]
        multipv = int(tokens[tokens.index("multipv") + 1]) if "multipv" in tokens else 1
        depth = int(tokens[tokens.index("depth") + 1]) if "depth" in tokens else 0
        int(value)
    except (ValueError, IndexError):
        return None
    if kind == "cp":
        score = value
    elif kind == "mate":
        score = "#" + value
    else:
        return None
    return SearchLine(multipv, move, score, exact, depth)


#: :attr:`Stockfish.name` until the engine has said its name.
UNKNOWN_NAME = "unknown engine"


class Stockfish:
    """One Stockfish process driven over its stdin/stdout pipes.

    Not thread-safe: one caller at a time. Every method raises
    :class:`EngineError` if the process dies or stops answering; a read that
    runs past its time limit kills the process first.

    :param command: the command line (see :func:`resolve_engine`).
    :param options: UCI options to set after the handshake.
    :param timeout: seconds allowed for the handshake and ``isready``.
    :param search_timeout: seconds allowed for one search (see
        :func:`search_timeout_for`); None: no limit.
    """

    def __init__(self, command: Sequence[str], options: Mapping[str, object] | None = None,
                 timeout: float = 30.0, search_timeout: float | None = None) -> None:
        self.command = list(command)
        self.timeout = timeout
        self.search_timeout = search_timeout
        self.name = UNKNOWN_NAME
        self.option_names: dict[str, str] = {}
        self._current: dict[str, str] = {}
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as exc:
            raise EngineNotFoundError(f"cannot start {self.command[0]!r}: {exc}") from None
        _enlarge_pipe(self.process.stdout)
        self._watchdog = _Watchdog(self.process.kill)
        try:
            self._handshake()
            for name, value in (options or {}).items():
                self.set_option(name, value)
            self.ping()
        except EngineError:
            self.close()
            raise

    # -- plumbing ----------------------------------------------------------

    def send(self, text: str) -> None:
        """Write one or more command lines."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(text if text.endswith("\n") else text + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise EngineError(f"{self.name} died (exit code {self.process.poll()})") from None

    def readline(self) -> str:
        """The next output line, without its newline."""
        assert self.process.stdout is not None
        try:
            line = self.process.stdout.readline()
        except (OSError, ValueError):
            line = ""
        if not line:
            raise EngineError(f"{self.name} died (exit code {self.process.wait()})")
        return line.rstrip("\r\n")

    def _read_until(self, prefix: str, timeout: float | None) -> list[str]:
        """Read lines until one starts with ``prefix``; kill the engine on timeout."""
        lines: list[str] = []
        with self._deadline(timeout, f"did not answer {prefix!r}"):
            while True:
                line = self.readline()
                lines.append(line)
                if line.startswith(prefix):
                    return lines

    def _deadline(self, timeout: float | None, what: str) -> "_Armed":
        """The block's reads must end within ``timeout`` seconds, or the engine is killed and
        the :class:`EngineError` says ``what`` it failed to do."""
        return _Armed(self, timeout, what)

    def _handshake(self) -> None:
        try:
            self.send("uci")
            lines = self._read_until("uciok", self.timeout)
        except EngineError as exc:
            raise EngineError(f"{self.command[0]!r} is not a working UCI engine: {exc}") from None
        for line in lines:
            if line.startswith("id name "):
                self.name = line[len("id name "):].strip()
            elif line.startswith("option name "):
                rest = line[len("option name "):]
                name = rest.split(" type ")[0].strip()
                self.option_names[name.lower()] = name

    def ping(self) -> None:
        """Send ``isready`` and wait for ``readyok``."""
        self.send("isready")
        self._read_until("readyok", self.timeout)

    def has_option(self, name: str) -> bool:
        return name.lower() in self.option_names

    def set_option(self, name: str, value: object) -> None:
        """Set a UCI option; re-sending an unchanged value is skipped.

        :raises EngineError: if the engine has no such option.
        """
        if not self.has_option(name):
            raise EngineError(f"{self.name} has no option {name!r}")
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if self._current.get(name.lower()) == text:
            return
        self.send(f"setoption name {self.option_names[name.lower()]} value {text}")
        self._current[name.lower()] = text

    def new_game(self) -> None:
        """``ucinewgame``: clears the hash and history, then waits until ready."""
        self.send("ucinewgame")
        self.ping()

    # -- searching ---------------------------------------------------------

    def search(self, fen: str, go: str, moves: Sequence[str] = ()) -> StockfishSearch:
        """Search ``fen`` (plus ``moves``) with ``go <go>`` and collect the scores.

        :param go: the limit, e.g. ``"depth 7"`` or ``"nodes 20000"``.
        """
        self.send(search_command(fen, go, moves))
        return self.read_search()

    def read_search(self) -> StockfishSearch:
        """Read one search's output, up to and including its ``bestmove``.

        :raises EngineError: if the engine dies, or does not finish within
            :attr:`search_timeout` seconds (it is killed then).
        """
        result = StockfishSearch(None)
        exact, bound, lines = result.exact, result.bound, result.lines
        readline = self.readline
        with self._deadline(self.search_timeout, "did not finish a search"):
            while True:
                line = readline()
                if line.startswith("bestmove"):
                    parts = line.split()
                    result.bestmove = parts[1] if len(parts) > 1 and parts[1] != "(none)" else None
                    return result
                info = parse_info(line)
                if info is None:
                    continue
                lines[info.multipv] = info
                if info.exact:
                    exact[info.move] = info.score
                    if info.depth > result.depth:
                        result.depth = info.depth
                else:
                    bound[info.move] = info.score

    def search_many(self, commands: Iterable[str]) -> Iterator[StockfishSearch]:
        """Run searches back to back, keeping the next one queued in the engine.

        Each item of ``commands`` is the text that sets up and starts one
        search (see :func:`search_command`; it may begin with ``ucinewgame``).
        The next item is written while the current search runs, so Stockfish
        starts it the moment it prints ``bestmove`` instead of waiting for
        this process to read the output and answer. Stockfish handles a
        ``position``/``go`` that arrives during a search only after that search
        has finished, so the results are exactly those of one-at-a-time
        searches. The commands must not change options between searches.
        """
        it = iter(commands)
        first = next(it, None)
        if first is None:
            return
        self.send(first)
        for queued in it:
            self.send(queued)
            yield self.read_search()
        yield self.read_search()

    def close(self) -> None:
        """Ask the engine to quit, and kill it if it does not."""
        self._watchdog.close()
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout=2)
            except (EngineError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def __enter__(self) -> "Stockfish":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Watchdog:
    """Calls ``kill`` when a read runs past its deadline: one thread per engine, started on first use,
    so that a search costs no new thread."""

    def __init__(self, kill: Callable[[], None]) -> None:
        self.kill = kill
        self.deadline: float | None = None
        self.fired = False
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> None:
        self.fired = False
        self.deadline = time.monotonic() + seconds
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stockfish-watchdog", daemon=True)
            self._thread.start()
        self._wake.set()

    def disarm(self) -> None:
        self.deadline = None

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            deadline = self.deadline
            left = None if deadline is None else deadline - time.monotonic()
            if left is None or left > 0:
                self._wake.wait(left)
                self._wake.clear()
            elif self.deadline is deadline:  # still the same read: it ran out of time
                self.fired = True
                self.kill()
                self.deadline = None


class _Armed:
    """The context of :meth:`Stockfish._deadline`."""

    def __init__(self, engine: Stockfish, timeout: float | None, what: str) -> None:
        self.engine, self.timeout, self.what = engine, timeout, what

    def __enter__(self) -> None:
        if self.timeout is not None:
            self.engine._watchdog.arm(self.timeout)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        watchdog = self.engine._watchdog
        if self.timeout is None:
            return
        watchdog.disarm()
        if kind is not None and issubclass(kind, EngineError) and watchdog.fired:
            engine = self.engine
            who = engine.name if engine.name != UNKNOWN_NAME else repr(engine.command[0])
            raise EngineError(f"{who} {self.what} within {self.timeout:g} s; killed it") from None


class EngineSlot:
    """One Stockfish (``Threads 1``), started when first needed; :meth:`drop` closes it after a failure.

    :param search_timeout: seconds allowed for one search (see :class:`Stockfish`).
    """

    def __init__(self, command: list[str], hash_mb: int, search_timeout: float | None = None) -> None:
        self.command, self.hash_mb, self.search_timeout = command, hash_mb, search_timeout
        self.engine: Stockfish | None = None

    def get(self) -> Stockfish:
        if self.engine is None:
            self.engine = Stockfish(self.command, {"Threads": 1, "Hash": self.hash_mb},
                                    search_timeout=self.search_timeout)
        return self.engine

    def drop(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = None
