"""The transformer against the reference sheet (§3): sizes, an independent
NumPy forward pass, the shared-board variant and ONNX parity."""

from __future__ import annotations

from pathlib import Path

import chess
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import random_tensors  # noqa: E402

from neuralengine.config import ConfigError, ModelConfig, preset  # noqa: E402
from neuralengine.encoding import ACTIONS, MOVE_TO_ACTION, VOCAB, legal_actions, tokenize_board  # noqa: E402
from neuralengine.model import Transformer  # noqa: E402
from neuralengine.weights import expected_shapes  # noqa: E402

FENS = [
    chess.STARTING_FEN,
    "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1",  # 48 legal moves
    "rnbqkbnr/1pp1pppp/p7/3pP3/8/8/PPPP1PPP/RNBQKBNR w KQkq d6 0 3",
    "8/P6k/8/8/8/8/6Kp/8 b - - 3 57",
]


def positions() -> list[tuple[np.ndarray, np.ndarray]]:
    """Board tokens and legal actions of real positions."""
    out = []
    for fen in FENS:
        board = chess.Board(fen)
        _, actions = legal_actions(board)
        out.append((tokenize_board(board).astype(np.int64), actions))
    return out


def build(cfg: ModelConfig, seed: int = 0) -> Transformer:
    model = Transformer(cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_tensors(cfg, seed).items()})
    return model.eval()


def params_of(model: Transformer) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------
# An independent reference, written from the sheet's pseudo-steps, in float64
# --------------------------------------------------------------------------


def _layer_norm(x: np.ndarray, scale: np.ndarray, offset: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # population variance
    return (x - mean) / np.sqrt(var + eps) * scale + offset


def reference_forward(p: dict[str, np.ndarray], cfg: ModelConfig, tokens: np.ndarray, positions: np.ndarray,
                      allowed: np.ndarray, states: bool = False) -> np.ndarray:
    """Log-probabilities at every position of ``tokens`` (already shifted).

    ``allowed[i, j]`` says whether query i may attend to key j; DeepMind's
    model allows everything.
    """
    d, h_count = cfg.embed_dim, cfg.num_heads
    dh = d // h_count
    n = len(tokens)
    h = p["tok_embed.weight"][tokens] * np.sqrt(d) + p["pos_embed"][positions]
    eps = cfg.layer_norm_eps
    for i in range(cfg.num_layers):
        pre = f"blocks.{i}."
        a = _layer_norm(h, p[pre + "ln1.weight"], p[pre + "ln1.bias"], eps)
        # Weights are stored [out, in]: y = x @ W.T.
        q, k, v = (a @ p[f"{pre}attn.{name}.weight"].T for name in "qkv")
        heads = []
        for j in range(h_count):
            cols = slice(j * dh, (j + 1) * dh)
            scores = q[:, cols] @ k[:, cols].T / np.sqrt(dh)
            scores = np.where(allowed, scores, -np.inf)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            heads.append((scores / scores.sum(-1, keepdims=True)) @ v[:, cols])
        h = h + np.concatenate(heads, axis=-1) @ p[pre + "attn.o.weight"].T
        m = _layer_norm(h, p[pre + "ln2.weight"], p[pre + "ln2.bias"], eps)
        gate = m @ p[pre + "mlp.gate.weight"].T
        up = m @ p[pre + "mlp.up.weight"].T
        h = h + (gate / (1 + np.exp(-gate)) * up) @ p[pre + "mlp.down.weight"].T
    assert h.shape == (n, d)
    h = _layer_norm(h, p["ln_f.weight"], p["ln_f.bias"], eps)
    if states:
        return h
    logits = h @ p["head.weight"].T + p["head.bias"]
    logits = logits - logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def shift_right(seq: list[int]) -> np.ndarray:
    return np.asarray([0] + seq[:-1], dtype=np.int64)


def reference_action_value(p: dict[str, np.ndarray], cfg: ModelConfig, board: np.ndarray, action: int) -> np.ndarray:
    """DeepMind's sequence: 77 board tokens, the action, a dummy return bucket; shifted right."""
    tokens = shift_right(board.tolist() + [int(action), 0])
    assert len(tokens) == 79 and tokens[0] == 0 and tokens[-1] == action
    out = reference_forward(p, cfg, tokens, np.arange(79), np.ones((79, 79), bool))
    return out[78]


def reference_board_only(p: dict[str, np.ndarray], cfg: ModelConfig, board: np.ndarray) -> np.ndarray:
    """State value / behavioural cloning: 77 board tokens and a dummy target; shifted right."""
    tokens = shift_right(board.tolist() + [0])
    out = reference_forward(p, cfg, tokens, np.arange(78), np.ones((78, 78), bool))
    return out[77]


def reference_shared_board(p: dict[str, np.ndarray], cfg: ModelConfig, board: np.ndarray,
                           actions: np.ndarray) -> np.ndarray:
    """The full transformer on [BOS, board, move 1..N] under the shared-board mask.

    Every move sits at position 78; board tokens see only board tokens, a move
    sees the board and itself.
    """
    n = len(actions)
    tokens = np.concatenate([[0], board, actions]).astype(np.int64)
    pos = np.concatenate([np.arange(78), np.full(n, 78)])
    allowed = np.zeros((78 + n, 78 + n), bool)
    allowed[:, :78] = True
    allowed[:78, 78:] = False
    allowed[78 + np.arange(n), 78 + np.arange(n)] = True
    return reference_forward(p, cfg, tokens, pos, allowed)[78:]


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def reference_board_head(p: dict[str, np.ndarray], cfg: ModelConfig, board: np.ndarray,
                         actions: np.ndarray) -> np.ndarray:
    """The ``board_head`` layout: DeepMind's encoder over [BOS, board], then
    each move from its squares' final states, found through python-chess."""
    h = reference_forward(p, cfg, np.concatenate([[0], board]).astype(np.int64), np.arange(78),
                          np.ones((78, 78), bool), states=True)

    def token(square: int) -> int:  # BOS, side to move, then a8 ... h1
        return 2 + 8 * (7 - chess.square_rank(square)) + chess.square_file(square)

    out = []
    for action in actions:
        move = chess.Move.from_uci(ACTIONS[int(action)])
        x = (p["move_head.src.weight"] @ h[token(move.from_square)] + p["move_head.dst.weight"] @ h[token(move.to_square)]
             + p["move_head.glob.weight"] @ h[0] + p["move_head.bias"]
             + p["move_head.promo"][[None, chess.QUEEN, chess.ROOK, chess.BISHOP, chess.KNIGHT].index(move.promotion)])
        x = _silu(p["move_head.hidden.weight"] @ _silu(x) + p["move_head.hidden.bias"])
        logits = p["head.weight"] @ x + p["head.bias"]
        logits = logits - logits.max()
        out.append(logits - np.log(np.exp(logits).sum()))
    return np.stack(out)


# --------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "count"), [
    ("9M", 8_954_240), ("136M", 136_479_872), ("270M", 270_730_368), ("local", 402_624)])
