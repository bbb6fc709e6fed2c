"""``llm_http_overhead.py`` once: a short game of the HTTP language-model player against the in-process fake."""

from __future__ import annotations

import llm_http_overhead


def test_llm_http_overhead(benchmark) -> None:  # type: ignore[no-untyped-def]
    figures = benchmark.pedantic(llm_http_overhead.measure, args=(None, 12), kwargs={"progress": False},
                                 rounds=1, iterations=1)
    assert figures["plies"] == 12 and figures["scored_moves"] == 12 and figures["fallbacks"] == 0
    assert figures["request_kib_median"] > 1  # a prompt per legal move, each with the whole game
    benchmark.extra_info.update({k: v for k, v in figures.items() if k != "rows"})
