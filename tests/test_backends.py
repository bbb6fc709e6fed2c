"""Backends agree with each other, find or rebuild their ONNX graph, and
``neuralengine export`` writes it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import chess
import numpy as np
import pytest

from conftest import write_model
from neuralengine.backends import create_backend, cuda_available, torch_available
from neuralengine.config import preset
from neuralengine.encoding import expected_win_prob, legal_actions, tokenize_board
from neuralengine.weights import WeightsError, file_sha256

needs_torch = pytest.mark.skipif(not torch_available(), reason="needs the torch extra")

FENS = [
    chess.STARTING_FEN,
    "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1",
    "6k1/5ppp/8/8/8/8/5PPP/3R2K1 w - - 0 1",
]


def inputs(fen: str) -> tuple[np.ndarray, np.ndarray]:
    board = chess.Board(fen)
    _, actions = legal_actions(board)
    return tokenize_board(board)[None], actions[None]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("NEURALENGINE_CACHE", str(cache))
    return cache


def _graph_sha(path: Path) -> str:
    import onnxruntime as ort

    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    return meta.custom_metadata_map["neuralengine.weights_sha256"]


@needs_torch
@pytest.mark.parametrize("fixture", ["tiny_weights", "tiny_shared_weights"])
def test_onnx_and_torch_cpu_agree(fixture: str, request: pytest.FixtureRequest) -> None:
    weights = request.getfixturevalue(fixture)
    onnx = create_backend(weights, "onnx", threads=1)
    torch_cpu = create_backend(weights, "torch-cpu", threads=1)
    assert onnx.graph_path == weights.with_suffix(".onnx")  # the shipped sidecar is used
    assert onnx.describe() == "onnx (cpu)" and torch_cpu.describe() == "torch (cpu)"
    assert onnx.config == torch_cpu.config and onnx.weights_sha256 == torch_cpu.weights_sha256
    for fen in FENS:
        boards, actions = inputs(fen)
        a = onnx.evaluate(boards, actions)
        b = torch_cpu.evaluate(boards, actions)
        assert a.dtype == b.dtype == np.float32
        assert a.shape == b.shape == (1, actions.shape[1], 128)
        assert np.abs(a - b).max() <= 1e-4
        np.testing.assert_allclose(np.exp(a).sum(-1), 1.0, atol=1e-5)
        # Different moves really get different scores.
        assert np.ptp(expected_win_prob(a[0])) > 1e-3


@needs_torch
@pytest.mark.parametrize("kind", ["state_value", "behavioral_cloning"])
def test_board_only_kinds_agree(kind: str, tmp_path: Path) -> None:
    path = write_model(tmp_path, preset("tiny", kind=kind), seed=8)
    boards = np.concatenate([inputs(f)[0] for f in FENS])
    a = create_backend(path, "onnx").evaluate(boards)
    b = create_backend(path, "torch-cpu").evaluate(boards)
    assert a.shape == b.shape == (len(FENS), 128 if kind == "state_value" else 1968)
    assert np.abs(a - b).max() <= 1e-4


@needs_torch
def test_batches_of_positions(tiny_shared_weights: Path) -> None:
    backend = create_backend(tiny_shared_weights, "onnx")
    boards = np.concatenate([inputs(f)[0] for f in FENS])
    actions = np.stack([inputs(f)[1][0, :8] for f in FENS])
    batched = backend.evaluate(boards, actions)
    for i in range(len(FENS)):
        assert np.abs(batched[i] - backend.evaluate(boards[i:i + 1], actions[i:i + 1])[0]).max() <= 1e-5


@needs_torch
def test_stale_sidecar_is_ignored_and_reexported_into_the_cache(tmp_path: Path, private_cache: Path) -> None:
    folder = tmp_path / "w"
    path = write_model(folder, preset("tiny"), seed=1)
    sidecar = path.with_suffix(".onnx")
    old_sha = _graph_sha(sidecar)
    assert old_sha == file_sha256(path)
    # New weights under the same name: the sidecar now describes other weights.
    write_model(folder, preset("tiny"), seed=2, onnx=False)
    new_sha = file_sha256(path)
    assert new_sha != old_sha
    backend = create_backend(path, "onnx")
    assert backend.graph_path.parent == private_cache / "onnx"
    assert _graph_sha(backend.graph_path) == new_sha
    assert _graph_sha(sidecar) == old_sha  # left alone
    boards, actions = inputs(FENS[1])
    expected = create_backend(path, "torch-cpu").evaluate(boards, actions)
    assert np.abs(backend.evaluate(boards, actions) - expected).max() <= 1e-4
    # The next start finds the cached graph instead of exporting again.
    stamp = backend.graph_path.stat().st_mtime_ns
    again = create_backend(path, "onnx")
    assert again.graph_path == backend.graph_path and again.graph_path.stat().st_mtime_ns == stamp


@needs_torch
def test_corrupt_or_missing_sidecar_is_rebuilt(tmp_path: Path, private_cache: Path) -> None:
    path = write_model(tmp_path, preset("tiny"), seed=3)
    sidecar = path.with_suffix(".onnx")
    sidecar.write_bytes(b"not an onnx graph")
    backend = create_backend(path, "onnx")
    assert backend.graph_path.parent == private_cache / "onnx"
    sidecar.unlink()
    shutil.rmtree(private_cache)
    assert create_backend(path, "onnx").graph_path.is_file()


def test_truncated_sidecar_is_rebuilt(tmp_path: Path, private_cache: Path) -> None:
    path = write_model(tmp_path, preset("tiny"), seed=6)
    sidecar = path.with_suffix(".onnx")
    sidecar.write_bytes(sidecar.read_bytes()[:-100])  # its weights fingerprint is still readable in the head
    backend = create_backend(path, "onnx")
    assert backend.graph_path.parent == private_cache / "onnx"
    assert _graph_sha(backend.graph_path) == file_sha256(path)


def test_current_graph_that_cannot_be_opened_is_reported_not_reexported(tmp_path: Path,
                                                                         private_cache: Path) -> None:
    """A graph exported from these very weights that ONNX Runtime refuses (here an opset it does not have;
    a provider or memory failure alike) is an error naming that graph, not a reason to export another."""
    onnx = pytest.importorskip("onnx")
    path = write_model(tmp_path, preset("tiny"), seed=7)
    sidecar = path.with_suffix(".onnx")
    proto = onnx.load(str(sidecar))
    proto.opset_import[0].version = 999
    onnx.save(proto, str(sidecar))
    with pytest.raises(WeightsError) as error:
        create_backend(path, "onnx")
    message = str(error.value)
    assert str(sidecar) in message and "999" in message and "\n" not in message
    assert not (private_cache / "onnx").exists()


def test_stale_sidecar_is_replaced_without_torch(tmp_path: Path) -> None:
    """A plain install (no PyTorch, no onnx) writes the missing graph itself and ranks the moves as PyTorch does."""
    path = write_model(tmp_path, preset("tiny"), seed=4, onnx=False)
    path.with_suffix(".onnx").write_bytes(b"not an onnx graph")
    cache = tmp_path / "cache"
    env = dict(os.environ, NEURALENGINE_CACHE=str(cache))
    plain = Path(__file__).resolve().parent / "plain_install.py"
    result = subprocess.run([sys.executable, str(plain), "analyse", "--weights", str(path), "--top", "5",
                             "--backend", "onnx"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert len(list((cache / "onnx").glob("*.onnx"))) == 1
    ranked = [line.split()[1] for line in result.stdout.splitlines() if re.match(r"\s*[1-5] ", line)]
    if torch_available():
        moves, _ = legal_actions(chess.Board())
        boards, actions = inputs(chess.STARTING_FEN)
        win = expected_win_prob(create_backend(path, "torch-cpu").evaluate(boards, actions))[0]
        assert ranked == [moves[i].uci() for i in np.argsort(-win, kind="stable")[:5]]
    else:
        assert len(ranked) == 5


@needs_torch
def test_auto_selects_a_working_backend(tiny_weights: Path) -> None:
    backend = create_backend(tiny_weights, "auto")
    expected_name = "torch" if cuda_available() else "onnx"
    assert backend.name == expected_name
    boards, actions = inputs(FENS[0])
    reference = create_backend(tiny_weights, "torch-cpu").evaluate(boards, actions)
    assert np.abs(backend.evaluate(boards, actions) - reference).max() <= 1e-4


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU")
def test_torch_cuda_without_a_gpu_is_a_clear_error(tiny_weights: Path) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        create_backend(tiny_weights, "torch-cuda")


@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_torch_cuda_agrees_with_the_cpu(tiny_shared_weights: Path) -> None:
    gpu = create_backend(tiny_shared_weights, "torch-cuda")
    assert gpu.device == "cuda"
    boards, actions = inputs(FENS[1])
    cpu = create_backend(tiny_shared_weights, "torch-cpu").evaluate(boards, actions)
    assert np.abs(gpu.evaluate(boards, actions) - cpu).max() <= 1e-3


# --------------------------------------------------------------------------
# neuralengine export
# --------------------------------------------------------------------------


@needs_torch
def test_export_command_writes_the_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from neuralengine.export import main

    path = write_model(tmp_path, preset("tiny", attention="shared_board"), seed=5, onnx=False)
    assert main([str(path)]) == 0
    sidecar = path.with_suffix(".onnx")
    assert capsys.readouterr().out.strip() == str(sidecar)
    assert _graph_sha(sidecar) == file_sha256(path)
    out = tmp_path / "elsewhere" / "graph.onnx"
    assert main([str(path), "--onnx", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.is_file() and _graph_sha(out) == file_sha256(path)


@needs_torch
def test_export_int8(tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import onnxruntime as ort

    from neuralengine.export import main

    path = write_model(tmp_path, preset("tiny"), seed=6, onnx=False)
    caplog.set_level(logging.WARNING)
    assert main([str(path), "--int8"]) == 0
    assert not caplog.records, [r.getMessage() for r in caplog.records]  # no library advice reaches the user
    assert logging.getLogger().level == logging.WARNING  # the root logger's level is given back
    printed = capsys.readouterr().out.split()
    f32, int8 = path.with_suffix(".onnx"), tmp_path / "model.int8.onnx"
    assert printed == [str(f32), str(int8)]
    meta = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert meta["neuralengine.weights_sha256"] == file_sha256(path)
    assert meta["neuralengine.quantization"] == "int8-dynamic"
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (f32, int8)]
    for fen in FENS:
        boards, actions = inputs(fen)
        feeds = {"board": boards.astype(np.int64), "actions": actions}
        a, b = (s.run(None, feeds)[0] for s in sessions)
        np.testing.assert_allclose(np.exp(b).sum(-1), 1.0, atol=1e-4)
        assert np.abs(expected_win_prob(a[0]) - expected_win_prob(b[0])).max() < 0.1


@needs_torch
@pytest.mark.parametrize("problem", ["missing", "garbage"])
def test_export_command_reports_bad_weights(problem: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from neuralengine.export import main

    path = tmp_path / "model.safetensors"
    if problem == "garbage":
        path.write_bytes(b"\x00" * 7)
    assert main([str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("neuralengine export: ") and "Traceback" not in captured.err
    assert ("not found" if problem == "missing" else "empty or truncated") in captured.err
    assert not path.with_suffix(".onnx").exists()


@needs_torch
def test_export_through_the_executable(tmp_path: Path, engine_command: list[str]) -> None:
    path = write_model(tmp_path, preset("tiny"), seed=7, onnx=False)
    env = dict(os.environ, NEURALENGINE_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([*engine_command, "export", str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(path.with_suffix(".onnx"))
    bad = subprocess.run([*engine_command, "export", str(tmp_path / "nope.safetensors")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 1 and "not found" in bad.stderr and "Traceback" not in bad.stderr
