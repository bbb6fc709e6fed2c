"""The random-mover opponent: a real UCI engine driven through python-chess,
and a short match against it through ``neuralengine match``."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import chess
import chess.engine

from neuralengine.benchmarks import match

COMMAND = [sys.executable, "-m", "neuralengine.benchmarks.random_mover"]


def _play(seed: int, plies: int = 30) -> list[str]:
    with chess.engine.SimpleEngine.popen_uci(COMMAND + ["--seed", str(seed)]) as engine:
        assert engine.id["name"] == "random-mover"
        board = chess.Board()
        for _ in range(plies):
            if board.is_game_over():
                break
            move = engine.play(board, chess.engine.Limit(nodes=1)).move
            assert move in board.legal_moves
            board.push(move)
        return [m.uci() for m in board.move_stack]


def test_random_mover_plays_legal_reproducible_varied_moves():
    first, again, other = _play(1), _play(1), _play(2)
    assert first == again
    assert first != other
    assert len(set(first[::2])) > 5


def test_random_mover_survives_bad_input():
    import subprocess

    proc = subprocess.run(COMMAND + ["--seed", "3"], input="position fen nonsense\nposition startpos moves e2e5\n"
                          "position startpos moves e2e4\ngo\nquit\n", capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0
    assert sum(line.startswith("info string bad position") for line in lines) == 2
    best = [line.split()[1] for line in lines if line.startswith("bestmove")]
    assert len(best) == 1 and chess.Move.from_uci(best[0]) in chess.Board("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/"
                                                                            "RNBQKBNR b KQkq - 0 1").legal_moves


def test_match_against_the_random_mover(tiny_weights: Path, engine_command: list[str], tmp_path: Path):
    out = tmp_path / "match"
    code = match.main(["--tool", "builtin", "--weights", str(tiny_weights), "--engine-cmd", shlex.join(engine_command),
                       "--random-mover", "--games", "2", "--tc", "2+0.05", "--max-moves", "30", "--out", str(out),
                       "--quiet"])
    assert code == 0
    report = json.loads((out / "match.json").read_text())
    row = report["opponents"][0]
    assert row["opponent"] == "random" and row["wins"] + row["draws"] + row["losses"] == 2
    assert report["soak"]["illegal_moves"] == 0 and report["soak"]["crashes"] == 0
