"""A built-in match runner on python-chess, for when neither cutechess-cli nor fastchess is installed.

It plays the same schedule as the ``match`` wrapper gives those tools: the
first engine against each opponent, every opening twice with colours
swapped (games ``2k-1`` and ``2k`` form a pair), under a clock with
increment. It keeps the clocks itself, adjudicates on request, writes PGN and
counts what a soak test wants to know: illegal moves, time forfeits, crashes
and the engines' peak memory.

Clocks: an engine's clock is charged the wall time between sending ``go``
and receiving ``bestmove``, measured here; it loses on time when the clock
falls below ``-time_margin``. An engine that does not answer within its clock
plus ``hang_grace`` seconds is killed, loses on time, and is restarted for
its next game; so is one that crashes (it "disconnects") or sends an illegal
move.
"""

from __future__ import annotations

import datetime as _dt
import io
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import chess
import chess.engine
import chess.pgn

from neuralengine.benchmarks.machine import peak_memory_kib
from neuralengine.benchmarks.openings import Opening
from neuralengine.benchmarks.parsers import GameRecord

#: Score given to a mate when comparing with centipawn thresholds.
MATE_CP = 100000


class RunnerError(RuntimeError):
    """A match that cannot be set up (an engine that does not start, a bad setting)."""


@dataclass
class EngineSpec:
    """A UCI engine: a display name, the command that starts it and options to set."""

    name: str
    command: list[str]
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TimeControl:
    """``[moves/]base[+increment]`` in seconds, as cutechess-cli writes it (``40/60+0.6``, ``10+0.1``)."""

    base: float
    increment: float = 0.0
    moves: int | None = None

    _PATTERN = re.compile(r"^(?:(\d+)/)?(?:(\d+):)?(\d+(?:\.\d+)?)(?:\+(\d+(?:\.\d+)?))?$")

    @classmethod
    def parse(cls, text: str) -> "TimeControl":
        m = cls._PATTERN.match(text.strip())
        if not m:
            raise ValueError(f"time control {text!r} is not like 10+0.1, 40/60+0.6 or 1:30+1")
        moves = int(m[1]) if m[1] else None
        base = float(m[3]) + (60.0 * int(m[2]) if m[2] else 0.0)
        inc = float(m[4]) if m[4] else 0.0
        if base <= 0 or (moves is not None and moves < 1):
            raise ValueError(f"time control {text!r} gives no time")
        return cls(base, inc, moves)

    def __str__(self) -> str:
        text = f"{self.moves}/" if self.moves else ""
        text += f"{self.base:g}"
        if self.increment:
            text += f"+{self.increment:g}"
        return text

    def pgn(self) -> str:
        """The PGN ``TimeControl`` tag value."""
        base = f"{self.base:g}" + (f"+{self.increment:g}" if self.increment else "")
        return f"{self.moves}/{base}" if self.moves else base


@dataclass
class Adjudication:
    """When to stop a game early.

    Scores are centipawns from the mover's point of view, reported by the
    engines themselves (``source="engines"``) or by a Stockfish referee
    searching ``referee_time`` seconds after every move (``"stockfish"``).

    * resign: a side whose score is at most ``-resign_score`` for
      ``resign_moves`` of its moves in a row loses (the referee's score
      after a move counts for the side that made it);
    * draw: from full move ``draw_after`` on, when the score stays within
      ``±draw_score`` for ``draw_moves`` moves of each side in a row;
    * ``max_moves``: a game still going after that many full moves is drawn.
    """

    resign_score: int | None = None
    resign_moves: int = 3
    draw_score: int | None = None
    draw_moves: int = 8
    draw_after: int = 34
    max_moves: int | None = None
    source: str = "engines"
    referee: list[str] | None = None
    referee_time: float = 0.01

    def needs_scores(self) -> bool:
        return self.resign_score is not None or self.draw_score is not None


@dataclass
class Job:
    number: int
    white: EngineSpec
    black: EngineSpec
    opening: Opening
    round: int


