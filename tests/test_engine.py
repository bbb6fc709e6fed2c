"""Move choice (reference sheet §4): scores, rules, ties, temperature, limits."""

from __future__ import annotations

import collections
import math
import random
from pathlib import Path
from typing import Iterator

import chess
import numpy as np
import pytest

from conftest import write_model
from neuralengine.backends import Backend, create_backend
from neuralengine.config import ModelConfig, preset
from neuralengine.encoding import (
    MOVE_TO_ACTION,
    NUM_BUCKETS,
    bucket_values,
    expected_win_prob,
    legal_actions,
    model_fen,
    move_action,
    tokenize,
    tokenize_board,
    win_prob_to_bucket,
    win_prob_to_cp,
)
from neuralengine.engine import (
    DEFAULT_BATCH_SIZE,
    FINISH_RESERVE,
    RULE_SECONDS_PER_MOVE,
    SETUP_SECONDS,
    DrawRules,
    Engine,
    LatencyModel,
    SearchControl,
    mate_in_one,
    sample_softmax,
    static_fallback,
    time_budget,
    wdl_from_win_prob,
)
from neuralengine.weights import WeightsError

BACK_RANK_MATE = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"  # Ra8#
# 1.Nf3 Nf6 2.Ng1 Ng8 3.Nf3 Nf6: now 4.Ng1 lets black claim a threefold repetition with 4...Ng8.
REPETITION_MOVES = ["g1f3", "g8f6", "f3g1", "f6g8", "g1f3", "g8f6"]


