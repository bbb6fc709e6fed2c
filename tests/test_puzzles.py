"""Puzzle scoring (DeepMind's rule, with the mate exception) on the real Lichess sample, and through UCI."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import chess
import pytest

from neuralengine.benchmarks import puzzles as pz


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> Path:
    return shared_data / "lichess_puzzles_500.csv"


@pytest.fixture(scope="module")
def all_puzzles(sample: Path) -> list[pz.Puzzle]:
    found, skipped = pz.read_puzzles(sample)
    assert skipped == []
    return found


def oracle(puzzle: pz.Puzzle) -> pz.MoveSource:
    """Plays the solution: the move after the history the board carries."""
    def move(board: chess.Board) -> chess.Move:
        return chess.Move.from_uci(puzzle.moves[len(board.move_stack)])
    return move


def alternative_mates(puzzle: pz.Puzzle) -> list[chess.Move]:
    board = chess.Board(puzzle.fen)
    board.push_uci(puzzle.moves[0])
    out = []
    for move in board.legal_moves:
        board.push(move)
        if board.is_checkmate() and move.uci() != puzzle.moves[1]:
            out.append(move)
        board.pop()
    return out


def test_sample_reads_completely(all_puzzles: list[pz.Puzzle]) -> None:
    assert len(all_puzzles) == 500
    assert all(len(p.moves) % 2 == 0 for p in all_puzzles)
    assert 399 <= min(p.rating for p in all_puzzles) and max(p.rating for p in all_puzzles) < 3500
    assert all_puzzles[0].id == "001KR" and all_puzzles[0].moves == ["h8g8", "f1f8"]


def test_solution_solves_every_puzzle_and_sees_the_history(all_puzzles: list[pz.Puzzle]) -> None:
    for puzzle in all_puzzles:
        seen: list[chess.Board] = []

        def source(board: chess.Board, p: pz.Puzzle = puzzle) -> chess.Move:
            seen.append(board.copy())
            return oracle(p)(board)

        result = pz.solve(puzzle, source)
        assert result.solved and result.failed_at is None and not result.alternative_mate
        # The engine is asked at every second move, with the history from the puzzle FEN.
        assert len(seen) == len(puzzle.moves) // 2
        for k, board in enumerate(seen):
            assert board.root().fen() == chess.Board(puzzle.fen).fen()
            assert [m.uci() for m in board.move_stack] == puzzle.moves[:2 * k + 1]


def test_a_different_mate_counts_as_solved(all_puzzles: list[pz.Puzzle]) -> None:
    with_alternatives = [p for p in all_puzzles if len(p.moves) == 2 and alternative_mates(p)]
    assert len(with_alternatives) >= 5  # e.g. 001KR: f1f8 is the solution, d1d8 mates too
    for puzzle in with_alternatives:
        other = alternative_mates(puzzle)[0]
        result = pz.solve(puzzle, lambda board, m=other: m)
        assert result.solved and result.alternative_mate
        assert result.engine_moves == [other.uci()]


def test_wrong_moves_fail_where_they_happen(all_puzzles: list[pz.Puzzle]) -> None:
    long_one = next(p for p in all_puzzles if len(p.moves) >= 6)

    def wrong_second(board: chess.Board) -> chess.Move:
        ply = len(board.move_stack)
        if ply == 3:  # the engine's second move: anything but the solution (and not a mate)
            for move in sorted(board.legal_moves, key=lambda m: m.uci()):
                board.push(move)
                mate = board.is_checkmate()
                board.pop()
                if move.uci() != long_one.moves[3] and not mate:
                    return move
        return chess.Move.from_uci(long_one.moves[ply])

    result = pz.solve(long_one, wrong_second)
    assert not result.solved and result.failed_at == 3 and len(result.engine_moves) == 2
    # No move, or an illegal one, fails at once.
    puzzle = all_puzzles[0]
    assert pz.solve(puzzle, lambda board: None).failed_at == 1
    assert pz.solve(puzzle, lambda board: chess.Move.from_uci("a1a2")).failed_at == 1
    # A first legal move that does not mate fails the mate-in-one puzzles.
    mate_in_one = [p for p in all_puzzles[:60] if len(p.moves) == 2]

    def first_quiet(board: chess.Board) -> chess.Move:
        for move in sorted(board.legal_moves, key=lambda m: m.uci()):
            if not board.gives_check(move):
                return move
        return next(iter(board.legal_moves))

    results = [pz.solve(p, first_quiet) for p in mate_in_one]
    assert results and not any(r.solved for r in results)


def test_bad_files_and_rows(tmp_path: Path, sample: Path) -> None:
    with pytest.raises(pz.PuzzleFileError, match="not found"):
        pz.read_puzzles(tmp_path / "missing.csv")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,fen\n1,x\n")
    with pytest.raises(pz.PuzzleFileError, match="lacks the columns"):
        pz.read_puzzles(wrong)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(pz.PuzzleFileError):
        pz.read_puzzles(empty)
    lines = sample.read_text().splitlines()
    broken = tmp_path / "broken.csv"
    start = chess.STARTING_FEN
    broken.write_text("\n".join([lines[0], lines[1], "bad1,not a fen,e2e4 e7e5,1000,,,,,,,",
                                 lines[2].replace(",970,", ",hard,"), f"bad3,{start},e2e5 e7e5,1000,,,,,,,",
                                 lines[4]]) + "\n")
    found, skipped = pz.read_puzzles(broken)
    assert [p.id for p in found] == [lines[1].split(",")[0], lines[4].split(",")[0]]
    assert len(skipped) == 3 and "bad FEN" in skipped[0] and "rating" in skipped[1] and "illegal" in skipped[2]
    assert len(pz.read_puzzles(sample, limit=7)[0]) == 7


def test_accuracy_bands_and_wilson() -> None:
    results = [pz.PuzzleResult(str(i), rating, solved) for i, (rating, solved) in
               enumerate([(450, True), (799, False), (800, True), (1150, True), (1199, False), (2400, True)])]
    table = pz.accuracy_table(results, 400)
    assert table["overall"]["puzzles"] == 6 and table["overall"]["solved"] == 4
    assert [(b["band"], b["puzzles"], b["solved"]) for b in table["bands"]] == [
        ("400-799", 2, 1), ("800-1199", 3, 2), ("2400-2799", 1, 1)]
    # Wilson 95 % interval of 50/100: 0.5 ± 1.96 * sqrt(0.25/100 + 1.96^2/40000) / (1 + 1.96^2/100)
    # = 0.5 ± 0.0962 -> (0.4038, 0.5962)
    lo, hi = pz.wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = pz.wilson(10, 10)
    assert hi == pytest.approx(1.0) and 0.65 < lo < 0.75  # 10/10: lower bound 0.7225
    assert all(map(lambda v: v != v, pz.wilson(0, 0)))


def test_stockfish_through_uci(sample: Path, stockfish_path: str, tmp_path: Path, all_puzzles: list[pz.Puzzle],
                               capsys: pytest.CaptureFixture[str]) -> None:
    """Stockfish at a fixed node count (the same moves however loaded the machine is) solves the sample's
    first puzzles, and the report says, puzzle by puzzle, what a replay of the same engine at the same limit
    finds: the solution's moves, or another mate at the move where they part."""
    import chess.engine

    nodes, count = 20_000, 12
    out = tmp_path / "sf"
    code = pz.main([str(sample), "--limit", str(count), "--engine", stockfish_path, "--nodes", str(nodes),
                    "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "puzzles.json").read_text())
    assert report["engine"]["name"].startswith("Stockfish")
    assert report["engine"]["limit"] == {"nodes": nodes}
    # The replay: every second move of the line is Stockfish's; a different one solves only if it mates.
    failed, other_mates = set(), set()
    with chess.engine.SimpleEngine.popen_uci(stockfish_path) as stockfish:
        for puzzle in all_puzzles[:count]:
            board = chess.Board(puzzle.fen)
            for i, uci in enumerate(puzzle.moves):
                if i % 2 == 1:
                    move = stockfish.play(board, chess.engine.Limit(nodes=nodes), game=puzzle.id).move
                    assert move is not None
                    if move.uci() != uci:
                        board.push(move)
                        (other_mates if board.is_checkmate() else failed).add(puzzle.id)
                        break
                board.push_uci(uci)
    overall = report["accuracy"]["overall"]
    assert overall["puzzles"] == count
    assert {f["id"] for f in report["failed"]} == failed
    assert overall["solved"] == count - len(failed) and overall["alternative_mates"] == len(other_mates)
    assert len(failed) <= 1  # ratings 500-2200: Stockfish at 20,000 nodes solves these
    assert report["record"]["versions"]["python"]
    assert (out / "puzzles.png").stat().st_size > 1000
    assert "puzzles solved" in capsys.readouterr().out


def test_our_engine_through_uci(sample: Path, tiny_weights: Path, engine_command: list[str], tmp_path: Path,
                                all_puzzles: list[pz.Puzzle]) -> None:
    out = tmp_path / "ours"
    code = pz.main([str(sample), "--limit", "10", "--weights", str(tiny_weights), "--engine",
                    shlex.join(engine_command), "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "puzzles.json").read_text())
    assert report["accuracy"]["overall"]["puzzles"] == 10
    assert report["engine"]["options"]["WeightsFile"] == str(tiny_weights.resolve())
    failed = {f["id"]: f for f in report["failed"]}
    assert all(f["error"] is None for f in failed.values())
    # The engine plays a mate in one whatever its weights say, so every mate-in-one puzzle is solved.
    for puzzle in all_puzzles[:10]:
        if "mateIn1" in puzzle.themes:
            assert puzzle.id not in failed
    assert all(len(f["engine_moves"]) >= 1 for f in failed.values())


def test_cli_errors(tmp_path: Path, sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pz.main([str(tmp_path / "none.csv")]) == 2
    assert pz.main([str(sample), "--limit", "0"]) == 2
    assert pz.main([str(sample), "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert pz.main([str(sample), "--engine", str(tmp_path / "no-engine"), "--limit", "1",
                    "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "does not start" in err


def _truncated_weights(source: Path, dest: Path) -> Path:
    dest.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    return dest


def test_weights_that_fail_to_load_fail_the_run(tmp_path: Path, sample: Path, tiny_weights: Path,
                                                engine_command: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    broken = _truncated_weights(tiny_weights, tmp_path / "broken.safetensors")
    out = tmp_path / "out"
    code = pz.main([str(sample), "--limit", "3", "--weights", str(broken), "--engine", shlex.join(engine_command),
                    "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "truncated" in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "puzzles.json").exists()


def test_an_engine_playing_without_its_network_fails_the_run(tmp_path: Path, sample: Path, tiny_weights: Path,
                                                             engine_command: list[str],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The weights named nowhere on the command line (here $NEURALENGINE_WEIGHTS) do not load:
    the engine answers with moves chosen without the network, which must not count as a result."""
    monkeypatch.setenv("NEURALENGINE_WEIGHTS", str(_truncated_weights(tiny_weights, tmp_path / "b.safetensors")))
    out = tmp_path / "out"
    code = pz.main([str(sample), "--limit", "3", "--engine", shlex.join(engine_command), "--out", str(out),
                    "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "without" in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "puzzles.json").exists()


def test_unreadable_rows_and_output_paths(tmp_path: Path, sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header, first = sample.read_text().splitlines()[:2]
    rating = first.split(",")[3]
    infinite = tmp_path / "inf.csv"
    infinite.write_text(f"{header}\n{first.replace(f',{rating},', ',inf,', 1)}\n{first}\n")
    found, skipped = pz.read_puzzles(infinite)
    assert len(found) == 1 and len(skipped) == 1 and "rating" in skipped[0]
    huge = tmp_path / "huge.csv"
    huge.write_text(f"{header}\n{first}\n{first.replace(f',{rating},', ',1500,', 1)}{'x' * 140_000}\n")
    with pytest.raises(pz.PuzzleFileError, match="huge.csv"):
        pz.read_puzzles(huge)
    assert pz.main([str(huge)]) == 2
    # --out is checked before any puzzle is played (the missing engine would be noticed next).
    taken = tmp_path / "taken"
    taken.write_text("")
    assert pz.main([str(sample), "--limit", "1", "--engine", str(tmp_path / "no-engine"), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "taken" in err and "does not start" not in err


@pytest.mark.parametrize("option, value", [("--movetime", "-1"), ("--movetime", "0"), ("--movetime", "nan"),
                                           ("--depth", "-3"), ("--depth", "0"), ("--nodes", "0")])
def test_search_limits_must_be_positive(option: str, value: str, sample: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        pz.main([str(sample), option, value])
    assert exc.value.code == 2
    assert option in capsys.readouterr().err
