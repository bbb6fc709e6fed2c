"""``neuralengine analyse``: the ranked move list a person reads."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import chess
import pytest

from neuralengine.analyse import main
from neuralengine.encoding import win_prob_to_cp
from neuralengine.engine import Engine

ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+([\d.]+)\s+(\S+)\s*(.*)$")


def rows(text: str) -> list[tuple[int, str, str, float, str, str]]:
    out = []
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            rank, uci, san, pct, cp, note = match.groups()
            out.append((int(rank), uci, san, float(pct), cp, note))
    return out


def test_start_position_lists_every_move_ranked(tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--weights", str(tiny_weights), "--backend", "onnx"]) == 0
    text = capsys.readouterr().out
    assert "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1" in text
    table = rows(text)
    board = chess.Board()
    assert [r[0] for r in table] == list(range(1, 21))
    assert {r[1] for r in table} == {m.uci() for m in board.legal_moves}
    for _, uci, san, pct, cp, _ in table:
        assert san == board.san(chess.Move.from_uci(uci))
        assert abs(int(cp) - win_prob_to_cp(pct / 100)) <= 2  # the percentage is rounded
    pcts = [r[3] for r in table]
    assert pcts == sorted(pcts, reverse=True)
    # The same ranking as the engine's own.
    engine = Engine.open(tiny_weights, "onnx", warm_up=False)
    assert [r[1] for r in table] == [s.move.uci() for s in engine.choose_move(board).ranked]


def test_fen_moves_top_and_mate(tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fen = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"
    assert main(["--weights", str(tiny_weights), "--backend", "onnx", "--fen", fen, "--top", "3"]) == 0
    table = rows(capsys.readouterr().out)
    assert len(table) == 3
    assert table[0][1:3] == ("a1a8", "Ra8#") and table[0][4] == "#1" and "mate in 1" in table[0][5]
    assert main(["--weights", str(tiny_weights), "--backend", "onnx", "--fen", fen, "--no-mate-rule"]) == 0
    assert all(r[4] != "#1" for r in rows(capsys.readouterr().out))
    assert main(["--weights", str(tiny_weights), "--backend", "onnx", "--moves", "g1f3", "g8f6", "f3g1", "f6g8",
                 "g1f3", "g8f6"]) == 0
    table = {r[1]: r for r in rows(capsys.readouterr().out)}
    assert table["f3g1"][3] == 50.0 and "draw" in table["f3g1"][5]


def test_game_over_position(tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mated = "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3"
    assert main(["--weights", str(tiny_weights), "--backend", "onnx", "--fen", mated]) == 0
    assert "checkmate" in capsys.readouterr().out


@pytest.mark.parametrize("args, code, message", [
    (["--fen", "not a fen"], 2, "invalid FEN"),
    (["--fen", "8/8/8/8/8/8/8/8 w - - 0 1"], 2, "invalid position"),
    (["--moves", "e2e5"], 2, "illegal move 'e2e5'"),
    (["--weights", "missing.safetensors"], 1, "weights file not found"),
])
def test_errors_are_one_line(args: list[str], code: int, message: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_command_line(engine_command: list[str], tiny_weights: Path) -> None:
    out = subprocess.run(engine_command + ["analyse", "--weights", str(tiny_weights), "--moves", "e2e4", "--top", "5"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    table = rows(out.stdout)
    assert len(table) == 5
    board = chess.Board()
    board.push_uci("e2e4")
    assert all(chess.Move.from_uci(r[1]) in board.legal_moves for r in table)


@pytest.mark.parametrize("threads", ["0", "-5", "100000", "two"])
def test_threads_outside_the_uci_range_are_refused(threads: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--threads", threads])
    assert exc.value.code == 2
    assert "--threads" in capsys.readouterr().err
