"""``neuralengine datagen``: positions for annotation.

Positions come from Stockfish self-play at mixed strengths
(:mod:`neuralengine.data.selfplay`: with optional random moves in a ply
window and injected blunders, and on-policy games in which a neuralengine
model plays) and from PGN or EPD files given on the command line (a Lichess
database dump, for example). The output folder gets

* ``train.fen`` and ``test.fen``: positions files (``FEN<TAB>GAME_ID`` per
  line, see :mod:`neuralengine.data.positions`), split by game with a hash of
  the game id, so no game has positions on both sides;
* ``datagen.json``: the settings and counts.

With ``--pgn`` the self-play games are written as games instead: PGN files and one-line move transcripts
with each side's approximate Elo (see :mod:`neuralengine.data.transcripts`), for training text models.

Positions are de-duplicated by FEN without the move counters across both
files: the first game to reach a position keeps it, so train and test never
share one. ``--resume`` continues an interrupted run: games already in the
files are not played again. Self-play runs on the workers of
:mod:`neuralengine.data.scheduler` (processes, or Ray actors with ``--ray``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import chess
import chess.pgn

from neuralengine.atomic import write_bytes, write_text
from neuralengine.data.positions import PositionError, format_position, is_position_line, parse_position
from neuralengine.data.scheduler import Backend, PoolBackend, interrupt_exit, sigterm_interrupts
from neuralengine.data.selfplay import MIXED, POLICIES, SELF, SelfPlayConfig, game_id, play_games
from neuralengine.data.stockfish import EngineError, Stockfish, resolve_engine
from neuralengine.data.text import is_test_game, open_text, position_key
from neuralengine.data.transcripts import TranscriptWriter

SPLITS = ("train", "test")


class PositionWriter:
    """Appends games to ``train.fen``/``test.fen``, de-duplicating positions."""

    def __init__(self, out_dir: Path, test_fraction: float, resume: bool) -> None:
        self.out_dir = out_dir
        self.test_fraction = test_fraction
        self.seen: set[str] = set()
        self.games_seen: set[str] = set()
        self.counts = {"games": 0, "train": 0, "test": 0, "duplicates": 0, "games_without_new_positions": 0}
        out_dir.mkdir(parents=True, exist_ok=True)
        self.files = {}
        for split in SPLITS:
            path = out_dir / f"{split}.fen"
            if resume and path.exists():
                self._load(path, split)
            self.files[split] = open(path, "a" if resume else "w", encoding="utf-8")

    def _load(self, path: Path, split: str) -> None:
        """Read what an earlier run wrote; drop a last line cut off by a kill."""
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raw = raw[: raw.rfind(b"\n") + 1]
            write_bytes(path, raw)
        for line in raw.decode("utf-8").splitlines():
            fen, _, gid = line.partition("\t")
            self.seen.add(position_key(fen))
            self.games_seen.add(gid)
            self.counts[split] += 1

    def add_game(self, gid: str, boards: Iterable[chess.Board | str]) -> int:
        """Write the new positions of one game; returns how many were new."""
        split = "test" if is_test_game(gid, self.test_fraction) else "train"
        lines = []
        for item in boards:
            board = chess.Board(item) if isinstance(item, str) else item
            key = position_key(board.fen())
            if key in self.seen:
                self.counts["duplicates"] += 1
                continue
            self.seen.add(key)
            lines.append(format_position(board, gid))
        self.counts["games"] += 1
        self.games_seen.add(gid)
        if not lines:
            self.counts["games_without_new_positions"] += 1
            return 0
        fh = self.files[split]
        fh.write("".join(lines))
        fh.flush()
        self.counts[split] += len(lines)
        return len(lines)

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


# ---------------------------------------------------------------------------
# Positions from files
# ---------------------------------------------------------------------------


def is_pgn(path: Path) -> bool:
    name = path.name.lower()
    for suffix in (".gz", ".xz"):
        name = name.removesuffix(suffix)
    return name.endswith(".pgn")


def iter_pgn_games(path: Path, max_games: int | None = None) -> Iterator[tuple[str, list[chess.Board], str | None]]:
    """Yield ``(game_id, boards before each move and at the end, problem)`` per game.

    ``problem`` is a reason to skip the game (a variant, an illegal move).
    """
    with open_text(path) as fh:
        number = 0
        while max_games is None or number < max_games:
            try:
                game = chess.pgn.read_game(fh)
            except (ValueError, UnicodeDecodeError) as exc:
                yield f"{path.name}#{number}", [], f"unreadable game: {exc}"
                number += 1
                continue
            if game is None:
                return
            gid = f"{path.name}#{number}"
            number += 1
            variant = game.headers.get("Variant", "Standard").lower()
            if variant not in ("standard", "from position", "normal", "chess"):
                yield gid, [], "variant"
                continue
            if game.errors:
                yield gid, [], "illegal or unreadable move"
                continue
            try:
                board = game.board()
            except ValueError:
                yield gid, [], "bad FEN header"
                continue
            if board.chess960:
                yield gid, [], "variant"
                continue
            boards = [board.copy(stack=False)]
            for move in game.mainline_moves():
                board.push(move)
                boards.append(board.copy(stack=False))
            yield gid, boards, None


def iter_epd_games(path: Path, max_games: int | None = None) -> Iterator[tuple[str, list[chess.Board], str | None]]:
    """Each EPD/FEN line is a game of its own, unless the line names its game."""
    games = 0
    current: str | None = None
    boards: list[chess.Board] = []
    with open_text(path) as fh:
        for number, line in enumerate(fh):
            if not is_position_line(line):
                continue
            try:
                board, gid = parse_position(line)
            except PositionError as exc:
                yield f"{path.name}#{number}", [], str(exc)
                continue
            gid = gid or f"{path.name}#{number}"
            if gid != current and boards:
                yield current or "", boards, None
                games += 1
                boards = []
                if max_games is not None and games >= max_games:
                    return
            current = gid
            boards.append(board)
    if boards:
        yield current or "", boards, None


def select_positions(boards: Sequence[chess.Board], gid: str, seed: int, min_ply: int, max_ply: int | None,
                     per_game: int) -> list[chess.Board]:
    """Keep plies ``min_ply <= ply < max_ply`` that have a legal move; sample ``per_game`` of them."""
    eligible = [b for ply, b in enumerate(boards)
                if ply >= min_ply and (max_ply is None or ply < max_ply) and any(b.legal_moves)]
    if per_game and len(eligible) > per_game:
        rng = random.Random(f"{seed}/{gid}")
        keep = sorted(rng.sample(range(len(eligible)), per_game))
        eligible = [eligible[i] for i in keep]
    return eligible


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi if sep else lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B or N, got {text!r}") from None
    if a < 0 or b < a:
        raise argparse.ArgumentTypeError(f"bad range {text!r}")
    return a, b


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative numbers, got {text!r}")
    return values


def _opponents(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [v for v in values if v not in (SELF, MIXED) and not v.isdigit()]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"expected UCI_Elo levels, '{SELF}' and/or '{MIXED}', comma-separated, "
                                         f"got {text!r}")
    return values


def _policies(text: str) -> tuple[str, ...]:
    values = tuple(x for x in text.split(",") if x)
    bad = [v for v in values if v not in POLICIES]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"unknown policy {bad or text!r}; choose from {', '.join(POLICIES)}")
    return values


def load_book(path: Path) -> list[str]:
    """Start positions: the end of each PGN game's main line, or each EPD/FEN line."""
    fens: list[str] = []
    if is_pgn(path):
        for _, boards, problem in iter_pgn_games(path):
            if problem is None and boards and any(boards[-1].legal_moves):
                fens.append(boards[-1].fen())
    else:
        for _, boards, problem in iter_epd_games(path):
            fens.extend(b.fen() for b in boards if problem is None and any(b.legal_moves))
    return fens


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neuralengine datagen",
        description="Generate positions for annotation: Stockfish self-play at mixed strengths and/or positions "
                    "from PGN/EPD files. Writes OUT/train.fen and OUT/test.fen (FEN<TAB>game_id per line), "
                    "de-duplicated and split by game.")
    p.add_argument("inputs", nargs="*", metavar="PGN_OR_EPD",
                   help="PGN or EPD/FEN files to read positions from (.gz/.xz allowed)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--games", type=int, default=0, help="self-play games to play (default 0: none)")
    p.add_argument("--workers", type=int, default=None, help="self-play processes (or Ray actors), one Stockfish "
                                                              "each (default: CPU count; with --ray, the cluster's)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="play on a Ray cluster: 'auto' or an address joins a running cluster; without ADDRESS a "
                        "local one is started. Needs: pip install 'neuralengine[cluster]'")
    p.add_argument("--stockfish", help="Stockfish binary or command (default: stockfish on PATH or /usr/games)")
    p.add_argument("--seed", type=int, default=0, help="random seed; game ids are sp<seed>-<n> (default 0)")
    p.add_argument("--test-fraction", type=float, default=0.02, help="share of games in test.fen (default 0.02)")
    p.add_argument("--resume", action="store_true", help="append to existing files, skipping games already there")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--pgn", action="store_true",
                   help="write the self-play games as {train,test}.pgn and .txt move transcripts (with each side's "
                        "approximate Elo) instead of positions; for text models")
    sp = p.add_argument_group("self-play")
    limit = sp.add_mutually_exclusive_group()
    limit.add_argument("--nodes", type=int, default=None, help="nodes per move (default 10000)")
    limit.add_argument("--depth", type=int, help="depth per move instead of nodes")
    sp.add_argument("--policies", type=_policies, default=POLICIES,
                    help="move choosers drawn per side: multipv,skill,elo (default all three)")
    sp.add_argument("--multipv", type=int, default=5, help="moves sampled among by the multipv chooser (default 5)")
    sp.add_argument("--temperatures", type=_floats, default=(0.02, 0.05, 0.1, 0.2),
                    help="win-probability softmax temperatures, one drawn per side (default 0.02,0.05,0.1,0.2)")
    sp.add_argument("--opening-temperature", type=float, metavar="T",
                    help="multipv sides use this temperature for the first --opening-plies plies of each game "
                         "(default: none, the side's own temperature throughout)")
    sp.add_argument("--opening-plies", type=_range, default=(2, 8), metavar="A-B",
                    help="plies of --opening-temperature, drawn per game (default 2-8)")
    sp.add_argument("--skill", type=_range, default=(0, 19), help="Skill Level range (default 0-19)")
    sp.add_argument("--elo", type=_range, default=(1350, 2850), help="UCI_Elo range (default 1350-2850)")
    sp.add_argument("--random-plies", type=_range, default=(0, 6),
                    help="uniformly random opening plies, drawn per game (default 0-6)")
    sp.add_argument("--random-moves", type=int, default=0, metavar="N",
                    help="random moves per game, at N plies drawn within --random-window (Stockfish's generator "
                         "plays 5 in plies 1-24; default 0: none)")
    sp.add_argument("--random-window", type=_range, default=(1, 24), metavar="A-B",
                    help="plies (counted from the game's start, the first move is ply 1) where the random moves "
                         "fall (default 1-24)")
    sp.add_argument("--random-top-k", type=int, default=0, metavar="K",
                    help="a random move is drawn uniformly among Stockfish's top K moves (default 0: among all "
                         "legal moves)")
    sp.add_argument("--blunder-rate", type=float, default=0.0, metavar="P",
                    help="chance per ply of playing a blunder, while neither side is decided (default 0: never)")
    sp.add_argument("--blunder-loss", type=float, default=0.3, metavar="X",
                    help="a blunder loses at least this much win probability (default 0.3)")
    sp.add_argument("--blunder-after", type=int, default=8, metavar="PLY",
                    help="no blunder before this ply (default 8)")
    sp.add_argument("--book", help="opening book (PGN: end of each game; EPD/FEN: each line); games start there")
    sp.add_argument("--max-plies", type=int, default=300, help="longest game in plies (default 300)")
    sp.add_argument("--adjudicate", type=int, default=8,
                    help="stop a game after this many plies with the result decided (0: never; default 8)")
    sp.add_argument("--hash", type=int, default=16, dest="hash_mb", help="Stockfish hash, MB (default 16)")
    op = p.add_argument_group("on-policy games (a model plays one or both sides)")
    op.add_argument("--on-policy", action="store_true",
                    help="the model plays one side (drawn per game) against Stockfish at a UCI_Elo drawn from "
                         "--model-opponents, or itself; every position met is written")
    op.add_argument("--model", metavar="WEIGHTS", help="the model of --on-policy: a weights file or model name "
                                                       "(default: the shipped model)")
    op.add_argument("--model-opponents", type=_opponents, default=("1350", "1600", "2000", SELF), metavar="LIST",
                    help="opponents drawn per game: UCI_Elo levels, 'self' (the model) and 'mixed' (a Stockfish side "
                         "drawn as in plain self-play from --policies) (default 1350,1600,2000,self)")
    op.add_argument("--model-temperature", type=float, default=0.0, metavar="T",
                    help="the model samples its moves at this temperature (default 0: its best move)")
    fp = p.add_argument_group("positions from files")
    fp.add_argument("--per-game", type=int, default=0, help="positions sampled per game (default 0: all)")
    fp.add_argument("--min-ply", type=int, default=0, help="skip the first plies of each game (default 0)")
    fp.add_argument("--max-ply", type=int, default=None, help="skip plies from this one on")
    fp.add_argument("--max-games", type=int, default=None, help="read at most this many games per file")
    return p


