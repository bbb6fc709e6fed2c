"""What a move of the HTTP language-model player costs on this side of the wire.

The player scores every legal move in one request: one prompt per move, each
the whole game so far plus the move's text. This script plays a game with
the player (mode ``score``) against an endpoint and reports, per move: the
legal moves, the bytes of the scoring request, and the wall time of
``choose_move``. With no ``--url`` the endpoint is the tests' fake server in
this process (``tests/fake_llm.py``), so the time is the client's own work
(prompts, JSON, HTTP on the loopback, parsing) plus the fake's; with
``--url`` it is a real server's, model included.

    python bench/llm_http_overhead.py                       # 60 plies against the in-process fake
    python bench/llm_http_overhead.py --plies 120 --json
    python bench/llm_http_overhead.py --url http://127.0.0.1:8000/v1 --model gpt2-xl
    pytest bench -k llm_http                                 # a short game
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import chess

from neuralengine.progress import Progress
from neuralengine.textlm.http import HttpLlmPlayer, LlmSettings

TESTS = Path(__file__).resolve().parent.parent / "tests"


def measure(url: str | None, plies: int, model: str = "", seed: int = 1, progress: bool = True) -> dict[str, Any]:
    """Play ``plies`` plies (the player's move, or a random one every third ply, for variety) and time them."""
    with ExitStack() as stack:
        fake = None
        if url is None:
            if str(TESTS) not in sys.path:
                sys.path.insert(0, str(TESTS))
            from fake_llm import FakeLlm

            fake = stack.enter_context(FakeLlm())
            url = fake.url
        player = HttpLlmPlayer(url, LlmSettings(model=model or "bench", mode="score"), environ={})
        rng = random.Random(seed)
        board = chess.Board()
        rows = []
        bar = Progress("llm_http", plies, "plies", enabled=progress)
        for ply in range(plies):
            if board.is_game_over():
                break
            legal = board.legal_moves.count()
            before = len(fake.requests) if fake is not None else 0
            t0 = time.perf_counter()
            choice = player.choose_move(board)
            seconds = time.perf_counter() - t0
            sent = 0
            if fake is not None:
                sent = sum(len(json.dumps(r["json"])) for r in fake.requests[before:] if r["json"] is not None)
            rows.append({"ply": ply, "legal": legal, "request_bytes": sent, "ms": 1000 * seconds,
                         "scored": bool(choice.ranked)})
            move = choice.bestmove if ply % 3 else rng.choice(list(board.legal_moves))
            board.push(move)
            bar.update()
        bar.close()
    scored = [r for r in rows if r["scored"]]
    return {
        "endpoint": "in-process fake" if fake is not None else url,
        "plies": len(rows),
        "scored_moves": len(scored),
        "fallbacks": player.stats.fallbacks,
        "legal_moves_median": statistics.median(r["legal"] for r in rows) if rows else None,
        "ms_median": statistics.median(r["ms"] for r in scored) if scored else None,
        "ms_max": max((r["ms"] for r in scored), default=None),
        "request_kib_median": statistics.median(r["request_bytes"] for r in scored) / 1024 if scored else None,
        "request_kib_max": max((r["request_bytes"] for r in scored), default=0) / 1024,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an OpenAI-compatible API root that echoes prompt log-probabilities "
                                      "(default: the tests' fake server in this process)")
    parser.add_argument("--model", default="", help="the model name sent")
    parser.add_argument("--plies", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    figures = measure(args.url, args.plies, args.model, args.seed, progress=not args.quiet)
    if args.json:
        print(json.dumps({k: v for k, v in figures.items() if k != "rows"}, indent=2))
        return 0
    print(f"{figures['endpoint']}: {figures['plies']} plies, {figures['scored_moves']} scored, "
          f"{figures['fallbacks']} fallbacks")
    if figures["ms_median"] is not None:
        print(f"  median {figures['legal_moves_median']:.0f} legal moves; choose_move median "
              f"{figures['ms_median']:.1f} ms, max {figures['ms_max']:.1f} ms")
    if figures["request_kib_median"]:
        print(f"  scoring request median {figures['request_kib_median']:.1f} KiB, "
              f"max {figures['request_kib_max']:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
