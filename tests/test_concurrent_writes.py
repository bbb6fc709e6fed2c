"""Two processes writing the same file: unique temporary names, and a lock around cache creation.

The races are forced, not left to chance: each child waits at a barrier just
before its rename, so both have written their temporary file when the first
rename happens (with one shared temporary name, the second rename fails).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import stat
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from conftest import random_tensors
from neuralengine.atomic import atomic_folder, atomic_path, file_lock, lock_path, remove_stale_temps, temp_path
from neuralengine.config import preset
from neuralengine.weights import load_weights, read_metadata, save_weights

fcntl = pytest.importorskip("fcntl")  # the lock checks below use flock directly

CFG = preset("tiny")
#: Generous limits that only turn a deadlock into a failure; nothing is timed.
DEADLOCK_GUARD_S = 300


def _stray_temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def _is_locked(path: Path) -> bool:
    """Whether some open file holds an exclusive flock on ``path``."""
    if not path.parent.is_dir():
        return False
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


# -- children (module level, so that the spawn start method can import them) --


def _write_weights(target: str, seed: int) -> None:
    save_weights(target, CFG, random_tensors(CFG, seed), provenance={"writer": seed})


def _export_graph(weights: str, target: str) -> None:
    from neuralengine.export import export_weights_file

    export_weights_file(weights, target)


def _open_graph(weights: str, record: str) -> None:
    """Open the onnx backend on weights without a graph; note each export in ``record``."""
    import neuralengine.backends.graph as graph
    from neuralengine.backends import create_backend

    real = graph.export_weights_file

    def export(*args: Any, **kwargs: Any) -> Path:
        with open(record, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    graph.export_weights_file = export
    create_backend(weights, "onnx")


def _after_barrier(barrier: Any, job: Callable[..., None], *args: Any) -> None:
    """Run ``job`` with its first ``os.replace`` held back until the other child gets there too."""
    real_replace = os.replace
    waited = []

    def replace(src: Any, dst: Any) -> None:
        if not waited:
            waited.append(True)
            barrier.wait(DEADLOCK_GUARD_S)
        real_replace(src, dst)

    os.replace = replace  # type: ignore[assignment]
    try:
        job(*args)
    except BaseException:
        barrier.abort()  # do not leave the other child waiting
        raise


def _run_pair(target: Callable[..., None], args: list[tuple[Any, ...]]) -> list[int | None]:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=a) for a in args]
    for p in procs:
        p.start()
    for p in procs:
        p.join(DEADLOCK_GUARD_S)
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


# -- tests ---------------------------------------------------------------------


def test_atomic_path_renames_on_success_and_cleans_up_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_bytes(b"one")
        second.write_bytes(b"two")
    assert target.read_bytes() == b"one"  # the outer block ends last and wins
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"one"
    assert _stray_temp_files(tmp_path) == []
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_file_lock_excludes_other_holders(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    assert not _is_locked(lock)
    with file_lock(lock):
        assert _is_locked(lock)
    assert not _is_locked(lock)


@pytest.mark.slow
def test_two_processes_save_the_same_weights_file(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    barrier = mp.get_context("spawn").Barrier(2)
    codes = _run_pair(_after_barrier, [(barrier, _write_weights, str(target), seed) for seed in (1, 2)])
    assert codes == [0, 0]
    weights = load_weights(target)
    assert weights.metadata["provenance"]["writer"] in (1, 2)
    expected = random_tensors(CFG, weights.metadata["provenance"]["writer"])
    np.testing.assert_array_equal(weights.tensors["head.bias"], expected["head.bias"])
    assert _stray_temp_files(tmp_path) == []


def test_two_processes_export_the_same_graph(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    weights = save_weights(tmp_path / "model.safetensors", CFG, random_tensors(CFG, 3))
    target = tmp_path / "model.onnx"
    barrier = mp.get_context("spawn").Barrier(2)
    codes = _run_pair(_after_barrier, [(barrier, _export_graph, str(weights), str(target))] * 2)
    assert codes == [0, 0]
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    from neuralengine.backends.graph import WEIGHTS_SHA_KEY

    assert session.get_modelmeta().custom_metadata_map[WEIGHTS_SHA_KEY] == load_weights(weights).sha256
    assert _stray_temp_files(tmp_path) == []


def test_cache_export_holds_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend exports a missing graph into the cache only while holding its lock."""
    import neuralengine.backends.graph as graph
    from neuralengine.backends import create_backend

    monkeypatch.setenv("NEURALENGINE_CACHE", str(tmp_path / "cache"))
    weights = save_weights(tmp_path / "model.safetensors", CFG, random_tensors(CFG, 4))
    real = graph.export_weights_file
    held: list[bool] = []

    def export(weights_path: Any, onnx_path: Any = None) -> Path:
        held.append(_is_locked(lock_path(onnx_path)))
        return real(weights_path, onnx_path)

    monkeypatch.setattr(graph, "export_weights_file", export)
    backend = create_backend(weights, "onnx")
    assert held == [True]
    cached = tmp_path / "cache" / "onnx"
    assert backend.graph_path.parent == cached and _stray_temp_files(cached) == []
    assert create_backend(weights, "onnx").graph_path == backend.graph_path
    assert held == [True]  # the cached graph is reused


