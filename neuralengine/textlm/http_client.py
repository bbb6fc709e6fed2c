"""The wire to an OpenAI-compatible server: JSON over HTTP with the standard library, a timeout on every request.

:class:`CompletionsClient` knows the base URL (``http://127.0.0.1:8000/v1``),
the model name and the API key, and posts to ``/completions`` and
``/chat/completions`` or reads ``/models``. Every failure becomes an
:class:`LlmHttpError` whose :attr:`~LlmHttpError.kind` tells the caller what
to do about it (``"transport"``: timeout or refused connection, worth trying
again later; ``"status"``: the server answered with an HTTP error;
``"garbage"``: the answer is not the JSON asked for).

The API key travels only in the ``Authorization`` header. It is never part
of a message: every text that leaves this module (error messages, the
description of the endpoint) goes through :meth:`CompletionsClient.redact`,
which also hides the URL's query string. A URL with a user or password is
refused: the URL is the ``WeightsFile`` option, which ``uci`` declares.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

#: Seconds a request may take when no other limit is given.
DEFAULT_TIMEOUT = 30.0

#: Most bytes of an answer read (a completion of a few tokens, or the log-probabilities of ~200 prompts).
MAX_ANSWER_BYTES = 64 << 20

#: Characters of a server's error text quoted in a message.
ERROR_TEXT_CHARS = 200

#: Environment variables read, in order, for the URL, the model name and the API key.
URL_ENV = ("NEURALENGINE_LLM_URL",)
MODEL_ENV = ("NEURALENGINE_LLM_MODEL",)
KEY_ENV = ("NEURALENGINE_LLM_API_KEY", "OPENAI_API_KEY")


class LlmHttpError(Exception):
    """A request that gave no usable answer; :attr:`kind` is ``transport``, ``status`` or ``garbage``."""

    def __init__(self, message: str, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


def is_http_url(text: str) -> bool:
    """Whether ``text`` names an HTTP(S) endpoint rather than a weights file."""
    return text.strip().lower().startswith(("http://", "https://"))


def first_env(names: tuple[str, ...], environ: dict[str, str]) -> str:
    """The first non-empty value of ``names`` in ``environ``, or ``""``."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return ""


