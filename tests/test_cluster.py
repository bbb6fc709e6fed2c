"""Annotation and self-play on a local Ray cluster of 2 workers (the ``cluster`` extra).

The same positions are annotated by the process pool and by Ray actors with
the same settings: the shards must be identical. Then Stockfish processes and
an actor process are killed during a run: the output must still be complete,
identical, and hold every position exactly once.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import chess
import pytest

ray = pytest.importorskip("ray")

from stuck_run import start_stuck_annotation, wait_gone  # noqa: E402

from neuralengine.data.annotation import Settings, annotate  # noqa: E402
from neuralengine.data.cluster import RayBackend  # noqa: E402
from neuralengine.data.scheduler import PoolBackend  # noqa: E402
from neuralengine.data.stockfish import resolve_engine  # noqa: E402

#: Every test here starts a local Ray cluster (tens of seconds each).
pytestmark = pytest.mark.slow

WORKERS = 2
COUNT, SHARD = 48, 5  # 10 shards, the last one short
SHARDS = -(-COUNT // SHARD)


@pytest.fixture(scope="module")
def local_cluster():
    """One local cluster for the module (2 CPUs); the functions under test join it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20,
             logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def positions(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """48 puzzle positions as 12 games of 4 (so ``ucinewgame`` falls inside shards too)."""
    path = tmp_path_factory.mktemp("pos") / "train.fen"
    with open(shared_data / "lichess_puzzles_500.csv", newline="") as fh, open(path, "w") as out:
        for i, row in enumerate(csv.DictReader(fh)):
            if i == COUNT:
                break
            board = chess.Board(row["FEN"])
            assert board.is_valid()
            out.write(f"{board.fen()}\tg{i // 4}\n")
    return path


def settings_for(out: Path, stockfish_path: str, depth: int) -> Settings:
    from neuralengine.data.stockfish import Stockfish

    command = resolve_engine(stockfish_path)
    with Stockfish(command) as probe:
        name = probe.name
    return Settings(command=command, out_dir=str(out), depth=depth, shard_size=SHARD, engine=name)


def shards(folder: Path) -> dict[str, tuple[str, dict]]:
    """name -> (text, JSON without the timing) of every shard in ``folder``."""
    out = {}
    for path in sorted(folder.glob("*.json")):
        meta = json.loads(path.read_text())
        meta.pop("seconds")
        text = gzip.open(path.with_name(path.name[:-5] + ".txt.gz"), "rt").read()
        out[path.stem] = (text, meta)
    return out


@pytest.fixture(scope="module")
def reference(positions: Path, stockfish_path: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The one-machine annotator's shards (process pool of 2)."""
    out = tmp_path_factory.mktemp("pool")
    summary = annotate([positions], settings_for(out, stockfish_path, 9), PoolBackend(WORKERS), progress=False)
    assert summary.positions == COUNT and summary.shards_done == SHARDS
    return shards(out)


def test_ray_writes_the_same_shards_as_the_process_pool(local_cluster, positions, stockfish_path, reference,
                                                        tmp_path):
    summary = annotate([positions], settings_for(tmp_path, stockfish_path, 9), RayBackend(None, WORKERS),
                                      progress=False)
    assert (summary.positions, summary.shards_done, summary.restarts) == (COUNT, SHARDS, 0)
    assert shards(tmp_path) == reference
    # A rerun finds every shard done and redoes none.
    again = annotate([positions], settings_for(tmp_path, stockfish_path, 9), RayBackend(None, WORKERS), progress=False)
    assert (again.shards_done, again.shards_skipped) == (0, SHARDS)
    # After a crash that lost one shard's completion mark, only that shard is redone.
    (tmp_path / "train-00002.json").unlink()
    again = annotate([positions], settings_for(tmp_path, stockfish_path, 9), RayBackend(None, WORKERS), progress=False)
    assert (again.shards_done, again.shards_skipped) == (1, SHARDS - 1)
    assert shards(tmp_path) == reference


def test_killed_stockfish_and_actor_lose_nothing_and_duplicate_nothing(local_cluster, positions, stockfish_path,
                                                                      reference, tmp_path):
    killed: dict[str, int] = {}

    # Both kills come early (shards 1 and 3 of 10), so the killed process always has work left: the
    # lost Stockfish and the lost actor are both noticed and their shards redone.
    def chaos(kind: str, info: dict) -> None:
        if kind != "progress":
            return
        if "stockfish" not in killed and info.get("engine_pid"):
            killed["stockfish"] = info["engine_pid"]
            os.kill(info["engine_pid"], signal.SIGKILL)           # a Stockfish dies mid-shard
        elif "actor" not in killed and info["token"] > 2:
            killed["actor"] = info["pid"]
            os.kill(info["pid"], signal.SIGKILL)                  # then a whole actor process

    summary = annotate([positions], settings_for(tmp_path, stockfish_path, 9), RayBackend(None, WORKERS),
                                      progress=False, on_event=chaos)
    assert set(killed) == {"stockfish", "actor"}
    assert summary.restarts >= 2 and summary.shards_failed == 0
    assert summary.positions == COUNT and summary.shards_done == SHARDS
    result = shards(tmp_path)
    assert result == reference
    fens = [line.split("\t")[0] for text, _ in result.values() for line in text.splitlines()]
    assert len(fens) == len(set(fens)) == COUNT
    assert not list(tmp_path.glob("*.tmp*"))


def test_datagen_self_play_on_ray_actors(local_cluster, stockfish_path, tmp_path):
    from neuralengine.data.selfplay import SelfPlayConfig, game_id, play_games

    cfg = SelfPlayConfig(seed=3, nodes=1000, max_plies=40)
    records = list(play_games(resolve_engine(stockfish_path), cfg, 5, RayBackend(None, WORKERS), {game_id(3, 1)}))
    assert [r.game_id for r in records] == [game_id(3, i) for i in (0, 2, 3, 4)]  # in order, the skipped one left out
    for record in records:
        board = chess.Board(record.fens[0])
        assert board.is_valid() and len(record.fens) >= 2


def test_annotate_command_joins_a_running_cluster(local_cluster, positions, stockfish_path, reference, tmp_path):
    """``neuralengine annotate --ray auto`` from another process joins the cluster the fixture started."""
    result = subprocess.run([sys.executable, "-m", "neuralengine", "annotate", str(positions), "--out", str(tmp_path),
                             "--ray", "auto", "--depth", "9", "--shard-size", str(SHARD), "--stockfish", stockfish_path,
                             "--quiet"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{COUNT} positions" in result.stderr
    assert shards(tmp_path) == reference


@pytest.mark.parametrize("command", [["annotate", "POS", "--out", "OUT"], ["datagen", "--out", "OUT", "--games", "1"]])
def test_without_ray_the_commands_name_the_extra(command, positions, tmp_path):
    plain = Path(__file__).resolve().parent / "plain_install.py"
    args = [str(positions) if a == "POS" else str(tmp_path / "out") if a == "OUT" else a for a in command]
    result = subprocess.run([sys.executable, str(plain), *args, "--ray"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "pip install 'neuralengine[cluster]'" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_more_workers_than_cpus_are_capped(local_cluster, positions, stockfish_path, reference, tmp_path, capsys):
    """Actors beyond the cluster's CPUs would never be scheduled, and their shards would wait for ever."""
    summary = annotate([positions], settings_for(tmp_path, stockfish_path, 9), RayBackend(None, WORKERS + 3),
                                      progress=False)
    assert summary.shards_done == SHARDS and shards(tmp_path) == reference
    assert f"has {WORKERS} CPUs; using {WORKERS} actors, not {WORKERS + 3}" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_is_one_line_and_shuts_the_local_cluster_down(positions, tmp_path):
    driver, below = start_stuck_annotation(tmp_path, positions, "--ray")
    assert len(below) >= 5, below  # Ray's processes, the actor, the engine
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["annotate: terminated; finished shards are kept, rerun to continue"]
    assert not wait_gone(below, 30), "processes of the local cluster outlived the run"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_after_sigkill_of_the_driver_no_process_of_its_local_cluster_stays(positions, tmp_path):
    driver, below = start_stuck_annotation(tmp_path, positions, "--ray")
    driver.kill()
    driver.communicate(timeout=60)
    # Ray's own agents notice a dead raylet only after a minute or more.
    assert not wait_gone(below, 30), "processes of the local cluster outlived the run"