def test_two_engines_export_a_missing_graph_once(tmp_path: Path) -> None:
    """Two engines opening the same weights at once: one exports, the other waits and reuses."""
    weights = save_weights(tmp_path / "model.safetensors", CFG, random_tensors(CFG, 5))
    record = tmp_path / "exports.txt"
    old = os.environ.get("NEURALENGINE_CACHE")
    os.environ["NEURALENGINE_CACHE"] = str(tmp_path / "cache")  # inherited by the spawned children
    try:
        codes = _run_pair(_open_graph, [(str(weights), str(record))] * 2)
    finally:
        if old is None:
            del os.environ["NEURALENGINE_CACHE"]
        else:
            os.environ["NEURALENGINE_CACHE"] = old
    assert codes == [0, 0]
    assert len(record.read_text().split()) == 1
    cached = tmp_path / "cache" / "onnx"
    assert len(list(cached.glob("*.onnx"))) == 1 and _stray_temp_files(cached) == []


def test_deepmind_conversion_holds_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint folder is converted into the cache under a lock, and a conversion that
    another process finished while this one waited is reused."""
    import neuralengine.deepmind.cache as cache
    import neuralengine.deepmind.checkpoint as checkpoint
    import neuralengine.deepmind.convert as convert

    folder = tmp_path / "ckpt"
    folder.mkdir()
    target = tmp_path / "cache" / "deepmind" / "key" / "ckpt.safetensors"
    monkeypatch.setattr(cache, "cached_path", lambda *a, **k: target)
    monkeypatch.setattr(checkpoint, "locate", lambda *a, **k: "location")
    held: list[bool] = []

    def fake_convert(location: Any, out: Any, **kwargs: Any) -> Path:
        held.append(_is_locked(lock_path(out)))
        return save_weights(out, CFG, random_tensors(CFG, 6))

    monkeypatch.setattr(convert, "convert_location", fake_convert)
    assert cache.resolve_weights(folder, report=lambda _: None) == target
    assert held == [True]
    read_metadata(target)
    assert cache.resolve_weights(folder, report=lambda _: None) == target
    assert held == [True] and _stray_temp_files(target.parent) == []


# -- file modes through every writer ---------------------------------------------------


@pytest.fixture
def umask_027() -> Any:
    """A umask that tells the usual modes (0o640 files, 0o750 folders) from 0o600 and 0o644."""
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _fake_deepmind_checkpoint(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkpoint folder in DeepMind's layout whose reading is replaced by random Haiku parameters
    (the conversion's writing, the part under test, is real; no orbax needed)."""
    import neuralengine.deepmind.convert as convert
    from neuralengine.deepmind import numpy_ref
    from test_deepmind import haiku_tree

    item = folder / "6400" / "params"
    item.mkdir(parents=True)
    (item / "_METADATA").write_text("{}")
    tree = haiku_tree(numpy_ref.random_params(2, 32, 8, 128, 79, seed=1))
    monkeypatch.setattr(convert, "read_params", lambda *a, **k: tree)
    return folder


