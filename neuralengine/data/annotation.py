"""``neuralengine annotate``: Stockfish scores every legal move of each position.

Each position is searched once with a ``MultiPV`` that covers all its legal
moves, at a fixed depth (``go depth D``) or node count (``go nodes N``), so
one search yields an action value for every move. A move's score is the last
exact (not lower/upper bound) score Stockfish reported for it; with a depth
limit that is its score at the final depth. A position where some move got
only a bound is left out and counted as ``bound_only`` in ``skipped``.

The input (positions files, see :mod:`neuralengine.data.positions`) is cut into
fixed shards of ``--shard-size`` lines. Each worker (a process, or a Ray actor
with ``--ray``; see :mod:`neuralengine.data.scheduler`) runs one Stockfish
(``Threads 1``) and annotates whole shards; the driver writes

* ``OUT/<stem>-<k>.txt.gz``: the text format of :mod:`neuralengine.data.text`
  (``FEN<TAB>move:score ...``, moves in python-chess ``legal_moves`` order,
  scores from the side to move: centipawns or ``#N``), and
* ``OUT/<stem>-<k>.json``: the settings, counts and game ids of the shard.

Both files are written atomically (:mod:`neuralengine.atomic`), the JSON
last: a shard whose JSON exists is complete, and a rerun skips it.

The hash is cleared (``ucinewgame``) at the start of each shard and, with
``--clear-hash game`` (the default), at each new game: a line without a game
id is a game of its own. So a label depends only on its own game's positions
before it, never on where the shard boundaries fall or what ran before.
If a Stockfish dies, or a search runs past ``--search-timeout`` (then it is
killed), it is restarted and the shard is redone from its first line; a lost
worker is replaced and its shard redone elsewhere. Nothing is lost or written
twice.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from neuralengine.atomic import atomic_path, remove_stale_temps, write_text
from neuralengine.data.positions import PositionError, is_position_line, iter_position_lines, parse_position
from neuralengine.data.scheduler import Backend, Emit, EventHook, PoolBackend, Scheduler, default_workers, \
    interrupt_exit, sigterm_interrupts
from neuralengine.data.stockfish import EngineError, EngineSlot, Stockfish, resolve_engine, search_command, \
    search_timeout_for


#: Format tag written into every shard's JSON.
FORMAT = "neuralengine-action-values-text"
#: The shard settings that must match before a rerun may reuse a shard.
_SETTING_KEYS = ("engine", "limit", "hash_mb", "clear_hash", "shard_size")


@dataclass
class Settings:
    """What every worker needs (plain data, so it crosses process boundaries)."""

    command: list[str]
    out_dir: str
    depth: int | None = None
    nodes: int | None = None
    hash_mb: int = 32
    clear_hash: str = "game"
    shard_size: int = 2000
    compress: str = "gz"
    max_retries: int = 3
    engine: str = ""
    #: Seconds one search may take before Stockfish is killed and restarted;
    #: None: :func:`~neuralengine.data.stockfish.search_timeout_for` the limit.
    search_timeout: float | None = None

    @property
    def go(self) -> str:
        return f"nodes {self.nodes}" if self.nodes else f"depth {self.depth}"

    @property
    def read_timeout(self) -> float:
        return self.search_timeout or search_timeout_for(self.go)

    @property
    def limit(self) -> dict[str, int]:
        return {"nodes": self.nodes} if self.nodes else {"depth": int(self.depth or 0)}


@dataclass
class Task:
    """One shard: a range of lines of one input file."""

    source: str
    stem: str
    index: int
    first_line: int
    lines: list[str]
    split: str | None = None

    @property
    def name(self) -> str:
        return f"{self.stem}-{self.index:05d}"


@dataclass
class ShardStats:
    positions: int = 0
    action_values: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _suffix(compress: str) -> str:
    return {"gz": ".txt.gz", "xz": ".txt.xz", "none": ".txt"}[compress]


def shard_paths(out_dir: str | os.PathLike[str], name: str, compress: str) -> tuple[Path, Path]:
    """The text file and the JSON sidecar of shard ``name``."""
    out = Path(out_dir)
    return out / f"{name}{_suffix(compress)}", out / f"{name}.json"


# ---------------------------------------------------------------------------
# Annotating one shard (runs inside a worker)
# ---------------------------------------------------------------------------


#: MultiPV sent once: above any position's number of legal moves (218 at most), and Stockfish
#: caps it at the number of legal moves, so every move gets its own line.
ALL_MOVES_MULTIPV = 256


def annotate_lines(engine: Stockfish, lines: Sequence[str], settings: Settings, report: Any = None,
                   name: str = "", first_line: int = 0) -> tuple[list[str], list[list[Any]], ShardStats]:
    """Annotate positions; returns text lines, game runs ``[[id, count], ...]`` and stats.

    A line without a game id counts as a game of its own, ``<name>#<line>``
    (``first_line`` numbers the first of ``lines``): with ``clear_hash="game"``
    the hash is cleared before it, as before every new game. ``report(positions,
    action_values)`` is called now and then with the increments since its
    last call. Searches are queued one ahead in Stockfish
    (:meth:`Stockfish.search_many`), so it never waits for this process.
    """
    stats = ShardStats()
    start = last = time.monotonic()
    jobs: list[tuple[str, list[str], str, str]] = []  # FEN, legal moves, game id, commands
    previous: str | None = None
    for number, line in enumerate(lines, first_line):
        if not is_position_line(line):
            continue
        try:
            board, game_id = parse_position(line)
        except PositionError:
            stats.skipped["invalid"] = stats.skipped.get("invalid", 0) + 1
            continue
        moves = [m.uci() for m in board.legal_moves]
        if not moves:
            stats.skipped["no_legal_moves"] = stats.skipped.get("no_legal_moves", 0) + 1
            continue
        fen = board.fen()
        new_game = settings.clear_hash == "position" or (settings.clear_hash == "game" and bool(jobs)
                                                         and (game_id is None or game_id != previous))
        previous = game_id
        command = ("ucinewgame\n" if new_game else "") + search_command(fen, settings.go)
        jobs.append((fen, moves, game_id if game_id is not None else f"{name}#{number}", command))

    out: list[str] = []
    games: list[list[Any]] = []
    done_pos = done_av = 0
    engine.new_game()
    engine.set_option("MultiPV", ALL_MOVES_MULTIPV)
    results = engine.search_many(job[3] for job in jobs)
    for (fen, moves, gid, _), result in zip(jobs, results):
        items = []
        missing = None
        for uci in moves:
            score = result.exact.get(uci)  # a lower or upper bound is never a label
            if score is None:
                missing = "bound_only" if uci in result.bound else "incomplete"
                break
            items.append(f"{uci}:{score}")
        if missing is not None:
            stats.skipped[missing] = stats.skipped.get(missing, 0) + 1
            continue
        out.append(f"{fen}\t{' '.join(items)}\n")
        if games and games[-1][0] == gid:
            games[-1][1] += 1
        else:
            games.append([gid, 1])
        stats.positions += 1
        stats.action_values += len(moves)
        if report is not None:
            now = time.monotonic()
            if now - last >= 0.5:
                report(stats.positions - done_pos, stats.action_values - done_av)
                done_pos, done_av, last = stats.positions, stats.action_values, now
    if report is not None and (stats.positions > done_pos or stats.action_values > done_av):
        report(stats.positions - done_pos, stats.action_values - done_av)
    stats.seconds = time.monotonic() - start
    return out, games, stats


def _write_text(path: Path, lines: list[str], compress: str) -> None:
    opener = {"gz": lambda p: gzip.open(p, "wt", encoding="utf-8", compresslevel=6),
              "xz": lambda p: lzma.open(p, "wt", encoding="utf-8"),
              "none": lambda p: open(p, "w", encoding="utf-8")}[compress]
    with atomic_path(path) as tmp, opener(tmp) as fh:
        fh.writelines(lines)


def shard_metadata(settings: Settings, task: Task, stats: ShardStats, games: list[list[Any]]) -> dict[str, Any]:
    """The JSON sidecar of a finished shard."""
    return {
        "format": FORMAT,
        "engine": settings.engine,
        "engine_options": {"Threads": 1, "Hash": settings.hash_mb, "MultiPV": "all legal moves"},
        "limit": settings.limit,
        "score": "last exact score per move; centipawns or #N mate, side to move",
        "hash_mb": settings.hash_mb,
        "clear_hash": settings.clear_hash,
        "shard_size": settings.shard_size,
        "source": task.source,
        "split": task.split,
        "first_line": task.first_line,
        "lines": len(task.lines),
        "positions": stats.positions,
        "action_values": stats.action_values,
        "skipped": stats.skipped,
        "seconds": round(stats.seconds, 3),
        "games": games,
    }


def annotate_shard(slot: EngineSlot, task: Task, settings: Settings, report: Any = None,
                   on_restart: Callable[[EngineError], None] | None = None) -> tuple[list[str], list[list[Any]],
                                                                                   ShardStats]:
    """:func:`annotate_lines` over one shard, as every worker (process or Ray actor) runs it: a Stockfish
    that dies is restarted and the shard redone from its start (``on_restart`` is told), up to
    ``settings.max_retries`` times; then the :class:`EngineError` is raised."""
    attempt = 0
    while True:
        try:
            return annotate_lines(slot.get(), task.lines, settings, report, Path(task.source).name,
                                  task.first_line)
        except EngineError as exc:
            slot.drop()
            attempt += 1
            if attempt > settings.max_retries:
                raise
            if on_restart is not None:
                on_restart(exc)


# ---------------------------------------------------------------------------
# Shards to do
# ---------------------------------------------------------------------------


def infer_split(path: Path, split: str) -> str | None:
    """``auto``: files named ``train*``/``test*`` (as datagen writes them) keep that split."""
    if split == "none":
        return None
    if split != "auto":
        return split
    stem = path.name.split(".")[0].lower()
    return "train" if stem.startswith("train") else "test" if stem.startswith("test") else None


def count_lines(path: str | os.PathLike[str]) -> int:
    return sum(1 for _ in iter_position_lines(path))


def iter_tasks(inputs: Sequence[Path], settings: Settings, split: str) -> Iterator[Task]:
    """Cut the inputs into shards of ``settings.shard_size`` lines."""
    for path in inputs:
        stem = path.name.split(".")[0]
        buffer: list[str] = []
        index = 0
        for _, line in iter_position_lines(path):
            buffer.append(line)
            if len(buffer) == settings.shard_size:
                yield Task(str(path), stem, index, index * settings.shard_size, buffer, infer_split(path, split))
                buffer, index = [], index + 1
        if buffer:
            yield Task(str(path), stem, index, index * settings.shard_size, buffer, infer_split(path, split))


def is_done(settings: Settings, name: str) -> bool:
    """A shard is done when its JSON exists and was made with the same settings."""
    text_path, json_path = shard_paths(settings.out_dir, name, settings.compress)
    if not (json_path.exists() and text_path.exists()):
        return False
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    mine = {"engine": settings.engine, "limit": settings.limit, "hash_mb": settings.hash_mb,
            "clear_hash": settings.clear_hash, "shard_size": settings.shard_size}
    theirs = {k: meta.get(k) for k in _SETTING_KEYS}
    if theirs != mine:
        raise SystemExit(f"annotate: {json_path} was made with other settings ({theirs} vs {mine}); "
                         "use another --out folder")
    return True


def prepare_output(inputs: Sequence[Path], settings: Settings) -> int:
    """Make the output folder ready for a (re)run; returns the input lines still to annotate."""
    Path(settings.out_dir).mkdir(parents=True, exist_ok=True)
    remove_stale_temps(settings.out_dir)  # only those of dead writers: another run may be writing here
    stems: dict[str, Path] = {}
    for path in inputs:
        stem = path.name.split(".")[0]
        if stem in stems and stems[stem] != path:
            raise SystemExit(f"annotate: {stems[stem]} and {path} would write the same shard names; rename one")
        stems[stem] = path
    todo_lines = 0
    for path in inputs:
        n = count_lines(path)
        for k in range(-(-n // settings.shard_size)):
            if not is_done(settings, f"{path.name.split('.')[0]}-{k:05d}"):
                todo_lines += min(settings.shard_size, n - k * settings.shard_size)
    return todo_lines


def write_shard_files(settings: Settings, task: Task, lines: list[str], games: list[list[Any]],
                      stats: ShardStats) -> None:
    """Write a finished shard: the text first, the JSON (its completion mark) last."""
    text_path, json_path = shard_paths(settings.out_dir, task.name, settings.compress)
    _write_text(text_path, lines, settings.compress)
    write_text(json_path, json.dumps(shard_metadata(settings, task, stats, games), indent=1) + "\n")


@dataclass
class Summary:
    positions: int = 0
    action_values: int = 0
    shards_done: int = 0
    shards_skipped: int = 0
    shards_failed: int = 0
    restarts: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, shard: ShardStats) -> None:
        self.positions += shard.positions
        self.action_values += shard.action_values
        self.shards_done += 1
        for key, value in shard.skipped.items():
            self.skipped[key] = self.skipped.get(key, 0) + value


def pending_tasks(inputs: Sequence[Path], settings: Settings, split: str, summary: Summary) -> Iterator[Task]:
    """The shards still to annotate, in order; shards already done are counted in ``summary.shards_skipped``."""
    for task in iter_tasks(inputs, settings, split):
        if is_done(settings, task.name):
            summary.shards_skipped += 1
        else:
            yield task


# ---------------------------------------------------------------------------
# The workers and the driver
# ---------------------------------------------------------------------------


@dataclass
class AnnotationWork:
    """What an annotation worker does (see :class:`neuralengine.data.scheduler.Work`)."""

    settings: Settings

    def engine_slot(self) -> EngineSlot:
        return EngineSlot(self.settings.command, self.settings.hash_mb, self.settings.read_timeout)

    def run(self, slot: EngineSlot, task: Task, emit: Emit) -> tuple[list[str], list[list[Any]], dict[str, Any]]:
        def report(positions: int, action_values: int) -> None:
            emit("progress", done=positions, action_values=action_values)

        def restarted(exc: EngineError) -> None:
            emit("restart", reason=str(exc))

        lines, games, stats = annotate_shard(slot, task, self.settings, report, restarted)
        return lines, games, asdict(stats)

    def describe(self, task: Task) -> str:
        return f"shard {task.name}"

    def size(self, task: Task) -> int:
        return len(task.lines)


def annotate(inputs: Sequence[Path], settings: Settings, backend: Backend | None = None, split: str = "auto",
             progress: bool = True, on_event: EventHook | None = None) -> Summary:
    """Annotate all shards of ``inputs`` not yet done, on ``backend`` (default: a
    :class:`~neuralengine.data.scheduler.PoolBackend` of one process per CPU)."""
    from neuralengine.progress import Progress

    todo_lines = prepare_output(inputs, settings)
    summary = Summary()
    bar = Progress("annotate", total=todo_lines, unit="pos", enabled=progress)

    def rate(scheduler: Scheduler) -> str:
        return f"{scheduler.totals.get('action_values', 0) / max(scheduler.elapsed, 1e-9):.0f} AV/s"

    tasks = pending_tasks(inputs, settings, split, summary)
    if not todo_lines:  # every shard is done: count them, start no worker
        for _ in tasks:
            pass
        bar.close()
        return summary
    scheduler = Scheduler(AnnotationWork(settings), backend or PoolBackend(), tasks, name="annotate", progress=bar,
                          postfix=rate, on_event=on_event)
    outcomes = scheduler.run()
    try:
        for outcome in outcomes:
            task = outcome.item
            if outcome.error is not None:
                summary.shards_failed += 1
                print(f"\nannotate: {task.name}: giving up after {settings.max_retries} restarts ({outcome.error})",
                      file=sys.stderr)
                continue
            lines, games, stats = outcome.result
            shard = ShardStats(**stats)
            write_shard_files(settings, task, lines, games, shard)
            summary.add(shard)
    finally:
        outcomes.close()  # stops the workers, also when writing a shard failed
        bar.close()
        summary.restarts = scheduler.restarts
        summary.seconds = scheduler.elapsed
    return summary


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neuralengine annotate",
        description="Score every legal move of each position with Stockfish (MultiPV over all moves). "
                    "Writes text shards FEN<TAB>move:score ... with a JSON sidecar each; reruns skip "
                    "finished shards.")
    p.add_argument("inputs", nargs="+", metavar="POSITIONS",
                   help="positions files (FEN<TAB>game_id per line, as written by datagen; FEN or EPD lines work "
                        "too), or folders: their *.fen files")
    p.add_argument("--out", required=True, help="output folder for the annotated shards")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--depth", type=int, help="search depth per position (default 7)")
    limit.add_argument("--nodes", type=int, help="node budget per position, for all moves together")
    p.add_argument("--workers", type=int,
                   help=f"worker processes (or Ray actors), one Stockfish each (default: CPU count, {default_workers()} "
                        "here; with --ray, the cluster's CPU count)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run the workers as actors on a Ray cluster: 'auto' or an address (HOST:PORT, "
                        "ray://HOST:PORT) joins a running cluster; without ADDRESS a local one is started. "
                        "Needs: pip install 'neuralengine[cluster]'")
    p.add_argument("--stockfish", help="Stockfish binary or command (default: stockfish on PATH or /usr/games)")
    p.add_argument("--hash", type=int, default=32, dest="hash_mb", help="Stockfish hash per worker, MB (default 32)")
    p.add_argument("--clear-hash", choices=["game", "position", "shard"], default="game",
                   help="when to send ucinewgame: at each new game id (default; a line without a game id is a game "
                        "of its own), each position, or only at the start of each shard")
    p.add_argument("--search-timeout", type=float, metavar="SECONDS",
                   help="kill and restart a Stockfish whose search takes longer, and redo its shard (default: "
                        "generous for the limit: 60 s at depth 10 or less, doubled per ply above; 60 s + 1 s per "
                        "5000 nodes)")
    p.add_argument("--shard-size", type=int, default=2000, help="input lines per shard (default 2000)")
    p.add_argument("--compress", choices=["gz", "xz", "none"], default="gz", help="shard compression (default gz)")
    p.add_argument("--split", choices=["auto", "train", "test", "none"], default="auto",
                   help="split recorded for prepare: auto = from file names train*/test* (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``neuralengine annotate``."""
    args = build_parser().parse_args(argv)
    inputs: list[Path] = []
    for name in args.inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(path.glob("*.fen"))
            if not found:
                print(f"annotate: no *.fen files in {path}", file=sys.stderr)
                return 2
            inputs.extend(found)
        elif path.is_file():
            inputs.append(path)
        else:
            print(f"annotate: no such file: {path}", file=sys.stderr)
            return 2
    for name in ("depth", "nodes", "workers", "hash_mb", "shard_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"annotate: --{name.replace('_mb', '').replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if args.search_timeout is not None and not args.search_timeout > 0:
        print("annotate: --search-timeout must be positive", file=sys.stderr)
        return 2
    if args.ray is not None:
        from neuralengine.data.cluster import import_ray

        import_ray()  # before anything is written
    try:
        command = resolve_engine(args.stockfish)
        with Stockfish(command) as probe:
            engine_name = probe.name
            if not probe.has_option("MultiPV"):
                print(f"annotate: {engine_name} has no MultiPV option", file=sys.stderr)
                return 2
    except EngineError as exc:
        print(f"annotate: {exc}", file=sys.stderr)
        return 2
    settings = Settings(command=command, out_dir=args.out, depth=args.depth if args.nodes is None else None,
                        nodes=args.nodes, hash_mb=args.hash_mb, clear_hash=args.clear_hash,
                        shard_size=args.shard_size, compress=args.compress, engine=engine_name,
                        search_timeout=args.search_timeout)
    if settings.nodes is None and settings.depth is None:
        settings.depth = 7
    if args.ray is not None:
        from neuralengine.data.cluster import RayBackend

        backend: Backend = RayBackend(args.ray, args.workers)
    else:
        backend = PoolBackend(args.workers)
    try:
        with sigterm_interrupts():
            summary = annotate(inputs, settings, backend, args.split, progress=not args.quiet)
    except KeyboardInterrupt:
        return interrupt_exit("annotate", "finished shards are kept, rerun to continue")
    rate = summary.positions / max(summary.seconds, 1e-9)
    print(f"annotate: {summary.positions} positions, {summary.action_values} action values in "
          f"{summary.seconds:.1f} s ({rate:.1f} positions/s, {summary.action_values / max(summary.seconds, 1e-9):.0f} "
          f"action values/s); {summary.shards_done} shards written, {summary.shards_skipped} already done, "
          f"{summary.restarts} restarts" + (f", skipped {summary.skipped}" if summary.skipped else ""),
          file=sys.stderr)
    if summary.shards_failed:
        print(f"annotate: {summary.shards_failed} shards failed; rerun to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
