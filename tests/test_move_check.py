"""The Stockfish check of an engine's moves: shares of moves losing more than 0.1/0.2/0.3 win probability and
the first blunder's median ply, on real games with known blunders, and in match's report."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import chess.pgn
import pytest

from neuralengine.benchmarks import match
from neuralengine.benchmarks.move_check import Checker, check_games, format_report, player_moves, read_games

GAMES = Path(__file__).resolve().parent / "data" / "move_check" / "games.pgn"


def test_player_moves_skip_the_book_and_the_opponent() -> None:
    games = read_games(GAMES)
    assert [m.uci() for _, m in player_moves(games[0], "ours")] == ["e2e4", "d1h5", "h5e5", "d2d4", "g1f3"]
    # Game 2: ours has Black; its first move (1...e5) is the end of the opening.
    assert [(b.ply() + 1, m.uci()) for b, m in player_moves(games[1], "ours")] == [
        (4, "b8c6"), (6, "d8h4"), (8, "e5d4")]
    # Plies count from the FEN's move number.
    assert [b.ply() + 1 for b, _ in player_moves(games[2], "ours")] == [59]
    assert list(player_moves(games[0], "nobody")) == []


def test_known_blunders_are_found(stockfish_path: str) -> None:
    report = check_games(GAMES, "ours", [stockfish_path], depth=6)
    assert report["depth"] == 6 and report["games"] == 3 and report["moves"] == 9
    shares = report["share_losing_more_than"]
    # 3.Qxe5+?? and 3...Qh4?? give the queen away; 30.Re8# and the quiet moves lose nothing much.
    assert shares["0.3"] == pytest.approx(2 / 9)
    assert shares["0.1"] >= shares["0.2"] >= shares["0.3"]
    assert report["games_with_blunder"] == 2
    assert report["first_blunder_ply_median"] == 5.5  # plies 5 and 6
    assert report["per_opponent"]["sf"]["moves"] == 9
    text = format_report(report)
    assert "22.2 % lose > 0.3" in text and "2 of 3 games" in text and "median ply 5.5" in text


def test_a_mate_on_the_board_loses_nothing(stockfish_path: str) -> None:
    game = read_games(GAMES)[2]
    checker = Checker([stockfish_path], depth=4)
    try:
        (board, move), = player_moves(game, "ours")
        assert checker.win_prob(board) == 1.0
        assert checker.loss(board, move) == 0.0
    finally:
        checker.close()


@pytest.mark.slow
def test_match_report_carries_the_check(tmp_path: Path, stockfish_path: str, engine_command: list[str],
                                        tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "match"
    code = match.main(["--tool", "builtin", "--weights", str(tiny_weights), "--engine-cmd", shlex.join(engine_command),
                       "--stockfish", stockfish_path, "--stockfish-elo", "1350", "--games", "2", "--tc", "2+0.05",
                       "--max-moves", "20", "--check-depth", "5", "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "match.json").read_text())
    check = report["move_check"]
    with open(out / "games.pgn", encoding="utf-8") as fh:
        games = [chess.pgn.read_game(fh) for _ in range(2)]
    assert check["moves"] == sum(len(list(player_moves(g, "neuralengine"))) for g in games) > 0
    assert check["depth"] == 5 and set(check["per_opponent"]) == {"sf1350"}
    assert "move check (Stockfish depth 5" in capsys.readouterr().out


def test_no_stockfish_skips_the_check_in_one_line(tmp_path: Path) -> None:
    args = match.build_parser().parse_args(["--stockfish", str(tmp_path / "missing"), "--out", str(tmp_path)])
    pgn = tmp_path / "g.pgn"
    pgn.write_text(GAMES.read_text())
    result = match._check_moves(args, "ours", pgn)
    assert "missing" in result["skipped"]
    assert format_report(result).startswith("  move check: skipped")
    assert match._check_moves(args, "ours", tmp_path / "none.pgn") == {"skipped": "no PGN of the games"}
    assert match.main(["--check-depth", "-1", "--random-mover", "--dry-run"]) == 2