def _check(args: argparse.Namespace) -> str | None:
    if not args.inputs and args.games <= 0:
        return "nothing to do: give PGN/EPD files and/or --games N"
    if args.pgn and args.inputs:
        return "--pgn writes self-play games; it takes no input files"
    if not 0.0 <= args.test_fraction <= 1.0:
        return "--test-fraction must be between 0 and 1"
    for name in ("games", "per_game", "min_ply", "adjudicate"):
        if getattr(args, name) < 0:
            return f"--{name.replace('_', '-')} must not be negative"
    for name in ("workers", "nodes", "depth", "multipv", "max_plies", "hash_mb", "max_games", "max_ply"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name.replace('_mb', '').replace('_', '-')} must be at least 1"
    for name in ("random_moves", "random_top_k", "blunder_after"):
        if getattr(args, name) < 0:
            return f"--{name.replace('_', '-')} must not be negative"
    if args.random_moves and args.random_window[0] < 1:
        return "--random-window counts plies from 1 (the first move)"
    if not 0.0 <= args.blunder_rate <= 1.0:
        return "--blunder-rate must be between 0 and 1"
    if not 0.0 < args.blunder_loss <= 1.0:
        return "--blunder-loss must be above 0 and at most 1"
    if args.opening_temperature is not None and args.opening_temperature < 0:
        return "--opening-temperature must not be negative"
    if args.model_temperature < 0:
        return "--model-temperature must not be negative"
    if (args.model or args.model_temperature) and not args.on_policy:
        return "--model and --model-temperature need --on-policy"
    if args.on_policy and not args.games:
        return "--on-policy plays games: give --games N"
    for path in args.inputs + ([args.book] if args.book else []):
        if not Path(path).is_file():
            return f"no such file: {path}"
    out = Path(args.out)
    ext = "txt" if args.pgn else "fen"
    existing = [out / f"{s}.{ext}" for s in SPLITS if (out / f"{s}.{ext}").exists()]
    if existing and not (args.resume or args.force):
        return f"{existing[0]} exists; use --resume to continue or --force to overwrite"
    return None


