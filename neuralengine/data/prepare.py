"""``neuralengine prepare``: annotated text (and DeepMind ``.bag`` files) to shards.

Reads action values in the text format of :mod:`neuralengine.data.text` (the
shared seed data, or ``neuralengine annotate`` output with its JSON sidecars)
and DeepMind ``.bag`` records (:mod:`neuralengine.data.bag`), and writes
``train-NNNN.neav`` and ``test-NNNN.neav`` shards (:mod:`neuralengine.data.shards`)
plus ``prepare.json`` with the counts.

Splitting, by game, in this order of precedence:

1. inputs given with ``--test`` go wholly to the test split;
2. annotated shards whose sidecar names a split (``train.fen``/``test.fen``
   from ``datagen``) keep it;
3. otherwise a hash of the game (:func:`neuralengine.data.text.is_test_game`)
   sends ``--test-fraction`` of the games to test. Games are the sidecar's game
   ids, or, in plain text, runs of lines that start at the initial position;
   each position of a bag file counts as a game of its own.

Positions are de-duplicated by FEN without the move counters within each
split, and test positions that also occur in training are dropped, so the two
never share a position. :func:`convert_text` is this
conversion for plain text files.

Memory does not grow with the positions themselves: each split remembers
the positions it holds as 8-byte digests (:mod:`neuralengine.data.digests`,
16 to 32 bytes a position), test positions wait on disk until the last
training position is known, and only one shard per split is held in memory.
(A ``.bag`` file is grouped by position in memory, one file at a time.)

Everything is written into a new folder beside ``--out``, which replaces the
old shards only when all inputs have been read and all shards written
(:func:`neuralengine.atomic.atomic_folder`): a failure half-way leaves the old
set as it was, never a partial set that ``train`` would pick up. Other files
in ``--out`` stay.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from neuralengine.atomic import atomic_folder, write_text
from neuralengine.data.digests import DigestSet, digest
from neuralengine.data.only_move import ONLY_MOVE_MARGIN, is_only_move
from neuralengine.data.shards import SUFFIX, Position, Shard, write_shard
from neuralengine.data.text import FormatError, is_test_game, iter_games, open_text, parse_line, position_key, \
    to_position

TEXT_SUFFIXES = (".txt", ".txt.gz", ".txt.xz")
BAG_SUFFIXES = (".bag", ".bagz")
ANNOTATED_FORMAT = "neuralengine-action-values-text"
SUMMARY = "prepare.json"

Line = tuple[str, list[str], np.ndarray]


@dataclass
class Source:
    """One input file and what is known about how it was made."""

    path: Path
    kind: str  # "text" or "bag"
    forced_split: str | None = None
    sidecar: dict[str, Any] | None = None

    def describe(self, engine: str | None, limit: dict[str, int] | None) -> dict[str, Any]:
        info: dict[str, Any] = {"file": self.path.name, "kind": self.kind}
        if self.sidecar is not None:
            info.update(engine=self.sidecar.get("engine"), limit=self.sidecar.get("limit"),
                        origin=Path(str(self.sidecar.get("source", ""))).name or None)
        else:
            if engine:
                info["engine"] = engine
            if limit:
                info["limit"] = limit
        return info


def sidecar_path(path: Path) -> Path:
    name = path.name
    for suffix in TEXT_SUFFIXES[::-1]:
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    side = sidecar_path(path)
    if not side.exists():
        return None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"prepare: cannot read {side}: {exc}") from None
    return meta if isinstance(meta, dict) and meta.get("format") == ANNOTATED_FORMAT else None


def find_sources(inputs: Sequence[str], test_inputs: Sequence[str]) -> list[Source]:
    """Expand folders and classify files.

    :raises SystemExit: for missing files or folders without data.
    """
    sources: list[Source] = []
    for names, forced in ((inputs, None), (test_inputs, "test")):
        for name in names:
            path = Path(name)
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.name.endswith(TEXT_SUFFIXES + BAG_SUFFIXES))
                if not files:
                    raise SystemExit(f"prepare: no .txt(.gz/.xz) or .bag files in {path}")
            elif path.is_file():
                files = [path]
            else:
                raise SystemExit(f"prepare: no such file or folder: {path}")
            for f in files:
                kind = "bag" if f.name.endswith(BAG_SUFFIXES) else "text"
                sources.append(Source(f, kind, forced, _read_sidecar(f) if kind == "text" else None))
    return sources


def iter_source_games(source: Source, skipped: dict[str, int]) -> Iterator[tuple[str, list[Line]]]:
    """Yield ``(game_key, lines)`` for one input."""
    if source.kind == "bag":
        from neuralengine.data.bag import iter_bag_positions

        for fen, moves, probs in iter_bag_positions(source.path, skipped):
            yield position_key(fen), [(fen, moves, probs)]
        return
    games = source.sidecar.get("games") if source.sidecar else None
    if not games:
        yield from iter_games([source.path])
        return
    # Annotated shards: the sidecar lists the game id of every run of lines.
    runs = iter([(str(gid), int(count)) for gid, count in games])
    with open_text(source.path) as fh:
        lines = (parse_line(line) for line in fh if line.strip())
        for gid, count in runs:
            game = [line for _, line in zip(range(count), lines)]
            if len(game) != count:
                raise FormatError(f"{source.path} has fewer lines than its sidecar lists")
            yield gid, game
        if next(lines, None) is not None:
            raise FormatError(f"{source.path} has more lines than its sidecar lists")


@dataclass
class Stats:
    games: int = 0
    lines: int = 0
    train: int = 0
    test: int = 0
    duplicates: int = 0
    test_overlap_dropped: int = 0
    no_moves: int = 0
    #: Only-move positions (:mod:`neuralengine.data.only_move`) written to each split.
    train_only_move: int = 0
    test_only_move: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class ShardWriter:
    """Collects positions of one split and writes a shard every ``shard_size``."""

    def __init__(self, out: Path, split: str, shard_size: int, metadata: dict[str, Any], stats: Stats) -> None:
        self.out, self.split, self.shard_size = out, split, shard_size
        self.metadata = {**metadata, "split": split}
        self.stats = stats
        self.buffer: list[Position] = []
        self.index = 0

    def add(self, position: Position) -> None:
        self.buffer.append(position)
        if len(self.buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            path = write_shard(self.out / f"{self.split}-{self.index:04d}{SUFFIX}", self.buffer, self.metadata)
            self.stats.shards.append(path.name)
            self.index += 1
            self.buffer = []


def puzzle_position_keys(paths: Sequence[str | os.PathLike[str]]) -> set[str]:
    """De-duplication keys of every position of Lichess puzzle CSV files: the
    puzzle's FEN and the position after each move of its line. Training data
    must never contain them, since puzzles are how models are compared."""
    import chess

    from neuralengine.benchmarks.puzzles import read_puzzles

    keys: set[str] = set()
    for path in paths:
        for puzzle in read_puzzles(path)[0]:  # rows that do not parse are not positions
            board = chess.Board(puzzle.fen)
            keys.add(position_key(board.fen()))
            for uci in puzzle.moves:
                board.push_uci(uci)
                keys.add(position_key(board.fen()))
    return keys


def is_output(name: str) -> bool:
    """Whether an entry of ``--out`` is prepare's own (a shard, the summary, or a temporary file of either)."""
    if name.endswith(".tmp"):
        return SUFFIX in name or SUMMARY in name
    return name == SUMMARY or name.endswith(SUFFIX)


