"""Games as Chess-GPT transcripts, and the text each legal move adds to one.

A transcript is one string: ``;`` then the moves in SAN, a move number with
no space after its dot before each white move, one space between moves and
no headers, comments or result: ``;1.e4 e5 2.Nf3 Nc6``. It always starts
from the standard initial position (move 1, white to move).

The text model scores a move by the characters that follow the
:func:`prefix` of the game: :func:`move_text` is the move number where one
is due, the SAN, and the separator (a space) that ends the move. The
separator keeps ``O-O`` from being a prefix of ``O-O-O`` and ``e8=Q`` from
being read as a shorter move's text.

:class:`Vocabulary` maps characters to token indices (Chess-GPT's 32
characters by default). This module imports python-chess only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import chess

#: Chess-GPT's vocabulary: every character of its transcripts, sorted; the
#: index of a character is its token.
CHESS_GPT_VOCABULARY: tuple[str, ...] = tuple(" #+-.0123456789;=BKNOQRabcdefghx")

#: The character a transcript starts with.
START = ";"
#: The character that ends every move.
SEPARATOR = " "


class TranscriptError(ValueError):
    """A game that has no transcript (it does not start from the initial position)."""


class VocabularyError(ValueError):
    """Text with a character the vocabulary does not have."""


class Vocabulary:
    """Characters to token indices and back.

    :param chars: the characters, by token index (``itos``).
    """

    def __init__(self, chars: Sequence[str] = CHESS_GPT_VOCABULARY) -> None:
        self.chars: tuple[str, ...] = tuple(chars)
        if not self.chars or not all(isinstance(c, str) and len(c) == 1 for c in self.chars):
            raise VocabularyError("a vocabulary is a non-empty list of single characters")
        self.index = {c: i for i, c in enumerate(self.chars)}
        if len(self.index) != len(self.chars):
            raise VocabularyError("a vocabulary lists a character twice")

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"Vocabulary({''.join(self.chars)!r})"

    def can_encode(self, text: str) -> bool:
        return all(c in self.index for c in text)

    def encode(self, text: str) -> list[int]:
        """The tokens of ``text``; raises :class:`VocabularyError` naming a character it lacks."""
        try:
            return [self.index[c] for c in text]
        except KeyError as exc:
            raise VocabularyError(f"character {exc.args[0]!r} is not in the model's vocabulary") from None

    def decode(self, tokens: Iterable[int]) -> str:
        return "".join(self.chars[int(t)] for t in tokens)


def is_standard_start(board: chess.Board) -> bool:
    """Whether ``board`` is the standard initial position at move 1 (Chess960 or not, the pieces as usual)."""
    return board.fen() == chess.STARTING_FEN


def game_moves(board: chess.Board) -> list[chess.Move]:
    """The moves of the game ``board`` holds, from the initial position.

    Raises :class:`TranscriptError` when its move stack does not start from
    the standard initial position (a game set up from a FEN, or a history
    that was cut short).
    """
    if not is_standard_start(board.root()):
        raise TranscriptError("the game does not start from the initial position, so it has no transcript")
    return list(board.move_stack)


def transcript(moves: Sequence[chess.Move] | chess.Board) -> str:
    """The transcript of a game: a board (its move stack from the initial position) or a list of moves.

    Raises :class:`TranscriptError` for a board whose game does not start
    from the initial position, and ``ValueError`` for an illegal move.
    """
    if isinstance(moves, chess.Board):
        moves = game_moves(moves)
    board = chess.Board()
    parts = [START]
    for ply, move in enumerate(moves):
        if ply:
            parts.append(SEPARATOR)
        if ply % 2 == 0:
            parts.append(f"{ply // 2 + 1}.")
        if not board.is_legal(move):
            raise ValueError(f"illegal move {move.uci()} at ply {ply + 1} of the game")
        parts.append(board.san(move))
        board.push(move)
    return "".join(parts)


def prefix(board: chess.Board) -> str:
    """The text before the next move: the transcript and, after a move, its separator (``;`` at the start)."""
    text = transcript(board)
    return text if text == START else text + SEPARATOR


def move_text(board: chess.Board, move: chess.Move) -> str:
    """What ``move`` adds after :func:`prefix`: the move number where due, the SAN and the separator."""
    number = f"{board.fullmove_number}." if board.turn == chess.WHITE else ""
    return number + board.san(move) + SEPARATOR


@dataclass
class MoveTexts:
    """The prefix of a game and the text of each candidate move after it."""

    prefix: str
    moves: list[chess.Move]
    texts: list[str]


def candidate_texts(board: chess.Board, moves: Sequence[chess.Move] | None = None) -> MoveTexts:
    """:func:`prefix` of ``board``'s game and :func:`move_text` of each of ``moves`` (default: every legal move).

    The move number comes from the game's own count of moves, which for a
    game from the initial position is the transcript's.
    """
    moves = list(board.legal_moves) if moves is None else list(moves)
    return MoveTexts(prefix(board), moves, [move_text(board, m) for m in moves])
