"""Time limits of the real engine under load: late answers at a fixed ``movetime``, and flag falls in games.

While ``--load`` busy-loop processes keep CPU cores busy (one by default: a
second process competing with the engine), this script drives the real
``neuralengine`` executable over raw UCI pipes, as a GUI does, and times every
answer from the ``go`` line to the ``bestmove`` line as this process reads them:

1. **movetime**: ``go movetime M`` for each ``--movetime`` (50, 100 and 200 ms
   by default), ``--moves`` times each, in the positions of games the engine
   plays against itself from the built-in openings. An answer later than
   ``M + --grace`` (50 ms) is an *overrun*.
2. **games**: ``--games`` games at each ``--tc`` (1+0 and 3+0 by default)
   against the random mover (``--opponent self``: against itself), both
   clocks run as a GUI runs them. A clock below zero after a move is a *flag
   fall*; the game ends there.

For every answer it also records whether the move came from a full evaluation
(``info nodes`` = the legal moves) or from the engine's fallback. It prints a
table, and writes ``time_soak.json`` (every answer time, the machine, the
load average) and ``time_soak.png`` into ``--out``. It is a measurement, not a
test: the figures depend on the machine and on everything else running on it.

    python bench/time_soak.py                      # about 2 minutes: 30 answers per movetime, 2 games per tc
    python bench/time_soak.py --moves 200 --games 10 --load 2 --out soak-results
    python bench/time_soak.py --load 0             # the same without the busy loop, for comparison
    pytest bench -k time_soak                      # a few answers and one game
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import chess

from neuralengine.benchmarks.machine import run_record
from neuralengine.benchmarks.match import our_engine_command
from neuralengine.benchmarks.openings import Opening, load_openings
from neuralengine.benchmarks.runner import TimeControl
from neuralengine.paths import default_weights

#: Seconds to wait for any answer before the engine counts as hung.
HANG_SECONDS = 60.0


class UciProcess:
    """A UCI engine on raw pipes. A reader thread stamps every line with the time it was read."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.lines: queue.Queue[tuple[str, float] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((line.rstrip("\n"), time.monotonic()))
        self.lines.put(None)

    def send(self, line: str) -> float:
        """Write ``line``; the time just before it was written."""
        assert self.proc.stdin is not None
        sent = time.monotonic()
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return sent

    def until(self, prefix: str, timeout: float = HANG_SECONDS) -> list[tuple[str, float]]:
        """The lines up to and including the first that starts with ``prefix``."""
        got = []
        end = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(end - time.monotonic(), 0.001))
            except queue.Empty:
                raise RuntimeError(f"{self.command[0]}: no {prefix!r} within {timeout:.0f} s") from None
            if item is None:
                raise RuntimeError(f"{self.command[0]} exited (code {self.proc.poll()})")
            got.append(item)
            if item[0].startswith(prefix):
                return got

    def start(self, options: dict[str, str]) -> None:
        self.send("uci")
        self.until("uciok")
        for name, value in options.items():
            self.send(f"setoption name {name} value {value}")
        self.send("isready")
        self.until("readyok", timeout=300)  # the weights load

    def go(self, position: str, command: str) -> tuple[str, int, float]:
        """The move, ``info nodes`` of the last score line (0 without one) and the seconds from ``go`` to
        ``bestmove``."""
        self.send(position)
        sent = self.send(command)
        lines = self.until("bestmove")
        nodes = 0
        for text, _ in lines:
            words = text.split()
            if words[:1] == ["info"] and "nodes" in words:
                nodes = int(words[words.index("nodes") + 1])
        return lines[-1][0].split()[1], nodes, lines[-1][1] - sent

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def position_command(opening: Opening, board: chess.Board) -> str:
    moves = [m.uci() for m in board.move_stack]
    return f"position fen {opening.fen}" + (" moves " + " ".join(moves) if moves else "")


# --------------------------------------------------------------------------
# Fixed movetime
# --------------------------------------------------------------------------


