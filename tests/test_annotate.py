"""Stockfish annotation: scores, shards, resume, and recovery from killed processes."""

from __future__ import annotations

import gzip
import json
import lzma
import signal
import subprocess
import sys
from pathlib import Path

import chess
import pytest

from neuralengine.data.annotation import Settings, annotate_lines, main
from neuralengine.data.stockfish import EngineError, EngineNotFoundError, Stockfish, parse_info, resolve_engine
from neuralengine.data.text import iter_games, parse_line, position_key, score_to_win_prob
from stuck_run import start_stuck_annotation, wait_gone

SAMPLE = Path(__file__).parent / "data" / "av" / "d7_s101-000-head.txt.xz"


def seed_lines(count: int) -> list[str]:
    """The first annotated lines of the sample."""
    with lzma.open(SAMPLE, "rt") as fh:
        return [line for _, line in zip(range(count), fh)]


def write_positions(path: Path, count: int, start: int = 0) -> list[str]:
    """A positions file (FEN<TAB>game id) from the sample; returns its FENs."""
    rows = []
    for key, game in iter_games([SAMPLE]):
        rows.extend((fen, key) for fen, _, _ in game)
    rows = rows[start : start + count]
    path.write_text("".join(f"{fen}\t{gid}\n" for fen, gid in rows))
    return [fen for fen, _ in rows]


def read_shards(folder: Path) -> list[str]:
    lines = []
    for path in sorted(folder.glob("*.txt.gz")):
        with gzip.open(path, "rt") as fh:
            lines.extend(fh)
    return lines


def test_parse_info_reads_the_fields_we_need():
    line = parse_info("info depth 7 seldepth 9 multipv 3 score cp -35 nodes 1234 nps 100 tbhits 0 time 5 pv e2e4 e7e5")
    assert (line.multipv, line.move, line.score, line.exact, line.depth) == (3, "e2e4", "-35", True, 7)
    mate = parse_info("info depth 12 multipv 1 score mate -2 nodes 10 pv h2h3 g3g2")
    assert (mate.score, mate.exact) == ("#-2", True)
    bound = parse_info("info depth 20 seldepth 25 multipv 1 score cp 48 lowerbound nodes 5 time 3001 pv d2d4")
    assert (bound.score, bound.exact) == ("48", False)
    assert parse_info("info depth 20 currmove e2e4 currmovenumber 1") is None
    assert parse_info("info string NNUE evaluation using nn.nnue enabled") is None
    assert parse_info("info depth 1 multipv 1 score cp abc pv e2e4") is None
    assert parse_info("bestmove e2e4") is None


def test_scores_match_the_seed_data_exactly(stockfish_path):
    """Same engine and settings as the seed data: the same lines, byte for byte."""
    expected = seed_lines(25)
    settings = Settings(command=[stockfish_path], out_dir="", depth=7, hash_mb=32)
    with Stockfish([stockfish_path], {"Threads": 1, "Hash": 32}) as engine:
        if engine.name != "Stockfish 15.1":
            pytest.skip(f"the seed data was made by Stockfish 15.1, not {engine.name}")
        positions = [f"{line.split(chr(9))[0]}\tgame0\n" for line in expected]
        out, games, stats = annotate_lines(engine, positions, settings)
    assert out == expected
    assert games == [["game0", 25]]
    assert stats.positions == 25 and stats.action_values == sum(len(parse_line(x)[1]) for x in expected)


def test_mate_scores_and_every_legal_move(stockfish_path):
    # White mates with Qh7# (and others lose nothing); black to move after a blunder is mated.
    fens = ["6k1/5ppp/8/8/8/8/5PPP/3Q2K1 w - - 0 1", "k7/8/1K6/8/8/8/8/7R b - - 0 1"]
    settings = Settings(command=[stockfish_path], out_dir="", depth=6)
    with Stockfish([stockfish_path], {"Threads": 1}) as engine:
        out, _, _ = annotate_lines(engine, [f"{f}\n" for f in fens], settings)
    for fen, line in zip(fens, out):
        got_fen, moves, probs = parse_line(line)
        board = chess.Board(fen)
        assert got_fen == board.fen()
        assert moves == [m.uci() for m in board.legal_moves]
    first = dict(item.split(":") for item in out[0].split("\t")[1].split())
    assert first["d1d8"] == "#1" and score_to_win_prob(first["d1d8"]) == 1.0
    second = dict(item.split(":") for item in out[1].split("\t")[1].split())
    assert all(score.startswith("#-") for score in second.values())


