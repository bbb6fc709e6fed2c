"""The encoding must match DeepMind's bit for bit (reference sheet §1, §2, §4)."""

from __future__ import annotations

import hashlib
import random

import chess
import numpy as np
import pytest

from neuralengine.encoding import (
    ACTIONS,
    MOVE_TO_ACTION,
    NUM_ACTIONS,
    SEQUENCE_LENGTH,
    TokenizeError,
    bucket_edges,
    bucket_values,
    cp_to_win_prob,
    expected_win_prob,
    legal_actions,
    model_fen,
    move_action,
    move_to_action,
    tokenize,
    tokenize_board,
    win_prob_to_bucket,
    win_prob_to_cp,
)

# The vocabulary table of the sheet, written out by index.
T = {c: i for i, c in enumerate(
    ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f", "g", "h",
     "p", "n", "r", "k", "q", "P", "B", "N", "R", "Q", "K", "w", "."])}
DOT = 30
BACK_RANK_BLACK = [20, 19, 11, 22, 21, 11, 19, 20]
BACK_RANK_WHITE = [26, 25, 24, 27, 28, 24, 25, 26]


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------


def test_start_position_golden_vector() -> None:
    expected = ([29] + BACK_RANK_BLACK + [18] * 8 + [DOT] * 32 + [23] * 8 + BACK_RANK_WHITE
                + [28, 27, 21, 22] + [DOT, DOT] + [0, DOT, DOT] + [1, DOT, DOT])
    tokens = tokenize(chess.STARTING_FEN)
    assert tokens.dtype == np.uint8
    assert tokens.shape == (SEQUENCE_LENGTH,) == (77,)
    assert tokens.tolist() == expected
    assert tokenize_board(chess.Board()).tolist() == expected


def test_after_e4_has_no_en_passant_square() -> None:
    board = chess.Board()
    board.push_uci("e2e4")
    assert board.fen() == "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"
    expected = ([11] + BACK_RANK_BLACK + [18] * 8 + [DOT] * 16 + [DOT] * 4 + [23] + [DOT] * 3 + [DOT] * 8
                + [23] * 4 + [DOT] + [23] * 3 + BACK_RANK_WHITE
                + [28, 27, 21, 22] + [DOT, DOT] + [0, DOT, DOT] + [1, DOT, DOT])
    assert tokenize_board(board).tolist() == expected
    # The raw FEN with an ep square that no pawn can use tokenizes differently:
    # the engine must always go through board.fen().
    raw = tokenize("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq e3 0 1")
    assert raw[69:71].tolist() == [T["e"], T["3"]]
    assert tokenize_board(chess.Board("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq e3 0 1")).tolist() == expected


def test_legal_en_passant_square_is_kept() -> None:
    board = chess.Board()
    for uci in ("e2e4", "a7a6", "e4e5", "d7d5"):
        board.push_uci(uci)
    assert board.has_legal_en_passant()
    tokens = tokenize_board(board)
    assert tokens[0] == 29
    assert tokens[69:71].tolist() == [13, 6]  # 'd', '6'
    assert tokens[71:77].tolist() == [0, DOT, DOT, 3, DOT, DOT]


def test_castling_rights_are_packed_left() -> None:
    board = chess.Board("r3k2r/8/8/8/8/8/8/R3K2R w Kq - 12 40")
    assert board.fen().split()[2] == "Kq"
    tokens = tokenize_board(board)
    assert tokens[65:69].tolist() == [28, 22, DOT, DOT]  # K, q, ., .
    assert tokens[71:74].tolist() == [1, 2, DOT]  # '12.'
    assert tokens[74:77].tolist() == [4, 0, DOT]  # '40.'
    assert tokenize("r3k2r/8/8/8/8/8/8/R3K2R w kq - 0 1")[65:69].tolist() == [21, 22, DOT, DOT]
    assert tokenize("r3k2r/8/8/8/8/8/8/R3K2R w - - 0 1")[65:69].tolist() == [DOT] * 4


def test_black_to_move_bishop_and_file_b_share_token_11() -> None:
    board = chess.Board("2b1k3/8/8/8/pP6/8/8/4K3 b - b3 0 1")
    assert board.has_legal_en_passant()
    tokens = tokenize_board(board)
    assert tokens[0] == 11  # black to move
    assert tokens[1 + 2] == 11  # black bishop on c8 (third square of rank 8)
    assert tokens[69:71].tolist() == [11, 3]  # ep square b3
    # The white bishop has its own token.
    assert tokenize("2B1k3/8/8/8/8/8/8/4K3 w - - 0 1")[3] == 24


