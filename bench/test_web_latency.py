"""``web_latency.py`` once: a few clicked moves and one review of the 60-move game in headless Chromium.

The full measurement is the script's own command line.
"""

from __future__ import annotations

import json

import pytest
import web_latency


def test_web_latency(benchmark, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("starlette", reason="the web extra is not installed: pip install '.[web]'")
    pytest.importorskip("selenium", reason="Selenium is not installed: pip install selenium")
    from neuralengine.web.browser import find_browser

    if find_browser() is None:
        pytest.skip("Chromium and its driver are not installed (apt-get install chromium chromium-driver)")
    code = benchmark.pedantic(web_latency.main, args=(["--moves", "3", "--reviews", "1", "--json", "-"],),
                              rounds=1, iterations=1)
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["click_to_answer_ms"]["n"] == 3 and result["click_to_answer_ms"]["median"] > 0
    assert len(result["click_to_answer_samples"]) == 3
    assert result["review_positions"] == result["review_plies"] + 1 == 120
    assert result["review_page_ms"]["n"] == 1
    benchmark.extra_info.update(result)
