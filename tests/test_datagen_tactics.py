"""Self-play that teaches tactics: random moves in a ply window (uniform or among the top K), injected
blunders, and on-policy games in which a model plays, all on the real Stockfish and the shipped model."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import chess
import pytest

from neuralengine.data.datagen import main
from neuralengine.data.selfplay import (SelfPlayConfig, blunder_move, model_engine, multipv_go, play_game,
                                        scored_moves)
from neuralengine.data.stockfish import Stockfish

REPO = Path(__file__).resolve().parent.parent
SHIPPED = str(REPO / "weights" / "neuralengine.safetensors")
# Full strength, always the best move: games differ only where something random was asked for.
DETERMINISTIC = dict(nodes=300, policies=("multipv",), temperatures=(0.0,), random_plies=(0, 0), max_plies=12,
                     adjudicate_plies=0)


def _moves(fens: list[str]) -> list[str]:
    """The moves between consecutive positions of a game (each next position is one legal move away)."""
    out = []
    for before, after in zip(fens, fens[1:]):
        board = chess.Board(before)
        for move in board.legal_moves:
            board.push(move)
            if board.fen() == after:
                out.append(move.uci())
                break
            board.pop()
        else:
            raise AssertionError(f"{after} does not follow {before}")
    return out


@pytest.fixture(scope="module")
def engine(stockfish_path: str):  # noqa: ANN201
    with Stockfish([stockfish_path], {"Threads": 1, "Hash": 8}) as sf:
        yield sf


def test_random_moves_fall_in_the_window(engine: Stockfish) -> None:
    plain = [play_game(engine, SelfPlayConfig(seed=s, **DETERMINISTIC), 0) for s in range(4)]
    # Without random moves every game is Stockfish's same line.
    assert len({tuple(g.fens[:6]) for g in plain}) == 1 and all(g.random_moves == 0 for g in plain)
    cfg = dict(DETERMINISTIC, random_moves=2, random_window=(1, 2))
    games = [play_game(engine, SelfPlayConfig(seed=s, **cfg), 0) for s in range(6)]
    assert all(g.random_moves == 2 for g in games)
    openings = {tuple(_moves(g.fens)[:2]) for g in games}
    assert len(openings) >= 4  # plies 1 and 2 are uniformly random
    again = play_game(engine, SelfPlayConfig(seed=3, **cfg), 0)
    assert again.fens == games[3].fens  # deterministic from the seed


def test_an_opening_temperature_varies_only_the_first_plies(engine: Stockfish) -> None:
    cfg = dict(DETERMINISTIC, opening_temperature=1.0, opening_plies=(2, 2), multipv=8, max_plies=4)
    games = [play_game(engine, SelfPlayConfig(seed=s, **cfg), 0) for s in range(6)]
    assert len({tuple(_moves(g.fens)[:2]) for g in games}) >= 3  # plies 1-2 sampled hot among 8 moves


def test_top_k_random_moves_stay_among_stockfish_best(engine: Stockfish) -> None:
    engine.new_game()
    top3 = {m for m, _ in scored_moves(engine, chess.STARTING_FEN, "nodes 900", [], 3)}
    cfg = dict(DETERMINISTIC, random_moves=1, random_window=(1, 1), random_top_k=3, max_plies=2)
    firsts = {_moves(play_game(engine, SelfPlayConfig(seed=s, **cfg), 0).fens)[0] for s in range(8)}
    assert firsts <= top3 and len(firsts) >= 2


def test_a_blunder_loses_at_least_the_set_amount(engine: Stockfish) -> None:
    # After 1.e4 e5 2.Nf3 Nc6 3.Bc4 Nf6 White has moves that hang a piece or worse.
    played = ["e2e4", "e7e5", "g1f3", "b8c6", "f1c4", "g8f6"]
    board = chess.Board()
    for uci in played:
        board.push_uci(uci)
    cfg = SelfPlayConfig(nodes=300, blunder_loss=0.3)
    chosen = set()
    for seed in range(5):
        engine.new_game()
        move = blunder_move(engine, board, cfg, chess.STARTING_FEN, played, random.Random(seed))
        assert move is not None and move in board.legal_moves
        engine.new_game()  # the same search again: the same scores
        count = board.legal_moves.count()
        scores = dict(scored_moves(engine, chess.STARTING_FEN, multipv_go(cfg, count), played, count))
        assert max(scores.values()) - scores[move.uci()] >= 0.3
        chosen.add(move)
    assert len(chosen) >= 2  # drawn among all such moves
    # A decided position gets no blunder: there is nothing left to lose.
    won = chess.Board("6k1/5ppp/8/8/8/8/5PPP/4R1K1 w - - 0 30")  # mate in one: Re8#
    engine.new_game()
    assert blunder_move(engine, won, cfg, won.fen(), [], random.Random(0)) is None


def test_blunder_games_count_their_blunders(engine: Stockfish) -> None:
    cfg = SelfPlayConfig(seed=2, **dict(DETERMINISTIC, max_plies=16), blunder_rate=1.0, blunder_loss=0.2,
                         blunder_after=5)
    game = play_game(engine, cfg, 0)
    assert game.blunders >= 1
    plain = play_game(engine, SelfPlayConfig(seed=2, **dict(DETERMINISTIC, max_plies=16)), 0)
    # Until ply 5 the games are the same; the first blunder makes them part.
    assert game.fens[:5] == plain.fens[:5] and game.fens != plain.fens


def test_on_policy_games_are_played_by_the_model(engine: Stockfish) -> None:
    pytest.importorskip("onnxruntime")
    model = model_engine(SHIPPED, 0.0)
    for opponents, expected in ((("1350",), {"model", "elo 1350"}), (("self",), {"model"}),
                                (("mixed",), {"model", "multipv T=0.05"})):
        cfg = SelfPlayConfig(seed=4, nodes=300, max_plies=10, random_plies=(0, 0), model=SHIPPED,
                             model_opponents=opponents, policies=("multipv",), temperatures=(0.05,))
        game = play_game(engine, cfg, 0)
        assert set(game.sides) == expected
        colours = [c for c, side in zip((chess.WHITE, chess.BLACK), game.sides) if side == "model"]
        moves = _moves(game.fens)
        board = chess.Board(game.fens[0])
        checked = 0
        for move in moves:
            if board.turn in colours:  # every position met is written, the model's own turns included
                assert model.choose_move(board).bestmove.uci() == move
                checked += 1
            board.push_uci(move)
        assert checked >= 4


def test_datagen_command_line(stockfish_path: str, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onpolicy"
    assert main(["--out", str(out), "--games", "2", "--workers", "1", "--on-policy", "--model-opponents",
                 "1350,self", "--random-plies", "0-0", "--random-moves", "2", "--random-window", "1-4", "--blunder-rate", "0.5",
                 "--blunder-loss", "0.2", "--nodes", "300", "--max-plies", "12", "--stockfish", stockfish_path,
                 "--quiet"]) == 0
    run = json.loads((out / "datagen.json").read_text())["runs"][-1]
    source = run["sources"][0]
    assert source["random_moves"] == 4 and source["sides_by_policy"]["model"] >= 2
    assert source["selfplay"]["model"].endswith("neuralengine.safetensors")
    assert source["selfplay"]["blunder_rate"] == 0.5
    lines = (out / "train.fen").read_text().splitlines() + (out / "test.fen").read_text().splitlines()
    assert len(lines) >= 10
    for argv, message in ((["--blunder-rate", "2"], "--blunder-rate"),
                          (["--model", SHIPPED], "need --on-policy"),
                          (["--on-policy", "--model", str(tmp_path / "none.safetensors")], "--model"),
                          (["--model-opponents", "weak"], "UCI_Elo")):
        with pytest.raises(SystemExit) if message == "UCI_Elo" else contextlib.nullcontext():
            code = main(["--out", str(tmp_path / "bad"), "--games", "1", "--stockfish", stockfish_path, *argv])
            assert code == 2
        assert message in capsys.readouterr().err

