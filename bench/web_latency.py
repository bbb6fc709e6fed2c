"""How fast ``neuralengine serve`` answers in a real browser, with the shipped model.

Two measurements, in headless Chromium (:mod:`neuralengine.web.browser`)
against the real ``neuralengine serve`` process:

* **click to answer**: in the Play view, the time from the click that
  completes a move to the engine's reply drawn on the board. The page
  measures it itself (``performance.now()`` at the click, again after the
  board is drawn: the ``data-answer-ms`` attribute), so WebDriver's own
  delays are not counted. The moves clicked are random legal moves (seeded).
* **game review**: a 60-move game (119 plies, 120 positions: the 10th game of
  the test sample ``tests/data/shared/tournament_logs/cutechess_match.pgn``),
  from the click on *Review* to the graph drawn (``data-review-ms``), and the
  server's own time for the request.

Beside them, the same requests without a browser (``POST /api/play``,
``POST /api/review`` with urllib) show what the page adds. It is a
measurement, not a test: the times depend on the machine and its load.

    python bench/web_latency.py                         # 40 moves, 5 reviews
    python bench/web_latency.py --moves 60 --reviews 5 --json docs/web_latency.json --plot docs/web_latency.png
    pytest bench -k web_latency                         # a short run
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import chess
import chess.pgn

REPO = Path(__file__).resolve().parent.parent
GAMES = REPO / "tests" / "data" / "shared" / "tournament_logs" / "cutechess_match.pgn"
#: The game reviewed: 60 moves (119 plies).
REVIEW_GAME = 10


def game_pgn(number: int) -> tuple[str, int]:
    """The PGN of the ``number``-th game of the sample, and its number of plies."""
    with open(GAMES, encoding="utf-8") as fh:
        for _ in range(number):
            game = chess.pgn.read_game(fh)
    assert game is not None
    return str(game), len(list(game.mainline_moves()))


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(values), "median": round(statistics.median(values), 1), "mean": round(statistics.fmean(values), 1),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1), "min": round(ordered[0], 1),
            "max": round(ordered[-1], 1)}


def post(url: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Milliseconds of one JSON request, and its answer."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as resp:
        data = json.load(resp)
    return (time.perf_counter() - start) * 1000, data


def measure(moves: int, reviews: int, seed: int) -> dict[str, Any]:
    from neuralengine.web.browser import Page, Server, chromium

    rng = random.Random(seed)
    pgn, plies = game_pgn(REVIEW_GAME)
    result: dict[str, Any] = {"review_plies": plies, "review_positions": plies + 1}
    with Server() as server:
        driver = chromium()
        try:
            page = Page(driver, server.url)
            page.open()
            clicks: list[float] = []
            page.new_game("w")
            while len(clicks) < moves:
                board = chess.Board(page.board_fen("play-board"))
                if board.is_game_over() or board.turn != chess.WHITE:
                    page.new_game("w")
                    continue
                move = rng.choice(sorted(board.legal_moves, key=lambda m: m.uci()))
                if move.promotion and move.promotion != chess.QUEEN:
                    continue  # the page promotes to its chosen piece (a queen)
                page.play(move.uci())
                clicks.append(float(page.attribute("view-play", "data-answer-ms") or "nan"))
            result["click_to_answer_ms"] = summary(clicks)
            result["click_to_answer_samples"] = [round(c, 1) for c in clicks]
            page_ms, server_ms = [], []
            for _ in range(reviews):
                page.review(pgn)
                page_ms.append(float(page.attribute("view-review", "data-review-ms") or "nan"))
                assert len(page.graph_points()) == plies + 1
                server_ms.append(float(page.attribute("view-review", "data-server-ms") or "nan"))
            result["review_page_ms"] = summary(page_ms)
            result["review_server_ms"] = summary(server_ms)
        finally:
            driver.quit()
        # The same work without a browser.
        http_play = [post(server.url + "api/play", {"moves": ["e2e4"]})[0] for _ in range(max(5, moves))]
        result["http_play_ms"] = summary(http_play)
        http_review = [post(server.url + "api/review", {"pgn": pgn})[0] for _ in range(reviews)]
        result["http_review_ms"] = summary(http_review)
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    """A histogram of the click-to-answer times, with the review times in its title (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("web_latency: matplotlib is not installed; no plot", file=sys.stderr)
        return
    samples = result["click_to_answer_samples"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist(samples, bins=30, color="#4a7bb0")
    median = result["click_to_answer_ms"]["median"]
    ax.axvline(median, color="#d1301f", linestyle="--", label=f"median {median:.0f} ms")
    ax.set_xlabel("ms from the click to the engine's answer on the board")
    ax.set_ylabel("moves")
    review = result["review_page_ms"]["median"] / 1000
    ax.set_title(f"neuralengine serve, shipped model, headless Chromium: {len(samples)} moves; "
                 f"review of {result['review_positions']} positions {review:.1f} s", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Click-to-answer and game-review times of neuralengine serve in "
                                                 "headless Chromium, with the shipped model.")
    parser.add_argument("--moves", type=int, default=40, help="moves clicked in the Play view (default 40)")
    parser.add_argument("--reviews", type=int, default=5, help="reviews of the 60-move game (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random moves clicked")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE ('-': print them as JSON)")
    parser.add_argument("--plot", metavar="PNG", help="also draw the click-to-answer times (needs matplotlib)")
    args = parser.parse_args(argv)
    try:
        result = measure(max(1, args.moves), max(1, args.reviews), args.seed)
    except RuntimeError as exc:
        print(f"web_latency: {exc}", file=sys.stderr)
        return 1
    if args.json == "-":
        print(json.dumps(result))
        return 0
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        plot(result, Path(args.plot))
    rows = [("click to the engine's answer on the board (page)", "click_to_answer_ms"),
            ("POST /api/play alone (no browser)", "http_play_ms"),
            (f"review of {result['review_plies']} plies: click to graph (page)", "review_page_ms"),
            ("  the server's time for it", "review_server_ms"),
            ("POST /api/review alone (no browser)", "http_review_ms")]
    print(f"{'':<52} {'n':>4} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}")
    for label, key in rows:
        s = result[key]
        print(f"{label:<52} {s['n']:>4} {s['median']:>10.1f} {s['p90']:>8.1f} {s['max']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