@dataclass
class GameResult(GameRecord):
    """A finished game: the record the parsers also produce, plus PGN and reliability facts."""

    pgn: str = ""
    plies: int = 0
    opening: str = ""
    #: ``normal``, ``adjudication``, ``time forfeit``, ``illegal move``, ``crash``
    termination: str = "normal"
    #: the engine at fault for a forfeit, an illegal move or a crash
    culprit: str | None = None


@dataclass
class EngineStats:
    """Reliability figures of one engine over a match."""

    name: str
    games: int = 0
    moves: int = 0
    think_s: float = 0.0
    max_move_s: float = 0.0
    illegal_moves: int = 0
    time_forfeits: int = 0
    crashes: int = 0
    restarts: int = 0
    peak_memory_kib: int | None = None
    #: Counts a player reports of itself (``info string KIND stats: fallbacks 1, ...``), summed over its processes.
    player_counts: dict[str, int] = field(default_factory=dict)

    def note_memory(self, kib: int | None) -> None:
        if kib is not None and (self.peak_memory_kib is None or kib > self.peak_memory_kib):
            self.peak_memory_kib = kib

    def to_dict(self) -> dict[str, Any]:
        return {
            "games": self.games, "moves": self.moves,
            "mean_move_ms": 1000.0 * self.think_s / self.moves if self.moves else None,
            "max_move_ms": 1000.0 * self.max_move_s, "illegal_moves": self.illegal_moves,
            "time_forfeits": self.time_forfeits, "crashes": self.crashes, "restarts": self.restarts,
            "peak_memory_mib": round(self.peak_memory_kib / 1024.0, 1) if self.peak_memory_kib else None,
            **({"player_counts": dict(self.player_counts)} if self.player_counts else {}),
        }


_PLAYER_STATS = re.compile(r"^[\w.-]+ stats: (.+)$")
_PLAYER_COUNT = re.compile(r"^([a-z][a-z ]*?) (\d+)$")


def player_report(text: str | None) -> dict[str, int] | None:
    """The counts of a player's ``KIND stats: name N, name N`` info string, or ``None`` for another text."""
    found = _PLAYER_STATS.match(text.strip()) if text else None
    if not found:
        return None
    counts = {}
    for item in found.group(1).split(","):
        pair = _PLAYER_COUNT.match(item.strip())
        if pair is None:
            return None
        counts[pair.group(1)] = int(pair.group(2))
    return counts


def schedule(first: EngineSpec, opponents: Sequence[EngineSpec], openings: Sequence[Opening], rounds: int,
             start: int = 0) -> list[Job]:
    """Games of ``first`` against each opponent: ``rounds`` openings, each with both colours.

    Rounds go over the opponents in turn (round 1 against all, then round 2),
    and opening ``start + r`` (cycling) serves round ``r``. Games are numbered
    from 1; games ``2k-1`` (``first`` has White) and ``2k`` share an opening.
    """
    if not openings:
        raise RunnerError("no openings to play")
    jobs: list[Job] = []
    for r in range(rounds):
        opening = openings[(start + r) % len(openings)]
        for opp in opponents:
            n = len(jobs) + 1
            jobs.append(Job(n, first, opp, opening, r + 1))
            jobs.append(Job(n + 1, opp, first, opening, r + 1))
    return jobs


