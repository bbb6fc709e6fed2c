"""The whole chain in small: datagen -> annotate -> prepare -> train -> the engine plays through UCI.

Every step runs the real ``neuralengine`` executable, with real Stockfish for
the positions and the action values, so this is what a user's first run does,
only smaller.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import chess
import chess.engine
import pytest

from neuralengine.data.shards import open_shards
from neuralengine.data.text import is_test_game, parse_line
from neuralengine.weights import load_weights

GAMES, SEED, TEST_FRACTION = 4, 2, 0.25


def run(command: list[str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args[:1])} failed:\n{proc.stderr[-3000:]}"
    return proc


def play(ours: chess.engine.SimpleEngine, stockfish: chess.engine.SimpleEngine, ours_white: bool) -> chess.Board:
    """One game to its end by the rules (or 400 plies). Every move is checked for legality, and every move of
    ours for the network's evaluation of all legal moves (``nodes``), not a move played without evaluation."""
    board = chess.Board()
    while not board.is_game_over(claim_draw=True) and board.ply() < 400:
        ours_to_move = board.turn == (chess.WHITE if ours_white else chess.BLACK)
        if ours_to_move:
            # The engine answers once it has scored the moves; the generous limit only keeps the load of the
            # machine from pushing it into a move without evaluation.
            result = ours.play(board, chess.engine.Limit(time=0.5), info=chess.engine.INFO_ALL)
            assert result.info.get("nodes") == board.legal_moves.count(), (board.fen(), result.info)
        else:
            result = stockfish.play(board, chess.engine.Limit(nodes=2000))
        assert result.move is not None and result.move in board.legal_moves, (board.fen(), result.move)
        board.push(result.move)
    return board


@pytest.mark.slow
def test_datagen_annotate_prepare_train_play(stockfish_path, engine_command, tmp_path: Path):
    positions, annotated, shards, model = (tmp_path / n for n in ("positions", "annotated", "shards", "run"))
    # The chosen seed sends one of the four games to test.
    assert any(is_test_game(f"sp{SEED}-{i:06d}", TEST_FRACTION) for i in range(GAMES))

    run(engine_command, "datagen", "--out", str(positions), "--games", str(GAMES), "--seed", str(SEED),
        "--test-fraction", str(TEST_FRACTION), "--nodes", "300", "--max-plies", "60", "--workers", "2",
        "--stockfish", stockfish_path, "--quiet")
    train_fens = (positions / "train.fen").read_text().splitlines()
    test_fens = (positions / "test.fen").read_text().splitlines()
    assert len(train_fens) > 50 and test_fens

    run(engine_command, "annotate", str(positions),
        "--out", str(annotated), "--depth", "2", "--workers", "2", "--shard-size", "100",
        "--stockfish", stockfish_path, "--quiet")
    sidecars = sorted(annotated.glob("*.json"))
    assert {json.loads(p.read_text())["split"] for p in sidecars} == {"train", "test"}
    assert sum(json.loads(p.read_text())["positions"] for p in sidecars) == len(train_fens) + len(test_fens)
    for path in annotated.glob("*.txt.gz"):
        with gzip.open(path, "rt") as fh:
            for line in fh:
                fen, moves, _ = parse_line(line)
                assert sorted(moves) == sorted(m.uci() for m in chess.Board(fen).legal_moves)

    run(engine_command, "prepare", str(annotated), "--out", str(shards), "--quiet")
    opened = open_shards([shards])
    assert {s.path.name.split("-")[0] for s in opened} == {"train", "test"}
    assert opened[0].metadata["limit"] == {"depth": 2}

    run(engine_command, "train", "--data", str(shards), "--out", str(model), "--preset", "tiny",
        "--attention", "shared_board", "--steps", "30", "--batch-size", "16", "--lr", "3e-3", "--warmup", "5",
        "--eval-every", "30", "--threads", "1", "--quiet", timeout=150)
    weights = model / "model.safetensors"
    assert weights.is_file() and (model / "model.onnx").is_file()
    loaded = load_weights(weights)
    assert loaded.config.attention == "shared_board" and loaded.metadata["provenance"]["steps"] == 30

    with chess.engine.SimpleEngine.popen_uci(engine_command) as ours, \
            chess.engine.SimpleEngine.popen_uci(stockfish_path) as stockfish:
        # The ONNX backend: the exported graph itself plays.
        ours.configure({"WeightsFile": str(weights), "Backend": "onnx"})
        stockfish.configure({"Threads": 1, "Hash": 16})
        for ours_white in (True, False):
            board = play(ours, stockfish, ours_white)
            ours_colour = chess.WHITE if ours_white else chess.BLACK
            outcome = board.outcome(claim_draw=True)
            # Stockfish at 2000 nodes mates a model trained for 30 steps well before the 400-ply cap.
            assert outcome is not None, f"no result after {board.ply()} plies: {board.fen()}"
            assert outcome.termination == chess.Termination.CHECKMATE and outcome.winner != ours_colour, \
                (outcome, board.fen())
            # Asked about the final position, the engine sees the same end: mated, no move to play.
            final = ours.play(board, chess.engine.Limit(time=0.5), info=chess.engine.INFO_ALL)
            assert board.turn == ours_colour and final.move is None, (board.fen(), final)
            assert final.info["score"].relative == chess.engine.Mate(-0), final.info
        ours.ping()


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
