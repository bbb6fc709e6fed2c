"""Screenshots of ``neuralengine serve``'s three views, for the documentation.

Starts the server with the shipped model, drives the page in headless
Chromium (:mod:`neuralengine.web.browser`) and writes
``docs/web-analysis.png``, ``docs/web-play.png`` and ``docs/web-review.png``::

    python tools/web_screenshots.py            # into docs/
    python tools/web_screenshots.py --out shots    # into another folder
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from neuralengine.web.browser import Page, Server, chromium  # noqa: E402

#: The Two Knights Defence after 4. Ng5 (Black to move).
ANALYSIS_FEN = "r1bqkb1r/pppp1ppp/2n2n2/4p1N1/2B1P3/8/PPPP1PPP/RNBQK2R b KQkq - 5 4"
#: Games of Stockfish at UCI_Elo 1400 and 1700 (a sample of the tests); the 10th has 60 moves.
GAMES = REPO / "tests" / "data" / "shared" / "tournament_logs" / "cutechess_match.pgn"


def game_pgn(number: int, path: Path = GAMES) -> str:
    """The PGN text of the ``number``-th game (from 1) of ``path``."""
    import chess.pgn

    with open(path, encoding="utf-8") as fh:
        for _ in range(number):
            game = chess.pgn.read_game(fh)
    if game is None:
        raise ValueError(f"{path} has fewer than {number} games")
    return str(game)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder of the PNG files (default docs/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with Server() as server:
        driver = chromium(1280, 860)
        try:
            page = Page(driver, server.url)
            page.open()
            page.load_fen(ANALYSIS_FEN)
            driver.save_screenshot(str(args.out / "web-analysis.png"))
            page.new_game("w")
            for move in ("e2e4", "g1f3", "f1c4"):
                page.play(move)
            driver.save_screenshot(str(args.out / "web-play.png"))
            page.review(game_pgn(10))
            marked = driver.find_elements("css selector", "#review-table tbody tr")
            if marked:
                marked[0].click()
            driver.save_screenshot(str(args.out / "web-review.png"))
        finally:
            driver.quit()
    for name in ("web-analysis.png", "web-play.png", "web-review.png"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
