"""The weights format: one safetensors file whose header carries JSON metadata.

The metadata (``__metadata__["neuralengine"]``) holds the architecture, the
tokenizer and action-table fingerprints, the bucket count and the provenance.
Nothing here uses pickle, and nothing imports PyTorch: tensors load as NumPy.

Text models (the ``pgn_lm`` kind, :class:`~neuralengine.config.TextModelConfig`)
share the file format: their ``architecture`` names the kind and carries the
vocabulary, their tensors keep nanoGPT's names, and they have no board
tokenizer or action table to fingerprint. :func:`load_text_weights` reads
them; :func:`load_weights` and :func:`config_from_metadata` refuse them with
a message, so that every command made for the board models says what it got.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from neuralengine.atomic import atomic_path
from neuralengine.config import ACTION_VALUE, BOARD_HEAD, TEXT_KINDS, ConfigError, ModelConfig, TextModelConfig
from neuralengine.encoding import ACTIONS_SHA256, tokenizer_sha256

FORMAT_NAME = "neuralengine-weights"
FORMAT_VERSION = 1
METADATA_KEY = "neuralengine"
_MAX_HEADER = 100 * 1024 * 1024


class WeightsError(Exception):
    """A weights file that cannot be used; the message names the problem."""


@dataclass
class Weights:
    config: ModelConfig
    tensors: dict[str, np.ndarray]
    metadata: dict[str, Any]
    path: Path | None = None
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a model (PyTorch layout, ``[out, in]``)."""
    d, f = cfg.embed_dim, cfg.ffn_dim
    shapes: dict[str, tuple[int, ...]] = {
        "tok_embed.weight": (cfg.vocab_size, d),
        "pos_embed": (cfg.seq_len, d),
    }
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        for ln in ("ln1", "ln2"):
            shapes[p + ln + ".weight"] = (d,)
            shapes[p + ln + ".bias"] = (d,)
        for proj in "qkvo":
            shapes[f"{p}attn.{proj}.weight"] = (d, d)
        if cfg.attention_bias:
            shapes[p + "attn.token_bias"] = (cfg.num_heads, cfg.seq_len, cfg.seq_len)
        shapes[p + "mlp.gate.weight"] = (f, d)
        shapes[p + "mlp.up.weight"] = (f, d)
        shapes[p + "mlp.down.weight"] = (d, f)
    shapes["ln_f.weight"] = (d,)
    shapes["ln_f.bias"] = (d,)
    if cfg.attention == BOARD_HEAD:
        h = cfg.move_head_dim
        for part in ("src", "dst", "glob"):
            shapes[f"move_head.{part}.weight"] = (h, d)
        shapes["move_head.bias"] = (h,)
        shapes["move_head.promo"] = (5, h)
        shapes["move_head.hidden.weight"] = (h, h)
        shapes["move_head.hidden.bias"] = (h,)
        shapes["head.weight"] = (cfg.output_size, h)
    else:
        shapes["head.weight"] = (cfg.output_size, d)
    shapes["head.bias"] = (cfg.output_size,)
    return shapes


def make_metadata(cfg: ModelConfig, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": cfg.to_dict(),
        "tokenizer_sha256": tokenizer_sha256(),
        "actions_sha256": ACTIONS_SHA256,
        "num_buckets": cfg.num_buckets,
        "provenance": dict(provenance or {}),
    }