class Player:
    """A running engine process, restarted when it dies or misbehaves."""

    def __init__(self, spec: EngineSpec, stats: EngineStats, timeout: float = 60.0) -> None:
        self.spec = spec
        self.stats = stats
        self.timeout = timeout
        self.engine: chess.engine.SimpleEngine | None = None
        self.pid: int | None = None
        self.started = 0
        #: The running process's last self-report (its counts run from its start).
        self.reported: dict[str, int] = {}
        # kill() runs on the worker thread and on the watchdog's timer thread.
        self._lock = threading.Lock()

    def ensure(self) -> chess.engine.SimpleEngine:
        if self.engine is None:
            try:
                engine = chess.engine.SimpleEngine.popen_uci(self.spec.command, timeout=self.timeout)
            except (OSError, chess.engine.EngineError, TimeoutError) as exc:
                raise RunnerError(f"engine {self.spec.name} ({' '.join(self.spec.command)}) does not start: "
                                  f"{exc}") from None
            try:
                if self.spec.options:
                    engine.configure(coerce_options(engine, self.spec.options))
                engine.ping()  # waits for the weights to load, outside any clock
            except (chess.engine.EngineError, TimeoutError, ValueError) as exc:
                engine.close()
                raise RunnerError(f"engine {self.spec.name}: {exc}") from None
            with self._lock:
                self.engine = engine
                self.pid = engine.transport.get_pid()
            self.started += 1
            self.reported = {}
            if self.started > 1:
                self.stats.restarts += 1
        return self.engine

    def note_report(self, text: str | None) -> None:
        """Add what the process's latest self-report (``KIND stats: ...``) counts beyond its previous one."""
        counts = player_report(text)
        if counts is None:
            return
        for name, value in counts.items():
            before = self.reported.get(name, 0)
            self.stats.player_counts[name] = self.stats.player_counts.get(name, 0) + max(value - before, 0)
        self.reported = counts

    def sample_memory(self) -> None:
        pid = self.pid  # read once: a kill on another thread may clear it
        if pid is not None:
            self.stats.note_memory(peak_memory_kib(pid))

    def _take(self, only: chess.engine.SimpleEngine | None = None
              ) -> tuple[chess.engine.SimpleEngine | None, int | None]:
        """Detach the running engine (and its pid) so that exactly one caller shuts it down."""
        with self._lock:
            engine, pid = self.engine, self.pid
            if engine is None or (only is not None and engine is not only):
                return None, None
            self.engine = None
            self.pid = None
        return engine, pid

    def kill(self, only: chess.engine.SimpleEngine | None = None) -> None:
        """Kill the engine process; safe to call from several threads, and more than once.

        With ``only``, the engine is killed only if it is still that one: a
        watchdog that fires late must not kill the engine started after it.
        """
        engine, pid = self._take(only)
        if engine is None:
            return
        if pid is not None:
            self.stats.note_memory(peak_memory_kib(pid))
        engine.close()

    def close(self) -> None:
        engine, pid = self._take()
        if engine is None:
            return
        if pid is not None:
            self.stats.note_memory(peak_memory_kib(pid))
        try:
            engine.quit()
        except (chess.engine.EngineError, TimeoutError, RuntimeError):
            pass
        engine.close()


def coerce_options(engine: chess.engine.SimpleEngine, options: dict[str, str]) -> dict[str, Any]:
    """Check option names against the engine's list and convert the text values to their types."""
    out: dict[str, Any] = {}
    for name, raw in options.items():
        if name not in engine.options:
            known = ", ".join(sorted(engine.options))
            raise ValueError(f"has no option {name!r} (it has: {known})")
        opt = engine.options[name]
        if opt.type == "check":
            out[name] = str(raw).lower() in ("1", "true", "yes", "on")
        elif opt.type == "spin":
            out[name] = int(raw)
        elif opt.type == "button":
            out[name] = None
        else:
            out[name] = str(raw)
    return out


def _score_cp(score: chess.engine.PovScore | None, color: chess.Color) -> int | None:
    if score is None:
        return None
    return score.pov(color).score(mate_score=MATE_CP)


def _comment(info: dict[str, Any], color: chess.Color, seconds: float) -> str:
    score = info.get("score")
    text = ""
    if score is not None:
        pov = score.pov(color)
        if pov.is_mate():
            mate = pov.mate()
            text = f"{'+' if mate > 0 else '-'}M{abs(mate)}"
        else:
            text = f"{pov.score() / 100.0:+.2f}"
        text += f"/{info.get('depth', 0)}"
    return f"{text} {seconds:.3f}s".strip()


class Referee:
    """A Stockfish that scores positions for adjudication."""

    def __init__(self, command: list[str], seconds: float) -> None:
        self.seconds = seconds
        try:
            self.engine = chess.engine.SimpleEngine.popen_uci(command)
            self.engine.configure({"Threads": 1, "Hash": 16})
        except (OSError, chess.engine.EngineError) as exc:
            raise RunnerError(f"the adjudicating Stockfish ({' '.join(command)}) does not start: {exc}") from None

    def score(self, board: chess.Board, color: chess.Color) -> int | None:
        info = self.engine.analyse(board, chess.engine.Limit(time=self.seconds))
        return _score_cp(info.get("score"), color)

    def close(self) -> None:
        try:
            self.engine.quit()
        except (chess.engine.EngineError, TimeoutError, RuntimeError):
            self.engine.close()


