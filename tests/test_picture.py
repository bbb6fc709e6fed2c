"""``neuralengine analyse --svg``: the board picture with arrows for the best moves."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import chess
import pytest

from neuralengine.analyse import main
from neuralengine.engine import MoveScore
from neuralengine.picture import NARROWEST, WIDEST, arrow_specs, board_svg, win_colour

SVG = "{http://www.w3.org/2000/svg}"
FEN = "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3"


def table(text: str) -> list[tuple[str, float]]:
    return [(uci, float(pct)) for uci, pct in re.findall(r"^\s*\d+\s+(\S+)\s+\S+\s+([\d.]+)\s", text, re.M)]


def test_svg_shows_the_best_moves_as_arrows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "board.svg"
    assert main(["--fen", FEN, "--svg", str(out), "--arrows", "4"]) == 0
    ranked = table(capsys.readouterr().out)
    root = ET.parse(out).getroot()  # well-formed XML
    assert root.tag == f"{SVG}svg"
    arrows = [g for g in root.iter(f"{SVG}g") if g.get("class") == "arrow"]
    # Drawn worst first, so that the best lies on top.
    moves = [g.get("data-move") for g in reversed(arrows)]
    assert moves == [uci for uci, _ in ranked[:4]]
    for g, (uci, pct) in zip(reversed(arrows), ranked):
        line = g.find(f"{SVG}line")
        assert line is not None and line.get("stroke") == win_colour(float(g.get("data-win")))
        assert abs(float(g.get("data-win")) * 100 - pct) < 0.006
        assert g.find(f"{SVG}text").text == f"{float(g.get('data-win')) * 100:.1f}"
    widths = [float(g.find(f"{SVG}line").get("stroke-width")) for g in reversed(arrows)]
    assert widths[0] == WIDEST and widths == sorted(widths, reverse=True)
    # python-chess's board underneath: 32 pieces.
    assert len([u for u in root.iter(f"{SVG}use")]) == 32


def test_colour_and_width_follow_win_probability() -> None:
    red, amber, green = win_colour(0.0), win_colour(0.5), win_colour(1.0)
    assert int(red[1:3], 16) > int(red[3:5], 16)  # more red than green
    assert int(green[3:5], 16) > int(green[1:3], 16)
    assert red != amber != green
    board = chess.Board()
    scores = [MoveScore(chess.Move.from_uci(m), i, p) for i, (m, p) in
              enumerate([("e2e4", 0.55), ("d2d4", 0.50), ("a2a3", 0.40), ("g1h3", 0.20)])]
    specs = arrow_specs(board, scores, 3)
    assert [s.move for s in specs] == ["e2e4", "d2d4", "a2a3"]
    assert specs[0].width == WIDEST and specs[2].width == NARROWEST  # 15 points below the best: the thinnest
    assert WIDEST > specs[1].width > NARROWEST and specs[0].opacity > specs[1].opacity > specs[2].opacity
    assert arrow_specs(board, scores, 0) == []


def test_flipped_picture_and_a_position_without_moves(tmp_path: Path) -> None:
    board = chess.Board("rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3")
    svg = board_svg(board, [], flipped=True)
    ET.fromstring(svg)
    assert 'class="arrow"' not in svg and "check" in svg


def test_svg_that_cannot_be_written_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    assert main(["--svg", str(tmp_path / "a-file" / "board.svg")]) == 1
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err
