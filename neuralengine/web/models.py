"""The models the page can use, and the worker thread that evaluates with them.

:class:`Catalogue` is the complete list of weights reachable from the page:
the shipped model, every file named with ``--weights`` on the command line,
and DeepMind's models already converted by ``neuralengine download``. The
page names a model by its id (``shipped``, ``file-1``, ``deepmind-270M``);
no request carries a path, so nothing else on the disk is reachable.

:class:`EngineService` owns the loaded engines. Every evaluation is a job on
one worker thread: the jobs of all requests queue there, one runs at a time
(an :class:`~neuralengine.engine.Engine` is not made for concurrent calls),
and the web server's event loop only awaits their results, so that a slow
evaluation never holds up the page, its files or another request's answer.
Each model is loaded once, on the worker, and shared by all requests; at
most ``max_loaded`` stay in memory (the least recently used is dropped).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

if TYPE_CHECKING:
    from neuralengine.engine import Engine

T = TypeVar("T")


class RequestError(Exception):
    """A request the server refuses: an HTTP status (4xx) and a one-line message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ModelEntry:
    """One model the page may choose."""

    #: What the page sends (never a path).
    id: str
    #: What the page shows: the file name, or DeepMind's model name.
    label: str
    #: ``shipped``, ``command line`` or ``DeepMind``.
    source: str
    #: The weights file; it stays on the server.
    path: Path
    kind: str = ""
    layers: int = 0
    width: int = 0
    parameters: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """What ``/api/models`` tells the page (no path)."""
        return {"id": self.id, "label": self.label, "source": self.source, "kind": self.kind,
                "layers": self.layers, "width": self.width, "parameters": self.parameters}


def _entry(model_id: str, label: str, source: str, path: Path) -> ModelEntry:
    """An entry with the architecture read from the file's metadata (raises WeightsError)."""
    from neuralengine.weights import config_from_metadata, read_metadata

    cfg = config_from_metadata(read_metadata(path), str(path))
    return ModelEntry(model_id, label, source, path, kind=cfg.kind, layers=cfg.num_layers, width=cfg.embed_dim,
                      parameters=cfg.num_parameters())


class Catalogue:
    """The models reachable from the page, by id; the first is the default.

    :param weights: ``--weights`` values of the command line (files, DeepMind
        checkpoint folders or downloaded model names); each must load, else
        :class:`~neuralengine.weights.WeightsError` names the problem.
    :param shipped: the shipped weights (default: :func:`~neuralengine.paths.default_weights`).
    :param downloaded: list DeepMind's models found in the cache.
    """

    def __init__(self, weights: Sequence[str] = (), *, shipped: Path | None = None, downloaded: bool = True) -> None:
        from neuralengine.deepmind import resolve_weights
        from neuralengine.paths import DEEPMIND_MODELS, default_weights, downloaded_weights
        from neuralengine.weights import WeightsError

        named: list[ModelEntry] = []
        for number, value in enumerate(weights, start=1):
            path = resolve_weights(value)
            label = Path(value).name or str(value)  # the file or folder name, or DeepMind's model name
            named.append(_entry(f"file-{number}", label, "command line", path))
        self.entries: list[ModelEntry] = list(named)
        shipped_path = shipped if shipped is not None else default_weights()
        try:
            if not self._listed(shipped_path):
                self.entries.append(_entry("shipped", shipped_path.name, "shipped", shipped_path))
        except WeightsError:
            if not named:
                raise
        if downloaded:
            for name in DEEPMIND_MODELS:
                path = downloaded_weights(name)
                if path.is_file() and not self._listed(path):
                    try:
                        self.entries.append(_entry(f"deepmind-{name}", name, "DeepMind", path))
                    except WeightsError:
                        continue  # a damaged conversion is not offered
        self._by_id = {entry.id: entry for entry in self.entries}

    def _listed(self, path: Path) -> bool:
        """Whether ``path`` is already in the list (a file named on the command line may be the shipped one)."""
        return any(e.path.resolve() == path.resolve() for e in self.entries)

    @property
    def default(self) -> ModelEntry:
        return self.entries[0]

    def get(self, model_id: object) -> ModelEntry:
        """The entry of ``model_id`` (``None``: the default); :class:`RequestError` 400 for any other value."""
        if model_id is None:
            return self.default
        if not isinstance(model_id, str) or model_id not in self._by_id:
            shown = model_id if isinstance(model_id, str) and len(model_id) <= 80 else "(a value that is not a name)"
            raise RequestError(400, f"unknown model {shown!r}: the models are {', '.join(self._by_id)}")
        return self._by_id[model_id]


class EngineService:
    """One worker thread that loads the models and runs every evaluation, in the order asked.

    :param max_pending: jobs allowed to wait at once; one more is refused
        with 429 (the engine is busy) instead of queueing without end.
    """

    def __init__(self, catalogue: Catalogue, *, backend: str = "auto", threads: int = 1, max_loaded: int = 2,
                 max_pending: int = 256) -> None:
        self.catalogue = catalogue
        self.backend = backend
        self.threads = threads
        self.max_loaded = max(1, max_loaded)
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neuralengine-eval")
        self._engines: OrderedDict[str, Engine] = OrderedDict()  # touched only on the worker thread
        self._lock = threading.Lock()
        self._pending = 0

    def submit(self, model_id: str, job: Callable[["Engine"], T]) -> "Future[T]":
        """Queue ``job(engine)`` for the model ``model_id`` (an id of the catalogue)."""
        entry = self.catalogue.get(model_id)
        with self._lock:
            if self._pending >= self.max_pending:
                raise RequestError(429, f"the engine is busy: {self._pending} evaluations are waiting; try again")
            self._pending += 1
        try:
            future = self._executor.submit(self._run, entry, job)
        except RuntimeError:  # shut down
            with self._lock:
                self._pending -= 1
            raise RequestError(503, "the server is stopping") from None
        future.add_done_callback(self._done)
        return future

    async def run(self, model_id: str, job: Callable[["Engine"], T]) -> T:
        """:meth:`submit`, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(model_id, job))

    def _done(self, _future: Future) -> None:  # type: ignore[type-arg]
        with self._lock:
            self._pending -= 1

    def _run(self, entry: ModelEntry, job: Callable[["Engine"], T]) -> T:
        return job(self._engine(entry))

    def _engine(self, entry: ModelEntry) -> "Engine":
        engine = self._engines.get(entry.id)
        if engine is not None:
            self._engines.move_to_end(entry.id)
            return engine
        from neuralengine.engine import Engine
        from neuralengine.weights import WeightsError

        while len(self._engines) >= self.max_loaded:
            self._engines.popitem(last=False)
        try:
            engine = Engine.open(entry.path, self.backend, self.threads)
        except (WeightsError, ValueError, OSError) as exc:
            raise RequestError(422, f"cannot load the model {entry.label}: {exc}") from None
        self._engines[entry.id] = engine
        return engine

    def preload(self, model_id: str | None = None) -> "Future[None]":
        """Load a model (default: the catalogue's default) on the worker before the first request needs it."""
        entry = self.catalogue.get(model_id)
        return self.submit(entry.id, lambda engine: None)

    def close(self) -> None:
        """Stop taking jobs; the running one finishes."""
        self._executor.shutdown(wait=False, cancel_futures=True)
