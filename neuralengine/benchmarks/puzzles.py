"""``neuralengine puzzles FILE.csv``: solve Lichess puzzles through UCI and report accuracy.

The file is the Lichess puzzle database format
(``PuzzleId,FEN,Moves,Rating,...``). ``FEN`` is the position *before* the
opponent's move: the first move of ``Moves`` is the opponent's, and the
solver plays every second move after it.

Scoring follows DeepMind (searchless chess, §6 of the reference sheet): the
moves are walked in order, the opponent's pushed as given; at each of the
solver's turns the engine's move must equal the solution's, except that any
move that checkmates solves the puzzle (Lichess accepts every mate in one). A
puzzle is solved when all the engine's moves pass.

The engine is driven as a UCI subprocess through python-chess, which sends
the whole history (``position fen FEN moves ...``), so the engine sees the
same repetition history a game would give it.

The Lichess file names the game a puzzle comes from (``GameUrl``) but holds
none of its moves. A file may add them in a ``GameMoves`` column: the moves
from the initial position to the puzzle's FEN, in UCI or SAN (move numbers
are ignored). The engine is then given the game (``position startpos moves
...``). Text models (the ``pgn_lm`` kind) read only games: with one, the
puzzles without ``GameMoves`` are skipped and counted in the report.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import chess

from neuralengine.benchmarks.elo import jsonable, z_value
from neuralengine.benchmarks.machine import plays_text_model, run_record
from neuralengine.uci import NO_NETWORK

#: A move source: the engine's move in a position (the board carries the puzzle's history).
MoveSource = Callable[[chess.Board], chess.Move | None]

REQUIRED_COLUMNS = ("PuzzleId", "FEN", "Moves", "Rating")

#: The optional column with the game's moves up to the puzzle's FEN.
GAME_MOVES_COLUMN = "GameMoves"


class PuzzleFileError(ValueError):
    """A puzzle file that cannot be read at all."""


class EngineWithoutModel(RuntimeError):
    """The engine answers, but with moves chosen without its network (its weights did not load)."""




@dataclass
class Puzzle:
    id: str
    fen: str
    moves: list[str]
    rating: int
    themes: str = ""
    #: The game's moves (UCI) from the initial position to :attr:`fen`, when the file gives them.
    game: list[str] = field(default_factory=list)


@dataclass
class PuzzleResult:
    id: str
    rating: int
    solved: bool
    #: index in ``moves`` of the first wrong engine move, None when solved
    failed_at: int | None = None
    engine_moves: list[str] = field(default_factory=list)
    #: solved by a mate that differs from the solution's move
    alternative_mate: bool = False
    error: str | None = None


def read_puzzles(path: str | Path, limit: int | None = None) -> tuple[list[Puzzle], list[str]]:
    """Valid puzzles of a Lichess CSV file, and one message per skipped row.

    A missing file or missing columns raise :class:`PuzzleFileError`; a bad
    row (unparsable FEN, illegal move, no rating) is skipped with a message.
    """
    path = Path(path)
    if not path.is_file():
        raise PuzzleFileError(f"puzzle file not found: {path}")
    puzzles: list[Puzzle] = []
    skipped: list[str] = []
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        try:
            fieldnames = reader.fieldnames
            if fieldnames is None:
                raise PuzzleFileError(f"{path} is empty")
            missing = [c for c in REQUIRED_COLUMNS if c not in fieldnames]
            if missing:
                raise PuzzleFileError(f"{path} lacks the columns {', '.join(missing)} "
                                      f"(expected the Lichess format {','.join(REQUIRED_COLUMNS)},...)")
            for row in reader:
                if limit is not None and len(puzzles) >= limit:
                    break
                line = reader.line_num
                try:
                    puzzles.append(_parse_row(row))
                except ValueError as exc:
                    skipped.append(f"{path.name}:{line}: {exc}")
        except csv.Error as exc:  # an over-long field, a NUL byte: the rest of the file cannot be trusted
            raise PuzzleFileError(f"{path}:{reader.line_num}: not a readable CSV file: {exc}") from None
    return puzzles, skipped


def _parse_row(row: dict[str, Any]) -> Puzzle:
    pid = (row.get("PuzzleId") or "").strip()
    fen = (row.get("FEN") or "").strip()
    moves = (row.get("Moves") or "").split()
    try:
        rating = int(float(row.get("Rating") or ""))  # inf: OverflowError, nan: ValueError
    except (ValueError, OverflowError):
        raise ValueError(f"puzzle {pid or '?'}: rating {row.get('Rating')!r} is not a number") from None
    if len(moves) < 2:
        raise ValueError(f"puzzle {pid or '?'}: needs the opponent's move and at least one solution move")
    try:
        board = chess.Board(fen)
    except ValueError as exc:
        raise ValueError(f"puzzle {pid or '?'}: bad FEN ({exc})") from None
    for uci in moves:
        try:
            move = chess.Move.from_uci(uci)
        except ValueError:
            raise ValueError(f"puzzle {pid or '?'}: {uci!r} is not a UCI move") from None
        if move not in board.legal_moves:
            raise ValueError(f"puzzle {pid or '?'}: {uci} is illegal in {board.fen()}")
        board.push(move)
    game = _parse_game(pid, fen, row.get(GAME_MOVES_COLUMN) or "")
    return Puzzle(pid, fen, moves, rating, (row.get("Themes") or "").strip(), game)


def _parse_game(pid: str, fen: str, text: str) -> list[str]:
    """The game's moves (UCI) from the initial position, checked to reach ``fen`` (``[]`` when none are given)."""
    board = chess.Board()
    for token in text.split():
        if token.rstrip(".").isdigit() or token in ("1-0", "0-1", "1/2-1/2", "*"):
            continue  # move numbers and results
        if "." in token:
            token = token.rsplit(".", 1)[1]  # "12.Nf3"
        try:
            move = board.parse_uci(token)
        except ValueError:
            try:
                move = board.parse_san(token)
            except ValueError:
                raise ValueError(f"puzzle {pid or '?'}: game move {token!r} is not legal in {board.fen()}") from None
        board.push(move)
    if not board.move_stack:
        return []
    if board.epd() != chess.Board(fen).epd():
        raise ValueError(f"puzzle {pid or '?'}: its game moves lead to {board.fen()}, not to the puzzle's FEN")
    return [m.uci() for m in board.move_stack]


