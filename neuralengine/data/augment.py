"""Colour-flip augmentation on token arrays.

Mirroring the board top to bottom, swapping the colours of all pieces, the
castling rights and the side to move gives a position whose action values are
exactly those of the original (python-chess ``Board.mirror``). Every move is
mirrored the same way (``e2e4`` becomes ``e7e5``), so one scored position
yields a second one for free. The functions work on the trainer's arrays
directly: FEN tokens [P, 77] and action indices, with NumPy only.
"""

from __future__ import annotations

import numpy as np

from neuralengine.encoding import ACTIONS, MOVE_TO_ACTION, VOCAB

_ID = {c: i for i, c in enumerate(VOCAB)}


def _mirror_move(uci: str) -> str:
    flip = {str(r): str(9 - r) for r in range(1, 9)}
    return uci[0] + flip[uci[1]] + uci[2] + flip[uci[3]] + uci[4:]


#: Action index of the mirrored move, for every action.
MIRROR_ACTION = np.array([MOVE_TO_ACTION[_mirror_move(m)] for m in ACTIONS], dtype=np.int64)

# Token-level lookup: piece letters swap case, '3' and '6' swap (the en-passant
# rank), every other token stays. Only applied to the fields where those
# meanings hold.
_PIECES = np.arange(len(VOCAB), dtype=np.uint8)
for _c in "pnbrqk":
    _PIECES[_ID[_c]], _PIECES[_ID[_c.upper()]] = _ID[_c.upper()], _ID[_c]
_EP_RANK = np.arange(len(VOCAB), dtype=np.uint8)
_EP_RANK[_ID["3"]], _EP_RANK[_ID["6"]] = _ID["6"], _ID["3"]
# Castling: the mirrored rights, in KQkq order, left-aligned and padded.
_CASTLE_ORDER = [_ID[c] for c in "KQkq"]
_CASTLE_SWAP = {_ID["K"]: 2, _ID["Q"]: 3, _ID["k"]: 0, _ID["q"]: 1}


def mirror_boards(boards: np.ndarray) -> np.ndarray:
    """Colour-flipped copies of FEN token rows ``boards`` [P, 77]."""
    boards = np.asarray(boards, dtype=np.uint8)
    out = boards.copy()
    white, black = _ID["w"], _ID["b"]
    out[:, 0] = np.where(boards[:, 0] == white, black, white)
    squares = boards[:, 1:65].reshape(-1, 8, 8)[:, ::-1, :]
    out[:, 1:65] = _PIECES[squares.reshape(-1, 64)]
    castling = boards[:, 65:69]
    present = np.zeros((len(boards), 4), dtype=bool)
    for token, slot in _CASTLE_SWAP.items():
        present[:, slot] |= (castling == token).any(axis=1)
    field = np.full((len(boards), 4), _ID["."], dtype=np.uint8)
    rank = np.cumsum(present, axis=1) - 1
    for slot in range(4):
        rows = np.nonzero(present[:, slot])[0]
        field[rows, rank[rows, slot]] = _CASTLE_ORDER[slot]
    out[:, 65:69] = field
    out[:, 70] = _EP_RANK[boards[:, 70]]
    return out


def mirror_actions(actions: np.ndarray) -> np.ndarray:
    """Action indices of the mirrored moves (same shape as ``actions``)."""
    return MIRROR_ACTION[np.asarray(actions, dtype=np.int64)]
