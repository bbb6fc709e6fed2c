"""The scheduler of the Stockfish workers: feed, progress, back-pressure and lost workers.

Most tests drive :class:`Scheduler` through a back end whose workers are
scripted by the test, so every interleaving is deterministic; the last ones
run real worker processes (:class:`PoolBackend`).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from neuralengine.data.scheduler import Message, PoolBackend, Scheduler
from neuralengine.data.stockfish import EngineSlot


class Numbers:
    """Work whose items are numbers; a worker's result is ten times the item."""

    def engine_slot(self) -> EngineSlot:
        return EngineSlot(["never-started"], 1)

    def run(self, slot: EngineSlot, item: int, emit: Any) -> int:
        return item * 10

    def describe(self, item: int) -> str:
        return f"item {item}"

    def size(self, item: int) -> int:
        return 1


class ScriptedBackend:
    """Workers in this process: ``script(backend)`` returns the messages of each poll, from
    :attr:`running` (worker -> (token, item)), the attempts handed out and not yet answered."""

    def __init__(self, workers: int, script: Callable[["ScriptedBackend"], list[Message]]) -> None:
        self.workers, self.script = workers, script
        self.ids = itertools.count()
        self.running: dict[int, tuple[int, Any]] = {}
        self.submitted: list[Any] = []
        self.replaced: list[int] = []
        self.polls = 0
        self.closed = False

    def start(self, work: Any) -> list[int]:
        return [next(self.ids) for _ in range(self.workers)]

    def submit(self, worker: int, token: int, item: Any) -> None:
        assert worker not in self.running, "a busy worker got a second item"
        self.running[worker] = (token, item)
        self.submitted.append(item)

    def poll(self, timeout: float) -> list[Message]:
        self.polls += 1
        assert self.polls < 1000, "the scheduler polls on and on without any progress"
        return self.script(self)

    def replace(self, worker: int) -> int:
        self.replaced.append(worker)
        return next(self.ids)

    def close(self) -> None:
        self.closed = True

    def finish(self, worker: int) -> Message:
        token, item = self.running.pop(worker)
        return Message("done", worker, token, item * 10)


class Bar:
    """Stands in for :class:`neuralengine.progress.Progress`."""

    def __init__(self) -> None:
        self.count = 0

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.count += n


def test_a_worker_lost_while_the_results_wait_for_its_item_is_replaced_and_the_run_ends():
    """Ordered results, the buffer of finished items full, all waiting for item 0, and then the worker
    with item 0 dies: its replacement gets item 0 again (it is never held back), and the run ends."""
    state = {"lost": False, "done_before_loss": 0}

    def script(backend: ScriptedBackend) -> list[Message]:
        slow = [w for w, (_, item) in backend.running.items() if item == 0 and not state["lost"]]
        msgs = [backend.finish(w) for w in list(backend.running) if w not in slow]
        if not msgs and slow:  # only item 0 is left running: the scheduler holds everything else back
            state["lost"], state["done_before_loss"] = True, len(backend.submitted) - 1
            backend.running.pop(slow[0])
            msgs.append(Message("lost", slow[0], 0, "killed"))
        return msgs

    backend = ScriptedBackend(2, script)
    scheduler = Scheduler(Numbers(), backend, range(40), name="test", ordered=True)
    results = [outcome.result for outcome in scheduler.run()]
    assert results == [i * 10 for i in range(40)]
    assert state["done_before_loss"] == 4 * 2 + 8  # the back-pressure limit was reached
    assert backend.submitted.count(0) == 2 and sorted(set(backend.submitted)) == list(range(40))
    assert (scheduler.lost, scheduler.restarts, len(backend.replaced)) == (1, 1, 1)
    assert backend.closed


