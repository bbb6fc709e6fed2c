"""The action-value transformer in PyTorch (reference sheet §3).

Shapes: ``B`` positions, ``N`` moves per position, ``T`` tokens, ``D`` width,
``H`` heads, ``K`` output size (return buckets, or actions for behavioural
cloning).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neuralengine.config import ACTION_VALUE, SHARED_BOARD, ModelConfig


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)

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

    def forward(self, board_tokens: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities of the output classes.

        Action-value: ``board_tokens`` [B, 77] and ``actions`` [B, N] give
        [B, N, K]. State-value and behavioural cloning: [B, 77] gives [B, K].
        """
        board_tokens = board_tokens.long()
        seq = self._board_sequence(board_tokens)
        if self.cfg.kind != ACTION_VALUE:
            x = self._embed(seq)
            for block in self.blocks:
                x = block(x)
            return self._head(x[:, -1])
        if actions is None:
            raise ValueError("an action-value model needs actions")
        actions = actions.long()
        batch, n = actions.shape
        if self.cfg.attention == SHARED_BOARD:
            board = self._embed(seq)
            moves = self._embed(actions, offset=seq.shape[-1]).reshape(batch, n, -1)
            for block in self.blocks:
                board, moves = block.forward_shared(board, moves)
            return self._head(moves)
        # Full attention: one 79-token sequence per (position, move).
        full = torch.cat([seq.unsqueeze(1).expand(batch, n, seq.shape[-1]), actions.unsqueeze(-1)], dim=-1)
        x = self._embed(full.reshape(batch * n, -1))
        for block in self.blocks:
            x = block(x)
        return self._head(x[:, -1]).reshape(batch, n, -1)
