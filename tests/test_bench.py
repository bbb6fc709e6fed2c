"""``neuralengine bench``: the position suite, the report's consistency and the run record.

Speed itself is measured in ``bench/`` (pytest-benchmark), never asserted here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import chess
import pytest

from conftest import REPO
from neuralengine.benchmarks import machine, speed
from neuralengine.benchmarks.suite import GROUPS, draw_suite, load_suite, write_suite
from neuralengine.weights import file_sha256


def test_suite_has_its_groups() -> None:
    suite = load_suite()
    assert len(suite) == 100
    assert len({p.fen for p in suite}) == 100
    counts = {name: sum(p.group == name for p in suite) for name, _, _ in GROUPS}
    assert counts == {name: n for name, n, _ in GROUPS}
    for p in suite:
        board = chess.Board(p.fen)
        legal = board.legal_moves.count()
        pieces = chess.popcount(board.occupied)
        assert legal > 0 and board.is_valid()
        if p.group == "endgame":
            assert pieces <= 12
        elif p.group == "middlegame":
            assert pieces >= 20
        elif p.group == "few-moves":
            assert legal <= 8
        elif p.group == "many-moves":
            assert legal >= 45
    moves = [chess.Board(p.fen).legal_moves.count() for p in suite]
    assert min(moves) <= 8 and max(moves) >= 45


def test_suite_generation_is_seeded(shared_data: Path, tmp_path: Path) -> None:
    # A small file in the seed-data format: the first games of one shard.
    import lzma

    lines = []
    with lzma.open(shared_data / "av" / "d7_s101-000.txt.xz", "rt") as fh:
        for line in fh:
            lines.append(line)
            if len(lines) >= 1500:
                break
    data = tmp_path / "av.txt"
    data.write_text("".join(lines))
    groups = [(name, 3, text) for name, _, text in GROUPS]
    first = draw_suite(str(data), 3, groups)
    assert [p.group for p in first] == [name for name, _, _ in GROUPS for _ in range(3)]
    assert first == draw_suite(str(data), 3, groups)
    assert first != draw_suite(str(data), 4, groups)
    with pytest.raises(ValueError, match="only"):
        draw_suite(str(data), 3, [("endgame", 10000, "")])
    out = tmp_path / "suite.fen"
    write_suite(out, first, data.name, 3)
    assert load_suite(out) == first
    bad = tmp_path / "bad.fen"
    bad.write_text("# group=x\nnot a fen\n")
    with pytest.raises(ValueError, match="bad.fen:2"):
        load_suite(bad)


def test_percentile() -> None:
    values = list(range(1, 101))
    assert speed.percentile(values, 50) == pytest.approx(50.5)
    assert speed.percentile(values, 95) == pytest.approx(95.05)
    assert speed.percentile([3.0], 95) == 3.0
    assert speed.percentile([], 50) != speed.percentile([], 50)  # nan


def test_bench_report(tiny_weights: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = speed.main(["--weights", str(tiny_weights), "--backend", "onnx", "--positions", "6", "--json",
                       "--quiet", "--out", str(out)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out.read_text())
    suite = load_suite()[:6]
    nodes = sum(chess.Board(p.fen).legal_moves.count() for p in suite)
    assert report["suite"] == {"positions": 6, "nodes": nodes, "passes": 1, "file": "built-in"}
    (result,) = report["results"]
    assert result["backend"] == "onnx" and result["threads"] == 1
    assert result["positions"] == 6 and result["nodes"] == nodes
    assert result["positions_per_s"] == pytest.approx(6 / result["seconds"])
    assert result["nodes_per_s"] == pytest.approx(nodes / result["seconds"])
    lat = result["move_latency_ms"]
    assert 0 < lat["median"] <= lat["p95"] <= lat["max"]
    assert result["model"]["sha256"] == file_sha256(tiny_weights)
    assert result["model"]["attention"] == "full" and result["model"]["parameters"] > 0
    assert sum(g["positions"] for g in result["by_group"].values()) == 6
    record = report["record"]
    assert record["model"]["sha256"] == file_sha256(tiny_weights)
    assert record["versions"]["chess"] == chess.__version__
    assert record["machine"]["cpus_usable"] >= 1


@pytest.mark.slow
def test_bench_table_and_compare_attention(capsys: pytest.CaptureFixture[str]) -> None:
    code = speed.main(["--compare-attention", "--preset", "tiny", "--backend", "onnx", "--positions", "3",
                       "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "shared_board vs full attention" in text
    assert "positions/s" in text and "random weights" in text
    code = speed.main(["--compare-attention", "--preset", "tiny", "--backend", "torch-cpu", "--positions", "3",
                       "--quiet", "--json", "--train"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    full, shared, head = report["results"]
    assert (full["label"], shared["label"], head["label"]) == ("full", "shared_board", "board_head")
    assert full["model"]["parameters"] == shared["model"]["parameters"]
    assert full["nodes"] == shared["nodes"] == head["nodes"]
    # Training steps of both layouts learn from the same positions' action values.
    training = {r["attention"]: r for r in report["training"]}
    assert set(training) == {"full", "shared_board", "board_head"}
    assert training["full"]["action_values"] == training["shared_board"]["action_values"] \
        == training["board_head"]["action_values"] > 0
    assert all(r["action_values_per_s"] > 0 for r in training.values())
    (comparison,) = report["comparison"]
    assert comparison["positions_speedup"] == pytest.approx(
        shared["positions_per_s"] / full["positions_per_s"])
    assert comparison["board_head_speedup"] == pytest.approx(head["positions_per_s"] / full["positions_per_s"])


def test_bench_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert speed.main(["--weights", str(tmp_path / "none.safetensors")]) == 2
    assert speed.main(["--backend", "tpu"]) == 2
    assert speed.main(["--positions", "0"]) == 2
    assert speed.main(["--compare-attention", "--preset", "huge"]) == 2
    err = capsys.readouterr().err
    assert "no weights file" in err and "unknown backend" in err and "unknown preset" in err


def test_machine_record(tiny_weights: Path) -> None:
    record = machine.run_record(tiny_weights, extra="x")
    assert record["extra"] == "x"
    assert record["model"]["parameters"] > 0 and record["model"]["path"] == tiny_weights.name
    assert record["model"]["architecture"]["num_layers"] == 2
    assert record["versions"]["python"].count(".") == 2
    assert machine.model_info(tiny_weights.parent / "missing.safetensors")["error"]
    assert machine.model_info(None) is None
    source = record["source"]
    if source is not None:
        assert len(source["commit"]) == 40


@pytest.mark.parametrize("threads", ["0", "100000"])
def test_bench_threads_outside_the_uci_range_are_refused(threads: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        speed.main(["--threads", threads])
    assert exc.value.code == 2
    assert "--threads" in capsys.readouterr().err


#: An engine that thinks 0.3 s on every move, whatever the limit.
SLOW_ENGINE = textwrap.dedent("""\
    import sys, time
    import chess
    board = chess.Board()
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "uci":
            print("uciok", flush=True)
        elif words[0] == "isready":
            print("readyok", flush=True)
        elif words[0] == "position":
            fen = " ".join(words[2:8])
            board = chess.Board(fen)
            for uci in words[words.index("moves") + 1:] if "moves" in words else []:
                board.push_uci(uci)
        elif words[0] == "go":
            time.sleep(0.3)
            move = min(board.legal_moves, key=lambda m: m.uci())
            print(f"info depth 1 score cp 0 nodes {board.legal_moves.count()} pv {move.uci()}")
            print(f"bestmove {move.uci()}", flush=True)
        elif words[0] == "quit":
            break
