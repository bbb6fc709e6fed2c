"""``neuralengine convert nanogpt``: a nanoGPT checkpoint (Chess-GPT's form) → a ``pgn_lm`` weights file.

Usage::

    neuralengine convert nanogpt ckpt.pt [--meta meta.pkl] [--out DIR_OR_FILE]

The checkpoint is what nanoGPT's ``train.py`` saves: a dict with
``model_args`` (``n_layer``, ``n_head``, ``n_embd``, ``block_size``, ``bias``,
``vocab_size``) and ``model``, the state dict, whose keys may carry the
``_orig_mod.`` prefix ``torch.compile`` adds. It is read with
``torch.load(weights_only=True)``, which builds tensors and plain containers
only. ``meta.pkl`` (``stoi`` and ``itos``) is read by a restricted
unpickler that builds dicts, strings and integers and refuses anything else
(:func:`read_meta`); without it the vocabulary is Chess-GPT's 32 characters.

The output keeps nanoGPT's tensor names, drops ``lm_head.weight`` (tied to
the token embedding; the converter checks that it is) and the attention-mask
buffers that older PyTorch versions save, and records the vocabulary in the
metadata (:func:`neuralengine.weights.save_text_weights`). PyTorch is needed
here only.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from neuralengine.config import ConfigError, TextModelConfig
from neuralengine.textlm.transcript import CHESS_GPT_VOCABULARY
from neuralengine.weights import WeightsError, save_text_weights, text_expected_shapes

#: Bumped whenever the conversion changes.
CONVERTER_VERSION = 1

#: The prefix ``torch.compile`` gives every parameter name.
COMPILED_PREFIX = "_orig_mod."

#: The largest ``meta.pkl`` read (a character vocabulary takes a few hundred bytes).
MAX_META_BYTES = 1 << 20

Reporter = Callable[[str], None]


class ConvertError(WeightsError):
    """A checkpoint or ``meta.pkl`` that cannot be converted; the message says why."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# meta.pkl
