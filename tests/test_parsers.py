"""The cutechess-cli and fastchess parsers on the real recorded logs.

Every number the tools printed is checked twice: the parser must read it,
and the same figure recomputed from the parsed games (W/D/L, pairs, Elo,
interval, LOS, SPRT) must agree with it.
"""

from __future__ import annotations

import math
from pathlib import Path

import chess.pgn
import pytest

from neuralengine.benchmarks import elo
from neuralengine.benchmarks.parsers import LogParser, detect_tool, head_to_head, parse_log

LOGS = ["cutechess_match.log", "cutechess_gauntlet.log", "fastchess_match.log", "fastchess_gauntlet.log",
        "fastchess_sprt.log", "fastchess_match_unfiltered_head.log"]


def read(shared_data: Path, name: str) -> str:
    return (shared_data / "tournament_logs" / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", LOGS)
def test_every_log_parses_and_counts_its_games(shared_data: Path, name: str) -> None:
    text = read(shared_data, name)
    log = parse_log(text)
    assert log.tool == name.split("_")[0]
    assert detect_tool(text) == log.tool
    finished_lines = sum(1 for line in text.splitlines() if line.startswith("Finished game"))
    assert len(log.games) == finished_lines
    assert log.started == sum(1 for line in text.splitlines() if line.startswith("Started game"))
    assert all(g.result in ("1-0", "0-1", "1/2-1/2") for g in log.games)
    assert sorted(g.number for g in log.games) == list(range(1, len(log.games) + 1))
    if name != "fastchess_match_unfiltered_head.log":
        assert log.finished and log.total_games == len(log.games)


def test_cutechess_match_scores(shared_data: Path) -> None:
    text = read(shared_data, "cutechess_match.log")
    parser = LogParser()
    checked = 0
    for line in text.splitlines():
        parser.feed(line)
        if line.startswith("Score of"):
            # Each running score equals the games finished so far, from sf1400's side.
            s = parser.log.summaries[-1]
            h = head_to_head(parser.log.games, "sf1400")["sf1700"]
            assert (s.wins, s.losses, s.draws, s.games) == (h.wins, h.losses, h.draws, h.games)
            checked += 1
        if line.startswith("Elo difference"):
            s = parser.log.summaries[-1]
            e = elo.trinomial(s.wins, s.draws, s.losses)
            if math.isinf(s.elo):
                assert e.elo == s.elo
            else:
                assert round(e.elo, 1) == s.elo
            assert round(100 * e.los, 1) == round(100 * s.los, 1)
            assert math.isnan(s.elo_error) and math.isnan(e.error)
    assert checked == 12
    log = parser.log
    final = log.summary
    assert (final.first, final.second, final.wins, final.losses, final.draws) == ("sf1400", "sf1700", 2, 10, 0)
    assert final.elo == -279.6 and final.los == pytest.approx(0.010)
    assert log.sprt is not None and log.sprt.llr == 0.0 and log.sprt.lower == -math.inf
    # The termination block: 12 results per player, one lost on time.
    assert sum(log.terminations["sf1400"].values()) == 12
    assert log.terminations["sf1400"]["Loss: Black loses on time"] == 1
    assert any(g.reason == "Black loses on time" for g in log.games)
    # Pairs: games 2k-1 and 2k share an opening; sf1400's six pairs.
    h = head_to_head(log.games, "sf1400")["sf1700"]
    assert sum(h.pentanomial) == 6 and h.unpaired == 0


def test_cutechess_pgn_agrees_with_log(shared_data: Path) -> None:
    log = parse_log(read(shared_data, "cutechess_match.log"))
    points = 0.0
    games = 0
    with open(shared_data / "tournament_logs" / "cutechess_match.pgn", encoding="utf-8") as fh:
        while (game := chess.pgn.read_game(fh)) is not None:
            result = game.headers["Result"]
            white = game.headers["White"]
            value = {"1-0": 1.0, "0-1": 0.0, "1/2-1/2": 0.5}[result]
            points += value if white == "sf1400" else 1.0 - value
            games += 1
    h = head_to_head(log.games, "sf1400")["sf1700"]
    assert games == h.games == 12
    assert points == h.wins + 0.5 * h.draws


def test_cutechess_gauntlet_ranking(shared_data: Path) -> None:
    log = parse_log(read(shared_data, "cutechess_gauntlet.log"))
    rows = {r.name: r for r in log.ranking}
    assert set(rows) == {"sf1500", "sf1800", "sfskill3"}
    for name, row in rows.items():
        table = head_to_head(log.games, name)
        wins = sum(h.wins for h in table.values())
        draws = sum(h.draws for h in table.values())
        losses = sum(h.losses for h in table.values())
        assert wins + draws + losses == row.games
        e = elo.trinomial(wins, draws, losses)
        assert round(e.score, 3) == pytest.approx(row.score, abs=1e-3)
        if math.isinf(row.elo):
            assert e.elo == row.elo
        else:
            assert round(e.elo) == row.elo  # cutechess prints whole Elo in tables
        assert sum(log.terminations[name].values()) == row.games
    assert rows["sf1500"].elo == -280 and rows["sf1800"].elo == math.inf


def test_fastchess_match_results(shared_data: Path) -> None:
    text = read(shared_data, "fastchess_match.log")
    parser = LogParser()
    blocks = 0
    for line in text.splitlines():
        parser.feed(line)
        if line.startswith("Ptnml"):
            s = parser.log.summaries[-1]
            h = head_to_head(parser.log.games, "sf1400")["sf1700"]
            assert (s.wins, s.losses, s.draws, s.games) == (h.wins, h.losses, h.draws, h.games)
            assert s.pentanomial == h.pentanomial
            e = elo.pentanomial(h.pentanomial)
            assert e.elo == pytest.approx(s.elo, abs=0.01)
            if math.isnan(s.elo_error):
                assert math.isnan(e.error)
            else:
                assert e.error == pytest.approx(s.elo_error, abs=0.01)
            assert e.nelo == pytest.approx(s.nelo, abs=0.01)
            assert e.nelo_error == pytest.approx(s.nelo_error, abs=0.01)
            assert round(100 * e.los, 2) == pytest.approx(100 * s.los, abs=0.005)
            assert round(100 * e.draw_ratio, 2) == pytest.approx(100 * s.draw_ratio, abs=0.005)
            assert s.points == h.wins + 0.5 * h.draws
            blocks += 1
    assert blocks == 2
    final = parser.log.summary
    assert (final.wins, final.losses, final.draws, final.games) == (2, 9, 1, 12)
    assert final.elo == -231.91 and final.elo_error == 265.97
    assert final.pentanomial == [3, 1, 2, 0, 0] and final.settings == "2+0.02, 1t, 16MB"
    assert len(parser.log.warnings) == 2


def test_fastchess_gauntlet_ranking(shared_data: Path) -> None:
    log = parse_log(read(shared_data, "fastchess_gauntlet.log"))
    assert [r.name for r in log.ranking] == ["sf1800", "sfskill3", "sf1500"]
    for row in log.ranking:
        table = head_to_head(log.games, row.name)
        penta = [sum(h.pentanomial[i] for h in table.values()) for i in range(5)]
        assert penta == row.pentanomial
        e = elo.pentanomial(penta)
        assert e.games == row.games
        assert e.elo == pytest.approx(row.elo, abs=0.01)
        assert e.nelo == pytest.approx(row.nelo, abs=0.01)
        assert e.nelo_error == pytest.approx(row.nelo_error, abs=0.01)
        assert round(e.score, 3) == pytest.approx(row.score, abs=1e-3)
        assert round(e.draw_ratio, 3) == pytest.approx(row.draw, abs=1e-3)
        if math.isnan(row.elo_error):
            assert math.isnan(e.error)
        else:
            assert e.error == pytest.approx(row.elo_error, abs=0.01)


def test_fastchess_sprt(shared_data: Path) -> None:
    log = parse_log(read(shared_data, "fastchess_sprt.log"))
    assert log.sprt is not None
    assert (log.sprt.llr, log.sprt.lower, log.sprt.upper) == (-0.10, -2.94, 2.94)
    assert (log.sprt.elo0, log.sprt.elo1) == (0.0, 20.0)
    assert log.sprt.fraction == pytest.approx(-0.036)
    h = head_to_head(log.games, "sf1600")["sf1650"]
    assert h.pentanomial == log.summary.pentanomial == [2, 0, 6, 1, 1]
    state = elo.sprt(h.pentanomial, log.sprt.elo0, log.sprt.elo1, 0.05, 0.05)
    assert round(state.llr, 2) == log.sprt.llr
    assert round(state.lower, 2) == log.sprt.lower and round(state.upper, 2) == log.sprt.upper
    assert round(state.fraction, 3) == pytest.approx(log.sprt.fraction, abs=1e-3)
    e = elo.pentanomial(h.pentanomial)
    assert e.elo == pytest.approx(log.summary.elo, abs=0.01)
    assert e.error == pytest.approx(log.summary.elo_error, abs=0.01)
    assert 100 * e.los == pytest.approx(100 * log.summary.los, abs=0.005)


def test_fastchess_unfiltered_traffic_is_skipped(shared_data: Path) -> None:
    text = read(shared_data, "fastchess_match_unfiltered_head.log")
    log = parse_log(text)
    traffic = sum(1 for line in text.splitlines() if line.split(";", 1)[0] in ("Info", "Position", "Moves", "Warning")
                  and ";" in line)
    assert traffic > 300
    assert log.traffic_lines == traffic
    assert log.started == 2 and log.games == [] and not log.finished
    assert log.summaries == [] and log.ranking == []
    assert len(log.warnings) == 2


def test_interleaved_traffic_crlf_and_colour_codes_change_nothing(shared_data: Path) -> None:
    clean = read(shared_data, "fastchess_match.log").splitlines()
    traffic = [line for line in read(shared_data, "fastchess_match_unfiltered_head.log").splitlines()
               if ";" in line.split(" ", 1)[0]]
    mixed = []
    for i, line in enumerate(clean):
        mixed.extend(traffic[(3 * i) % len(traffic):(3 * i) % len(traffic) + 3])
        mixed.append(f"\x1b[1;32m{line}\x1b[0m" if line.startswith("Finished") else line)
    expected = parse_log("\n".join(clean))
    got = parse_log("\r\n".join(mixed) + "\r\n")
    assert [(g.number, g.result, g.reason) for g in got.games] == \
        [(g.number, g.result, g.reason) for g in expected.games]
    assert got.summary == expected.summary


def test_truncated_and_garbage_input(shared_data: Path) -> None:
    text = read(shared_data, "cutechess_match.log")
    cut = text[: len(text) // 2]
    log = parse_log(cut + "\x00\xff garbage Finished game x (a vs b): ???\nScore of nothing")
    assert 0 < len(log.games) < 12
    assert not log.finished
    assert parse_log("").games == []
    assert detect_tool("hello") == "unknown"


# The end of a fastchess 1.8.2 run of `neuralengine match --tool fastchess --sprt` (engine traffic removed):
# "-nan" values, an overrun reason, and the per-player Timeouts/Crashed block.
FASTCHESS_SPRT_TAIL = """\
Started game 1 of 4 (sfA vs sf1350)
Finished game 1 (sfA vs sf1350): 1-0 {White wins by adjudication}
Started game 2 of 4 (sf1350 vs sfA)
Finished game 2 (sf1350 vs sfA): 1-0 {Black loses on time (101ms overrun)}
Started game 3 of 4 (sfA vs sf1350)
Finished game 3 (sfA vs sf1350): 0-1 {Black wins by adjudication}
Started game 4 of 4 (sf1350 vs sfA)
Finished game 4 (sf1350 vs sfA): 0-1 {Black wins by adjudication}
--------------------------------------------------
Results of sfA vs sf1350 (1+0.02, 1t, 16MB, openings.epd):
Elo: -0.00 +/- 0.00, nElo: -nan +/- -nan
LOS: -nan %, DrawRatio: 100.00 %, PairsRatio: -nan
Games: 4, Wins: 2, Losses: 2, Draws: 0, Points: 2.0 (50.00 %)
Ptnml(0-2): [0, 0, 2, 0, 0], WL/DD Ratio: inf
LLR: -0.01 (-0.4%) (-2.94, 2.94) [0.00, 20.00]
--------------------------------------------------

Player: sfA
  Timeouts: 1
  Crashed: 0

Finished match
Total Time: 00:00:16 (hours:minutes:seconds)
"""


def test_fastchess_nan_values_and_player_counts() -> None:
    log = parse_log(FASTCHESS_SPRT_TAIL)
    assert log.tool == "fastchess" and log.finished
    s = log.summary
    assert (s.wins, s.losses, s.draws, s.pentanomial) == (2, 2, 0, [0, 0, 2, 0, 0])
    assert s.elo == 0.0 and math.isnan(s.nelo) and math.isnan(s.los) and s.draw_ratio == 1.0
    assert log.terminations == {"sfA": {"Timeouts": 1, "Crashed": 0}}
    h = head_to_head(log.games, "sfA")["sf1350"]
    assert h.pentanomial == s.pentanomial
    assert round(elo.sprt(h.pentanomial, 0, 20).llr, 2) == log.sprt.llr == -0.01
    assert [g.reason for g in log.games if g.loser() == "sfA"] == ["Black loses on time (101ms overrun)",
                                                                    "Black wins by adjudication"]
