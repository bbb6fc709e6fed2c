"""Full games with the engine driven the way lichess-bot drives a UCI engine.

lichess-bot (``lib/engine_wrapper.py``) starts the engine from ``dir`` and
``name``, applies ``uci_options`` with ``configure``, sends the opponent's name
and rating, and then calls python-chess's ``play`` once per move:

* the first move of the game comes with a fixed ``movetime`` (10 s there,
  much shorter here);
* every later move with both clocks and increments, after it has taken
  ``move_overhead`` (and the time it spent itself) off the bot's own clock,
  and with no timeout of its own beyond python-chess's;
* with ``ponder`` on, python-chess sends ``go ponder`` after each move and
  then ``ponderhit`` or ``stop``;
* when tablebases offer several equally good moves, they come as
  ``searchmoves``;
* after each move it reads the ``score`` from the engine's info to decide
  whether to resign or to offer a draw.

The games are played to the end against Stockfish at its lowest skill, with a
tiny random model, and the engine's clock is kept in real time.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import chess
import chess.engine
import pytest
import yaml
from uci_pipe import Uci

REPO = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((REPO / "lichess_bot_config.yml").read_text(encoding="utf-8"))
LAUNCHER = REPO / "lichess" / "neuralengine-lichess"

#: lichess-bot's first-move limit is 10 s; the tests use less.
FIRST_MOVETIME = 0.3
#: python-chess's command timeout as lichess-bot sets it is 60 s; a hang shows sooner here.
ENGINE_TIMEOUT = 20.0
#: Games longer than this are cut (none comes near it against Stockfish).
MAX_PLIES = 500
#: The opponent: Stockfish at depth 1, weak, quick and repeatable.
OPPONENT_LIMIT = chess.engine.Limit(depth=1)


@dataclass
class Clock:
    """Both players' remaining time in seconds, as Lichess's game state reports it."""

    white: float
    black: float
    increment: float

    def left(self, color: chess.Color) -> float:
        return self.white if color == chess.WHITE else self.black

    def spend(self, color: chess.Color, seconds: float, started: bool) -> None:
        """Charge a move; Lichess starts the clocks only after each side's first move."""
        if not started:
            return
        if color == chess.WHITE:
            self.white += self.increment - seconds
        else:
            self.black += self.increment - seconds


@dataclass
class GameLog:
    """What happened in one game."""

    board: chess.Board
    results: list[chess.engine.PlayResult] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    clock_after: list[float] = field(default_factory=list)
    ponder_hits: int = 0
    ponder_misses: int = 0
    restricted: int = 0
    resigned: bool = False
    draw_offers: int = 0


class LichessBotDriver:
    """Our engine, driven as lichess-bot's engine wrapper drives any UCI engine."""

    def __init__(self, engine: chess.engine.SimpleEngine, ponder: bool) -> None:
        self.engine = engine
        self.ponder = ponder
        self.move_overhead = CONFIG.get("move_overhead", 1000) / 1000
        self.rules = CONFIG["engine"]["draw_or_resign"]
        self.scores: list[chess.engine.PovScore] = []
        self.limits: list[chess.engine.Limit] = []
        options = dict(CONFIG["engine"]["uci_options"])
        options.pop("go_commands", None)
        options["Seed"] = 1  # Not in the config (games should differ); here it makes the games repeatable.
        engine.configure(options)
        engine.send_opponent_information(
            opponent=chess.engine.Opponent(name="stockfish", title="BOT", rating=1500, is_engine=True),
            engine_rating=1500)

    def limit(self, board: chess.Board, clock: Clock, setup_time: float) -> tuple[chess.engine.Limit, bool]:
        """The search limit and whether pondering is allowed, as lichess-bot computes them."""
        if len(board.move_stack) < 2:
            return chess.engine.Limit(time=FIRST_MOVETIME), False
        times = {chess.WHITE: clock.white, chess.BLACK: clock.black}
        times[board.turn] = max(0.001, times[board.turn] - (setup_time + self.move_overhead))
        return chess.engine.Limit(white_clock=times[chess.WHITE], black_clock=times[chess.BLACK],
                                  white_inc=clock.increment, black_inc=clock.increment), self.ponder

    def play(self, board: chess.Board, clock: Clock,
             root_moves: list[chess.Move] | None = None) -> chess.engine.PlayResult:
        setup = time.monotonic()
        limit, can_ponder = self.limit(board, clock, time.monotonic() - setup)
        self.limits.append(limit)
        result = self.engine.play(board, limit, info=chess.engine.INFO_ALL, ponder=can_ponder,
                                  draw_offered=False, root_moves=root_moves)
        # lichess-bot counts a missing score as "mate in 1", which never resigns nor offers a draw.
        self.scores.append(result.info.get("score", chess.engine.PovScore(chess.engine.Mate(1), board.turn)))
        self.decide_draw_or_resign(result, board)
        return result

    def decide_draw_or_resign(self, result: chess.engine.PlayResult, board: chess.Board) -> None:
        """lichess-bot's rule: the last N scores, in cp with mates as +-40000, all past a threshold."""
        def cp(score: chess.engine.PovScore) -> int:
            return score.relative.score(mate_score=40000)

        rules = self.rules
        if (rules["offer_draw_enabled"] and len(self.scores) >= rules["offer_draw_moves"]
                and chess.popcount(board.occupied) <= rules["offer_draw_pieces"]
                and all(abs(cp(s)) <= rules["offer_draw_score"] for s in self.scores[-rules["offer_draw_moves"]:])):
            result.draw_offered = True
        if (rules["resign_enabled"] and len(self.scores) >= rules["resign_moves"]
                and all(cp(s) <= rules["resign_score"] for s in self.scores[-rules["resign_moves"]:])):
            result.resigned = True