def test_bad_lines_are_skipped_and_counted(stockfish_path):
    settings = Settings(command=[stockfish_path], out_dir="", depth=2)
    lines = ["# a comment\n", "\n", "not a fen\n", "8/8/8/8/8/8/8/8 w - - 0 1\n",  # no kings
             "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1\n",  # stalemate: nothing to score
             f"{chess.STARTING_FEN}\tg1\n"]
    with Stockfish([stockfish_path], {"Threads": 1}) as engine:
        out, games, stats = annotate_lines(engine, lines, settings)
    assert len(out) == 1 and out[0].startswith(chess.STARTING_FEN)
    assert stats.skipped == {"invalid": 2, "no_legal_moves": 1}
    assert games == [["g1", 1]]


def test_shards_sidecars_and_resume(stockfish_path, tmp_path):
    fens = write_positions(tmp_path / "train.fen", 50)
    out = tmp_path / "out"
    args = ["--out", str(out), "--depth", "2", "--shard-size", "20", "--workers", "2", "--quiet",
            "--stockfish", stockfish_path]
    assert main([str(tmp_path / "train.fen"), *args]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"train-0000{i}.{ext}" for i in range(3) for ext in ("json", "txt.gz")]
    lines = read_shards(out)
    assert [line.split("\t")[0] for line in lines] == fens
    meta = json.loads((out / "train-00001.json").read_text())
    assert meta["limit"] == {"depth": 2} and meta["engine"].startswith("Stockfish")
    assert meta["split"] == "train" and meta["first_line"] == 20 and meta["positions"] == 20
    assert sum(count for _, count in meta["games"]) == 20

    # A rerun redoes only the missing shard, with the same result.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "train-00001.json").unlink()
    assert main([str(tmp_path / "train.fen"), *args]) == 0
    assert read_shards(out) == lines
    for name in ("train-00000.txt.gz", "train-00002.txt.gz"):
        assert (out / name).stat().st_mtime_ns == stamps[name]
    assert (out / "train-00001.txt.gz").stat().st_mtime_ns != stamps["train-00001.txt.gz"]

    # Other settings into the same folder are refused.
    with pytest.raises(SystemExit, match="other settings"):
        main([str(tmp_path / "train.fen"), *args[:2], "--depth", "3", *args[4:]])


