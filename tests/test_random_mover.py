"""The random-mover opponent: a real UCI engine driven through python-chess,
and a short match against it through ``neuralengine match``."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import chess
import chess.engine
import chess.pgn

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


def _our_move_seconds(game: chess.pgn.Game, ours: str) -> list[float]:
    """The thinking time the runner wrote after each of ``ours``'s moves (the last ``0.012s`` of a comment)."""
    colour = chess.WHITE if game.headers["White"] == ours else chess.BLACK
    seconds = []
    for node in game.mainline():
        if node.parent.board().turn == colour and node.comment:
            seconds.append(float(re.findall(r"(\d+\.\d+)s\b", node.comment)[-1]))
    return seconds


def test_match_against_the_random_mover(tiny_weights: Path, engine_command: list[str], tmp_path: Path):
    """Two games against the random mover: every move in the PGN is legal, each result and termination is the
    one the final position calls for, the engine's clock (rebuilt from the move times in the PGN) never
    falls, and the reported tally and reliability figures are those of the PGN."""
    out = tmp_path / "match"
    max_moves, base, increment, margin = 30, 2.0, 0.05, 0.05
    code = match.main(["--tool", "builtin", "--weights", str(tiny_weights), "--engine-cmd", shlex.join(engine_command),
                       "--random-mover", "--games", "2", "--tc", f"{base:g}+{increment:g}", "--max-moves",
                       str(max_moves), "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "match.json").read_text())
    ours = report["engine"]["name"]
    games = []
    with open(out / report["pgn"], encoding="utf-8") as fh:
        while (game := chess.pgn.read_game(fh)) is not None:
            games.append(game)
    assert len(games) == 2
    assert {(g.headers["White"], g.headers["Black"]) for g in games} == {(ours, "random"), ("random", ours)}
    tally = {"wins": 0, "draws": 0, "losses": 0}
    our_moves = 0
    for game in games:
        assert not game.errors, game.errors  # python-chess replays every move: none is illegal
        assert game.headers["SetUp"] == "1"  # the openings are positions: every ply was an engine's
        final = game.end().board()
        engine_plies = len(final.move_stack)
        assert int(game.headers["PlyCount"]) == engine_plies
        outcome = final.outcome(claim_draw=True)
        if outcome is not None:
            assert game.headers["Termination"] == "normal"
            assert game.headers["Result"] == outcome.result()
        else:
            # Only the move limit may end a game the rules have not ended.
            assert game.headers["Termination"] == "adjudication"
            assert game.headers["Result"] == "1/2-1/2"
            assert engine_plies == 2 * max_moves
        result = game.headers["Result"]
        if result == "1/2-1/2":
            tally["draws"] += 1
        else:
            white_won = result == "1-0"
            tally["wins" if white_won == (game.headers["White"] == ours) else "losses"] += 1
        seconds = _our_move_seconds(game, ours)
        our_moves += len(seconds)
        clock = base
        for spent in seconds:
            clock -= spent
            assert clock >= -margin, f"{ours} overstepped its clock by {-clock:.3f} s"
            clock += increment
    row = report["opponents"][0]
    assert row["opponent"] == "random"
    assert {k: row[k] for k in tally} == tally
    assert report["soak"]["time_forfeits"] == 0
    assert report["soak"]["illegal_moves"] == 0 and report["soak"]["crashes"] == 0
    mine = report["engines"][ours]
    assert (mine["games"], mine["moves"]) == (2, our_moves)
    assert mine["time_forfeits"] == mine["illegal_moves"] == mine["crashes"] == mine["restarts"] == 0
