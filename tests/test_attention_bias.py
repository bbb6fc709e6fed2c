"""The learned attention bias per head ([heads, T, T] in every layer): off by default, the shipped weights
unchanged, the ONNX graph equal to PyTorch with the bias on, and refused where a layout has no place for it."""

from __future__ import annotations

import json
from pathlib import Path

import chess
import numpy as np
import pytest

from neuralengine.config import ConfigError, ModelConfig
from neuralengine.encoding import legal_actions, tokenize_board
from neuralengine.weights import WeightsError, expected_shapes, load_weights, read_metadata, save_weights

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "weights" / "neuralengine.safetensors"
FENS = [chess.STARTING_FEN, "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1",
        "8/P7/8/8/8/8/6k1/4K3 w - - 0 1"]


def _feeds(fen: str) -> tuple[np.ndarray, np.ndarray]:
    board = chess.Board(fen)
    _, actions = legal_actions(board)
    return tokenize_board(board)[None].astype(np.int64), actions[None].astype(np.int64)


def _biased_model(attention: str, seed: int = 5):  # noqa: ANN202
    from neuralengine.model import Transformer

    torch.manual_seed(seed)
    cfg = ModelConfig(num_layers=2, embed_dim=32, num_heads=4, attention=attention, attention_bias=True)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.token_bias.normal_(0.0, 1.0)  # a bias large enough to change every output
    return cfg, model


def test_default_is_off_and_the_metadata_is_unchanged() -> None:
    cfg = ModelConfig(num_layers=2, embed_dim=32, num_heads=4, attention="board_head")
    assert not cfg.attention_bias and "attention_bias" not in cfg.to_dict()
    on = ModelConfig(num_layers=2, embed_dim=32, num_heads=4, attention="board_head", attention_bias=True)
    assert on.to_dict()["attention_bias"] is True
    assert ModelConfig.from_dict(on.to_dict()) == on
    assert on.num_parameters() - cfg.num_parameters() == 2 * 4 * 78 * 78
    assert expected_shapes(on)["blocks.1.attn.token_bias"] == (4, 78, 78)
    full = ModelConfig(num_layers=1, embed_dim=32, num_heads=4, attention="full", attention_bias=True)
    assert expected_shapes(full)["blocks.0.attn.token_bias"] == (4, 79, 79)


def test_parameter_count_matches_the_model() -> None:
    for attention in ("board_head", "full"):
        cfg, model = _biased_model(attention)
        assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters()


def test_shared_board_refuses_the_bias() -> None:
    with pytest.raises(ConfigError, match="shared_board"):
        ModelConfig(num_layers=1, embed_dim=32, num_heads=4, attention="shared_board", attention_bias=True)
    with pytest.raises(ConfigError, match="true or false"):
        ModelConfig(num_layers=1, embed_dim=32, num_heads=4, attention="board_head", attention_bias="yes")


def test_shipped_weights_load_unchanged_and_score_as_before() -> None:
    """The shipped file has no bias: it loads as before, and an explicit zero bias changes nothing."""
    from neuralengine.backends.graph import model_from_weights
    from neuralengine.model import Transformer

    meta = read_metadata(SHIPPED)
    assert "attention_bias" not in meta["architecture"]
    weights = load_weights(SHIPPED)
    assert not weights.config.attention_bias
    model = model_from_weights(weights)
    assert not any("token_bias" in name for name in model.state_dict())
    cfg_on = ModelConfig.from_dict({**weights.config.to_dict(), "attention_bias": True})
    biased = Transformer(cfg_on).eval()
    missing = biased.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.tensors.items()},
                                     strict=False).missing_keys
    assert sorted(missing) == [f"blocks.{i}.attn.token_bias" for i in range(cfg_on.num_layers)]
    with torch.no_grad():
        for fen in FENS:
            board, actions = (torch.as_tensor(a) for a in _feeds(fen))
            assert torch.equal(model(board, actions), biased(board, actions))


@pytest.mark.parametrize("attention", ["board_head", "full"])
def test_onnx_graph_agrees_with_pytorch_with_the_bias_on(attention: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from neuralengine.backends import onnx_writer

    cfg, model = _biased_model(attention)
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    session = ort.InferenceSession(onnx_writer.graph_bytes(cfg, tensors), providers=["CPUExecutionProvider"])
    zeroed = {k: (np.zeros_like(v) if "token_bias" in k else v) for k, v in tensors.items()}
    plain = ort.InferenceSession(onnx_writer.graph_bytes(cfg, zeroed), providers=["CPUExecutionProvider"])
    for fen in FENS:
        board, actions = _feeds(fen)
        out = session.run(None, {"board": board, "actions": actions})[0]
        with torch.no_grad():
            ref = model(torch.as_tensor(board), torch.as_tensor(actions)).numpy()
        assert float(np.abs(out - ref).max()) < 1e-4
        # The bias is really in the graph: without it the numbers differ.
        other = plain.run(None, {"board": board, "actions": actions})[0]
        assert float(np.abs(other - out).max()) > 1e-3


def test_weights_file_round_trip_and_both_backends(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from neuralengine.backends import create_backend

    cfg, model = _biased_model("board_head")
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    path = save_weights(tmp_path / "biased.safetensors", cfg, tensors)
    assert json.loads(json.dumps(read_metadata(path)["architecture"]))["attention_bias"] is True
    assert load_weights(path).config.attention_bias
    board, actions = _feeds(FENS[1])
    torch_out = create_backend(path, "torch-cpu").evaluate(board, actions)
    onnx_out = create_backend(path, "onnx").evaluate(board, actions)
    assert float(np.abs(torch_out - onnx_out).max()) < 1e-4
    # A file whose metadata says there is a bias but whose tensors lack it is refused by name.
    without = {k: v for k, v in tensors.items() if "token_bias" not in k}
    with pytest.raises(WeightsError, match="token_bias"):
        save_weights(tmp_path / "broken.safetensors", cfg, without)


def test_init_with_the_bias_starts_from_the_init_models_outputs() -> None:
    """--init the shipped model --attention-bias: every tensor is copied, the bias starts at zero, so the new
    model scores exactly as the shipped one before its first step."""
    from neuralengine.backends.graph import model_from_weights
    from neuralengine.model import Transformer
    from neuralengine.train.checkpoint import init_architecture, init_from
    from neuralengine.train.loop import TrainConfig, model_config

    chosen = init_architecture(str(SHIPPED), attention_bias=True)
    assert chosen["attention_bias"] is True
    cfg = model_config(TrainConfig(data=[], out="unused", **chosen))
    assert cfg.attention_bias and cfg.attention == "board_head"
    model = Transformer(cfg).eval()
    ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    summary = init_from(str(SHIPPED), model, ema, torch.optim.AdamW(model.parameters()))
    assert "fresh: blocks" in summary
    shipped = model_from_weights(load_weights(SHIPPED))
    with torch.no_grad():
        for fen in FENS:
            board, actions = (torch.as_tensor(a) for a in _feeds(fen))
            assert torch.equal(shipped(board, actions), model(board, actions))
    assert init_architecture(str(SHIPPED))["attention_bias"] is False
