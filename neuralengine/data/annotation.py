"""Annotating shards of positions with Stockfish: the settings, the shards, one
Stockfish pass over a shard, and the files written for it.

This is the work itself, shared by the process pool of ``neuralengine annotate``
(:mod:`neuralengine.data.annotate`) and the Ray actors of ``annotate --ray``
(:mod:`neuralengine.data.cluster`); the file format is described there.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from neuralengine.data.positions import PositionError, is_position_line, iter_position_lines, parse_position
from neuralengine.data.stockfish import EngineError, EngineSlot, Stockfish, search_command


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

    @property
    def go(self) -> str:
        return f"nodes {self.nodes}" if self.nodes else f"depth {self.depth}"

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
    (``first_line`` numbers the first of ``lines``). ``report(positions,
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
        new_game = settings.clear_hash == "position" or (settings.clear_hash == "game" and jobs
                                                         and game_id != previous)
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
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    opener = {"gz": lambda p: gzip.open(p, "wt", encoding="utf-8", compresslevel=6),
              "xz": lambda p: lzma.open(p, "wt", encoding="utf-8"),
              "none": lambda p: open(p, "w", encoding="utf-8")}[compress]
    with opener(tmp) as fh:
        fh.writelines(lines)
    os.replace(tmp, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
    for stale in Path(settings.out_dir).glob("*.tmp*"):
        stale.unlink()  # left by an interrupted run; finished shards never have this suffix
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
    _write_json(json_path, shard_metadata(settings, task, stats, games))


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


class TaskFeed:
    """The shards still to annotate, in order; a shard handed back (its worker was lost) comes first.
    Shards already done are skipped and counted in ``summary.shards_skipped``."""

    def __init__(self, pending: Iterator[Task], settings: Settings, summary: Summary) -> None:
        self.pending, self.settings, self.summary = pending, settings, summary
        self.redone: deque[Task] = deque()

    def redo(self, task: Task) -> None:
        self.redone.append(task)

    def next(self) -> Task | None:
        if self.redone:
            return self.redone.popleft()
        for task in self.pending:
            if is_done(self.settings, task.name):
                self.summary.shards_skipped += 1
                continue
            return task
        return None