def test_parameter_counts(name: str, count: int) -> None:
    cfg = preset(name)
    assert cfg.num_parameters() == count
    assert sum(int(np.prod(s)) for s in expected_shapes(cfg).values()) == count


def test_9m_model_has_the_published_size() -> None:
    model = Transformer(preset("9M"))
    assert sum(p.numel() for p in model.parameters()) == 8_954_240
    assert model.pos_embed.shape == (79, 256) and model.tok_embed.weight.shape == (1968, 256)
    # The head is the only linear layer with a bias.
    biased = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.bias is not None]
    assert biased == ["head"]


@pytest.mark.parametrize("name", ["136M", "270M"])
def test_big_models_on_the_meta_device(name: str) -> None:
    cfg = preset(name)
    with torch.device("meta"):
        model = Transformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected_shapes(cfg)


@pytest.mark.parametrize("cfg", [
    preset("tiny"), preset("tiny", attention="shared_board"), preset("local", kind="state_value"),
    preset("tiny", kind="behavioral_cloning"), preset("9M"), preset("small", attention="board_head"),
], ids=["tiny", "tiny-shared", "local-sv", "tiny-bc", "9M", "small-board-head"])
def test_expected_shapes_match_the_state_dict(cfg: ModelConfig) -> None:
    with torch.device("meta"):
        model = Transformer(cfg)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert state == expected_shapes(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters()


def test_output_sizes_per_kind() -> None:
    assert preset("tiny").output_size == 128 and preset("tiny").seq_len == 79
    assert preset("tiny", kind="state_value").seq_len == 78
    bc = preset("tiny", kind="behavioral_cloning")
    assert bc.output_size == 1968 and bc.seq_len == 78
    # The board-head layout has no move token: 78 positions.
    assert preset("tiny", attention="board_head").seq_len == 78


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(num_layers=2, embed_dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="shared_board"):
        preset("tiny", kind="state_value", attention="shared_board")
    with pytest.raises(ConfigError, match="board_head"):
        preset("tiny", kind="behavioral_cloning", attention="board_head")
    with pytest.raises(ConfigError, match="vocab_size"):
        ModelConfig(num_layers=2, embed_dim=32, num_heads=2, vocab_size=31)
    with pytest.raises(ConfigError, match="num_layers"):
        ModelConfig(num_layers=True, embed_dim=32, num_heads=2)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("1B")
    with pytest.raises(ConfigError, match="bad override"):
        preset("tiny", colour="red")
    assert preset("tiny", num_layers=1).num_layers == 1


# --------------------------------------------------------------------------
# The forward pass against the NumPy reference
# --------------------------------------------------------------------------


def test_full_model_matches_the_numpy_reference() -> None:
    cfg = preset("tiny")
    model = build(cfg, seed=1)
    p = params_of(model)
    for board, actions in positions():
        with torch.no_grad():
            got = model(torch.from_numpy(board)[None], torch.from_numpy(actions)[None])[0].numpy()
        assert got.shape == (len(actions), 128)
        want = np.stack([reference_action_value(p, cfg, board, a) for a in actions])
        assert np.abs(got - want).max() <= 1e-5
        # A real check: moves get different distributions.
        assert np.abs(want - want[:1]).max() > 1e-2


@pytest.mark.parametrize("kind", ["state_value", "behavioral_cloning"])
def test_board_only_models_match_the_numpy_reference(kind: str) -> None:
    cfg = preset("tiny", kind=kind)
    model = build(cfg, seed=2)
    p = params_of(model)
    boards = np.stack([b for b, _ in positions()])
    with torch.no_grad():
        got = model(torch.from_numpy(boards)).numpy()
    assert got.shape == (len(boards), cfg.output_size)
    want = np.stack([reference_board_only(p, cfg, b) for b in boards])
    assert np.abs(got - want).max() <= 1e-5


def test_action_value_model_needs_actions() -> None:
    model = build(preset("tiny"))
    with pytest.raises(ValueError, match="actions"):
        model(torch.zeros(1, 77, dtype=torch.int64))


# --------------------------------------------------------------------------
# Shared board
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_model() -> Transformer:
    return build(preset("tiny", attention="shared_board"), seed=3)


def _run(model: Transformer, board: np.ndarray, actions: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(board)[None], torch.from_numpy(np.asarray(actions, np.int64))[None])[0].numpy()


def test_shared_board_equals_the_masked_full_transformer(shared_model: Transformer) -> None:
    cfg = shared_model.cfg
    p = params_of(shared_model)
    for board, actions in positions():
        got = _run(shared_model, board, actions)
        want = reference_shared_board(p, cfg, board, actions)
        assert np.abs(got - want).max() <= 1e-5
    # The mask matters: with full attention the same weights give other outputs.
    board, actions = positions()[0]
    unmasked = reference_action_value(p, cfg, board, int(actions[0]))
    assert np.abs(unmasked - reference_shared_board(p, cfg, board, actions[:1])[0]).max() > 1e-3


def test_shared_board_move_output_is_independent_of_the_batch(shared_model: Transformer) -> None:
    rng = np.random.default_rng(7)
    board, actions = positions()[1]
    all_at_once = _run(shared_model, board, actions)
    one_by_one = np.stack([_run(shared_model, board, actions[i:i + 1])[0] for i in range(len(actions))])
    assert np.abs(all_at_once - one_by_one).max() <= 1e-5
    perm = rng.permutation(len(actions))
    assert np.abs(_run(shared_model, board, actions[perm]) - all_at_once[perm]).max() <= 1e-5
    subset = np.sort(rng.choice(len(actions), size=7, replace=False))
    assert np.abs(_run(shared_model, board, actions[subset]) - all_at_once[subset]).max() <= 1e-5
    # Duplicates and moves of other positions in the batch change nothing either.
    mixed = np.concatenate([actions[:3], actions[:3], positions()[0][1]])
    assert np.abs(_run(shared_model, board, mixed)[:3] - all_at_once[:3]).max() <= 1e-5


# --------------------------------------------------------------------------
# Board head
# --------------------------------------------------------------------------


def test_board_head_matches_the_numpy_reference() -> None:
    cfg = preset("tiny", attention="board_head")
    model = build(cfg, seed=8)
    with torch.no_grad():  # the promotion table starts at zero; make it count
        model.move_head.promo.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(8))
    p = params_of(model)
    for board, actions in positions():
        got = _run(model, board, actions)
        want = reference_board_head(p, cfg, board, actions)
        assert got.shape == (len(actions), 128)
        assert np.abs(got - want).max() <= 1e-5
        assert np.abs(want - want[:1]).max() > 1e-2
    # Promotions: the same squares with another piece give another output.
    board, actions = positions()[3]  # black to move: h2h1 with each of the four pieces
    promos = [i for i, a in enumerate(actions) if len(ACTIONS[int(a)]) == 5]
    assert len(promos) == 4
    out = _run(model, board, actions[promos])
    assert min(np.abs(out[i] - out[j]).max() for i in range(4) for j in range(i)) > 1e-3