def public_url(url: str) -> str:
    """``url`` without its user, password, query and fragment: what may be shown."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host += f":{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<an invalid URL>"


def base_url(url: str) -> str:
    """The API root of ``url``: a trailing ``/completions``, ``/chat/completions`` or ``/`` is dropped."""
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/")
    for tail in ("/chat/completions", "/completions"):
        if path.endswith(tail):
            path = path[: -len(tail)]
            break
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses redirects: a redirect would carry the ``Authorization`` header to wherever it points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


class CompletionsClient:
    """Posts JSON to one OpenAI-compatible API root.

    :param url: the API root (``http://host:port/v1``) or one of its
        completions URLs; its query string, if any, is kept on every request.
    :param api_key: sent as ``Authorization: Bearer ...`` when not empty.
    :param timeout: the longest a request may take, in seconds.
    """

    def __init__(self, url: str, api_key: str = "", timeout: float = DEFAULT_TIMEOUT) -> None:
        if not is_http_url(url):
            raise ValueError(f"not an http(s) URL: {public_url(url)}")
        try:
            self.url = base_url(url)
            parts = urllib.parse.urlsplit(self.url)
            parts.port  # noqa: B018 (a port out of range raises here, not at the first request)
        except ValueError as exc:
            raise ValueError(f"not a usable URL ({exc})") from None
        if not parts.hostname:
            raise ValueError(f"the URL {public_url(url)} names no host")
        if parts.username or parts.password:  # the URL is shown (the WeightsFile option): it holds no secret
            raise ValueError(f"the URL {public_url(url)} carries a user or password; give the API key in "
                             "NEURALENGINE_LLM_API_KEY (or the LLMApiKey option) instead")
        self.api_key = api_key
        self.timeout = timeout
        #: Where the model runs, for reports (the backends' ``device``).
        self.device = "remote"
        #: Requests sent, and how many of them failed.
        self.requests = 0
        self.failures = 0

    def describe(self) -> str:
        """The endpoint as it may be shown: no key, no user or password, no query."""
        return public_url(self.url)

    def redact(self, text: str) -> str:
        """``text`` with the API key and the private parts of the URL blanked."""
        secrets = [self.api_key] if self.api_key else []
        parts = urllib.parse.urlsplit(self.url)
        secrets += [s for s in (parts.password, parts.username, parts.query) if s]
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _endpoint(self, path: str) -> str:
        parts = urllib.parse.urlsplit(self.url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + path, parts.query, ""))

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "neuralengine"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def request(self, path: str, payload: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """POST ``payload`` (or GET without one) to ``path`` under the API root; the decoded JSON answer.

        ``timeout`` (default :attr:`timeout`) bounds the connection and every
        read. Raises :class:`LlmHttpError`, whose message holds no secret.
        """
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        if limit <= 0:
            raise LlmHttpError("no time left for a request", "transport")
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(self._endpoint(path), data=data, headers=self._headers(data is not None),
                                     method="GET" if data is None else "POST")
        self.requests += 1
        try:
            try:
                with _OPENER.open(req, timeout=limit) as answer:
                    body = answer.read(MAX_ANSWER_BYTES + 1)
            except urllib.error.HTTPError as exc:
                detail = self._error_text(exc)
                raise LlmHttpError(f"HTTP {exc.code} from {self.describe()}{path}{detail}", "status",
                                   exc.code) from None
            except (socket.timeout, TimeoutError):
                raise LlmHttpError(f"no answer from {self.describe()}{path} within {limit:.1f} s",
                                   "transport") from None
            except urllib.error.URLError as exc:
                reason = exc.reason
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    raise LlmHttpError(f"no answer from {self.describe()}{path} within {limit:.1f} s",
                                       "transport") from None
                raise LlmHttpError(self.redact(f"cannot reach {self.describe()}{path}: {reason}"),
                                   "transport") from None
            except (OSError, ValueError) as exc:  # reset connection, broken chunked answer, bad URL
                raise LlmHttpError(self.redact(f"request to {self.describe()}{path} failed: "
                                               f"{type(exc).__name__}: {exc}"), "transport") from None
            if len(body) > MAX_ANSWER_BYTES:
                raise LlmHttpError(f"the answer of {self.describe()}{path} is larger than {MAX_ANSWER_BYTES} bytes",
                                   "garbage")
            try:
                return json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise LlmHttpError(f"the answer of {self.describe()}{path} is not JSON "
                                   f"({len(body)} bytes)", "garbage") from None
        except LlmHttpError:
            self.failures += 1
            raise

    def _error_text(self, exc: urllib.error.HTTPError) -> str:
        """``: <the server's message>``, shortened and without secrets, or ``""``."""
        try:
            raw = exc.read(4096).decode("utf-8", "replace")
        except Exception:  # an error body that cannot be read is no reason to fail differently
            return ""
        text = raw
        try:
            parsed = json.loads(raw)
            error = parsed.get("error") if isinstance(parsed, dict) else None
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                text = error["message"]
            elif isinstance(error, str):
                text = error
            elif isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
                text = parsed["message"]
        except ValueError:
            pass
        text = " ".join(self.redact(text).split())
        if len(text) > ERROR_TEXT_CHARS:
            text = text[:ERROR_TEXT_CHARS] + "..."
        return f": {text}" if text else ""

    def model_names(self, timeout: float | None = None) -> list[str]:
        """The model names the server lists at ``/models`` (``[]`` when it lists none)."""
        answer = self.request("/models", None, timeout)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise LlmHttpError(f"the answer of {self.describe()}/models has no model list", "garbage")
        return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]