def test_every_writer_gives_the_usual_file_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 umask_027: None) -> None:
    """Weights, graphs, conversions, caches, shards, bags and prepare's folder get 0o666 (folders
    0o777) less the umask, as a plain open() would: never the private 0o600 of a temporary file."""
    from neuralengine.backends import create_backend
    from neuralengine.data.bag import encode_action_value, write_bag
    from neuralengine.data.prepare import main as prepare_main
    from neuralengine.data.shards import Position, write_shard
    from neuralengine.deepmind import resolve_weights
    from neuralengine.deepmind.convert import main as convert_main
    from neuralengine.export import export_weights_file, main as export_main

    monkeypatch.setenv("NEURALENGINE_CACHE", str(tmp_path / "cache"))
    files: list[Path] = []
    weights = save_weights(tmp_path / "model.safetensors", CFG, random_tensors(CFG, 7))
    files += [weights, export_weights_file(weights)]
    assert export_main([str(weights), "--onnx", str(tmp_path / "cli.onnx")]) == 0
    files.append(tmp_path / "cli.onnx")
    bare = save_weights(tmp_path / "bare" / "model.safetensors", CFG, random_tensors(CFG, 8))
    files.append(create_backend(bare, "onnx").graph_path)  # exported into the cache
    checkpoint = _fake_deepmind_checkpoint(tmp_path / "tiny", monkeypatch)
    cached = resolve_weights(checkpoint, report=lambda _: None)
    files += [cached, cached.with_suffix(".onnx")]
    assert convert_main(["deepmind", str(checkpoint), "--out", str(tmp_path / "converted"), "--quiet"]) == 0
    files += sorted((tmp_path / "converted").iterdir())
    board = np.zeros(77, np.uint8)
    files.append(write_shard(tmp_path / "one.neav", [Position(board, np.array([1], np.int16),
                                                              np.array([0.5], np.float32), 0)]))
    files.append(write_bag(tmp_path / "one.bag", [encode_action_value("8/8/8/8/8/8/8/K6k w - - 0 1", "a1a2", 0.5)]))
    text = tmp_path / "games.txt"
    text.write_text("8/8/8/8/8/8/8/K6k w - - 0 1\ta1a2:10 a1b1:0\n8/8/8/8/8/8/8/K6k b - - 0 1\th8h7:3\n")
    out = tmp_path / "shards"
    assert prepare_main([str(text), "--out", str(out), "--quiet", "--test-fraction", "0"]) == 0
    files += sorted(out.iterdir())
    assert len(files) == 12 and all(p.is_file() for p in files)
    assert {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in files} == \
        {str(p.relative_to(tmp_path)): oct(0o640) for p in files}
    assert _mode(out) == 0o750
    # A folder that prepare replaces keeps its own mode.
    out.chmod(0o705)
    assert prepare_main([str(text), "--out", str(out), "--quiet", "--test-fraction", "0", "--force"]) == 0
    assert _mode(out) == 0o705 and _mode(out / "train-0000.neav") == 0o640


def test_the_int8_graph_gets_the_usual_file_mode(tmp_path: Path, umask_027: None) -> None:
    pytest.importorskip("onnx")
    from neuralengine.export import export_weights_file, quantize_int8

    graph = export_weights_file(save_weights(tmp_path / "model.safetensors", CFG, random_tensors(CFG, 9)))
    assert _mode(quantize_int8(graph)) == 0o640


# -- atomic_folder -------------------------------------------------------------------------


def test_atomic_folder_swaps_in_a_whole_set_or_nothing(tmp_path: Path, umask_027: None) -> None:
    target = tmp_path / "set"
    with atomic_folder(target) as new:
        assert new.parent == tmp_path and new.name.startswith(f".set.{os.getpid()}.")
        (new / "a").write_text("1")
        (new / "b").write_text("1")
    assert sorted(p.name for p in target.iterdir()) == ["a", "b"] and _mode(target) == 0o750
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as new:
            (new / "a").write_text("2")
            raise RuntimeError("interrupted")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a": "1", "b": "1"}
    with atomic_folder(target) as new:
        (new / "a").write_text("3")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a": "3"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_atomic_folder_keeps_what_it_does_not_own(tmp_path: Path) -> None:
    target = tmp_path / "set"
    target.mkdir()
    for name in ("old.neav", "gone.neav", "notes.txt"):
        (target / name).write_text("old")
    link = tmp_path / "link"
    link.symlink_to(target)
    with atomic_folder(link, owns=lambda name: name.endswith(".neav")) as new:
        (new / "old.neav").write_text("new")
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert {p.name: p.read_text() for p in target.iterdir()} == {"old.neav": "new", "notes.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "set"]


# -- the cleaner of temporary files -------------------------------------------------------------


def test_remove_stale_temps_removes_only_dead_writers_files(tmp_path: Path) -> None:
    """A live writer's temporary file survives a cleanup, a dead writer's file (or folder) goes,
    and files of other names are never touched."""
    import subprocess
    import sys

    writer = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        live = tmp_path / f".model.onnx.{writer.pid}.k3j_x.tmp"
        live.write_bytes(b"half")
        mine = temp_path(tmp_path / "model.onnx")
        others = ["model.onnx", "model.onnx.tmp", ".model.onnx.tmp", f"model.onnx.tmp{writer.pid}",
                  ".model.onnx.abc.tmp", ".model.onnx.123.abc.tmp.keep", "train-0000.neav.tmp"]
        for name in others:
            (tmp_path / name).write_bytes(b"x")
        assert remove_stale_temps(tmp_path) == []
    finally:
        writer.stdin.close()  # the writer ends
        writer.wait()
    dead_folder = tmp_path / f".shards.{writer.pid}.q1w2e3.tmp"
    dead_folder.mkdir()
    (dead_folder / "train-0000.neav").write_bytes(b"half")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([live, dead_folder])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others + [mine.name])
    # Only one target's leftovers, when asked.
    other = tmp_path / f".other.{writer.pid}.zz.tmp"
    other.write_bytes(b"x")
    assert remove_stale_temps(tmp_path, target="shards") == [] and other.exists()
    assert remove_stale_temps(tmp_path, target="other") == [other]
