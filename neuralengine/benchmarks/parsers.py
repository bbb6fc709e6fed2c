"""Parse the console output of cutechess-cli and fastchess.

Both tools print one ``Started game``/``Finished game`` line per game and, at
intervals, a summary: cutechess-cli a ``Score of A vs B`` block (or a rank
table for tournaments), fastchess a ``Results of A vs B`` block (or a rank
table with pentanomial counts). fastchess also echoes engine traffic
(``Info;``, ``Position;``, ``Moves;``, ``Warning;`` lines) into the same
stream; such lines are skipped.

The parser is lenient: it reads line by line, takes what it recognises, keeps
the last summary of each kind and ignores everything else, so a truncated
log, interleaved output or a newer tool version with extra lines still gives
the games that finished. Numbers such as ``nan``, ``inf`` and ``-inf`` become
Python floats.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from neuralengine.benchmarks.elo import pair_class

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+|nan|inf)"

_STARTED = re.compile(r"Started game (\d+) of (\d+) \((.+?) vs (.+?)\)")
_FINISHED = re.compile(r"Finished game (\d+) \((.+?) vs (.+?)\): (1-0|0-1|1/2-1/2|\*)(?: \{(.*)\})?")
# cutechess-cli
_CC_SCORE = re.compile(rf"^Score of (.+?) vs (.+?): (\d+) - (\d+) - (\d+)\s+\[({_NUM})\]\s+(\d+)")
_CC_ELO = re.compile(rf"^Elo difference: ({_NUM}) \+/- ({_NUM}), LOS: ({_NUM}) %, DrawRatio: ({_NUM}) %")
_CC_SPRT = re.compile(rf"^SPRT: llr ({_NUM}) \(({_NUM})%\), lbound ({_NUM}), ubound ({_NUM})(.*)$")
_CC_RANK_HEAD = re.compile(r"^\s*Rank\s+Name\s+Elo\s+\+/-\s+Games\s+Score\s+Draw\s*$")
_CC_RANK_ROW = re.compile(rf"^\s*(\d+)\s+(.+?)\s+({_NUM})\s+({_NUM})\s+(\d+)\s+({_NUM})%\s+({_NUM})%\s*$")
_CC_PLAYER = re.compile(r"^Player: (.+)$")
_CC_REASON = re.compile(r'^\s+"(Win|Loss|Draw): (.*)": (\d+)\s*$')
# fastchess's per-player block ("Player: X" then "  Timeouts: 1", "  Crashed: 0")
_FC_PLAYER_COUNT = re.compile(r"^\s+([A-Za-z][A-Za-z /-]*): (\d+)\s*$")
# fastchess
_FC_RESULTS = re.compile(r"^Results of (.+?) vs (.+?) \((.*)\):\s*$")
_FC_ELO = re.compile(rf"^Elo: ({_NUM}) \+/- ({_NUM}), nElo: ({_NUM}) \+/- ({_NUM})")
_FC_LOS = re.compile(rf"^LOS: ({_NUM}) %, DrawRatio: ({_NUM}) %(?:, PairsRatio: ({_NUM}))?")
_FC_GAMES = re.compile(rf"^Games: (\d+), Wins: (\d+), Losses: (\d+), Draws: (\d+), Points: ({_NUM}) \(({_NUM}) %\)")
_FC_PTNML = re.compile(r"^Ptnml\(0-2\): \[(\d+), (\d+), (\d+), (\d+), (\d+)\]")
_FC_LLR = re.compile(rf"^LLR: ({_NUM}) \(({_NUM})%\) \(({_NUM}), ({_NUM})\) \[({_NUM}), ({_NUM})\]")
_FC_RANK_HEAD = re.compile(r"^\s*Rank\s+Name\s+Elo\s+\+/-\s+nElo\s+\+/-\s+Games\s+Score\s+Draw")
_FC_RANK_ROW = re.compile(
    rf"^\s*(\d+)\s+(.+?)\s+({_NUM})\s+({_NUM})\s+({_NUM})\s+({_NUM})\s+(\d+)\s+({_NUM})%\s+({_NUM})%"
    r"(?:\s+\[(\d+), (\d+), (\d+), (\d+), (\d+)\])?\s*$")
_ACCEPTED = re.compile(r"\bH([01]) (?:was )?accepted", re.IGNORECASE)
_TRAFFIC = re.compile(r"^(Info|Position|Moves|Warning|Error|Debug|Trace);")

#: Result string -> points for White.
WHITE_POINTS = {"1-0": 1.0, "0-1": 0.0, "1/2-1/2": 0.5}


def _num(text: str) -> float:
    return float(text)


@dataclass
class GameRecord:
    """One finished game as the tool reported it."""

    number: int
    white: str
    black: str
    result: str
    reason: str = ""

    def points(self, player: str) -> float | None:
        """Points ``player`` scored (1, ½ or 0), None when it did not play or the game has no result."""
        if self.result not in WHITE_POINTS or player not in (self.white, self.black):
            return None
        white = WHITE_POINTS[self.result]
        return white if player == self.white else 1.0 - white

    def loser(self) -> str | None:
        if self.result == "1-0":
            return self.black
        if self.result == "0-1":
            return self.white
        return None


@dataclass
class MatchSummary:
    """A ``Score of``/``Results of`` block: one player against another, counts from the first's side."""

    first: str
    second: str
    wins: int = 0
    losses: int = 0
    draws: int = 0
    games: int = 0
    elo: float = math.nan
    elo_error: float = math.nan
    los: float = math.nan
    draw_ratio: float = math.nan
    nelo: float = math.nan
    nelo_error: float = math.nan
    pairs_ratio: float = math.nan
    points: float = math.nan
    pentanomial: list[int] | None = None
    settings: str = ""


