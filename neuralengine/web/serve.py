"""``neuralengine serve``: the analysis board in the browser, on this machine.

Example::

    neuralengine serve                              # http://127.0.0.1:8000/
    neuralengine serve --port 0 --weights 270M      # a free port; DeepMind's 270M model as well

It listens on 127.0.0.1 unless ``--host`` says otherwise, prints the page's
address, and serves until Ctrl-C. The page can use the shipped model, each
``--weights`` named here, and DeepMind's models already downloaded; nothing
else. Needs the ``web`` extra: ``pip install 'neuralengine[web]'``.
"""

from __future__ import annotations

import argparse
import socket
import sys

from neuralengine.uci import BACKEND_CHOICES


def build_parser() -> argparse.ArgumentParser:
    from neuralengine.analyse import threads_arg

    parser = argparse.ArgumentParser(
        prog="neuralengine serve",
        description="A local analysis board in the browser: every legal move's win % on the board, play against "
                    "the engine, game review. Needs the web extra (pip install 'neuralengine[web]').")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--weights", action="append", default=[], metavar="WEIGHTS",
                        help="a weights file, DeepMind checkpoint folder or downloaded model name the page may use, "
                             "besides the shipped model (repeat for several; the first is the default)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="inference backend")
    parser.add_argument("--threads", type=threads_arg, default=1, help="CPU threads of the backend")
    return parser


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; returns 0, 1 (missing extra, weights or address problem) or 2 (usage)."""
    args = build_parser().parse_args([] if argv is None else argv)
    if not 0 <= args.port <= 65535:
        print(f"neuralengine serve: --port {args.port} is not a port number (0 to 65535)", file=sys.stderr)
        return 2
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        print(f"neuralengine serve: needs the web extra ({exc.name} is missing): pip install 'neuralengine[web]'",
              file=sys.stderr)
        return 1

    from neuralengine.web.app import create_app
    from neuralengine.web.models import Catalogue, EngineService
    from neuralengine.weights import WeightsError

    try:
        catalogue = Catalogue(args.weights)
    except WeightsError as exc:
        print(f"neuralengine serve: cannot use the weights: {exc}", file=sys.stderr)
        return 1
    try:
        sock = _listen(args.host, args.port)
    except OSError as exc:
        print(f"neuralengine serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    service = EngineService(catalogue, backend=args.backend, threads=args.threads)
    service.preload()
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"neuralengine serve: http://{shown}:{port}/  (models: "
          f"{', '.join(e.label for e in catalogue.entries)}; Ctrl-C stops)", flush=True)
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(f"neuralengine serve: listening on {host}: other machines can reach the page", flush=True)
    config = uvicorn.Config(create_app(catalogue, service), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn has shut down cleanly, then passes Ctrl-C (SIGINT) on
    finally:
        service.close()
        sock.close()
    print("neuralengine serve: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
