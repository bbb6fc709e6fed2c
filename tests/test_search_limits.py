"""``go nodes`` and ``go depth`` through the real executable, against the network's own scores.

The engine promises (docs/engine.md) that one evaluation of every legal move
is the smallest unit of work: ``go nodes N`` plays, for every ``N``, the move
of a full evaluation; ``go depth`` has only depth 1; ``info nodes`` counts
the moves evaluated. These tests check that on real processes against a
reference computed in this process from the network's scores
(:mod:`full_evaluation`), in positions where the best move comes late in
action order, so that a search of the first ``N`` moves alone would play
another move. With ``MultiPV`` at its maximum the engine prints every move it
scored, and each score is compared with the reference's.

Time limits are checked with the real engine on the server's clock in
test_uci_server.py, and measured under load by ``bench/time_soak.py``.
"""

from __future__ import annotations

import io
from pathlib import Path

import chess
import chess.engine
import chess.pgn
import pytest

from full_evaluation import FullEvaluation, full_evaluation, torch_reference
from neuralengine.backends import Backend
from neuralengine.benchmarks import puzzles as pz
from neuralengine.benchmarks.openings import load_openings
from neuralengine.benchmarks.runner import Adjudication, EngineSpec, TimeControl, run_match, schedule
from neuralengine.engine import Engine
from uci_pipe import Uci, info_fields

RUY_LOPEZ = ["e2e4", "e7e5", "g1f3", "b8c6", "f1b5", "a7a6"]
#: Positions of the puzzle file searched through UCI.
POSITIONS = 8
#: The smallest lead of the best move over the second in a position used here: far above
#: the differences between ONNX Runtime's and PyTorch's scores (below 1e-5).
CLEAR_LEAD = 1e-3


@pytest.fixture(scope="module")
def uci(engine_command: list[str], tiny_weights: Path):
    engine = Uci(engine_command + ["uci", "--weights", str(tiny_weights)])
    engine.send("uci")
    engine.until("uciok")
    engine.send("setoption name MultiPV value 256")  # every move scored is printed
    engine.ready()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def reference(tiny_weights: Path) -> Backend:
    return torch_reference(tiny_weights)


def scored_lines(lines: list[str]) -> dict[str, dict[str, str]]:
    """The ``info depth`` lines by their first pv move, as word -> value (``score`` keeps its two words)."""
    found: dict[str, dict[str, str]] = {}
    for line in lines:
        words = line.split()
        if words[:2] != ["info", "depth"]:
            continue
        fields = info_fields(line)
        move = fields["pv"].split()[0]
        assert move not in found, f"{move} printed twice: {lines}"
        found[move] = fields
    return found


def check_against(lines: list[str], best: str, expected: FullEvaluation, what: str) -> None:
    """The search printed every candidate once with the reference's score and played the reference's move."""
    assert best.split()[1] == expected.best.uci(), (what, expected.board.fen())
    printed = scored_lines(lines)
    assert set(printed) == {m.uci() for m in expected.moves}, what  # every candidate was evaluated
    for move in expected.moves:
        fields = printed[move.uci()]
        assert fields["depth"] == "1" and fields["nodes"] == str(len(expected.moves)), (what, fields)
        kind, value = fields["score"].split()
        assert kind == "cp" and abs(int(value) - expected.cp(move)) <= 1, (what, move, fields)
    assert printed[expected.best.uci()]["multipv"] == "1"


def test_go_nodes_and_depth_play_the_full_evaluation_on_puzzles(uci: Uci, reference: Backend,
                                                                shared_data: Path) -> None:
    puzzles, _ = pz.read_puzzles(shared_data / "lichess_puzzles_500.csv")
    chosen: list[tuple[str, FullEvaluation]] = []
    for puzzle in puzzles:
        board = chess.Board(puzzle.fen)
        board.push_uci(puzzle.moves[0])  # the opponent's move; the solver is to move
        expected = full_evaluation(reference, board)
        # A plain position (no rule overrides the network) whose best move a search of the
        # first two moves in action order would miss.
        if expected.plain and expected.gap >= CLEAR_LEAD and expected.position >= 2:
            chosen.append((f"position fen {puzzle.fen} moves {puzzle.moves[0]}", expected))
        if len(chosen) == POSITIONS:
            break
    assert len(chosen) == POSITIONS
    assert any(expected.position >= len(expected.moves) // 2 for _, expected in chosen)
    for k, (position, expected) in enumerate(chosen):
        legal = len(expected.moves)
        # Limits below the number of legal moves, above it, and depths.
        commands = (["go nodes 1", "go depth 1"], [f"go nodes {legal - 1}", "go depth 3"],
                    [f"go nodes {expected.position}", "go depth 1"], ["go nodes 100000", "go depth 5"])[k % 4]
        uci.send(position)
        for command in commands:
            lines, best = uci.go(command)
            check_against(lines, best, expected, f"{command} in {position}")


def test_go_nodes_with_searchmoves_scores_those_moves_only(uci: Uci, reference: Backend) -> None:
    board = chess.Board()
    for move in RUY_LOPEZ:
        board.push_uci(move)
    uci.send("position startpos moves " + " ".join(RUY_LOPEZ))
    every = full_evaluation(reference, board)
    assert every.plain and every.position >= 2 and len(every.moves) == 32
    lines, best = uci.go("go nodes 1")
    check_against(lines, best, every, "go nodes 1")
    # Three bishop moves: the best of them is not the first in action order.
    only = [chess.Move.from_uci(m) for m in ("b5a4", "b5c6", "b5c4")]
    expected = full_evaluation(reference, board, only)
    assert expected.position >= 1 and expected.gap >= CLEAR_LEAD
    lines, best = uci.go("go nodes 1 searchmoves b5a4 b5c6 b5c4")
    check_against(lines, best, expected, "go nodes 1 searchmoves b5a4 b5c6 b5c4")


def test_a_game_at_nodes_1_through_the_match_runner(tiny_weights: Path, engine_command: list[str],
                                                    stockfish_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The built-in runner sends clocks; for a node-limited game every go becomes
    # "go nodes 1" (for Stockfish too), as a GUI's node-limited match sends it.
    real_limit = chess.engine.Limit
    monkeypatch.setattr(chess.engine, "Limit", lambda **_: real_limit(nodes=1))
    ours = EngineSpec("neuralengine", engine_command, {"WeightsFile": str(tiny_weights)})
    sf = EngineSpec("sf", [stockfish_path], {"Threads": "1"})
    job = schedule(ours, [sf], load_openings()[:1], rounds=1)[0]
    outcome = run_match([job], TimeControl(60.0), Adjudication(max_moves=150))
    monkeypatch.undo()
    game = outcome.games[0]
    stats = outcome.stats["neuralengine"].to_dict()
    assert stats["illegal_moves"] == stats["time_forfeits"] == stats["crashes"] == 0
    assert game.result in ("1-0", "0-1", "1/2-1/2") and game.plies > 0
    # Every move the engine made at nodes 1 is the move of a full evaluation.
    pgn = chess.pgn.read_game(io.StringIO(game.pgn))
    assert pgn.headers["White"] == "neuralengine"
    engine = Engine.open(tiny_weights, "onnx")
    board = pgn.board()
    opening_plies = len(load_openings()[0].board().move_stack)
    checked = 0
    for i, move in enumerate(pgn.mainline_moves()):
        if i >= opening_plies and board.turn == chess.WHITE:
            assert move == engine.choose_move(board).bestmove, (i, board.fen())
            checked += 1
        board.push(move)
    assert checked >= 1
