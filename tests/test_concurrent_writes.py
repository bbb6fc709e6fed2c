"""Two processes writing the same file: unique temporary names, and a lock around cache creation.

The races are forced, not left to chance: each child waits at a barrier just
before its rename, so both have written their temporary file when the first
rename happens (with one shared temporary name, the second rename fails).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from conftest import random_tensors
from neuralengine.atomic import atomic_path, file_lock, lock_path
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