WRAPPER = """#!{python}
# Stockfish behind a pipe; on the first run it dies after {after} searches.
import os, signal, subprocess, sys
marker = {marker!r}
engine = subprocess.Popen([{stockfish!r}], stdin=subprocess.PIPE, stdout=sys.stdout, text=True)
searches = 0
while True:
    line = sys.stdin.readline()
    if not line:
        break
    if line.startswith("go"):
        searches += 1
        if searches > {after} and not os.path.exists(marker):
            open(marker, "w").close()
            engine.kill()
            if {kill_worker}:
                os.kill(os.getppid(), signal.SIGKILL)
            sys.exit(1)
    engine.stdin.write(line)
    engine.stdin.flush()
engine.stdin.close()
engine.wait()
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_worker", [False, True], ids=["stockfish-killed", "worker-killed"])
def test_killed_processes_lose_and_duplicate_nothing(stockfish_path, tmp_path, kill_worker):
    write_positions(tmp_path / "test.fen", 30, start=100)
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    args = ["--depth", "2", "--shard-size", "10", "--workers", "2", "--quiet"]
    assert main([str(tmp_path / "test.fen"), "--out", str(clean), *args, "--stockfish", stockfish_path]) == 0

    wrapper = tmp_path / "flaky-stockfish"
    wrapper.write_text(WRAPPER.format(python=sys.executable, after=12, marker=str(tmp_path / "died"),
                                      stockfish=stockfish_path, kill_worker=kill_worker))
    wrapper.chmod(0o755)
    assert main([str(tmp_path / "test.fen"), "--out", str(broken), *args, "--stockfish", str(wrapper)]) == 0
    assert (tmp_path / "died").exists(), "the wrapper never killed anything"

    expected, got = read_shards(clean), read_shards(broken)
    assert len(expected) == 30
    assert got == expected
    assert len({position_key(line.split("\t")[0]) for line in got}) == len(got)
    assert not list(broken.glob("*.tmp*"))


def test_missing_or_broken_engine_gives_a_clear_error(tmp_path, capsys):
    (tmp_path / "p.fen").write_text(chess.STARTING_FEN + "\n")
    assert main([str(tmp_path / "p.fen"), "--out", str(tmp_path / "o"), "--stockfish",
                 str(tmp_path / "no-such-stockfish")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(EngineNotFoundError, match="install"):
        resolve_engine(str(tmp_path / "nope"))
    with pytest.raises(EngineError, match="not a working UCI engine"):
        Stockfish(["false"], timeout=5)
    assert main([str(tmp_path / "missing.fen"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_one_stockfish_lookup(tmp_path, monkeypatch):
    """Every command finds Stockfish the same way: an explicit path or name, else PATH, else the usual places."""
    from neuralengine.paths import find_stockfish

    exe = tmp_path / "bin" / "stockfish"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    plain = tmp_path / "not-executable"
    plain.write_text("")
    assert find_stockfish(str(exe)) == str(exe)
    assert find_stockfish(str(plain)) is None and find_stockfish(str(tmp_path / "missing")) is None
    monkeypatch.setenv("PATH", str(exe.parent))
    assert find_stockfish() == str(exe) and find_stockfish("stockfish") == str(exe)
    assert resolve_engine("stockfish --flag") == [str(exe), "--flag"]
    with pytest.raises(EngineNotFoundError, match="not executable"):
        resolve_engine(str(plain))


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--depth" in capsys.readouterr().out


#: A UCI engine that reports a bound score where the tests below need one. White to move: the
#: first legal move gets only a lower bound. Black to move: the first move gets an exact score at
#: depth 1, then an upper bound at depth 2 (the exact score must stay its label).
BOUND_ENGINE = r'''
import sys
import chess

board = chess.Board()
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "uci":
        print("id name bound-engine")
        print("option name MultiPV type spin default 1 min 1 max 500")
        print("uciok")
    elif words[0] == "isready":
        print("readyok")
    elif words[0] == "position":
        board = chess.Board(line.split(" fen ", 1)[1].split(" moves ")[0].strip())
    elif words[0] == "go":
        for rank, move in enumerate(board.legal_moves, 1):
            if rank == 1 and board.turn == chess.WHITE:
                print(f"info depth 2 multipv 1 score cp 77 lowerbound nodes 9 pv {move.uci()}")
            elif rank == 1:
                print(f"info depth 1 multipv 1 score cp 5 nodes 9 pv {move.uci()}")
                print(f"info depth 2 multipv 1 score cp 99 upperbound nodes 9 pv {move.uci()}")
            else:
                print(f"info depth 2 multipv {rank} score cp {-rank} nodes 9 pv {move.uci()}")
        print(f"bestmove {next(iter(board.legal_moves)).uci()}")
    elif words[0] == "quit":
        break
    sys.stdout.flush()
'''


def test_bound_scores_are_never_labels(tmp_path):
    """Only exact scores become labels: a move that got nothing but a lower or upper bound
    drops its position (counted), and a later bound never replaces an exact score."""
    script = tmp_path / "bound_engine.py"
    script.write_text(BOUND_ENGINE)
    white = chess.Board()
    black = chess.Board()
    black.push_uci("e2e4")
    settings = Settings(command=[sys.executable, str(script)], out_dir="", depth=2)
    with Stockfish(settings.command) as engine:
        out, games, stats = annotate_lines(engine, [f"{white.fen()}\tg1\n", f"{black.fen()}\tg2\n"], settings)
    assert len(out) == 1 and out[0].startswith(black.fen() + "\t")
    scores = dict(item.split(":") for item in out[0].split("\t")[1].split())
    first = next(iter(black.legal_moves)).uci()
    assert scores[first] == "5"
    assert len(scores) == black.legal_moves.count()
    assert stats.skipped == {"bound_only": 1} and stats.positions == 1
    assert games == [["g2", 1]]


#: A UCI engine whose every score is the number of searches since its last ``ucinewgame``: a label
#: then shows whether the hash and history were cleared before the position was searched.
COUNTING_ENGINE = r'''
import sys
import chess

board = chess.Board()
searches = 0
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "uci":
        print("id name counting-engine")
        for name in ("MultiPV", "Threads", "Hash"):
            print(f"option name {name} type spin default 1 min 1 max 500")
        print("uciok")
    elif words[0] == "isready":
        print("readyok")
    elif words[0] == "ucinewgame":
        searches = 0
    elif words[0] == "position":
        board = chess.Board(line.split(" fen ", 1)[1].split(" moves ")[0].strip())
    elif words[0] == "go":
        searches += 1
        for rank, move in enumerate(board.legal_moves, 1):
            print(f"info depth 1 multipv {rank} score cp {searches} nodes 1 pv {move.uci()}")
        print(f"bestmove {next(iter(board.legal_moves)).uci()}")
    elif words[0] == "quit":
        break
    sys.stdout.flush()
'''


def test_lines_without_a_game_id_are_games_of_their_own(tmp_path):
    """``--clear-hash game``: a line without a game id is a game of its own, so its labels do not depend
    on the positions before it; lines of one named game share the hash."""
    script = tmp_path / "counting_engine.py"
    script.write_text(COUNTING_ENGINE)
    settings = Settings(command=[sys.executable, str(script)], out_dir="", depth=1, clear_hash="game")
    fens = [chess.STARTING_FEN, "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3",
            "7k/8/8/8/8/8/8/K5R1 w - - 0 1"]
    lines = [f"{fens[0]}\n", f"{fens[1]}\n", f"{fens[2]}\tg1\n", f"{fens[0]}\tg1\n", f"{fens[1]}\n"]
    with Stockfish(settings.command) as engine:
        out, games, _ = annotate_lines(engine, lines, settings, name="p.fen")
    counts = [{score for item in line.split("\t")[1].split() for score in [item.rsplit(":", 1)[1]]} for line in out]
    assert counts == [{"1"}, {"1"}, {"1"}, {"2"}, {"1"}]
    assert games == [["p.fen#0", 1], ["p.fen#1", 1], ["g1", 2], ["p.fen#4", 1]]


def test_a_running_writers_temp_files_survive_a_rerun(stockfish_path, tmp_path):
    """Only the temporary files of dead writers are cleaned up: another run that is still writing
    into the same --out keeps its files."""
    write_positions(tmp_path / "train.fen", 10)
    out = tmp_path / "out"
    out.mkdir()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead = out / f".train-00005.json.{finished.pid}.a1b2c3.tmp"
    writer = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        live = out / f".train-00004.json.{writer.pid}.d4e5f6.tmp"
        live.write_text("half written")
        dead.write_text("left behind")
        handler = signal.getsignal(signal.SIGTERM)
        assert main([str(tmp_path / "train.fen"), "--out", str(out), "--depth", "1", "--workers", "1", "--quiet",
                     "--stockfish", stockfish_path]) == 0
        assert signal.getsignal(signal.SIGTERM) is handler  # the command's own handler is gone again
        assert live.read_text() == "half written"
        assert not dead.exists()
    finally:
        writer.stdin.close()
        writer.wait()


HANGING = """#!{python}
# Stockfish behind a pipe; on the first run its search number {after} never ends.
import os, subprocess, sys
marker = {marker!r}
engine = subprocess.Popen([{stockfish!r}], stdin=subprocess.PIPE, stdout=sys.stdout, text=True)
searches = 0
for line in sys.stdin:
    if line.startswith("go"):
        searches += 1
        if searches == {after} and not os.path.exists(marker):
            open(marker, "w").close()
            for _ in sys.stdin:  # hang: read on, answer nothing
                pass
            break
    engine.stdin.write(line)
    engine.stdin.flush()