class _Adjudicator:
    def __init__(self, rules: Adjudication) -> None:
        self.rules = rules
        self.losing = {chess.WHITE: 0, chess.BLACK: 0}
        self.drawish = 0

    def update(self, board: chess.Board, mover: chess.Color, score: int | None) -> tuple[str, str] | None:
        """Feed the mover's score after its move; returns (result, reason) when the game is decided."""
        rules = self.rules
        if score is None:
            self.losing[mover] = 0
            self.drawish = 0
            return None
        if rules.resign_score is not None:
            self.losing[mover] = self.losing[mover] + 1 if score <= -rules.resign_score else 0
            if self.losing[mover] >= rules.resign_moves:
                name = "White" if mover == chess.WHITE else "Black"
                return ("0-1" if mover == chess.WHITE else "1-0"), f"{name} resigns (adjudication)"
        if rules.draw_score is not None:
            if board.fullmove_number >= rules.draw_after and abs(score) <= rules.draw_score:
                self.drawish += 1
            else:
                self.drawish = 0
            if self.drawish >= 2 * rules.draw_moves:
                return "1/2-1/2", "Draw by adjudication"
        return None


def _outcome_reason(board: chess.Board) -> tuple[str, str] | None:
    outcome = board.outcome(claim_draw=True)
    if outcome is None:
        return None
    t = outcome.termination
    if t == chess.Termination.CHECKMATE:
        return outcome.result(), f"{'White' if outcome.winner else 'Black'} mates"
    reasons = {
        chess.Termination.STALEMATE: "Draw by stalemate",
        chess.Termination.INSUFFICIENT_MATERIAL: "Draw by insufficient mating material",
        chess.Termination.SEVENTYFIVE_MOVES: "Draw by fifty moves rule",
        chess.Termination.FIFTY_MOVES: "Draw by fifty moves rule",
        chess.Termination.FIVEFOLD_REPETITION: "Draw by 3-fold repetition",
        chess.Termination.THREEFOLD_REPETITION: "Draw by 3-fold repetition",
    }
    return outcome.result(), reasons.get(t, "Draw")


