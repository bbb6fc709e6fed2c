"""Loading the engine in the background: its modules first, then the weights asked for.

The loader runs on a daemon thread, so that ``uci``, ``isready`` and
``quit`` are answered while a load runs, and so that a load stuck in a
blocking read (a FIFO, a hung network file system) never keeps the process
alive: nothing ever joins the thread.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from neuralengine.uci.output import Output

if TYPE_CHECKING:
    from neuralengine.engine import Engine

#: What a load is for: (weights path, backend, threads, candidate model path, int8).
LoadKey = tuple[str, str, int, str, bool]

#: Longest pause of a waiting thread between two looks at the clock. A wait
#: ends as soon as what it waits for happens (the loader notifies, and so do
#: ``stop``, ``ponderhit`` and ``quit``); the pause only bounds how late a
#: deadline is noticed.
POLL_SECONDS = 0.02


class Loader:
    """Loads the engine for the wanted (weights, backend, threads) on a thread.

    :meth:`want` records the wanted key and starts the thread if it is idle.
    The thread first imports the engine's modules (python-chess, NumPy: a
    search needs them for its time budget and its fallback move), then loads
    the key, and loads again if the key changed meanwhile. A new engine
    replaces the current one only once it has loaded: when a load fails, the
    previous engine stays in use and :attr:`error` says why. (For a moment
    both models are in memory.)

    After the weights, the loader gives the engine its fast network
    (:attr:`Engine.fast <neuralengine.engine.Engine.fast>`): the engine itself
    when its evaluation is fast (:meth:`Engine.is_fast`), else the model of
    the ``CandidateModel`` option (empty: the shipped model), loaded the same
    way; when that fails, :attr:`fast_error` says why and the engine has none.
    A change of the candidate alone keeps the loaded engine.

    :param opener: ``opener(path, backend, threads)`` returns an engine or
        raises with a message; the default is :meth:`Engine.open` (with the
        ``Int8`` setting; an opener given here is asked for the candidate
        model too).
    :param clock: the time source of the deadlines given to :meth:`wait_for`.
    """

    def __init__(self, output: Output, opener: Callable[[str, str, int], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.output = output
        self.opener = opener
        self.clock = clock
        self.cond = threading.Condition()
        self.wanted: LoadKey | None = None
        self.loaded: LoadKey | None = None
        #: The engine searches use: the last one that loaded.
        self.engine: Engine | None = None
        #: Why the load of :attr:`loaded` failed, or ``None``.
        self.error: str | None = None
        #: Why the candidate model (the fast network) of the last load failed, until ``isready`` reports it.
        self.fast_error: str | None = None
        #: What the backend of the last load says (an int8 request refused), until ``isready`` reports it.
        self.notice: str | None = None
        #: Engines loaded so far; a search reseeds its engine when this changes.
        self.generation = 0
        #: ``None`` until the engine's modules are imported, then ``True``, or why the import failed.
        self.modules: bool | str | None = None
        self.busy = False
        self.announced = True

    def want(self, key: LoadKey) -> None:
        """Ask for ``key``; a load that failed is tried again (the file may have been fixed)."""
        with self.cond:
            self.wanted = key
            if self.busy:
                return
            if self.loaded == key:
                if self.error is None:
                    return
                self.loaded = None
            self.busy = True
        threading.Thread(target=self._run, name="neuralengine-loader", daemon=True).start()

    def _run(self) -> None:
        self._import_modules()
        while True:
            with self.cond:
                key = self.wanted
                if key is None or key == self.loaded:
                    self.busy = False
                    self.cond.notify_all()
                    return
            engine, error, fast_error = self._load(key)
            with self.cond:
                self.fast_error = fast_error
                self.notice = getattr(getattr(engine, "backend", None), "notice", None)
                if engine is not None:
                    self.engine = engine
                    self.generation += 1
                self.error, self.loaded = error, key
                self.announced = False
                self.cond.notify_all()

    def _import_modules(self) -> None:
        with self.cond:
            if self.modules is True:
                return
        try:
            import chess  # noqa: F401

            import neuralengine.engine  # noqa: F401
            state: bool | str = True
        except Exception as exc:  # a broken installation still gets legal moves
            state = f"{type(exc).__name__}: {exc}"
        with self.cond:
            self.modules = state
            self.cond.notify_all()

    def _open(self, path: str, backend: str, threads: int, int8: bool) -> Any:
        if self.opener is not None:
            return self.opener(path, backend, threads)
        from neuralengine.engine import Engine

        return Engine.open(os.path.expanduser(path), backend, threads, int8=int8)

    def _load(self, key: LoadKey) -> tuple[Engine | None, str | None, str | None]:
        """The engine of ``key`` (or ``None``), why it failed, and why its fast network failed."""
        path, backend, threads, candidate, int8 = key
        started = time.monotonic()
        loaded = self.loaded
        with self.cond:
            previous = self.engine
        if (previous is not None and loaded is not None and self.error is None
                and loaded[:3] == key[:3] and loaded[4] == key[4]):
            engine = previous  # only the candidate changed
        else:
            if self.output.debug:
                from neuralengine.textlm.http_client import is_http_url, public_url

                shown = public_url(path) if is_http_url(path) else path  # a URL's user, password and query stay out
                self.output.log(f"loading {shown} with backend {backend}, {threads} threads{', int8' if int8 else ''}")
            try:
                engine = self._open(path, backend, threads, int8)
            except Exception as exc:  # every failure becomes a message, never a crash
                message = str(exc) or type(exc).__name__
                if not path:
                    message = "no weights file set (setoption name WeightsFile value PATH)"
                return None, message, None
            if self.output.debug:
                self.output.log(f"loaded in {time.monotonic() - started:.2f}s: {engine.describe()}")
        return engine, None, self._attach_fast(engine, path, candidate, backend, threads)

    def _attach_fast(self, engine: Any, path: str, candidate: str, backend: str, threads: int) -> str | None:
        """Give ``engine`` its fast network; returns why the candidate model failed, or ``None``."""
        from neuralengine.engine import Engine

        if not isinstance(engine, Engine):
            return None
        if engine.is_fast():
            engine.fast = engine
            return None
        engine.fast = None
        if not candidate:
            from neuralengine.paths import default_weights

            candidate = str(default_weights())
        try:
            if os.path.samefile(os.path.expanduser(candidate), os.path.expanduser(path)):
                return None  # the slow model itself: no fast network
        except OSError:
            pass
        try:
            fast = self._open(candidate, backend, threads, False)
        except Exception as exc:  # every failure becomes a message, never a crash
            return f"{candidate}: {str(exc) or type(exc).__name__}"
        if fast is not engine and isinstance(fast, Engine):
            engine.fast = fast
            if self.output.debug:
                self.output.log(f"fast network: {fast.describe()}")
        return None

    def current(self) -> bool:
        """Whether the wanted key has been loaded (or has failed); call with :attr:`cond` held."""
        return not self.busy and self.loaded == self.wanted

    def ready(self) -> bool:
        with self.cond:
            return self.current()

    def wait_for(self, ready: Callable[[], bool], deadline: Callable[[], float | None] = lambda: None,
                 stop: threading.Event | None = None) -> bool:
        """Wait until ``ready()`` (called with :attr:`cond` held) is true.

        Returns ``False`` when ``stop`` is set, or the time ``deadline()``
        returns has come, first. ``deadline`` is asked again at every wake-up,
        so it may move (``ponderhit``) or appear while the wait runs.
        """
        with self.cond:
            while not ready():
                if stop is not None and stop.is_set():
                    return False
                timeout = POLL_SECONDS
                end = deadline()
                if end is not None:
                    left = end - self.clock()
                    if left <= 0:
                        return False
                    timeout = min(timeout, left)
                self.cond.wait(timeout)
            return True

    def wait(self, stop: threading.Event) -> bool:
        """Wait until the wanted engine is loaded or has failed; ``False`` if ``stop`` came first."""
        return self.wait_for(self.current, stop=stop)

    def poke(self) -> None:
        """Wake the waiting threads, so that they look at their stop flag and deadline again."""
        with self.cond:
            self.cond.notify_all()