@dataclass
class MovetimeRun:
    movetime_ms: int
    grace_ms: int
    #: Milliseconds from go to bestmove of every answer.
    answers_ms: list[float] = field(default_factory=list)
    #: Answers whose move came from a full evaluation of the legal moves.
    evaluated: int = 0

    @property
    def late(self) -> int:
        return sum(ms > self.movetime_ms + self.grace_ms for ms in self.answers_ms)

    def summary(self) -> dict[str, object]:
        answers = sorted(self.answers_ms)
        n = len(answers)
        return {"movetime_ms": self.movetime_ms, "answers": n, "late": self.late,
                "over_movetime": sum(ms > self.movetime_ms for ms in answers),
                "late_rate": self.late / n if n else None, "evaluated": self.evaluated,
                "median_ms": statistics.median(answers) if n else None,
                "p95_ms": answers[min(n - 1, int(0.95 * n))] if n else None, "max_ms": answers[-1] if n else None}


def run_movetime(engine: UciProcess, movetime_ms: int, count: int, grace_ms: int, openings: list[Opening],
                 max_plies: int) -> MovetimeRun:
    """``count`` answers to ``go movetime``, the engine playing on from each opening with its own moves."""
    run = MovetimeRun(movetime_ms, grace_ms)
    index = 0
    opening = openings[0]
    board = opening.board()
    for k in range(count):
        if board.is_game_over(claim_draw=True) or len(board.move_stack) >= max_plies:
            index += 1
            opening = openings[index % len(openings)]
            board = opening.board()
        legal = board.legal_moves.count()
        move, nodes, seconds = engine.go(position_command(opening, board), f"go movetime {movetime_ms}")
        run.answers_ms.append(round(1000 * seconds, 1))
        run.evaluated += nodes >= legal
        board.push_uci(move)
        if (k + 1) % 10 == 0 or k + 1 == count:
            progress(f"movetime {movetime_ms} ms: {k + 1}/{count} answers, {run.late} late")
    return run


# --------------------------------------------------------------------------
# Games
# --------------------------------------------------------------------------


@dataclass
class Game:
    tc: str
    ours_white: bool
    result: str = "*"
    reason: str = ""
    #: Who ran out of time: "ours", "opponent" or None.
    flag_fall: str | None = None
    #: For each of our moves: the clock before it and the think time, in ms.
    our_clock_ms: list[float] = field(default_factory=list)
    our_think_ms: list[float] = field(default_factory=list)
    evaluated: int = 0


def tc_name(tc: TimeControl) -> str:
    """``base+increment`` in seconds, as given on the command line (``1+0``)."""
    return f"{tc.base:g}+{tc.increment:g}"


def play_game(ours: UciProcess, theirs: UciProcess, tc: TimeControl, opening: Opening, ours_white: bool,
              max_plies: int) -> Game:
    game = Game(tc_name(tc), ours_white)
    board = opening.board()
    clocks = {chess.WHITE: tc.base, chess.BLACK: tc.base}
    our_colour = chess.WHITE if ours_white else chess.BLACK
    plies = 0
    while True:
        outcome = board.outcome(claim_draw=True)
        if outcome is not None:
            game.result, game.reason = outcome.result(), outcome.termination.name.lower()
            break
        if plies >= max_plies:
            game.reason = "maximum plies"
            break
        mover = board.turn
        engine = ours if mover == our_colour else theirs
        w, b = (max(1, int(1000 * clocks[c])) for c in (chess.WHITE, chess.BLACK))
        inc = int(1000 * tc.increment)
        legal = board.legal_moves.count()
        move, nodes, seconds = engine.go(position_command(opening, board),
                                         f"go wtime {w} btime {b} winc {inc} binc {inc}")
        if mover == our_colour:
            game.our_clock_ms.append(round(1000 * clocks[mover], 1))
            game.our_think_ms.append(round(1000 * seconds, 1))
            game.evaluated += nodes >= legal
        clocks[mover] -= seconds
        if clocks[mover] < 0:
            game.flag_fall = "ours" if mover == our_colour else "opponent"
            game.result = "0-1" if mover == chess.WHITE else "1-0"
            game.reason = "flag fall"
            break
        clocks[mover] += tc.increment
        board.push_uci(move)
        plies += 1
    return game


def game_summary(tc: str, games: list[Game]) -> dict[str, object]:
    think = [ms for g in games for ms in g.our_think_ms]
    moves = len(think)
    return {"tc": tc, "games": len(games), "our_moves": moves,
            "flag_falls_ours": sum(g.flag_fall == "ours" for g in games),
            "flag_falls_opponent": sum(g.flag_fall == "opponent" for g in games),
            "evaluated": sum(g.evaluated for g in games),
            "max_think_ms": max(think) if think else None,
            "min_clock_left_ms": min((c - t for g in games for c, t in zip(g.our_clock_ms, g.our_think_ms)),
                                     default=None),
            "results": [f"{g.result} ({g.reason})" for g in games]}


