"""``textlm_speed.py`` once, at a small size: the pgn_lm player's cold and warm move choices."""

from __future__ import annotations

import textlm_speed


def test_textlm_speed(benchmark) -> None:  # type: ignore[no-untyped-def]
    rows = benchmark.pedantic(textlm_speed.measure, kwargs={"layers": 2, "width": 64, "heads": 4, "block": 256,
                                                            "plies": (10, 30), "repeats": 1},
                              rounds=1, iterations=1)
    assert [r["plies"] for r in rows] == [10, 30]
    assert all(r["legal_moves"] > 0 and r["cold_ms"] > 0 and r["warm_ms"] > 0 for r in rows)
    benchmark.extra_info["rows"] = rows