engine.stdin.close()
engine.wait()
"""


@pytest.mark.slow
def test_a_hanging_stockfish_is_killed_and_its_shard_redone(stockfish_path, tmp_path):
    """A search that never ends runs into the search timeout: the engine is killed and restarted and
    the shard redone, with the same result as a run without the hang."""
    write_positions(tmp_path / "test.fen", 20, start=50)
    clean, hung = tmp_path / "clean", tmp_path / "hung"
    args = ["--depth", "2", "--shard-size", "10", "--workers", "1", "--quiet"]
    assert main([str(tmp_path / "test.fen"), "--out", str(clean), *args, "--stockfish", stockfish_path]) == 0
    wrapper = tmp_path / "hanging-stockfish"
    wrapper.write_text(HANGING.format(python=sys.executable, after=14, marker=str(tmp_path / "hung-once"),
                                      stockfish=stockfish_path))
    wrapper.chmod(0o755)
    # In a process of its own: without the timeout it would wait for ever.
    result = subprocess.run([sys.executable, "-m", "neuralengine", "annotate", str(tmp_path / "test.fen"),
                             "--out", str(hung), *args, "--stockfish", str(wrapper), "--search-timeout", "5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "hung-once").exists(), "the wrapper never hung"
    assert "did not finish a search within 5 s" in result.stderr
    assert "1 restarts" in result.stderr
    assert read_shards(hung) == read_shards(clean)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_workers_with_one_line(tmp_path):
    """SIGTERM in the middle of a search: one line, status 143, and no worker or engine left behind."""
    write_positions(tmp_path / "train.fen", 5)
    driver, below = start_stuck_annotation(tmp_path, tmp_path / "train.fen")
    assert len(below) >= 2, below  # the worker and its engine
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["annotate: terminated; finished shards are kept, rerun to continue"]
    assert not wait_gone(below, 30), "worker processes outlived the run"
