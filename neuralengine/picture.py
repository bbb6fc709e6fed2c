"""The board picture: the best moves as arrows, coloured and weighted by win probability.

One drawing rule serves both pictures of a position: ``neuralengine analyse
--svg`` (built on :func:`chess.svg.board`) and the board of ``neuralengine
serve``, whose page draws the arrows that :func:`arrow_specs` describes.

* **Colour** follows the move's win probability for the side to move: red at
  0 %, amber at 50 %, green at 100 % (:func:`win_colour`).
* **Width** follows how far the move is from the best one: the best move's
  arrow is the widest, and an arrow thins linearly to its narrowest at
  :data:`THIN_AT` (15 points of win probability below the best move, Lichess's
  blunder threshold); the opacity falls with it.
* A move that a rule decided (mate in one, a draw) is drawn like any other,
  with its rule's score.

Only python-chess is imported (:mod:`chess.svg`); the picture needs no
network and no web stack.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass
from typing import Sequence

import chess
import chess.svg

from neuralengine.engine.scores import MoveScore

#: Arrows drawn by default: the best few moves.
DEFAULT_ARROWS = 5

#: Win-probability gap to the best move at which an arrow reaches its narrowest width.
THIN_AT = 0.15

#: Arrow shaft widths, in units of a 45-unit square.
WIDEST, NARROWEST = 13.0, 3.5

#: Size of one square in python-chess's SVG units.
SQUARE = 45.0


def win_colour(win_prob: float) -> str:
    """``#rrggbb`` for a win probability: a hue from red (0) through amber (0.5) to green (1)."""
    p = min(max(float(win_prob), 0.0), 1.0)
    r, g, b = colorsys.hls_to_rgb(p * 120.0 / 360.0, 0.42, 0.75)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


@dataclass
class ArrowSpec:
    """One arrow of the picture."""

    #: The move in UCI notation, and its from- and to-squares (``e2``, ``e4``).
    move: str
    tail: str
    head: str
    win_prob: float
    colour: str
    #: Shaft width in square units (a square is 45 wide) and opacity, from the gap to the best move.
    width: float
    opacity: float
    #: The label drawn at the arrow: win % with one decimal.
    label: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def arrow_specs(board: chess.Board, ranked: Sequence[MoveScore], count: int = DEFAULT_ARROWS) -> list[ArrowSpec]:
    """Arrows for the first ``count`` moves of ``ranked`` (the engine's order, best first)."""
    shown = list(ranked[:max(0, count)])
    if not shown:
        return []
    best = max(s.win_prob for s in shown)
    arrows = []
    for scored in shown:
        closeness = max(0.0, 1.0 - (best - scored.win_prob) / THIN_AT)
        move = scored.move
        arrows.append(ArrowSpec(
            move=board.uci(move), tail=chess.square_name(move.from_square), head=chess.square_name(move.to_square),
            win_prob=scored.win_prob, colour=win_colour(scored.win_prob),
            width=round(NARROWEST + (WIDEST - NARROWEST) * closeness, 2),
            opacity=round(0.45 + 0.45 * closeness, 3), label=f"{scored.win_prob * 100:.1f}"))
    return arrows


def _centre(square: str, margin: float, flipped: bool) -> tuple[float, float]:
    sq = chess.parse_square(square)
    file, rank = chess.square_file(sq), chess.square_rank(sq)
    col, row = (7 - file, rank) if flipped else (file, 7 - rank)
    return margin + (col + 0.5) * SQUARE, margin + (row + 0.5) * SQUARE


def arrows_svg(arrows: Sequence[ArrowSpec], *, margin: float = 0.0, flipped: bool = False) -> str:
    """SVG elements (one ``<g class="arrow">`` each) for ``arrows`` on a board whose squares start at ``margin``.

    The worst arrow is drawn first, so that the best lies on top.
    """
    parts = []
    for arrow in reversed(arrows):
        x1, y1 = _centre(arrow.tail, margin, flipped)
        x2, y2 = _centre(arrow.head, margin, flipped)
        dx, dy = x2 - x1, y2 - y1
        length = (dx * dx + dy * dy) ** 0.5
        ux, uy = dx / length, dy / length
        head_len = min(arrow.width * 1.6 + 8.0, length * 0.6)
        half = arrow.width * 0.9 + 5.0
        bx, by = x2 - ux * head_len, y2 - uy * head_len  # base of the head
        sx, sy = x1 + ux * 10.0, y1 + uy * 10.0  # the shaft starts a little off the centre
        points = f"{x2:.1f},{y2:.1f} {bx - uy * half:.1f},{by + ux * half:.1f} {bx + uy * half:.1f},{by - ux * half:.1f}"
        lx, ly = x2 - ux * 14.0, y2 - uy * 14.0  # the label sits in the head, on the target square
        parts.append(
            f'<g class="arrow" data-move="{arrow.move}" data-win="{arrow.win_prob:.6f}" opacity="{arrow.opacity}">'
            f'<line x1="{sx:.1f}" y1="{sy:.1f}" x2="{bx:.1f}" y2="{by:.1f}" stroke="{arrow.colour}" '
            f'stroke-width="{arrow.width}" />'
            f'<polygon points="{points}" fill="{arrow.colour}" />'
            f'<text x="{lx:.1f}" y="{ly + 3.5:.1f}" text-anchor="middle" font-size="10" font-family="sans-serif" '
            f'font-weight="bold" fill="#fff" stroke="#000" stroke-width="2.2" paint-order="stroke">{arrow.label}</text>'
            f'</g>')
    return "".join(parts)


def board_svg(board: chess.Board, ranked: Sequence[MoveScore], *, arrows: int = DEFAULT_ARROWS,
              flipped: bool = False, size: int = 480) -> str:
    """The board with its last move, a check, and arrows for the best ``arrows`` moves of ``ranked``.

    :func:`chess.svg.board` draws the board and pieces; the arrows are added
    on top by :func:`arrows_svg` (python-chess's own arrows have one width).
    """
    lastmove = board.peek() if board.move_stack else None
    check = board.king(board.turn) if board.is_check() else None
    svg = chess.svg.board(board, orientation=chess.BLACK if flipped else chess.WHITE, lastmove=lastmove,
                          check=check, size=size, coordinates=True)
    # python-chess draws the squares from a margin of 15 units (with coordinates) in a 390-unit view box.
    overlay = arrows_svg(arrow_specs(board, ranked, arrows), margin=15.0, flipped=flipped)
    return svg.replace("</svg>", overlay + "</svg>", 1) if svg.rstrip().endswith("</svg>") else svg + overlay
