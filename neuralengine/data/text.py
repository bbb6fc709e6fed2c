"""The plain-text action-value format (turned into shards by :mod:`neuralengine.data.prepare`).

One line per position: ``FEN<TAB>move:score move:score ...``. Scores are from
the point of view of the side to move in FEN: centipawns (``35``, ``-120``)
or a mate distance (``#3``: the mover mates; ``#-2``: the mover is mated).
A game's first line is the start position; lines of one game are consecutive.
Files may be plain, gzip (``.gz``) or xz (``.xz``) compressed.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
from pathlib import Path
from typing import IO, Iterator, Sequence

import chess
import numpy as np

from neuralengine.data.shards import Position
from neuralengine.encoding import MOVE_TO_ACTION, cp_to_win_prob, tokenize


class FormatError(ValueError):
    pass


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    p = str(path)
    if p.endswith(".xz"):
        return lzma.open(p, "rt", encoding="utf-8")
    if p.endswith(".gz"):
        return gzip.open(p, "rt", encoding="utf-8")
    return open(p, encoding="utf-8")


def score_to_win_prob(score: str) -> float:
    """``35`` → Lichess win probability; ``#N`` → 1.0, ``#-N`` → 0.0."""
    if score.startswith("#"):
        return 0.0 if score[1:].startswith("-") else 1.0
    return float(cp_to_win_prob(int(score)))


def parse_line(line: str) -> tuple[str, list[str], np.ndarray]:
    """Split one line into FEN, UCI moves and win probabilities."""
    try:
        fen, rest = line.rstrip("\n").split("\t", 1)
        moves, probs = [], []
        for item in rest.split():
            move, score = item.rsplit(":", 1)
            moves.append(move)
            probs.append(score_to_win_prob(score))
    except ValueError as exc:
        raise FormatError(f"malformed action-value line: {line[:80]!r}") from exc
    return fen, moves, np.asarray(probs, dtype=np.float32)


def position_key(fen: str) -> str:
    """FEN without the move counters: the key for de-duplication."""
    return " ".join(fen.split(" ")[:4])


def is_test_game(game_key: str, test_fraction: float) -> bool:
    """Deterministic game-level split from a hash of the game's identity."""
    h = int.from_bytes(hashlib.sha256(game_key.encode()).digest()[:8], "little")
    return (h / 2**64) < test_fraction


def iter_games(paths: Sequence[str | os.PathLike[str]]) -> Iterator[tuple[str, list[tuple[str, list[str], np.ndarray]]]]:
    """Yield ``(game_key, lines)`` for every game in the text files."""
    for path in paths:
        name = Path(path).name
        game: list[tuple[str, list[str], np.ndarray]] = []
        number = 0
        with open_text(path) as fh:
            for line in fh:
                if not line.strip():
                    continue
                fen, moves, probs = parse_line(line)
                if fen.split(" ")[0] == chess.STARTING_BOARD_FEN and fen.endswith(" 0 1") and game:
                    yield f"{name}#{number}", game
                    number += 1
                    game = []
                game.append((fen, moves, probs))
        if game:
            yield f"{name}#{number}", game


def to_position(fen: str, moves: list[str], probs: np.ndarray, game_id: int) -> Position:
    actions = np.fromiter((MOVE_TO_ACTION[m] for m in moves), dtype=np.int16, count=len(moves))
    return Position(tokenize(fen), actions, probs, game_id)