def solve(puzzle: Puzzle, move_source: MoveSource) -> PuzzleResult:
    """Score one puzzle with ``move_source`` (DeepMind's rule: all engine moves match, or a mate)."""
    if puzzle.game:
        board = chess.Board()
        for uci in puzzle.game:
            board.push_uci(uci)
    else:
        board = chess.Board(puzzle.fen)
    result = PuzzleResult(puzzle.id, puzzle.rating, False)
    for i, uci in enumerate(puzzle.moves):
        expected = chess.Move.from_uci(uci)
        if i % 2 == 0:
            board.push(expected)
            continue
        predicted = move_source(board)
        result.engine_moves.append(predicted.uci() if predicted else "0000")
        if predicted is None or predicted not in board.legal_moves:
            result.failed_at = i
            return result
        if predicted != expected:
            board.push(predicted)
            if board.is_checkmate():
                result.solved = True
                result.alternative_mate = True
                return result
            result.failed_at = i
            return result
        board.push(expected)
    result.solved = True
    return result


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    z = z_value(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def band_of(rating: int, width: int) -> int:
    return (rating // width) * width


def accuracy_table(results: Sequence[PuzzleResult], width: int = 400) -> dict[str, Any]:
    """Overall accuracy and accuracy per rating band (``[lo, lo + width)``), with 95 % Wilson intervals."""
    def stats(items: Sequence[PuzzleResult]) -> dict[str, Any]:
        solved = sum(r.solved for r in items)
        lo, hi = wilson(solved, len(items))
        return {"puzzles": len(items), "solved": solved,
                "accuracy": solved / len(items) if items else math.nan, "lower": lo, "upper": hi}

    bands: dict[int, list[PuzzleResult]] = {}
    for r in results:
        bands.setdefault(band_of(r.rating, width), []).append(r)
    out = {"overall": stats(results), "band_width": width, "bands": []}
    for lo in sorted(bands):
        entry = stats(bands[lo])
        entry["band"] = f"{lo}-{lo + width - 1}"
        entry["rating_lo"] = lo
        out["bands"].append(entry)
    out["overall"]["alternative_mates"] = sum(r.alternative_mate for r in results)
    out["overall"]["errors"] = sum(r.error is not None for r in results)
    return out


def plot_accuracy(table: dict[str, Any], title: str, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    bands = table["bands"]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(bands) + 2), 4.0))
    xs = list(range(len(bands)))
    acc = [100 * b["accuracy"] for b in bands]
    err = [[max(0.0, 100 * (b["accuracy"] - b["lower"])) for b in bands],
           [max(0.0, 100 * (b["upper"] - b["accuracy"])) for b in bands]]
    ax.bar(xs, acc, color="tab:blue", alpha=0.8)
    ax.errorbar(xs, acc, yerr=err, fmt="none", ecolor="black", capsize=4)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{b['band']}\nn={b['puzzles']}" for b in bands], fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_xlabel("puzzle rating")
    ax.set_ylabel("solved % (95 % interval)")
    overall = table["overall"]
    ax.set_title(f"{title}: {100 * overall['accuracy']:.1f} % of {overall['puzzles']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------
# The UCI move source
# --------------------------------------------------------------------------


class UciMoveSource:
    """Asks a UCI engine for its move; restarts it if it dies (that puzzle counts as failed)."""

    def __init__(self, command: list[str], options: dict[str, str], limit: Any) -> None:
        self.command = command
        self.options = options
        self.limit = limit
        self.engine: Any = None
        self.last_error: str | None = None
        self.errors = 0
        self.name = ""

    def start(self) -> None:
        import chess.engine

        from neuralengine.benchmarks.runner import coerce_options

        try:
            self.engine = chess.engine.SimpleEngine.popen_uci(self.command, timeout=60)
        except (OSError, chess.engine.EngineError, TimeoutError) as exc:
            raise RuntimeError(f"engine {' '.join(self.command)} does not start: {exc}") from None
        self.name = self.engine.id.get("name", Path(self.command[0]).name)
        try:
            if self.options:
                self.engine.configure(coerce_options(self.engine, self.options))
            self.engine.ping()
        except (chess.engine.EngineError, TimeoutError, ValueError) as exc:
            self.close()
            raise RuntimeError(f"engine {' '.join(self.command)}: {exc}") from None

    def __call__(self, board: chess.Board) -> chess.Move | None:
        import chess.engine

        if self.engine is None:
            self.start()
        try:
            played = self.engine.play(board, self.limit, info=chess.engine.INFO_BASIC, game=board.root().fen())
        except (chess.engine.EngineError, TimeoutError) as exc:
            self.last_error = str(exc) or type(exc).__name__
            self.errors += 1
            self.close()
            return None
        note = str(played.info.get("string") or "")
        if NO_NETWORK in note:
            raise EngineWithoutModel(f"{self.name or 'the engine'} plays without its network, so the run "
                                     f"measures nothing: {note}")
        return played.move

    def close(self) -> None:
        if self.engine is not None:
            try:
                self.engine.quit()
            except Exception:  # the engine may already be gone
                self.engine.close()
            self.engine = None


def run_puzzles(puzzles: Iterable[Puzzle], move_source: MoveSource, progress: Any = None) -> list[PuzzleResult]:
    results = []
    solved = 0
    for puzzle in puzzles:
        errors_before = getattr(move_source, "errors", 0)
        result = solve(puzzle, move_source)
        if getattr(move_source, "errors", 0) != errors_before:
            result.error = getattr(move_source, "last_error", None) or "engine error"
        results.append(result)
        solved += result.solved
        if progress is not None:
            progress.update(postfix=f"solved {solved}/{len(results)} ({100 * solved / len(results):.1f} %)")
    return results


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number of seconds, not {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuralengine puzzles",
                                description="Solve Lichess puzzles (CSV) through UCI; accuracy by rating.")
    p.add_argument("file", help="Lichess puzzle CSV (PuzzleId,FEN,Moves,Rating,...)")
    p.add_argument("--limit", type=int, help="only the first N puzzles")
    p.add_argument("--weights", help="weights file, DeepMind checkpoint folder or downloaded model name such as 9M, for our engine (the WeightsFile option)")
    p.add_argument("--engine", help="UCI command to test instead of neuralengine, e.g. 'stockfish'")
    p.add_argument("--engine-option", action="append", default=[], metavar="NAME=VALUE",
                   help="UCI option (repeatable)")
    p.add_argument("--movetime", type=positive_seconds, help="seconds per move (go movetime)")
    p.add_argument("--depth", type=positive_int, help="search depth per move (go depth)")
    p.add_argument("--nodes", type=positive_int, help="nodes per move (go nodes)")
    p.add_argument("--band-width", type=int, default=400, help="rating band width (default 400)")
    p.add_argument("--out", default="puzzles", help="output folder for puzzles.json and puzzles.png")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    import chess.engine

    from neuralengine.benchmarks.match import our_engine_command, quiet_engine_logs
    from neuralengine.progress import Progress

    args = build_parser().parse_args(argv)
    err = sys.stderr
    quiet_engine_logs()
    if args.limit is not None and args.limit < 1:
        print("puzzles: --limit must be positive", file=err)
        return 2
    if args.band_width < 1:
        print("puzzles: --band-width must be positive", file=err)
        return 2
    try:
        puzzles, skipped = read_puzzles(args.file, args.limit)
    except PuzzleFileError as exc:
        print(f"puzzles: {exc}", file=err)
        return 2
    for message in skipped[:10]:
        print(f"puzzles: skipped {message}", file=err)
    if len(skipped) > 10:
        print(f"puzzles: skipped {len(skipped) - 10} more rows", file=err)
    if not puzzles:
        print("puzzles: no valid puzzle in the file", file=err)
        return 2
    options: dict[str, str] = {}
    for text in args.engine_option:
        if "=" not in text:
            print(f"puzzles: --engine-option {text!r} must look like Name=Value", file=err)
            return 2
        name, value = text.split("=", 1)
        options[name.strip()] = value.strip()
    if args.engine:
        command = shlex.split(args.engine)
    else:
        command = our_engine_command()
    if args.weights:
        from neuralengine.deepmind import resolve_weights
        from neuralengine.weights import WeightsError, read_metadata

        try:
            weights = resolve_weights(args.weights)  # a released model's name, a checkpoint folder or a file
        except WeightsError as exc:
            print(f"puzzles: cannot load the weights: {exc}", file=err)
            return 2
        if not weights.is_file():
            print(f"puzzles: weights file not found: {weights}", file=err)
            return 2
        try:
            read_metadata(weights)
        except WeightsError as exc:
            print(f"puzzles: cannot load the weights: {exc}", file=err)
            return 2
        options.setdefault("WeightsFile", str(weights.resolve()))
    without_game = 0
    if plays_text_model(options.get("WeightsFile"), other_engine=bool(args.engine)):
        kept = [p for p in puzzles if p.game]
        without_game = len(puzzles) - len(kept)
        puzzles = kept
        if without_game:
            print(f"puzzles: {without_game} puzzles skipped: a text model (pgn_lm) reads the game, and the file gives "
                  f"no game moves for them (column {GAME_MOVES_COLUMN})", file=err)
        if not puzzles:
            print("puzzles: no puzzle left to play", file=err)
            return 2
    # The output folder is checked before the puzzles are played, not after.
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"puzzles: --out {out} is a file; name a folder for puzzles.json and puzzles.png", file=err)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"puzzles: cannot create the --out folder {out}: {exc.strerror or exc}", file=err)
        return 2
    limit = chess.engine.Limit(time=args.movetime, depth=args.depth, nodes=args.nodes)
    if args.movetime is None and args.depth is None and args.nodes is None:
        limit = chess.engine.Limit(time=0.1)
    source = UciMoveSource(command, options, limit)
    try:
        source.start()
    except RuntimeError as exc:
        print(f"puzzles: {exc}", file=err)
        return 1
    bar = Progress("puzzles", len(puzzles), "puzzles", enabled=not args.quiet)
    t0 = time.monotonic()
    failure: EngineWithoutModel | None = None
    try:
        results = run_puzzles(puzzles, source, bar)
    except EngineWithoutModel as exc:
        failure = exc
    finally:
        source.close()
        bar.close()
    if failure is not None:
        print(f"puzzles: {failure}", file=err)
        return 1
    seconds = time.monotonic() - t0
    table = accuracy_table(results, args.band_width)
    report = {
        "file": Path(args.file).name,
        "engine": {"name": source.name, "command": command, "options": options,
                   "limit": {k: v for k, v in (("time", limit.time), ("depth", limit.depth),
                                               ("nodes", limit.nodes)) if v is not None}},
        "skipped_rows": len(skipped),
        "skipped_without_game": without_game,
        "seconds": seconds,
        "accuracy": table,
        "failed": [{"id": r.id, "rating": r.rating, "at": r.failed_at, "engine_moves": r.engine_moves,
                    "error": r.error} for r in results if not r.solved],
        "record": run_record(args.weights),
    }
    (out / "puzzles.json").write_text(json.dumps(jsonable(report), indent=2) + "\n", encoding="utf-8")
    plot = plot_accuracy(table, source.name or "engine", out / "puzzles.png")
    print(format_table(table, source.name))
    print(f"results: {out / 'puzzles.json'}" + (f", plot: {plot}" if plot else ""))
    return 0


def format_table(table: dict[str, Any], name: str = "") -> str:
    o = table["overall"]
    lines = [f"{name + ': ' if name else ''}{o['solved']}/{o['puzzles']} puzzles solved = "
             f"{100 * o['accuracy']:.1f} % (95 % interval {100 * o['lower']:.1f}-{100 * o['upper']:.1f} %)"
             + (f", {o['alternative_mates']} by another mate" if o["alternative_mates"] else ""),
             f"{'rating':>11} {'puzzles':>8} {'solved':>7} {'accuracy':>9}"]
    for b in table["bands"]:
        lines.append(f"{b['band']:>11} {b['puzzles']:>8} {b['solved']:>7} {100 * b['accuracy']:>8.1f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
