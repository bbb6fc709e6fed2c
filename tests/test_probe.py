"""World-model probes: linear probes, board features, the layer walk and ``neuralengine probe``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import chess
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neuralengine.config import ATTENTIONS, preset  # noqa: E402
from neuralengine.encoding import VOCAB, square_token_index, tokenize  # noqa: E402
from neuralengine.model import Transformer  # noqa: E402
from neuralengine.research import features as F  # noqa: E402
from neuralengine.research.activations import (WalkError, board_position, check_walk, collect_states,  # noqa: E402
                                               run_layers)
from neuralengine.research.linear import fit_logistic, fit_ridge, r2_score, spearman  # noqa: E402
from neuralengine.research.probe import (Sample, main, removal_candidates, split_by_game,  # noqa: E402
                                         ProbeError)

from conftest import REPO, write_model  # noqa: E402

DATA = REPO / "tests" / "data" / "av"
TEXT_SAMPLE = DATA / "d7_s101-000-head.txt.xz"
SHIPPED = REPO / "weights" / "neuralengine.safetensors"


# ---------------------------------------------------------------------------
# Probes on synthetic activations
# ---------------------------------------------------------------------------


def _synthetic(n: int = 2000, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Unequal scales and an offset: the probe must standardise.
    return rng.standard_normal((n, d)) * rng.uniform(0.1, 5.0, d) + rng.uniform(-3, 3, d)


def test_planted_binary_feature_is_found_and_random_label_is_not():
    x = _synthetic()
    rng = np.random.default_rng(1)
    w = rng.standard_normal(x.shape[1])
    planted = (x @ w > np.median(x @ w)).astype(np.int64)
    noise = rng.integers(0, 2, len(x))
    train, test = slice(0, 1500), slice(1500, None)
    good = fit_logistic(x[train], planted[train], 2)
    assert np.mean(good.predict(x[test])[:, 0] == planted[test]) > 0.95
    bad = fit_logistic(x[train], noise[train], 2)
    assert np.mean(bad.predict(x[test])[:, 0] == noise[test]) < 0.58


def test_grouped_probes_are_independent():
    """One group's planted three-way feature is found; a random group beside it stays at chance."""
    x = _synthetic(seed=3)
    rng = np.random.default_rng(4)
    planted = np.argmax(x @ rng.standard_normal((x.shape[1], 3)), axis=1)
    noise = rng.integers(0, 3, len(x))
    y = np.stack([planted, noise], axis=1)
    probe = fit_logistic(x[:1500], y[:1500], 3)
    pred = probe.predict(x[1500:])
    assert np.mean(pred[:, 0] == planted[1500:]) > 0.9
    assert np.mean(pred[:, 1] == noise[1500:]) < 0.42


def test_raw_direction_matches_the_logits():
    x = _synthetic(n=300, d=6)
    y = (x[:, 0] > 0).astype(np.int64)
    probe = fit_logistic(x, y, 2)
    g, c = probe.raw_direction(0, 1, 0)
    logits = probe.logits(x[:10])[:, 0]
    assert np.allclose(x[:10] @ g + c, logits[:, 1] - logits[:, 0])


def test_ridge_finds_a_planted_value_and_not_noise():
    x = _synthetic(seed=5)
    rng = np.random.default_rng(6)
    target = x @ rng.standard_normal(x.shape[1]) + 0.1 * rng.standard_normal(len(x))
    noise = rng.standard_normal(len(x))
    assert r2_score(fit_ridge(x[:1500], target[:1500]).predict(x[1500:]), target[1500:]) > 0.95
    assert r2_score(fit_ridge(x[:1500], noise[:1500]).predict(x[1500:]), noise[1500:]) < 0.05


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1.5, 1.5, 3) against (1, 2, 3): centred (-.5, -.5, 1) and (-1, 0, 1): 1.5 / sqrt(1.5 * 2)
    assert spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


# ---------------------------------------------------------------------------
# Features, checked by hand
# ---------------------------------------------------------------------------

AFTER_E4 = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"