""")


def load_time_soak(monkeypatch: pytest.MonkeyPatch):
    """``bench/time_soak.py`` as a module (registered while the test runs, as its dataclasses need)."""
    spec = importlib.util.spec_from_file_location("time_soak", REPO / "bench" / "time_soak.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "time_soak", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_time_soak_counts_late_answers_and_flag_falls(tmp_path: Path, tiny_weights: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # An engine that always answers after 0.3 s: every answer at movetime 100 is later than
    # 100 + 50 ms, and on a 1 s clock it loses on time by its fourth move.
    engine = tmp_path / "slow_engine.py"
    engine.write_text(SLOW_ENGINE)
    soak = load_time_soak(monkeypatch)
    out = tmp_path / "soak"
    assert soak.main(["--engine-cmd", sys.executable, str(engine), "--weights", str(tiny_weights),
                      "--movetime", "100", "--moves", "3", "--tc", "1+0", "--games", "1", "--load", "0",
                      "--out", str(out)]) == 0
    report = json.loads((out / "time_soak.json").read_text())
    assert report["answers"] == report["late_answers"] == 3 and report["overrun_rate"] == 1.0
    assert all(ms >= 300 for ms in report["answer_ms"]["100"])
    [row] = report["movetime"]
    assert row["movetime_ms"] == 100 and row["answers"] == row["over_movetime"] == row["late"] == 3
    assert row["evaluated"] == 3
    [games] = report["games"]
    assert games["tc"] == "1+0" and games["games"] == 1 and games["flag_falls_ours"] == 1
    assert 1 <= games["our_moves"] <= 4 and report["flag_falls_ours"] == 1
    assert report["game_records"][0]["reason"] == "flag fall"
    assert "overrun rate 3/3 = 100.0%; flag falls of the engine: 1 in 1 games" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        soak.main(["--tc", "40/60+0.6"])


def test_every_bench_script_has_a_benchmark_and_the_default_run_leaves_bench_out() -> None:
    """``pytest bench`` runs every measuring script of ``bench/`` through a pytest-benchmark test of its own,
    which keeps the script's figures; the default ``pytest`` run collects ``tests/`` only."""
    bench = REPO / "bench"
    scripts = sorted(p.stem for p in bench.glob("*.py") if not p.name.startswith("test_") and p.name != "conftest.py")
    assert "time_soak" in scripts
    for name in scripts:
        test = bench / f"test_{name}.py"
        assert test.is_file(), f"bench/{name}.py has no bench/test_{name}.py"
        text = test.read_text(encoding="utf-8")
        assert f"import {name}\n" in text and "benchmark.pedantic(" in text and "extra_info" in text, test.name
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'testpaths = ["tests"]' in pyproject.splitlines()