class ScriptedBackend(Backend):
    """An action-value backend whose win probabilities come from a function of the action.

    All probability mass sits on the bucket of the wanted win probability, so
    the engine sees exactly that bucket's centre.
    """

    name = "scripted"

    def __init__(self, value_of_action) -> None:
        super().__init__(preset("tiny"), Path("scripted.safetensors"), "0" * 64)
        self.value_of_action = value_of_action
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...], list[int]]] = []

    def evaluate(self, boards: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        assert actions is not None
        self.calls.append((boards.shape, actions.shape, [int(a) for a in actions[0]]))
        out = np.full(actions.shape + (NUM_BUCKETS,), -1e9, dtype=np.float32)
        for j, action in enumerate(actions[0]):
            out[0, j, int(win_prob_to_bucket(self.value_of_action(int(action))))] = 0.0
        return out


def centre(p: float) -> float:
    """The bucket centre the scripted backend turns ``p`` into."""
    return float(bucket_values()[int(win_prob_to_bucket(p))])


def board_after(moves: list[str], fen: str | None = None) -> chess.Board:
    board = chess.Board() if fen is None else chess.Board(fen)
    for m in moves:
        board.push_uci(m)
    return board


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    """Opening a ``torch-cpu`` backend sets PyTorch's thread count for the whole process: put it back."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


#: The settings of :class:`Engine` a test may change.
SETTINGS = ("batch_size", "temperature", "temperature_moves", "mate_rule", "convert_rule")


@pytest.fixture(scope="module")
def opened_engine(tiny_weights: Path) -> Engine:
    return Engine.open(tiny_weights, "onnx")


@pytest.fixture
def engine(opened_engine: Engine) -> Iterator[Engine]:
    """The module's engine, its settings and latency estimate put back as they were after each test."""
    settings = {name: getattr(opened_engine, name) for name in SETTINGS}
    latency = dict(vars(opened_engine.latency))
    yield opened_engine
    for name, value in settings.items():
        setattr(opened_engine, name, value)
    vars(opened_engine.latency).update(latency)


# --------------------------------------------------------------------------
# Scores from the three model kinds
# --------------------------------------------------------------------------


def test_action_value_scores_are_the_expected_bucket_values(engine: Engine, tiny_weights: Path) -> None:
    board = board_after(["e2e4", "c7c5", "g1f3"])
    result = engine.choose_move(board)
    # Independent computation with the PyTorch backend.
    reference = create_backend(tiny_weights, "torch-cpu")
    moves, actions = legal_actions(board)
    log_probs = reference.evaluate(tokenize_board(board)[None], actions[None])
    expected = dict(zip(moves, expected_win_prob(log_probs[0])))
    assert {s.move for s in result.ranked} == set(moves)
    assert result.nodes == len(moves) and result.fallback is None
    for scored in result.ranked:
        assert scored.rule is None
        assert scored.win_prob == pytest.approx(expected[scored.move], abs=1e-4)
        assert scored.cp == win_prob_to_cp(scored.win_prob)
    best = max(moves, key=lambda m: (expected[m], -MOVE_TO_ACTION[m.uci()]))
    assert result.bestmove == best
    probs = [s.win_prob for s in result.ranked]
    assert probs == sorted(probs, reverse=True)


def test_one_call_per_position_split_only_above_batch_size() -> None:
    backend = ScriptedBackend(lambda a: 0.3)
    engine = Engine(backend)
    board = chess.Board()
    engine.choose_move(board)
    assert len(backend.calls) == 1
    boards_shape, actions_shape, actions = backend.calls[0]
    assert boards_shape == (1, 77) and actions_shape == (1, 20)
    assert actions == sorted(actions) == [MOVE_TO_ACTION[m.uci()] for m in legal_actions(board)[0]]

    backend.calls.clear()
    engine.batch_size = 8
    result = engine.choose_move(board)
    assert [c[1] for c in backend.calls] == [(1, 8), (1, 8), (1, 4)]
    assert sum((c[2] for c in backend.calls), []) == actions
    assert result.nodes == 20 and result.fallback is None


def test_batch_size_does_not_change_scores(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    board = board_after(["d2d4", "d7d5", "c2c4"])
    full = {s.move: s.win_prob for s in engine.choose_move(board).ranked}
    monkeypatch.setattr(engine, "batch_size", 3)
    chunked = {s.move: s.win_prob for s in engine.choose_move(board).ranked}
    assert chunked.keys() == full.keys()
    for move, value in full.items():
        assert chunked[move] == pytest.approx(value, abs=1e-5)


def test_state_value_scores_one_minus_child_value(tmp_path: Path) -> None:
    path = write_model(tmp_path, preset("tiny", kind="state_value"), seed=3, onnx=False)
    engine = Engine.open(path, "torch-cpu", warm_up=False)
    board = board_after(["e2e4", "e7e5"])
    result = engine.choose_move(board)
    model = create_backend(path, "torch-cpu")
    moves, _ = legal_actions(board)
    assert result.nodes == len(moves)
    for scored in result.ranked:
        board.push(scored.move)
        child_value = expected_win_prob(model.evaluate(tokenize(board.fen())[None]))[0]
        board.pop()
        assert scored.win_prob == pytest.approx(1.0 - child_value, abs=1e-5)


def test_behavioral_cloning_policy_is_renormalised_over_legal_moves(tmp_path: Path) -> None:
    path = write_model(tmp_path, preset("tiny", kind="behavioral_cloning"), seed=4, onnx=False)
    engine = Engine.open(path, "torch-cpu", warm_up=False)
    board = board_after(["g1f3"])
    result = engine.choose_move(board)
    logits = create_backend(path, "torch-cpu").evaluate(tokenize(board.fen())[None])[0].astype(np.float64)
    moves, actions = legal_actions(board)
    legal = np.exp(logits[actions] - logits[actions].max())
    expected = dict(zip(moves, legal / legal.sum()))
    assert sum(s.win_prob for s in result.ranked) == pytest.approx(1.0, abs=1e-6)
    for scored in result.ranked:
        assert scored.win_prob == pytest.approx(expected[scored.move], abs=1e-5)
    assert result.bestmove == max(expected, key=expected.get)


# --------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------


def test_move_allowing_threefold_claim_scores_exactly_half(engine: Engine) -> None:
    board = board_after(REPETITION_MOVES)
    result = engine.choose_move(board)
    by_move = {s.move: s for s in result.ranked}
    repeat = chess.Move.from_uci("f3g1")
    assert by_move[repeat].win_prob == 0.5 and by_move[repeat].rule == "draw"
    assert by_move[repeat].model_win_prob is not None and by_move[repeat].model_win_prob != 0.5
    assert by_move[repeat].cp == 0 and by_move[repeat].wdl == (0, 1000, 0)
    # Every other move is left to the network, as python-chess itself judges.
    for move, scored in by_move.items():
        board.push(move)
        draw = board.can_claim_threefold_repetition() or board.is_fivefold_repetition()
        board.pop()
        assert (scored.rule == "draw") == draw
        if not draw:
            assert scored.win_prob == scored.model_win_prob
    # Without the history the same position has no repetition.
    fresh = chess.Board(board.fen())
    assert all(s.rule is None for s in engine.choose_move(fresh).ranked)


def test_repetition_rule_changes_the_choice() -> None:
    # The network likes the repeating move best; the rule makes it a draw.
    repeat = MOVE_TO_ACTION["f3g1"]
    engine = Engine(ScriptedBackend(lambda a: 0.9 if a == repeat else 0.6))
    board = board_after(REPETITION_MOVES)
    result = engine.choose_move(board)
    assert result.bestmove != chess.Move.from_uci("f3g1")
    assert result.ranked[0].win_prob == pytest.approx(centre(0.6))
    # A losing side prefers the draw.
    engine = Engine(ScriptedBackend(lambda a: 0.1))
    assert engine.choose_move(board).bestmove == chess.Move.from_uci("f3g1")


def test_stalemating_move_scores_half() -> None:
    # Qb6?? stalemates the king on a8; the network is told it wins.
    board = chess.Board("k7/8/2Q5/8/8/8/8/K7 w - - 0 1")
    engine = Engine(ScriptedBackend(lambda a: 0.95 if a == MOVE_TO_ACTION["c6b6"] else 0.7))
    by_move = {s.move.uci(): s for s in engine.choose_move(board).ranked}
    assert by_move["c6b6"].rule == "draw" and by_move["c6b6"].win_prob == 0.5
    assert engine.choose_move(board).bestmove.uci() != "c6b6"


@pytest.mark.parametrize("clock", [99, 120, 149, 200])
def test_fifty_and_seventy_five_move_rules_score_half(clock: int) -> None:
    # White is a rook up. From a half-move clock of 99 every quiet move reaches 100
    # (the fifty-move rule can be claimed), from 149 it reaches 150 (the game is
    # drawn); the pawn move resets the clock and stays with the network.
    board = chess.Board(f"4k3/8/8/8/8/8/P7/R3K3 w - - {clock} 80")
    engine = Engine(ScriptedBackend(lambda a: 0.9))
    result = engine.choose_move(board)
    by_move = {s.move.uci(): s for s in result.ranked}
    assert len(by_move) == board.legal_moves.count()
    for uci, scored in by_move.items():
        if uci.startswith("a2"):
            assert scored.rule is None and scored.win_prob == pytest.approx(centre(0.9))
        else:
            assert scored.rule == "draw" and scored.win_prob == 0.5 and scored.wdl == (0, 1000, 0)
    assert result.bestmove.uci() in ("a2a3", "a2a4")
    # One ply earlier nothing is decided yet.
    early = chess.Board("4k3/8/8/8/8/8/P7/R3K3 w - - 98 80")
    assert all(s.rule is None for s in engine.choose_move(early).ranked)


def test_a_losing_side_takes_the_fifty_move_draw() -> None:
    board = chess.Board("4k3/8/8/8/8/8/p7/r3K3 w - - 99 80")  # White, a rook and a pawn down
    engine = Engine(ScriptedBackend(lambda a: 0.1))
    result = engine.choose_move(board)
    assert result.ranked[0].rule == "draw" and result.ranked[0].win_prob == 0.5


def test_mate_in_one_is_played_even_when_the_network_prefers_another() -> None:
    mate = MOVE_TO_ACTION["a1a8"]
    backend = ScriptedBackend(lambda a: 0.05 if a == mate else 0.8 if a == MOVE_TO_ACTION["a1a5"] else 0.4)
    engine = Engine(backend)
    board = chess.Board(BACK_RANK_MATE)
    result = engine.choose_move(board)
    assert result.bestmove == chess.Move.from_uci("a1a8")
    top = result.ranked[0]
    assert top.rule == "mate" and top.mate == 1 and top.win_prob == 1.0 and top.wdl == (1000, 0, 0)
    assert top.model_win_prob == pytest.approx(centre(0.05))
    # Sampling never overrides the mate either.
    engine.temperature = 10.0
    assert all(engine.choose_move(board).bestmove.uci() == "a1a8" for _ in range(20))
    # With the rule off the network decides.
    engine = Engine(backend, mate_rule=False)
    result = engine.choose_move(board)
    assert result.bestmove.uci() == "a1a5"
    assert all(s.mate is None for s in result.ranked)


def test_mate_rule_with_the_real_model(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    board = chess.Board(BACK_RANK_MATE)
    assert engine.choose_move(board).bestmove.uci() == "a1a8"
    monkeypatch.setattr(engine, "mate_rule", False)
    result = engine.choose_move(board)
    assert next(s for s in result.ranked if s.move.uci() == "a1a8").rule is None


def test_game_over_has_no_move(engine: Engine) -> None:
    mated = board_after(["f2f3", "e7e5", "g2g4", "d8h4"])
    assert engine.choose_move(mated).bestmove is None
    stalemate = chess.Board("k7/8/1Q6/8/8/8/8/K7 b - - 0 1")
    assert engine.choose_move(stalemate).bestmove is None


# --------------------------------------------------------------------------
# Ranking, searchmoves, nodes, MultiPV
# --------------------------------------------------------------------------


def test_ties_go_to_the_lowest_action_index() -> None:
    engine = Engine(ScriptedBackend(lambda a: 0.5))
    board = chess.Board()
    result = engine.choose_move(board)
    assert result.bestmove.uci() == "b1a3"  # action 45, the lowest legal one
    assert [s.action for s in result.ranked] == sorted(s.action for s in result.ranked)
    # A tie between two top moves that are not the lowest indices overall.
    top = {MOVE_TO_ACTION["e2e4"], MOVE_TO_ACTION["d2d4"]}
    engine = Engine(ScriptedBackend(lambda a: 0.7 if a in top else 0.2))
    result = engine.choose_move(board)
    assert [s.move.uci() for s in result.ranked[:2]] == ["d2d4", "e2e4"]  # 288 before 317


def test_searchmoves_restricts_the_candidates(engine: Engine) -> None:
    board = chess.Board()
    full = {s.move: s.win_prob for s in engine.choose_move(board).ranked}
    subset = [chess.Move.from_uci(m) for m in ("a2a3", "h2h4", "g1f3")]
    result = engine.choose_move(board, searchmoves=subset)
    assert {s.move for s in result.ranked} == set(subset)
    assert result.nodes == 3
    assert result.bestmove == max(subset, key=lambda m: full[m])
    # Only illegal moves: every legal move is searched.
    result = engine.choose_move(board, searchmoves=[chess.Move.from_uci("e2e5")])
    assert result.nodes == 20


@pytest.mark.parametrize("nodes", [0, 1, 5, 19, 20, 1000])
def test_a_nodes_limit_still_evaluates_every_move(nodes: int) -> None:
    # One evaluation of all legal moves is the smallest unit of work: any limit
    # plays the move an unlimited search plays, and nodes counts the moves scored.
    backend = ScriptedBackend(lambda a: a / 2000)
    engine = Engine(backend)
    result = engine.choose_move(chess.Board(), nodes=nodes)
    assert result.nodes == 20 and result.fallback is None
    assert [len(c[2]) for c in backend.calls] == [20]
    assert result.bestmove.uci() == "h2h3"  # the best of all 20 (h2h4 shares its bucket, ties go to h2h3)
    assert [s.move for s in result.ranked] == [s.move for s in engine.choose_move(chess.Board()).ranked]
    # With searchmoves, the limit applies to the chosen moves alone.
    only = [chess.Move.from_uci(m) for m in ("a2a3", "b1c3", "g1f3")]
    limited = engine.choose_move(chess.Board(), nodes=nodes, searchmoves=only)
    assert limited.nodes == 3 and limited.bestmove.uci() == "a2a3"


def test_ranking_lists_every_move_once(engine: Engine) -> None:
    board = board_after(["e2e4", "e7e5", "g1f3", "b8c6", "f1b5"])
    result = engine.choose_move(board)
    assert len(result.ranked) == board.legal_moves.count()
    assert len({s.move for s in result.ranked}) == len(result.ranked)


# --------------------------------------------------------------------------
# Temperature
# --------------------------------------------------------------------------


def test_sample_softmax_follows_the_distribution() -> None:
    values = [0.62, 0.60, 0.55, 0.40]
    temperature = 0.05
    rng = random.Random(7)
    draws = 20000
    counts = collections.Counter(sample_softmax(values, temperature, rng) for _ in range(draws))
    weights = [math.exp(v / temperature) for v in values]
    for i, w in enumerate(weights):
        p = w / sum(weights)
        sigma = math.sqrt(p * (1 - p) / draws)
        assert abs(counts[i] / draws - p) < 5 * sigma + 1e-9


def test_temperature_sampling_is_seeded_and_plays_good_moves() -> None:
    values = {MOVE_TO_ACTION["e2e4"]: 0.62, MOVE_TO_ACTION["d2d4"]: 0.60, MOVE_TO_ACTION["c2c4"]: 0.55}
    backend = ScriptedBackend(lambda a: values.get(a, 0.2))

    def play(seed: int, n: int) -> list[str]:
        engine = Engine(backend, temperature=0.05, seed=seed)
        return [engine.choose_move(chess.Board()).bestmove.uci() for _ in range(n)]

    first = play(11, 150)
    assert first == play(11, 150)
    counts = collections.Counter(first)
    assert set(counts) <= {"e2e4", "d2d4", "c2c4", *(m.uci() for m in chess.Board().legal_moves)}
    # softmax(v / 0.05): e4 0.53, d4 0.36, c4 0.13, every 0.2 move about 1e-4.
    assert counts["e2e4"] > counts["d2d4"] > counts["c2c4"] > 0
    assert counts["e2e4"] + counts["d2d4"] + counts["c2c4"] >= 145
    # The chosen move leads the ranking.
    engine = Engine(backend, temperature=0.05, seed=3)
    result = engine.choose_move(chess.Board())
    assert result.ranked[0].move == result.bestmove and result.temperature == 0.05


def test_zero_temperature_is_deterministic_and_temperature_moves_limit(engine: Engine) -> None:
    board = chess.Board()
    assert len({engine.choose_move(board).bestmove for _ in range(5)}) == 1
    values = {MOVE_TO_ACTION["e2e4"]: 0.52, MOVE_TO_ACTION["d2d4"]: 0.51}
    scripted = Engine(ScriptedBackend(lambda a: values.get(a, 0.5)), temperature=1.0, temperature_moves=5, seed=1)
    late = chess.Board()
    late.fullmove_number = 6
    assert scripted.effective_temperature(late) == 0.0
    assert {scripted.choose_move(late).bestmove.uci() for _ in range(10)} == {"e2e4"}
    assert scripted.effective_temperature(board) == 1.0
    assert len({scripted.choose_move(board).bestmove for _ in range(30)}) > 3


# --------------------------------------------------------------------------
# Time limits
# --------------------------------------------------------------------------


def test_no_time_plays_a_fallback_at_once() -> None:
    engine, backend = scripted_with_latency()
    result = engine.choose_move(chess.Board(), control=FrozenClock(0.0))
    assert backend.calls == [] and result.nodes == 0  # no network call was started
    assert result.fallback == "no time for an evaluation" and result.bestmove.uci() == "b1a3"
    # The fallback still plays a mate in one.
    result = engine.choose_move(chess.Board(BACK_RANK_MATE), control=FrozenClock(0.0))
    assert result.bestmove.uci() == "a1a8" and result.ranked[0].mate == 1 and backend.calls == []


@pytest.mark.parametrize("fen, expected", [
    (chess.STARTING_FEN, "b1a3"),  # nothing to win or lose: the lowest action index
    ("4k3/8/8/3q4/8/8/3R4/4K3 w - - 0 1", "d2d5"),  # a free queen
    ("4k3/8/2p5/3q4/8/8/3R4/4K3 w - - 0 1", "d2d5"),  # a defended queen for a rook is still good
    ("4k3/1P6/8/8/8/8/8/4K3 w - - 0 1", "b7b8q"),  # promotion
    ("4k3/8/8/8/8/2p5/8/Q3K3 w - - 0 1", "a1c3"),  # the pawn is free
    ("4k3/8/2p5/3p4/8/8/3R4/4K3 w - - 0 1", "e1d1"),  # Rxd5?? cxd5 loses the exchange: a quiet move instead
])
def test_static_fallback(fen: str, expected: str) -> None:
    board = chess.Board(fen)
    moves, _ = legal_actions(board)
    assert static_fallback(board, moves).uci() == expected
    assert board.fen() == fen


def test_fallback_never_hangs_the_queen() -> None:
    # Qd1-d5?? walks into the pawn on c6 (a loss of 9); the fallback keeps the queen safe.
    board = chess.Board("4k3/8/2p5/8/8/8/8/3QK3 w - - 0 1")
    move = Engine.fallback(board)
    board.push(move)
    assert not board.attackers(chess.BLACK, move.to_square)


def test_mate_in_one_is_the_first_mate_in_action_order() -> None:
    # Ra8# and Rb8#: python-chess generates b1b8 first, the action table lists a1a8 first.
    board = chess.Board("6k1/5ppp/8/8/8/8/5PPP/RR4K1 w - - 0 1")
    assert mate_in_one(board) == chess.Move.from_uci("a1a8")
    assert mate_in_one(board, [chess.Move.from_uci("b1b8"), chess.Move.from_uci("a1a2")]) == chess.Move.from_uci("b1b8")
    assert board.fen() == "6k1/5ppp/8/8/8/8/5PPP/RR4K1 w - - 0 1" and not board.move_stack
    assert mate_in_one(chess.Board()) is None
    assert Engine.fallback(board) == chess.Move.from_uci("a1a8")
    assert Engine.fallback(board_after(["f2f3", "e7e5", "g2g4", "d8h4"])) is None


class FrozenClock(SearchControl):
    """A deadline that is always ``left`` seconds away: decisions that depend on
    the time left, without depending on how fast this machine runs."""

    def __init__(self, left: float) -> None:
        super().__init__(deadline=0.0)
        self.left = left

    def remaining(self) -> float:
        return self.left


def scripted_with_latency(batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[Engine, ScriptedBackend]:
    backend = ScriptedBackend(lambda a: a / 2000)
    engine = Engine(backend, batch_size=batch_size)
    engine.latency.fit(1, 0.002, 21, 0.012)  # 1.5 ms a call plus 0.5 ms a move
    return engine, backend


@pytest.mark.parametrize("batch_size", [256, 7])
def test_a_short_deadline_evaluates_every_move_or_none(batch_size: int) -> None:
    # One evaluation of all moves is the smallest unit of work: whatever the time
    # left, the engine scores all 20 moves or plays its fallback, never a part.
    board = chess.Board()
    engine, backend = scripted_with_latency(batch_size)
    full = engine.evaluation_seconds(20) + RULE_SECONDS_PER_MOVE * 20 + FINISH_RESERVE
    seen = set()
    for step in range(41):
        left = full * step / 20  # from no time to twice what the search needs
        engine.latency.fit(1, 0.002, 21, 0.012)
        backend.calls.clear()
        result = engine.choose_move(board, control=FrozenClock(left))
        seen.add(result.nodes)
        if result.nodes:
            assert result.nodes == 20 and result.fallback is None
            assert sorted(sum((c[2] for c in backend.calls), [])) == legal_actions(board)[1].tolist()
        else:
            assert backend.calls == [] and result.fallback == "no time for an evaluation"
            assert result.bestmove == static_fallback(board, legal_actions(board)[0])
        if abs(left - full) > 1e-9:  # exactly at the boundary, float rounding may go either way
            assert (result.nodes == 20) == (left > full)
    assert seen == {0, 20}


def test_time_trouble_budget_holds_one_search_after_a_slow_start() -> None:
    # The budget of a clock in time trouble is counted from the arrival of go. Even
    # when the search starts half a predicted search late, all moves get evaluated.
    engine, _ = scripted_with_latency()
    for moves in ([], ["e2e4", "e7e5", "g1f3", "b8c6", "f1b5", "a7a6"]):
        board = board_after(moves)
        for clock, overhead in ((1.0, 0.03), (0.1, 0.03), (60.0, 5.0)):
            engine.latency.fit(1, 0.002, 21, 0.012)
            needed = engine.predicted_seconds(board)
            budget = time_budget(time_left=clock, overhead=overhead, needed=needed)
            result = engine.choose_move(board, control=FrozenClock(budget - SETUP_SECONDS - needed / 2))
            assert result.nodes == board.legal_moves.count() and result.fallback is None, (moves, clock)
    # Without room for two searches on the clock, the fallback comes at once.
    board = chess.Board()
    engine.latency.fit(1, 0.002, 21, 0.012)
    assert time_budget(time_left=0.03 + engine.predicted_seconds(board), overhead=0.03,
                       needed=engine.predicted_seconds(board)) == 0.0


def test_stop_before_the_search() -> None:
    engine = Engine(ScriptedBackend(lambda a: 0.5))
    control = SearchControl()
    control.stop.set()
    result = engine.choose_move(chess.Board(), control=control)
    assert result.nodes == 0 and result.bestmove in chess.Board().legal_moves and "stopped" in result.fallback


def test_latency_model() -> None:
    model = LatencyModel()
    assert model.predict(10) is None and model.max_rows(0.001, 50) == 50
    model.fit(1, 0.002, 21, 0.012)
    assert model.per_row == pytest.approx(0.0005) and model.fixed == pytest.approx(0.0015)
    rows = model.max_rows(0.010, 100)
    assert model.predict(rows) <= 0.010 < model.predict(rows + 1)
    assert model.max_rows(0.0, 100) == 0
    model.observe(20, 0.1)  # a much slower call: the estimate jumps up at once
    assert model.predict(20) >= 0.1
    scale = model.scale
    model.relax()  # a move played without evaluation halves the correction, never below 1
    assert model.scale == pytest.approx(scale / 2)
    for _ in range(10):
        model.relax()
    assert model.scale == 1.0


def test_one_slow_call_does_not_stop_evaluations_for_good() -> None:
    """After a call slowed by a busy machine, the inflated prediction makes the engine play fallbacks in a
    short budget; each such move halves the correction, so evaluations come back within a few moves."""
    engine, backend = scripted_with_latency()
    board = chess.Board()
    rows = board.legal_moves.count()
    budget = 4 * engine.latency.predict(rows) + 0.05  # fits a normal search comfortably
    engine.latency.scale = 1000.0                      # as after a call 1000 times slower than usual
    kinds, scales = [], []
    for _ in range(12):
        scales.append(engine.latency.scale)
        result = engine.choose_move(board, control=FrozenClock(budget))
        kinds.append("fallback" if result.fallback else "evaluated")
        if not result.fallback:
            break
    assert kinds[0] == "fallback" and kinds[-1] == "evaluated" and set(kinds[:-1]) == {"fallback"}
    assert scales == [1000.0 / 2 ** i for i in range(len(kinds))]  # each fallback halved the correction
    assert result.nodes == rows and len(backend.calls) == 1


def test_time_budget() -> None:
    assert time_budget() is None
    assert time_budget(movetime=1.0, overhead=0.03) == pytest.approx(0.97)
    assert time_budget(movetime=0.04, overhead=0.03) == pytest.approx(0.02)  # at least half of movetime
    assert time_budget(time_left=60.0, increment=1.0, overhead=0.03) == pytest.approx(2.0 + 0.75 - 0.03)
    assert time_budget(time_left=10.0, movestogo=2, overhead=0.03) == pytest.approx(5.0 - 0.03)
    assert time_budget(time_left=10.0, movestogo=1, overhead=0.03) == pytest.approx(5.0 - 0.03)
    assert time_budget(time_left=0.2, overhead=0.03) == 0.0  # 200 ms: a share of 7 ms minus the overhead
    assert time_budget(time_left=-5.0) == 0.0
    assert time_budget(movetime=0.5, time_left=3.0, overhead=0.0) == pytest.approx(0.1)
    # Time trouble: when the share is shorter than two complete searches but the
    # usable clock (minus the overhead) holds two, the budget is one search plus a
    # margin for a slow start: another search, or a tenth of the usable clock up to
    # 0.1 s. The engine stops after its one evaluation anyway.
    assert time_budget(time_left=0.5, overhead=0.03, needed=0.01) == pytest.approx(0.01 + 0.047)
    assert time_budget(time_left=1.0, overhead=0.03, needed=0.01) == pytest.approx(0.01 + 0.097)  # 1+0, move 1
    assert time_budget(time_left=0.1, overhead=0.03, needed=0.01) == pytest.approx(0.02)  # go wtime 100
    assert time_budget(time_left=60.0, overhead=5.0, needed=0.01) == pytest.approx(0.11)  # Move Overhead 5000
    assert time_budget(time_left=0.2, overhead=0.03, needed=0.001) == pytest.approx(0.001 + 0.017)
    assert time_budget(time_left=0.5, overhead=0.03, needed=0.3) == 0.0  # two searches do not fit: fallback
    assert time_budget(time_left=0.01, overhead=0.03, needed=0.005) == 0.0  # go wtime 10: fallback
    assert time_budget(time_left=60.0, overhead=0.03, needed=0.01) == pytest.approx(2.0 - 0.03)
    for clock in (0.05, 0.1, 0.3, 1.0, 10.0):  # the budget never exceeds the usable clock
        for needed in (0.001, 0.01, 0.03):
            assert time_budget(time_left=clock, overhead=0.03, needed=needed) <= clock - 0.03 + 1e-12
    # movetime is a limit of its own: the floor is for the clock.
    assert time_budget(movetime=0.01, time_left=1.0, overhead=0.03, needed=0.01) == pytest.approx(0.005)
    # A short movetime that holds one search (with a tenth to spare) gets it; one that does not keeps its share.
    assert time_budget(movetime=0.01, overhead=0.03, needed=0.008) == pytest.approx(0.008)
    assert time_budget(movetime=0.01, overhead=0.03, needed=0.0095) == pytest.approx(0.005)
    assert time_budget(movetime=1.0, overhead=0.03, needed=0.008) == pytest.approx(0.97)


def test_predicted_seconds_covers_the_chunks() -> None:
    engine = Engine(ScriptedBackend(lambda a: 0.5))
    assert engine.predicted_seconds(chess.Board()) is None
    engine.latency.fit(1, 0.002, 21, 0.012)
    one_call = engine.predicted_seconds(chess.Board())
    engine.batch_size = 5
    four_calls = engine.predicted_seconds(chess.Board())
    # Each call pays the fixed cost again: 4 calls of 5 rows against 1 call of 20.
    assert four_calls - one_call == pytest.approx(4 * engine.latency.predict(5) - engine.latency.predict(20))
    assert four_calls > one_call


def test_ponder_move_is_the_best_reply(engine: Engine) -> None:
    board = chess.Board()
    result = engine.choose_move(board, ponder=True)
    after = board.copy()
    after.push(result.bestmove)
    assert result.ponder == engine.choose_move(after).bestmove
    assert board == chess.Board()  # the board is restored


def test_ponder_move_only_when_its_call_fits_the_deadline() -> None:
    # Time for both calls: the reply is the best one (the lowest action index of the scripted scores' best).
    engine, backend = scripted_with_latency()
    board = chess.Board()
    result = engine.choose_move(board, ponder=True, control=FrozenClock(1.0))
    assert len(backend.calls) == 2 and result.nodes == 20 and result.ponder is not None
    after = board.copy()
    after.push(result.bestmove)
    assert result.ponder == Engine(ScriptedBackend(lambda a: a / 2000)).choose_move(after).bestmove
    # The deadline passes during the evaluation: the move stands, the ponder call is never made.
    engine, backend = scripted_with_latency()
    result = engine.choose_move(board, ponder=True, control=ClockAfterFirstCall(backend, "deadline"))
    assert len(backend.calls) == 1 and result.nodes == 20 and result.fallback is None
    assert result.bestmove.uci() == "h2h3" and result.ponder is None
    assert board == chess.Board()


# --------------------------------------------------------------------------
# Scores, encoding, loading
# --------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.01, 0.25, 0.5, 0.73, 0.999, 1.0])
def test_wdl_mapping(p: float) -> None:
    w, d, l = wdl_from_win_prob(p)
    assert w + d + l == 1000 and min(w, d, l) >= 0
    assert (w + d / 2) / 1000 == pytest.approx(p, abs=0.001)
    assert wdl_from_win_prob(1 - p) == (l, d, w)


def test_chess960_positions_are_encoded() -> None:
    board = chess.Board("bqnb1rkr/pp3ppp/3ppn2/2p5/5P2/P2P4/NPP1P1PP/BQ1BNRKR w HFhf - 2 9", chess960=True)
    fen = model_fen(board)
    assert fen.split(" ")[2] == "KQkq"  # rooks on both sides of the king
    assert len(tokenize(fen)) == 77
    moves, actions = legal_actions(board)
    assert actions.tolist() == sorted(actions.tolist()) and len(moves) == board.legal_moves.count()
    # Standard castling written the 960 way maps to DeepMind's e1g1.
    standard = chess.Board("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1", chess960=True)
    castle = chess.Move.from_uci("e1h1")
    assert standard.is_castling(castle) and move_action(standard, castle) == MOVE_TO_ACTION["e1g1"]
    assert move_action(chess.Board("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1"), chess.Move.from_uci("e1g1")) == 102


def test_long_games_clamp_counters() -> None:
    board = chess.Board("8/8/4k3/8/8/4K3/8/8 w - - 1200 1500")
    assert model_fen(board).endswith(" 999 999")


def test_open_reports_bad_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        Engine.open(tmp_path / "missing.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00\x01garbage")
    with pytest.raises(WeightsError):
        Engine.open(broken)


def test_describe_names_model_and_backend(engine: Engine) -> None:
    text = engine.describe()
    assert "action_value" in text and "onnx" in text


def test_model_config_kind_is_read_from_the_weights(tmp_path: Path) -> None:
    cfg = ModelConfig(num_layers=1, embed_dim=16, num_heads=2, kind="state_value")
    path = write_model(tmp_path, cfg, onnx=False)
    assert Engine.open(path, "torch-cpu", warm_up=False).kind == "state_value"


def test_shared_board_model_scores_like_pytorch(tiny_shared_weights: Path) -> None:
    engine = Engine.open(tiny_shared_weights, "onnx")
    board = board_after(["e2e4", "e7e5", "g1f3", "b8c6"])
    result = engine.choose_move(board)
    moves, actions = legal_actions(board)
    log_probs = create_backend(tiny_shared_weights, "torch-cpu").evaluate(tokenize_board(board)[None], actions[None])
    expected = dict(zip(moves, expected_win_prob(log_probs[0])))
    assert len(result.ranked) == len(moves)
    for scored in result.ranked:
        assert scored.win_prob == pytest.approx(expected[scored.move], abs=1e-4)


def python_chess_draw(board: chess.Board, move: chess.Move) -> bool:
    """The draw rules after ``move`` as python-chess judges them, walking the whole history."""
    board.push(move)
    try:
        if board.is_checkmate():
            return False
        return (board.is_stalemate() or board.is_insufficient_material() or board.halfmove_clock >= 100
                or board.is_fivefold_repetition() or board.can_claim_threefold_repetition())
    finally:
        board.pop()


@pytest.mark.slow
def test_draw_rules_agree_with_python_chess() -> None:
    """Random shuffling games (knight moves, so that positions repeat and the
    half-move clock passes 100) give many draws and non-draws; the table prepared
    once per position must judge every move as python-chess does."""
    rng = random.Random(7)
    draws = others = 0
    for other_moves in (0.0, 0.02, 0.05, 0.1):  # how often a pawn or other piece moves
        board = chess.Board()
        for ply in range(110):
            moves = list(board.legal_moves)
            if not moves:
                break
            # Knights between their home rank and the third rank: positions repeat.
            home = (chess.BB_RANK_1 | chess.BB_RANK_3) if board.turn else (chess.BB_RANK_8 | chess.BB_RANK_6)
            shuffles = [m for m in moves if board.piece_type_at(m.from_square) == chess.KNIGHT
                        and chess.BB_SQUARES[m.to_square] & home and not board.is_capture(m)]
            board.push(rng.choice(shuffles if shuffles and rng.random() >= other_moves else moves))
            rules = DrawRules(board)
            assert rules.walked <= 98
            for move in board.legal_moves:
                expected = python_chess_draw(board, move)
                assert rules.draw_after(board, move) == expected, (board.fen(), move.uci())
                draws += expected
                others += not expected
    assert draws > 300 and others > 300


class CountingBoard(chess.Board):
    """A board that counts the moves taken back, by itself and by its copies."""

    pops = 0

    def pop(self) -> chess.Move:
        CountingBoard.pops += 1
        return super().pop()


def test_long_history_is_read_once_and_at_most_98_plies() -> None:
    # 2000 plies of knight moves: a fivefold repetition long ago, a half-move clock
    # of 2000. Every quiet move is a draw by the 75-move rule, the history is not
    # read at all, and the engine takes back only the moves it tries.
    shuffle = ["g1f3", "g8f6", "f3g1", "f6g8"] * 500
    board = CountingBoard()
    for uci in shuffle:
        board.push_uci(uci)
    engine = Engine(ScriptedBackend(lambda a: 0.7))
    CountingBoard.pops = 0
    result = engine.choose_move(board)
    assert result.nodes == 20 and len(board.move_stack) == 2000
    for scored in result.ranked:  # knight moves keep the clock running, pawn moves reset it
        knight = board.piece_type_at(scored.move.from_square) == chess.KNIGHT
        assert (scored.rule == "draw") == knight
    assert CountingBoard.pops <= 3 * 20  # the rules try each move (and mates); no history walk
    assert DrawRules(board).walked == 0
    # After a pawn move the clock restarts: only the plies since then are read, once.
    for uci in ["e2e4", "e7e5"] + ["g1f3", "g8f6", "f3g1", "f6g8"] * 2:
        board.push_uci(uci)
    CountingBoard.pops = 0
    rules = DrawRules(board)
    assert rules.walked == 8  # the eight knight moves since e7e5 (the clock says so)
    CountingBoard.pops = 0
    result = engine.choose_move(board)
    assert result.nodes == board.legal_moves.count()
    assert CountingBoard.pops <= 8 + 3 * board.legal_moves.count()
    # A third Nf3 repeats the position after the first two: a threefold repetition.
    by_move = {s.move.uci(): s for s in result.ranked}
    assert by_move["g1f3"].rule == "draw" and by_move["b1c3"].rule is None


# --------------------------------------------------------------------------
# The conversion rule
# --------------------------------------------------------------------------


def test_won_positions_are_converted_by_progress_not_by_noise():
    """Every move rated a near-certain win: the network's tiny differences
    (here: favouring a queen shuffle) give way to progress."""
    shuffle = {MOVE_TO_ACTION["d1d2"]}

    def values(action: int) -> float:
        return 0.995 if action in shuffle else 0.99

    engine = Engine(ScriptedBackend(values), seed=1)
    # White: king, queen and a pawn against a lone king; the queen shuffle d1d2 is the network's favourite.
    board = chess.Board("7k/8/8/8/8/8/P7/3QK3 w - - 0 1")
    assert engine.choose_move(board).bestmove.uci() in ("a2a3", "a2a4")  # a pawn move: progress
    off = Engine(ScriptedBackend(values), convert_rule=False, seed=1)
    assert off.choose_move(board).bestmove.uci() == "d1d2"
    # Without a pawn to push, the move that leaves the lone king the fewest replies wins the tie.
    board = chess.Board("7k/8/8/8/8/8/8/3QK3 w - - 0 1")
    best = engine.choose_move(board).bestmove
    counts = {}
    for move in board.legal_moves:
        board.push(move)
        if not board.is_stalemate():
            counts[move] = board.legal_moves.count()
        board.pop()
    assert best in counts and counts[best] == min(counts.values())
    # A position already seen in the game is avoided even when it restricts the king more.
    board = chess.Board("7k/8/8/8/8/8/8/3QK3 w - - 0 1")
    board.push(best)
    back = chess.Move(best.to_square, best.from_square)
    for reply in list(board.legal_moves):  # a black king move that white's way back lets it undo
        board.push(reply)
        board.push(back)
        undo = chess.Move(reply.to_square, reply.from_square)
        if board.is_legal(undo):
            board.push(undo)
            break
        board.pop()
        board.pop()
    assert len(board.move_stack) == 4 and board.board_fen() == "7k/8/8/8/8/8/8/3QK3"
    assert engine.choose_move(board).bestmove != best
    # Below the threshold nothing changes: the network's choice stands.
    low = Engine(ScriptedBackend(lambda a: 0.9 if a in shuffle else 0.6), seed=1)
    assert low.choose_move(chess.Board("7k/8/8/8/8/8/P7/3QK3 w - - 0 1")).bestmove.uci() == "d1d2"


class ClockAfterFirstCall(FrozenClock):
    """Plenty of time until the backend's first call returns; then the deadline has passed or ``stop`` is set."""

    def __init__(self, backend: ScriptedBackend, event: str) -> None:
        super().__init__(left=1.0)
        inner = backend.value_of_action

        def value(action: int) -> float:
            if event == "deadline":
                self.left = -0.001
            else:
                self.stop.set()
            return inner(action)

        backend.value_of_action = value


@pytest.mark.parametrize("event", ["deadline", "stop"])
def test_a_deadline_between_batches_never_plays_the_best_of_a_part(event: str) -> None:
    # BatchSize 8 splits the 20 moves of the start position into three calls. The time
    # left holds all three, but the first call ends past the deadline (or with stop set):
    # the best of its 8 moves (b2b3 here) is no evaluation of the position, so the
    # engine plays its documented fallback instead.
    board = chess.Board()
    engine, backend = scripted_with_latency(batch_size=8)
    control = ClockAfterFirstCall(backend, event)
    result = engine.choose_move(board, control=control)
    assert [len(c[2]) for c in backend.calls] == [8]  # the second call never starts
    assert result.fallback and "8 of 20" in result.fallback and result.ranked == []
    assert result.bestmove == static_fallback(board, legal_actions(board)[0])
    assert result.nodes == 8
    # With a mate in one among the candidates, the mate is played, as with no time at all.
    board = chess.Board(BACK_RANK_MATE)
    engine, backend = scripted_with_latency(batch_size=2)
    result = engine.choose_move(board, control=ClockAfterFirstCall(backend, event))
    assert len(backend.calls) == 1 and result.bestmove.uci() == "a1a8"
    assert [(s.move.uci(), s.rule) for s in result.ranked] == [("a1a8", "mate")]