def test_features_after_e4():
    board = chess.Board(AFTER_E4)  # black to move: black's pieces are "mine"
    p3, p13 = F.piece3(board), F.piece13(board)
    assert p3[chess.E4] == F.THEIRS and p3[chess.E8] == F.MINE and p3[chess.E2] == F.EMPTY
    assert (p3 == F.MINE).sum() == 16 and (p3 == F.THEIRS).sum() == 16 and (p3 == F.EMPTY).sum() == 32
    assert p13[chess.E4] == 7          # their pawn
    assert p13[chess.D8] == 5          # my queen
    assert p13[chess.G1] == 8          # their knight
    assert p13[chess.E8] == 6          # my king
    assert F.PIECE13_CLASSES[p13[chess.H1]] == "their rook"
    mine, theirs = F.attacked(board, True), F.attacked(board, False)
    assert mine[chess.F6] == 1 and mine[chess.H6] == 1   # Ng8, and pawns e7/g7
    assert mine[chess.D4] == 0 and mine[chess.E5] == 0   # nothing of black's reaches them yet
    assert theirs[chess.D5] == 1 and theirs[chess.F5] == 1  # the e4 pawn
    assert theirs[chess.H5] == 1                         # the queen, through the open e2 square
    assert theirs[chess.E5] == 0
    # black's pawns cover all of rank 6 (a6 from b7, h6 from g7)
    assert sum(mine[s] for s in chess.SquareSet(chess.BB_RANK_6)) == 8
    assert not board.is_check() and F.material_balance(board) == 0


def test_move_facts_rook_against_queen():
    board = chess.Board("4k3/8/8/3q4/8/8/3R4/2K5 w - - 0 1")
    assert F.material_balance(board) == 5 - 9
    take = F.move_facts(board, chess.Move.from_uci("d2d5"))
    assert (take.capture, take.check, take.en_prise) == (True, False, False)
    check = F.move_facts(board, chess.Move.from_uci("d2e2"))
    assert (check.capture, check.check, check.en_prise) == (False, True, False)
    # d4 and a2 are attacked by the queen and defended by nothing; h2 is out of its reach
    assert F.leaves_piece_en_prise(board, chess.Move.from_uci("d2d4"))
    assert F.leaves_piece_en_prise(board, chess.Move.from_uci("d2a2"))
    assert not F.leaves_piece_en_prise(board, chess.Move.from_uci("d2h2"))
    assert not F.leaves_piece_en_prise(board, chess.Move.from_uci("c1b1"))  # king moves never hang


def test_en_prise_compares_the_cheapest_attacker():
    # d4 is defended by the e3 pawn: attacked by a pawn, the knight hangs; attacked by a rook, it does not.
    by_pawn = chess.Board("4k3/8/8/2p5/8/4P3/2N5/2K5 w - - 0 1")
    assert F.leaves_piece_en_prise(by_pawn, chess.Move.from_uci("c2d4"))
    assert F.leaves_piece_en_prise(by_pawn, chess.Move.from_uci("c2b4"))   # undefended
    assert not F.leaves_piece_en_prise(by_pawn, chess.Move.from_uci("c2e1"))
    by_rook = chess.Board("4k3/8/8/3r4/8/4P3/2N5/2K5 w - - 0 1")
    assert not F.leaves_piece_en_prise(by_rook, chess.Move.from_uci("c2d4"))
    assert not F.leaves_piece_en_prise(by_rook, chess.Move.from_uci("c2b4"))


def test_check_and_material_for_the_side_to_move():
    board = chess.Board("4k3/8/8/8/8/8/8/4RK2 b - - 0 1")
    assert board.is_check()
    assert F.material_balance(board) == -5
    assert F.piece3(board)[chess.E1] == F.THEIRS
    assert F.attacked(board, False)[chess.E7] == 1 and F.attacked(board, True)[chess.E7] == 1


@pytest.mark.parametrize("fen", [
    chess.STARTING_FEN,
    AFTER_E4,
    "rnbqkbnr/ppp1p1pp/8/3pPp2/8/8/PPPP1PPP/RNBQKBNR w KQkq f6 0 3",
    "8/8/8/8/8/8/6k1/4K2R w K - 99 123",
    "4k3/8/8/8/8/8/8/4RK2 b - - 0 1",
])
def test_tokens_back_to_fen(fen):
    assert F.fen_from_tokens(tokenize(fen)) == fen


def test_square_token_index():
    tokens = tokenize(AFTER_E4)
    assert square_token_index(chess.A8) == 1 and square_token_index(chess.H1) == 64
    assert VOCAB[tokens[square_token_index(chess.E4)]] == "P"
    assert VOCAB[tokens[square_token_index(chess.E2)]] == "."
    assert VOCAB[tokens[square_token_index(chess.D8)]] == "q"
    assert board_position(chess.A8) == 2  # after BOS and the side to move


# ---------------------------------------------------------------------------
# The layer walk
# ---------------------------------------------------------------------------

BOARDS = [chess.Board(), chess.Board(AFTER_E4), chess.Board("4k3/8/8/3q4/8/8/3R4/2K5 w - - 0 1")]