def _model_path(name: str | None) -> str:
    """The weights file of ``--model`` (default: the shipped model), or a ``datagen: ...`` message."""
    from neuralengine.deepmind import resolve_weights
    from neuralengine.paths import default_weights
    from neuralengine.weights import WeightsError, read_metadata

    try:
        path = str(resolve_weights(name)) if name else str(default_weights())
        read_metadata(path)
    except (WeightsError, OSError, ValueError) as exc:
        return f"datagen: --model: {exc}"
    return path


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``neuralengine datagen``."""
    from neuralengine.progress import Progress

    args = build_parser().parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"datagen: {problem}", file=sys.stderr)
        return 2
    if args.ray is not None:
        from neuralengine.data.cluster import import_ray

        import_ray()  # before anything is written
    command: list[str] = []
    engine_name = None
    if args.games:
        try:
            command = resolve_engine(args.stockfish)
            with Stockfish(command) as probe:
                engine_name = probe.name
                missing = [o for o in ("MultiPV", "Skill Level", "UCI_LimitStrength", "UCI_Elo")
                           if not probe.has_option(o)]
        except EngineError as exc:
            print(f"datagen: {exc}", file=sys.stderr)
            return 2
        if missing:
            print(f"datagen: {engine_name} lacks the options {missing}; self-play needs Stockfish", file=sys.stderr)
            return 2
    model = None
    if args.on_policy:
        model = _model_path(args.model)
        if model.startswith("datagen: "):
            print(model, file=sys.stderr)
            return 2
    out = Path(args.out)
    writer: PositionWriter | TranscriptWriter
    if args.pgn:
        writer = TranscriptWriter(out, args.test_fraction, resume=args.resume)
    else:
        writer = PositionWriter(out, args.test_fraction, resume=args.resume)
    skipped: dict[str, int] = {}
    sources: list[dict[str, Any]] = []
    start = time.monotonic()
    sigterm = contextlib.ExitStack()
    try:
        sigterm.enter_context(sigterm_interrupts())
        for name in args.inputs:
            path = Path(name)
            reader = iter_pgn_games if is_pgn(path) else iter_epd_games
            bar = Progress(f"datagen {path.name}", unit="games", enabled=not args.quiet)
            before = dict(writer.counts)
            for gid, boards, problem in reader(path, args.max_games):
                bar.update(1, postfix=f"{writer.counts['train'] + writer.counts['test']} positions")
                if problem is not None:
                    key = problem if len(problem) < 40 else "invalid position"
                    skipped[key] = skipped.get(key, 0) + 1
                    continue
                if gid in writer.games_seen:
                    continue
                writer.add_game(gid, select_positions(boards, gid, args.seed, args.min_ply, args.max_ply,
                                                      args.per_game))
            bar.close()
            sources.append({"file": path.name, "games": writer.counts["games"] - before["games"],
                            "positions": sum(writer.counts[s] - before[s] for s in SPLITS)})
        if args.games:
            cfg = SelfPlayConfig(seed=args.seed, nodes=None if args.depth else (args.nodes or 10_000),
                                 depth=args.depth, policies=args.policies, multipv=args.multipv,
                                 temperatures=args.temperatures, skill_range=args.skill, elo_range=args.elo,
                                 random_plies=args.random_plies, max_plies=args.max_plies,
                                 adjudicate_plies=args.adjudicate, hash_mb=args.hash_mb,
                                 book=tuple(load_book(Path(args.book))) if args.book else (),
                                 random_moves=args.random_moves, random_window=args.random_window,
                                 random_top_k=args.random_top_k, blunder_rate=args.blunder_rate,
                                 blunder_loss=args.blunder_loss, blunder_after=args.blunder_after, model=model,
                                 model_opponents=args.model_opponents, model_temperature=args.model_temperature,
                                 opening_temperature=args.opening_temperature, opening_plies=args.opening_plies)
            if args.book and not cfg.book:
                print(f"datagen: no usable positions in the book {args.book}", file=sys.stderr)
                return 2
            if args.ray is not None:
                from neuralengine.data.cluster import RayBackend

                backend: Backend = RayBackend(args.ray, args.workers)
            else:
                backend = PoolBackend(args.workers)
            todo = sum(1 for i in range(args.games) if game_id(args.seed, i) not in writer.games_seen)
            bar = Progress("datagen self-play", total=todo, unit="games", enabled=not args.quiet)
            before = dict(writer.counts)
            reasons: dict[str, int] = {}
            sides: dict[str, int] = {}
            injected = {"random_moves": 0, "blunders": 0}
            games = play_games(command, cfg, args.games, backend, writer.games_seen, progress=bar,
                               postfix=lambda _: f"{writer.counts['train'] + writer.counts['test']} "
                                                 f"{'games written' if args.pgn else 'positions'}")
            try:
                for game in games:
                    if isinstance(writer, TranscriptWriter):
                        writer.add_game(game.game_id, game.start_fen, game.moves, game.result, game.reason,
                                        game.sides, game.elos)
                    else:
                        writer.add_game(game.game_id, game.fens)
                    reasons[game.reason] = reasons.get(game.reason, 0) + 1
                    for side in game.sides:
                        sides[side.split()[0]] = sides.get(side.split()[0], 0) + 1
                    injected["random_moves"] += game.random_moves
                    injected["blunders"] += game.blunders
            finally:
                games.close()  # stops the workers
                bar.close()
            settings = asdict(cfg)
            settings["book"] = args.book and Path(args.book).name
            sources.append({"selfplay": settings, "engine": engine_name, "games": writer.counts["games"]
                            - before["games"], "positions": sum(writer.counts[s] - before[s] for s in SPLITS),
                            "endings": reasons, "sides_by_policy": sides, **injected})
    except KeyboardInterrupt:
        return interrupt_exit("datagen", "rerun with --resume to continue")
    except EngineError as exc:
        print(f"\ndatagen: {exc}; rerun with --resume to continue", file=sys.stderr)
        return 1
    finally:
        sigterm.close()
        writer.close()
    meta_path = out / "datagen.json"
    runs = []
    if args.resume and meta_path.exists():
        try:
            runs = json.loads(meta_path.read_text(encoding="utf-8")).get("runs", [])
        except (OSError, json.JSONDecodeError):
            runs = []
    runs.append({"sources": sources, "seconds": round(time.monotonic() - start, 1), "skipped_games": skipped,
                 **{k: v for k, v in writer.counts.items() if k not in SPLITS}})
    meta = {"format": "FEN<TAB>game_id per line; de-duplicated by FEN without move counters; split by game",
            "test_fraction": args.test_fraction, "seed": args.seed,
            "positions": {s: writer.counts[s] for s in SPLITS}, "runs": runs}
    if args.pgn:
        meta["format"] = "PGN and GAME_ID<TAB>WHITE_ELO<TAB>BLACK_ELO<TAB>RESULT<TAB>;1.e4 e5 2.Nf3 transcripts; split by game"
        meta["games"] = meta.pop("positions")
    write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    if args.pgn:
        print(f"datagen: {writer.counts['train']} train and {writer.counts['test']} test games in {out}",
              file=sys.stderr)
        return 0
    print(f"datagen: {writer.counts['train']} train and {writer.counts['test']} test positions in {out} "
          f"({writer.counts['duplicates']} duplicates dropped"
          + (f", skipped games: {skipped}" if skipped else "") + ")", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