def play_game(job: Job, players: dict[str, Player], tc: TimeControl, rules: Adjudication,
              referee: Referee | None = None, time_margin: float = 0.05, hang_grace: float = 5.0,
              event: str = "neuralengine match") -> GameResult:
    """Play one game; engine failures decide the game and never raise."""
    root = job.opening.board()
    start_board = chess.Board(job.opening.fen)
    board = root.copy()
    white, black = players[job.white.name], players[job.black.name]
    by_color = {chess.WHITE: white, chess.BLACK: black}
    clocks = {chess.WHITE: tc.base, chess.BLACK: tc.base}
    moves_in_period = {chess.WHITE: 0, chess.BLACK: 0}
    adjudicator = _Adjudicator(rules)
    comments: list[str] = []
    result, reason, termination, culprit = "*", "", "normal", None
    plies = 0
    for p in (white, black):
        p.stats.games += 1
    start_time = _dt.datetime.now(_dt.timezone.utc)
    while True:
        decided = _outcome_reason(board)
        if decided:
            result, reason = decided
            break
        if rules.max_moves is not None and plies >= 2 * rules.max_moves:
            result, reason, termination = "1/2-1/2", "Draw by adjudication: maximum moves", "adjudication"
            break
        mover = board.turn
        player = by_color[mover]
        name = "White" if mover == chess.WHITE else "Black"
        remaining = None
        if tc.moves:
            remaining = tc.moves - moves_in_period[mover] % tc.moves
        limit = chess.engine.Limit(white_clock=max(clocks[chess.WHITE], 0.001),
                                   black_clock=max(clocks[chess.BLACK], 0.001),
                                   white_inc=tc.increment, black_inc=tc.increment, remaining_moves=remaining)
        try:
            engine = player.ensure()
        except RunnerError:
            result, reason = ("0-1" if mover == chess.WHITE else "1-0"), f"{name} disconnects"
            termination, culprit = "crash", player.spec.name
            player.stats.crashes += 1
            break
        timed_out = threading.Event()
        detail = "no move"

        def on_hang(p: Player = player, hung: chess.engine.SimpleEngine = engine) -> None:
            timed_out.set()
            p.kill(hung)

        watchdog = threading.Timer(clocks[mover] + hang_grace, on_hang)
        watchdog.daemon = True
        t0 = time.monotonic()
        watchdog.start()
        try:
            played = engine.play(board, limit, info=chess.engine.INFO_SCORE, game=(id(players), job.number))
            error: str | None = None
        except chess.engine.EngineTerminatedError:
            error = "stall" if timed_out.is_set() else "crash"
        except chess.engine.EngineError as exc:
            error = "illegal" if not timed_out.is_set() else "stall"
            detail = str(exc)
        except (TimeoutError, RuntimeError):
            error = "stall" if timed_out.is_set() else "crash"
        finally:
            watchdog.cancel()
        elapsed = time.monotonic() - t0
        player.stats.think_s += elapsed
        player.stats.max_move_s = max(player.stats.max_move_s, elapsed)
        loss = "0-1" if mover == chess.WHITE else "1-0"
        if error == "stall":
            player.kill()
            result, reason, termination, culprit = loss, f"{name} loses on time", "time forfeit", player.spec.name
            player.stats.time_forfeits += 1
            break
        if error == "crash":
            player.kill()
            result, reason, termination, culprit = loss, f"{name} disconnects", "crash", player.spec.name
            player.stats.crashes += 1
            break
        if error == "illegal" or played.move is None:
            player.kill()
            result, reason = loss, f"{name} makes an illegal move: {detail}"
            termination, culprit = "illegal move", player.spec.name
            player.stats.illegal_moves += 1
            break
        player.sample_memory()
        player.note_report(played.info.get("string"))
        player.stats.moves += 1
        clocks[mover] -= elapsed
        if clocks[mover] < -time_margin:
            result, reason, termination, culprit = loss, f"{name} loses on time", "time forfeit", player.spec.name
            player.stats.time_forfeits += 1
            break
        clocks[mover] += tc.increment
        moves_in_period[mover] += 1
        if tc.moves and moves_in_period[mover] % tc.moves == 0:
            clocks[mover] += tc.base
        comments.append(_comment(played.info, mover, elapsed))
        board.push(played.move)
        plies += 1
        if rules.needs_scores() and not board.is_game_over():
            if rules.source == "stockfish" and referee is not None:
                score = referee.score(board, mover)
            else:
                score = _score_cp(played.info.get("score"), mover)
            verdict = adjudicator.update(board, mover, score)
            if verdict:
                result, reason = verdict
                termination = "adjudication"
                break
    end_time = _dt.datetime.now(_dt.timezone.utc)
    pgn = _pgn(job, start_board, root, board, comments, result, reason, termination, tc, event, start_time,
               end_time)
    return GameResult(job.number, job.white.name, job.black.name, result, reason, pgn=pgn, plies=plies,
                      opening=job.opening.name, termination=termination, culprit=culprit)


def _pgn(job: Job, start: chess.Board, root: chess.Board, board: chess.Board, comments: list[str], result: str,
         reason: str, termination: str, tc: TimeControl, event: str, t0: _dt.datetime, t1: _dt.datetime) -> str:
    game = chess.pgn.Game()
    game.headers["Event"] = event
    game.headers["Site"] = "?"
    game.headers["Date"] = t0.strftime("%Y.%m.%d")
    game.headers["Round"] = str(job.round)
    game.headers["White"] = job.white.name
    game.headers["Black"] = job.black.name
    game.headers["Result"] = result
    if start.fen() != chess.STARTING_FEN:
        game.setup(start)
    game.headers["TimeControl"] = tc.pgn()
    game.headers["Termination"] = {"normal": "normal", "adjudication": "adjudication",
                                   "time forfeit": "time forfeit"}.get(termination, "rules infraction")
    game.headers["GameStartTime"] = t0.isoformat(timespec="seconds")
    game.headers["GameEndTime"] = t1.isoformat(timespec="seconds")
    game.headers["PlyCount"] = str(len(board.move_stack))
    node: chess.pgn.GameNode = game
    opening_moves = len(root.move_stack)
    for i, move in enumerate(board.move_stack):
        node = node.add_variation(move)
        if i >= opening_moves:
            k = i - opening_moves
            if k < len(comments):
                node.comment = comments[k]
        elif i == opening_moves - 1:
            node.comment = "end of opening"
    if reason:
        node.comment = f"{node.comment} {reason}".strip()
    out = io.StringIO()
    game.accept(chess.pgn.FileExporter(out))
    return out.getvalue()