@dataclass
class RankRow:
    rank: int
    name: str
    elo: float
    elo_error: float
    games: int
    score: float
    draw: float
    nelo: float = math.nan
    nelo_error: float = math.nan
    pentanomial: list[int] | None = None


@dataclass
class SprtLine:
    llr: float
    fraction: float
    lower: float
    upper: float
    elo0: float = math.nan
    elo1: float = math.nan
    verdict: str = ""


@dataclass
class TournamentLog:
    """Everything recognised in one tool's output."""

    tool: str
    total_games: int | None = None
    started: int = 0
    games: list[GameRecord] = field(default_factory=list)
    summaries: list[MatchSummary] = field(default_factory=list)
    ranking: list[RankRow] = field(default_factory=list)
    sprt: SprtLine | None = None
    terminations: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    finished: bool = False
    traffic_lines: int = 0

    @property
    def summary(self) -> MatchSummary | None:
        """The last printed ``Score of``/``Results of`` block."""
        return self.summaries[-1] if self.summaries else None

    def players(self) -> list[str]:
        names: list[str] = []
        for g in self.games:
            for n in (g.white, g.black):
                if n not in names:
                    names.append(n)
        return names

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_tool(text: str) -> str:
    """``"fastchess"``, ``"cutechess"`` or ``"unknown"`` from characteristic lines."""
    if re.search(r"^(Results of .+ vs .+\(|Ptnml\(0-2\)|nElo)", text, re.MULTILINE) or "Fastchess" in text \
            or re.search(r"^(Info|Position|Moves);", text, re.MULTILINE):
        return "fastchess"
    if re.search(r"^(Score of .+ vs .+:|Elo difference:|SPRT: llr|Player: )", text, re.MULTILINE):
        return "cutechess"
    if re.search(r"Warning: No opening book specified", text):
        return "fastchess"
    return "unknown"


