"""An independent NumPy forward pass of DeepMind's transformer (float64).

Written from the reference sheet (§1, §3, §4), not from the PyTorch model,
so that it can serve as the oracle for the converter: the tests build
DeepMind-style checkpoints from a :class:`RefParams`, convert them, and
compare the engine's outputs with :func:`forward` on the same parameters.

Weights here keep DeepMind's ``[in, out]`` layout. The sequences are the data
loader's: 77 FEN tokens, then the action (action value only), then a dummy
last token; the model shifts them right behind a BOS token 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import chess
import numpy as np

from neuralengine.config import ACTION_VALUE, BEHAVIORAL_CLONING, STATE_VALUE
from neuralengine.encoding import MOVE_TO_ACTION, tokenize


@dataclass
class RefLayer:
    """One pre-LN block; every matrix is ``[in, out]``."""

    ln1_scale: np.ndarray
    ln1_offset: np.ndarray
    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    ln2_scale: np.ndarray
    ln2_offset: np.ndarray
    w_gate: np.ndarray
    w_up: np.ndarray
    w_down: np.ndarray


@dataclass
class RefParams:
    """All parameters of a model in DeepMind's layout."""

    embed: np.ndarray          # [vocab, D], shared by FEN characters, actions and BOS
    pos: np.ndarray            # [positions, D], learned
    layers: list[RefLayer]
    lnf_scale: np.ndarray
    lnf_offset: np.ndarray
    w_out: np.ndarray          # [D, K]
    b_out: np.ndarray          # [K]
    num_heads: int
    eps: float = 1e-5

    @property
    def width(self) -> int:
        return int(self.embed.shape[1])


def random_params(num_layers: int, width: int, num_heads: int, output_size: int, positions: int,
                  vocab: int = 1968, seed: int = 0, eps: float = 1e-5) -> RefParams:
    """Random parameters with enough spread that moves get distinct scores."""
    rng = np.random.default_rng(seed)
    d, f = width, 4 * width

    def mat(rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * gain / np.sqrt(rows)).astype(np.float32)

    def vec(n: int, mean: float, std: float) -> np.ndarray:
        return (mean + std * rng.standard_normal(n)).astype(np.float32)

    layers = [RefLayer(vec(d, 1.0, 0.1), vec(d, 0.0, 0.1), mat(d, d), mat(d, d), mat(d, d), mat(d, d),
                       vec(d, 1.0, 0.1), vec(d, 0.0, 0.1), mat(d, f), mat(d, f), mat(f, d))
              for _ in range(num_layers)]
    return RefParams(
        embed=(0.02 * rng.standard_normal((vocab, d))).astype(np.float32),
        pos=(0.1 * rng.standard_normal((positions, d))).astype(np.float32),
        layers=layers, lnf_scale=vec(d, 1.0, 0.1), lnf_offset=vec(d, 0.0, 0.1),
        w_out=mat(d, output_size, 1.0), b_out=vec(output_size, 0.0, 0.5), num_heads=num_heads, eps=eps)


def _layer_norm(x: np.ndarray, scale: np.ndarray, offset: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + offset


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def forward(params: RefParams, sequences: np.ndarray) -> np.ndarray:
    """Log-probabilities ``[B, S, K]`` of the data-loader ``sequences`` [B, S].

    The sequence is shifted right (BOS 0 in front, last token dropped), the
    token embedding scaled by sqrt(D) and the learned positions added; then
    the pre-LN blocks, the final LayerNorm and the head, all in float64.
    """
    seq = np.asarray(sequences, dtype=np.int64)
    batch, length = seq.shape
    inputs = np.concatenate([np.zeros((batch, 1), dtype=np.int64), seq], axis=1)[:, :-1]
    d, h = params.width, params.num_heads
    dh = d // h
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    x = f64(params.embed)[inputs] * np.sqrt(d) + f64(params.pos)[:length]
    for layer in params.layers:
        a = _layer_norm(x, f64(layer.ln1_scale), f64(layer.ln1_offset), params.eps)
        q, k, v = (a @ f64(w) for w in (layer.wq, layer.wk, layer.wv))
        # [B, T, D] -> [B, H, T, dh]: head j owns columns j*dh .. (j+1)*dh.
        q, k, v = (t.reshape(batch, length, h, dh).transpose(0, 2, 1, 3) for t in (q, k, v))
        weights = _softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh))   # no mask: bidirectional
        heads = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, length, d)
        x = x + heads @ f64(layer.wo)
        m = _layer_norm(x, f64(layer.ln2_scale), f64(layer.ln2_offset), params.eps)
        x = x + (_silu(m @ f64(layer.w_gate)) * (m @ f64(layer.w_up))) @ f64(layer.w_down)
    x = _layer_norm(x, f64(params.lnf_scale), f64(params.lnf_offset), params.eps)
    return _log_softmax(x @ f64(params.w_out) + f64(params.b_out))


def last_log_probs(params: RefParams, sequences: np.ndarray) -> np.ndarray:
    """Log-probabilities at the last position, the one the engines read: [B, K]."""
    return forward(params, sequences)[:, -1]


def sequences(kind: str, fen: str, actions: np.ndarray | None = None) -> np.ndarray:
    """The data-loader sequences of a position (one per action for action value)."""
    state = tokenize(fen).astype(np.int64)
    if kind == ACTION_VALUE:
        acts = np.asarray(actions, dtype=np.int64)
        return np.stack([np.concatenate([state, [a, 0]]) for a in acts])
    return np.concatenate([state, [0]])[None, :]


def _expected_value(log_probs: np.ndarray) -> np.ndarray:
    k = log_probs.shape[-1]
    centres = (2.0 * np.arange(k) + 1.0) / (2.0 * k)
    return np.exp(log_probs) @ centres


def move_scores(params: RefParams, kind: str, board: chess.Board) -> tuple[list[chess.Move], np.ndarray]:
    """The legal moves in action order and the score each engine maximises.

    Action value: expected win probability of the move. State value:
    1 − V of the position after the move. Behavioural cloning: the policy
    renormalised over the legal moves.
    """
    moves = sorted(board.legal_moves, key=lambda m: MOVE_TO_ACTION[m.uci()])
    actions = np.array([MOVE_TO_ACTION[m.uci()] for m in moves], dtype=np.int64)
    if kind == ACTION_VALUE:
        return moves, _expected_value(last_log_probs(params, sequences(kind, board.fen(), actions)))
    if kind == STATE_VALUE:
        scores = []
        for move in moves:
            board.push(move)
            scores.append(1.0 - _expected_value(last_log_probs(params, sequences(kind, board.fen())))[0])
            board.pop()
        return moves, np.array(scores)
    if kind == BEHAVIORAL_CLONING:
        policy = last_log_probs(params, sequences(kind, board.fen()))[0][actions]
        return moves, np.exp(_log_softmax(policy))
    raise ValueError(f"unknown kind {kind!r}")


def best_move(params: RefParams, kind: str, board: chess.Board) -> tuple[chess.Move, np.ndarray]:
    """The move the engine plays (ties go to the lowest action index) and all scores."""
    moves, scores = move_scores(params, kind, board)
    return moves[int(np.argmax(scores))], scores
