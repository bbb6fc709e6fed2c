"""A fake OpenAI-compatible server on a free port, in a thread, for the tests of the HTTP player.

It answers ``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions``
and records every request. Its "model":

* **Echo scoring** (when ``echo_supported``): the text is cut into tokens
  the way byte-pair tokenizers do (a leading space joins the word after it),
  and every character of a token is worth ``GOOD`` when the text up to it is
  a prefix of one of ``favourites``, else ``BAD``. A token's log-probability
  is the sum over its characters; the first token of a text has none (as
  vLLM's echo). The choices come back in reverse order, each with its index.
  Without echo support an ``echo`` request gets HTTP 400, as does one with
  ``max_tokens`` below ``min_tokens``; a request for a new token gets one
  more token after the text (which the player must not count). With
  ``generated_logprobs_only`` an echo request is answered with the new
  token's log-probability alone, as some servers do.
* **Sampling**: the completions (or chat answers) are the ``samples`` in
  turn, the last one repeated.
* Faults: ``status`` answers every request with that HTTP status (the body
  quotes the Authorization header, as a careless server might); ``garbage``
  answers with bytes that are not JSON; ``hang`` holds every answer until
  :meth:`FakeLlm.close` (the client's timeout must end the wait).
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence

GOOD = -0.05
BAD = -3.0

_TOKEN = re.compile(r" ?[A-Za-z]+| ?\d|[^A-Za-z\d]")


def tokens_of(text: str) -> list[tuple[str, int]]:
    """``text`` cut into (token, offset) pairs."""
    return [(m.group(0), m.start()) for m in _TOKEN.finditer(text)]


class FakeLlm:
    """The server; use as a context manager (``with FakeLlm(...) as fake: fake.url``)."""

    def __init__(self, *, echo_supported: bool = True, favourites: Sequence[str] = (),
                 samples: Sequence[str] = (" e4",), status: int | None = None, garbage: bool = False,
                 hang: bool = False, models: Sequence[str] = ("fake-model",), min_tokens: int = 0,
                 generated_logprobs_only: bool = False) -> None:
        self.echo_supported = echo_supported
        self.favourites = list(favourites)
        self.samples = list(samples)
        self.status = status
        self.garbage = garbage
        self.hang = hang
        self.models = list(models)
        self.min_tokens = min_tokens
        self.generated_logprobs_only = generated_logprobs_only
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        #: Set when a request has arrived (and been recorded).
        self.received = threading.Event()
        self._sampled = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
                pass

            def do_GET(self) -> None:
                fake._handle(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                fake._handle(self, self.rfile.read(length))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeLlm":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # -- answers -------------------------------------------------------------------

    def posts(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies posted to ``path`` (e.g. ``/v1/completions``), in order."""
        return [r["json"] for r in self.requests if r["path"] == path and r["json"] is not None]

    def logprob(self, text: str, end: int) -> float:
        """The fake model's log-probability of the character ``text[end - 1]``."""
        seen = text[:end]
        return GOOD if any(f.startswith(seen) for f in self.favourites) else BAD

    def echo_choice(self, index: int, text: str) -> dict[str, Any]:
        tokens = tokens_of(text)
        values: list[float | None] = []
        for n, (token, offset) in enumerate(tokens):
            values.append(None if n == 0 else sum(self.logprob(text, offset + k + 1) for k in range(len(token))))
        return {"index": index, "text": text, "finish_reason": "length",
                "logprobs": {"tokens": [t for t, _ in tokens], "token_logprobs": values,
                             "text_offset": [o for _, o in tokens], "top_logprobs": None}}

    def next_sample(self) -> str:
        with self._lock:
            text = self.samples[min(self._sampled, len(self.samples) - 1)]
            self._sampled += 1
        return text

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes | None) -> None:
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        with self._lock:
            self.requests.append({"path": handler.path, "headers": dict(handler.headers), "json": parsed})
        self.received.set()
        if self.hang:
            self.release.wait()
            return
        if self.status is not None:
            said = handler.headers.get("Authorization", "")
            body = json.dumps({"error": {"message": f"refused; you sent {said}", "type": "fault"}})
            self._reply(handler, self.status, body.encode())
            return
        if self.garbage:
            self._reply(handler, 200, b"<html>\x00 this is not json {")
            return
        path = handler.path.split("?", 1)[0]  # a query string (an API key some hosts want there) is no route
        if path == "/v1/models":
            self._reply(handler, 200, json.dumps({"object": "list", "data": [
                {"id": m, "object": "model"} for m in self.models]}).encode())
        elif path == "/v1/completions" and isinstance(parsed, dict):
            if parsed.get("echo"):
                if not self.echo_supported:
                    body = json.dumps({"error": {"message": "echo is not supported", "code": 400}})
                    self._reply(handler, 400, body.encode())
                    return
                if parsed.get("max_tokens", 16) < self.min_tokens:
                    body = json.dumps({"error": {"message": f"max_tokens must be at least {self.min_tokens}"}})
                    self._reply(handler, 400, body.encode())
                    return
                prompts = parsed["prompt"] if isinstance(parsed["prompt"], list) else [parsed["prompt"]]
                if self.generated_logprobs_only:  # echo accepted, but only the new token's log-probability
                    choices = [{"index": i, "text": " Nc3", "logprobs": {"tokens": [" Nc3"], "token_logprobs": [-0.5],
                                                                         "top_logprobs": None}}
                               for i in range(len(prompts))]
                    self._reply(handler, 200, json.dumps({"choices": choices}).encode())
                    return
                choices = [self.echo_choice(i, p) for i, p in enumerate(prompts)][::-1]
                for choice in choices if parsed.get("max_tokens") else []:  # one generated token, well liked
                    logprobs = choice.get("logprobs")
                    if not isinstance(logprobs, dict):
                        continue
                    logprobs["text_offset"].append(len(choice["text"]))
                    logprobs["tokens"].append(" Nc3")
                    logprobs["token_logprobs"].append(-0.01)
                    choice["text"] += " Nc3"
            else:
                choices = [{"index": 0, "text": self.next_sample(), "finish_reason": "stop", "logprobs": None}]
            self._reply(handler, 200, json.dumps({"object": "text_completion", "choices": choices}).encode())
        elif path == "/v1/chat/completions" and isinstance(parsed, dict):
            choice = {"index": 0, "message": {"role": "assistant", "content": self.next_sample()},
                      "finish_reason": "stop"}
            self._reply(handler, 200, json.dumps({"object": "chat.completion", "choices": [choice]}).encode())
        else:
            self._reply(handler, 404, json.dumps({"error": {"message": f"no route {path}"}}).encode())