@pytest.fixture
def bot_folder(tmp_path: Path) -> Path:
    """lichess-bot's folder with the launcher copied into ``engines/``, as the README says."""
    folder = tmp_path / "lichess-bot"
    (folder / "engines").mkdir(parents=True)
    shutil.copy2(LAUNCHER, folder / "engines" / LAUNCHER.name)
    return folder


@pytest.fixture
def launch(bot_folder: Path, tiny_weights: Path, engine_command: list[str]) -> Iterator[chess.engine.SimpleEngine]:
    """Start the engine exactly as lichess-bot does: ``dir``/``name``, its folder as cwd, own process group."""
    env = dict(os.environ, NEURALENGINE_WEIGHTS=str(tiny_weights))
    if len(engine_command) == 1:
        env["NEURALENGINE_COMMAND"] = engine_command[0]
    else:
        env["NEURALENGINE_PYTHON"] = sys.executable
    path = os.path.abspath(os.path.join(bot_folder, CONFIG["engine"]["dir"], CONFIG["engine"]["name"]))
    engine = chess.engine.SimpleEngine.popen_uci([path], timeout=ENGINE_TIMEOUT, setpgrp=True, cwd=bot_folder,
                                                 env=env)
    try:
        yield engine
    finally:
        engine.quit()


@pytest.fixture
def stockfish(stockfish_path: str) -> Iterator[chess.engine.SimpleEngine]:
    engine = chess.engine.SimpleEngine.popen_uci(stockfish_path)
    engine.configure({"Threads": 1, "Hash": 16})
    try:
        yield engine
    finally:
        engine.quit()


def play_game(bot: LichessBotDriver, stockfish: chess.engine.SimpleEngine, bot_color: chess.Color,
              clock: Clock, board: chess.Board | None = None, seed: int = 0,
              restrict_every: int = 0, cooperate_every: int = 0) -> GameLog:
    """Play one game to its end.

    ``restrict_every``: every so many bot moves, hand the engine a few allowed
    moves as ``searchmoves``, as tablebase suggestions do. ``cooperate_every``:
    every so many opponent moves, play the engine's ponder move, so that
    pondering ends in ``ponderhit`` rather than ``stop``.
    """
    rng = random.Random(seed)
    board = board or chess.Board()
    log = GameLog(board)
    expected_reply: chess.Move | None = None
    opponent_moves = 0
    while board.outcome(claim_draw=True) is None and len(board.move_stack) < MAX_PLIES:
        if board.turn == bot_color:
            legal = list(board.legal_moves)
            root_moves = None
            bot_moves = len(log.results)
            if restrict_every and bot_moves % restrict_every == restrict_every - 1 and len(legal) > 3:
                root_moves = rng.sample(legal, 3)
                log.restricted += 1
            started = len(board.move_stack) >= 2
            start = time.monotonic()
            result = bot.play(board, clock, root_moves)
            elapsed = time.monotonic() - start
            clock.spend(bot_color, elapsed, started)
            log.results.append(result)
            log.elapsed.append(elapsed)
            log.clock_after.append(clock.left(bot_color))
            assert result.move is not None and result.move in board.legal_moves, result
            if root_moves is not None:
                assert result.move in root_moves, f"{result.move} ignores searchmoves {root_moves}"
            log.draw_offers += bool(result.draw_offered)
            if result.resigned and len(board.move_stack) >= 2:
                log.resigned = True
                break
            board.push(result.move)
            expected_reply = result.ponder if bot.ponder else None
        else:
            opponent_moves += 1
            move = None
            if (cooperate_every and expected_reply is not None and expected_reply in board.legal_moves
                    and opponent_moves % cooperate_every == 0):
                move = expected_reply
            else:
                move = stockfish.play(board, OPPONENT_LIMIT).move
            assert move is not None
            if expected_reply is not None and len(board.move_stack) >= 2:
                if move == expected_reply:
                    log.ponder_hits += 1
                else:
                    log.ponder_misses += 1
            started = len(board.move_stack) >= 2
            clock.spend(not bot_color, 0.01, started)
            board.push(move)
    return log


