"""Colour-flip augmentation against python-chess's ``Board.mirror``."""

from __future__ import annotations

import lzma
import random
from pathlib import Path

import chess
import numpy as np

from neuralengine.data.augment import MIRROR_ACTION, mirror_actions, mirror_boards
from neuralengine.encoding import ACTIONS, MOVE_TO_ACTION, legal_actions, tokenize

DATA = Path(__file__).parent / "data" / "av"


def _sample_fens(limit: int = 400) -> list[str]:
    """Real positions from the committed seed-data sample."""
    fens = []
    for path in sorted(DATA.glob("*.txt.xz")):
        with lzma.open(path, "rt") as fh:
            fens.extend(line.split("\t")[0] for _, line in zip(range(limit // 2), fh))
    return fens


def _odd_fens() -> list[str]:
    """Castling subsets, en passant on both sides, promotions."""
    return [
        "r3k2r/8/8/8/8/8/8/R3K2R w Kq - 0 1",
        "r3k2r/8/8/8/8/8/8/R3K2R b Qk - 5 30",
        "rnbqkbnr/ppp1p1pp/8/3pPp2/8/8/PPPP1PPP/RNBQKBNR w KQkq f6 0 3",
        "rnbqkbnr/pppp1ppp/8/8/3Pp3/8/PPP1PPPP/RNBQKBNR b KQkq d3 0 2",
        "8/P6k/8/8/8/8/6Kp/8 b - - 3 57",
    ]


def test_mirrored_tokens_equal_the_tokens_of_the_mirrored_board():
    fens = _sample_fens() + _odd_fens()
    assert len(fens) > 300
    boards = np.stack([tokenize(f) for f in fens])
    want = np.stack([tokenize(chess.Board(f).mirror().fen()) for f in fens])
    got = mirror_boards(boards)
    assert np.array_equal(got, want)
    # Mirroring twice gives the original back.
    assert np.array_equal(mirror_boards(got), boards)
    # Real change: every position differs from its mirror (the side to move at least).
    assert (got != boards).any(axis=1).all()


def test_mirrored_actions_are_the_legal_moves_of_the_mirrored_board():
    for fen in _sample_fens(100) + _odd_fens():
        board = chess.Board(fen)
        _, actions = legal_actions(board)
        _, mirrored = legal_actions(board.mirror())
        assert sorted(mirror_actions(actions).tolist()) == mirrored.tolist()


def test_action_mirror_is_an_involution_over_the_whole_table():
    assert np.array_equal(MIRROR_ACTION[MIRROR_ACTION], np.arange(len(ACTIONS)))
    assert ACTIONS[MIRROR_ACTION[MOVE_TO_ACTION["e2e4"]]] == "e7e5"
    assert ACTIONS[MIRROR_ACTION[MOVE_TO_ACTION["a7b8n"]]] == "a2b1n"


def test_mirrored_scores_still_describe_the_mirrored_position():
    """A scored line's best move, mirrored, is a legal move of the mirrored
    position that does the same thing (same piece, same capture)."""
    rng = random.Random(3)
    lines = []
    for path in sorted(DATA.glob("*.txt.xz")):
        with lzma.open(path, "rt") as fh:
            lines.extend(fh.readlines()[:200])
    for line in rng.sample(lines, 50):
        fen, scored = line.rstrip("\n").split("\t")
        board = chess.Board(fen)
        move = chess.Move.from_uci(scored.split()[0].split(":")[0])
        twin = ACTIONS[mirror_actions(np.array([MOVE_TO_ACTION[move.uci()]]))[0]]
        mirrored = board.mirror()
        twin_move = chess.Move.from_uci(twin)
        assert twin_move in mirrored.legal_moves
        assert mirrored.piece_type_at(twin_move.from_square) == board.piece_type_at(move.from_square)
        assert mirrored.is_capture(twin_move) == board.is_capture(move)
        assert mirrored.gives_check(twin_move) == board.gives_check(move)
