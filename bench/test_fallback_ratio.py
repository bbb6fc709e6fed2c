"""``fallback_ratio.py`` once: one short bullet game of the shipped model against Stockfish.

The full measurement (several games at each of several time controls) is the script's own command line.
"""

from __future__ import annotations

import json

import fallback_ratio
import pytest


def test_fallback_ratio(benchmark, stockfish: str, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    argv = ["--tc", "1+0", "--games", "1", "--max-plies", "40", "--stockfish", stockfish, "--json"]
    code = benchmark.pedantic(fallback_ratio.main, args=(argv,), rounds=1, iterations=1)
    assert code == 0
    [tally] = json.loads(capsys.readouterr().out)
    assert tally["tc"] == "1+0" and tally["games"] == 1 and tally["moves"] > 0
    assert tally["network"] + tally["partial"] + tally["fallback"] == tally["moves"]
    benchmark.extra_info.update(tally)