def _model(**overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(preset("tiny", **overrides)).eval()


def _batch(moves_per_board: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    from neuralengine.encoding import legal_actions

    boards = torch.from_numpy(np.stack([tokenize(b.fen()) for b in BOARDS]).astype(np.int64))
    actions = torch.from_numpy(np.stack([legal_actions(b)[1][:moves_per_board] for b in BOARDS]))
    return boards, actions


@pytest.mark.parametrize("overrides", [{}, {"attention": "shared_board"}, {"attention": "board_head"},
                                       {"kind": "state_value"}, {"kind": "behavioral_cloning"}])
def test_walk_reproduces_the_model(overrides):
    if overrides.get("attention", "full") not in ATTENTIONS:
        pytest.skip(f"this checkout has no {overrides['attention']} layout")
    model = _model(**overrides)
    boards, actions = _batch()
    acts = actions if model.cfg.kind == "action_value" else None
    check_walk(model, boards, acts)
    with torch.no_grad():
        expected = model(boards, acts) if acts is not None else model(boards)
        calls = []
        got = run_layers(model, boards, acts, lambda i, b, m: calls.append(i))
    assert torch.allclose(got, expected, atol=1e-5)
    assert calls == list(range(model.cfg.num_layers + 1))


def test_walk_refuses_a_model_it_does_not_reproduce():
    class Shifted(Transformer):
        def forward(self, board_tokens, actions=None):
            return super().forward(board_tokens, actions) + 1.0

    torch.manual_seed(0)
    model = Shifted(preset("tiny")).eval()
    boards, actions = _batch()
    with pytest.raises(WalkError):
        check_walk(model, boards, actions)


def test_walk_refuses_a_forward_without_the_layer_hook():
    class NoHook(Transformer):
        def forward(self, board_tokens, actions=None):
            return super().forward(board_tokens, actions)

    model = NoHook(preset("tiny")).eval()
    boards, actions = _batch()
    with pytest.raises(WalkError, match="takes no layer hook"):
        run_layers(model, boards, actions, lambda i, b, m: None)


def test_type_error_inside_the_forward_pass_is_not_taken_for_a_missing_hook():
    model = _model()
    boards, actions = _batch()

    def hook(layer, board, moves):
        if layer == 1:
            raise TypeError("a bug in the hook")

    with pytest.raises(TypeError, match="a bug in the hook"):
        run_layers(model, boards, actions, hook)


@pytest.mark.parametrize("attention", ["full", "shared_board"])
def test_collected_states(attention):
    model = _model(attention=attention)
    boards, actions = _batch(1)
    squares = torch.tensor([[chess.E4, chess.A8]] * len(BOARDS))
    readout, at_squares, out = collect_states(model, boards, actions[:, 0], squares)
    d, layers = model.cfg.embed_dim, model.cfg.num_layers
    assert readout.shape == (len(BOARDS), layers + 1, d)
    assert at_squares.shape == (len(BOARDS), 2, layers + 1, d)
    with torch.no_grad():
        # the last readout state is what the head reads
        assert torch.allclose(model._head(readout[:, -1]), out, atol=1e-5)
        assert torch.allclose(out, model(boards, actions)[:, 0], atol=1e-5)
        # layer 0 at a square is that square's token embedding at its position
        for s, square in enumerate((chess.E4, chess.A8)):
            pos = board_position(square)
            expected = model._embed(boards[:, pos - 1:pos], offset=pos)[:, 0]
            assert torch.allclose(at_squares[:, s, 0], expected, atol=1e-6)


def test_an_edit_in_the_hook_changes_the_output_and_no_edit_does_not():
    model = _model(attention="shared_board")
    boards, actions = _batch()
    with torch.no_grad():
        plain = model(boards, actions)
        same = run_layers(model, boards, actions, lambda i, b, m: (b.clone(), m))
        pos = board_position(chess.E2)
        # not a constant shift: the next layer norm would remove that
        push = 5.0 * torch.randn(model.cfg.embed_dim, generator=torch.Generator().manual_seed(0))

        def edit(i, b, m):
            if i == 1:
                b = b.clone()
                b[:, pos] += push
                return b, m
            return None

        edited = run_layers(model, boards, actions, edit)
    assert torch.allclose(same, plain, atol=1e-6)
    assert (edited - plain).abs().max() > 1e-3


# ---------------------------------------------------------------------------
# Positions, split, intervention set-up
# ---------------------------------------------------------------------------


def test_split_keeps_games_whole():
    samples = [Sample(chess.Board(), f"g{i % 7}") for i in range(50)]
    train, test = split_by_game(samples, 0.3, seed=1)
    assert len(train) + len(test) == 50 and len(test) > 0 and len(train) > 0
    assert not {samples[i].game for i in train} & {samples[i].game for i in test}
    with pytest.raises(ProbeError):
        split_by_game(samples[:1], 0.3, seed=1)


def test_removal_candidates_of_the_start_position():
    candidates = removal_candidates(chess.Board())
    assert len(candidates) == 30  # every piece but the kings
    by_square = dict(candidates)
    assert chess.E1 not in by_square and chess.E8 not in by_square
    rook_gone = by_square[chess.H1]
    assert rook_gone.is_valid() and not rook_gone.has_kingside_castling_rights(chess.WHITE)
    assert rook_gone.piece_at(chess.H1) is None


# ---------------------------------------------------------------------------
# The command, end to end
# ---------------------------------------------------------------------------


def _run(tmp_path: Path, weights: Path, inputs: list[Path], *extra: str) -> dict:
    out = tmp_path / "probes"
    code = main([*map(str, inputs), "--weights", str(weights), "--out", str(out), "--positions", "48",
                 "--per-game", "12", "--intervene", "6", "--quiet", "--max-iter", "40", *extra])
    assert code == 0
    assert (out / "probes.png").stat().st_size > 1000
    return json.loads((out / "probes.json").read_text())


def _check_report(report: dict, num_layers: int) -> None:
    assert len(report["layers"]) == num_layers + 1
    assert report["data"]["train_positions"] + report["data"]["test_positions"] == report["data"]["positions"]
    for name, info in report["features"].items():
        for key in ("trained", "random"):
            scores = report["results"][key][name]
            assert len(scores) == num_layers + 1
            if info["metric"] == "accuracy":
                assert all(0.0 <= s <= 1.0 for s in scores)
        assert name in report["results"]["baseline"]
    block = report["intervention"]
    assert block["positions"] > 0
    for row in block["layers"].values():
        assert 0 <= row["toward_rate"]["probe"] <= 1 and 0 <= row["toward_rate"]["random"] <= 1
        assert row["probe_reads_empty_after_edit"] == 1.0  # the edit crosses the probe's boundary


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tiny_weights", "tiny_shared_weights"])
def test_command_on_test_checkpoints(tmp_path, request, fixture):
    report = _run(tmp_path, request.getfixturevalue(fixture), [TEXT_SAMPLE])
    _check_report(report, 2)
    names = set(report["features"])
    assert {"square:piece3", "move:piece13", "move:material", "move:win_prob", "move:captures"} <= names
    for rare in ("move:in_check", "move:gives_check", "move:en_prise"):
        # with a few dozen positions a rare fact may never occur among the training positions
        assert rare in names or report["skipped"][rare] == "constant on the training positions"
    assert report["data"]["candidate_move"] == "random"
    assert set(report["intervention"]["layers"]) == {"0", "1"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["state_value", "behavioral_cloning"])
def test_command_on_other_model_kinds(tmp_path, kind):
    weights = write_model(tmp_path, preset("tiny", kind=kind), onnx=False)
    report = _run(tmp_path, weights, [TEXT_SAMPLE], "--intervene-layers", "1")
    _check_report(report, 2)
    assert "last:piece3" in report["features"] and not any(n.startswith("move:") for n in report["features"])
    assert set(report["intervention"]["layers"]) == {"1"}


@pytest.mark.slow
def test_command_reads_pgn_through_the_cli(tmp_path, tiny_shared_weights):
    from neuralengine.cli import main as cli_main

    out = tmp_path / "pgn"
    code = cli_main(["probe", str(DATA / "cutechess_match.pgn.xz"), "--weights", str(tiny_shared_weights),
                     "--out", str(out), "--positions", "40", "--per-game", "5", "--intervene", "0",
                     "--features", "piece3,win_prob", "--quiet"])
    assert code == 0
    report = json.loads((out / "probes.json").read_text())
    assert set(report["features"]) == {"square:piece3", "move:piece3"}
    assert "move:win_prob" in report["skipped"]  # a PGN carries no Stockfish scores
    assert report["intervention"] is None


def test_command_rejects_bad_options(tmp_path, tiny_weights, capsys):
    assert main([str(TEXT_SAMPLE), "--weights", str(tiny_weights), "--features", "piece3,colour",
                 "--out", str(tmp_path)]) == 1
    assert "colour" in capsys.readouterr().err
    assert main([str(TEXT_SAMPLE), "--weights", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path)]) == 1


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped weights are not in this checkout")
def test_command_on_the_shipped_model(tmp_path):
    report = _run(tmp_path, SHIPPED, [TEXT_SAMPLE, DATA / "d7_s202-000-head.txt.xz"], "--positions", "96")
    _check_report(report, 4)
    trained = report["results"]["trained"]
    baseline = report["results"]["baseline"]
    # The model carries which piece stands on a square at that square's token, far above the majority guess.
    assert max(trained["square:piece3"]) > baseline["square:piece3"] + 0.15


def test_playing_path_does_not_import_the_research_package():
    code = ("import sys, neuralengine.uci, neuralengine.engine, neuralengine.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('neuralengine.research')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