class LogParser:
    """Incremental parser: feed lines as they arrive, read :attr:`log` at any time."""

    def __init__(self, tool: str = "unknown") -> None:
        self.log = TournamentLog(tool)
        self._block: MatchSummary | None = None
        self._table: str | None = None
        self._player: str | None = None
        self._seen: set[int] = set()

    def feed(self, line: str) -> GameRecord | None:
        """Parse one line; returns the game when the line finished one."""
        line = _ANSI.sub("", line).rstrip("\r\n")
        log = self.log
        if _TRAFFIC.match(line):
            log.traffic_lines += 1
            if log.tool == "unknown":
                log.tool = "fastchess"
            return None
        m = _FINISHED.search(line)
        if m:
            game = GameRecord(int(m[1]), m[2], m[3], m[4], (m[5] or "").strip())
            if game.number not in self._seen:
                self._seen.add(game.number)
                log.games.append(game)
                return game
            return None
        m = _STARTED.search(line)
        if m:
            log.started += 1
            log.total_games = int(m[2])
            return None
        if not line.strip() or set(line.strip()) == {"-"}:
            self._table = None
            return None
        if line.startswith("Warning:") or line.startswith("Error:"):
            log.warnings.append(line)
            return None
        if line.strip() == "Finished match":
            log.finished = True
            return None
        self._parse_cutechess(line) or self._parse_fastchess(line)
        m = _ACCEPTED.search(line)
        if m and log.sprt is not None:
            log.sprt.verdict = f"H{m[1]}"
        return None

    def _parse_cutechess(self, line: str) -> bool:
        log = self.log
        m = _CC_SCORE.match(line)
        if m:
            self._set_tool("cutechess")
            wins, losses, draws = int(m[3]), int(m[4]), int(m[5])
            block = MatchSummary(m[1], m[2], wins, losses, draws, int(m[7]), points=wins + 0.5 * draws)
            log.summaries.append(block)
            self._block = block
            return True
        m = _CC_ELO.match(line)
        if m:
            block = self._block or self._new_block()
            block.elo, block.elo_error, block.los, block.draw_ratio = (_num(m[i]) for i in range(1, 5))
            block.los /= 100.0
            block.draw_ratio /= 100.0
            return True
        m = _CC_SPRT.match(line)
        if m:
            verdict = _ACCEPTED.search(m[5] or "")
            log.sprt = SprtLine(_num(m[1]), _num(m[2]) / 100.0, _num(m[3]), _num(m[4]),
                                verdict=f"H{verdict[1]}" if verdict else "")
            return True
        if _CC_RANK_HEAD.match(line):
            self._set_tool("cutechess")
            self._table = "cutechess"
            log.ranking = []
            return True
        if self._table == "cutechess":
            m = _CC_RANK_ROW.match(line)
            if m:
                log.ranking.append(RankRow(int(m[1]), m[2].strip(), _num(m[3]), _num(m[4]), int(m[5]),
                                           _num(m[6]) / 100.0, _num(m[7]) / 100.0))
                return True
        m = _CC_PLAYER.match(line)
        if m:
            self._player = m[1].strip()
            log.terminations.setdefault(self._player, {})
            return True
        m = _CC_REASON.match(line)
        if m and self._player is not None:
            log.terminations[self._player][f"{m[1]}: {m[2]}"] = int(m[3])
            return True
        m = _FC_PLAYER_COUNT.match(line)
        if m and self._player is not None:
            log.terminations[self._player][m[1]] = int(m[2])
            return True
        return False

    def _parse_fastchess(self, line: str) -> bool:
        log = self.log
        m = _FC_RESULTS.match(line)
        if m:
            self._set_tool("fastchess")
            self._block = MatchSummary(m[1], m[2], settings=m[3])
            log.summaries.append(self._block)
            return True
        m = _FC_ELO.match(line)
        if m:
            block = self._block or self._new_block()
            block.elo, block.elo_error, block.nelo, block.nelo_error = (_num(m[i]) for i in range(1, 5))
            return True
        m = _FC_LOS.match(line)
        if m:
            block = self._block or self._new_block()
            block.los, block.draw_ratio = _num(m[1]) / 100.0, _num(m[2]) / 100.0
            if m[3] is not None:
                block.pairs_ratio = _num(m[3])
            return True
        m = _FC_GAMES.match(line)
        if m:
            block = self._block or self._new_block()
            block.games, block.wins, block.losses, block.draws = (int(m[i]) for i in range(1, 5))
            block.points = _num(m[5])
            return True
        m = _FC_PTNML.match(line)
        if m:
            block = self._block or self._new_block()
            block.pentanomial = [int(m[i]) for i in range(1, 6)]
            return True
        m = _FC_LLR.match(line)
        if m:
            log.sprt = SprtLine(_num(m[1]), _num(m[2]) / 100.0, _num(m[3]), _num(m[4]), _num(m[5]), _num(m[6]))
            return True
        if _FC_RANK_HEAD.match(line):
            self._set_tool("fastchess")
            self._table = "fastchess"
            log.ranking = []
            return True
        if self._table == "fastchess":
            m = _FC_RANK_ROW.match(line)
            if m:
                penta = [int(m[i]) for i in range(10, 15)] if m[10] is not None else None
                log.ranking.append(RankRow(int(m[1]), m[2].strip(), _num(m[3]), _num(m[4]), int(m[7]),
                                           _num(m[8]) / 100.0, _num(m[9]) / 100.0, _num(m[5]), _num(m[6]), penta))
                return True
        return False

    def _new_block(self) -> MatchSummary:
        block = MatchSummary("?", "?")
        self.log.summaries.append(block)
        self._block = block
        return block

    def _set_tool(self, tool: str) -> None:
        if self.log.tool == "unknown":
            self.log.tool = tool


