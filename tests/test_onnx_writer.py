"""The NumPy-only ONNX writer: valid protobuf, and the PyTorch model's numbers for every kind and layout."""

from __future__ import annotations

import chess
import numpy as np
import pytest

from neuralengine.backends import onnx_writer
from neuralengine.config import ACTION_VALUE, ModelConfig
from neuralengine.encoding import legal_actions, tokenize_board
from neuralengine.varint import encode_varint

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

CASES = [("action_value", "full"), ("action_value", "shared_board"), ("action_value", "board_head"),
         ("state_value", "full"), ("behavioral_cloning", "full")]
FENS = [chess.STARTING_FEN, "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1",
        "8/P7/8/8/8/8/6k1/4K3 w - - 0 1"]


def test_varints_match_protobuf():
    from google.protobuf.internal.encoder import _VarintBytes  # protobuf comes with onnxruntime

    for value in (0, 1, 127, 128, 300, 2**31, 2**63 - 1):
        assert encode_varint(value) == _VarintBytes(value)
    assert encode_varint(-1) == b"\xff" * 9 + b"\x01"  # int64 -1, as protobuf writes it


@pytest.mark.parametrize("kind,attention", CASES)
def test_graph_matches_the_pytorch_model(kind: str, attention: str):
    import onnxruntime as ort

    from neuralengine.model import Transformer

    torch.manual_seed(3)
    cfg = ModelConfig(num_layers=2, embed_dim=32, num_heads=4, kind=kind, attention=attention)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # biases and norms away from their initial values
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    data = onnx_writer.graph_bytes(cfg, tensors, {"neuralengine.weights_sha256": "abc"})
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == onnx_writer.IR_VERSION and proto.opset_import[0].version == onnx_writer.OPSET
    assert {p.key: p.value for p in proto.metadata_props} == {"neuralengine.weights_sha256": "abc"}
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for fen in FENS:
        board = chess.Board(fen)
        _, actions = legal_actions(board)
        tokens = tokenize_board(board)[None].astype(np.int64)
        feeds = {"board": np.repeat(tokens, 2, axis=0)}
        args = [torch.as_tensor(feeds["board"])]
        if kind == ACTION_VALUE:
            feeds["actions"] = np.repeat(actions[None], 2, axis=0)
            args.append(torch.as_tensor(feeds["actions"]))
        out = session.run(None, feeds)[0]
        with torch.no_grad():
            ref = model(*args).numpy()
        assert out.shape == ref.shape
        assert float(np.abs(out - ref).max()) < 1e-4


def test_pieces_join_to_the_same_bytes(tmp_path):
    cfg = ModelConfig(num_layers=1, embed_dim=16, num_heads=2, attention="board_head")
    from neuralengine.model import Transformer

    tensors = {k: v.numpy() for k, v in Transformer(cfg).state_dict().items()}
    with open(tmp_path / "g.onnx", "wb") as fh:
        onnx_writer.write_graph(fh, cfg, tensors)
    assert (tmp_path / "g.onnx").read_bytes() == onnx_writer.graph_bytes(cfg, tensors)
