"""Position generation: Stockfish self-play at mixed strengths, PGN/EPD input, de-duplication and splits."""

from __future__ import annotations

import sys

import json
import random
from pathlib import Path

import chess
import pytest

from neuralengine.data.datagen import main
from neuralengine.data.positions import PositionError, parse_position
from neuralengine.data.selfplay import SelfPlayConfig, play_game, sample_move
from neuralengine.data.stockfish import SearchLine, Stockfish, StockfishSearch
from neuralengine.data.text import is_test_game, position_key

DATA = Path(__file__).parent / "data" / "av"
PGN = DATA / "cutechess_match.pgn.xz"

FAST = ["--nodes", "300", "--max-plies", "40", "--quiet"]


def read_out(folder: Path) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for split in ("train", "test"):
        lines = (folder / f"{split}.fen").read_text().splitlines()
        out[split] = [tuple(line.split("\t")) for line in lines]
    return out


def check_output(folder: Path, test_fraction: float) -> list[tuple[str, str]]:
    """Common invariants: valid positions, no duplicates, splits by game."""
    out = read_out(folder)
    rows = out["train"] + out["test"]
    keys = [position_key(fen) for fen, _ in rows]
    assert len(keys) == len(set(keys)), "duplicate positions"
    for split, split_rows in out.items():
        for fen, gid in split_rows:
            board, parsed_gid = parse_position(f"{fen}\t{gid}")
            assert board.fen() == fen and parsed_gid == gid
            assert any(board.legal_moves)
            assert is_test_game(gid, test_fraction) == (split == "test")
    return rows


@pytest.mark.slow
def test_selfplay_games_are_legal_mixed_and_split_by_game(stockfish_path, tmp_path):
    out = tmp_path / "sp"
    assert main(["--out", str(out), "--games", "6", "--workers", "2", "--seed", "3", "--test-fraction", "0.4",
                 "--random-plies", "0-0", "--stockfish", stockfish_path, *FAST]) == 0
    rows = check_output(out, 0.4)
    games: dict[str, list[str]] = {}
    for fen, gid in rows:
        games.setdefault(gid, []).append(fen)
    assert set(games) <= {f"sp3-{i:06d}" for i in range(6)}
    first = games["sp3-000000"]
    assert first[0] == chess.STARTING_FEN
    # The first game lost nothing to de-duplication, except repeated positions: every position after
    # its first is one legal move away from an earlier one.
    for i, fen in enumerate(first[1:], 1):
        children = set()
        for prev in first[:i]:
            board = chess.Board(prev)
            for move in board.legal_moves:
                board.push(move)
                children.add(position_key(board.fen()))
                board.pop()
        assert position_key(fen) in children, i
    meta = json.loads((out / "datagen.json").read_text())
    run = meta["runs"][-1]
    assert run["games"] == 6 and run["sources"][0]["engine"].startswith("Stockfish")
    assert sum(run["sources"][0]["endings"].values()) == 6
    assert sum(run["sources"][0]["sides_by_policy"].values()) == 12
    assert meta["positions"]["train"] + meta["positions"]["test"] == len(rows)
    # Every game starts at the initial position, so all but the first lose it to de-duplication.
    assert run["duplicates"] >= 5


def test_resume_continues_without_replaying(stockfish_path, tmp_path):
    out = tmp_path / "sp"
    common = ["--out", str(out), "--workers", "1", "--stockfish", stockfish_path, *FAST]
    assert main([*common, "--games", "2"]) == 0
    before = read_out(out)
    assert main([*common, "--games", "2"]) == 2  # refuses to overwrite
    # A run killed mid-line leaves a partial last line; resume drops it.
    with open(out / "train.fen", "a") as fh:
        fh.write("rnbqkbnr/pppp")
    assert main([*common, "--games", "4", "--resume"]) == 0
    after = read_out(out)
    assert after["train"][: len(before["train"])] == before["train"]
    meta = json.loads((out / "datagen.json").read_text())
    assert [run["games"] for run in meta["runs"]] == [2, 2]
    rows = check_output(out, 0.02)
    assert {gid for _, gid in rows} <= {f"sp0-{i:06d}" for i in range(4)}


@pytest.mark.parametrize("policy", ["multipv", "skill", "elo"])
def test_each_strength_policy_plays_a_game(stockfish_path, policy):
    cfg = SelfPlayConfig(seed=1, nodes=200, policies=(policy,), max_plies=30, random_plies=(2, 2))
    with Stockfish([stockfish_path], {"Threads": 1, "Hash": 8}) as engine:
        record = play_game(engine, cfg, 0)
    assert record.sides[0].startswith(policy if policy != "elo" else "elo ")
    board = chess.Board(record.fens[0])
    assert len(record.fens) >= 2 and all(chess.Board(f).is_valid() for f in record.fens)
    assert record.reason in {"max_plies", "adjudicated", "checkmate", "stalemate", "insufficient_material",
                             "threefold_repetition", "fifty_moves"}
    assert board.fen() == record.fens[0]


def test_sample_move_follows_the_temperature():
    result = StockfishSearch("e2e4", lines={1: SearchLine(1, "e2e4", "50", True, 5),
                                         2: SearchLine(2, "d2d4", "40", True, 5),
                                         3: SearchLine(3, "g2g4", "-300", True, 5)})
    rng = random.Random(0)
    assert {sample_move(result, 0.0, rng)[0] for _ in range(20)} == {"e2e4"}
    cool = [sample_move(result, 0.01, rng)[0] for _ in range(400)]
    assert "g2g4" not in cool and 0.2 < cool.count("d2d4") / 400 < 0.6
    hot = [sample_move(result, 10.0, rng)[0] for _ in range(300)]
    assert hot.count("g2g4") > 50
    assert sample_move(result, 0.1, rng)[1] == pytest.approx(0.5460, abs=1e-3)


