"""The action-value transformer in PyTorch (reference sheet §3).

Shapes: ``B`` positions, ``N`` moves per position, ``T`` tokens, ``D`` width,
``H`` heads, ``K`` output size (return buckets, or actions for behavioural
cloning).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from neuralengine.config import ACTION_VALUE, BOARD_HEAD, SHARED_BOARD, ModelConfig
from neuralengine.encoding import action_square_tokens


#: ``hook(layer, board, moves)`` of :meth:`Transformer.forward`: may return a
#: replacement ``(board, moves)`` pair, or ``None``.
LayerHook = Callable[[int, torch.Tensor, Optional[torch.Tensor]], Optional[tuple]]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        if cfg.attention_bias:
            # Zero at the start: a model given the bias computes what it computed without it.
            self.token_bias = nn.Parameter(torch.zeros(cfg.num_heads, cfg.seq_len, cfg.seq_len))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        # [..., T, D] -> [..., H, T, dh]
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-3, -2).flatten(-2)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bidirectional attention over all tokens of ``x`` [B, T, D]."""
        q, k, v = self.qkv(x)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if hasattr(self, "token_bias"):
            scores = scores + self.token_bias
        return self.o(self._merge(scores.softmax(-1) @ v))

    def forward_shared(self, board: torch.Tensor, moves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Board tokens [B, Tb, D] attend among themselves; each move token of
        ``moves`` [B, N, D] attends to the board tokens and to itself only."""
        qb, kb, vb = self.qkv(board)                      # [B, H, Tb, dh]
        qm, km, vm = self.qkv(moves)                      # [B, H, N, dh]
        scale = 1.0 / math.sqrt(self.head_dim)
        board_out = ((qb @ kb.transpose(-1, -2)) * scale).softmax(-1) @ vb
        to_board = (qm @ kb.transpose(-1, -2)) * scale    # [B, H, N, Tb]
        to_self = (qm * km).sum(-1, keepdim=True) * scale  # [B, H, N, 1]
        probs = torch.cat([to_board, to_self], dim=-1).softmax(-1)
        move_out = probs[..., :-1] @ vb + probs[..., -1:] * vm
        return self.o(self._merge(board_out)), self.o(self._merge(move_out))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(cfg.embed_dim, cfg.ffn_dim, bias=False)
        self.up = nn.Linear(cfg.embed_dim, cfg.ffn_dim, bias=False)
        self.down = nn.Linear(cfg.ffn_dim, cfg.embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-LN residual block: attention, then SwiGLU."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

    def forward_shared(self, board: torch.Tensor, moves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_board, a_moves = self.attn.forward_shared(self.ln1(board), self.ln1(moves))
        board, moves = board + a_board, moves + a_moves
        return board + self.mlp(self.ln2(board)), moves + self.mlp(self.ln2(moves))


class MoveHead(nn.Module):
    """Scores moves from the encoded board (``board_head`` layout).

    A move's hidden state is ``src(h[from]) + dst(h[to]) + glob(h[BOS]) +
    promo[piece] + bias``, followed by SiLU, one hidden layer and SiLU; the
    transformer's output layer then maps it to the return buckets. The three
    projections run once per board token, so each extra move costs a gather,
    an add and two small matrix products.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, h = cfg.embed_dim, cfg.move_head_dim
        self.src = nn.Linear(d, h, bias=False)
        self.dst = nn.Linear(d, h, bias=False)
        self.glob = nn.Linear(d, h, bias=False)
        self.bias = nn.Parameter(torch.zeros(h))
        self.promo = nn.Parameter(torch.zeros(5, h))
        self.hidden = nn.Linear(h, h)
        src, dst, promo = action_square_tokens()
        self.register_buffer("action_src", torch.tensor(src, dtype=torch.long), persistent=False)
        self.register_buffer("action_dst", torch.tensor(dst, dtype=torch.long), persistent=False)
        self.register_buffer("action_promo", torch.tensor(promo, dtype=torch.long), persistent=False)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``states`` [B, 78, D] (after the final layer norm), ``actions`` [B, N] → [B, N, h]."""
        batch, n = actions.shape
        src_all, dst_all = self.src(states), self.dst(states)            # [B, 78, h]
        width = src_all.shape[-1]
        src_idx = self.action_src[actions].unsqueeze(-1).expand(batch, n, width)
        dst_idx = self.action_dst[actions].unsqueeze(-1).expand(batch, n, width)
        x = (torch.gather(src_all, 1, src_idx) + torch.gather(dst_all, 1, dst_idx)
             + self.glob(states[:, :1]) + self.promo[self.action_promo[actions]] + self.bias)
        return F.silu(self.hidden(F.silu(x)))


class Transformer(nn.Module):
    """DeepMind's predictor: shared token embedding (FEN characters, actions
    and BOS share one table), learned positions, pre-LN blocks, final LN and a
    biased linear head with log-softmax."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.tok_embed = nn.Embedding(cfg.vocab_size, d)
        self.pos_embed = nn.Parameter(torch.zeros(cfg.seq_len, d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        if cfg.attention == BOARD_HEAD:
            self.move_head = MoveHead(cfg)
            self.head = nn.Linear(cfg.move_head_dim, cfg.output_size)
        else:
            self.head = nn.Linear(d, cfg.output_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialisation for training from scratch (sheet §3, "Init")."""
        nn.init.trunc_normal_(self.tok_embed.weight, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                std = 1.0 / math.sqrt(module.in_features)
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        pos = self.pos_embed[offset : offset + tokens.shape[-1]]
        return self.tok_embed(tokens) * math.sqrt(self.cfg.embed_dim) + pos

    def _board_sequence(self, board_tokens: torch.Tensor) -> torch.Tensor:
        """BOS (token 0) followed by the 77 FEN tokens: [B, 78]."""
        bos = torch.zeros_like(board_tokens[..., :1])
        return torch.cat([bos, board_tokens], dim=-1)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.head(self.ln_f(x)), dim=-1)

    def forward(self, board_tokens: torch.Tensor, actions: torch.Tensor | None = None,
                hook: LayerHook | None = None) -> torch.Tensor:
        """Log-probabilities of the output classes.

        Action-value: ``board_tokens`` [B, 77] and ``actions`` [B, N] give
        [B, N, K]. State-value and behavioural cloning: [B, 77] gives [B, K].

        ``hook(layer, board, moves)``, if given, is called after the embedding
        (layer 0) and after each block with the residual stream: ``board`` is
        [B, 78, D] ([B, N, 78, D] for full attention, one copy per move) and
        ``moves`` the move tokens [B, N, D] (``None`` where there are none). It
        may return a replacement ``(board, moves)`` pair; ``None`` keeps them.
        The probes (:mod:`neuralengine.research`) read and edit the states
        through it.
        """
        def tap(layer: int, board: torch.Tensor, moves: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
            edited = None if hook is None else hook(layer, board, moves)
            return (board, moves) if edited is None else edited

        board_tokens = board_tokens.long()
        seq = self._board_sequence(board_tokens)
        if self.cfg.kind != ACTION_VALUE or self.cfg.attention == BOARD_HEAD:
            if self.cfg.kind == ACTION_VALUE and actions is None:
                raise ValueError("an action-value model needs actions")
            x, _ = tap(0, self._embed(seq), None)
            for i, block in enumerate(self.blocks, start=1):
                x, _ = tap(i, block(x), None)
            if self.cfg.kind != ACTION_VALUE:
                return self._head(x[:, -1])
            hidden = self.move_head(self.ln_f(x), actions.long())
            return F.log_softmax(self.head(hidden), dim=-1)
        if actions is None:
            raise ValueError("an action-value model needs actions")
        actions = actions.long()
        batch, n = actions.shape
        if self.cfg.attention == SHARED_BOARD:
            board = self._embed(seq)
            moves = self._embed(actions, offset=seq.shape[-1]).reshape(batch, n, -1)
            board, moves = tap(0, board, moves)
            for i, block in enumerate(self.blocks, start=1):
                board, moves = tap(i, *block.forward_shared(board, moves))
            return self._head(moves)
        # Full attention: one 79-token sequence per (position, move).
        t = seq.shape[-1]
        full = torch.cat([seq.unsqueeze(1).expand(batch, n, t), actions.unsqueeze(-1)], dim=-1)
        x = self._embed(full.reshape(batch * n, -1))
        for i in range(len(self.blocks) + 1):
            if i:
                x = self.blocks[i - 1](x)
            if hook is not None:  # the hook sees the board and move tokens apart
                d = x.shape[-1]
                board, moves = tap(i, x[:, :t].reshape(batch, n, t, d), x[:, t].reshape(batch, n, d))
                x = torch.cat([board.reshape(batch * n, t, d), moves.reshape(batch * n, 1, d)], dim=1)
        return self._head(x[:, -1]).reshape(batch, n, -1)
