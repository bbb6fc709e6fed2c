"""DeepMind checkpoint conversion.

Checkpoints are built in DeepMind's on-disk layout (``<name>/<step>/params``
and ``params_ema``, orbax PyTree/OCDBT) from random parameters, converted,
and the engine's log-probabilities and moves compared with an independent
NumPy forward pass on the same parameters.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import chess
import numpy as np
import pytest

from neuralengine.config import ACTION_VALUE, BEHAVIORAL_CLONING, STATE_VALUE
from neuralengine.deepmind import DeepMindError, numpy_ref
from neuralengine.deepmind.checkpoint import locate
from neuralengine.deepmind.mapping import map_tree
from neuralengine.deepmind.numpy_ref import RefParams
from neuralengine.encoding import legal_actions, tokenize
from neuralengine.weights import read_metadata

STEP = 6400
FENS = [
    chess.STARTING_FEN,
    "rnbqkbnr/pppp1ppp/8/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R b KQkq - 1 2",
    "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3",
    "rnbqkbnr/ppp1p1pp/8/3pPp2/8/8/PPPP1PPP/RNBQKBNR w KQkq f6 0 3",
    "8/P6k/8/8/8/8/6pK/8 w - - 0 50",
]
TOL = 1e-5


# ---------------------------------------------------------------------------
# Parameter trees, named as in the reference sheet (§5)
# ---------------------------------------------------------------------------

def _haiku(base: str, index: int) -> str:
    return base if index == 0 else f"{base}_{index}"


def haiku_tree(p: RefParams) -> dict:
    """A Haiku parameter dict: ``module -> {param: array}``, ``parent/child`` keys."""
    tree: dict = {"embed": {"embeddings": p.embed}, "embed_1": {"embeddings": p.pos}}
    n = len(p.layers)
    for i, layer in enumerate(p.layers):
        tree[_haiku("layer_norm", 2 * i)] = {"scale": layer.ln1_scale, "offset": layer.ln1_offset}
        attention = _haiku("multi_head_dot_product_attention", i)
        for j, w in enumerate((layer.wq, layer.wk, layer.wv, layer.wo)):
            tree[f"{attention}/{_haiku('linear', j)}"] = {"w": w}
        tree[_haiku("layer_norm", 2 * i + 1)] = {"scale": layer.ln2_scale, "offset": layer.ln2_offset}
        tree[_haiku("linear", 3 * i)] = {"w": layer.w_gate}
        tree[_haiku("linear", 3 * i + 1)] = {"w": layer.w_up}
        tree[_haiku("linear", 3 * i + 2)] = {"w": layer.w_down}
    tree[_haiku("layer_norm", 2 * n)] = {"scale": p.lnf_scale, "offset": p.lnf_offset}
    tree[_haiku("linear", 3 * n)] = {"w": p.w_out, "b": p.b_out}
    return tree


def flax_tree(p: RefParams, attention: str = "dense") -> dict:
    """A Flax-named tree. ``attention``: ``dense`` (Dense_0..3 inside each
    attention module) or ``builtin`` (query/key/value/out with per-head
    kernels and zero biases, as Flax's own attention stores them)."""
    d, h = p.width, p.num_heads
    tree: dict = {"Embed_0": {"embedding": p.embed}, "Embed_1": {"embedding": p.pos}}
    n = len(p.layers)
    for i, layer in enumerate(p.layers):
        tree[f"LayerNorm_{2 * i}"] = {"scale": layer.ln1_scale, "bias": layer.ln1_offset}
        if attention == "dense":
            inner = {f"Dense_{j}": {"kernel": w} for j, w in enumerate((layer.wq, layer.wk, layer.wv, layer.wo))}
        else:
            inner = {name: {"kernel": w.reshape(d, h, d // h), "bias": np.zeros((h, d // h), np.float32)}
                     for name, w in zip(("query", "key", "value"), (layer.wq, layer.wk, layer.wv))}
            inner["out"] = {"kernel": layer.wo.reshape(h, d // h, d), "bias": np.zeros(d, np.float32)}
        tree[f"MultiHeadDotProductAttention_{i}"] = inner
        tree[f"LayerNorm_{2 * i + 1}"] = {"scale": layer.ln2_scale, "bias": layer.ln2_offset}
        tree[f"Dense_{3 * i}"] = {"kernel": layer.w_gate}
        tree[f"Dense_{3 * i + 1}"] = {"kernel": layer.w_up}
        tree[f"Dense_{3 * i + 2}"] = {"kernel": layer.w_down}
    tree[f"LayerNorm_{2 * n}"] = {"scale": p.lnf_scale, "bias": p.lnf_offset}
    tree[f"Dense_{3 * n}"] = {"kernel": p.w_out, "bias": p.b_out}
    return tree


def save_checkpoint(root: Path, trees: dict[str, dict], step: int = STEP, manager: bool = True) -> Path:
    """Write ``trees`` (item name -> tree) as ``root/<step>/<item>`` orbax items of JAX arrays."""
    ocp = pytest.importorskip("orbax.checkpoint")
    import jax
    import jax.numpy as jnp

    to_jax = lambda t: jax.tree_util.tree_map(jnp.asarray, t)  # noqa: E731
    root = root.absolute()
    if manager:
        # DeepMind's training loop: a CheckpointManager with one item per tree.
        with ocp.CheckpointManager(root, item_names=tuple(trees)) as mngr:
            mngr.save(step, args=ocp.args.Composite(**{k: ocp.args.StandardSave(to_jax(t))
                                                       for k, t in trees.items()}))
            mngr.wait_until_finished()
    else:
        checkpointer = ocp.PyTreeCheckpointer()
        for item, tree in trees.items():
            checkpointer.save(root / str(step) / item, to_jax(tree))
    return root


# ---------------------------------------------------------------------------
# Fixtures: one checkpoint per predictor kind
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, RefParams, RefParams]]:
    pytest.importorskip("orbax.checkpoint")
    base = tmp_path_factory.mktemp("dm")
    # Action value: 4 layers, so that linear_10 … linear_12 exist (numeric, not string, order).
    av = numpy_ref.random_params(4, 32, 8, 128, 79, seed=1)
    av_ema = numpy_ref.random_params(4, 32, 8, 128, 79, seed=2)
    # State value: 78 positions, Flax names with Dense_0..3 in the attention.
    sv = numpy_ref.random_params(2, 32, 8, 128, 78, seed=3, eps=1e-6)
    # Behavioural cloning: 79 positions (DeepMind's builder), Flax's own attention layout, 4 heads.
    bc = numpy_ref.random_params(2, 32, 4, 1968, 79, seed=4, eps=1e-6)
    return {
        ACTION_VALUE: (save_checkpoint(base / "tiny", {"params": haiku_tree(av), "params_ema": haiku_tree(av_ema)}),
                       av, av_ema),
        STATE_VALUE: (save_checkpoint(base / "tiny_state_value", {"params": flax_tree(sv)}, manager=False), sv, sv),
        BEHAVIORAL_CLONING: (save_checkpoint(base / "tiny_behavioral_cloning",
                                             {"params": flax_tree(bc, "builtin")}), bc, bc),
    }


@pytest.fixture(scope="module")
def converted(checkpoints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from neuralengine.deepmind.convert import main

    out = tmp_path_factory.mktemp("converted")
    paths = {}
    for kind, (folder, _, _) in checkpoints.items():
        assert main(["deepmind", str(folder), "--out", str(out), "--quiet"]) == 0
        paths[kind] = out / f"{folder.name}-{STEP}.safetensors"
        assert paths[kind].is_file() and paths[kind].with_suffix(".onnx").is_file()
    return paths


def _backend_log_probs(backend, kind: str, fen: str) -> tuple[np.ndarray, np.ndarray]:
    """(engine, reference-input) pairs: backend log-probs and the data-loader sequences."""
    board = chess.Board(fen)
    _, actions = legal_actions(board)
    tokens = tokenize(board.fen())[None, :]
    if kind == ACTION_VALUE:
        return backend.evaluate(tokens, actions[None, :])[0], numpy_ref.sequences(kind, board.fen(), actions)
    return backend.evaluate(tokens), numpy_ref.sequences(kind, board.fen())


# ---------------------------------------------------------------------------
# Conversion matches the reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [ACTION_VALUE, STATE_VALUE, BEHAVIORAL_CLONING])
@pytest.mark.parametrize("backend_name", ["torch-cpu", "onnx"])
def test_log_probs_match_numpy_reference(checkpoints, converted, kind, backend_name):
    from neuralengine.backends import create_backend

    _, params, _ = checkpoints[kind]
    backend = create_backend(converted[kind], backend_name)
    assert backend.config.kind == kind
    assert backend.config.num_layers == len(params.layers) and backend.config.embed_dim == 32
    assert backend.config.num_heads == params.num_heads
    for fen in FENS:
        got, sequences = _backend_log_probs(backend, kind, fen)
        want = numpy_ref.last_log_probs(params, sequences)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= TOL, (fen, float(np.abs(got - want).max()))


def test_metadata_records_the_source(checkpoints, converted):
    meta = read_metadata(converted[ACTION_VALUE])
    prov = meta["provenance"]
    assert prov["checkpoint"] == "tiny" and prov["step"] == STEP and prov["ema"] is False
    assert prov["naming"] == "haiku"
    assert meta["architecture"]["layer_norm_eps"] == 1e-5
    flax = read_metadata(converted[BEHAVIORAL_CLONING])
    assert flax["provenance"]["naming"] == "flax" and flax["architecture"]["layer_norm_eps"] == 1e-6
    assert any("79 rows" in note for note in flax["provenance"]["notes"])


def test_ema_parameters(checkpoints, tmp_path):
    from neuralengine.backends import create_backend
    from neuralengine.deepmind.convert import main

    folder, params, ema = checkpoints[ACTION_VALUE]
    assert main(["deepmind", str(folder), "--ema", "--step", str(STEP), "--out", str(tmp_path), "--no-onnx",
                 "-q"]) == 0
    path = tmp_path / f"tiny-{STEP}-ema.safetensors"
    assert read_metadata(path)["provenance"]["ema"] is True
    backend = create_backend(path, "torch-cpu")
    got, sequences = _backend_log_probs(backend, ACTION_VALUE, FENS[1])
    assert np.abs(got - numpy_ref.last_log_probs(ema, sequences)).max() <= TOL
    assert np.abs(got - numpy_ref.last_log_probs(params, sequences)).max() > 1e-2


def test_locate_accepts_step_and_item_folders(checkpoints):
    folder, _, _ = checkpoints[ACTION_VALUE]
    for path in (folder, folder / str(STEP), folder / str(STEP) / "params"):
        location = locate(path)
        assert location.item == folder / str(STEP) / "params"
        assert location.step == STEP and location.name == "tiny" and not location.ema
    assert locate(folder, ema=True).item.name == "params_ema"


def test_sharding_of_another_machine_is_not_needed(checkpoints, tmp_path):
    """Arrays saved on TPU name devices this machine lacks; they restore on the host."""
    import shutil

    from neuralengine.deepmind.checkpoint import read_params

    folder = tmp_path / "tpu"
    shutil.copytree(checkpoints[ACTION_VALUE][0], folder)
    sharding = folder / str(STEP) / "params" / "_sharding"
    text = sharding.read_text()
    assert "cpu:0" in text
    sharding.write_text(text.replace("cpu:0", "TPU_0(process=0,(0,0,0,0))"))
    tree = read_params(locate(folder).item)
    assert isinstance(tree["embed"]["embeddings"], np.ndarray)
    np.testing.assert_array_equal(tree["linear_12"]["b"], checkpoints[ACTION_VALUE][1].b_out)


# ---------------------------------------------------------------------------
# Moves: the engine against the reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [ACTION_VALUE, STATE_VALUE, BEHAVIORAL_CLONING])
def test_engine_moves_match_reference(checkpoints, converted, kind):
    engine_mod = pytest.importorskip("neuralengine.engine")
    _, params, _ = checkpoints[kind]
    engine = engine_mod.Engine.open(converted[kind], "onnx", warm_up=False)
    for fen in FENS:
        board = chess.Board(fen)
        best, scores = numpy_ref.best_move(params, kind, board)
        moves, _ = legal_actions(board)
        chosen = engine.choose_move(board).bestmove
        assert chosen in moves
        # Equal unless two moves tie within float32 noise.
        assert chosen == best or scores.max() - scores[moves.index(chosen)] < 1e-6, (fen, chosen, best)


def test_uci_engine_plays_from_checkpoint_folder(checkpoints, engine_command, tmp_path, monkeypatch):
    """``WeightsFile`` may name a checkpoint folder: converted once into the cache."""
    pytest.importorskip("neuralengine.uci")
    import chess.engine

    from neuralengine.deepmind import resolve_weights

    folder, params, _ = checkpoints[ACTION_VALUE]
    env = dict(os.environ, NEURALENGINE_CACHE=str(tmp_path / "cache"))
    # Convert here, where orbax is already loaded; the engine finds the cached result.
    monkeypatch.setenv("NEURALENGINE_CACHE", env["NEURALENGINE_CACHE"])
    cached = resolve_weights(folder, report=lambda _: None)
    with chess.engine.SimpleEngine.popen_uci(engine_command, env=env, stderr=subprocess.DEVNULL) as uci:
        uci.configure({"WeightsFile": str(folder), "Backend": "onnx"})
        for fen in FENS[:3]:
            board = chess.Board(fen)
            best, scores = numpy_ref.best_move(params, ACTION_VALUE, board)
            played = uci.play(board, chess.engine.Limit(time=30)).move
            moves, _ = legal_actions(board)
            assert played == best or scores.max() - scores[moves.index(played)] < 1e-6
    assert list((tmp_path / "cache" / "deepmind").glob("*/*.safetensors")) == [cached]


def test_backend_converts_a_folder_once(checkpoints, tmp_path, monkeypatch):
    from neuralengine.deepmind import resolve_weights

    monkeypatch.setenv("NEURALENGINE_CACHE", str(tmp_path / "cache"))
    folder, params, _ = checkpoints[STATE_VALUE]
    messages: list[str] = []
    first = resolve_weights(folder, report=messages.append)
    assert first.is_file() and first.with_suffix(".onnx").is_file()
    assert (tmp_path / "cache" / "deepmind") in first.parents
    assert any("converting" in m for m in messages)
    stamp = first.stat().st_mtime_ns
    messages.clear()
    assert resolve_weights(folder, report=messages.append) == first
    assert first.stat().st_mtime_ns == stamp and any("cached" in m for m in messages)
    from neuralengine.engine import Engine

    backend = Engine.open(folder, "onnx", warm_up=False).backend
    assert backend.weights_path == first and backend.config.kind == STATE_VALUE
    got, sequences = _backend_log_probs(backend, STATE_VALUE, FENS[0])
    assert np.abs(got - numpy_ref.last_log_probs(params, sequences)).max() <= TOL


def test_plain_weights_never_import_orbax(tiny_weights):
    code = ("import sys; from neuralengine.backends import create_backend; "
            f"create_backend({str(tiny_weights)!r}, 'onnx'); "
            "print(sorted(m for m in ('orbax', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

def _small_tree() -> dict:
    return haiku_tree(numpy_ref.random_params(2, 16, 8, 128, 79, seed=5))


def test_missing_step(checkpoints, capsys):
    from neuralengine.deepmind.convert import main

    folder = checkpoints[ACTION_VALUE][0]
    assert main(["deepmind", str(folder), "--step", "5", "--out", str(folder.parent)]) == 1
    err = capsys.readouterr().err
    assert "step 5 is not in" in err and f"saved steps: {STEP}" in err


def test_not_a_checkpoint_folder(tmp_path, capsys):
    from neuralengine.deepmind.convert import main

    (tmp_path / "notes.txt").write_text("hello")
    assert main(["deepmind", str(tmp_path), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "not a DeepMind checkpoint folder" in err and "notes.txt" in err
    assert main(["deepmind", str(tmp_path / "absent")]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["deepmind", str(tmp_path / "notes.txt")]) == 1
    assert "is a file" in capsys.readouterr().err
    (tmp_path / "7" / "params").mkdir(parents=True)  # an empty item folder is no checkpoint either
    with pytest.raises(DeepMindError, match="not a DeepMind checkpoint folder"):
        locate(tmp_path)


def test_missing_params_ema(checkpoints):
    with pytest.raises(DeepMindError, match="no params_ema"):
        locate(checkpoints[STATE_VALUE][0], ema=True)


def test_wrong_shape_in_a_saved_checkpoint(tmp_path, capsys):
    from neuralengine.deepmind.convert import main

    tree = _small_tree()
    tree["multi_head_dot_product_attention_1/linear_2"]["w"] = np.zeros((16, 8), np.float32)
    folder = save_checkpoint(tmp_path / "bad", {"params": tree})
    assert main(["deepmind", str(folder), "--out", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "multi_head_dot_product_attention_1/linear_2/w has shape [16, 8], expected [16, 16]" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_unknown_and_missing_names():
    tree = _small_tree()
    tree["rogue_module"] = {"w": np.zeros(3, np.float32)}
    with pytest.raises(DeepMindError, match=r"unknown: rogue_module/w") as err:
        map_tree(tree)
    assert "found:" in str(err.value) and "linear ×7" in str(err.value)

    tree = _small_tree()
    del tree["layer_norm_3"]["offset"]
    del tree["linear_4"]
    with pytest.raises(DeepMindError, match=r"missing: layer_norm_3/offset, linear_4/w"):
        map_tree(tree)

    tree = _small_tree()
    tree["linear_0"] = tree.pop("linear")  # Haiku never writes "_0"
    with pytest.raises(DeepMindError, match=r"missing: linear/w\n.*unknown: linear_0/w"):
        map_tree(tree)


def test_numeric_suffix_order():
    """Swapping two modules whose names sort differently as strings is caught by shapes."""
    p = numpy_ref.random_params(4, 16, 8, 128, 79, seed=6)
    tree = haiku_tree(p)
    mapped = map_tree(tree)
    np.testing.assert_array_equal(mapped.tensors["blocks.3.mlp.gate.weight"], p.layers[3].w_gate.T)
    np.testing.assert_array_equal(mapped.tensors["blocks.3.mlp.down.weight"], p.layers[3].w_down.T)
    np.testing.assert_array_equal(mapped.tensors["blocks.2.ln1.bias"], p.layers[2].ln1_offset)
    np.testing.assert_array_equal(mapped.tensors["head.weight"], p.w_out.T)


def test_not_a_deepmind_tree():
    with pytest.raises(DeepMindError, match="not a DeepMind searchless-chess parameter tree"):
        map_tree({"encoder": {"kernel": np.zeros((2, 2), np.float32)}})
    with pytest.raises(DeepMindError, match="empty"):
        map_tree({})


def test_heads_option():
    tree = _small_tree()
    assert map_tree(tree).config.num_heads == 8
    assert map_tree(tree, heads=4).config.num_heads == 4
    with pytest.raises(DeepMindError, match="--heads"):
        map_tree(tree, heads=3)
    flax = flax_tree(numpy_ref.random_params(2, 16, 4, 128, 78, seed=7), "builtin")
    assert map_tree(flax).config.num_heads == 4
    with pytest.raises(DeepMindError, match="have 4 heads, not 8"):
        map_tree(flax, heads=8)


def test_kind_inference():
    p = numpy_ref.random_params(2, 16, 8, 128, 79, seed=8)
    assert map_tree(haiku_tree(p)).config.kind == ACTION_VALUE
    assert map_tree(haiku_tree(p), hint="9M_state_value").config.kind == STATE_VALUE
    assert map_tree(flax_tree(p)).config.kind == STATE_VALUE
    assert map_tree(haiku_tree(p), kind=STATE_VALUE).config.seq_len == 78
    short = numpy_ref.random_params(2, 16, 8, 128, 78, seed=8)
    assert map_tree(haiku_tree(short)).config.kind == STATE_VALUE
    with pytest.raises(DeepMindError, match="reads 79 positions"):
        map_tree(haiku_tree(short), kind=ACTION_VALUE)
    with pytest.raises(DeepMindError, match="1968 outputs"):
        map_tree(haiku_tree(p), kind=BEHAVIORAL_CLONING)


def test_nonzero_attention_bias_is_refused():
    tree = flax_tree(numpy_ref.random_params(2, 16, 4, 128, 78, seed=9), "builtin")
    tree["MultiHeadDotProductAttention_1"]["value"]["bias"] = np.ones((4, 4), np.float32)
    with pytest.raises(DeepMindError, match="non-zero bias"):
        map_tree(tree)


def test_missing_readers_name_the_package(checkpoints, monkeypatch):
    from neuralengine.deepmind.checkpoint import read_params

    item = locate(checkpoints[ACTION_VALUE][0]).item
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    monkeypatch.setitem(sys.modules, "tensorstore", None)
    for reader, package in (("auto", "tensorstore"), ("tensorstore", "tensorstore"), ("orbax", "orbax-checkpoint")):
        with pytest.raises(DeepMindError, match=f"pip install {package}"):
            read_params(item, reader)


def test_orbax_is_the_fallback_without_tensorstore(checkpoints, monkeypatch):
    from neuralengine.deepmind.checkpoint import read_params

    pytest.importorskip("orbax.checkpoint")
    monkeypatch.setitem(sys.modules, "tensorstore", None)
    folder, params, _ = checkpoints[ACTION_VALUE]
    np.testing.assert_array_equal(read_params(locate(folder).item)["linear_12"]["b"], params.b_out)


# ---------------------------------------------------------------------------
# tensorstore alone reads what orbax reads, bit for bit
# ---------------------------------------------------------------------------

def _leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


@pytest.mark.parametrize("kind", [ACTION_VALUE, STATE_VALUE, BEHAVIORAL_CLONING])
def test_tensorstore_and_orbax_read_identical_arrays(checkpoints, kind):
    from neuralengine.deepmind.checkpoint import read_params

    pytest.importorskip("tensorstore")
    folder, _, _ = checkpoints[kind]
    for ema in ((False, True) if kind == ACTION_VALUE else (False,)):
        item = locate(folder, ema=ema).item
        ts_leaves = dict(_leaves(read_params(item, "tensorstore")))
        orbax_leaves = dict(_leaves(read_params(item, "orbax")))
        assert ts_leaves.keys() == orbax_leaves.keys() and ts_leaves
        for key, got in ts_leaves.items():
            want = np.asarray(orbax_leaves[key])
            assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape, key
            assert got.tobytes() == want.tobytes(), key


@pytest.mark.parametrize("kind", [ACTION_VALUE, STATE_VALUE, BEHAVIORAL_CLONING])
def test_conversion_is_bit_identical_with_either_reader(checkpoints, kind, tmp_path):
    """The converted weights files hold exactly the same tensors whichever library read the checkpoint."""
    from safetensors.numpy import load_file

    from neuralengine.deepmind.convert import main

    pytest.importorskip("tensorstore")
    folder, _, _ = checkpoints[kind]
    tensors = {}
    for reader in ("tensorstore", "orbax"):
        assert main(["deepmind", str(folder), "--reader", reader, "--out", str(tmp_path / reader), "--no-onnx",
                     "-q"]) == 0
        tensors[reader] = load_file(str(tmp_path / reader / f"{folder.name}-{STEP}.safetensors"))
    assert tensors["tensorstore"].keys() == tensors["orbax"].keys()
    for name, got in tensors["tensorstore"].items():
        assert got.tobytes() == tensors["orbax"][name].tobytes(), name


def test_tensorstore_reads_a_checkpoint_without_ocdbt(tmp_path):
    """Older orbax releases wrote one zarr folder per array instead of an OCDBT store."""
    from neuralengine.deepmind.checkpoint import read_params

    pytest.importorskip("tensorstore")
    ocp = pytest.importorskip("orbax.checkpoint")
    import jax.numpy as jnp

    tree = _small_tree()
    item = tmp_path / "old" / str(STEP) / "params"
    ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False)).save(
        item, {k: {p: jnp.asarray(v) for p, v in d.items()} for k, d in tree.items()})
    assert not (item / "manifest.ocdbt").exists()
    got = read_params(item, "tensorstore")
    for key, want in _leaves(tree):
        node = got
        for part in key:
            node = node[part]
        assert node.tobytes() == want.tobytes(), key


@pytest.mark.slow
def test_tensorstore_reading_imports_neither_orbax_nor_jax(checkpoints):
    pytest.importorskip("tensorstore")
    item = locate(checkpoints[ACTION_VALUE][0]).item
    code = ("import sys; from neuralengine.deepmind.checkpoint import read_params; "
            f"tree = read_params({str(item)!r}); assert tree['linear_12']['b'].shape == (128,); "
            "print(sorted(m for m in ('orbax', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_tensorstore_reports_a_damaged_store(checkpoints, tmp_path):
    import shutil

    from neuralengine.deepmind.checkpoint import read_params

    pytest.importorskip("tensorstore")
    folder = tmp_path / "damaged"
    shutil.copytree(checkpoints[ACTION_VALUE][0], folder)
    item = folder / str(STEP) / "params"
    (item / "manifest.ocdbt").write_bytes(b"garbage")
    with pytest.raises(DeepMindError, match="cannot read"):
        read_params(item, "tensorstore")


def test_cli_dispatch(engine_command, tmp_path):
    out = subprocess.run(engine_command + ["convert", "deepmind", str(tmp_path / "none")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1
    assert "checkpoint folder not found" in out.stderr
    assert "Traceback" not in out.stderr


def test_reference_matches_sheet_example():
    """The reference reads the sequence the sheet describes: BOS, 77 FEN tokens, the action."""
    p = numpy_ref.random_params(1, 16, 8, 128, 79, seed=10)
    seq = numpy_ref.sequences(ACTION_VALUE, chess.STARTING_FEN, np.array([317]))
    assert seq.shape == (1, 79) and seq[0, 77] == 317 and seq[0, 78] == 0
    # The dummy last token never reaches the network.
    other = seq.copy()
    other[0, 78] = 1234
    np.testing.assert_array_equal(numpy_ref.last_log_probs(p, seq), numpy_ref.last_log_probs(p, other))
    assert numpy_ref.last_log_probs(p, seq).shape == (1, 128)