def test_positions_from_a_real_pgn(tmp_path):
    out = tmp_path / "pgn"
    assert main([str(PGN), "--out", str(out), "--per-game", "5", "--min-ply", "10", "--max-ply", "60",
                 "--test-fraction", "0.25", "--quiet"]) == 0
    rows = check_output(out, 0.25)
    games: dict[str, list[str]] = {}
    for fen, gid in rows:
        games.setdefault(gid, []).append(fen)
    assert set(games) == {f"cutechess_match.pgn.xz#{i}" for i in range(12)}
    for fens in games.values():
        assert 1 <= len(fens) <= 5
        for fen in fens:
            board = chess.Board(fen)
            ply = 2 * (board.fullmove_number - 1) + (board.turn == chess.BLACK)
            assert 10 <= ply < 60
    assert read_out(out)["test"], "a quarter of 12 games should give some test positions"
    # --max-games stops early, and the game order is kept.
    assert main([str(PGN), "--out", str(tmp_path / "two"), "--max-games", "2", "--quiet"]) == 0
    assert {gid for _, gid in check_output(tmp_path / "two", 0.02)} == {"cutechess_match.pgn.xz#0",
                                                                         "cutechess_match.pgn.xz#1"}


def test_positions_from_epd_skip_bad_lines(tmp_path):
    epd = tmp_path / "mixed.epd"
    epd.write_text("\n".join([
        "# a comment",
        "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - bm Bb5; id \"ruy\";",
        "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1",
        "this is not a position",
        "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq e3 0 1",  # the same position again
        "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1",  # stalemate: nothing to annotate
    ]) + "\n")
    out = tmp_path / "epd"
    assert main([str(epd), "--out", str(out), "--quiet"]) == 0
    rows = check_output(out, 0.02)
    assert [fen for fen, _ in rows] == [
        "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 0 1",
        "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"]
    assert [gid for _, gid in rows] == ["mixed.epd#1", "mixed.epd#2"]
    meta = json.loads((out / "datagen.json").read_text())
    assert meta["runs"][0]["skipped_games"] == {"invalid position": 1}
    with pytest.raises(PositionError):
        parse_position("8/8/8/8/8/8/8/8 w - - 0 1")


def test_clear_errors(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x")]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--games", "1", "--stockfish", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.pgn"), "--out", str(tmp_path / "x")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--games", "1", "--test-fraction", "2"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x"), "--games", "1", "--policies", "random"])
    assert exc.value.code == 2
    # An engine that passes the first check, then fails to start for the
    # games: one clear line and exit code 1, no traceback.
    marker = tmp_path / "started-once"
    fake = tmp_path / "flaky-engine"
    fake.write_text(f"""#!{sys.executable}
import os, sys
if os.path.exists({str(marker)!r}):
    sys.exit(0)
open({str(marker)!r}, "w").close()
for line in sys.stdin:
    cmd = line.split()[:1]
    if cmd == ["uci"]:
        for name in ("MultiPV", "Skill Level", "UCI_LimitStrength", "UCI_Elo"):
            print(f"option name {{name}} type spin default 1 min 0 max 3000")
        print("id name Flaky\\nuciok", flush=True)
    elif cmd == ["isready"]:
        print("readyok", flush=True)
    elif cmd == ["quit"]:
        break
""")
    fake.chmod(0o755)
    assert main(["--out", str(tmp_path / "y"), "--games", "1", "--workers", "1", "--stockfish", str(fake)]) == 1
    assert "is not a working UCI engine" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--random-plies" in capsys.readouterr().out


KILLER = """#!{python}
# Stockfish behind a pipe; on the first run, at search number {after}, it kills its worker process.
import os, signal, subprocess, sys
marker = {marker!r}
engine = subprocess.Popen([{stockfish!r}], stdin=subprocess.PIPE, stdout=sys.stdout, text=True)
searches = 0
for line in sys.stdin:
    if line.startswith("go"):
        searches += 1
        if searches == {after} and not os.path.exists(marker):
            open(marker, "w").close()
            engine.kill()
            os.kill(os.getppid(), signal.SIGKILL)
            sys.exit(1)
    engine.stdin.write(line)
    engine.stdin.flush()
engine.stdin.close()
engine.wait()
"""


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_game_replayed(stockfish_path, tmp_path):
    """A self-play worker process that dies is replaced; its game is played again from the start, so
    the files are exactly those of a run without the kill."""
    common = ["--games", "4", "--workers", "2", "--seed", "5", "--test-fraction", "0.3", "--policies", "multipv",
              *FAST]  # Skill Level and UCI_Elo draw from a clock-seeded generator
    assert main(["--out", str(tmp_path / "clean"), "--stockfish", stockfish_path, *common]) == 0
    killer = tmp_path / "killer-stockfish"
    killer.write_text(KILLER.format(python=sys.executable, after=25, marker=str(tmp_path / "killed"),
                                    stockfish=stockfish_path))
    killer.chmod(0o755)
    assert main(["--out", str(tmp_path / "killed-run"), "--stockfish", str(killer), *common]) == 0
    assert (tmp_path / "killed").exists(), "the wrapper never killed its worker"
    assert read_out(tmp_path / "killed-run") == read_out(tmp_path / "clean")