# --------------------------------------------------------------------------


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what needs no class: refuses every global (``find_class``) and persistent id."""

    def find_class(self, module: str, name: str) -> Any:
        raise ConvertError(f"it asks for the object {module}.{name}; only dicts, strings and integers are read")

    def persistent_load(self, pid: Any) -> Any:
        raise ConvertError("it refers to an external object; only dicts, strings and integers are read")


def _check_plain(value: Any, depth: int = 0) -> None:
    """Raise unless ``value`` is made of dicts, strings and integers only."""
    if depth > 8:
        raise ConvertError("it nests too deeply")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, depth + 1)
            _check_plain(item, depth + 1)
    elif not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
        raise ConvertError(f"it holds a {type(value).__name__}; only dicts, strings and integers are read")


def read_meta(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The vocabulary (characters by index) of a nanoGPT ``meta.pkl``, read without running any of its code."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_META_BYTES:
            raise ConvertError(f"{path}: {size:,} bytes is too large for a character vocabulary")
        data = path.read_bytes()
    except OSError as exc:
        raise ConvertError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        meta = _PlainUnpickler(io.BytesIO(data)).load()
        _check_plain(meta)
    except ConvertError as exc:
        raise ConvertError(f"{path} refused: {exc}") from None
    except Exception as exc:  # any malformed pickle: one line, no traceback
        raise ConvertError(f"{path} is not a readable meta.pkl ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("itos"), dict):
        raise ConvertError(f"{path} has no itos table (a dict from token index to character)")
    itos: dict[Any, Any] = meta["itos"]
    if sorted(itos) != list(range(len(itos))) or not all(isinstance(c, str) and len(c) == 1 for c in itos.values()):
        raise ConvertError(f"{path}: itos must map 0..N-1 to single characters")
    chars = tuple(itos[i] for i in range(len(itos)))
    stoi = meta.get("stoi")
    if stoi is not None and (not isinstance(stoi, dict) or any(stoi.get(c) != i for i, c in enumerate(chars))
                             or len(stoi) != len(chars)):
        raise ConvertError(f"{path}: stoi and itos disagree")
    return chars


# --------------------------------------------------------------------------
# ckpt.pt
# --------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``model_args`` and the state dict (``_orig_mod.`` removed, float32 NumPy arrays) of a nanoGPT checkpoint."""
    try:
        import torch
    except ImportError:
        raise ConvertError("reading nanoGPT checkpoints needs PyTorch: pip install 'neuralengine[torch]'") from None
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(f"{path} holds objects other than tensors and plain values, so it is not read "
                           f"({first})") from None
    except Exception as exc:  # a truncated or foreign file fails in many ways inside torch.load: one line each
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(f"{path} is not a readable PyTorch checkpoint ({first})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "model_args" not in checkpoint:
        raise ConvertError(f"{path} is not a nanoGPT checkpoint (a dict with 'model' and 'model_args')")
    args, state = checkpoint["model_args"], checkpoint["model"]
    if not isinstance(args, dict) or not isinstance(state, dict):
        raise ConvertError(f"{path}: 'model_args' and 'model' must be dicts")
    tensors: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ConvertError(f"{path}: the state dict holds {key!r}, which is not a named tensor")
        name = key[len(COMPILED_PREFIX):] if key.startswith(COMPILED_PREFIX) else key
        if name in tensors:
            raise ConvertError(f"{path}: {name} appears twice (with and without {COMPILED_PREFIX})")
        tensors[name] = value.detach().to(torch.float32).numpy().copy()
    return args, tensors


def text_config(args: Mapping[str, Any], vocabulary: tuple[str, ...]) -> TextModelConfig:
    """The architecture from nanoGPT's ``model_args`` and the vocabulary."""
    missing = [k for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size") if k not in args]
    if missing:
        raise ConvertError(f"model_args lacks {', '.join(missing)}")
    if args["vocab_size"] != len(vocabulary):
        raise ConvertError(f"the model has {args['vocab_size']} tokens but the vocabulary {len(vocabulary)} "
                           "characters (give the model's meta.pkl with --meta)")
    try:
        return TextModelConfig(n_layer=args["n_layer"], n_head=args["n_head"], n_embd=args["n_embd"],
                               block_size=args["block_size"], vocabulary=vocabulary,
                               bias=bool(args.get("bias", True)))
    except ConfigError as exc:
        raise ConvertError(f"model_args: {exc}") from None


def map_state(cfg: TextModelConfig, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """nanoGPT's state dict → the tensors of the weights file (checked against the architecture)."""
    tensors = dict(state)
    head = tensors.pop("lm_head.weight", None)
    wte = tensors.get("transformer.wte.weight")
    if head is not None and wte is not None and (head.shape != wte.shape or not np.array_equal(head, wte)):
        raise ConvertError("lm_head.weight differs from transformer.wte.weight: only models with the output "
                           "head tied to the token embedding (nanoGPT's) are supported")
    for i in range(cfg.n_layer):
        mask = tensors.get(f"transformer.h.{i}.attn.bias")
        if mask is not None and mask.ndim == 4:  # the causal mask buffer of PyTorch < 2 (not a parameter)
            del tensors[f"transformer.h.{i}.attn.bias"]
    expected = text_expected_shapes(cfg)
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}")
        if unknown:
            parts.append(f"unexpected {', '.join(unknown[:4])}{' …' if len(unknown) > 4 else ''}")
        raise ConvertError(f"the state dict does not match model_args (bias={cfg.bias}): {'; '.join(parts)}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ConvertError(f"{name} has shape {list(tensors[name].shape)}, model_args need {list(shape)}")
        if not np.isfinite(tensors[name]).all():
            raise ConvertError(f"{name} holds NaN or infinite values")
    return tensors


def convert_nanogpt(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
                    meta: str | os.PathLike[str] | None = None, source: str = "nanoGPT checkpoint",
                    report: Reporter = _stderr) -> Path:
    """Convert ``checkpoint`` (+ ``meta``) into the weights file ``out``; returns its path."""
    vocabulary = read_meta(meta) if meta is not None else CHESS_GPT_VOCABULARY
    args, state = read_checkpoint(checkpoint)
    cfg = text_config(args, vocabulary)
    tensors = map_state(cfg, state)
    provenance = {"source": source, "checkpoint": Path(checkpoint).name,
                  "vocabulary_from": Path(meta).name if meta is not None else "Chess-GPT's 32 characters (default)",
                  "converter_version": CONVERTER_VERSION}
    target = save_text_weights(out, cfg, tensors, provenance=provenance)
    report(f"{checkpoint} → {target}: pgn_lm, {cfg.n_layer} layers × {cfg.n_embd}, {cfg.n_head} heads, "
           f"{cfg.num_parameters():,} parameters, context {cfg.block_size}, {cfg.vocab_size} characters")
    return target


def output_path(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """``out`` when it names a ``.safetensors`` file, else ``out/<checkpoint stem>.safetensors``."""
    out = Path(out)
    if out.suffix == ".safetensors":
        return out
    return out / (Path(checkpoint).stem + ".safetensors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="nanoGPT's ckpt.pt (a dict with model and model_args)")
    parser.add_argument("--meta", metavar="META_PKL",
                        help="the model's meta.pkl (stoi/itos; default: Chess-GPT's 32-character vocabulary)")
    parser.add_argument("--out", default=".", metavar="DIR_OR_FILE",
                        help="output folder, or a .safetensors file name (default: the current folder)")


def run(args: argparse.Namespace) -> int:
    try:
        path = convert_nanogpt(args.checkpoint, output_path(args.checkpoint, args.out), meta=args.meta)
    except (WeightsError, OSError) as exc:
        print(f"neuralengine convert: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