def unevaluated(result: chess.engine.PlayResult) -> bool:
    """A move played without the network because not even one inference fitted the time left.

    The engine says so and reports no score; lichess-bot then records a
    neutral score that neither resigns nor offers a draw.
    """
    return result.info.get("nodes") == 0 and "without evaluation" in str(result.info.get("string", ""))


def check_game(log: GameLog) -> None:
    """What every game must show: an end, a score on every evaluated move, no flag."""
    assert log.resigned or log.board.outcome(claim_draw=True) is not None, "the game did not finish"
    assert log.results
    for result in log.results:
        score = result.info.get("score")
        if score is None and unevaluated(result):
            continue
        assert score is not None, f"no score in {result.info}"
        if score.relative.mate() is None:
            assert abs(score.relative.score()) <= 1505
        else:
            assert score.relative.mate() == 1  # The only mate the engine announces: the one it plays.
    assert min(log.clock_after) > 0, f"the engine lost on time: {log.clock_after}"


def assert_all_evaluated(log: GameLog) -> None:
    """With time to spare, every move comes from the network and carries a score."""
    assert not any(unevaluated(result) for result in log.results)
    assert all("score" in result.info for result in log.results)


@pytest.mark.slow
def test_full_game_as_white_without_ponder_with_searchmoves(launch: chess.engine.SimpleEngine,
                                                           stockfish: chess.engine.SimpleEngine) -> None:
    bot = LichessBotDriver(launch, ponder=False)
    log = play_game(bot, stockfish, chess.WHITE, Clock(60.0, 60.0, 1.0), restrict_every=4, seed=1)
    check_game(log)
    assert_all_evaluated(log)
    assert log.restricted >= 1


@pytest.mark.slow
def test_full_game_as_black_with_ponder(launch: chess.engine.SimpleEngine, stockfish: chess.engine.SimpleEngine,
                                        caplog: pytest.LogCaptureFixture) -> None:
    bot = LichessBotDriver(launch, ponder=True)
    with caplog.at_level(logging.DEBUG, logger="chess.engine"):
        log = play_game(bot, stockfish, chess.BLACK, Clock(60.0, 60.0, 1.0), cooperate_every=2, seed=2)
    check_game(log)
    assert_all_evaluated(log)
    # python-chess logs every line it sends to the engine as "<engine>: << line".
    sent = [message.split(": << ", 1)[1].strip() for message in (r.getMessage() for r in caplog.records)
            if ": << " in message]
    # The engine names a ponder move, python-chess ponders on it, and both endings of a ponder happen.
    assert sum(result.ponder is not None for result in log.results) >= len(log.results) // 2
    assert any(line.startswith("go ponder ") for line in sent), "no go ponder was sent"
    assert log.ponder_hits >= 1 and "ponderhit" in sent
    assert log.ponder_misses >= 1 and "stop" in sent


@pytest.mark.slow
def test_full_chess960_game(launch: chess.engine.SimpleEngine, stockfish: chess.engine.SimpleEngine) -> None:
    if "chess960" not in CONFIG["challenge"]["variants"]:
        pytest.skip("chess960 is not accepted by the config")
    bot = LichessBotDriver(launch, ponder=False)
    board = chess.Board.from_chess960_pos(random.Random(3).randrange(960))
    log = play_game(bot, stockfish, chess.WHITE, Clock(60.0, 60.0, 1.0), board=board, seed=3)
    check_game(log)
    assert_all_evaluated(log)


