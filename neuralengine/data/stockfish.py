"""A small, fast UCI client for Stockfish over raw pipes.

The data tools talk to Stockfish directly instead of through
:mod:`chess.engine`: annotating every legal move produces a couple of hundred
``info`` lines per position, and reading only the few fields we need keeps the
Python side far below one percent of Stockfish's own time.

Scores are returned in the text format of :mod:`neuralengine.data.text`:
centipawns as ``"35"`` and mates as ``"#3"`` / ``"#-2"``, from the point of view
of the side to move in the searched position.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

from neuralengine.paths import find_stockfish

class EngineError(RuntimeError):
    """Stockfish misbehaved: it died, hung or answered something unexpected."""


class EngineNotFoundError(EngineError):
    """No Stockfish binary at the given path or on ``PATH``."""


def resolve_engine(path: str | None = None) -> list[str]:
    """Turn an engine path (or ``None`` for the default) into a command line.

    ``None`` looks for ``stockfish`` as :func:`neuralengine.paths.find_stockfish`
    does (``PATH``, then Debian's ``/usr/games``). A path containing spaces is split like a shell would, so a
    wrapper such as ``"taskset -c 1 stockfish"`` works.

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
    found = shutil.which(exe) if os.sep not in exe else (exe if os.path.isfile(exe) else None)
    if found is None:
        raise EngineNotFoundError(f"Stockfish binary {exe!r} not found; install it (apt-get install stockfish) "
                                  "or pass --stockfish PATH")
    if not os.access(found, os.X_OK):
        raise EngineNotFoundError(f"Stockfish binary {found!r} is not executable")
    return [found, *command[1:]]


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
class SearchResult:
    """Everything a search reported that the data tools use."""

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


class Stockfish:
    """One Stockfish process driven over its stdin/stdout pipes.

    Not thread-safe: one caller at a time. Every method raises
    :class:`EngineError` if the process dies or stops answering.

    :param command: the command line (see :func:`resolve_engine`).
    :param options: UCI options to set after the handshake.
    :param timeout: seconds allowed for the handshake and ``isready``.
    """

    def __init__(self, command: Sequence[str], options: Mapping[str, object] | None = None,
                 timeout: float = 30.0) -> None:
        self.command = list(command)
        self.timeout = timeout
        self.name = "unknown engine"
        self.option_names: dict[str, str] = {}
        self._current: dict[str, str] = {}
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as exc:
            raise EngineNotFoundError(f"cannot start {self.command[0]!r}: {exc}") from None
        _enlarge_pipe(self.process.stdout)
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
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, self.process.kill)
            timer.daemon = True
            timer.start()
        lines = []
        try:
            while True:
                line = self.readline()
                lines.append(line)
                if line.startswith(prefix):
                    return lines
        except EngineError:
            if timer is not None and not timer.is_alive():
                raise EngineError(f"{self.command[0]!r} did not answer {prefix!r} within {timeout:g} s") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()

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

    def search(self, fen: str, go: str, moves: Sequence[str] = ()) -> SearchResult:
        """Search ``fen`` (plus ``moves``) with ``go <go>`` and collect the scores.

        :param go: the limit, e.g. ``"depth 7"`` or ``"nodes 20000"``.
        """
        self.send(search_command(fen, go, moves))
        return self.read_search()

    def read_search(self) -> SearchResult:
        """Read one search's output, up to and including its ``bestmove``."""
        result = SearchResult(None)
        exact, bound, lines = result.exact, result.bound, result.lines
        readline = self.readline
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

    def search_many(self, commands: Iterable[str]) -> Iterator[SearchResult]:
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


class EngineSlot:
    """One Stockfish (``Threads 1``), started when first needed; :meth:`drop` closes it after a failure."""

    def __init__(self, command: list[str], hash_mb: int) -> None:
        self.command, self.hash_mb = command, hash_mb
        self.engine: Stockfish | None = None

    def get(self) -> Stockfish:
        if self.engine is None:
            self.engine = Stockfish(self.command, {"Threads": 1, "Hash": self.hash_mb})
        return self.engine

    def drop(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = None
