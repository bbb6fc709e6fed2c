"""``cascade_clock.py`` once: a tiny random model standing in for the big one, a few plies of one game at 1+0.

The full measurement (a 270M-shaped model, the test games at 3+2, 5+3, 10+5 and 15+10) is the script's own
command line.
"""

from __future__ import annotations

import json

import cascade_clock
import pytest


def test_cascade_clock(benchmark, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch", reason="the random model is written with PyTorch (the torch extra)")
    argv = ["--preset", "tiny", "--games", "1", "--max-plies", "12", "--tc", "1+0", "--threads", "1", "--json"]
    code = benchmark.pedantic(cascade_clock.main, args=(argv,), rounds=1, iterations=1)
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    [row] = report["tcs"]
    assert row["tc"] == "1+0" and row["moves"] == 12 and row["flags"] == 0
    assert row["full"] + row["partial"] + row["fast"] + row["static"] == row["moves"]
    assert report["latency"]["big_per_move_s"] >= 0 and len(report["latency"]["big_samples"]) == 4
    benchmark.extra_info.update(row)