@dataclass
class MatchOutcome:
    games: list[GameResult]
    stats: dict[str, EngineStats]
    stopped_early: str | None = None
    seconds: float = 0.0


def run_match(jobs: Sequence[Job], tc: TimeControl, rules: Adjudication | None = None, concurrency: int = 1,
              time_margin: float = 0.05, on_game: Callable[[GameResult], bool | None] | None = None,
              event: str = "neuralengine match", hang_grace: float = 5.0) -> MatchOutcome:
    """Play ``jobs`` with ``concurrency`` games at a time.

    ``on_game`` is called (from one thread at a time) after each game; when
    it returns True the remaining games are cancelled (an SPRT decided).
    Engine problems decide games; only a setting error raises
    :class:`RunnerError`.
    """
    rules = rules or Adjudication()
    if rules.source not in ("engines", "stockfish"):
        raise RunnerError(f"adjudication source must be engines or stockfish, not {rules.source!r}")
    if rules.source == "stockfish" and rules.needs_scores() and not rules.referee:
        raise RunnerError("adjudication by Stockfish needs its command")
    stats: dict[str, EngineStats] = {}
    for job in jobs:
        for spec in (job.white, job.black):
            stats.setdefault(spec.name, EngineStats(spec.name))
    # Start every engine once before the clocks run: a command that fails or
    # an unknown option is a setting error, not a lost game.
    first_players: dict[str, Player] = {}
    try:
        for job in jobs:
            for spec in (job.white, job.black):
                if spec.name not in first_players:
                    first_players[spec.name] = Player(spec, stats[spec.name])
                    first_players[spec.name].ensure()
    except RunnerError:
        for p in first_players.values():
            p.close()
        raise
    work: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        work.put(job)
    results: list[GameResult] = []
    lock = threading.Lock()
    stop = threading.Event()
    stopped: list[str] = []
    errors: list[BaseException] = []
    t0 = time.monotonic()

    def worker(players: dict[str, Player]) -> None:
        referee = None
        try:
            if rules.source == "stockfish" and rules.needs_scores():
                referee = Referee(list(rules.referee or []), rules.referee_time)
            while not stop.is_set():
                try:
                    job = work.get_nowait()
                except queue.Empty:
                    return
                for spec in (job.white, job.black):
                    if spec.name not in players:
                        players[spec.name] = Player(spec, stats[spec.name])
                game = play_game(job, players, tc, rules, referee, time_margin, hang_grace, event)
                with lock:
                    results.append(game)
                    if on_game is not None and on_game(game):
                        stopped.append("SPRT decided")
                        stop.set()
        except BaseException as exc:  # surfaced in the calling thread
            errors.append(exc)
            stop.set()
        finally:
            for p in players.values():
                p.close()
            if referee is not None:
                referee.close()

    threads = [threading.Thread(target=worker, args=(first_players if i == 0 else {},), name=f"match-{i}",
                                daemon=True) for i in range(max(1, concurrency))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        stopped.append("interrupted")
        for t in threads:
            t.join(30)
    if errors:
        exc = errors[0]
        if isinstance(exc, RunnerError):
            raise exc
        raise RunnerError(f"the match runner failed: {exc!r}") from exc
    results.sort(key=lambda g: g.number)
    return MatchOutcome(results, stats, stopped[0] if stopped else None, time.monotonic() - t0)
