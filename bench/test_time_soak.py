"""``time_soak.py`` once: a few ``go movetime`` answers and one 1+0 game under one busy loop.

The full measurement (hundreds of answers per movetime, games at 1+0 and 3+0) is the script's own command
line.
"""

from __future__ import annotations

import json
from pathlib import Path

import time_soak


def test_time_soak(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "soak"
    argv = ["--movetime", "50", "100", "--moves", "5", "--tc", "1+0", "--games", "1", "--max-plies", "60",
            "--load", "1", "--out", str(out)]
    code = benchmark.pedantic(time_soak.main, args=(argv,), rounds=1, iterations=1)
    assert code == 0
    report = json.loads((out / "time_soak.json").read_text())
    assert report["answers"] == 10 and len(report["games"]) == 1
    benchmark.extra_info.update({key: report[key] for key in ("settings", "seconds", "loadavg_start", "overrun_rate",
                                                              "late_answers", "answers", "flag_falls_ours",
                                                              "movetime", "games")})
