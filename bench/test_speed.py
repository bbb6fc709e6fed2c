"""Speed benchmarks (pytest-benchmark): tokenization, one position's evaluation per backend and attention
layout, the engine's move choice, and a UCI round trip.

    pytest bench                                    # all of them
    pytest bench -k evaluate --benchmark-columns=median,ops
    NEURALENGINE_BENCH_PRESET=9M pytest bench -k "evaluate or engine_move"

The position is the suite's first middlegame position (``neuralengine bench``
times the whole suite).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import chess
import pytest

from neuralengine.benchmarks.speed import ALL_BACKENDS, available_backends
from neuralengine.benchmarks.suite import load_suite
from neuralengine.encoding import legal_actions, tokenize, tokenize_board
from neuralengine.engine import Engine

SUITE = load_suite()
FENS = [p.fen for p in SUITE]
POSITION = next(p.fen for p in SUITE if p.group == "middlegame")
AVAILABLE = available_backends()
ATTENTIONS = ("full", "shared_board")


def need(backend: str) -> None:
    if backend not in AVAILABLE:
        pytest.skip(f"backend {backend} is not available here")


def test_tokenize_suite(benchmark) -> None:  # type: ignore[no-untyped-def]
    tokens = benchmark(lambda: [tokenize(fen) for fen in FENS])
    assert len(tokens) == len(FENS)
    benchmark.extra_info["positions"] = len(FENS)


def test_legal_actions_suite(benchmark) -> None:  # type: ignore[no-untyped-def]
    boards = [chess.Board(fen) for fen in FENS]
    found = benchmark(lambda: [legal_actions(b) for b in boards])
    benchmark.extra_info["moves"] = sum(len(m) for m, _ in found)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_evaluate_one_position(benchmark, bench_models: dict[str, Path], backend: str,  # type: ignore[no-untyped-def]
                               attention: str) -> None:
    """One network call scoring every legal move of one position."""
    need(backend)
    from neuralengine.backends import create_backend

    model = create_backend(bench_models[attention], backend, threads=1)
    board = chess.Board(POSITION)
    moves, actions = legal_actions(board)
    tokens = tokenize_board(board)[None, :]
    acts = actions[None, :]
    model.evaluate(tokens, acts)  # warm-up
    out = benchmark(model.evaluate, tokens, acts)
    assert out.shape[:2] == (1, len(moves))
    benchmark.extra_info.update({"moves": len(moves), "parameters": model.config.num_parameters(),
                                 "layers": model.config.num_layers, "width": model.config.embed_dim,
                                 "device": model.device})


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_engine_move(benchmark, bench_models: dict[str, Path], backend: str,  # type: ignore[no-untyped-def]
                     attention: str) -> None:
    """The engine's whole move choice (what ``go`` costs without the protocol)."""
    need(backend)
    engine = Engine.open(bench_models[attention], backend, 1)
    board = chess.Board(POSITION)
    result = benchmark(engine.choose_move, board)
    assert result.bestmove in board.legal_moves
    benchmark.extra_info["nodes"] = result.nodes


def test_uci_round_trip(benchmark, bench_models: dict[str, Path], engine_command: list[str]) -> None:  # type: ignore[no-untyped-def]
    """``position`` + ``go`` to ``bestmove`` through the real executable's pipes (shared-board model)."""
    proc = subprocess.Popen(engine_command + ["uci", "--weights", str(bench_models["shared_board"])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdin is not None and proc.stdout is not None

    def ask(command: str, until: str) -> str:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        for line in proc.stdout:
            if line.startswith(until):
                return line.strip()
        raise RuntimeError(f"the engine closed its output before {until!r}")

    try:
        ask("uci", "uciok")
        ask("isready", "readyok")
        ask(f"position fen {POSITION}\ngo movetime 5000", "bestmove")  # warm-up
        line = benchmark(ask, f"position fen {POSITION}\ngo movetime 5000", "bestmove")
        move = chess.Move.from_uci(line.split()[1])
        assert move in chess.Board(POSITION).legal_moves
    finally:
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        proc.wait(timeout=30)


def test_uci_start_to_uciok(benchmark, engine_command: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Process start to ``uciok``: what a GUI waits for when it starts the engine (the weights load afterwards)."""

    def start() -> None:
        proc = subprocess.Popen(engine_command + ["uci"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write("uci\n")
            proc.stdin.flush()
            for line in proc.stdout:
                if line.startswith("uciok"):
                    return
            raise RuntimeError("the engine closed its output before uciok")
        finally:
            proc.kill()
            proc.wait(timeout=30)

    benchmark.pedantic(start, rounds=5, iterations=1)
