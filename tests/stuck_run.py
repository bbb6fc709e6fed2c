"""A ``neuralengine annotate`` run held in its first search, and the processes below it (Linux), for
the tests of what SIGTERM and SIGKILL of the driver leave behind."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

#: A UCI engine whose searches never end: it reports its first ``go`` through the FIFO named on its
#: command line, then reads on and answers nothing.
STUCK_ENGINE = r'''
import sys

searching = False
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "uci":
        print("id name stuck-engine")
        for name in ("MultiPV", "Threads", "Hash"):
            print(f"option name {name} type spin default 1 min 1 max 500")
        print("uciok", flush=True)
    elif words[0] == "isready":
        print("readyok", flush=True)
    elif words[0] == "go" and not searching:
        searching = True
        with open(sys.argv[1], "w") as fifo:
            fifo.write("searching\n")
    elif words[0] == "quit":
        break
'''


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descendants(root: int) -> set[int]:
    """Every process below ``root`` now (Linux /proc)."""
    parents = {int(d): parent_of(int(d)) for d in os.listdir("/proc") if d.isdigit()}
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait until the processes ``pids`` (not our children) have ended; returns those still there."""
    handles = {}
    for pid in pids:
        try:
            handles[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            pass
    try:
        deadline = time.monotonic() + timeout
        waiting = dict(handles)
        while waiting and time.monotonic() < deadline:
            ready, _, _ = select.select(list(waiting.values()), [], [], deadline - time.monotonic())
            waiting = {pid: fd for pid, fd in waiting.items() if fd not in ready}
        return set(waiting)
    finally:
        for fd in handles.values():
            os.close(fd)


def start_stuck_annotation(tmp_path: Path, positions: Path, *options: str) -> tuple[subprocess.Popen, set[int]]:
    """``neuralengine annotate`` with one worker (and ``options``), stopped in its first search;
    returns the driver and the processes below it."""
    script, fifo = tmp_path / "stuck_engine.py", tmp_path / "searching"
    script.write_text(STUCK_ENGINE)
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # never blocks, and the engine's open does not either
    driver = subprocess.Popen([sys.executable, "-m", "neuralengine", "annotate", str(positions), "--out",
                               str(tmp_path / "out"), *options, "--workers", "1", "--depth", "1", "--quiet",
                               "--stockfish", f"{sys.executable} {script} {fifo}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([reader], [], [], 300)
        assert ready, "the run never reached its first search"
        assert os.read(reader, 100) == b"searching\n"
    except BaseException:
        driver.kill()
        driver.communicate()
        raise
    finally:
        os.close(reader)
    return driver, descendants(driver.pid)
