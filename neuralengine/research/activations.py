"""Walk the transformer layer by layer to read, or edit, its residual stream.

:func:`run_layers` runs the model's own ``forward`` with its layer hook, which
is called on the residual stream after the embedding (layer 0) and after every
block (layers 1..L). The hook may return edited tensors, which the next block
then reads. :func:`check_walk` confirms on real inputs that a hooked run gives
what a plain one gives, so a model whose ``forward`` does not honour the hook
fails loudly instead of probing the wrong computation.

Streams handed to the hook, for ``B`` positions with ``N`` moves each:

* state value, behavioural cloning: ``board`` [B, 78, D] (BOS + 77 FEN
  tokens), ``moves`` None;
* action value, ``shared_board``: ``board`` [B, 78, D], ``moves`` [B, N, D]
  (the board stream is shared by the moves);
* action value, ``full``: ``board`` [B, N, 78, D] (each move has its own copy
  of the board tokens, which attend to the move), ``moves`` [B, N, D];
* action value, ``board_head``: ``board`` [B, 78, D], ``moves`` None (the moves
  are scored by a small head from the final board states; no move token).
"""

from __future__ import annotations

import inspect

import torch

from neuralengine.config import ACTION_VALUE, BOARD_HEAD
from neuralengine.model import LayerHook as Hook
from neuralengine.encoding import square_token_index


class WalkError(RuntimeError):
    """A model whose layers this module cannot read."""


def board_position(square: int) -> int:
    """Index of a square's token in the 78 board tokens (BOS comes first)."""
    return 1 + square_token_index(square)


def readout_site(cfg) -> str:
    """The token whose state carries the model's answer: ``move`` (the move token
    of action-value models), ``bos`` (``board_head``, whose move head reads BOS
    as its summary of the board) or ``last`` (state value, behavioural cloning)."""
    if cfg.kind != ACTION_VALUE:
        return "last"
    return "bos" if cfg.attention == BOARD_HEAD else "move"


def run_layers(model: torch.nn.Module, boards: torch.Tensor, actions: torch.Tensor | None = None,
               hook: Hook | None = None) -> torch.Tensor:
    """The model's log-probabilities, calling ``hook(layer, board, moves)`` after
    the embedding and each block (:meth:`Transformer.forward`'s ``hook``).

    ``boards`` [B, 77]; ``actions`` [B, N] for action-value models. Returns
    [B, N, K] for action value, [B, K] otherwise, like ``model.forward``.
    """
    if not takes_layer_hook(model):
        raise WalkError(f"this model's forward takes no layer hook: {type(model).__name__}.forward"
                        f"{inspect.signature(model.forward)}")
    if model.cfg.kind == ACTION_VALUE:
        return model(boards, actions, hook=hook)
    return model(boards, hook=hook)


def takes_layer_hook(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` accepts the ``hook`` keyword (by its signature; nothing is run)."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # no signature to read
        return False
    return any(p.name == "hook" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.kind == p.VAR_KEYWORD
               for p in parameters)


def check_walk(model: torch.nn.Module, boards: torch.Tensor, actions: torch.Tensor | None = None,
               atol: float = 1e-4) -> None:
    """Raise :class:`WalkError` unless the layer walk reproduces ``model(boards, actions)``."""
    with torch.no_grad():
        expected = model(boards, actions) if model.cfg.kind == ACTION_VALUE else model(boards)
        got = run_layers(model, boards, actions)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=atol, rtol=0):
        diff = (got - expected).abs().max().item() if got.shape == expected.shape else float("nan")
        raise WalkError(f"the layer walk does not reproduce this model's output (largest difference {diff:.3g}); "
                        f"its layout ({model.cfg.attention!r}) is not supported by the probes")


def collect_states(model: torch.nn.Module, boards: torch.Tensor, actions: torch.Tensor | None,
                   squares: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual states of a batch, one candidate move per position.

    ``boards`` [B, 77]; ``actions`` [B] (action value) or None; ``squares``
    [B, S] python-chess square numbers. Returns ``readout`` [B, L+1, D] (the
    token named by :func:`readout_site`), ``square_states``
    [B, S, L+1, D] (each square's own FEN token) and the log-probabilities.
    """
    readout: list[torch.Tensor] = []
    at_squares: list[torch.Tensor] = []
    rows = torch.arange(boards.shape[0]).unsqueeze(1)
    bos = readout_site(model.cfg) == "bos"
    positions = torch.tensor([[board_position(int(s)) for s in row] for row in squares.tolist()],
                             dtype=torch.long).reshape(squares.shape)

    def record(layer: int, board: torch.Tensor, moves: torch.Tensor | None) -> None:
        if board.dim() == 4:  # full attention: the board tokens of the (only) move
            board = board[:, 0]
        readout.append(moves[:, 0] if moves is not None else board[:, 0] if bos else board[:, -1])
        at_squares.append(board[rows, positions])

    acts = None if actions is None else actions.reshape(-1, 1)
    with torch.no_grad():
        out = run_layers(model, boards, acts, record)
    if acts is not None:
        out = out[:, 0]
    return torch.stack(readout, dim=1), torch.stack(at_squares, dim=2), out
