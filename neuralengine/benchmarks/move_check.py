"""How much win probability the engine's moves give away, checked by Stockfish.

A finer measure of strength than the score of a lost match: every move one
player made in a PGN file is checked with Stockfish at a fixed depth (10 by
default). A move's *loss* is the win probability of the position before it
(Stockfish's best line, for the mover) minus the win probability after it
(Stockfish's best line for the opponent, turned round), never below 0. Scores
become win probabilities with the project's one conversion
(:func:`neuralengine.data.text.score_to_win_prob`: the Lichess formula, a
mate is 1 or 0); a checkmate on the board is 0 for the side to move, any
other end of the game 0.5.

The report (:func:`check_games`) gives the share of the player's moves losing
more than each of :data:`THRESHOLDS` (0.1, 0.2, 0.3), the games with a
blunder (a loss above :data:`BLUNDER`, 0.3) and the median ply of each such
game's first blunder, over all games and per opponent. Moves of the opening
book (before a move whose comment says ``end of opening``, as the built-in
runner writes, or commented ``book``, as cutechess writes) are not the
player's and are skipped. Plies count from the game's true start (the FEN's
move number), the first move being ply 1.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import chess
import chess.pgn

from neuralengine.data.stockfish import EngineError, Stockfish, search_timeout_for
from neuralengine.data.text import score_to_win_prob

#: Loss thresholds whose shares are reported (win probability).
THRESHOLDS = (0.1, 0.2, 0.3)
#: A move losing more than this is a blunder; each game's first one is located.
BLUNDER = 0.3
#: Default search depth of the check.
DEFAULT_DEPTH = 10


@dataclass
class GameMoves:
    """The checked moves of one player in one game."""

    opponent: str
    #: (ply, loss) of each of the player's moves, in order.
    moves: list[tuple[int, float]] = field(default_factory=list)

    @property
    def first_blunder(self) -> int | None:
        return next((ply for ply, loss in self.moves if loss > BLUNDER), None)


def _is_book(node: chess.pgn.ChildNode) -> bool:
    comment = node.comment.strip().lower()
    return comment == "book" or comment.startswith("book ") or "end of opening" in comment


def player_moves(game: chess.pgn.Game, player: str) -> Iterator[tuple[chess.Board, chess.Move]]:
    """``(board before, move)`` for each move ``player`` made in ``game`` (book moves left out)."""
    if player not in (game.headers.get("White"), game.headers.get("Black")):
        return
    colour = chess.WHITE if game.headers.get("White") == player else chess.BLACK
    nodes = list(game.mainline())
    last_book = max((i for i, node in enumerate(nodes) if _is_book(node)), default=-1)
    board = game.board()
    for i, node in enumerate(nodes):
        if i > last_book and board.turn == colour:
            yield board.copy(), node.move
        board.push(node.move)


class Checker:
    """One Stockfish (``Threads 1``) that scores positions for the mover at a fixed depth."""

    def __init__(self, command: Sequence[str], depth: int = DEFAULT_DEPTH, hash_mb: int = 16) -> None:
        self.depth = depth
        self.go = f"depth {depth}"
        self.engine = Stockfish(command, {"Threads": 1, "Hash": hash_mb, "MultiPV": 1},
                                search_timeout=search_timeout_for(self.go))

    def win_prob(self, board: chess.Board) -> float:
        """Win probability of the side to move in ``board`` (its move stack is sent, for repetitions)."""
        if board.is_checkmate():
            return 0.0
        if board.is_game_over(claim_draw=False):
            return 0.5
        root = board.root()
        result = self.engine.search(root.fen(), self.go, [m.uci() for m in board.move_stack])
        line = result.lines.get(1)
        if line is None:
            raise EngineError(f"Stockfish gave no score for {board.fen()}")
        return score_to_win_prob(line.score)

    def loss(self, board: chess.Board, move: chess.Move) -> float:
        before = self.win_prob(board)
        after = board.copy()
        after.push(move)
        return max(0.0, before - (1.0 - self.win_prob(after)))

    def close(self) -> None:
        self.engine.close()


def read_games(pgn: Path) -> list[chess.pgn.Game]:
    games = []
    with open(pgn, encoding="utf-8", errors="replace") as fh:
        while True:
            game = chess.pgn.read_game(fh)
            if game is None:
                return games
            games.append(game)


def summarise(games: Sequence[GameMoves]) -> dict[str, Any]:
    """Shares of moves losing more than each threshold, blunder games and the first blunder's median ply."""
    losses = [loss for g in games for _, loss in g.moves]
    firsts = [g.first_blunder for g in games if g.first_blunder is not None]
    return {
        "games": len(games),
        "moves": len(losses),
        "share_losing_more_than": {f"{t:g}": (sum(loss > t for loss in losses) / len(losses) if losses else None)
                                   for t in THRESHOLDS},
        "mean_loss": sum(losses) / len(losses) if losses else None,
        "games_with_blunder": len(firsts),
        "first_blunder_ply_median": statistics.median(firsts) if firsts else None,
        "first_blunder_plies": sorted(firsts),
    }


def check_games(pgn: Path, player: str, command: Sequence[str], depth: int = DEFAULT_DEPTH,
                progress: bool = False) -> dict[str, Any]:
    """Check every move ``player`` made in the games of ``pgn``; the report described in the module docstring.

    :raises EngineError: when Stockfish cannot be started or dies.
    """
    from neuralengine.progress import Progress

    games = [g for g in read_games(pgn) if player in (g.headers.get("White"), g.headers.get("Black"))]
    checked: list[GameMoves] = []
    bar = Progress("move check", total=len(games), unit="games", enabled=progress)
    checker = Checker(command, depth)
    try:
        for game in games:
            opponent = game.headers["Black"] if game.headers.get("White") == player else game.headers["White"]
            record = GameMoves(opponent)
            checker.engine.new_game()
            for board, move in player_moves(game, player):
                record.moves.append((board.ply() + 1, checker.loss(board, move)))
            checked.append(record)
            bar.update(1)
    finally:
        checker.close()
        bar.close()
    report = {"engine": checker.engine.name, "depth": depth, "player": player, "blunder": BLUNDER,
              "thresholds": list(THRESHOLDS), **summarise(checked)}
    report["per_opponent"] = {name: summarise([g for g in checked if g.opponent == name])
                              for name in sorted({g.opponent for g in checked})}
    return report


def format_report(report: dict[str, Any]) -> str:
    """One line of text: the shares and the first blunder's median ply."""
    if report.get("skipped"):
        return f"  move check: skipped ({report['skipped']})"
    shares = report["share_losing_more_than"]

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f} %"

    median = report["first_blunder_ply_median"]
    return (f"  move check (Stockfish depth {report['depth']}, {report['moves']} moves of {report['player']}): "
            + ", ".join(f"{pct(v)} lose > {k}" for k, v in shares.items())
            + f"; {report['games_with_blunder']} of {report['games']} games with a blunder > {report['blunder']:g}"
            + (f", the first at median ply {median:g}" if median is not None else ""))
