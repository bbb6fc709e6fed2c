"""The fixed position suite of ``neuralengine bench``.

``bench_positions.fen`` next to this module holds 100 positions in five
groups (opening, middlegame, endgame, few legal moves, many legal moves).
They were drawn from the project's seed self-play data, whose file
``d7_s101-000.txt.xz`` is not in the repository (``tests/data/shared/av/``
holds a cut of it), with::

    python -m neuralengine.benchmarks.suite SEED_DATA/d7_s101-000.txt.xz \\
        --seed 1 --out neuralengine/benchmarks/bench_positions.fen

The draw is seeded, so the same data file gives the same suite. Speed
depends on the number of legal moves (each one is a move evaluation), which
is why the suite mixes game phases and move counts on purpose.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import chess

#: The built-in suite.
SUITE_PATH = Path(__file__).resolve().with_name("bench_positions.fen")

#: (group, how many, description) in file order.
GROUPS: tuple[tuple[str, int, str], ...] = (
    ("opening", 25, "plies 4-20 of a game"),
    ("middlegame", 35, "plies 30-90, at least 20 pieces"),
    ("endgame", 25, "at most 12 pieces"),
    ("few-moves", 8, "at most 8 legal moves"),
    ("many-moves", 7, "at least 45 legal moves"),
)


@dataclass(frozen=True)
class SuitePosition:
    fen: str
    group: str


def load_suite(path: str | Path | None = None) -> list[SuitePosition]:
    """Read the suite: FEN lines under ``# group`` headers."""
    path = Path(path) if path is not None else SUITE_PATH
    group = ""
    out: list[SuitePosition] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                words = line[1:].split()
                if words and words[0].startswith("group="):
                    group = words[0][len("group="):]
                continue
            try:
                board = chess.Board(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: bad FEN ({exc})") from None
            if board.is_game_over():
                raise ValueError(f"{path}:{number}: the position has no legal move")
            out.append(SuitePosition(board.fen(), group))
    return out


def _group_of(ply: int, board: chess.Board, legal: int) -> list[str]:
    pieces = chess.popcount(board.occupied)
    groups = []
    if 4 <= ply <= 20:
        groups.append("opening")
    if 30 <= ply <= 90 and pieces >= 20:
        groups.append("middlegame")
    if pieces <= 12:
        groups.append("endgame")
    if 1 <= legal <= 8:
        groups.append("few-moves")
    if legal >= 45:
        groups.append("many-moves")
    return groups


def draw_suite(data_path: str, seed: int = 1,
               groups: Sequence[tuple[str, int, str]] = GROUPS) -> list[SuitePosition]:
    """Draw the suite from an action-value text file (lines ``FEN<TAB>moves``, games consecutive)."""
    from neuralengine.data.text import open_text

    pools: dict[str, list[str]] = {name: [] for name, _, _ in GROUPS}
    seen: set[str] = set()
    ply = 0
    with open_text(data_path) as fh:
        for line in fh:
            fen = line.split("\t", 1)[0].strip()
            if not fen:
                continue
            board = chess.Board(fen)
            ply = 0 if fen == chess.STARTING_FEN else ply + 1
            key = board.epd()
            if key in seen or board.is_game_over():
                continue
            seen.add(key)
            for group in _group_of(ply, board, board.legal_moves.count()):
                pools[group].append(board.fen())
    rng = random.Random(seed)
    chosen: set[str] = set()
    out: list[SuitePosition] = []
    for name, count, _ in groups:
        pool = [fen for fen in pools[name] if fen not in chosen]
        if len(pool) < count:
            raise ValueError(f"{data_path}: only {len(pool)} positions for group {name}, need {count}")
        for fen in rng.sample(pool, count):
            chosen.add(fen)
            out.append(SuitePosition(fen, name))
    return out


def write_suite(path: str | Path, positions: list[SuitePosition], source: str, seed: int) -> None:
    lines = [
        "# neuralengine bench positions: one FEN per line, grouped under '# group=NAME' headers.",
        f"# Drawn with seed {seed} from {source} by 'python -m neuralengine.benchmarks.suite'.",
    ]
    descriptions = {name: text for name, _, text in GROUPS}
    group = None
    for p in positions:
        if p.group != group:
            group = p.group
            lines.append(f"# group={group} ({descriptions[group]})")
        lines.append(p.fen)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuralengine.benchmarks.suite",
                                     description="Draw the bench position suite from action-value text data.")
    parser.add_argument("data", help="action-value text file (.txt, .gz or .xz)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(SUITE_PATH))
    args = parser.parse_args(argv)
    try:
        positions = draw_suite(args.data, args.seed)
    except (OSError, ValueError) as exc:
        print(f"suite: {exc}", file=sys.stderr)
        return 1
    write_suite(args.out, positions, Path(args.data).name, args.seed)
    print(f"wrote {len(positions)} positions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
