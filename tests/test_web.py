"""``neuralengine serve``: the HTTP API, its refusals, the model list and the evaluation queue.

The application runs in a real uvicorn server on a free port of 127.0.0.1
(in a thread, or as the ``neuralengine serve`` process) and is spoken to with
plain HTTP requests. The browser tests are in ``test_web_browser.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import chess
import chess.pgn
import pytest

pytest.importorskip("starlette", reason="the web extra is not installed: pip install '.[web]'")
pytest.importorskip("uvicorn", reason="the web extra is not installed: pip install '.[web]'")

import uvicorn  # noqa: E402

from neuralengine.analyse import main as analyse_main  # noqa: E402
from neuralengine.config import preset  # noqa: E402
from neuralengine.paths import default_weights  # noqa: E402
from neuralengine.web.app import BODY_LIMIT, create_app  # noqa: E402
from neuralengine.web.browser import Server  # noqa: E402
from neuralengine.web.models import Catalogue, EngineService  # noqa: E402
from neuralengine.web.review import judge, winning_chances  # noqa: E402

from conftest import SHARED_SAMPLE, write_model  # noqa: E402

GAMES = SHARED_SAMPLE / "tournament_logs" / "cutechess_match.pgn"
ITALIAN = "r1bqkbnr/pppp1ppp/2n5/4p3/2B1P3/5N2/PPPP1PPP/RNBQK2R b KQkq - 3 3"


def game_pgn(number: int) -> str:
    with open(GAMES, encoding="utf-8") as fh:
        for _ in range(number):
            game = chess.pgn.read_game(fh)
    assert game is not None
    return str(game)


class Served:
    """A uvicorn server for ``app`` in a thread, on a socket already listening (requests queue until it runs)."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()

    def request(self, path: str, body: Any = None, *, raw: bytes | None = None,
                method: str | None = None) -> tuple[int, Any]:
        """(status, decoded JSON or text) of one request."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                status, text, kind = resp.status, resp.read().decode(), resp.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            status, text, kind = exc.code, exc.read().decode(), exc.headers.get("content-type", "")
        return status, json.loads(text) if kind.startswith("application/json") else text

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped model and two tiny random ones (an action-value and a behavioural-cloning model)."""
    folder = tmp_path_factory.mktemp("web-models")
    return {"shipped": default_weights(), "tiny": write_model(folder, preset("tiny"), name="tiny"),
            "bc": write_model(folder, preset("tiny", kind="behavioral_cloning"), name="bc")}


@pytest.fixture(scope="module")
def served(models: dict[str, Path]) -> Iterator[Served]:
    catalogue = Catalogue([str(models["tiny"]), str(models["bc"])], downloaded=False)
    service = EngineService(catalogue)
    server = Served(create_app(catalogue, service))
    yield server
    server.close()
    service.close()


def cli_table(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str, str]]:
    """(uci, win %, cp) of every row ``neuralengine analyse`` prints."""
    assert analyse_main(args) == 0
    rows = re.findall(r"^\s*\d+\s+(\S+)\s+\S+\s+([\d.]+)\s+(\S+)", capsys.readouterr().out, re.M)
    assert rows
    return rows


def test_the_page_and_its_files(served: Served) -> None:
    status, page = served.request("/")
    assert status == 200 and '<script src="/app.js">' in page and 'id="move-table"' in page
    assert served.request("/app.js")[0] == 200 and served.request("/style.css")[0] == 200
    status, pieces = served.request("/pieces.svg")
    assert status == 200 and all(f'id="{colour}-{name}"' in pieces for colour in ("white", "black")
                                 for name in ("pawn", "knight", "bishop", "rook", "queen", "king"))


def test_models_lists_named_and_shipped_weights_without_paths(served: Served, models: dict[str, Path]) -> None:
    status, data = served.request("/api/models")
    assert status == 200
    assert [(m["id"], m["source"], m["kind"]) for m in data["models"]] == [
        ("file-1", "command line", "action_value"), ("file-2", "command line", "behavioral_cloning"),
        ("shipped", "shipped", "action_value")]
    assert data["default"] == "file-1" and data["body_limit"] == BODY_LIMIT
    assert data["models"][2]["parameters"] == 1_511_296
    text = json.dumps(data)
    assert str(models["tiny"].parent) not in text and str(models["shipped"].parent) not in text


