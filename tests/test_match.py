"""``neuralengine match``: tool command lines, openings, the built-in runner and a real short match."""

from __future__ import annotations

import io
import json
import os
import shlex
import sys
import textwrap
from pathlib import Path

import chess
import chess.engine
import chess.pgn
import pytest

from neuralengine.benchmarks import match
from neuralengine.benchmarks.machine import peak_memory_kib
from neuralengine.benchmarks.openings import BUILTIN_OPENINGS, OpeningsError, load_openings
from neuralengine.benchmarks.parsers import GameRecord
from neuralengine.benchmarks.runner import (Adjudication, EngineSpec, RunnerError, TimeControl, run_match,
                                            schedule)
from neuralengine.weights import file_sha256

# --------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------

OURS = EngineSpec("neuralengine", ["python3", "-m", "neuralengine"], {"WeightsFile": "w.safetensors", "Threads": "1"})
SF = EngineSpec("sf1500", ["stockfish"], {"UCI_LimitStrength": "true", "UCI_Elo": "1500"})
SKILL = EngineSpec("sfskill3", ["stockfish"], {"Skill Level": "3"})


def settings(**kw: object) -> match.MatchSettings:
    base = dict(tc=TimeControl.parse("10+0.1"), rounds=5, concurrency=2, openings=Path("book.epd"),
                pgn_out=Path("out/games.pgn"))
    base.update(kw)
    return match.MatchSettings(**base)  # type: ignore[arg-type]


def test_cutechess_command_line() -> None:
    cmd = match.build_command("cutechess", "cutechess-cli", [OURS, SF, SKILL], settings())
    assert cmd == [
        "cutechess-cli",
        "-engine", "name=neuralengine", "cmd=python3", "arg=-m", "arg=neuralengine",
        "option.WeightsFile=w.safetensors", "option.Threads=1",
        "-engine", "name=sf1500", "cmd=stockfish", "option.UCI_LimitStrength=true", "option.UCI_Elo=1500",
        "-engine", "name=sfskill3", "cmd=stockfish", "option.Skill Level=3",
        "-each", "proto=uci", "tc=10+0.1", "timemargin=50",
        "-tournament", "gauntlet",
        "-openings", "file=book.epd", "format=epd", "order=sequential",
        "-games", "2", "-rounds", "5", "-repeat", "-concurrency", "2", "-recover",
        "-pgnout", "out/games.pgn",
        "-ratinginterval", "10",
    ]


def test_fastchess_command_line_with_sprt_and_adjudication() -> None:
    s = settings(tc=TimeControl.parse("40/60+0.6"), openings=Path("book.pgn"), plies=8, openings_order="random",
                 seed=7, sprt=match.Sprt(0, 5, 0.05, 0.1, "logistic"),
                 adjudication=Adjudication(resign_score=600, resign_moves=3, draw_score=10, draw_moves=8,
                                           draw_after=40, max_moves=150))
    cmd = match.build_command("fastchess", "/opt/fastchess", [OURS, SF], s)
    assert cmd == [
        "/opt/fastchess",
        "-engine", "name=neuralengine", "cmd=python3", "args=-m neuralengine",
        "option.WeightsFile=w.safetensors", "option.Threads=1",
        "-engine", "name=sf1500", "cmd=stockfish", "option.UCI_LimitStrength=true", "option.UCI_Elo=1500",
        "-each", "proto=uci", "tc=40/60+0.6", "timemargin=50",
        "-openings", "file=book.pgn", "format=pgn", "order=random", "plies=8",
        "-srand", "7",
        "-games", "2", "-rounds", "5", "-repeat", "-concurrency", "2", "-recover",
        "-pgnout", "file=out/games.pgn",
        "-sprt", "elo0=0", "elo1=5", "alpha=0.05", "beta=0.1", "model=logistic",
        "-resign", "movecount=3", "score=600",
        "-draw", "movenumber=40", "movecount=8", "score=10",
        "-maxmoves", "150",
        "-ratinginterval", "10",
    ]
    # The same settings for cutechess-cli: -pgnout without file=, no SPRT model, one opponent so no gauntlet.
    cute = match.build_command("cutechess", "cutechess-cli", [OURS, SF], s)
    assert cute[cute.index("-pgnout") + 1] == "out/games.pgn"
    assert cute[cute.index("-sprt"):cute.index("-sprt") + 5] == ["-sprt", "elo0=0", "elo1=5", "alpha=0.05", "beta=0.1"]
    assert "-tournament" not in cute and "model=logistic" not in cute