def test_back_pressure_holds_new_items_while_finished_ones_wait():
    """With ordered results, no more than ``4 * workers + 8`` finished items wait for a slow one."""
    waiting_most = 0
    release = {"now": False}

    def script(backend: ScriptedBackend) -> list[Message]:
        nonlocal waiting_most
        slow = [w for w, (_, item) in backend.running.items() if item == 0 and not release["now"]]
        msgs = [backend.finish(w) for w in list(backend.running) if w not in slow]
        if slow:  # finished items behind item 0
            waiting_most = max(waiting_most, len(backend.submitted) - 1 - len(backend.running) + 1)
        if not msgs:
            release["now"] = True
        return msgs

    backend = ScriptedBackend(3, script)
    outcomes = list(Scheduler(Numbers(), backend, range(100), name="test", ordered=True).run())
    assert [o.item for o in outcomes] == list(range(100))
    assert waiting_most == 4 * 3 + 8


def test_a_lost_attempt_counts_nothing_and_its_late_answer_is_ignored():
    """Progress of a lost attempt is taken off the bar; an answer from that attempt that arrives after
    the item went to another worker is dropped, so the item is yielded once."""
    state: dict[str, Any] = {"step": 0}

    def script(backend: ScriptedBackend) -> list[Message]:
        state["step"] += 1
        if state["step"] == 1:  # worker 0 reports progress on item 0, then dies
            token, item = backend.running.pop(0)
            assert item == 0
            state["old_token"] = token
            return [Message("progress", 0, token, {"done": 3, "action_values": 60}), Message("lost", 0, 0, "gone")]
        if state["step"] == 2:  # the lost attempt's answer comes late, then the redo finishes
            late = Message("done", 0, state["old_token"], -1)
            return [late] + [backend.finish(w) for w in list(backend.running)]
        return [backend.finish(w) for w in list(backend.running)]

    class Sized(Numbers):
        def size(self, item: int) -> int:
            return 5

    bar = Bar()
    backend = ScriptedBackend(1, script)
    scheduler = Scheduler(Sized(), backend, range(2), name="test", progress=bar)
    outcomes = list(scheduler.run())
    assert [(o.item, o.result) for o in outcomes] == [(0, 0), (1, 10)]
    assert bar.count == 10  # each item's size once; the lost attempt's 3 taken off again
    assert scheduler.totals == {"action_values": 60}
    assert scheduler.restarts == 1


def test_failed_items_are_reported_and_the_worker_goes_on():
    def script(backend: ScriptedBackend) -> list[Message]:
        msgs = []
        for worker in list(backend.running):
            token, item = backend.running[worker]
            if item == 1:
                backend.running.pop(worker)
                msgs.append(Message("failed", worker, token, "engine gave up"))
            else:
                msgs.append(backend.finish(worker))
        return msgs

    backend = ScriptedBackend(1, script)
    outcomes = list(Scheduler(Numbers(), backend, range(3), name="test").run())
    assert [(o.item, o.result, o.error) for o in outcomes] == [(0, 0, None), (1, None, "engine gave up"),
                                                               (2, 20, None)]
    assert not backend.replaced


def test_workers_that_keep_dying_end_the_run():
    def script(backend: ScriptedBackend) -> list[Message]:
        worker = next(iter(backend.running))
        backend.running.pop(worker)
        return [Message("lost", worker, 0, "crashed")]

    backend = ScriptedBackend(1, script)
    with pytest.raises(SystemExit, match="workers keep dying"):
        list(Scheduler(Numbers(), backend, range(3), name="test").run())
    assert backend.closed


class DiesOnce(Numbers):
    """The worker process running item 2 dies the first time (a marker file remembers it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def run(self, slot: EngineSlot, item: int, emit: Any) -> int:
        emit("progress", done=1)
        if item == 2 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(9)
        if item == 4:
            raise ValueError("no good")
        return item * 10


def test_worker_processes_lost_and_failed_items(tmp_path):
    bar = Bar()
    scheduler = Scheduler(DiesOnce(tmp_path / "died"), PoolBackend(2), range(6), name="test", progress=bar)
    outcomes = sorted(((o.item, o.result, o.error) for o in scheduler.run()), key=lambda row: row[0])
    assert outcomes == [(0, 0, None), (1, 10, None), (2, 20, None), (3, 30, None), (4, None, "no good"),
                        (5, 50, None)]
    assert (tmp_path / "died").exists()
    assert scheduler.lost == 1
    assert bar.count == 5  # every item but the failed one
