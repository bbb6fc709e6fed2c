"""Model architecture descriptions.

A :class:`ModelConfig` travels inside every weights file, so the engine never
guesses an architecture from code defaults. This module imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from neuralengine.encoding import NUM_ACTIONS, NUM_BUCKETS, SEQUENCE_LENGTH

#: Predictor kinds (DeepMind's three): which sequence the model reads, what it outputs.
ACTION_VALUE = "action_value"
STATE_VALUE = "state_value"
BEHAVIORAL_CLONING = "behavioral_cloning"
KINDS = (ACTION_VALUE, STATE_VALUE, BEHAVIORAL_CLONING)

#: Text kinds: a causal language model that reads the game as a move
#: transcript (``;1.e4 e5 2.Nf3``) and scores each move by the probability of
#: its text. Their architecture is a :class:`TextModelConfig`.
PGN_LM = "pgn_lm"
TEXT_KINDS = (PGN_LM,)

#: Attention layouts. ``full``: DeepMind's bidirectional attention over the
#: whole 79-token sequence, one pass per move. ``shared_board``: the 78 board
#: tokens attend only among themselves and each move token attends to the
#: board and itself, so one board pass serves every legal move. ``board_head``:
#: no move token at all; the 78 board tokens are encoded once and each move is
#: scored by a small MLP from the final states of its from- and to-square
#: tokens, the BOS token (a global summary) and its promotion piece.
FULL = "full"
SHARED_BOARD = "shared_board"
BOARD_HEAD = "board_head"
ATTENTIONS = (FULL, SHARED_BOARD, BOARD_HEAD)
#: Layouts that read the board once per position (every move in one pass).
BOARD_ONCE = (SHARED_BOARD, BOARD_HEAD)


class ConfigError(ValueError):
    """An architecture description that cannot be built."""


@dataclass(frozen=True)
class ModelConfig:
    num_layers: int
    embed_dim: int
    num_heads: int
    widening_factor: int = 4
    kind: str = ACTION_VALUE
    attention: str = FULL
    num_buckets: int = NUM_BUCKETS
    vocab_size: int = NUM_ACTIONS
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown model kind {self.kind!r}; expected one of {KINDS}")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"unknown attention {self.attention!r}; expected one of {ATTENTIONS}")
        if self.attention in BOARD_ONCE and self.kind != ACTION_VALUE:
            raise ConfigError(f"{self.attention} attention only applies to action-value models")
        for name in ("num_layers", "embed_dim", "num_heads", "widening_factor", "num_buckets", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.vocab_size < NUM_ACTIONS:
            raise ConfigError(f"vocab_size {self.vocab_size} cannot embed the {NUM_ACTIONS} action tokens")
        eps = self.layer_norm_eps
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
            raise ConfigError(f"layer_norm_eps must be a small positive number, got {eps!r}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        return self.embed_dim * self.widening_factor

    @property
    def seq_len(self) -> int:
        """Tokens the network reads: BOS + 77 FEN tokens (+ the action token
        for action-value models, except ``board_head``, which has none)."""
        return SEQUENCE_LENGTH + (2 if self.kind == ACTION_VALUE and self.attention != BOARD_HEAD else 1)

    @property
    def move_head_dim(self) -> int:
        """Hidden width of the ``board_head`` move MLP."""
        return 2 * self.embed_dim

    @property
    def output_size(self) -> int:
        return NUM_ACTIONS if self.kind == BEHAVIORAL_CLONING else self.num_buckets

    def num_parameters(self) -> int:
        d, f = self.embed_dim, self.ffn_dim
        per_layer = 4 * d * d + 3 * d * f + 4 * d
        body = self.vocab_size * d + self.seq_len * d + self.num_layers * per_layer + 2 * d
        if self.attention == BOARD_HEAD:
            h = self.move_head_dim
            # from/to/global projections (with one shared bias), promotion
            # table, hidden layer, output layer
            return body + 3 * d * h + h + 5 * h + h * h + h + h * self.output_size + self.output_size
        return body + d * self.output_size + self.output_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError("architecture must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown architecture fields: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"incomplete architecture: {exc}") from exc


#: Size presets: (layers, width, heads). 9M/136M/270M are DeepMind's.
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 32, 2),
    "local": (4, 64, 4),
    "small": (4, 128, 4),
    "medium": (6, 192, 6),
    "9M": (8, 256, 8),
    "136M": (8, 1024, 8),
    "270M": (16, 1024, 8),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    try:
        layers, dim, heads = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
    fields: dict[str, Any] = {"num_layers": layers, "embed_dim": dim, "num_heads": heads, **overrides}
    try:
        return ModelConfig(**fields)
    except TypeError as exc:
        raise ConfigError(f"bad override for preset {name!r}: {exc}") from None


@dataclass(frozen=True)
class TextModelConfig:
    """A character-level causal GPT in nanoGPT's layout (the ``pgn_lm`` kind).

    Pre-norm blocks (LayerNorm, causal multi-head attention, GELU MLP of
    ``4 * n_embd``), learned positions, the output head tied to the token
    embedding; ``bias`` says whether the Linears and LayerNorms carry biases.
    ``vocabulary`` lists the tokens by index (one character each).
    """

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocabulary: tuple[str, ...]
    bias: bool = False
    kind: str = PGN_LM
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.kind not in TEXT_KINDS:
            raise ConfigError(f"unknown text model kind {self.kind!r}; expected one of {TEXT_KINDS}")
        for name in ("n_layer", "n_head", "n_embd", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if not isinstance(self.bias, bool):
            raise ConfigError(f"bias must be true or false, got {self.bias!r}")
        vocab = self.vocabulary
        if isinstance(vocab, list):  # from JSON
            object.__setattr__(self, "vocabulary", tuple(vocab))
            vocab = self.vocabulary
        if (not isinstance(vocab, tuple) or not vocab
                or not all(isinstance(t, str) and len(t) == 1 for t in vocab)):
            raise ConfigError("vocabulary must be a non-empty list of single characters")
        if len(set(vocab)) != len(vocab):
            raise ConfigError("vocabulary lists a character twice")
        eps = self.layer_norm_eps
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
            raise ConfigError(f"layer_norm_eps must be a small positive number, got {eps!r}")

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    # The names the engine's descriptions use for every kind.
    @property
    def num_layers(self) -> int:
        return self.n_layer

    @property
    def embed_dim(self) -> int:
        return self.n_embd

    @property
    def num_heads(self) -> int:
        return self.n_head

    def num_parameters(self) -> int:
        d, b = self.n_embd, int(self.bias)
        norm = d + d * b  # one LayerNorm: weight (+ bias)
        attention = 3 * d * d + 3 * d * b + d * d + d * b  # c_attn, c_proj
        mlp = 4 * d * d + 4 * d * b + 4 * d * d + d * b  # c_fc, c_proj
        per_layer = 2 * norm + attention + mlp
        return self.vocab_size * d + self.block_size * d + self.n_layer * per_layer + norm

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["vocabulary"] = list(self.vocabulary)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TextModelConfig":
        if not isinstance(data, dict):
            raise ConfigError("architecture must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown architecture fields: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"incomplete architecture: {exc}") from exc
