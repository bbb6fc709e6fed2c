"""The ``neuralengine uci`` process: its flags, its stdin and stdout, its exit code.

:func:`main` takes stdout for protocol lines only (whatever a library prints
goes to stderr), reads stdin as bytes, and runs :func:`~neuralengine.uci.server.serve`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO, Iterator

from neuralengine.uci.options import BACKEND_CHOICES, LLM_MODES, make_options
from neuralengine.uci.output import Output
from neuralengine.uci.server import UciServer, serve

#: Longest input line handled; longer lines are skipped with a message.
MAX_LINE_BYTES = 1 << 20


def read_lines(stream: BinaryIO, out: Output) -> Iterator[str]:
    """Yield decoded input lines; overlong lines are skipped with a message."""
    while True:
        try:
            raw = stream.readline(MAX_LINE_BYTES + 1)
        except (OSError, ValueError):
            return
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            skipped = len(raw)
            while True:
                rest = stream.readline(MAX_LINE_BYTES)
                skipped += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            out.info(f"input line of {skipped} bytes is longer than {MAX_LINE_BYTES} bytes; skipped")
            continue
        yield raw.decode("utf-8", "replace").replace("\x00", " ")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralengine uci",
        description="Run the UCI protocol on stdin/stdout. The flags set option defaults; "
                    "setoption still changes them.")
    parser.add_argument("--weights", help="weights file (the WeightsFile option)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="inference backend")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the backend")
    llm = parser.add_argument_group(
        "a language model over HTTP", "An OpenAI-compatible endpoint (vLLM, llama.cpp's server, a hosted API) "
        "plays instead of the weights. The API key comes from NEURALENGINE_LLM_API_KEY or OPENAI_API_KEY "
        "(or the LLMApiKey option), never from the command line.")
    llm.add_argument("--llm-url", metavar="URL",
                     help="the API root, e.g. http://127.0.0.1:8000/v1 (the same as --weights URL; "
                          "default: NEURALENGINE_LLM_URL when --weights is not given)")
    llm.add_argument("--llm-model", default="", metavar="NAME",
                     help="the model name sent (the LLMModel option; default: NEURALENGINE_LLM_MODEL, "
                          "else the first model the server lists)")
    llm.add_argument("--llm-mode", choices=LLM_MODES, default="auto",
                     help="score: every legal move's log-probability in one request (vLLM); sample: read the "
                          "move from a completion (llama.cpp); chat: from a chat completion; auto: score, "
                          "and sample when the server cannot (default)")
    parser.add_argument("--candidate-model", default="", metavar="WEIGHTS",
                        help="the fast model that ranks the moves when the weights are too slow for the clock "
                             "(the CandidateModel option; default: the shipped model)")
    parser.add_argument("--int8", action="store_true",
                        help="run the int8 (dynamically quantised) graph, for full-attention models (the Int8 option)")
    return parser


def protocol_stream() -> BinaryIO:
    """A private handle on stdout for protocol lines.

    File descriptor 1 is then pointed at stderr, so that whatever a library
    prints (Python or native code, e.g. during an ONNX export) cannot corrupt
    the protocol.
    """
    try:
        sys.stdout.flush()
        fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return os.fdopen(fd, "wb")
    except (OSError, ValueError, AttributeError):
        return sys.stdout.buffer


def main(argv: list[str] | None = None) -> int:
    """Run the UCI loop until ``quit`` or the end of input; returns the exit code."""
    args = build_parser().parse_args([] if argv is None else argv)
    out = Output(protocol_stream())
    weights = args.llm_url or args.weights
    if weights is None and os.environ.get("NEURALENGINE_LLM_URL", "").strip():
        weights = os.environ["NEURALENGINE_LLM_URL"].strip()
    options = make_options(weights, args.backend, max(1, min(args.threads, 256)), args.candidate_model, args.int8,
                           llm_model=args.llm_model, llm_mode=args.llm_mode)
    server = UciServer(out, options)
    try:
        serve(server, read_lines(sys.stdin.buffer, out))
    except KeyboardInterrupt:
        return 130
    return 0
