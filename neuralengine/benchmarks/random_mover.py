"""A UCI engine that plays a uniformly random legal move: the floor of every
strength ladder (``neuralengine match --random-mover``).

``python -m neuralengine.benchmarks.random_mover [--seed N]``. It needs only
python-chess, answers every command at once and never thinks. With a seed its
games are reproducible; without one each start draws a fresh seed.
"""

from __future__ import annotations

import argparse
import random
import sys

import chess

NAME = "random-mover"


def _position(tokens: list[str]) -> chess.Board | None:
    """The board of a ``position`` command, or None when it is malformed."""
    try:
        if tokens[:1] == ["startpos"]:
            board, rest = chess.Board(), tokens[1:]
        elif tokens[:1] == ["fen"]:
            end = tokens.index("moves") if "moves" in tokens else len(tokens)
            board, rest = chess.Board(" ".join(tokens[1:end])), tokens[end:]
        else:
            return None
        if rest[:1] == ["moves"]:
            for uci in rest[1:]:
                board.push_uci(uci)
        return board
    except (ValueError, IndexError):
        return None


def serve(lines: object, out: object, rng: random.Random) -> None:
    board = chess.Board()

    def say(text: str) -> None:
        out.write(text + "\n")  # type: ignore[attr-defined]
        out.flush()  # type: ignore[attr-defined]

    for raw in lines:  # type: ignore[attr-defined]
        tokens = raw.split()
        if not tokens:
            continue
        command = tokens[0]
        if command == "uci":
            say(f"id name {NAME}")
            say("id author neuralengine")
            say("uciok")
        elif command == "isready":
            say("readyok")
        elif command == "ucinewgame":
            board = chess.Board()
        elif command == "position":
            new = _position(tokens[1:])
            if new is None:
                say(f"info string bad position: {raw.strip()}")
            else:
                board = new
        elif command == "go":
            moves = sorted(board.legal_moves, key=lambda m: m.uci())
            say(f"bestmove {rng.choice(moves).uci() if moves else '0000'}")
        elif command == "quit":
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="random_mover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="seed of the move choice (default: a fresh one)")
    args = parser.parse_args(argv)
    serve(sys.stdin, sys.stdout, random.Random(args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
