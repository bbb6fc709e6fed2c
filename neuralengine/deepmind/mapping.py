"""Map DeepMind's parameter trees onto the engine's tensor names.

Two naming schemes exist among the released checkpoints (reference sheet §5):

* **Haiku** (the action-value models 9M, 136M, 270M): ``embed``,
  ``embed_1``, ``layer_norm``/``layer_norm_N``, ``linear``/``linear_N`` and
  ``multi_head_dot_product_attention[_N]/linear[_1.._3]``. The first module of
  a kind carries no suffix.
* **Flax** (``9M_state_value``, ``9M_behavioral_cloning``): ``Embed_0``,
  ``Embed_1``, ``LayerNorm_N``, ``Dense_N`` and
  ``MultiHeadDotProductAttention_N``, numbered from 0.

Both follow the same module order: token and position embeddings; per layer
the attention LayerNorm, the attention (query, key, value, output), the MLP
LayerNorm, the MLP (gate, linear branch, down-projection); the final
LayerNorm and the biased output head. Modules are matched by their numeric
suffix, never by string order (``linear_10`` comes after ``linear_2``).

Weights are stored ``[in, out]`` and become PyTorch's ``[out, in]``. The
number of layers and the width come from the tree; the kind of predictor
from the output size and the number of positions (see :func:`infer_kind`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from neuralengine.config import (ACTION_VALUE, BEHAVIORAL_CLONING, KINDS, STATE_VALUE, ConfigError,
                                 ModelConfig)
from neuralengine.deepmind.errors import DeepMindError
from neuralengine.encoding import NUM_ACTIONS, SEQUENCE_LENGTH, VOCAB
from neuralengine.weights import check_tensors

HAIKU = "haiku"
FLAX = "flax"

#: Heads of every released model; the shapes do not tell the head count
#: (except Flax's three-dimensional attention kernels).
DEFAULT_HEADS = 8

#: LayerNorm epsilon of each library's default LayerNorm.
LAYER_NORM_EPS = {HAIKU: 1e-5, FLAX: 1e-6}

#: Positions read by each predictor: BOS + 77 FEN tokens (+ the action).
_POSITIONS = {ACTION_VALUE: SEQUENCE_LENGTH + 2, STATE_VALUE: SEQUENCE_LENGTH + 1,
              BEHAVIORAL_CLONING: SEQUENCE_LENGTH + 1}


@dataclass(frozen=True)
class _Scheme:
    """Module and parameter names of one naming scheme."""

    style: str
    embed: str
    layer_norm: str
    attention: str
    linear: str
    embedding_params: tuple[str, ...]
    ln_scale: str
    ln_offset: str
    weight: str
    bias: str
    first_unsuffixed: bool

    def name(self, base: str, index: int) -> str:
        if index == 0 and self.first_unsuffixed:
            return base
        return f"{base}_{index}"

    def index(self, module: str) -> tuple[str, int] | None:
        """``(base, index)`` of a module name of this scheme, or None."""
        for base in (self.embed, self.layer_norm, self.attention, self.linear):
            if module == base and self.first_unsuffixed:
                return base, 0
            match = re.fullmatch(re.escape(base) + r"_(0|[1-9][0-9]*)", module)
            if match:
                index = int(match.group(1))
                if index == 0 and self.first_unsuffixed:
                    return None  # Haiku never writes "_0"
                return base, index
        return None


_HAIKU = _Scheme(HAIKU, "embed", "layer_norm", "multi_head_dot_product_attention", "linear",
                 ("embeddings",), "scale", "offset", "w", "b", first_unsuffixed=True)
_FLAX = _Scheme(FLAX, "Embed", "LayerNorm", "MultiHeadDotProductAttention", "Dense",
                ("embedding", "embeddings"), "scale", "bias", "kernel", "bias", first_unsuffixed=False)
_SCHEMES = {HAIKU: _HAIKU, FLAX: _FLAX}

#: Inner projection names of a Flax attention module, in q, k, v, out order.
_FLAX_ATTENTION_INNER = (("query", "key", "value", "out"), ("Dense_0", "Dense_1", "Dense_2", "Dense_3"))


@dataclass
class Mapped:
    """The result of :func:`map_tree`."""

    config: ModelConfig
    tensors: dict[str, np.ndarray]
    style: str
    notes: list[str] = field(default_factory=list)


def flatten_tree(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flatten a nested parameter tree into ``"module/.../param"`` keys.

    Keys that already contain ``/`` (Haiku's ``parent/child`` modules) and
    nested dictionaries give the same flat names. Leaves become float32 NumPy
    arrays.
    """
    flat: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            items: Iterable[tuple[Any, Any]] = node.items()
        elif isinstance(node, (list, tuple)):
            items = enumerate(node)
        else:
            if not hasattr(node, "shape"):
                raise DeepMindError(f"parameter {prefix or '(root)'} is a {type(node).__name__}, not an array")
            try:
                flat[prefix] = np.asarray(node, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise DeepMindError(f"parameter {prefix} cannot be read as float32: {exc}") from None
            return
        for key, value in items:
            walk(value, f"{prefix}/{key}" if prefix else str(key))

    walk(tree, "")
    return flat


def _summary(flat: Mapping[str, np.ndarray]) -> str:
    """A short description of the modules in a flat tree, for error messages."""
    groups: dict[str, set[str]] = {}
    for key in flat:
        module = key.split("/")[0]
        groups.setdefault(re.sub(r"_\d+$", "", module), set()).add(module)
    parts = [f"{base} ×{len(mods)}" if len(mods) > 1 else next(iter(mods)) for base, mods in sorted(groups.items())]
    return ", ".join(parts) if parts else "nothing"


def detect_style(flat: Mapping[str, np.ndarray]) -> str:
    """``"haiku"`` or ``"flax"`` from the module names; raises when neither fits."""
    modules = {key.split("/")[0] for key in flat}
    votes = {style: sum(scheme.index(m) is not None for m in modules) for style, scheme in _SCHEMES.items()}
    best = max(votes, key=lambda s: votes[s])
    if votes[best] == 0:
        raise DeepMindError(
            "this is not a DeepMind searchless-chess parameter tree: expected Haiku modules (embed, layer_norm, "
            "linear, multi_head_dot_product_attention) or Flax modules (Embed_0, LayerNorm_0, Dense_0, "
            f"MultiHeadDotProductAttention_0); found {_summary(flat)}")
    return best


def infer_kind(output_size: int, positions: int, style: str, hint: str = "") -> str:
    """The predictor kind of a checkpoint.

    An output of 1968 classes is behavioural cloning. With 128 outputs, 78
    positions mean state value and 79 action value; DeepMind's code gives
    every predictor 79 positions, so a name ``hint`` (the checkpoint folder,
    e.g. ``9M_state_value``) or the Flax naming of the state-value release
    decides between the two.
    """
    hint = hint.lower().replace("-", "_")
    if output_size == NUM_ACTIONS:
        return BEHAVIORAL_CLONING
    if "behavioral_cloning" in hint or "behavioural_cloning" in hint:
        return BEHAVIORAL_CLONING
    if "state_value" in hint:
        return STATE_VALUE
    if "action_value" in hint:
        return ACTION_VALUE
    if positions == _POSITIONS[STATE_VALUE]:
        return STATE_VALUE
    return STATE_VALUE if style == FLAX else ACTION_VALUE


class _Reader:
    """Takes parameters out of a flat tree, collecting every problem."""

    def __init__(self, flat: Mapping[str, np.ndarray]) -> None:
        self.flat = flat
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.bad_shapes: list[str] = []

    def has(self, key: str) -> bool:
        return key in self.flat

    def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        if key not in self.flat:
            self.missing.append(key)
            return None
        self.used.add(key)
        value = self.flat[key]
        if shape is not None and tuple(value.shape) != shape:
            self.bad_shapes.append(f"{key} has shape {list(value.shape)}, expected {list(shape)}")
            return None
        return value

    def take_any(self, keys: Iterable[str], shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        keys = list(keys)
        for key in keys:
            if key in self.flat:
                return self.take(key, shape)
        self.missing.append(" or ".join(keys))
        return None

    def raise_problems(self, flat_summary: str, unknown_too: bool = True) -> None:
        """Raise one :class:`DeepMindError` listing every problem, if there are any."""
        unknown = sorted(set(self.flat) - self.used, key=_natural_key) if unknown_too else []
        lines = []
        if self.missing:
            lines.append(f"missing: {_listing(self.missing)}")
        if unknown:
            lines.append(f"unknown: {_listing(unknown)}")
        if self.bad_shapes:
            lines.append(f"wrong shapes: {_listing(self.bad_shapes)}")
        if lines:
            raise DeepMindError("the parameter tree does not match DeepMind's transformer:\n  "
                                + "\n  ".join(lines) + f"\n  found: {flat_summary}")


def _natural_key(text: str) -> list[Any]:
    """Sort key that orders numeric parts as numbers (``linear_2`` < ``linear_10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" … ({len(items) - limit} more)" if len(items) > limit else "")


def _count(flat: Mapping[str, np.ndarray], scheme: _Scheme, base: str) -> int:
    """How many consecutive modules ``base``, ``base_1``, … the tree holds."""
    indices = set()
    for key in flat:
        parsed = scheme.index(key.split("/")[0])
        if parsed and parsed[0] == base:
            indices.add(parsed[1])
    n = 0
    while n in indices:
        n += 1
    return n


def map_tree(tree: Mapping[str, Any], *, heads: int | None = None, kind: str | None = None,
             layer_norm_eps: float | None = None, hint: str = "") -> Mapped:
    """Map a DeepMind parameter tree (nested dicts of arrays) onto our model.

    ``heads`` defaults to 8 (every released model), ``kind`` is inferred (see
    :func:`infer_kind`, with ``hint`` the checkpoint's folder name) and
    ``layer_norm_eps`` defaults to the library default of the naming scheme.
    Raises :class:`DeepMindError` listing every missing, unknown or
    wrongly-shaped parameter.
    """
    if kind is not None and kind not in KINDS:
        raise DeepMindError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    flat = flatten_tree(tree)
    if not flat:
        raise DeepMindError("the parameter tree is empty")
    # A Flax tree is sometimes wrapped in a "params" collection.
    if all(key.startswith("params/") for key in flat):
        flat = {key[len("params/"):]: value for key, value in flat.items()}
    style = detect_style(flat)
    scheme = _SCHEMES[style]
    summary = _summary(flat)
    notes: list[str] = []
    reader = _Reader(flat)

    # Embeddings give the width, the vocabulary and the number of positions.
    emb_keys = [f"{scheme.name(scheme.embed, 0)}/{p}" for p in scheme.embedding_params]
    pos_keys = [f"{scheme.name(scheme.embed, 1)}/{p}" for p in scheme.embedding_params]
    tok = reader.take_any(emb_keys)
    pos = reader.take_any(pos_keys)
    if tok is None or pos is None or tok.ndim != 2 or pos.ndim != 2 or tok.shape[1] != pos.shape[1]:
        if tok is not None and pos is not None:
            reader.bad_shapes.append(f"embeddings {list(tok.shape)} and {list(pos.shape)} are not [rows, width] "
                                     "with one width")
        reader.raise_problems(summary, unknown_too=False)
        raise AssertionError("unreachable")
    vocab, d = tok.shape
    num_layers = _count(flat, scheme, scheme.attention)
    if num_layers == 0:
        raise DeepMindError(f"no attention layers ({scheme.name(scheme.attention, 0)}) in the tree; found {summary}")
    head_key = f"{scheme.name(scheme.linear, 3 * num_layers)}/{scheme.weight}"
    head_w = flat.get(head_key)
    if head_w is None or head_w.ndim != 2:
        if head_w is None:
            reader.missing.append(head_key)
        else:
            reader.bad_shapes.append(f"{head_key} has shape {list(head_w.shape)}, expected [{d}, outputs]")
        reader.raise_problems(summary, unknown_too=False)
        raise AssertionError("unreachable")
    output_size = head_w.shape[1]

    kind = kind or infer_kind(output_size, pos.shape[0], style, hint)
    num_heads = heads or DEFAULT_HEADS
    heads_from_shape = _flax_heads(flat, scheme)
    if heads_from_shape is not None:
        if heads is not None and heads != heads_from_shape:
            raise DeepMindError(f"the attention kernels have {heads_from_shape} heads, not {heads}")
        num_heads = heads_from_shape
    eps = LAYER_NORM_EPS[style] if layer_norm_eps is None else float(layer_norm_eps)
    num_buckets = output_size if kind != BEHAVIORAL_CLONING else 128
    try:
        cfg = ModelConfig(num_layers=num_layers, embed_dim=d, num_heads=num_heads, kind=kind,
                          num_buckets=num_buckets, vocab_size=vocab, layer_norm_eps=eps)
    except ConfigError as exc:
        hint_heads = " (pass the head count with --heads)" if d % num_heads else ""
        raise DeepMindError(f"cannot build the architecture: {exc}{hint_heads}") from None
    if kind == BEHAVIORAL_CLONING and output_size != NUM_ACTIONS:
        raise DeepMindError(f"a behavioural-cloning head must have {NUM_ACTIONS} outputs, this one has {output_size}")
    if kind != BEHAVIORAL_CLONING and output_size == NUM_ACTIONS:
        raise DeepMindError(f"a head of {NUM_ACTIONS} outputs is behavioural cloning, not {kind}")
    min_vocab = NUM_ACTIONS if kind == ACTION_VALUE else len(VOCAB)
    if vocab < min_vocab:
        raise DeepMindError(f"the token embedding has {vocab} rows; a {kind} model needs at least {min_vocab}")
    if pos.shape[0] < cfg.seq_len:
        raise DeepMindError(f"the position embedding has {pos.shape[0]} rows; a {kind} model reads {cfg.seq_len} "
                            "positions")
    if pos.shape[0] > cfg.seq_len:
        notes.append(f"position embedding: {pos.shape[0]} rows, the {kind} model reads the first {cfg.seq_len}")

    f = cfg.ffn_dim
    tensors: dict[str, np.ndarray | None] = {"tok_embed.weight": tok, "pos_embed": pos[: cfg.seq_len]}

    def ln(index: int, target: str) -> None:
        module = scheme.name(scheme.layer_norm, index)
        tensors[f"{target}.weight"] = reader.take(f"{module}/{scheme.ln_scale}", (d,))
        tensors[f"{target}.bias"] = reader.take(f"{module}/{scheme.ln_offset}", (d,))

    def linear(index: int, target: str, shape: tuple[int, int]) -> None:
        w = reader.take(f"{scheme.name(scheme.linear, index)}/{scheme.weight}", shape)
        tensors[target] = None if w is None else w.T

    for i in range(num_layers):
        p = f"blocks.{i}."
        ln(2 * i, p + "ln1")
        attention = scheme.name(scheme.attention, i)
        projections = _attention_projections(reader, scheme, attention, d, num_heads, notes)
        for proj, w in zip("qkvo", projections):
            tensors[f"{p}attn.{proj}.weight"] = None if w is None else w.T
        ln(2 * i + 1, p + "ln2")
        linear(3 * i, p + "mlp.gate.weight", (d, f))
        linear(3 * i + 1, p + "mlp.up.weight", (d, f))
        linear(3 * i + 2, p + "mlp.down.weight", (f, d))
    ln(2 * num_layers, "ln_f")
    linear(3 * num_layers, "head.weight", (d, output_size))
    tensors["head.bias"] = reader.take(f"{scheme.name(scheme.linear, 3 * num_layers)}/{scheme.bias}",
                                       (output_size,))
    reader.raise_problems(summary)

    out = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in tensors.items()
           if value is not None}
    for name, value in out.items():
        if not np.isfinite(value).all():
            raise DeepMindError(f"parameter for {name} holds NaN or infinite values")
    try:
        check_tensors(cfg, out)
    except Exception as exc:  # a mapping bug, not bad input; still report it plainly
        raise DeepMindError(f"internal mapping error: {exc}") from None
    return Mapped(cfg, out, style, list(dict.fromkeys(notes)))


def _flax_heads(flat: Mapping[str, np.ndarray], scheme: _Scheme) -> int | None:
    """Heads read from Flax's ``[D, H, dh]`` query kernel, when stored that way."""
    if scheme.style != FLAX:
        return None
    kernel = flat.get(f"{scheme.name(scheme.attention, 0)}/query/{scheme.weight}")
    if kernel is not None and kernel.ndim == 3:
        return int(kernel.shape[1])
    return None


def _attention_projections(reader: _Reader, scheme: _Scheme, module: str, d: int, heads: int,
                           notes: list[str]) -> list[np.ndarray | None]:
    """The four ``[in, out]`` matrices (q, k, v, out) of one attention module."""
    if scheme.style == HAIKU:
        return [reader.take(f"{module}/{scheme.name('linear', j)}/w", (d, d)) for j in range(4)]
    names = next((n for n in _FLAX_ATTENTION_INNER if reader.has(f"{module}/{n[0]}/{scheme.weight}")),
                 _FLAX_ATTENTION_INNER[0])
    dh = d // heads
    result: list[np.ndarray | None] = []
    for j, inner in enumerate(names):
        key = f"{module}/{inner}/{scheme.weight}"
        # Flax's own attention stores q/k/v as [D, H, dh] and out as [H, dh, D].
        split = (d, heads, dh) if j < 3 else (heads, dh, d)
        value = reader.flat.get(key)
        if value is not None and value.ndim == 3:
            w = reader.take(key, split)
            result.append(None if w is None else w.reshape(d, d))
        else:
            result.append(reader.take(key, (d, d)))
        bias_key = f"{module}/{inner}/{scheme.bias}"
        if reader.has(bias_key):
            bias = reader.take(bias_key)
            if bias is not None and np.any(bias != 0):
                reader.bad_shapes.append(f"{bias_key} is a non-zero bias; this architecture has no attention "
                                         "biases")
            elif bias is not None and j == 0:
                notes.append("attention biases are all zero and were dropped")
    return result