# --------------------------------------------------------------------------
# Load, output
# --------------------------------------------------------------------------


def start_load(count: int) -> list[subprocess.Popen]:
    """``count`` processes that spin on a core each until they are killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def progress(text: str) -> None:
    print(f"[time_soak] {text}", file=sys.stderr, flush=True)


def plot(report: dict, runs: list[MovetimeRun], games: list[Game], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for x, run in enumerate(runs):
        n = len(run.answers_ms)
        xs = [x + 0.3 * ((i % 7) / 6 - 0.5) for i in range(n)]
        left.scatter(xs, run.answers_ms, s=8, alpha=0.6, color="tab:blue")
        left.hlines([run.movetime_ms], x - 0.35, x + 0.35, color="grey", linewidth=1)
        left.hlines([run.movetime_ms + run.grace_ms], x - 0.35, x + 0.35, color="tab:red", linewidth=1)
        left.annotate(f"{run.late}/{n} late", (x, run.movetime_ms + run.grace_ms), textcoords="offset points",
                      xytext=(0, 4), ha="center", fontsize=8, color="tab:red")
    left.set_xticks(range(len(runs)))
    left.set_xticklabels([f"movetime {r.movetime_ms}" for r in runs])
    left.set_ylabel("go to bestmove (ms); red: movetime + grace")
    palette = ["tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:olive"]
    colours = {tc: palette[i % len(palette)] for i, tc in enumerate(dict.fromkeys(g.tc for g in games))}
    for game in games:
        right.plot(range(1, len(game.our_clock_ms) + 1), game.our_clock_ms, linewidth=1,
                   color=colours[game.tc], label=f"tc {game.tc}")
    handles, labels = right.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        right.legend(unique.values(), unique.keys(), fontsize=8)
    right.set_xlabel("our move")
    right.set_ylabel("our clock before the move (ms)")
    right.set_title(f"flag falls: ours {sum(g.flag_fall == 'ours' for g in games)}, "
                    f"opponent {sum(g.flag_fall == 'opponent' for g in games)}", fontsize=10)
    fig.suptitle(f"neuralengine time limits with {report['settings']['load']} busy-loop process(es), "
                 f"load average {report['loadavg_start'][0]:.1f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="weights file (default: the shipped model)")
    parser.add_argument("--engine-cmd", nargs="+", help="command that starts the engine "
                                                        "(default: this installation's neuralengine)")
    parser.add_argument("--movetime", type=int, nargs="+", default=[50, 100, 200], metavar="MS",
                        help="movetimes to measure (default 50 100 200)")
    parser.add_argument("--moves", type=int, default=30, help="answers per movetime (default 30)")
    parser.add_argument("--grace", type=int, default=50, metavar="MS",
                        help="an answer later than movetime + grace is an overrun (default 50)")
    parser.add_argument("--tc", nargs="+", default=["1+0", "3+0"],
                        help="time controls of the games, seconds base+increment (default 1+0 3+0)")
    parser.add_argument("--games", type=int, default=2,
                        help="games per time control, colours alternating (default 2)")
    parser.add_argument("--opponent", choices=("random", "self"), default="random",
                        help="the random mover (default) or a second engine process")
    parser.add_argument("--max-plies", type=int, default=300, help="plies after which a game is stopped (default 300)")
    parser.add_argument("--load", type=int, default=1, help="busy-loop processes running meanwhile (default 1)")
    parser.add_argument("--out", type=Path, default=Path("time_soak"),
                        help="folder of time_soak.json and time_soak.png (default ./time_soak)")
    args = parser.parse_args(argv)
    for text in args.tc:
        try:
            if TimeControl.parse(text).moves:
                parser.error(f"--tc {text}: moves per period are not supported; use base+increment")
        except ValueError as exc:
            parser.error(f"--tc {text}: {exc}")

    weights = Path(args.weights) if args.weights else default_weights()
    command = args.engine_cmd or our_engine_command()
    options = {"WeightsFile": str(weights.resolve())}
    opp_command = command if args.opponent == "self" else [sys.executable, "-m",
                                                            "neuralengine.benchmarks.random_mover", "--seed", "1"]
    openings = load_openings()
    args.out.mkdir(parents=True, exist_ok=True)
    ours = UciProcess(command)
    theirs = UciProcess(opp_command)
    load: list[subprocess.Popen] = []
    try:
        ours.start(options)
        theirs.start(options if args.opponent == "self" else {})
        load = start_load(args.load)
        loadavg_start = os.getloadavg()
        progress(f"{args.load} busy-loop process(es) started; load average {loadavg_start[0]:.1f}")
        started = time.monotonic()
        runs = [run_movetime(ours, ms, args.moves, args.grace, openings, 60) for ms in args.movetime]
        games: list[Game] = []
        for tc_text in args.tc:
            tc = TimeControl.parse(tc_text)
            for g in range(args.games):
                game = play_game(ours, theirs, tc, openings[g // 2 % len(openings)], g % 2 == 0, args.max_plies)
                games.append(game)
                progress(f"game {g + 1}/{args.games} at {tc_text}: {game.result} ({game.reason}), "
                         f"{len(game.our_think_ms)} moves, flag fall: {game.flag_fall or 'none'}")
        seconds = time.monotonic() - started
        loadavg_end = os.getloadavg()
    finally:
        stop_load(load)
        ours.close()
        theirs.close()

    answers = sum(len(r.answers_ms) for r in runs)
    late = sum(r.late for r in runs)
    report = {
        "settings": {"movetime_ms": args.movetime, "moves": args.moves, "grace_ms": args.grace, "tc": args.tc,
                     "games": args.games, "opponent": args.opponent, "load": args.load,
                     "max_plies": args.max_plies},
        "seconds": seconds,
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg_end,
        "niceness": os.nice(0),
        "overrun_rate": late / answers if answers else None,
        "late_answers": late,
        "answers": answers,
        "flag_falls_ours": sum(g.flag_fall == "ours" for g in games),
        "movetime": [r.summary() for r in runs],
        "games": [game_summary(name, [g for g in games if g.tc == name])
                  for name in dict.fromkeys(tc_name(TimeControl.parse(tc)) for tc in args.tc)],
        "answer_ms": {str(r.movetime_ms): r.answers_ms for r in runs},
        "game_records": [asdict(g) for g in games],
        "record": run_record(weights, engine_command=[Path(command[0]).name] + command[1:]),
    }
    (args.out / "time_soak.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    picture = plot(report, runs, games, args.out / "time_soak.png")

    print(f"{args.load} busy-loop process(es), load average {loadavg_start[0]:.1f} -> {loadavg_end[0]:.1f}, "
          f"{seconds:.0f} s")
    print(f"{'movetime':>9} {'answers':>7} {'over':>5} {'late':>5} {'rate':>6} {'median':>7} {'p95':>7} "
          f"{'max':>7} {'evaluated':>9}   (ms; over: past movetime; late: past movetime + {args.grace} ms)")
    for s in report["movetime"]:
        print(f"{s['movetime_ms']:>9} {s['answers']:>7} {s['over_movetime']:>5} {s['late']:>5} "
              f"{s['late_rate']:>6.1%} {s['median_ms']:>7.1f} {s['p95_ms']:>7.1f} {s['max_ms']:>7.1f} "
              f"{s['evaluated']:>9}")
    print(f"{'tc':>9} {'games':>7} {'moves':>7} {'flags (ours/opp)':>17} {'min clock left':>15} "
          f"{'max think':>10} {'evaluated':>9}")
    for s in report["games"]:
        left = "-" if s["min_clock_left_ms"] is None else f"{s['min_clock_left_ms']:.0f}"
        think = "-" if s["max_think_ms"] is None else f"{s['max_think_ms']:.0f}"
        print(f"{s['tc']:>9} {s['games']:>7} {s['our_moves']:>7} "
              f"{s['flag_falls_ours']:>8}/{s['flag_falls_opponent']:<8} {left:>15} {think:>10} {s['evaluated']:>9}")
    print(f"overrun rate {late}/{answers}" + (f" = {late / answers:.1%}" if answers else "")
          + f"; flag falls of the engine: {report['flag_falls_ours']} in {len(games)} games")
    print(f"results: {args.out / 'time_soak.json'}" + (f", plot: {picture}" if picture else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