def prepare(sources: Sequence[Source], out: Path, test_fraction: float = 0.02, shard_size: int = 100_000,
            engine: str | None = None, limit: dict[str, int] | None = None, progress: bool = True,
            exclude: set[str] | None = None) -> Stats:
    """Convert ``sources`` into train/test shards and ``prepare.json`` in
    ``out``, replacing the shards there only once all are written; see the
    module docstring. Positions whose key is in ``exclude`` (see
    :func:`puzzle_position_keys`) are left out of both splits."""
    described = [s.describe(engine, limit) for s in sources]
    engines = sorted({str(d["engine"]) for d in described if d.get("engine")})
    limits = [d["limit"] for d in described if d.get("limit")]
    metadata = {"sources": described, "engine": ", ".join(engines) or "unknown",
                "limit": limits[0] if limits and all(x == limits[0] for x in limits) else (limits or "unknown")}
    with atomic_folder(out, owns=is_output) as folder:
        stats = _convert(sources, folder, test_fraction, shard_size, metadata, progress, exclude)
        wants_test = test_fraction > 0 or any(s.forced_split == "test" or (s.sidecar or {}).get("split") == "test"
                                              for s in sources)
        if stats.test == 0 and wants_test:
            stats.warnings.append(_no_test_positions(stats, test_fraction))
        summary = {**stats.__dict__, "only_move": only_move_summary(stats), "sources": described}
        write_text(folder / SUMMARY, json.dumps(summary, indent=1) + "\n")
    return stats


