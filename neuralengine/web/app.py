"""The web application: the page's files and its JSON API (Starlette).

Routes (every body is JSON, at most :data:`BODY_LIMIT` bytes):

==========================  ==========================================================
``GET /``                   the page (also ``/app.js``, ``/style.css``: a fixed list)
``GET /pieces.svg``         python-chess's piece drawings, as ``<defs>`` for the board
``GET /api/models``         the models the page may choose, the default, the body limit
``POST /api/position``      a FEN and moves, or a PGN: the position, its moves and legal moves
``POST /api/analyse``       every legal move ranked (win %, cp, W/D/L), arrows, the rule
``POST /api/play``          the engine's answer (with the page's temperature) and the new position
``POST /api/review``        one point per position of a PGN game, with its judged moves
==========================  ==========================================================

No route takes a path: files come from a fixed table of the package's own,
models by their id in the :class:`~neuralengine.web.models.Catalogue`.
Refusals are JSON ``{"error": message}`` with a 4xx status: an illegal FEN or
move, a PGN with an illegal move, a body over the limit (413), an unknown
model, a queue too long (429). An unexpected failure is a JSON 500 without a
traceback. Evaluations run on the :class:`~neuralengine.web.models.EngineService`
worker; a review queues one job per position, so that other requests'
evaluations take turns with it.
"""

from __future__ import annotations

import json
import time
from importlib.resources import files
from typing import Any

import chess
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from neuralengine.web import payloads
from neuralengine.web.models import Catalogue, EngineService, RequestError
from neuralengine.web.review import review_position, summary

#: The largest request body accepted, in bytes: a PGN of a long game is a few kilobytes.
BODY_LIMIT = 1 << 20

#: A body over the limit is read on (and dropped) up to this size, so that the browser sees the 413 answer
#: rather than a closed connection; a larger one is cut off.
DRAIN_LIMIT = 64 << 20

#: The page's files: URL path -> (file in ``static/``, media type). Nothing else is served.
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def _static_file(name: str) -> bytes:
    return (files("neuralengine.web") / "static" / name).read_bytes()


def pieces_svg() -> str:
    """An SVG document whose ``<defs>`` hold python-chess's twelve pieces (``#white-king`` ...)."""
    import chess.svg

    defs = "".join(chess.svg.PIECES[symbol] for symbol in "PNBRQKpnbrqk")
    return ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="0" height="0"><defs>{defs}</defs></svg>')


async def read_json(request: Request, limit: int = BODY_LIMIT) -> dict[str, Any]:
    """The request's JSON object, or a :class:`RequestError` (413 over ``limit``, 400 when not a JSON object)."""
    too_large = RequestError(413, f"the request is over the limit of {limit // 1024} KiB "
                                  f"(a game's PGN is a few KiB)")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > DRAIN_LIMIT:
        raise too_large
    body = bytearray()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_LIMIT:
            raise too_large
        if size <= limit:
            body += chunk
    if size > limit:
        raise too_large
    try:
        data = json.loads(body.decode("utf-8")) if body else {}
    except (UnicodeDecodeError, ValueError):
        raise RequestError(400, "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object")
    return data


def create_app(catalogue: Catalogue, service: EngineService | None = None, *, body_limit: int = BODY_LIMIT) -> Starlette:
    """The application for ``catalogue``'s models, evaluating on ``service`` (one is made when not given)."""
    service = service or EngineService(catalogue)

    async def static(request: Request) -> Response:
        name, media = STATIC[request.url.path]
        return Response(_static_file(name), media_type=media, headers={"Cache-Control": "no-cache"})

    async def pieces(request: Request) -> Response:
        return Response(pieces_svg(), media_type="image/svg+xml")

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"models": [e.public() for e in catalogue.entries], "default": catalogue.default.id,
                             "body_limit": body_limit})

    async def position(request: Request) -> JSONResponse:
        data = await read_json(request, body_limit)
        if data.get("pgn") is not None:
            board, headers = payloads.read_pgn(data["pgn"])
        else:
            board, headers = payloads.board_from(data), {}
        return JSONResponse({**payloads.state(board), "headers": headers})

    async def analyse(request: Request) -> JSONResponse:
        data = await read_json(request, body_limit)
        entry = catalogue.get(data.get("model"))
        board = payloads.board_from(data)
        arrows = payloads.arrows_field(data)

        def job(engine: Any) -> dict[str, Any]:
            engine.temperature = 0.0
            choice = engine.choose_move(board)
            return payloads.analysis(board, choice, engine.kind, arrows)

        result = await service.run(entry.id, job)
        return JSONResponse({**payloads.state(board), "model": entry.id, "analysis": result})

    async def play(request: Request) -> JSONResponse:
        data = await read_json(request, body_limit)
        entry = catalogue.get(data.get("model"))
        board = payloads.board_from(data)
        temperature = payloads.temperature_field(data)
        if payloads.outcome_text(board) is not None:
            return JSONResponse({**payloads.state(board), "model": entry.id, "reply": None})

        def job(engine: Any) -> dict[str, Any]:
            engine.temperature = temperature
            try:
                choice = engine.choose_move(board)
            finally:
                engine.temperature = 0.0
            move = choice.bestmove
            scored = next((s for s in choice.ranked if s.move == move), None)
            return {"uci": board.uci(move), "san": board.san(move),
                    "win_prob": None if scored is None else scored.win_prob,
                    "time_ms": round(choice.time_s * 1000, 2), "temperature": choice.temperature}

        reply = await service.run(entry.id, job)
        board.push(chess.Move.from_uci(reply["uci"]))
        return JSONResponse({**payloads.state(board), "model": entry.id, "reply": reply})

    async def review(request: Request) -> JSONResponse:
        started = time.perf_counter()
        data = await read_json(request, body_limit)
        entry = catalogue.get(data.get("model"))
        if entry.kind == "behavioral_cloning":
            raise RequestError(400, f"{entry.label} predicts moves, not win probabilities: "
                                    "choose an action-value or state-value model to review a game")
        board, headers = payloads.read_pgn(data.get("pgn"))
        root = board.root()
        points = []
        # One job per position: another request's evaluation can run between two of them.
        for move in [*board.move_stack, None]:
            here = root.copy()
            points.append(await service.run(entry.id, lambda engine, b=here, m=move: review_position(engine, b, m)))
            if move is not None:
                root.push(move)
        for ply, point in enumerate(points):
            point["ply"] = ply
        return JSONResponse({**payloads.state(board), "headers": headers, "model": entry.id, "points": points,
                             "summary": summary(points), "time_ms": round((time.perf_counter() - started) * 1000, 1)})

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestError)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        message = {404: "no such page", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return JSONResponse({"error": message}, status_code=exc.status_code)

    async def failed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server's log has the details"},
                            status_code=500)

    routes = [Route(path, static, methods=["GET"]) for path in STATIC]
    routes += [
        Route("/pieces.svg", pieces, methods=["GET"]),
        Route("/api/models", models, methods=["GET"]),
        Route("/api/position", position, methods=["POST"]),
        Route("/api/analyse", analyse, methods=["POST"]),
        Route("/api/play", play, methods=["POST"]),
        Route("/api/review", review, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={RequestError: refused, HTTPException: http_error,
                                                       Exception: failed})
    app.state.catalogue = catalogue
    app.state.service = service
    return app
