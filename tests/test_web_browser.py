"""``neuralengine serve`` in a real browser: headless Chromium from the system, driven by Selenium.

The server is the real command (``neuralengine serve --port 0``) with the
shipped model. Every step waits on the page's own signals (attributes it sets
when it has drawn an answer) through WebDriverWait, never for a fixed time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import chess
import chess.pgn
import pytest

pytest.importorskip("starlette", reason="the web extra is not installed: pip install '.[web]'")
pytest.importorskip("uvicorn", reason="the web extra is not installed: pip install '.[web]'")
pytest.importorskip("selenium", reason="Selenium is not installed: pip install selenium")

from neuralengine.analyse import main as analyse_main  # noqa: E402
from neuralengine.web.browser import Page, Server, chromium, find_browser  # noqa: E402

from conftest import SHARED_SAMPLE  # noqa: E402

if find_browser() is None:
    pytest.skip("Chromium and its driver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

GAMES = SHARED_SAMPLE / "tournament_logs" / "cutechess_match.pgn"
TWO_KNIGHTS = "r1bqkb1r/pppp1ppp/2n2n2/4p1N1/2B1P3/8/PPPP1PPP/RNBQK2R b KQkq - 5 4"


def game(number: int) -> chess.pgn.Game:
    with open(GAMES, encoding="utf-8") as fh:
        for _ in range(number):
            found = chess.pgn.read_game(fh)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    browser = chromium()
    yield browser
    browser.quit()


@pytest.fixture
def page(driver: Any, server: Server) -> Page:
    opened = Page(driver, server.url)
    opened.open()
    return opened


def analyse_table(fen: str, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str, str]]:
    """(uci, win %, cp) of each row of ``neuralengine analyse`` for ``fen``, best first."""
    assert analyse_main(["--fen", fen]) == 0
    return re.findall(r"^\s*\d+\s+(\S+)\s+\S+\s+([\d.]+)\s+(\S+)", capsys.readouterr().out, re.M)


def test_a_clicked_move_gets_the_engines_answer_on_the_board(page: Page) -> None:
    page.new_game("w")
    reply = page.play("e2e4")
    board = chess.Board()
    board.push_uci("e2e4")
    assert chess.Move.from_uci(reply) in board.legal_moves
    board.push_uci(reply)
    assert page.board_fen("play-board") == board.fen()
    # The pieces drawn are those of the position: the pawn stands on e4, the engine's piece on its square.
    drawn = {u.get_attribute("data-on"): u.get_attribute("data-piece")
             for u in page.driver.find_elements("css selector", "#play-board use.piece")}
    assert drawn == {chess.square_name(sq): p.symbol() for sq, p in board.piece_map().items()}
    assert page.driver.find_element("id", "play-status").text.startswith("Engine played ")
    assert page.attribute("view-play", "data-answer-ms") is not None


def test_the_engine_opens_when_the_page_plays_black(page: Page) -> None:
    page.new_game("b")
    fen = page.board_fen("play-board")
    assert fen.split()[1] == "b" and fen != chess.Board().fen()
    # The board is drawn from Black's side: h1 is at the top left.
    h1 = page.driver.find_element("css selector", '#play-board rect[data-square="h1"]')
    assert (h1.get_attribute("x"), h1.get_attribute("y")) == ("0", "0")


def test_a_fen_shows_the_arrows_and_list_of_analyse(page: Page, capsys: pytest.CaptureFixture[str]) -> None:
    page.load_fen(TWO_KNIGHTS)
    expected = analyse_table(TWO_KNIGHTS, capsys)
    rows = page.move_rows()
    assert [(r["uci"], r["win"], r["cp"]) for r in rows] == expected
    arrows = page.arrows()
    assert [move for move, _ in arrows] == [uci for uci, _, _ in expected[:5]]
    assert [f"{win * 100:.2f}" for _, win in arrows] == [pct for _, pct, _ in expected[:5]]
    assert page.board_fen("analysis-board") == TWO_KNIGHTS
    # The W/D/L bar is the best move's, from White's side (Black is to move).
    w, d, loss = (int(float(rows[0][k]) * 10 + 0.5) for k in ("w", "d", "l"))
    bar = [int(v) for v in page.attribute("wdl", "data-wdl").split()]
    assert bar == [loss, d, w]


def test_the_list_sorts_by_a_column(page: Page) -> None:
    page.load_fen(TWO_KNIGHTS)
    header = page.driver.find_element("css selector", '#move-table th[data-sort="win"]')
    header.click()  # the first click on a number column sorts it high to low
    wins = [float(r["win"]) for r in page.move_rows()]
    assert wins == sorted(wins, reverse=True)
    header.click()
    wins = [float(r["win"]) for r in page.move_rows()]
    assert wins == sorted(wins)
    page.driver.find_element("css selector", '#move-table th[data-sort="san"]').click()
    sans = [r["san"] for r in page.move_rows()]
    assert sans == sorted(sans)


def test_moving_a_piece_analyses_the_new_position(page: Page) -> None:
    before = page.attribute("view-analysis", "data-ready")
    page.click_square("analysis-board", "g1")
    page.click_square("analysis-board", "f3")
    page.wait_analysis(before)
    board = chess.Board()
    board.push_uci("g1f3")
    assert page.board_fen("analysis-board") == board.fen()
    assert {r["uci"] for r in page.move_rows()} == {m.uci() for m in board.legal_moves}
    assert page.driver.find_element("css selector", "#history .ply.current").text == "Nf3"


def test_a_mate_in_one_names_its_rule(page: Page) -> None:
    page.load_fen("6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1")
    rule = page.driver.find_element("id", "analysis-rule")
    assert rule.is_displayed() and rule.text.startswith("mate in 1: Ra8#")
    assert page.move_rows()[0]["cp"] == "#1"


def test_review_draws_one_point_per_position(page: Page) -> None:
    played = game(3)
    page.review(str(played))
    plies = len(list(played.mainline_moves()))
    points = page.graph_points()
    assert len(points) == plies + 1
    assert page.attribute("review-graph", "data-points") == str(plies + 1)
    assert points[-1] == 0.0  # White is mated
    marked = page.driver.find_elements("css selector", "#review-graph circle.point[class*='mark-']")
    rows = page.driver.find_elements("css selector", "#review-table tbody tr")
    assert len(marked) == len(rows) > 0
    rows[0].click()  # shows the position before the judged move, with the network's move and the move played
    assert len(page.arrows("review-board")) == 2


def test_bad_input_gets_a_message_in_the_page(page: Page) -> None:
    box = page.driver.find_element("id", "fen-input")
    box.clear()
    box.send_keys("not a fen")
    page.driver.find_element("id", "fen-load").click()
    error = page.driver.find_element("id", "analysis-error")
    page.wait.until(lambda d: error.is_displayed())
    assert error.text.startswith("invalid FEN")
    page.review("1. e4 e5 2. Ke3 *")
    assert "illegal move after 1. e4 e5" in page.driver.find_element("id", "review-error").text
    # A paste over the limit (made in the page: sending it through the driver is slow, and a
    # browser takes seconds to lay out 10 MB in a text box; the server's 413 is tested in test_web.py).
    page.driver.execute_script("document.getElementById('review-pgn').value = '1. e4 ' + 'x'.repeat(3 << 20);")
    page.driver.find_element("id", "review-run").click()
    error = page.driver.find_element("id", "review-error")
    page.wait.until(lambda d: "MB" in error.text)
    assert re.match(r"the PGN is 3\.0 MB; the server takes at most 1024 KiB", error.text)


def test_an_uploaded_pgn_is_reviewed_and_a_10_mb_file_refused(page: Page, tmp_path: Path) -> None:
    played = game(6)
    upload = tmp_path / "game.pgn"
    upload.write_text(str(played), encoding="utf-8")
    page.tab("review")
    page.driver.find_element("id", "review-file").send_keys(str(upload))
    page.wait.until(lambda d: d.find_element("id", "review-pgn").get_attribute("value").startswith("[Event"))
    page.driver.execute_script("document.getElementById('view-review').removeAttribute('data-review-ms')")
    page.driver.find_element("id", "review-run").click()
    page.wait.until(lambda d: page.attribute("view-review", "data-review-ms") is not None)
    assert len(page.graph_points()) == len(list(played.mainline_moves())) + 1
    huge = tmp_path / "huge.pgn"
    huge.write_bytes(b"1. e4 e5 " + b" " * (10 << 20))
    page.driver.find_element("id", "review-file").send_keys(str(huge))
    error = page.driver.find_element("id", "review-error")
    page.wait.until(lambda d: error.is_displayed())
    assert error.text == "huge.pgn is 10.0 MB; the server takes at most 1024 KiB"


def test_the_models_view_lists_the_shipped_model(page: Page) -> None:
    page.tab("models")
    rows = page.driver.find_elements("css selector", "#models-table tbody tr")
    assert [r.get_attribute("data-model") for r in rows] == ["shipped"]
    assert "neuralengine.safetensors" in rows[0].text and "1,511,296" in rows[0].text