def test_downloaded_deepmind_models_are_listed(models: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A model converted by ``neuralengine download`` (in the cache) is offered; the others are not."""
    monkeypatch.setenv("NEURALENGINE_CACHE", str(tmp_path))
    target = tmp_path / "deepmind" / "models" / "9M.safetensors"
    target.parent.mkdir(parents=True)
    shutil.copy(models["tiny"], target)
    (target.parent / "136M.safetensors").write_bytes(b"not weights")  # damaged: left out
    catalogue = Catalogue()
    assert [(e.id, e.label, e.source) for e in catalogue.entries] == [
        ("shipped", "neuralengine.safetensors", "shipped"), ("deepmind-9M", "9M", "DeepMind")]
    # Named on the command line (by DeepMind's name, or as the shipped file), a model is listed once.
    catalogue = Catalogue(["9M", str(default_weights())])
    assert [(e.id, e.label, e.source) for e in catalogue.entries] == [
        ("file-1", "9M", "command line"), ("file-2", "neuralengine.safetensors", "command line")]


def test_analyse_ranks_every_move_as_the_command_does(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    status, data = served.request("/api/analyse", {"model": "shipped", "fen": ITALIAN, "arrows": 4})
    assert status == 200
    result = data["analysis"]
    rows = result["rows"]
    board = chess.Board(ITALIAN)
    assert {r["uci"] for r in rows} == {m.uci() for m in board.legal_moves} == set(data["legal"])
    expected = cli_table(["--fen", ITALIAN], capsys)
    assert [(r["uci"], f"{r['win_prob'] * 100:.2f}", f"{r['cp']:+d}") for r in rows] == expected
    for row in rows:
        assert sum(row["wdl"]) == 1000 and row["san"] == board.san(chess.Move.from_uci(row["uci"]))
    # Arrows: the best four, in the list's order, thinner and paler down the list.
    assert [a["move"] for a in result["arrows"]] == [r["uci"] for r in rows[:4]]
    widths = [a["width"] for a in result["arrows"]]
    assert widths == sorted(widths, reverse=True) and widths[0] == 13.0
    # The position's W/D/L is the best move's, seen from White (Black is to move here).
    w, d, loss = rows[0]["wdl"]
    assert result["wdl_white"] == [loss, d, w]
    assert result["label"] == "win %" and result["rule"] is None


def test_the_rule_that_decided_a_move_is_named(served: Served) -> None:
    mate = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"
    status, data = served.request("/api/analyse", {"model": "file-1", "fen": mate})
    assert status == 200
    first = data["analysis"]["rows"][0]
    assert (first["san"], first["cp"], first["rule"], first["note"]) == ("Ra8#", None, "mate", "mate in 1")
    assert data["analysis"]["rule"].startswith("mate in 1: Ra8#") and data["analysis"]["wdl_white"] == [1000, 0, 0]
    # A repetition: going back with the knight a third time is a draw by rule.
    moves = ["g1f3", "g8f6", "f3g1", "f6g8", "g1f3", "g8f6"]
    status, data = served.request("/api/analyse", {"model": "file-1", "moves": moves})
    by_move = {r["uci"]: r for r in data["analysis"]["rows"]}
    assert by_move["f3g1"]["rule"] == "draw" and by_move["f3g1"]["win_prob"] == 0.5
    assert "Ng1" in data["analysis"]["draw_moves"]


def test_game_over_position_has_no_moves(served: Served) -> None:
    mated = "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3"
    status, data = served.request("/api/analyse", {"fen": mated})
    assert status == 200 and data["analysis"]["rows"] == [] and data["legal"] == []
    assert data["game_over"] == "checkmate (0-1)"
    status, data = served.request("/api/play", {"fen": mated})
    assert status == 200 and data["reply"] is None


def test_play_answers_with_the_models_move(served: Served) -> None:
    status, data = served.request("/api/play", {"model": "shipped", "moves": ["e2e4"], "temperature": 0})
    assert status == 200
    board = chess.Board()
    board.push_uci("e2e4")
    reply = chess.Move.from_uci(data["reply"]["uci"])
    assert reply in board.legal_moves and data["moves"] == ["e2e4", reply.uci()]
    board.push(reply)
    assert data["fen"] == board.fen() and data["sans"][1] == data["reply"]["san"]
    # Temperature 0 plays the best move of the analysis.
    _, analysis = served.request("/api/analyse", {"model": "shipped", "moves": ["e2e4"]})
    assert analysis["analysis"]["rows"][0]["uci"] == reply.uci()
    # A high temperature samples: still a legal move, with any model of the list.
    status, data = served.request("/api/play", {"model": "file-1", "moves": [], "temperature": "50"})
    assert status == 200 and data["reply"]["temperature"] == 50.0
    assert chess.Move.from_uci(data["reply"]["uci"]) in chess.Board().legal_moves


def test_position_reads_fen_and_pgn(served: Served) -> None:
    status, data = served.request("/api/position", {"pgn": game_pgn(3)})
    assert status == 200 and len(data["moves"]) == 48 and len(data["fens"]) == 49
    assert data["headers"]["White"] == "sf1400" and data["sans"][0] == "Nf3"
    status, data = served.request("/api/position", {"fen": ITALIAN})
    assert status == 200 and data["fen"] == ITALIAN and data["turn"] == "b" and data["moves"] == []


def test_review_has_one_point_per_position_and_lichess_marks(served: Served) -> None:
    pgn = game_pgn(3)  # 48 plies, White is mated
    status, data = served.request("/api/review", {"model": "shipped", "pgn": pgn})
    assert status == 200
    points = data["points"]
    assert len(points) == 49 and [p["ply"] for p in points] == list(range(49))
    assert points[-1]["terminal"] == "checkmate" and points[-1]["white_win"] == 0.0
    counts = {"white": {"inaccuracy": 0, "mistake": 0, "blunder": 0}, "black": {"inaccuracy": 0, "mistake": 0,
                                                                              "blunder": 0}}
    board = chess.Board()
    for point, move in zip(points, data["moves"]):
        assert point["fen"] == board.fen() and point["played"]["uci"] == move
        best, played = point["best"]["win_prob"], point["played"]["win_prob"]
        assert point["drop"] == pytest.approx(2 * (best - played), abs=1e-6) and point["drop"] >= 0
        assert point["mark"] == judge(best, played)
        if point["mark"]:
            counts["white" if point["turn"] == "w" else "black"][point["mark"]] += 1
        side = point["white_win"] if board.turn == chess.WHITE else 1 - point["white_win"]
        assert side == pytest.approx(best)
        board.push_uci(move)
    assert data["summary"] == counts and sum(sum(c.values()) for c in counts.values()) > 0


def test_judgements_use_lichess_thresholds() -> None:
    """Drops of 0.1, 0.2 and 0.3 in winning chances (−1 … +1): 5, 10 and 15 points of win probability."""
    assert winning_chances(0.5) == 0.0 and winning_chances(1.0) == 1.0
    assert judge(0.60, 0.56) is None
    assert judge(0.60, 0.55) == "inaccuracy"
    assert judge(0.60, 0.5) == "mistake"
    assert judge(0.60, 0.45) == "blunder"
    assert judge(0.60, 0.61) is None


def test_review_needs_win_probabilities(served: Served) -> None:
    status, data = served.request("/api/review", {"model": "file-2", "pgn": "1. e4 e5 *"})
    assert status == 400 and "predicts moves, not win probabilities" in data["error"]


TEN_MB = "1. e4 e5 " + "x" * (10 << 20)


@pytest.mark.parametrize("path, body, status, message", [
    ("/api/analyse", {"fen": "not a fen"}, 400, "invalid FEN"),
    ("/api/analyse", {"fen": "8/8/8/8/8/8/8/8 w - - 0 1"}, 400, "kings missing"),
    ("/api/analyse", {"moves": ["e2e5"]}, 400, "illegal move 'e2e5'"),
    ("/api/analyse", {"moves": "e2e4"}, 400, "'moves' must be a list"),
    ("/api/analyse", {"moves": [1, 2]}, 400, "'moves' must be a list of moves"),
    ("/api/analyse", {"moves": ["e2e4", "e7e5"] * 601}, 413, "at most 1200"),
    ("/api/analyse", {"fen": "x" * 500}, 400, "invalid FEN"),
    ("/api/analyse", {"model": "270M"}, 400, "unknown model '270M'"),
    ("/api/analyse", {"model": "../../weights/neuralengine.safetensors"}, 400, "unknown model"),
    ("/api/analyse", {"arrows": 99}, 400, "'arrows' must be between"),
    ("/api/play", {"temperature": -1}, 400, "temperature must be a number from 0 to 100"),
    ("/api/play", {"temperature": "hot"}, 400, "is not a number"),
    ("/api/position", {"pgn": "1. e4 e5 2. Ke3 *"}, 400, "illegal move after 1. e4 e5"),
    ("/api/position", {"pgn": "[FEN \"bad\"]\n\n1. e4 *"}, 400, "FEN header is invalid"),
    ("/api/review", {"pgn": "hello"}, 400, "holds no moves"),
    ("/api/review", {"pgn": 7}, 400, "'pgn' must be a string"),
    ("/api/review", {"pgn": TEN_MB}, 413, "over the limit"),
])
def test_bad_input_is_a_clear_4xx(served: Served, path: str, body: Any, status: int, message: str) -> None:
    got, data = served.request(path, body)
    assert (got, type(data)) == (status, dict), data
    assert message in data["error"] and "Traceback" not in data["error"]


def test_bodies_that_are_not_json_objects(served: Served) -> None:
    assert served.request("/api/analyse", raw=b"{not json") == (400, {"error": "the request body is not JSON"})
    assert served.request("/api/analyse", raw=b"[1, 2]")[0] == 400
    assert served.request("/api/analyse", raw=b"\xff\xfe")[0] == 400


@pytest.mark.parametrize("path", ["/etc/passwd", "/static/../setup.py", "/weights/neuralengine.safetensors",
                                  "/app.js/../../setup.py", "/api/models/shipped"])
def test_no_route_reads_a_file_by_path(served: Served, path: str) -> None:
    status, data = served.request(path)
    assert status == 404 and data == {"error": "no such page"}


def test_wrong_method(served: Served) -> None:
    assert served.request("/api/analyse") == (405, {"error": "method not allowed"})


def test_a_slow_evaluation_never_blocks_the_page(models: dict[str, Path]) -> None:
    """While the worker is held by a long job, the page and the model list still answer, and an
    analysis waits its turn in the queue instead of failing."""
    catalogue = Catalogue(downloaded=False)
    service = EngineService(catalogue)
    server = Served(create_app(catalogue, service))
    try:
        service.preload().result(timeout=120)
        entered, release = threading.Event(), threading.Event()

        def slow(engine: object) -> None:
            entered.set()
            release.wait(timeout=120)

        held = service.submit("shipped", slow)
        assert entered.wait(timeout=60)
        answers: dict[str, Any] = {}
        waiting = threading.Thread(target=lambda: answers.update(
            analyse=server.request("/api/analyse", {"moves": ["e2e4"]})))
        waiting.start()
        assert server.request("/")[0] == 200
        assert server.request("/api/models")[0] == 200
        assert server.request("/api/position", {"moves": ["e2e4"]})[0] == 200
        assert "analyse" not in answers and not held.done()
        release.set()
        waiting.join(timeout=120)
        status, data = answers["analyse"]
        assert status == 200 and len(data["analysis"]["rows"]) == 20
    finally:
        server.close()
        service.close()


def test_a_full_queue_is_refused_with_429(models: dict[str, Path]) -> None:
    catalogue = Catalogue(downloaded=False)
    service = EngineService(catalogue, max_pending=1)
    try:
        release = threading.Event()
        service.submit("shipped", lambda engine: release.wait(timeout=120))
        with pytest.raises(Exception) as refused:
            service.submit("shipped", lambda engine: None)
        assert getattr(refused.value, "status", None) == 429
        release.set()
    finally:
        service.close()


def test_serve_listens_on_localhost_and_prints_the_url() -> None:
    with Server() as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", server.url)
        with urllib.request.urlopen(server.url + "api/models", timeout=60) as resp:
            assert json.load(resp)["default"] == "shipped"
    assert server.proc.returncode == 0
    assert "Traceback" not in "".join(server.log)


@pytest.mark.parametrize("argv, message", [
    (["--weights", "missing.safetensors"], "cannot use the weights: weights file not found"),
    (["--weights", "270M"], "not downloaded yet"),
])
def test_serve_refuses_weights_it_cannot_use(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from neuralengine.web.serve import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEURALENGINE_CACHE", str(tmp_path / "cache"))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_serve_without_the_web_extra_says_what_to_install(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from neuralengine.web.serve import main

    monkeypatch.setitem(__import__("sys").modules, "uvicorn", None)
    assert main([]) == 1
    assert "pip install 'neuralengine[web]'" in capsys.readouterr().err


def test_serve_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    from neuralengine.web.serve import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert main(["--port", str(taken.getsockname()[1])]) == 1
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
