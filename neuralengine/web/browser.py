"""The page in a real browser: a served ``neuralengine serve`` and headless Chromium driven by Selenium.

Used by the browser tests, the screenshot script (``tools/web_screenshots.py``)
and the latency benchmark (``bench/web_latency.py``). Chromium and its driver
are the system's (Debian: ``apt-get install chromium chromium-driver``);
Selenium is pointed at that driver, so it never downloads a browser.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Sequence

#: Where Debian and Ubuntu put the browser and its driver, tried after ``PATH``.
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_CANDIDATES = ("chromedriver",)
_DEBIAN_DRIVER = "/usr/bin/chromedriver"
_DEBIAN_CHROMIUM = "/usr/bin/chromium"

URL_LINE = re.compile(r"(http://\S+/)")


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    browser = next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)
    driver = next((p for p in map(shutil.which, DRIVER_CANDIDATES) if p), None)
    if browser is None and os.access(_DEBIAN_CHROMIUM, os.X_OK):
        browser = _DEBIAN_CHROMIUM
    if driver is None and os.access(_DEBIAN_DRIVER, os.X_OK):
        driver = _DEBIAN_DRIVER
    return (browser, driver) if browser and driver else None


def chromium(width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium under Selenium (raises RuntimeError without the browser or Selenium)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        raise RuntimeError("Selenium is not installed: pip install selenium") from exc
    found = find_browser()
    if found is None:
        raise RuntimeError("Chromium and its driver are not installed: apt-get install chromium chromium-driver")
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--hide-scrollbars", f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


class Server:
    """``neuralengine serve --port 0`` in a child process; :attr:`url` is the address it printed."""

    def __init__(self, args: Sequence[str] = (), env: dict[str, str] | None = None, timeout: float = 120.0) -> None:
        command = [sys.executable, "-m", "neuralengine", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env if env is not None else os.environ.copy())
        self.url = self._read_url(timeout)
        self.log: list[str] = []
        # Keep reading both pipes so that the server never blocks on a full one.
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()

    def _read_url(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        result: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            result.append(self.proc.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        line = result[0] if result else ""
        match = URL_LINE.search(line)
        if match is None:
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"neuralengine serve did not start: {line.strip()} {err.strip()}")
        return match.group(1)

    def _drain(self, stream: IO[str] | None) -> None:
        if stream is None:
            return
        for line in stream:
            self.log.append(line)

    def stop(self) -> int:
        """Stop the server as Ctrl-C does; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def save_screenshot(driver: Any, element_id: str | None, path: Path) -> None:
    """A PNG of the window (or of one element) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if element_id is None:
        driver.save_screenshot(str(path))
    else:
        driver.find_element("id", element_id).screenshot(str(path))


class Page:
    """The page of ``url`` in ``driver``, with the steps the tests, screenshots and benchmarks take.

    Every step waits on a condition of the page (an attribute the page sets when
    it has drawn an answer), never for a fixed time.
    """

    def __init__(self, driver: Any, url: str, timeout: float = 60.0) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.url = url
        self.wait = WebDriverWait(driver, timeout)

    def attribute(self, element_id: str, name: str) -> str | None:
        return self.driver.find_element("id", element_id).get_attribute(name)

    def open(self) -> None:
        """Load the page and wait for the first analysis (the start position) to be drawn."""
        self.driver.get(self.url)
        self.wait.until(lambda d: d.find_element("tag name", "body").get_attribute("data-started") == "1")
        self.wait_analysis(None)

    def wait_analysis(self, before: str | None) -> None:
        """Wait until an analysis newer than ``before`` (a ``data-ready`` value) is drawn."""
        self.wait.until(lambda d: self.attribute("view-analysis", "data-ready") not in (None, before))

    def tab(self, view: str) -> None:
        self.driver.find_element("css selector", f'.tab[data-view="{view}"]').click()
        self.wait.until(lambda d: "active" in (self.attribute(f"view-{view}", "class") or ""))

    def click_square(self, board_id: str, square: str) -> None:
        self.driver.find_element("css selector", f'#{board_id} rect[data-square="{square}"]').click()

    def board_fen(self, board_id: str) -> str:
        return self.driver.find_element("css selector", f"#{board_id} svg").get_attribute("data-fen")

    def load_fen(self, fen: str) -> None:
        before = self.attribute("view-analysis", "data-ready")
        box = self.driver.find_element("id", "fen-input")
        box.clear()
        box.send_keys(fen)
        self.driver.find_element("id", "fen-load").click()
        self.wait_analysis(before)

    def load_pgn(self, pgn: str) -> None:
        before = self.attribute("view-analysis", "data-ready")
        self.set_value("pgn-input", pgn)
        self.driver.find_element("id", "pgn-load").click()
        self.wait_analysis(before)

    def set_value(self, element_id: str, text: str) -> None:
        """Put ``text`` into a text box at once (typing a long PGN key by key is slow)."""
        self.driver.execute_script(
            "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
            "e.dispatchEvent(new Event('input'));", element_id, text)

    def arrows(self, board_id: str = "analysis-board") -> list[tuple[str, float]]:
        """The arrows on a board: (move, win probability), best first."""
        found = self.driver.execute_script(
            "return [...document.querySelectorAll(`#${arguments[0]} g.arrow`)]"
            ".map(a => [a.getAttribute('data-move'), a.getAttribute('data-win')]);", board_id)
        return [(move, float(win)) for move, win in reversed(found)]  # drawn worst first

    def move_rows(self) -> list[dict[str, str]]:
        """The rows of the analysis list as shown: uci, and the text of rank, san, win, cp, w, d, l, note."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#move-table tbody tr')].map(tr => {"
            "  const row = {uci: tr.getAttribute('data-uci')};"
            "  for (const td of tr.querySelectorAll('td')) row[td.className] = td.textContent;"
            "  return row; });")

    def new_game(self, side: str = "w", temperature: float = 0.0) -> None:
        """Start a game in the Play view (the engine moves first when the page plays Black)."""
        from selenium.webdriver.support.ui import Select

        self.tab("play")
        self.wait.until(lambda d: self.attribute("view-play", "data-plies") is not None)
        self.set_value("play-temperature", str(temperature))
        Select(self.driver.find_element("id", "play-side")).select_by_value(side)
        self.driver.execute_script("document.getElementById('view-play').removeAttribute('data-plies')")
        self.driver.find_element("id", "play-new").click()
        wanted = "0" if side == "w" else "1"
        self.wait.until(lambda d: self.attribute("view-play", "data-plies") == wanted)

    def play(self, uci: str) -> str:
        """Make a move by clicking its two squares and wait for the server's answer (the engine's move drawn on
        the board, the end of the game, or an error); the last move on the board, in UCI."""
        answers = int(self.attribute("view-play", "data-answers") or 0)
        self.click_square("play-board", uci[:2])
        self.click_square("play-board", uci[2:4])
        self.wait.until(lambda d: int(self.attribute("view-play", "data-answers") or 0) > answers)
        return self.driver.find_element("css selector", "#play-board svg").get_attribute("data-last-move")

    def review(self, pgn: str) -> None:
        """Review a pasted PGN and wait for the graph."""
        self.tab("review")
        self.driver.execute_script("document.getElementById('view-review').removeAttribute('data-review-ms');"
                                   "const e = document.getElementById('review-error'); e.hidden = true;"
                                   "e.textContent = '';")
        self.set_value("review-pgn", pgn)
        self.driver.find_element("id", "review-run").click()
        self.wait.until(lambda d: self.attribute("view-review", "data-review-ms") is not None
                        or bool(self.driver.find_element("id", "review-error").is_displayed()))

    def graph_points(self) -> list[float]:
        """White's win probability at each point of the review graph."""
        return [float(v) for v in self.driver.execute_script(
            "return [...document.querySelectorAll('#review-graph circle.point')]"
            ".map(c => c.getAttribute('data-white-win'));")]