def test_board_head_square_table_points_at_the_moving_piece() -> None:
    from neuralengine.model import action_square_tokens

    src, dst, promo = action_square_tokens()
    for fen in FENS:
        board = chess.Board(fen)
        seq = np.concatenate([[0], tokenize_board(board)])
        for move in board.legal_moves:
            a = MOVE_TO_ACTION[move.uci()]
            piece = board.piece_at(move.from_square)
            assert VOCAB[seq[src[a]]] == piece.symbol()
            target = board.piece_at(move.to_square)
            assert VOCAB[seq[dst[a]]] == (target.symbol() if target else ".")
            assert promo[a] == (0 if move.promotion is None else "qrbn".index(chess.piece_symbol(move.promotion)) + 1)


@pytest.mark.parametrize("attention", ["shared_board", "full", "board_head"])
def test_batches_of_positions_equal_one_position_at_a_time(attention: str) -> None:
    model = build(preset("tiny", attention=attention), seed=4)
    data = positions()
    n = min(len(a) for _, a in data)
    boards = torch.from_numpy(np.stack([b for b, _ in data]))
    actions = torch.from_numpy(np.stack([a[:n] for _, a in data]))
    with torch.no_grad():
        batched = model(boards, actions).numpy()
    for i, (board, acts) in enumerate(data):
        assert np.abs(batched[i] - _run(model, board, acts[:n])).max() <= 1e-5


