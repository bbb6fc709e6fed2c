"""Inference of a character-level GPT in nanoGPT's architecture, in NumPy.

:class:`TextLM` runs a :class:`~neuralengine.config.TextModelConfig` model
from its tensors (nanoGPT's names, see
:func:`neuralengine.weights.text_expected_shapes`):

* token embedding plus learned position embedding;
* pre-norm blocks: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``, causal
  multi-head attention with ``c_attn`` split into q, k, v (heads are
  contiguous slices), an MLP of ``4 * n_embd`` with the exact (erf) GELU;
* ``ln_f``, then the output head tied to the token embedding.

LayerNorm's epsilon is the config's (1e-5, nanoGPT's). :meth:`TextLM.forward`
returns the logits, the keys and values of every layer (a
:class:`KVCache`, so that a prefix is computed once and continued later)
and, on request, the residual stream after the embedding and after every
block (what probes read). :meth:`TextLM.score` scores many continuations of
one cached prefix in one batched call.

Only NumPy is needed: the engine's core install has no PyTorch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from neuralengine.config import TextModelConfig


class ContextError(ValueError):
    """Text longer than the model's context (``block_size`` characters)."""


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, vectorised in ``x``'s type (a Chebyshev fit of erfc, fractional error below 1.2e-7)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU, ``x * Phi(x)``, in ``x``'s type."""
    half = x.dtype.type(0.5)
    return half * x * (1 + erf(x * x.dtype.type(1.0 / np.sqrt(2.0))))


def _linear(x: np.ndarray, params: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``x @ W + b`` over the last axis, as one matrix product (stacked products are slower)."""
    shape = x.shape
    out = x.reshape(-1, shape[-1]) @ params[0]
    out += params[1]
    return out.reshape(*shape[:-1], out.shape[-1])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, in float64."""
    wide = logits.astype(np.float64)
    top = wide.max(axis=-1, keepdims=True)
    shifted = wide - top
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass
class KVCache:
    """Keys and values of every layer for the tokens read so far: ``[batch, heads, tokens, head_dim]`` each."""

    keys: list[np.ndarray]
    values: list[np.ndarray]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0

    @property
    def batch(self) -> int:
        return int(self.keys[0].shape[0]) if self.keys else 0


@dataclass
class ForwardResult:
    #: ``[batch, tokens, vocab]``.
    logits: np.ndarray
    #: The cache extended by the tokens just read (``None`` unless asked for).
    cache: KVCache | None = None
    #: The residual stream ``[batch, tokens, n_embd]`` after the embedding
    #: (index 0) and after each block (index ``i`` for block ``i - 1``); empty unless asked for.
    residuals: list[np.ndarray] = field(default_factory=list)


class TextLM:
    """A nanoGPT model on NumPy.

    :param config: the architecture.
    :param tensors: float32 arrays by nanoGPT's names (``lm_head`` is the
        token embedding); checked by
        :func:`neuralengine.weights.check_text_tensors`.
    """

    #: Where it runs (the backends' attribute of the same name).
    device = "cpu"

    def __init__(self, config: TextModelConfig, tensors: dict[str, np.ndarray],
                 weights_path: str | os.PathLike[str] | None = None) -> None:
        from neuralengine.weights import check_text_tensors

        check_text_tensors(config, tensors)
        self.config = config
        self.weights_path = Path(weights_path) if weights_path is not None else None
        t = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
        self.wte = t["transformer.wte.weight"]
        self.wpe = t["transformer.wpe.weight"]
        self.head = np.ascontiguousarray(self.wte.T)
        self._no_bias = np.zeros(config.vocab_size, dtype=np.float32)
        d = config.n_embd
        zeros = np.zeros(4 * d, dtype=np.float32)

        def get(name: str, size: int) -> np.ndarray:
            return t.get(name, zeros[:size])

        self.layers = []
        for i in range(config.n_layer):
            p = f"transformer.h.{i}."
            self.layers.append({
                "ln_1": (t[p + "ln_1.weight"], get(p + "ln_1.bias", d)),
                "ln_2": (t[p + "ln_2.weight"], get(p + "ln_2.bias", d)),
                # stored [out, in]; kept as [in, out] for x @ W
                "c_attn": (np.ascontiguousarray(t[p + "attn.c_attn.weight"].T), get(p + "attn.c_attn.bias", 3 * d)),
                "attn_proj": (np.ascontiguousarray(t[p + "attn.c_proj.weight"].T), get(p + "attn.c_proj.bias", d)),
                "c_fc": (np.ascontiguousarray(t[p + "mlp.c_fc.weight"].T), get(p + "mlp.c_fc.bias", 4 * d)),
                "mlp_proj": (np.ascontiguousarray(t[p + "mlp.c_proj.weight"].T), get(p + "mlp.c_proj.bias", d)),
            })
        self.ln_f = (t["transformer.ln_f.weight"], get("transformer.ln_f.bias", d))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "TextLM":
        """Open a ``pgn_lm`` weights file (raises :class:`~neuralengine.weights.WeightsError`)."""
        from neuralengine.weights import load_text_weights

        weights = load_text_weights(path)
        return cls(weights.config, weights.tensors, weights.path)

    def describe(self) -> str:
        return "numpy (cpu)"

    # -- the network -------------------------------------------------------

    def _layer_norm(self, x: np.ndarray, params: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(axis=-1, keepdims=True)
        return centred / np.sqrt(var + np.float32(self.config.layer_norm_eps)) * params[0] + params[1]

    def _attention(self, x: np.ndarray, layer: dict, past: tuple[np.ndarray, np.ndarray] | None,
                   mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Attention of the new tokens ``x`` over all the past (batch 1 or the same batch) and over the new
        tokens ``mask`` allows (``[n, n]``, query by key: causal for a text)."""
        cfg = self.config
        b, n, d = x.shape
        h, hd = cfg.n_head, cfg.head_dim
        qkv = _linear(x, layer["c_attn"])
        q, k, v = (np.ascontiguousarray(qkv[..., i * d:(i + 1) * d].reshape(b, n, h, hd).transpose(0, 2, 1, 3))
                   for i in range(3))
        q *= np.float32(1.0 / np.sqrt(hd))
        own = q @ k.transpose(0, 1, 3, 2)  # [b, h, n, n]
        own = np.where(mask, own, np.float32(-np.inf))
        earlier = None
        if past is not None and past[0].shape[2]:
            keys, values = past
            if keys.shape[0] == 1 and b > 1:
                # A prefix shared by every row: one product per head over all rows' queries.
                rows = q.transpose(1, 0, 2, 3).reshape(h, b * n, hd)
                earlier = (rows @ keys[0].transpose(0, 2, 1)).reshape(h, b, n, -1).transpose(1, 0, 2, 3)
            else:
                earlier = q @ keys.transpose(0, 1, 3, 2)  # [b, h, n, past]
            scores = np.concatenate([earlier, own], axis=-1)
        else:
            scores = own
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        if earlier is not None:
            split = earlier.shape[-1]
            keys, values = past  # type: ignore[misc]
            if values.shape[0] == 1 and b > 1:
                shared = np.ascontiguousarray(scores[..., :split].transpose(1, 0, 2, 3)).reshape(h, b * n, split)
                out = (shared @ values[0]).reshape(h, b, n, hd).transpose(1, 0, 2, 3)
            else:
                out = scores[..., :split] @ values
            out = out + scores[..., split:] @ v
        else:
            out = scores @ v
        out = np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(b, n, d)
        return _linear(out, layer["attn_proj"]), k, v

    def forward(self, tokens: np.ndarray | Sequence[Sequence[int]], cache: KVCache | None = None, *,
                keep_cache: bool = False, residuals: bool = False, positions: np.ndarray | None = None,
                mask: np.ndarray | None = None) -> ForwardResult:
        """Run ``tokens`` (``[batch, n]``) after the tokens of ``cache`` (none by default).

        A cache of batch 1 is shared by every row of a larger batch. With
        ``keep_cache`` the result carries the cache extended by these tokens
        (same batch as ``cache`` needed); with ``residuals`` the residual
        stream of every layer. ``positions`` (``[n]``, default: following the
        cache) and ``mask`` (``[n, n]``, default: causal) let the tokens form
        a tree rather than a text (:meth:`score`). Raises
        :class:`ContextError` past ``block_size`` and ``ValueError`` for a
        token outside the vocabulary.
        """
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.ndim != 2:
            raise ValueError("tokens must be [batch, length]")
        b, n = ids.shape
        start = cache.length if cache is not None else 0
        if positions is None:
            positions = np.arange(start, start + n)
        if mask is None:
            mask = np.tril(np.ones((n, n), dtype=bool))
        if n and int(np.max(positions)) >= self.config.block_size:
            raise ContextError(f"{int(np.max(positions)) + 1} characters are more than the model's context of "
                               f"{self.config.block_size}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError("token outside the vocabulary")
        if cache is not None and keep_cache and cache.batch not in (b, 0):
            raise ValueError("a kept cache needs the batch of the cache it extends")
        x = self.wte[ids] + self.wpe[positions]
        stream = [x] if residuals else []
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            past = (cache.keys[i], cache.values[i]) if cache is not None and cache.length else None
            attended, k, v = self._attention(self._layer_norm(x, layer["ln_1"]), layer, past, mask)
            x = x + attended
            hidden = gelu(_linear(self._layer_norm(x, layer["ln_2"]), layer["c_fc"]))
            x = x + _linear(hidden, layer["mlp_proj"])
            if residuals:
                stream.append(x)
            if keep_cache:
                if past is not None:
                    k = np.concatenate([past[0], k], axis=2)
                    v = np.concatenate([past[1], v], axis=2)
                keys.append(k)
                values.append(v)
        logits = _linear(self._layer_norm(x, self.ln_f), (self.head, self._no_bias))
        return ForwardResult(logits, KVCache(keys, values) if keep_cache else None, stream)

    # -- scoring -----------------------------------------------------------

    def read(self, tokens: Sequence[int], cache: KVCache | None = None) -> tuple[KVCache, np.ndarray]:
        """Read one text (after ``cache``, batch 1): the extended cache and the logits after its last token."""
        if not len(tokens):
            raise ValueError("nothing to read")
        result = self.forward([list(tokens)], cache, keep_cache=True)
        assert result.cache is not None
        return result.cache, result.logits[0, -1]

    def score(self, cache: KVCache, last_logits: np.ndarray, continuations: Sequence[Sequence[int]]) -> np.ndarray:
        """The log-probability (float64) of each continuation after the cached prefix, in one batched call.

        ``last_logits`` are the logits after the prefix's last token (they
        predict each continuation's first token). Each continuation's score
        is the sum over its tokens of ``log P(token | prefix, its earlier
        tokens)``. The continuations' beginnings are read once each: they
        form a tree (every candidate move of white starts with the same move
        number, many with the same piece letter), read as one sequence whose
        tokens attend to the prefix and to their own ancestors only, at the
        positions they have in their texts. Raises :class:`ContextError` when
        the longest does not fit the context (its last token is predicted,
        never read, so a prefix of ``P`` tokens and a continuation of ``m``
        need ``P + m - 1`` positions).
        """
        if not continuations:
            return np.zeros(0)
        if any(not c for c in continuations):
            raise ValueError("an empty continuation")
        longest = max(len(c) for c in continuations)
        if cache.length + longest - 1 > self.config.block_size:
            raise ContextError(f"the prefix ({cache.length} characters) and a move of {longest} need more than the "
                               f"model's context of {self.config.block_size}")
        first = log_softmax(last_logits)
        totals = np.array([first[c[0]] for c in continuations], dtype=np.float64)
        # The tree of the continuations' proper beginnings: node = the beginning c[:i] (i >= 1), read token c[i - 1].
        index: dict[tuple[int, ...], int] = {}
        tokens: list[int] = []
        parents: list[int] = []
        for c in continuations:
            for i in range(1, len(c)):
                key = tuple(c[:i])
                if key not in index:
                    index[key] = len(tokens)
                    tokens.append(c[i - 1])
                    parents.append(index[key[:-1]] if i > 1 else -1)
        if not tokens:
            return totals
        n = len(tokens)
        mask = np.zeros((n, n), dtype=bool)
        depth = np.zeros(n, dtype=np.int64)
        for node in range(n):  # parents come before their children
            parent = parents[node]
            if parent >= 0:
                mask[node] = mask[parent]
                depth[node] = depth[parent] + 1
            mask[node, node] = True
        log_probs = log_softmax(self.forward([tokens], cache, positions=cache.length + depth, mask=mask).logits[0])
        for row, c in enumerate(continuations):
            totals[row] += sum(log_probs[index[tuple(c[:i])], c[i]] for i in range(1, len(c)))
        return totals

    def greedy(self, cache: KVCache, last_logits: np.ndarray, stop: int, max_tokens: int) -> list[int]:
        """The most probable tokens after the cached prefix, one at a time, up to and including ``stop``
        (at most ``max_tokens``, and never past the context)."""
        out: list[int] = []
        logits = last_logits
        while len(out) < max_tokens:
            token = int(np.argmax(logits))
            out.append(token)
            if token == stop or cache.length + 1 > self.config.block_size:
                break
            cache, logits = self.read([token], cache)
        return out