def save_weights(path: str | os.PathLike[str], cfg: ModelConfig, tensors: Mapping[str, np.ndarray],
                 provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``tensors`` (float32 NumPy arrays) atomically; returns the path."""
    from safetensors.numpy import save_file

    check_tensors(cfg, tensors)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = make_metadata(cfg, provenance)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    with atomic_path(path) as tmp:  # a unique temporary name: concurrent writers never collide
        save_file(arrays, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return path


def check_tensors(cfg: ModelConfig, tensors: Mapping[str, Any]) -> None:
    check_shapes(expected_shapes(cfg), tensors)


def check_shapes(expected: Mapping[str, tuple[int, ...]], tensors: Mapping[str, Any]) -> None:
    """Raise :class:`WeightsError` unless ``tensors`` has exactly the ``expected`` names and shapes."""
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    if missing:
        raise WeightsError(f"missing tensors: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unknown:
        raise WeightsError(f"unknown tensors: {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}")
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != shape:
            raise WeightsError(f"tensor {name} has shape {list(got)}, the architecture needs {list(shape)}")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the JSON metadata of a weights file without its tensors."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if path.is_dir():
        raise WeightsError(f"{path} is a folder, not a weights file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise WeightsError(f"{path} is empty or truncated ({size} bytes): not a safetensors file")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > _MAX_HEADER or 8 + header_len > size:
                raise WeightsError(f"{path} is not a safetensors file, or it is truncated (bad header length)")
            header = json.loads(fh.read(header_len).decode("utf-8"))
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsError(f"{path} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path} is not a safetensors file (bad header)")
    ends = []
    for key, value in header.items():
        if key == "__metadata__":
            continue
        offsets = value.get("data_offsets") if isinstance(value, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise WeightsError(f"{path} is not a valid safetensors file (bad entry for tensor {key!r})")
        ends.append(offsets[1])
    if ends and 8 + header_len + max(ends) > size:
        raise WeightsError(f"{path} is truncated: {size} bytes, the header describes {8 + header_len + max(ends)}")
    file_meta = header.get("__metadata__")
    raw_meta = file_meta.get(METADATA_KEY) if isinstance(file_meta, dict) else None
    if not isinstance(raw_meta, str):
        raise WeightsError(f"{path} is a safetensors file without neuralengine metadata")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError:
        raise WeightsError(f"{path} has corrupt neuralengine metadata (not JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise WeightsError(f"{path} is not a neuralengine weights file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path} has format version {meta.get('format_version')!r}; this engine reads {FORMAT_VERSION}")
    if weights_kind(meta) in TEXT_KINDS:
        return meta  # no board tokenizer, no action table
    if meta.get("actions_sha256") != ACTIONS_SHA256:
        raise WeightsError(f"{path} was made for a different action table (hash mismatch)")
    if meta.get("tokenizer_sha256") != tokenizer_sha256():
        raise WeightsError(f"{path} was made for a different tokenizer (hash mismatch)")
    return meta


def weights_kind(meta: Mapping[str, Any]) -> str:
    """The model kind a file's metadata names (``action_value`` when it names none)."""
    arch = meta.get("architecture")
    kind = arch.get("kind", ACTION_VALUE) if isinstance(arch, dict) else ACTION_VALUE
    return kind if isinstance(kind, str) else repr(kind)


def config_from_metadata(meta: Mapping[str, Any], where: str = "weights") -> ModelConfig:
    """The board model's architecture; a text model is refused with a message."""
    kind = weights_kind(meta)
    if kind in TEXT_KINDS:
        raise WeightsError(f"{where} is a {kind} text model; this needs a board model "
                           f"(action_value, state_value or behavioral_cloning)")
    try:
        cfg = ModelConfig.from_dict(meta.get("architecture"))
    except ConfigError as exc:
        raise WeightsError(f"{where}: bad architecture: {exc}") from None
    if meta.get("num_buckets") != cfg.num_buckets:
        raise WeightsError(f"{where}: num_buckets {meta.get('num_buckets')!r} disagrees with the architecture")
    return cfg


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(path: str | os.PathLike[str]) -> Weights:
    """Load and validate a weights file; every failure is a :class:`WeightsError`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    meta = read_metadata(path)
    cfg = config_from_metadata(meta, str(path))
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path} is corrupt: {exc}") from None
    check_tensors(cfg, tensors)
    for name, arr in tensors.items():
        if arr.dtype != np.float32:
            tensors[name] = arr.astype(np.float32)
        if not np.isfinite(tensors[name]).all():
            raise WeightsError(f"{path}: tensor {name} holds NaN or infinite values")
    return Weights(cfg, tensors, meta, path, file_sha256(path))


def any_config_from_metadata(meta: Mapping[str, Any], where: str = "weights") -> ModelConfig | TextModelConfig:
    """The architecture of a file of any kind (for reports that describe every model)."""
    if weights_kind(meta) in TEXT_KINDS:
        return text_config_from_metadata(meta, where)
    return config_from_metadata(meta, where)


# --------------------------------------------------------------------------
# Text models (pgn_lm)
# --------------------------------------------------------------------------


def text_expected_shapes(cfg: TextModelConfig) -> dict[str, tuple[int, ...]]:
    """Tensor names (nanoGPT's, without the tied ``lm_head``) and shapes (``[out, in]``) of a text model."""
    d = cfg.n_embd
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (cfg.vocab_size, d),
        "transformer.wpe.weight": (cfg.block_size, d),
    }
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        layers = {"ln_1": (d,), "attn.c_attn": (3 * d, d), "attn.c_proj": (d, d), "ln_2": (d,),
                  "mlp.c_fc": (4 * d, d), "mlp.c_proj": (d, 4 * d)}
        for name, shape in layers.items():
            shapes[p + name + ".weight"] = shape
            if cfg.bias:
                shapes[p + name + ".bias"] = (shape[0],)
    shapes["transformer.ln_f.weight"] = (d,)
    if cfg.bias:
        shapes["transformer.ln_f.bias"] = (d,)
    return shapes


def check_text_tensors(cfg: TextModelConfig, tensors: Mapping[str, Any]) -> None:
    check_shapes(text_expected_shapes(cfg), tensors)


def text_config_from_metadata(meta: Mapping[str, Any], where: str = "weights") -> TextModelConfig:
    try:
        return TextModelConfig.from_dict(meta.get("architecture"))  # type: ignore[arg-type]
    except ConfigError as exc:
        raise WeightsError(f"{where}: bad architecture: {exc}") from None


def save_text_weights(path: str | os.PathLike[str], cfg: TextModelConfig, tensors: Mapping[str, np.ndarray],
                      provenance: Mapping[str, Any] | None = None) -> Path:
    """Write a text model's ``tensors`` (float32 NumPy arrays) atomically; returns the path."""
    from safetensors.numpy import save_file

    check_text_tensors(cfg, tensors)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "architecture": cfg.to_dict(),
            "provenance": dict(provenance or {})}
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return path


@dataclass
class TextWeights:
    config: TextModelConfig
    tensors: dict[str, np.ndarray]
    metadata: dict[str, Any]
    path: Path | None = None
    sha256: str = ""


def load_text_weights(path: str | os.PathLike[str]) -> TextWeights:
    """Load and validate a text model's weights file; every failure is a :class:`WeightsError`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    meta = read_metadata(path)
    kind = weights_kind(meta)
    if kind not in TEXT_KINDS:
        raise WeightsError(f"{path} is a {kind} model, not a text model ({', '.join(TEXT_KINDS)})")
    cfg = text_config_from_metadata(meta, str(path))
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path} is corrupt: {exc}") from None
    check_text_tensors(cfg, tensors)
    for name, arr in tensors.items():
        if arr.dtype != np.float32:
            tensors[name] = arr.astype(np.float32)
        if not np.isfinite(tensors[name]).all():
            raise WeightsError(f"{path}: tensor {name} holds NaN or infinite values")
    return TextWeights(cfg, tensors, meta, path, file_sha256(path))