# --------------------------------------------------------------------------
# ONNX parity
# --------------------------------------------------------------------------


def _onnx_session(model: Transformer, path: Path):  # noqa: ANN202
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from neuralengine.export import export_onnx

    export_onnx(model, path, "test")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("attention", ["full", "shared_board", "board_head"])
def test_onnx_parity_action_value(attention: str, tmp_path: Path) -> None:
    model = build(preset("tiny", attention=attention), seed=5)
    session = _onnx_session(model, tmp_path / "model.onnx")
    data = positions()
    board, actions = data[1]  # 48 legal moves
    for n in (1, 7, 40):
        got = session.run(None, {"board": board[None], "actions": actions[None, :n]})[0]
        want = _run(model, board, actions[:n])
        assert got.shape == (1, n, 128)
        assert np.abs(got[0] - want).max() <= 1e-4
    boards = np.stack([b for b, _ in data])
    acts = np.stack([a[:7] for _, a in data])
    got = session.run(None, {"board": boards, "actions": acts})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(boards), torch.from_numpy(acts)).numpy()
    assert got.shape == (len(data), 7, 128)
    assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("kind", ["state_value", "behavioral_cloning"])
def test_onnx_parity_board_only(kind: str, tmp_path: Path) -> None:
    model = build(preset("tiny", kind=kind), seed=6)
    session = _onnx_session(model, tmp_path / "model.onnx")
    boards = np.stack([b for b, _ in positions()])
    for b in (1, len(boards)):
        got = session.run(None, {"board": boards[:b]})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(boards[:b])).numpy()
        assert got.shape == (b, model.cfg.output_size)
        assert np.abs(got - want).max() <= 1e-4