def test_fastchess_gauntlet_seeds_and_errors() -> None:
    cmd = match.build_command("fastchess", "fastchess", [OURS, SF, SKILL], settings())
    i = cmd.index("-tournament")
    assert cmd[i:i + 4] == ["-tournament", "gauntlet", "-seeds", "1"]
    with pytest.raises(ValueError, match="one opponent"):
        match.build_command("fastchess", "fastchess", [OURS, SF, SKILL], settings(sprt=match.Sprt()))
    with pytest.raises(ValueError, match="built-in runner"):
        match.build_command("cutechess", "c", [OURS, SF], settings(
            adjudication=Adjudication(resign_score=900, source="stockfish", referee=["stockfish"])))
    with pytest.raises(ValueError):
        match.build_command("fastchess", "fastchess", [OURS], settings())
    with pytest.raises(ValueError):
        match.build_command("arena", "arena", [OURS, SF], settings())


def test_cli_builds_stockfish_levels(capsys: pytest.CaptureFixture[str], stockfish_path: str, tmp_path: Path) -> None:
    fake = tmp_path / "fastchess"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    code = match.main(["--stockfish", stockfish_path, "--stockfish-elo", "1400", "1700", "--stockfish-skill", "3",
                       "--engine-option", "Backend=onnx", "--tool", "fastchess", "--fastchess", str(fake),
                       "--games", "6", "--tc", "5+0.05", "--dry-run", "--out", str(tmp_path)])
    assert code == 0
    cmd = shlex.split(capsys.readouterr().out)
    assert cmd[0] == str(fake)
    assert "option.Backend=onnx" in cmd
    assert ["name=sf1400", f"cmd={stockfish_path}"] == cmd[cmd.index("name=sf1400"):cmd.index("name=sf1400") + 2]
    assert "option.UCI_Elo=1700" in cmd and "option.Skill Level=3" in cmd
    assert cmd[cmd.index("-rounds") + 1] == "3"
    assert cmd[cmd.index("-openings") + 1] == f"file={BUILTIN_OPENINGS}"
    # Bad input gives a message and exit code 2, never a traceback.
    assert match.main(["--stockfish-elo", "1400", "--tc", "fast", "--dry-run"]) == 2
    assert match.main(["--dry-run"]) == 2
    assert match.main(["--stockfish-skill", "42", "--stockfish", stockfish_path, "--dry-run"]) == 2
    assert match.main(["--opponent", "nocommand", "--dry-run"]) == 2
    assert match.main(["--opponent", "a=x", "--opponent", "b=y", "--sprt", "--dry-run"]) == 2
    assert match.main(["--opponent", "a=x", "--tool", "cutechess", "--cutechess", str(tmp_path / "nope"),
                       "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "time control" in err and "no opponent" in err and "Skill Level" in err and "not found" in err


def test_time_control_parsing() -> None:
    assert TimeControl.parse("10+0.1") == TimeControl(10.0, 0.1, None)
    assert TimeControl.parse("40/60+0.6") == TimeControl(60.0, 0.6, 40)
    assert TimeControl.parse("1:30+1") == TimeControl(90.0, 1.0, None)
    assert TimeControl.parse("5") == TimeControl(5.0, 0.0, None)
    assert str(TimeControl.parse("40/60+0.6")) == "40/60+0.6"
    assert TimeControl.parse("2+0.05").pgn() == "2+0.05"
    for bad in ("", "fast", "10+", "0+1", "-5+1", "0/10"):
        with pytest.raises(ValueError):
            TimeControl.parse(bad)


# --------------------------------------------------------------------------
# Openings and schedule
# --------------------------------------------------------------------------


def test_builtin_openings_are_distinct_legal_and_recorded_balanced() -> None:
    openings = load_openings()
    assert len(openings) == 100
    assert len({o.fen for o in openings}) == 100
    for line in BUILTIN_OPENINGS.read_text().splitlines():
        board, ops = chess.Board.from_epd(line)
        assert board.is_valid() and not board.is_game_over()
        assert board.fullmove_number == 5 and board.turn == chess.WHITE  # 8 plies
        assert abs(int(ops["ce"])) <= 40 and int(ops["acd"]) == 12
        # The recorded moves lead to the position.
        replay = chess.Board()
        for san in str(ops["c0"]).split():
            if not san.endswith("."):
                replay.push_san(san)
        assert replay.epd() == board.epd()


def test_builtin_openings_are_balanced_for_stockfish(stockfish_path: str) -> None:
    openings = load_openings()
    with chess.engine.SimpleEngine.popen_uci(stockfish_path) as engine:
        engine.configure({"Threads": 1, "Hash": 16})
        for opening in openings[:4]:
            info = engine.analyse(opening.board(), chess.engine.Limit(depth=10))
            assert abs(info["score"].white().score(mate_score=100000)) < 120


def test_pgn_and_bad_opening_files(tmp_path: Path) -> None:
    pgn = tmp_path / "book.pgn"
    pgn.write_text('[Event "a"]\n\n1. e4 e5 2. Nf3 Nc6 3. Bb5 a6 *\n\n'
                   '[Event "b"]\n[FEN "8/8/8/4k3/8/8/4P3/4K3 w - - 0 1"]\n[SetUp "1"]\n\n1. e3 Kd5 *\n')
    openings = load_openings(pgn, plies=4)
    assert [o.moves for o in openings] == [["e2e4", "e7e5", "g1f3", "b8c6"], ["e2e3", "e5d5"]]
    assert openings[1].board().fen() == "8/8/8/3k4/8/4P3/8/4K3 w - - 1 2"
    bad = tmp_path / "bad.epd"
    bad.write_text("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq -\nnot a position\n")
    with pytest.raises(OpeningsError, match="bad.epd:2"):
        load_openings(bad)
    with pytest.raises(OpeningsError):
        load_openings(tmp_path / "missing.epd")
    with pytest.raises(OpeningsError):
        load_openings(tmp_path / "book.txt")
    empty = tmp_path / "empty.epd"
    empty.write_text("\n# nothing\n")
    with pytest.raises(OpeningsError, match="no openings"):
        load_openings(empty)


def test_schedule_pairs_openings_with_both_colours() -> None:
    openings = load_openings()[:3]
    jobs = schedule(OURS, [SF, SKILL], openings, rounds=4)
    assert [j.number for j in jobs] == list(range(1, 17))
    for first, second in zip(jobs[::2], jobs[1::2]):
        assert first.opening is second.opening
        assert (first.white, first.black) == (second.black, second.white)
        assert first.white is OURS
    assert [j.black.name for j in jobs[::2]] == ["sf1500", "sfskill3"] * 4
    assert [j.opening for j in jobs[::4]] == [openings[0], openings[1], openings[2], openings[0]]
    with pytest.raises(RunnerError):
        schedule(OURS, [SF], [], 1)


# --------------------------------------------------------------------------
# The built-in runner with misbehaving engines
# --------------------------------------------------------------------------

FAKE_ENGINE = textwrap.dedent("""\
    import sys, time
    import chess
    mode = sys.argv[1]
    board = chess.Board()
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "uci":
            print("id name fake-" + mode)
            print("uciok", flush=True)
        elif words[0] == "isready":
            print("readyok", flush=True)
        elif words[0] == "position":
            rest = line.split("moves")[0].split()[1:]
            board = chess.Board() if rest[0] == "startpos" else chess.Board(" ".join(rest[1:7]))
            if "moves" in words:
                for uci in words[words.index("moves") + 1:]:
                    board.push_uci(uci)
        elif words[0] == "go":
            if mode == "crash":
                sys.exit(3)
            if mode == "hang":
                continue
            if mode == "illegal":
                print("bestmove a1a1", flush=True)
                continue
            if mode == "slow":
                time.sleep(1.2)
            move = sorted(board.legal_moves, key=lambda m: m.uci())[0]
            print(f"info depth 1 score cp 0 pv {move.uci()}")
            print(f"bestmove {move.uci()}", flush=True)
        elif words[0] == "quit":
            break
""")


@pytest.fixture(scope="module")
def fake_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fake") / "fake_engine.py"
    path.write_text(FAKE_ENGINE)
    return path


def fake(name: str, mode: str, script: Path) -> EngineSpec:
    return EngineSpec(name, [sys.executable, str(script), mode])


@pytest.mark.parametrize("mode,field,termination,reason", [
    ("illegal", "illegal_moves", "illegal move", "makes an illegal move"),
    ("crash", "crashes", "crash", "disconnects"),
    ("hang", "time_forfeits", "time forfeit", "loses on time"),
    ("slow", "time_forfeits", "time forfeit", "loses on time"),
])
@pytest.mark.slow
def test_runner_counts_engine_failures(fake_engine: Path, mode: str, field: str, termination: str,
                                       reason: str) -> None:
    bad, good = fake("bad", mode, fake_engine), fake("good", "legal", fake_engine)
    jobs = schedule(bad, [good], load_openings()[:1], rounds=1)
    outcome = run_match(jobs, TimeControl(1.0, 0.0), hang_grace=0.5)
    assert [g.number for g in outcome.games] == [1, 2]
    for game in outcome.games:
        assert game.loser() == "bad" and game.culprit == "bad"
        assert game.termination == termination and reason in game.reason
        assert match.classify(game.reason) == termination
        assert chess.pgn.read_game(io.StringIO(game.pgn)).headers["Result"] == game.result
    stats = outcome.stats["bad"].to_dict()
    assert stats[field] == 2
    # An engine that was killed (hung, crashed, sent nonsense) is restarted for its next game.
    assert outcome.stats["bad"].restarts == (0 if mode == "slow" else 1)
    assert outcome.stats["good"].to_dict()[field] == 0
    assert match.soak_figures(outcome.games, "bad")[field] == 2
    assert match.time_losses(outcome.games, ["bad", "good"]) == {"bad": 2 if field == "time_forfeits" else 0,
                                                                  "good": 0}


def test_player_kill_from_two_threads_at_once(fake_engine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog and the worker may both kill a hung engine. Here the second kill runs from
    start to end inside the first (while it samples the memory of the process), which is the
    interleaving that used to end in ``None.close()`` and abort the match."""
    import threading

    from neuralengine.benchmarks import runner

    player = runner.Player(fake("x", "legal", fake_engine), runner.EngineStats("x"))
    player.ensure()
    assert player.pid is not None
    real_peak = runner.peak_memory_kib
    nested: list[BaseException | None] = []
    started: list[bool] = []

    def kill_again() -> None:
        try:
            player.kill()
            nested.append(None)
        except BaseException as exc:  # handed to the test thread
            nested.append(exc)

    def peak_memory(pid: int) -> int | None:
        if not started:
            started.append(True)
            other = threading.Thread(target=kill_again)
            other.start()
            other.join(60)  # only a deadlock would reach this limit
            assert not other.is_alive(), "the second kill waited for the first"
        return real_peak(pid)

    monkeypatch.setattr(runner, "peak_memory_kib", peak_memory)
    player.kill()
    assert nested == [None]
    assert player.engine is None and player.pid is None
    player.kill()  # and once more, with nothing left to kill
    player.close()


def test_a_late_watchdog_does_not_kill_the_restarted_engine(fake_engine: Path) -> None:
    from neuralengine.benchmarks import runner

    player = runner.Player(fake("x", "legal", fake_engine), runner.EngineStats("x"))
    first = player.ensure()
    player.kill()
    second = player.ensure()
    assert second is not first
    player.kill(first)  # the watchdog of the first engine fires after the restart
    assert player.engine is second
    assert second.play(chess.Board(), chess.engine.Limit(depth=1)).move is not None
    player.close()


def test_classify_end_reasons() -> None:
    # Reasons as cutechess-cli and fastchess print them.
    assert match.classify("Black loses on time") == "time forfeit"
    assert match.classify("Black loses on time (101ms overrun)") == "time forfeit"
    assert match.classify("White makes an illegal move: e2e5") == "illegal move"
    assert match.classify("White disconnects") == "crash"
    assert match.classify("White's connection stalls") == "crash"
    for fine in ("Black mates", "White wins by adjudication", "Draw by 3-fold repetition", ""):
        assert match.classify(fine) is None


def test_time_losses_are_counted_per_engine() -> None:
    games = [GameRecord(1, "a", "b", "1-0", "Black loses on time"),
             GameRecord(2, "b", "a", "1-0", "Black loses on time (101ms overrun)"),
             GameRecord(3, "a", "c", "0-1", "White loses on time"),
             GameRecord(4, "c", "a", "1-0", "White mates"),
             GameRecord(5, "a", "b", "1/2-1/2", "Draw by adjudication"),
             GameRecord(6, "b", "a", "0-1", "White makes an illegal move: e2e5"),
             GameRecord(7, "c", "b", "*", "Black loses on time")]  # no result: nobody lost
    assert match.time_losses(games, ["a", "b", "c"]) == {"a": 2, "b": 1, "c": 0}
    assert match.time_losses([], ["a"]) == {"a": 0}


@pytest.mark.slow
def test_match_reports_the_opponents_time_losses(fake_engine: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # The opponent thinks 1.2 s on a 1 s clock and loses both games on time; ours never does.
    out = tmp_path / "out"
    code = match.main(["--tool", "builtin", "--name", "ours",
                       "--engine-cmd", shlex.join([sys.executable, str(fake_engine), "legal"]),
                       "--opponent", f"slowpoke={shlex.join([sys.executable, str(fake_engine), 'slow'])}",
                       "--games", "2", "--tc", "1+0", "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "match.json").read_text())
    assert report["time_losses"] == {"ours": 0, "slowpoke": 2}
    assert report["soak"]["time_forfeits"] == 0
    assert report["engines"]["slowpoke"]["time_forfeits"] == 2
    assert "losses on time: ours 0, slowpoke 2" in capsys.readouterr().out


def test_runner_adjudicates_on_reported_scores(fake_engine: Path) -> None:
    a, b = fake("a", "legal", fake_engine), fake("b", "legal", fake_engine)
    jobs = schedule(a, [b], load_openings()[:1], rounds=1)
    # Both report 0 cp: with a draw window of 0 from move 1, 2 moves each end the game at once.
    outcome = run_match(jobs, TimeControl(5.0, 0.0), Adjudication(draw_score=0, draw_moves=2, draw_after=1))
    assert all(g.result == "1/2-1/2" and g.termination == "adjudication" for g in outcome.games)
    assert all(g.plies == 4 for g in outcome.games)
    outcome = run_match(jobs, TimeControl(5.0, 0.0), Adjudication(max_moves=3))
    assert all(g.plies == 6 and "maximum moves" in g.reason for g in outcome.games)
    with pytest.raises(RunnerError, match="does not start"):
        run_match(schedule(EngineSpec("x", [str(fake_engine.parent / "missing-engine")]), [b],
                           load_openings()[:1], 1), TimeControl(1.0))


def test_peak_memory_from_proc() -> None:
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs Linux /proc")
    assert peak_memory_kib(os.getpid()) > 1000
    assert peak_memory_kib(2 ** 22 + 12345) is None


# --------------------------------------------------------------------------
# The wrapper around an external tool (a stand-in that replays a real log)
# --------------------------------------------------------------------------


def replay_tool(tmp_path: Path, log: Path) -> Path:
    script = tmp_path / "tool"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""\
        import sys
        open({str(tmp_path / 'argv.txt')!r}, "w").write("\\n".join(sys.argv[1:]))
        open("state.json", "w").write("{{}}")  # fastchess saves its state in its working folder
        sys.stdout.write(open({str(log)!r}).read())
        """))
    script.chmod(0o755)
    return script


def test_wrapper_reads_cutechess_results(tmp_path: Path, shared_data: Path) -> None:
    tool = replay_tool(tmp_path, shared_data / "tournament_logs" / "cutechess_match.log")
    out = tmp_path / "out"
    code = match.main(["--tool", "cutechess", "--cutechess", str(tool), "--name", "sf1400", "--engine-cmd", "sf",
                       "--opponent", "sf1700=stockfish", "--games", "12", "--tc", "2+0.02", "--out", str(out),
                       "--quiet"])
    assert code == 0
    argv = (tmp_path / "argv.txt").read_text().split("\n")
    assert (out / "command.txt").read_text().strip() == shlex.join([str(tool)] + argv)
    assert argv[argv.index("-rounds") + 1] == "6"
    report = json.loads((out / "match.json").read_text())
    row = report["opponents"][0]
    assert (row["opponent"], row["wins"], row["draws"], row["losses"]) == ("sf1700", 2, 0, 10)
    assert row["trinomial"]["elo"] == pytest.approx(-279.59, abs=0.01)
    assert row["trinomial"]["error"] is None  # the interval reaches a score below 0
    assert report["soak"]["time_forfeits"] == 1 and report["soak"]["crashes"] == 0
    assert report["time_losses"] == {"sf1400": 1, "sf1700": 0}  # game 4: sf1400, with black, lost on time
    assert report["tool_log"]["games"] == 12
    assert (out / "state.json").is_file()  # the tool ran in the output folder
    assert (out / "cutechess.log").read_text() == (shared_data / "tournament_logs" / "cutechess_match.log").read_text()
    assert (out / "elo.png").stat().st_size > 1000


def test_wrapper_reads_fastchess_sprt(tmp_path: Path, shared_data: Path) -> None:
    tool = replay_tool(tmp_path, shared_data / "tournament_logs" / "fastchess_sprt.log")
    out = tmp_path / "out"
    code = match.main(["--tool", "fastchess", "--fastchess", str(tool), "--name", "sf1600", "--engine-cmd", "sf",
                       "--opponent", "sf1650=stockfish", "--sprt", "--elo1", "20", "--games", "20", "--tc", "1+0.01",
                       "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "match.json").read_text())
    row = report["opponents"][0]
    assert row["pentanomial"]["counts"] == [2, 0, 6, 1, 1]
    assert round(row["sprt"]["llr"], 2) == report["tool_log"]["sprt"]["llr"] == -0.10
    assert row["sprt"]["verdict"] == "continue"
    assert row["elo_model"] == "pentanomial" and row["elo"] == pytest.approx(-17.39, abs=0.01)


# --------------------------------------------------------------------------
# A real short match against Stockfish
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_real_match_against_stockfish(tiny_weights: Path, stockfish_path: str, engine_command: list[str],
                                      tmp_path: Path) -> None:
    out = tmp_path / "match"
    code = match.main(["--tool", "builtin", "--weights", str(tiny_weights), "--engine-cmd", shlex.join(engine_command),
                       "--stockfish", stockfish_path, "--stockfish-elo", "1350", "--games", "2", "--tc", "2+0.05",
                       "--max-moves", "40", "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "match.json").read_text())
    assert report["tool"] == "builtin" and report["games_played"] == 2
    row = report["opponents"][0]
    assert row["opponent"] == "sf1350" and row["opponent_rating"] == 1350
    assert row["wins"] + row["draws"] + row["losses"] == 2
    assert sum(row["pentanomial"]["counts"]) == 1
    assert report["soak"] == {"illegal_moves": 0, "time_forfeits": 0, "crashes": 0,
                              "peak_memory_mib": report["soak"]["peak_memory_mib"]}
    if os.path.exists("/proc/self/status"):
        assert report["soak"]["peak_memory_mib"] > 10
    assert report["engines"]["neuralengine"]["moves"] > 0
    assert report["record"]["model"]["sha256"] == file_sha256(tiny_weights)
    assert report["record"]["versions"]["chess"] == chess.__version__
    with open(out / "games.pgn", encoding="utf-8") as fh:
        games = [chess.pgn.read_game(fh), chess.pgn.read_game(fh)]
    assert [g.headers["White"] for g in games] == ["neuralengine", "sf1350"]
    assert games[0].headers["FEN"] == games[1].headers["FEN"] == load_openings()[0].fen
    for game in games:
        board = game.end().board()  # every move replays legally
        assert game.headers["Result"] in ("1-0", "0-1", "1/2-1/2")
        assert len(board.move_stack) <= 80
    assert (out / "elo.png").stat().st_size > 1000
