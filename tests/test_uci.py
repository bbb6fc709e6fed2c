"""The real ``neuralengine`` executable, driven as GUIs drive it: python-chess and raw pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import chess
import chess.engine
import pytest

from full_evaluation import full_evaluation, torch_reference
from uci_pipe import Uci

REPETITION = "position startpos moves g1f3 g8f6 f3g1 f6g8 g1f3 g8f6"
BACK_RANK_MATE = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"
#: First words a UCI engine may write.
UCI_WORDS = {"id", "option", "uciok", "readyok", "info", "bestmove", "copyprotection", "registration"}


#: Option values restored between tests that share one engine process.
DEFAULTS = {"MultiPV": "1", "Ponder": "false", "UCI_ShowWDL": "false", "UCI_Chess960": "false", "BatchSize": "256",
            "MateRule": "true", "Temperature": "0", "Move Overhead": "30", "Backend": "onnx"}


@pytest.fixture(scope="module")
def shared_process(engine_command: list[str], tiny_weights: Path):
    """One engine process for the tests of this module, as a GUI keeps one for many games."""
    holder: dict[str, Uci] = {}

    def get() -> Uci:
        proc = holder.get("proc")
        if proc is None or proc.proc.poll() is not None:
            proc = holder["proc"] = Uci(engine_command)
            proc.send("uci")
            proc.until("uciok")
            proc.send(f"setoption name WeightsFile value {tiny_weights}")
        return proc

    yield get
    if "proc" in holder:
        holder["proc"].close()


@pytest.fixture
def uci(shared_process) -> Uci:
    """The shared engine, with a finished search, default options and an empty output queue."""
    proc = shared_process()
    proc.send("stop")
    proc.send("ucinewgame")  # waits for a running search to print its bestmove
    for name, value in DEFAULTS.items():
        proc.send(f"setoption name {name} value {value}")
    proc.ready()
    proc.quiet(0.05)
    return proc


@pytest.fixture
def simple(engine_command: list[str], tiny_weights: Path):
    engine = chess.engine.SimpleEngine.popen_uci(engine_command, timeout=60)
    engine.configure({"WeightsFile": str(tiny_weights), "Backend": "onnx"})
    yield engine
    engine.quit()


def info_lines(lines: list[str]) -> list[dict[str, str]]:
    """The ``info depth`` lines as word -> value (``pv`` keeps the rest of the line)."""
    parsed = []
    for line in lines:
        words = line.split()
        if len(words) < 2 or words[0] != "info" or words[1] != "depth":
            continue
        fields: dict[str, str] = {}
        i = 1
        while i < len(words):
            key = words[i]
            if key == "pv":
                fields["pv"] = " ".join(words[i + 1:])
                break
            if key == "score":
                fields["score"] = " ".join(words[i + 1:i + 3])
                i += 3
            elif key == "wdl":
                fields["wdl"] = " ".join(words[i + 1:i + 4])
                i += 4
            else:
                fields[key] = words[i + 1]
                i += 2
        parsed.append(fields)
    return parsed


def bestmove_of(line: str) -> str:
    words = line.split()
    assert words[0] == "bestmove" and len(words) in (2, 4), line
    return words[1]


# --------------------------------------------------------------------------
# Start-up
# --------------------------------------------------------------------------


def test_uci_lists_every_option(engine_command: list[str], tmp_path: Path) -> None:
    # How fast uciok comes is measured in bench/, not here.
    proc = Uci(engine_command)
    try:
        proc.send("uci")
        lines = proc.until("uciok", timeout=10)
        assert lines[0].startswith("id name neuralengine") and lines[1].startswith("id author")
        options = {line.split(" type ")[0][len("option name "):]: line for line in lines if line.startswith("option")}
        for name in ("WeightsFile", "Backend", "Threads", "BatchSize", "MultiPV", "UCI_ShowWDL", "UCI_Chess960",
                     "Temperature", "Move Overhead", "Ponder", "MateRule", "ConvertRule"):
            assert name in options
        assert "var auto var onnx var torch-cpu var torch-cuda" in options["Backend"]
        assert "type check" in options["UCI_ShowWDL"] and "type spin" in options["Move Overhead"]
    finally:
        proc.close()


def test_uci_module_imports_no_heavy_library() -> None:
    code = ("import sys, neuralengine.uci, neuralengine.cli; "
            "print(sorted(m for m in ('numpy', 'onnxruntime', 'torch', 'chess', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_backend_choices_match_the_backends() -> None:
    from neuralengine.backends import BACKENDS
    from neuralengine.uci import BACKEND_CHOICES

    assert BACKEND_CHOICES == BACKENDS


def test_isready_waits_for_the_weights(engine_command: list[str], tiny_weights: Path) -> None:
    proc = Uci(engine_command)
    try:
        proc.send("uci")
        proc.until("uciok")
        proc.send(f"setoption name WeightsFile value {tiny_weights}")
        lines = proc.ready()
        assert any("loaded" in line and tiny_weights.name in line for line in lines)
        # Once loaded, a search uses the network at once.
        proc.send("position startpos")
        infos, best = proc.go("go movetime 2000")
        assert int(info_lines(infos)[0]["nodes"]) == 20
    finally:
        proc.close()


# --------------------------------------------------------------------------
# python-chess SimpleEngine
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_play_a_full_game_against_itself(simple: chess.engine.SimpleEngine) -> None:
    board = chess.Board()
    plies = 0
    while not board.is_game_over() and plies < 600:
        result = simple.play(board, chess.engine.Limit(time=1.0), info=chess.engine.INFO_ALL)
        assert result.move in board.legal_moves
        assert result.info["depth"] == 1 and result.info["nodes"] >= 1
        board.push(result.move)
        plies += 1
    assert board.is_game_over(), f"no result after {plies} plies"
    assert board.result() != "*"
    if not any(board.generate_legal_moves()):
        result = simple.play(board, chess.engine.Limit(time=0.5))
        assert result.move is None


def test_multipv_and_wdl(simple: chess.engine.SimpleEngine) -> None:
    simple.configure({"UCI_ShowWDL": True})
    board = chess.Board()
    board.push_uci("e2e4")
    infos = simple.analyse(board, chess.engine.Limit(time=2.0), multipv=4)
    assert [info["multipv"] for info in infos] == [1, 2, 3, 4]
    moves = [info["pv"][0] for info in infos]
    assert len(set(moves)) == 4 and all(m in board.legal_moves for m in moves)
    scores = [info["score"].relative.score() for info in infos]
    assert scores == sorted(scores, reverse=True)
    for info in infos:
        assert info["nodes"] == 20 and info["depth"] == 1 and info["seldepth"] == 1
        wdl = info["wdl"].relative
        assert wdl.wins + wdl.draws + wdl.losses == 1000
        # WDL and cp describe the same win probability.
        p = (wdl.wins + wdl.draws / 2) / 1000
        assert chess.engine.Cp(info["score"].relative.score()).wdl(model="lichess").expectation() == \
            pytest.approx(p, abs=0.01)


def test_searchmoves_through_python_chess(simple: chess.engine.SimpleEngine) -> None:
    board = chess.Board()
    root = [chess.Move.from_uci("h2h3"), chess.Move.from_uci("a2a3")]
    infos = simple.analyse(board, chess.engine.Limit(time=2.0), multipv=5, root_moves=root)
    assert {info["pv"][0] for info in infos} == set(root)
    result = simple.play(board, chess.engine.Limit(time=2.0), root_moves=root)
    assert result.move in root


def test_mate_in_one_is_reported(simple: chess.engine.SimpleEngine) -> None:
    board = chess.Board(BACK_RANK_MATE)
    result = simple.play(board, chess.engine.Limit(time=2.0), info=chess.engine.INFO_SCORE)
    assert result.move == chess.Move.from_uci("a1a8")
    assert result.info["score"].relative == chess.engine.Mate(1)
    simple.configure({"MateRule": False})
    info = simple.analyse(board, chess.engine.Limit(time=2.0))
    assert info["score"].relative.mate() is None


def test_ponder_through_python_chess(simple: chess.engine.SimpleEngine) -> None:
    board = chess.Board()
    result = simple.play(board, chess.engine.Limit(time=2.0), ponder=True)
    assert result.move in board.legal_moves
    board.push(result.move)
    assert result.ponder in board.legal_moves


# --------------------------------------------------------------------------
# Raw pipes: commands
# --------------------------------------------------------------------------


def test_repetition_from_the_move_history(uci: Uci) -> None:
    uci.send("setoption name UCI_ShowWDL value true")
    uci.send(REPETITION)
    infos, best = uci.go("go movetime 3000 searchmoves f3g1 e2e4")
    lines = {f["pv"]: f for f in info_lines(infos)}
    assert lines and best == "bestmove " + next(iter(lines))
    uci.send("setoption name MultiPV value 2")
    infos, _ = uci.go("go movetime 3000 searchmoves f3g1 e2e4")
    lines = {f["pv"]: f for f in info_lines(infos)}
    assert set(lines) == {"f3g1", "e2e4"}
    assert lines["f3g1"]["score"] == "cp 0" and lines["f3g1"]["wdl"] == "0 1000 0"
    assert lines["e2e4"]["score"] != "cp 0" or lines["e2e4"]["wdl"] != "0 1000 0"
    # The same position from its FEN has no history, so no draw.
    board = chess.Board()
    for m in REPETITION.split()[3:]:
        board.push_uci(m)
    uci.send(f"position fen {board.fen()}")
    infos, _ = uci.go("go movetime 3000 searchmoves f3g1 e2e4")
    assert {f["pv"]: f for f in info_lines(infos)}["f3g1"]["wdl"] != "0 1000 0"


def test_info_line_format(uci: Uci) -> None:
    uci.send("setoption name MultiPV value 3")
    uci.send("position startpos moves d2d4")
    infos, best = uci.go("go wtime 60000 btime 60000 winc 1000 binc 1000")
    depth_lines = [line for line in infos if line.startswith("info depth")]
    assert len(depth_lines) == 3
    for k, line in enumerate(depth_lines, start=1):
        words = line.split()
        assert words[:6] == ["info", "depth", "1", "seldepth", "1", "multipv"] and words[6] == str(k)
        assert words[7:9] == ["score", "cp"] and int(words[9]) in range(-1600, 1601)
        assert words[10::2][:4] == ["nodes", "nps", "time", "pv"]
        assert words[11] == "20"
    assert bestmove_of(best) == depth_lines[0].split()[-1]


def test_go_nodes_depth_and_mate_play_the_full_evaluation(uci: Uci, tiny_weights: Path) -> None:
    # One evaluation of all moves is the smallest unit: every limit plays the best move of the
    # network's scores, computed here without the engine (more positions in test_search_limits.py).
    expected = full_evaluation(torch_reference(tiny_weights), chess.Board())
    assert expected.plain and expected.position >= 3  # "go nodes 3" alone would miss it
    uci.send("position startpos")
    for command in ("go nodes 1", "go nodes 3", "go depth 1", "go depth 5", "go mate 2", "go"):
        infos, best = uci.go(command)
        fields = info_lines(infos)[0]
        assert bestmove_of(best) == expected.best.uci() == fields["pv"].split()[0], command
        assert fields["nodes"] == "20" and fields["depth"] == "1", command
        assert abs(int(fields["score"].split()[1]) - expected.cp(expected.best)) <= 1, command


def test_game_over_answers_bestmove_none(uci: Uci) -> None:
    uci.send("position startpos moves f2f3 e7e5 g2g4 d8h4")
    lines, best = uci.go("go movetime 1000")
    assert best == "bestmove (none)"
    assert any("score mate 0" in line for line in lines)
    uci.send("position fen k7/8/1Q6/8/8/8/8/K7 b - - 0 1")
    lines, best = uci.go("go wtime 1000 btime 1000")
    assert best == "bestmove (none)"


def test_go_infinite_waits_for_stop(uci: Uci) -> None:
    uci.send("position startpos")
    uci.send("go infinite")
    early = uci.quiet(0.7)
    assert not any(line.startswith("bestmove") for line in early)
    uci.send("isready")  # answered while thinking
    assert uci.until("readyok", timeout=5)[-1] == "readyok"
    uci.send("stop")
    best = uci.until("bestmove", timeout=5)[-1]
    assert chess.Move.from_uci(bestmove_of(best)) in chess.Board().legal_moves
    uci.send("stop")  # a second stop is harmless and prints nothing
    assert not any(line.startswith("bestmove") for line in uci.quiet(0.3))


def ponder_answer(uci: Uci, moves: list[str]) -> tuple[str, str]:
    """``go`` on the position after ``moves``: the bestmove and the ponder move it must name."""
    uci.send("position startpos moves " + " ".join(moves))
    infos, best = uci.go("go wtime 10000 btime 10000")
    words = best.split()
    assert len(words) == 4 and words[2] == "ponder", best
    board = chess.Board()
    for move in moves + words[1:2]:
        board.push_uci(move)
    assert chess.Move.from_uci(words[3]) in board.legal_moves
    assert info_lines(infos)[0]["pv"] == f"{words[1]} {words[3]}"  # the pv shows the expected reply
    return words[1], words[3]


def test_go_ponder_then_ponderhit(uci: Uci) -> None:
    uci.send("setoption name Ponder value true")
    moves = ["e2e4", "e7e5"]
    best, expected = ponder_answer(uci, moves)
    # The GUI plays the move and ponders on the expected reply, as the engine asked.
    moves += [best, expected]
    uci.send("position startpos moves " + " ".join(moves))
    uci.send("go ponder wtime 10000 btime 10000")
    lines = uci.ready()  # answered while pondering, and no bestmove before the ponderhit
    assert not any(line.startswith("bestmove") for line in lines), lines
    uci.send("ponderhit")
    infos = uci.until("bestmove", timeout=10)
    board = chess.Board()
    for move in moves:
        board.push_uci(move)
    words = infos[-1].split()
    assert chess.Move.from_uci(words[1]) in board.legal_moves
    assert words[2] == "ponder" and info_lines(infos[:-1])[0]["nodes"] == str(board.legal_moves.count())
    # Ponder miss: the GUI stops the ponder search and must still get a bestmove.
    uci.send("go ponder wtime 10000 btime 10000")
    assert not any(line.startswith("bestmove") for line in uci.ready())
    uci.send("stop")
    assert uci.until("bestmove", timeout=10)[-1].startswith("bestmove ")


def test_short_time_controls_are_answered(uci: Uci) -> None:
    # Whether the limits hold is checked with the real engine on the server's own (fake) clock
    # in test_uci_server.py, and measured under load by bench/time_soak.py; here every short
    # limit gets a legal move with a score.
    uci.send("position startpos moves e2e4")
    for command in ("go movetime 150", "go wtime 200 btime 200", "go wtime 100 btime 100 movestogo 1",
                    "go wtime 0 btime 0", "go wtime 1 btime 1"):
        infos, best = uci.go(command, timeout=10)
        assert len(info_lines(infos)) == 1 and "score" in info_lines(infos)[0], (command, infos)
        assert chess.Move.from_uci(bestmove_of(best)) in chess.Board(
            "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1").legal_moves


def test_go_right_after_bestmove_is_not_taken_for_a_running_search(uci: Uci) -> None:
    # A GUI sends the next go as soon as it reads bestmove; the engine must not think it came early.
    uci.send("position startpos")
    for _ in range(60):
        infos, best = uci.go("go nodes 20")
        assert not any("while a search is running" in line for line in infos), infos
        assert chess.Move.from_uci(bestmove_of(best)) in chess.Board().legal_moves


def test_batch_size_one_gives_the_same_move(uci: Uci) -> None:
    uci.send("position startpos moves c2c4 e7e5")
    _, first = uci.go("go")
    uci.send("setoption name BatchSize value 1")
    infos, second = uci.go("go")
    assert first == second and info_lines(infos)[0]["nodes"] == str(chess.Board(
        "rnbqkbnr/pppp1ppp/8/4p3/2P5/8/PP1PPPPP/RNBQKBNR w KQkq - 0 2").legal_moves.count())


def test_seeded_temperature_is_reproducible(engine_command: list[str], tiny_weights: Path) -> None:
    def moves(seed: int) -> list[str]:
        proc = Uci(engine_command)
        try:
            proc.send(f"setoption name WeightsFile value {tiny_weights}")
            proc.send("setoption name Temperature value 0.2")
            proc.send(f"setoption name Seed value {seed}")
            proc.send("position startpos")
            proc.ready()
            return [bestmove_of(proc.go("go")[1]) for _ in range(12)]
        finally:
            proc.close()

    first = moves(5)
    assert first == moves(5)
    assert len(set(first)) > 1  # T = 0.2 spreads the choice over several moves


def test_chess960(uci: Uci) -> None:
    uci.send("setoption name UCI_Chess960 value true")
    fen = "1k5r/8/8/8/8/8/8/RK5R w HA - 0 1"
    uci.send(f"position fen {fen} moves b1a1")  # O-O-O written king-takes-rook
    uci.send("d")
    shown = uci.until("info string fen", timeout=5)[-1]
    assert shown == "info string fen 1k5r/8/8/8/8/8/8/2KR3R b - - 1 1"
    _, best = uci.go("go movetime 2000")
    board = chess.Board("1k5r/8/8/8/8/8/8/2KR3R b - - 1 1", chess960=True)
    assert chess.Move.from_uci(bestmove_of(best)) in board.legal_moves
    # Castling is offered in 960 notation.
    uci.send(f"position fen {fen}")
    infos, _ = uci.go("go movetime 2000 searchmoves b1a1 b1h1")
    assert any("pv b1a1" in line or "pv b1h1" in line for line in infos)
    assert not any("not a legal move" in line for line in infos)


def test_debug_logs_go_to_stderr_only(engine_command: list[str], tiny_weights: Path) -> None:
    proc = Uci(engine_command)
    proc.send("debug on")
    proc.send("uci")
    proc.until("uciok")
    proc.send(f"setoption name WeightsFile value {tiny_weights}")
    proc.ready()
    proc.send("position startpos")
    proc.go("go movetime 500")
    proc.close()  # also waits until stderr is read to its end
    assert proc.proc.returncode == 0
    assert all(line.split()[0] in UCI_WORDS for line in proc.seen)
    assert b">> go movetime 500" in b"".join(proc.stderr)


# --------------------------------------------------------------------------
# Raw pipes: malformed input
# --------------------------------------------------------------------------


def expect_info_then_healthy(uci: Uci, bad: str | bytes, fragment: str) -> None:
    """``bad`` gets an ``info string`` containing ``fragment``, and the engine answers ``isready``."""
    uci.send(bad)
    lines = uci.ready()
    messages = [line for line in lines if line.startswith("info string")]
    assert any(fragment in m for m in messages), (bad[:80], lines)


@pytest.mark.parametrize("bad, fragment", [
    ("position fen", "invalid position"),
    ("position fen not a fen at all", "invalid position"),
    ("position fen 8/8/8/8/8/8/8/8 w - - 0 1", "no white king"),
    ("position fen 4k3/8/8/8/8/8/8/8 w - - 0 1", "no white king"),
    ("position fen 4k3/8/8/8/8/8/8/4K3 w - - 0 1 moves e1e2 e8e9", "illegal move 'e8e9'"),
    ("position startpos moves e2e4 0000", "illegal move '0000'"),
    ("position fen 4k3/8/8/8/8/8/8/4K2R w - - 0 1 junk", "invalid position"),
    ("position", "usage"),
    ("position middlegame", "startpos or fen"),
    ("setoption name NoSuchOption value 3", "unknown option"),
    ("setoption name MultiPV value 1000", "between 1 and 256"),
    ("setoption name MultiPV value many", "integer"),
    ("setoption name UCI_ShowWDL value maybe", "true or false"),
    ("setoption name Backend value tpu", "one of"),
    ("setoption name Temperature value -1", "between 0 and"),
    ("setoption name Temperature value nan", "between 0 and"),
    ("setoption", "usage"),
    ("debug sideways", "usage"),
    ("flip the board", "unknown command"),
    (b"\xff\xfe\x80garbage \x00\x01\xc3(\n", "unknown command"),
    ("x" * 100_000, "unknown command"),
])
def test_malformed_input_is_explained(uci: Uci, bad: str | bytes, fragment: str) -> None:
    expect_info_then_healthy(uci, bad, fragment)
    # The engine still plays a legal move in a sane position.
    uci.send("position startpos moves e2e4")
    _, best = uci.go("go movetime 1000")
    board = chess.Board()
    board.push_uci("e2e4")
    assert chess.Move.from_uci(bestmove_of(best)) in board.legal_moves


def test_overlong_line_is_skipped(uci: Uci) -> None:
    uci.send(b"position startpos moves " + b"e2e4 " * 400_000 + b"\n")  # 2 MB
    lines = uci.ready()
    assert any("longer than" in line and "skipped" in line for line in lines)
    uci.send("position startpos moves d2d4")
    uci.send("d")
    assert uci.until("info string fen")[-1].endswith("b KQkq - 0 1")


def test_bad_go_parameters_are_skipped(uci: Uci) -> None:
    uci.send("position startpos")
    infos, best = uci.go("go wtime soon movetime 300 sideways winc")
    messages = [line for line in infos if line.startswith("info string")]
    assert any("wtime needs a number" in m for m in messages)
    assert any("unknown go parameter 'sideways'" in m for m in messages)
    assert any("winc needs a number" in m for m in messages)
    assert chess.Move.from_uci(bestmove_of(best)) in chess.Board().legal_moves


def test_bad_position_keeps_the_previous_one(uci: Uci) -> None:
    uci.send("position startpos moves e2e4")
    uci.send("position fen 8/8/8/8/8/8/8/8 w - - 0 1")
    uci.send("d")
    shown = uci.until("info string fen")[-1]
    assert shown == "info string fen rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"


def test_illegal_move_stops_the_position_before_it(uci: Uci) -> None:
    uci.send("position startpos moves e2e4 e7e5 e1e3 g1f3")
    message = uci.until("info string")[-1]
    assert "illegal move 'e1e3'" in message
    uci.send("d")
    shown = uci.until("info string fen")[-1]
    assert shown == "info string fen rnbqkbnr/pppp1ppp/8/4p3/4P3/8/PPPP1PPP/RNBQKBNR w KQkq - 0 2"
    _, best = uci.go("go movetime 1000")
    board = chess.Board("rnbqkbnr/pppp1ppp/8/4p3/4P3/8/PPPP1PPP/RNBQKBNR w KQkq - 0 2")
    assert chess.Move.from_uci(bestmove_of(best)) in board.legal_moves


def test_out_of_range_option_keeps_its_value(uci: Uci) -> None:
    uci.send("setoption name MultiPV value 2")
    uci.send("setoption name MultiPV value 0")
    uci.send("position startpos")
    infos, _ = uci.go("go movetime 1000")
    assert any("MultiPV stays 2" in line for line in infos)
    assert len(info_lines(infos)) == 2


def test_go_before_position_searches_the_start_position(uci: Uci) -> None:
    infos, best = uci.go("go movetime 1000")
    assert any("start position" in line for line in infos)
    assert chess.Move.from_uci(bestmove_of(best)) in chess.Board().legal_moves


def test_go_while_searching_ends_the_first_search(uci: Uci) -> None:
    uci.send("position startpos")
    uci.send("go infinite")
    uci.quiet(0.3)
    uci.send("go movetime 500")
    lines = uci.until("bestmove", timeout=5)
    lines += uci.until("bestmove", timeout=5)
    assert sum(line.startswith("bestmove") for line in lines) == 2
    assert any("while a search is running" in line for line in lines)
    assert uci.ready()[-1] == "readyok"


def test_quit_during_a_search_exits(engine_command: list[str], tiny_weights: Path) -> None:
    uci = Uci(engine_command)
    uci.send(f"setoption name WeightsFile value {tiny_weights}")
    uci.ready()
    uci.send("position startpos")
    uci.send("go infinite")
    uci.quiet(0.2)
    uci.send("quit")
    assert uci.proc.wait(10) == 0


def test_end_of_input_exits_cleanly(engine_command: list[str], tiny_weights: Path) -> None:
    script = f"uci\nsetoption name WeightsFile value {tiny_weights}\nisready\nposition startpos\ngo movetime 500\n"
    out = subprocess.run(engine_command, input=script.encode(), capture_output=True, timeout=60)
    assert out.returncode == 0
    lines = out.stdout.decode().splitlines()
    assert lines[-1].startswith("bestmove ")  # the timed search finished before the exit
    assert all(line.split()[0] in UCI_WORDS for line in lines)
    empty = subprocess.run(engine_command, input=b"", capture_output=True, timeout=60)
    assert empty.returncode == 0 and empty.stdout == b""


def test_missing_weights_still_play_legal_moves(engine_command: list[str], tmp_path: Path) -> None:
    proc = Uci(engine_command)
    try:
        missing = tmp_path / "nowhere.safetensors"
        proc.send("uci")
        proc.until("uciok")
        proc.send(f"setoption name WeightsFile value {missing}")
        lines = proc.ready()
        assert any(line.startswith("info string") and "not found" in line and str(missing) in line for line in lines)
        proc.send("position startpos moves e2e4")
        infos, best = proc.go("go wtime 5000 btime 5000")
        assert any("no network" in line for line in infos)
        # Front ends (lichess-bot's resign and draw rules) read a score from every search.
        assert any(" score cp 0 " in line for line in infos if line.startswith("info depth"))
        board = chess.Board()
        board.push_uci("e2e4")
        assert chess.Move.from_uci(bestmove_of(best)) in board.legal_moves
        proc.send(f"position fen {BACK_RANK_MATE}")
        infos, best = proc.go("go movetime 100")
        assert best == "bestmove a1a8"  # the fallback still finds a mate in one
        assert any(" score mate 1 " in line for line in infos)
    finally:
        proc.close()


@pytest.mark.parametrize("content, fragment", [
    (b"", "empty or truncated"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}", "not a safetensors file"),
    (os.urandom(4096), "safetensors"),
])
def test_corrupt_weights_are_named(engine_command: list[str], tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(content)
    proc = Uci(engine_command)
    try:
        proc.send(f"setoption name WeightsFile value {path}")
        lines = proc.ready()
        errors = [line for line in lines if line.startswith("info string error")]
        assert errors and fragment in errors[0] and "corrupt.safetensors" in errors[0]
        proc.send("position startpos")
        _, best = proc.go("go movetime 200")
        assert chess.Move.from_uci(bestmove_of(best)) in chess.Board().legal_moves
    finally:
        proc.close()


def test_bad_weights_keep_the_previous_model(engine_command: list[str], tiny_weights: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    proc = Uci(engine_command)
    try:
        proc.send(f"setoption name WeightsFile value {tiny_weights}")
        assert any("loaded" in line for line in proc.ready())
        proc.send(f"setoption name WeightsFile value {broken}")
        errors = [line for line in proc.ready() if line.startswith("info string error")]
        assert len(errors) == 1 and "broken.safetensors" in errors[0], errors
        assert f"still playing with {tiny_weights.name}" in errors[0]
        proc.send("position startpos")
        infos, best = proc.go("go movetime 2000")
        assert not any("no network" in line for line in infos), infos
        assert info_lines(infos)[0]["nodes"] == "20"
        assert chess.Move.from_uci(bestmove_of(best)) in chess.Board().legal_moves
    finally:
        proc.close()


def test_go_before_the_weights_are_loaded(engine_command: list[str], tiny_weights: Path) -> None:
    # Right after uciok the weights (and NumPy, ONNX Runtime) are still loading:
    # the move comes without the network, within the time, with a score.
    proc = Uci(engine_command)
    try:
        proc.send("uci")
        proc.until("uciok")
        proc.send(f"setoption name WeightsFile value {tiny_weights}")
        proc.send("position startpos moves e2e4")
        infos, best = proc.go("go movetime 100")
        assert any(line.startswith("info depth") and " score " in line for line in infos), infos
        board = chess.Board()
        board.push_uci("e2e4")
        assert chess.Move.from_uci(bestmove_of(best)) in board.legal_moves
        assert proc.ready()[-1] == "readyok"  # then the weights load as usual
        infos, _ = proc.go("go movetime 2000")
        assert info_lines(infos)[0]["nodes"] == "20"
    finally:
        proc.close()


def test_weights_without_graph_are_exported_quietly(engine_command: list[str], tmp_path: Path) -> None:
    # The ONNX graph is exported on first use; whatever the exporter prints must not reach stdout.
    from conftest import write_model
    from neuralengine.config import preset

    path = write_model(tmp_path, preset("tiny"), seed=9, onnx=False)
    env = dict(os.environ, NEURALENGINE_CACHE=str(tmp_path / "cache"))
    proc = Uci(engine_command, env=env)
    try:
        proc.send("uci")
        proc.send(f"setoption name WeightsFile value {path}")
        proc.send("setoption name Backend value onnx")
        lines = proc.ready()
        assert not any("error" in line for line in lines), lines
        proc.send("position startpos")
        infos, best = proc.go("go movetime 2000")
        assert info_lines(infos)[0]["nodes"] == "20"
        proc.close()
        assert all(line.split()[0] in UCI_WORDS for line in proc.seen), proc.seen
        assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    finally:
        proc.close()


def test_weights_that_appear_later_are_loaded(engine_command: list[str], tiny_weights: Path, tmp_path: Path) -> None:
    path = tmp_path / "later.safetensors"
    proc = Uci(engine_command)
    try:
        proc.send(f"setoption name WeightsFile value {path}")
        assert any("not found" in line for line in proc.ready())
        path.write_bytes(tiny_weights.read_bytes())
        path.with_suffix(".onnx").write_bytes(tiny_weights.with_suffix(".onnx").read_bytes())
        lines = proc.ready()
        assert not any("error" in line for line in lines) and any("loaded" in line for line in lines)
        proc.send("position startpos")
        infos, _ = proc.go("go movetime 2000")
        assert info_lines(infos)[0]["nodes"] == "20"
    finally:
        proc.close()


def test_playing_with_onnx_imports_no_training_code(tiny_weights: Path) -> None:
    """The inference path (engine, ONNX backend) never loads the trainer, the
    data pipeline or PyTorch."""
    code = ("import sys, chess; from neuralengine.engine import Engine; "
            f"e = Engine.open({str(tiny_weights)!r}, backend='onnx'); e.choose_move(chess.Board()); "
            "print(sorted(m for m in ('torch', 'neuralengine.train', 'neuralengine.data', 'neuralengine.export', "
            "'neuralengine.benchmarks', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_quit_while_isready_waits_on_a_fifo(engine_command: list[str], tmp_path: Path) -> None:
    # Opening a FIFO that nobody writes to blocks the loader for ever; quit must still end the process.
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    proc = Uci(engine_command)
    try:
        proc.send("uci")
        proc.until("uciok")
        proc.send(f"setoption name WeightsFile value {fifo}")
        proc.send("isready")
        proc.send("quit")
        try:
            code = proc.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError("the engine did not exit after quit") from None
        assert code == 0
        assert "readyok" not in proc.quiet(1.0)
    finally:
        proc.kill()