def only_move_summary(stats: Stats) -> dict[str, Any]:
    """The only-move share of each split written, for ``prepare.json`` and the printed summary."""
    return {"margin": ONLY_MOVE_MARGIN,
            "train_share": stats.train_only_move / stats.train if stats.train else 0.0,
            "test_share": stats.test_only_move / stats.test if stats.test else 0.0}


def _no_test_positions(stats: Stats, test_fraction: float) -> str:
    if stats.test_overlap_dropped:
        why = f"all {stats.test_overlap_dropped} test positions also occur in training and were dropped"
    else:
        why = (f"{stats.games} games are too few for --test-fraction {test_fraction:g} "
               f"(about {stats.games * test_fraction:.2g} test games expected)")
        if test_fraction == 0:
            why = "the test inputs gave no position"
    return (f"0 test positions: {why}. train will have no held-out data to report; pass test data with --test, "
            "raise --test-fraction, or use --test-fraction 0 to say that no test split is wanted")


def _convert(sources: Sequence[Source], out: Path, test_fraction: float, shard_size: int, metadata: dict[str, Any],
             progress: bool, exclude: set[str] | None) -> Stats:
    """The conversion itself, into the empty folder ``out``."""
    from neuralengine.progress import Progress

    stats = Stats()
    train = ShardWriter(out, "train", shard_size, metadata, stats)
    train_seen, test_seen = DigestSet(), DigestSet()
    # Test positions wait on disk (with their digests, in order) until every training position is known.
    waiting = ShardWriter(out / ".test-waiting", "test", shard_size, metadata, Stats())
    waiting_digests = array("Q")
    bar = Progress("prepare", unit="games", enabled=progress)
    for source in sources:
        for game_key, lines in iter_source_games(source, stats.skipped):
            split = source.forced_split or (source.sidecar or {}).get("split") or \
                ("test" if is_test_game(game_key, test_fraction) else "train")
            seen = train_seen if split == "train" else test_seen
            game_id = stats.games
            stats.games += 1
            for fen, moves, probs in lines:
                stats.lines += 1
                if not moves:
                    stats.no_moves += 1
                    continue
                key = position_key(fen)
                if exclude and key in exclude:
                    stats.skipped["excluded position"] = stats.skipped.get("excluded position", 0) + 1
                    continue
                key_digest = digest(key)
                if key_digest in seen:
                    stats.duplicates += 1
                    continue
                try:
                    position = to_position(fen, moves, probs, game_id)
                except (KeyError, ValueError):
                    stats.skipped["bad position or move"] = stats.skipped.get("bad position or move", 0) + 1
                    continue
                seen.add(key_digest)
                if split == "train":
                    stats.train += 1
                    stats.train_only_move += is_only_move(position.win_probs)
                    train.add(position)
                else:
                    waiting_digests.append(key_digest)
                    waiting.add(position)
            bar.update(1, postfix=f"{stats.lines} positions")
    train.flush()
    waiting.flush()
    bar.close()
    test = ShardWriter(out, "test", shard_size, metadata, stats)
    index = 0
    for path in sorted((out / ".test-waiting").glob(f"*{SUFFIX}")):
        shard = Shard(path)
        for i in range(len(shard)):
            if waiting_digests[index] in train_seen:
                stats.test_overlap_dropped += 1
            else:
                position = _copy(shard, i)
                test.add(position)
                stats.test += 1
                stats.test_only_move += is_only_move(position.win_probs)
            index += 1
        del shard  # unmapped before its folder goes
    test.flush()
    shutil.rmtree(out / ".test-waiting", ignore_errors=True)
    return stats