@pytest.mark.slow
def test_time_scramble_with_the_configured_overhead(launch: chess.engine.SimpleEngine,
                                                    stockfish: chess.engine.SimpleEngine) -> None:
    """Less on the clock than ``move_overhead``: lichess-bot hands the engine 1 ms, and it must still move in time."""
    bot = LichessBotDriver(launch, ponder=False)
    clock = Clock(bot.move_overhead * 0.8, 60.0, 0.5)
    log = play_game(bot, stockfish, chess.WHITE, clock, seed=4)
    check_game(log)
    assert any(limit.white_clock == 0.001 for limit in bot.limits), "the engine never saw lichess-bot's 1 ms floor"


def start_through_launcher(bot_folder: Path, tiny_weights: Path, engine_command: list[str]) -> Uci:
    """The engine on raw pipes, started through the launcher from lichess-bot's folder."""
    env = dict(os.environ, NEURALENGINE_WEIGHTS=str(tiny_weights))
    env.update({"NEURALENGINE_COMMAND": engine_command[0]} if len(engine_command) == 1
               else {"NEURALENGINE_PYTHON": sys.executable})
    path = bot_folder / CONFIG["engine"]["dir"] / CONFIG["engine"]["name"]
    return Uci([str(path)], env=env, cwd=bot_folder)


def send(raw: Uci, *lines: str) -> None:
    for line in lines:
        raw.send(line)


def quit_engine(raw: Uci) -> int:
    raw.send("quit")
    return raw.proc.wait(timeout=ENGINE_TIMEOUT)


@pytest.fixture
def raw(bot_folder: Path, tiny_weights: Path, engine_command: list[str]) -> Iterator[Uci]:
    engine = start_through_launcher(bot_folder, tiny_weights, engine_command)
    try:
        engine.send("uci")
        engine.until("uciok", timeout=ENGINE_TIMEOUT)
        yield engine
    finally:
        engine.kill()


@pytest.mark.parametrize("ending", ["ponderhit", "stop"])
def test_ponder_waits_for_ponderhit_or_stop(raw: Uci, ending: str) -> None:
    """On raw pipes: ``go ponder`` keeps its answer until the GUI ends the ponder, then reports a score."""
    send(raw, "setoption name Ponder value true", "ucinewgame", "isready")
    raw.until("readyok", timeout=ENGINE_TIMEOUT)
    send(raw, "position startpos moves e2e4 e7e5 g1f3", "go ponder wtime 30000 btime 30000 winc 1000 binc 1000")
    early = raw.quiet(0.5)
    assert not any(line.startswith("bestmove") for line in early), early
    raw.send(ending)
    lines = early + raw.until("bestmove", timeout=ENGINE_TIMEOUT)
    assert any(line.startswith("info") and " score " in line for line in lines), lines
    board = chess.Board()
    for uci in ("e2e4", "e7e5", "g1f3"):
        board.push_uci(uci)
    assert chess.Move.from_uci(lines[-1].split()[1]) in board.legal_moves
    assert quit_engine(raw) == 0


def test_first_move_limit_tiny_clock_and_searchmoves(raw: Uci) -> None:
    """``go movetime`` as for a first move, a clock down to lichess-bot's floor of 1 ms, and ``searchmoves``."""
    send(raw, "ucinewgame", "isready")
    raw.until("readyok", timeout=ENGINE_TIMEOUT)
    send(raw, "position startpos", f"go movetime {int(FIRST_MOVETIME * 1000)}")
    first = raw.until("bestmove", timeout=ENGINE_TIMEOUT)
    assert any(line.startswith("info") and " score " in line for line in first), first
    send(raw, "position startpos moves d2d4 d7d5", "go wtime 1 btime 60000 winc 0 binc 0")
    scramble = raw.until("bestmove", timeout=5.0)
    assert chess.Move.from_uci(scramble[-1].split()[1]) in chess.Board(
        "rnbqkbnr/ppp1pppp/8/3p4/3P4/8/PPP1PPPP/RNBQKBNR w KQkq - 0 2").legal_moves
    send(raw, "position startpos moves d2d4 d7d5 c2c4", "go wtime 60000 btime 60000 searchmoves e7e6 g8f6")
    only = raw.until("bestmove", timeout=5.0)
    assert only[-1].split()[1] in ("e7e6", "g8f6"), only
    assert any(line.startswith("info") and " score " in line for line in only), only
    assert quit_engine(raw) == 0