def test_board_is_not_flipped_for_black() -> None:
    white = tokenize("4k3/8/8/8/8/8/8/R3K3 w - - 0 1")
    black = tokenize("4k3/8/8/8/8/8/8/R3K3 b - - 0 1")
    assert (white[1:] == black[1:]).all()
    assert white[57] == 26  # rook on a1: the first square of the last rank
    assert white[5] == 21  # black king on e8


@pytest.mark.parametrize(("fen", "words"), [
    ("", "6 space-separated fields"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0", "6 space-separated fields"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1 extra", "6 space-separated fields"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR  w KQkq - 0 1", "6 space-separated fields"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR x KQkq - 0 1", "side to move"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNX w KQkq - 0 1", "invalid character 'X'"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNw w KQkq - 0 1", "invalid character 'w'"),
    ("rnbqkbnr/pppppppp/²8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", "invalid character"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBN w KQkq - 0 1", "64 squares"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNRR w KQkq - 0 1", "64 squares"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w HAha - 0 1", "castling"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w Kh - 0 1", "castling"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkqK - 0 1", "castling"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq e3x 0 1", "en-passant"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 1000 1", "halfmove"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - -1 1", "halfmove"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1000", "fullmove"),
])
def test_bad_fens_raise_tokenize_error(fen: str, words: str) -> None:
    with pytest.raises(TokenizeError) as info:
        tokenize(fen)
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_counters_of_1000_or_more_are_clamped() -> None:
    board = chess.Board()
    board.halfmove_clock = 1500
    board.fullmove_number = 2000
    with pytest.raises(TokenizeError):
        tokenize(board.fen())
    tokens = tokenize_board(board)
    assert tokens[71:77].tolist() == [9, 9, 9, 9, 9, 9]
    assert (tokens[:71] == tokenize(chess.STARTING_FEN)[:71]).all()
    board.halfmove_clock, board.fullmove_number = 999, 999
    assert tokenize_board(board).tolist() == tokens.tolist()


# --------------------------------------------------------------------------
# Action table
# --------------------------------------------------------------------------


def test_action_table_hash_and_size() -> None:
    assert NUM_ACTIONS == len(ACTIONS) == 1968
    assert len(set(ACTIONS)) == 1968
    digest = hashlib.sha256("\n".join(ACTIONS).encode()).hexdigest()
    assert digest == "0c85cec259a31318539a7171623ab73b01e25cd6d71fd43475e54d6e14f02e09"
    assert all(MOVE_TO_ACTION[m] == i for i, m in enumerate(ACTIONS))


@pytest.mark.parametrize(("uci", "index"), [
    ("a1b1", 0), ("b1a3", 45), ("b1c3", 46), ("e1c1", 99), ("e1g1", 102), ("e1h1", 103), ("g1f3", 169),
    ("g1h3", 170), ("d2d4", 288), ("e2e3", 314), ("e2e4", 317), ("a7a8", 1399), ("e7e5", 1497),
    ("e8c8", 1711), ("e8g8", 1714), ("e8h8", 1715), ("g8f6", 1766), ("a2a1q", 1792), ("a2b1n", 1799),
    ("e2e1q", 1836), ("h2g1n", 1879), ("a7a8q", 1880), ("a7b8n", 1887), ("b7a8q", 1892), ("d7d8q", 1912),
    ("e7e8q", 1924), ("e7e8n", 1927), ("e7d8q", 1928), ("e7f8r", 1933), ("g7h8q", 1956), ("h7h8q", 1960),
    ("h7g8n", 1967),
])
def test_action_indices(uci: str, index: int) -> None:
    assert MOVE_TO_ACTION[uci] == index
    assert ACTIONS[index] == uci
    assert move_to_action(chess.Move.from_uci(uci)) == index


def test_first_and_last_actions() -> None:
    assert list(ACTIONS[:10]) == ["a1b1", "a1c1", "a1d1", "a1e1", "a1f1", "a1g1", "a1h1", "a1a2", "a1b2", "a1a3"]
    assert list(ACTIONS[-10:]) == ["g7h8b", "g7h8n", "h7h8q", "h7h8r", "h7h8b", "h7h8n",
                                   "h7g8q", "h7g8r", "h7g8b", "h7g8n"]


def _block(square: str) -> list[str]:
    return [m for m in ACTIONS[:1792] if m.startswith(square)]


def test_blocks_per_from_square() -> None:
    a1, e2, d4 = _block("a1"), _block("e2"), _block("d4")
    assert (len(a1), len(e2), len(d4)) == (23, 29, 35)
    assert a1[-4:] == ["a1a8", "a1h8", "a1c2", "a1b3"]
    assert e2[:4] == ["e2d1", "e2e1", "e2f1", "e2a2"]
    assert e2[-6:] == ["e2c1", "e2g1", "e2c3", "e2g3", "e2d4", "e2f4"]
    # Blocks are contiguous and in from-square order; queen destinations ascend.
    start = ACTIONS.index(e2[0])
    assert list(ACTIONS[start:start + 29]) == e2
    queen = [chess.parse_square(m[2:4]) for m in e2[:-6]]
    assert queen == sorted(queen)
    assert sum(len(_block(chess.square_name(s))) for s in chess.SQUARES) == 1792
    assert len(ACTIONS) - 1792 == 176 and all(len(m) == 5 for m in ACTIONS[1792:])


def test_castling_is_a_king_move() -> None:
    board = chess.Board("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1")
    moves, actions = legal_actions(board)
    castles = {m.uci() for m in moves if board.is_castling(m)}
    assert castles == {"e1g1", "e1c1"}
    assert {99, 102} <= set(actions.tolist())


def test_start_position_moves_in_engine_order() -> None:
    moves, actions = legal_actions(chess.Board())
    expected = [("b1a3", 45), ("b1c3", 46), ("g1f3", 169), ("g1h3", 170), ("a2a3", 203), ("a2a4", 205),
                ("b2b3", 229), ("b2b4", 231), ("c2c3", 256), ("c2c4", 259), ("d2d3", 285), ("d2d4", 288),
                ("e2e3", 314), ("e2e4", 317), ("f2f3", 343), ("f2f4", 346), ("g2g3", 372), ("g2g4", 375),
                ("h2h3", 398), ("h2h4", 400)]
    assert [(m.uci(), int(a)) for m, a in zip(moves, actions)] == expected
    assert actions.dtype == np.int64


@pytest.mark.slow
def test_every_legal_move_of_random_games_is_in_the_table() -> None:
    rng = random.Random(20240207)
    seen_promotions = seen_castles = positions = 0
    for _ in range(40):
        board = chess.Board()
        while board.ply() < 300 and not board.is_insufficient_material():
            moves, actions = legal_actions(board)
            if not moves:
                break
            assert set(moves) == set(board.legal_moves)
            assert all(ACTIONS[a] == m.uci() for m, a in zip(moves, actions))
            assert (np.diff(actions) > 0).all()
            if positions % 7 == 0:
                tokens = tokenize_board(board)
                assert tokens.shape == (77,) and int(tokens.max()) < 31
            positions += 1
            move = rng.choice(moves)
            seen_promotions += move.promotion is not None
            seen_castles += board.is_castling(move)
            board.push(move)
    # The games really exercised the rare move kinds.
    assert positions > 4_000
    assert seen_promotions > 20 and seen_castles > 2


def test_chess960_castling_takes_the_table_index_of_its_king_move() -> None:
    # python-chess writes Chess960 castling as king-takes-rook (e1h1, itself an action of the
    # table); with king and rook on their standard squares it is DeepMind's e1g1.
    board = chess.Board("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1", chess960=True)
    moves, actions = legal_actions(board)
    by_move = {m.uci(): int(a) for m, a in zip(moves, actions)}
    assert by_move["e1h1"] == MOVE_TO_ACTION["e1g1"] and by_move["e1a1"] == MOVE_TO_ACTION["e1c1"]
    assert actions.tolist() == sorted(actions.tolist()) and len(set(actions.tolist())) == len(moves)
    assert move_action(board, chess.Move.from_uci("e1h1")) == 102
    # Elsewhere the king-to-rook move stands for castling; every index is still distinct.
    board = chess.Board("1r4kr/8/8/8/8/8/8/1R4KR w Hh - 0 1", chess960=True)
    moves, actions = legal_actions(board)
    castle = chess.Move.from_uci("g1h1")
    assert board.is_castling(castle) and castle in moves
    assert int(actions[moves.index(castle)]) == MOVE_TO_ACTION["g1h1"]
    assert set(moves) == set(board.legal_moves) and len(set(actions.tolist())) == len(moves)


def test_chess960_rights_are_shown_as_kqkq() -> None:
    # X-FEN names an inner rook by its file (C: the c1 rook, not the a1 one); the
    # tokenizer knows only KQkq, so the model sees the side the rook stands on.
    board = chess.Board("4k3/8/8/8/8/8/8/R1R1K3 w C - 0 1", chess960=True)
    assert board.fen().split(" ")[2] == "C"
    assert model_fen(board) == "4k3/8/8/8/8/8/8/R1R1K3 w Q - 0 1"
    assert tokenize_board(board).tolist() == tokenize(model_fen(board)).tolist()
    board = chess.Board("r1r1k3/8/8/8/8/8/8/R1R1K2R w HCc - 0 1", chess960=True)
    assert model_fen(board).split(" ")[2] == "KQq"
    # A position python-chess already writes as KQkq is its FEN, counters clamped.
    board = chess.Board("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 1200 1500", chess960=True)
    assert model_fen(board) == "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 999 999"


def test_non_promotion_moves_to_the_last_rank_are_never_legal() -> None:
    board = chess.Board("8/P6k/8/8/8/8/6Kp/8 w - - 0 1")
    moves, _ = legal_actions(board)
    assert "a7a8" not in {m.uci() for m in moves}
    assert {"a7a8q", "a7a8r", "a7a8b", "a7a8n"} <= {m.uci() for m in moves}


# --------------------------------------------------------------------------
# Buckets and win probabilities
# --------------------------------------------------------------------------


def test_bucket_edges_and_centres() -> None:
    edges, values = bucket_edges(), bucket_values()
    assert edges.shape == (127,) and values.shape == (128,)
    assert edges[0] == 1 / 128 and edges[-1] == 127 / 128
    np.testing.assert_allclose(np.diff(edges), 1 / 128)
    assert values[0] == 0.00390625 and values[-1] == 0.99609375
    np.testing.assert_array_equal(values, (2 * np.arange(128) + 1) / 256)
    assert bucket_values(32)[0] == 1 / 64 and bucket_edges(32).shape == (31,)


def test_bucket_labels() -> None:
    assert int(win_prob_to_bucket(0.0)) == 0
    assert int(win_prob_to_bucket(1 / 128)) == 0  # on an edge: the lower bucket
    assert int(win_prob_to_bucket(np.nextafter(1 / 128, 1))) == 1
    assert int(win_prob_to_bucket(0.5)) == 63
    assert int(win_prob_to_bucket(np.nextafter(0.5, 1))) == 64
    assert int(win_prob_to_bucket(1.0)) == 127
    labels = win_prob_to_bucket(bucket_values())
    np.testing.assert_array_equal(labels, np.arange(128))


def test_expected_win_prob() -> None:
    uniform = np.full((3, 128), -np.log(128.0))
    np.testing.assert_allclose(expected_win_prob(uniform), 0.5, atol=1e-12)
    one_hot = np.full((128, 128), -1e9)
    np.fill_diagonal(one_hot, 0.0)
    np.testing.assert_allclose(expected_win_prob(one_hot), bucket_values(), atol=1e-12)


def test_centipawns_to_win_probability() -> None:
    assert float(cp_to_win_prob(0)) == 0.5
    assert float(cp_to_win_prob(100)) == pytest.approx(0.591, abs=5e-4)
    assert float(cp_to_win_prob(300)) == pytest.approx(0.751, abs=5e-4)
    assert float(cp_to_win_prob(1000)) == pytest.approx(0.975, abs=5e-4)
    assert float(cp_to_win_prob(-300)) == pytest.approx(1 - 0.751, abs=5e-4)
    cps = np.arange(-2000, 2001, 50)
    probs = np.asarray(cp_to_win_prob(cps))
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-0.00368208 * cps)), rtol=1e-12)
    assert (np.diff(probs) > 0).all()


def test_win_probability_to_centipawns() -> None:
    assert win_prob_to_cp(0.5) == 0
    assert win_prob_to_cp(0.75) == 298
    assert win_prob_to_cp(0.9) == 597
    assert win_prob_to_cp(0.99) == 1248
    assert win_prob_to_cp(0.25) == -298
    # An expectation over bucket centres lies in [1/256, 255/256].
    assert win_prob_to_cp(255 / 256) == 1505
    assert win_prob_to_cp(1 / 256) == -1505
    for cp in range(-1500, 1501, 37):
        assert win_prob_to_cp(float(cp_to_win_prob(cp))) == cp
    # Degenerate inputs give a finite score rather than an exception.
    assert win_prob_to_cp(1.0) > 1505 and win_prob_to_cp(0.0) < -1505