def _copy(shard: Shard, i: int) -> Position:
    """Position ``i`` of ``shard`` in memory of its own (not a view of the mapped file)."""
    p = shard[i]
    return Position(p.board.copy(), p.actions.copy(), p.win_probs.copy(), p.game_id)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neuralengine prepare",
        description="Turn annotated text (FEN<TAB>move:score ...; .txt, .txt.gz, .txt.xz or folders of them) "
                    "and DeepMind .bag action-value files into train-*.neav / test-*.neav shards.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="text or .bag files, or folders holding them")
    p.add_argument("--out", required=True, help="output folder for the shards")
    p.add_argument("--test", nargs="+", default=[], metavar="INPUT", help="inputs that go wholly to the test split")
    p.add_argument("--test-fraction", type=float, default=0.02,
                   help="share of games sent to test when an input names no split (default 0.02)")
    p.add_argument("--shard-size", type=int, default=100_000, help="positions per shard (default 100000)")
    p.add_argument("--engine", help="engine that scored inputs without a sidecar, for the metadata "
                                    "(e.g. 'Stockfish 15.1')")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--depth", type=int, help="search depth of inputs without a sidecar, for the metadata")
    limit.add_argument("--nodes", type=int, help="node limit of inputs without a sidecar, for the metadata")
    p.add_argument("--exclude-puzzles", nargs="+", default=[], metavar="CSV",
                   help="Lichess puzzle CSV files whose positions (before and after each move) are left out")
    p.add_argument("--force", action="store_true",
                   help="replace shards already in --out (only once the new ones are all written)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def convert_text(paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], test_fraction: float = 0.02,
                 shard_size: int = 100_000, metadata: dict | None = None, progress: bool = True) -> dict[str, int]:
    """Convert plain text files to ``train-*.neav`` and ``test-*.neav`` shards.

    Positions are de-duplicated by FEN without move counters within each
    split, games go wholly to one split, and test positions that also occur
    in a training game are dropped, so the splits never share a position.
    ``metadata`` may name the ``engine`` and its ``depth`` or ``nodes``. This
    is :func:`prepare` for plain text files.
    """
    meta = dict(metadata or {})
    limit = {k: int(meta[k]) for k in ("depth", "nodes") if k in meta}
    sources = [Source(Path(p), "text") for p in paths]
    stats = prepare(sources, Path(out_dir), test_fraction=test_fraction, shard_size=shard_size,
                    engine=meta.get("engine"), limit=limit or None, progress=progress)
    return {"games": stats.games, "lines": stats.lines, "train": stats.train, "test": stats.test,
            "duplicates": stats.duplicates + stats.no_moves, "test_overlap_dropped": stats.test_overlap_dropped}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``neuralengine prepare``."""
    args = build_parser().parse_args(argv)
    if not 0.0 <= args.test_fraction <= 1.0:
        print("prepare: --test-fraction must be between 0 and 1", file=sys.stderr)
        return 2
    if args.shard_size < 1:
        print("prepare: --shard-size must be at least 1", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        sources = find_sources(args.inputs, args.test)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    old = sorted(out.glob(f"*{SUFFIX}")) if out.is_dir() else []
    if old and not args.force:
        print(f"prepare: {out} already holds shards ({old[0].name}, ...); use --force to replace them",
              file=sys.stderr)
        return 2
    limit = {"depth": args.depth} if args.depth else {"nodes": args.nodes} if args.nodes else None
    try:
        exclude = puzzle_position_keys(args.exclude_puzzles) if args.exclude_puzzles else None
        stats = prepare(sources, out, args.test_fraction, args.shard_size, args.engine, limit,
                        progress=not args.quiet, exclude=exclude)
    except (FormatError, ValueError, OSError) as exc:
        print(f"\nprepare: {exc}", file=sys.stderr)
        return 1
    for warning in stats.warnings:
        print(f"prepare: warning: {warning}", file=sys.stderr)
    print(f"prepare: {stats.train} train and {stats.test} test positions from {stats.games} games "
          f"({stats.duplicates} duplicates, {stats.test_overlap_dropped} test positions also in train dropped"
          + (f", skipped {stats.skipped}" if stats.skipped else "") + f") -> {len(stats.shards)} shards in {out}",
          file=sys.stderr)
    shares = only_move_summary(stats)
    print(f"prepare: only-move positions (best move ahead of the second by more than {ONLY_MOVE_MARGIN:g}): "
          f"train {100 * shares['train_share']:.1f} % ({stats.train_only_move}), "
          f"test {100 * shares['test_share']:.1f} % ({stats.test_only_move})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