def parse_log(text: str | Iterable[str], tool: str | None = None) -> TournamentLog:
    """Parse a whole log (a string or an iterable of lines)."""
    if isinstance(text, str):
        lines: Iterable[str] = text.splitlines()
        tool = tool or detect_tool(text)
    else:
        lines = text
    parser = LogParser(tool or "unknown")
    for line in lines:
        parser.feed(line)
    return parser.log


# --------------------------------------------------------------------------
# Counting results from the games
# --------------------------------------------------------------------------


@dataclass
class HeadToHead:
    """Results of ``player`` against ``opponent`` counted from finished games."""

    player: str
    opponent: str
    wins: int = 0
    draws: int = 0
    losses: int = 0
    pentanomial: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])
    unpaired: int = 0

    @property
    def games(self) -> int:
        return self.wins + self.draws + self.losses


def head_to_head(games: Iterable[GameRecord], player: str, opponent: str | None = None) -> dict[str, HeadToHead]:
    """W/D/L and pentanomial counts of ``player`` against each opponent.

    Games ``2k-1`` and ``2k`` form a pair when the same two engines played
    them with colours swapped: this is how both tools and the built-in runner
    number the games of one opening. Games without a partner (an odd count,
    an unfinished partner) count in W/D/L only.
    """
    by_number = {g.number: g for g in games}
    table: dict[str, HeadToHead] = {}
    for g in sorted(by_number.values(), key=lambda g: g.number):
        pts = g.points(player)
        if pts is None:
            continue
        other = g.black if g.white == player else g.white
        if opponent is not None and other != opponent:
            continue
        h = table.setdefault(other, HeadToHead(player, other))
        if pts == 1.0:
            h.wins += 1
        elif pts == 0.5:
            h.draws += 1
        else:
            h.losses += 1
    for h in table.values():
        paired: set[int] = set()
        for g in sorted(by_number.values(), key=lambda g: g.number):
            if g.number % 2 == 0 or g.points(player) is None or h.opponent not in (g.white, g.black):
                continue
            partner = by_number.get(g.number + 1)
            if partner is None or partner.points(player) is None or \
                    {partner.white, partner.black} != {g.white, g.black} or partner.white == g.white:
                continue
            h.pentanomial[pair_class(g.points(player), partner.points(player))] += 1
            paired.update((g.number, partner.number))
        h.unpaired = h.games - len(paired)
    return table
