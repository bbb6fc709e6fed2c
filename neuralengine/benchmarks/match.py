"""``neuralengine match``: play the engine against opponents and rate it.

It drives cutechess-cli or fastchess when one is installed (found on PATH, or
given with ``--cutechess PATH``/``--fastchess PATH``), and otherwise plays the
same schedule with the built-in python-chess runner
(:mod:`neuralengine.benchmarks.runner`). The schedule is a gauntlet: our
engine against each opponent, every opening once with each colour.

Opponents: Stockfish at ``UCI_Elo`` levels (``--stockfish-elo 1500 1800``),
at ``Skill Level`` levels (``--stockfish-skill 3``), or any UCI command
(``--opponent NAME=COMMAND``).

Whatever plays the games, the results are computed here from the games
themselves (:mod:`neuralengine.benchmarks.elo`): Elo with a 95 % interval
(trinomial, and pentanomial from the colour-swapped pairs), LOS, draw ratio,
optionally an SPRT, soak figures (illegal moves, time forfeits, crashes,
the engine's peak memory) and every engine's losses on time. The output folder gets ``match.json``, a plot of
Elo against each opponent, the PGN and, for the external tools, their log.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from neuralengine.benchmarks import elo as elo_maths
from neuralengine.benchmarks.machine import cmdline, descendants, peak_memory_kib, plays_text_model, run_record
from neuralengine.benchmarks.openings import (
    BUILTIN_OPENINGS,
    BUILTIN_PGN_OPENINGS,
    OpeningsError,
    detect_format,
    load_openings,
)
from neuralengine.benchmarks.parsers import GameRecord, LogParser, head_to_head
from neuralengine import paths
from neuralengine.benchmarks.runner import Adjudication, EngineSpec, RunnerError, TimeControl

TOOLS = ("auto", "cutechess", "fastchess", "builtin")
#: Executable names looked up on PATH.
TOOL_EXECUTABLES = {"cutechess": ("cutechess-cli", "cutechess"), "fastchess": ("fastchess",)}


def our_engine_command() -> list[str]:
    """How to start this package's UCI engine: the ``neuralengine`` script next to Python, or ``python -m``."""
    folder = os.path.dirname(sys.executable)
    for name in ("neuralengine", "neuralengine.exe"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return [candidate]
    return [sys.executable, "-m", "neuralengine"]


def find_tool(tool: str, explicit: str | None = None) -> str | None:
    """Path of cutechess-cli or fastchess: ``explicit`` when given, else PATH."""
    if explicit:
        return explicit if (os.path.isfile(explicit) or shutil.which(explicit)) else None
    for name in TOOL_EXECUTABLES[tool]:
        found = shutil.which(name)
        if found:
            return found
    return None


# --------------------------------------------------------------------------
# Settings and command lines
# --------------------------------------------------------------------------


@dataclass
class Sprt:
    elo0: float = 0.0
    elo1: float = 10.0
    alpha: float = 0.05
    beta: float = 0.05
    model: str = "normalized"


@dataclass
class MatchSettings:
    """Everything that defines a match, shared by the tools and the built-in runner."""

    tc: TimeControl
    rounds: int
    concurrency: int = 1
    openings: Path = BUILTIN_OPENINGS
    openings_order: str = "sequential"
    plies: int | None = None
    seed: int = 1
    pgn_out: Path | None = None
    sprt: Sprt | None = None
    adjudication: Adjudication = field(default_factory=Adjudication)
    time_margin: float = 0.05
    rating_interval: int = 10

    @property
    def games_per_opponent(self) -> int:
        return 2 * self.rounds


def _engine_args(spec: EngineSpec, tool: str) -> list[str]:
    args = ["-engine", f"name={spec.name}", f"cmd={spec.command[0]}"]
    if len(spec.command) > 1:
        if tool == "cutechess":
            args += [f"arg={a}" for a in spec.command[1:]]
        else:
            args.append(f"args={shlex.join(spec.command[1:])}")
    args += [f"option.{name}={value}" for name, value in spec.options.items()]
    return args


def build_command(tool: str, executable: str, engines: Sequence[EngineSpec], s: MatchSettings) -> list[str]:
    """The cutechess-cli or fastchess command line for a gauntlet of ``engines[0]`` against the rest."""
    if tool not in ("cutechess", "fastchess"):
        raise ValueError(f"no command line for tool {tool!r}")
    if len(engines) < 2:
        raise ValueError("a match needs at least two engines")
    cmd = [executable]
    for spec in engines:
        cmd += _engine_args(spec, tool)
    cmd += ["-each", "proto=uci", f"tc={s.tc}", f"timemargin={int(round(s.time_margin * 1000))}"]
    if len(engines) > 2:
        cmd += ["-tournament", "gauntlet"]
        if tool == "fastchess":
            cmd += ["-seeds", "1"]
    fmt = detect_format(s.openings)
    openings = ["-openings", f"file={s.openings}", f"format={fmt}", f"order={s.openings_order}"]
    if fmt == "pgn" and s.plies is not None:
        openings.append(f"plies={s.plies}")
    cmd += openings
    if s.openings_order == "random":
        cmd += ["-srand", str(s.seed)]
    cmd += ["-games", "2", "-rounds", str(s.rounds), "-repeat", "-concurrency", str(s.concurrency), "-recover"]
    if s.pgn_out is not None:
        cmd += ["-pgnout", str(s.pgn_out)] if tool == "cutechess" else ["-pgnout", f"file={s.pgn_out}"]
    if s.sprt is not None:
        if len(engines) != 2:
            raise ValueError("an SPRT needs exactly one opponent")
        sprt = ["-sprt", f"elo0={s.sprt.elo0:g}", f"elo1={s.sprt.elo1:g}", f"alpha={s.sprt.alpha:g}",
                f"beta={s.sprt.beta:g}"]
        if tool == "fastchess":
            sprt.append(f"model={s.sprt.model}")
        cmd += sprt
    a = s.adjudication
    if a.source != "engines" and a.needs_scores():
        raise ValueError(f"{tool} adjudicates on the engines' own scores; a Stockfish referee needs the built-in runner")
    if a.resign_score is not None:
        cmd += ["-resign", f"movecount={a.resign_moves}", f"score={a.resign_score}"]
    if a.draw_score is not None:
        cmd += ["-draw", f"movenumber={a.draw_after}", f"movecount={a.draw_moves}", f"score={a.draw_score}"]
    if a.max_moves is not None:
        cmd += ["-maxmoves", str(a.max_moves)]
    cmd += ["-ratinginterval", str(s.rating_interval)]
    return cmd


# --------------------------------------------------------------------------
# Running an external tool
# --------------------------------------------------------------------------


class MemoryWatcher(threading.Thread):
    """Polls the peak resident memory (VmHWM) of a tool's child processes that run ``command``."""

    def __init__(self, root_pid: int, command: Sequence[str], interval: float = 1.0) -> None:
        super().__init__(name="memory-watcher", daemon=True)
        self.root_pid = root_pid
        self.command = list(command)
        self.interval = interval
        self.peak_kib: int | None = None
        self.processes: set[int] = set()
        self._stop = threading.Event()

    def sample(self) -> None:
        for pid in descendants(self.root_pid):
            args = cmdline(pid)
            if args and all(part in args for part in self.command):
                self.processes.add(pid)
                kib = peak_memory_kib(pid)
                if kib is not None and (self.peak_kib is None or kib > self.peak_kib):
                    self.peak_kib = kib

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()


def run_tool(cmd: list[str], log_path: Path, ours: str, total: int, watch: Sequence[str],
             quiet: bool = False) -> tuple[list[GameRecord], Any, int | None, int]:
    """Run cutechess-cli/fastchess, save its output, parse it as it comes; returns games, log, peak KiB, exit code."""
    from neuralengine.progress import Progress

    parser = LogParser()
    bar = Progress("match", total, "games", enabled=not quiet)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log_file:
        try:
            # In the output folder: fastchess saves its resumable state (config.json) in its working folder.
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", bufsize=1, cwd=log_path.parent)
        except OSError as exc:
            raise RunnerError(f"cannot run {cmd[0]}: {exc}") from None
        watcher = MemoryWatcher(proc.pid, watch)
        watcher.start()
        wins = draws = losses = 0
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log_file.write(line)
                game = parser.feed(line)
                if game is not None:
                    pts = game.points(ours)
                    wins += pts == 1.0
                    draws += pts == 0.5
                    losses += pts == 0.0
                    bar.update(postfix=f"{ours} +{wins} ={draws} -{losses}")
        except KeyboardInterrupt:
            proc.terminate()
        finally:
            code = proc.wait()
            watcher.sample()
            watcher.stop()
            bar.close()
    return parser.log.games, parser.log, watcher.peak_kib, code


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


def classify(reason: str) -> str | None:
    """Soak category of a game-ending reason: ``time forfeit``, ``illegal move``, ``crash`` or None."""
    text = reason.lower()
    if "on time" in text or "time forfeit" in text or "timeout" in text:
        return "time forfeit"
    if "illegal" in text:
        return "illegal move"
    if any(word in text for word in ("disconnect", "stalls", "crash", "terminat", "connection")):
        return "crash"
    return None


def soak_figures(games: Sequence[GameRecord], ours: str) -> dict[str, int]:
    """Illegal moves, time forfeits and crashes of ``ours``, counted from the games it lost."""
    out = {"illegal_moves": 0, "time_forfeits": 0, "crashes": 0}
    key = {"time forfeit": "time_forfeits", "illegal move": "illegal_moves", "crash": "crashes"}
    for g in games:
        if g.loser() == ours:
            category = classify(g.reason)
            if category:
                out[key[category]] += 1
    return out


def time_losses(games: Sequence[GameRecord], names: Sequence[str]) -> dict[str, int]:
    """Games each engine of ``names`` lost on time (0 for an engine that never did), from the end reasons."""
    out = {name: 0 for name in names}
    for g in games:
        loser = g.loser()
        if loser is not None and classify(g.reason) == "time forfeit":
            out[loser] = out.get(loser, 0) + 1
    return out


def summarise(games: Sequence[GameRecord], ours: str, opponents: Sequence[EngineSpec], ratings: dict[str, float],
              sprt: Sprt | None = None) -> list[dict[str, Any]]:
    table = head_to_head(games, ours)
    rows = []
    for opp in opponents:
        h = table.get(opp.name)
        wins, draws, losses = (h.wins, h.draws, h.losses) if h else (0, 0, 0)
        penta = h.pentanomial if h else [0] * 5
        tri = elo_maths.trinomial(wins, draws, losses)
        pen = elo_maths.pentanomial(penta)
        row: dict[str, Any] = {
            "opponent": opp.name,
            "command": opp.command,
            "options": opp.options,
            "opponent_rating": ratings.get(opp.name),
            "games": wins + draws + losses,
            "wins": wins, "draws": draws, "losses": losses,
            "trinomial": tri.to_dict(),
            "pentanomial": pen.to_dict(),
        }
        best = pen if sum(penta) >= 2 else tri
        row["elo"], row["elo_lower"], row["elo_upper"] = best.elo, best.lower, best.upper
        row["elo_model"] = best.model
        if opp.name in ratings and math.isfinite(best.elo):
            row["implied_rating"] = ratings[opp.name] + best.elo
        if sprt is not None and wins + draws + losses > 0:
            counts = penta if sum(penta) > 0 else [losses, draws, wins]
            row["sprt"] = elo_maths.sprt(counts, sprt.elo0, sprt.elo1, sprt.alpha, sprt.beta, sprt.model).to_dict()
        rows.append(row)
    return rows


def plot_elo(rows: Sequence[dict[str, Any]], ours: str, title: str, path: Path) -> Path | None:
    """Bar-free plot: Elo difference against each opponent with its 95 % interval."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(rows) + 2), 4.0))
    xs = range(len(rows))
    for x, row in zip(xs, rows):
        elo = row["elo"]
        label = f"+{row['wins']} ={row['draws']} -{row['losses']}"
        if not math.isfinite(elo):
            text = "no games" if math.isnan(elo) else f"Elo {elo_maths.format_elo(elo)}"
            ax.annotate(f"{label}\n{text}", (x, 0), ha="center", fontsize=8)
            continue
        lo, hi = row["elo_lower"], row["elo_upper"]
        err = [[elo - lo if math.isfinite(lo) else 0.0], [hi - elo if math.isfinite(hi) else 0.0]]
        ax.errorbar([x], [elo], yerr=err, fmt="o", capsize=6, color="tab:blue")
        if not (math.isfinite(lo) and math.isfinite(hi)):
            ax.annotate("interval open", (x, elo), textcoords="offset points", xytext=(8, -12), fontsize=8)
        if row.get("implied_rating") is not None:
            label += f"\n≈ {row['implied_rating']:.0f}"
        ax.annotate(label, (x, elo), textcoords="offset points", xytext=(8, 4), fontsize=8)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    if not any(math.isfinite(r["elo"]) for r in rows):
        ax.set_ylim(-400, 400)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["opponent"] for r in rows])
    ax.set_xlim(-0.5, len(rows) - 0.3)
    ax.set_ylabel("Elo difference (95 % interval)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_summary(report: dict[str, Any]) -> str:
    lines = [f"{report['engine']['name']} ({report['tool']}, tc {report['settings']['tc']}, "
             f"{report['games_played']} games in {report['seconds']:.0f} s)"]
    for row in report["opponents"]:
        tri, pen = row["trinomial"], row["pentanomial"]

        def elo_text(e: dict[str, Any]) -> str:
            return f"{elo_maths.format_elo(e['elo'])} ± {elo_maths.format_error(e['error'])}"

        score = tri["score"]
        text = (f"  vs {row['opponent']:<12} {row['games']:>4} games  +{row['wins']} ={row['draws']} "
                f"-{row['losses']}  score {100 * score:.1f} %" if not math.isnan(score) else
                f"  vs {row['opponent']:<12} no games")
        if not math.isnan(score):
            text += (f"  Elo {elo_text(tri)} (LOS {100 * tri['los']:.1f} %, draws {100 * tri['draw_ratio']:.0f} %)"
                     f"  pairs {pen['counts']} Elo {elo_text(pen)}")
            if row.get("implied_rating") is not None:
                text += f"  => rating ~{row['implied_rating']:.0f}"
        lines.append(text)
        if row.get("sprt"):
            s = row["sprt"]
            lines.append(f"     SPRT [{s['elo0']:g}, {s['elo1']:g}] LLR {s['llr']:.2f} "
                         f"({s['lower']:.2f}, {s['upper']:.2f}) -> {s['verdict']}")
    soak = report["soak"]
    mem = soak.get("peak_memory_mib")
    lines.append(f"  reliability of {report['engine']['name']}: {soak['illegal_moves']} illegal moves, "
                 f"{soak['time_forfeits']} time forfeits, {soak['crashes']} crashes"
                 + (f", peak memory {mem:.0f} MiB" if mem else ""))
    losses = report.get("time_losses") or {}
    if losses:
        lines.append("  losses on time: " + ", ".join(f"{name} {count}" for name, count in losses.items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _name_value(text: str, what: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"{what} {text!r} must look like Name=Value")
    name, value = text.split("=", 1)
    if not name.strip():
        raise ValueError(f"{what} {text!r} has no name")
    return name.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neuralengine match",
        description="Play neuralengine against opponents with cutechess-cli, fastchess or the built-in runner, "
                    "and report Elo with 95 % intervals.")
    g = p.add_argument_group("our engine")
    g.add_argument("--weights", help="weights file, DeepMind checkpoint folder or downloaded model name such as 9M (sets the WeightsFile option; default: the shipped model)")
    g.add_argument("--engine-cmd", help="command that starts our engine (default: this installation's neuralengine)")
    g.add_argument("--name", default="neuralengine", help="our engine's name in the results (default neuralengine)")
    g.add_argument("--engine-option", action="append", default=[], metavar="NAME=VALUE",
                   help="UCI option of our engine (repeatable), e.g. Backend=onnx Threads=1")
    g = p.add_argument_group("opponents")
    g.add_argument("--stockfish", help="Stockfish executable (default: stockfish on PATH)")
    g.add_argument("--stockfish-elo", type=int, nargs="+", default=[], metavar="ELO",
                   help="Stockfish opponents limited with UCI_LimitStrength/UCI_Elo")
    g.add_argument("--stockfish-skill", type=int, nargs="+", default=[], metavar="LEVEL",
                   help="Stockfish opponents at these Skill Level values (0-20)")
    g.add_argument("--stockfish-option", action="append", default=[], metavar="NAME=VALUE",
                   help="option for every Stockfish opponent (default Threads=1, Hash=16)")
    g.add_argument("--random-mover", action="store_true",
                   help="a UCI engine that plays uniformly random legal moves (python -m "
                        "neuralengine.benchmarks.random_mover)")
    g.add_argument("--opponent", action="append", default=[], metavar="NAME=COMMAND",
                   help="any UCI engine: a name and the command that starts it (repeatable)")
    g = p.add_argument_group("games")
    g.add_argument("--tc", default="10+0.1", help="time control, seconds: [moves/]base[+inc] (default 10+0.1)")
    g.add_argument("--games", type=int, default=20, help="games per opponent, rounded up to pairs (default 20)")
    g.add_argument("--rounds", type=int, help="openings per opponent, each played with both colours "
                                              "(overrides --games)")
    g.add_argument("--concurrency", type=int, default=1, help="games played at once (default 1)")
    g.add_argument("--openings", help="EPD or PGN file of openings (default: the built-in balanced set)")
    g.add_argument("--openings-order", choices=("sequential", "random"), default="sequential")
    g.add_argument("--plies", type=int, help="half-moves to take from each PGN opening")
    g.add_argument("--seed", type=int, default=1, help="seed of the random opening order")
    g = p.add_argument_group("adjudication")
    g.add_argument("--resign-score", type=int, metavar="CP", help="resign at this many centipawns behind")
    g.add_argument("--resign-moves", type=int, default=3, help="... for this many own moves in a row (default 3)")
    g.add_argument("--draw-score", type=int, metavar="CP", help="adjudicate a draw within ±CP ...")
    g.add_argument("--draw-moves", type=int, default=8, help="... for this many moves of each side (default 8)")
    g.add_argument("--draw-after", type=int, default=34, help="... from this full move on (default 34)")
    g.add_argument("--max-moves", type=int, help="draw a game still running after this many full moves")
    g.add_argument("--adjudicate-with", choices=("engines", "stockfish"), default="engines",
                   help="scores from the engines' own reports, or from a Stockfish referee (built-in runner)")
    g.add_argument("--referee-time", type=float, default=0.01,
                   help="seconds the Stockfish referee searches per move (default 0.01)")
    g = p.add_argument_group("SPRT (one opponent)")
    g.add_argument("--sprt", action="store_true", help="stop when an SPRT decides")
    g.add_argument("--elo0", type=float, default=0.0)
    g.add_argument("--elo1", type=float, default=10.0)
    g.add_argument("--alpha", type=float, default=0.05)
    g.add_argument("--beta", type=float, default=0.05)
    g.add_argument("--sprt-model", choices=elo_maths.SPRT_MODELS, default="normalized",
                   help="Elo model of elo0/elo1 (default normalized, as fastchess)")
    g = p.add_argument_group("tool and output")
    g.add_argument("--tool", choices=TOOLS, default="auto",
                   help="auto: cutechess-cli, else fastchess, else the built-in runner")
    g.add_argument("--cutechess", metavar="PATH", help="cutechess-cli executable")
    g.add_argument("--fastchess", metavar="PATH", help="fastchess executable")
    g.add_argument("--time-margin", type=float, default=0.05,
                   help="seconds an engine may overstep its clock before it forfeits (default 0.05)")
    g.add_argument("--out", help="output folder (default matches/DATE-TIME)")
    g.add_argument("--pgn", help="PGN file of the games (default OUT/games.pgn)")
    g.add_argument("--dry-run", action="store_true", help="print the tool's command line and stop")
    g.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def absolute_command(command: list[str]) -> list[str]:
    """``command`` with a relative program path made absolute (the tools run in the output folder)."""
    if command and os.sep in command[0] and not os.path.isabs(command[0]) and os.path.exists(command[0]):
        return [os.path.abspath(command[0])] + command[1:]
    return command


def _engines(args: argparse.Namespace) -> tuple[EngineSpec, list[EngineSpec], dict[str, float]]:
    cmd = absolute_command(shlex.split(args.engine_cmd)) if args.engine_cmd else our_engine_command()
    options = dict(_name_value(o, "--engine-option") for o in args.engine_option)
    if args.weights:
        from neuralengine.deepmind import resolve_weights
        from neuralengine.weights import WeightsError

        try:
            weights = resolve_weights(args.weights)  # a released model's name, a checkpoint folder or a file
        except WeightsError as exc:
            raise ValueError(str(exc)) from None
        if not weights.is_file():
            raise ValueError(f"weights file not found: {weights}")
        options.setdefault("WeightsFile", str(weights.resolve()))
    ours = EngineSpec(args.name, cmd, options)
    opponents: list[EngineSpec] = []
    ratings: dict[str, float] = {}
    if args.stockfish_elo or args.stockfish_skill:
        stockfish = paths.find_stockfish(args.stockfish)
        if stockfish is None:
            where = f" at {args.stockfish}" if args.stockfish else ""
            raise ValueError(f"Stockfish not found{where}: install it or pass --stockfish PATH")
        sf_options = {"Threads": "1", "Hash": "16"}
        sf_options.update(dict(_name_value(o, "--stockfish-option") for o in args.stockfish_option))
        for level in args.stockfish_elo:
            opponents.append(EngineSpec(f"sf{level}", [stockfish], {
                **sf_options, "UCI_LimitStrength": "true", "UCI_Elo": str(level)}))
            ratings[f"sf{level}"] = float(level)
        for level in args.stockfish_skill:
            if not 0 <= level <= 20:
                raise ValueError(f"Stockfish Skill Level goes from 0 to 20, not {level}")
            opponents.append(EngineSpec(f"sfskill{level}", [stockfish], {**sf_options, "Skill Level": str(level)}))
    if args.random_mover:
        opponents.append(EngineSpec("random", [sys.executable, "-m", "neuralengine.benchmarks.random_mover"]))
    for text in args.opponent:
        name, command = _name_value(text, "--opponent")
        parts = shlex.split(command)
        if not parts:
            raise ValueError(f"--opponent {text!r} has no command")
        opponents.append(EngineSpec(name, absolute_command(parts)))
    names = [ours.name] + [o.name for o in opponents]
    if len(set(names)) != len(names):
        raise ValueError(f"engine names must differ: {names}")
    if not opponents:
        raise ValueError("no opponent: use --stockfish-elo, --stockfish-skill, --random-mover or --opponent")
    return ours, opponents, ratings


def _settings(args: argparse.Namespace, out: Path, text_model: bool = False,
              report: Callable[[str], None] = lambda _: None) -> MatchSettings:
    """The match settings; ``text_model``: our engine reads games (``pgn_lm``), so the built-in openings are
    played from the initial position (:data:`BUILTIN_PGN_OPENINGS`), and an EPD file is warned about."""
    tc = TimeControl.parse(args.tc)
    rounds = args.rounds if args.rounds is not None else (args.games + 1) // 2
    if rounds < 1 or args.concurrency < 1:
        raise ValueError("--games/--rounds and --concurrency must be positive")
    openings = Path(args.openings).resolve() if args.openings else BUILTIN_OPENINGS
    if text_model and not args.openings:
        openings = BUILTIN_PGN_OPENINGS
        report(f"a text model reads the game: the built-in openings are played from the initial position "
               f"({openings.name})")
    elif text_model and detect_format(openings) == "epd":
        report(f"warning: {openings.name} sets up positions from FENs, which a text model cannot read (it plays "
               "them with its fallback model); use PGN openings")
    load_openings(openings, args.plies)  # fail early on a bad file
    sprt = None
    if args.sprt:
        elo_maths.sprt_bounds(args.alpha, args.beta)
        if args.elo0 >= args.elo1:
            raise ValueError("--elo0 must be below --elo1")
        sprt = Sprt(args.elo0, args.elo1, args.alpha, args.beta, args.sprt_model)
    referee = None
    if args.adjudicate_with == "stockfish":
        stockfish = paths.find_stockfish(args.stockfish)
        if stockfish is None:
            missing = f" (not found: {args.stockfish})" if args.stockfish else ""
            raise ValueError(f"adjudication with Stockfish needs Stockfish{missing}: pass --stockfish PATH")
        referee = [stockfish]
    adjudication = Adjudication(args.resign_score, args.resign_moves, args.draw_score, args.draw_moves,
                                args.draw_after, args.max_moves, args.adjudicate_with, referee, args.referee_time)
    pgn = Path(args.pgn).resolve() if args.pgn else (out / "games.pgn").resolve()
    return MatchSettings(tc, rounds, args.concurrency, openings, args.openings_order, args.plies, args.seed, pgn,
                         sprt, adjudication, args.time_margin)


def _choose_tool(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.tool == "builtin":
        return "builtin", None
    order = [args.tool] if args.tool != "auto" else ["cutechess", "fastchess"]
    for tool in order:
        path = find_tool(tool, getattr(args, tool))
        if path:
            return tool, os.path.abspath(path) if os.path.exists(path) else path
    if args.tool != "auto":
        raise ValueError(f"{args.tool} not found: put it on PATH or pass --{args.tool} PATH")
    return "builtin", None


def quiet_engine_logs() -> None:
    """python-chess warns about every unexpected engine line; a match report needs only errors."""
    logging.getLogger("chess.engine").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = sys.stderr
    quiet_engine_logs()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("matches") / stamp
    try:
        ours, opponents, ratings = _engines(args)
        text_model = plays_text_model(ours.options.get("WeightsFile"), other_engine=bool(args.engine_cmd))
        settings = _settings(args, out, text_model, report=lambda text: print(f"match: {text}", file=err))
        tool, executable = _choose_tool(args)
        if settings.sprt is not None and len(opponents) != 1:
            raise ValueError("--sprt needs exactly one opponent")
        command = build_command(tool, executable, [ours] + opponents, settings) if executable else None
    except (ValueError, OpeningsError) as exc:
        print(f"match: {exc}", file=err)
        return 2
    if args.dry_run:
        if command is None:
            print("match: no cutechess-cli or fastchess; the built-in runner would play the games", file=err)
            return 0
        print(shlex.join(command))
        return 0

    out.mkdir(parents=True, exist_ok=True)
    total = settings.games_per_opponent * len(opponents)
    if not args.quiet:
        print(f"match: {ours.name} vs {', '.join(o.name for o in opponents)}: {total} games at tc {settings.tc} "
              f"with {tool}", file=err)
    t0 = time.monotonic()
    peak_kib: int | None = None
    engine_stats: dict[str, Any] = {}
    stopped = None
    tool_log = None
    exit_code = 0
    try:
        if command is not None:
            assert settings.pgn_out is not None
            (out / "command.txt").write_text(shlex.join(command) + "\n", encoding="utf-8")
            games, parsed, peak_kib, exit_code = run_tool(command, out / f"{tool}.log", ours.name, total,
                                                          ours.command, args.quiet)
            tool_log = {"file": f"{tool}.log", "exit_code": exit_code, "games": len(games),
                        "sprt": parsed.sprt.__dict__ if parsed.sprt else None, "warnings": parsed.warnings[:20],
                        "player_counts": parsed.terminations}
            soak = soak_figures(games, ours.name)
        else:
            games, soak, peak_kib, engine_stats, stopped = _run_builtin(ours, opponents, settings, args.quiet)
    except (RunnerError, OpeningsError) as exc:
        print(f"match: {exc}", file=err)
        return 1
    seconds = time.monotonic() - t0
    soak["peak_memory_mib"] = round(peak_kib / 1024.0, 1) if peak_kib else None
    rows = summarise(games, ours.name, opponents, ratings, settings.sprt)
    report = {
        "tool": tool,
        "command": command,
        "tool_log": tool_log,
        "engine": {"name": ours.name, "command": ours.command, "options": ours.options},
        "settings": {
            "tc": str(settings.tc), "rounds": settings.rounds, "games_per_opponent": settings.games_per_opponent,
            "concurrency": settings.concurrency, "openings": settings.openings.name,
            "openings_order": settings.openings_order, "plies": settings.plies, "time_margin": settings.time_margin,
            "adjudication": {k: v for k, v in settings.adjudication.__dict__.items() if k != "referee"},
            "sprt": settings.sprt.__dict__ if settings.sprt else None,
        },
        "games_played": len(games),
        "stopped_early": stopped,
        "seconds": seconds,
        "opponents": rows,
        "soak": soak,
        "time_losses": time_losses(games, [ours.name] + [o.name for o in opponents]),
        "engines": engine_stats,
        "pgn": settings.pgn_out.name if settings.pgn_out else None,
        "record": run_record(args.weights if args.weights else None),
    }
    (out / "match.json").write_text(json.dumps(elo_maths.jsonable(report), indent=2) + "\n", encoding="utf-8")
    plot = plot_elo(rows, ours.name, f"{ours.name}, tc {settings.tc}, {len(games)} games", out / "elo.png")
    print(format_summary(report))
    print(f"results: {out / 'match.json'}" + (f", plot: {plot}" if plot else ""))
    if command is not None and exit_code != 0:
        print(f"match: {tool} exited with code {exit_code}; see {out / (tool + '.log')}", file=err)
        return 1
    return 0


def _run_builtin(ours: EngineSpec, opponents: list[EngineSpec], s: MatchSettings,
                 quiet: bool) -> tuple[list[GameRecord], dict[str, int], int | None, dict[str, Any], str | None]:
    import random

    from neuralengine.benchmarks.runner import run_match, schedule
    from neuralengine.progress import Progress

    openings = load_openings(s.openings, s.plies)
    if s.openings_order == "random":
        random.Random(s.seed).shuffle(openings)
    jobs = schedule(ours, opponents, openings, s.rounds)
    bar = Progress("match", len(jobs), "games", enabled=not quiet)
    tally = {"w": 0, "d": 0, "l": 0}
    finished: dict[int, GameRecord] = {}
    assert s.pgn_out is not None
    s.pgn_out.parent.mkdir(parents=True, exist_ok=True)
    pgn_file = open(s.pgn_out, "w", encoding="utf-8")

    def on_game(game: Any) -> bool:
        finished[game.number] = game
        pgn_file.write(game.pgn + "\n")
        pgn_file.flush()
        pts = game.points(ours.name)
        tally["w" if pts == 1.0 else "d" if pts == 0.5 else "l"] += 1
        bar.update(postfix=f"{ours.name} +{tally['w']} ={tally['d']} -{tally['l']}")
        if s.sprt is not None:
            h = head_to_head(finished.values(), ours.name).get(opponents[0].name)
            if h is not None and sum(h.pentanomial) > 0:
                state = elo_maths.sprt(h.pentanomial, s.sprt.elo0, s.sprt.elo1, s.sprt.alpha, s.sprt.beta,
                                       s.sprt.model)
                return state.verdict != "continue"
        return False

    try:
        outcome = run_match(jobs, s.tc, s.adjudication, s.concurrency, s.time_margin, on_game)
    finally:
        pgn_file.close()
        bar.close()
    mine = outcome.stats[ours.name]
    soak = {"illegal_moves": mine.illegal_moves, "time_forfeits": mine.time_forfeits, "crashes": mine.crashes}
    stats = {name: st.to_dict() for name, st in outcome.stats.items()}
    return list(outcome.games), soak, mine.peak_memory_kib, stats, outcome.stopped_early


if __name__ == "__main__":
    sys.exit(main())
