"""The one route from a ``--weights`` or ``WeightsFile`` value to a weights file.

:func:`resolve_weights` takes a weights file (returned as it is), the name of
a released DeepMind or Chess-GPT model (its conversion in the cache, written
by ``neuralengine download``), a DeepMind checkpoint folder or a nanoGPT
checkpoint file (``ckpt.pt``, Chess-GPT's ``.pt`` files). A folder is
converted once into ``<cache>/deepmind/<fingerprint>/`` (the cache of
:func:`neuralengine.paths.cache_dir`); later calls reuse it until the
checkpoint's files or the converter change. The engine, ``analyse``,
``probe``, ``bench``, ``match`` and ``puzzles`` all go through it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Callable

from neuralengine.atomic import file_lock, lock_path
from neuralengine.deepmind.errors import DeepMindError
from neuralengine.weights import WeightsError, read_metadata

Reporter = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"neuralengine: {message}", file=sys.stderr, flush=True)


def _fingerprint(item: Path, parts: list[str]) -> str:
    """Hash of the item's path, its top-level files (name, size, mtime) and ``parts``."""
    digest = hashlib.sha256()
    digest.update(str(item.resolve()).encode())
    try:
        entries = sorted(os.scandir(item), key=lambda e: e.name)
    except OSError as exc:
        raise DeepMindError(f"cannot read {item}: {exc.strerror or exc}") from None
    for entry in entries:
        if entry.is_file():
            stat = entry.stat()
            digest.update(f"|{entry.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for part in parts:
        digest.update(f"|{part}".encode())
    return digest.hexdigest()[:24]


def cached_path(path: str | os.PathLike[str], *, step: int | None = None, ema: bool = False,
                heads: int | None = None) -> Path:
    """Where the conversion of the checkpoint at ``path`` lives in the cache."""
    from neuralengine.deepmind.checkpoint import locate
    from neuralengine.paths import cache_dir
    from neuralengine.deepmind.convert import CONVERTER_VERSION, output_name

    location = locate(path, step, ema)
    key = _fingerprint(location.item, [str(location.step), str(ema), str(heads), str(CONVERTER_VERSION)])
    return cache_dir() / "deepmind" / key / output_name(location)


def resolve_weights(path: str | os.PathLike[str], *, step: int | None = None, ema: bool = False,
                    heads: int | None = None, report: Reporter | None = None) -> Path:
    """A weights file for ``path``.

    A file is returned unchanged. The name of a released DeepMind model
    (``270M``; see :data:`neuralengine.paths.DEEPMIND_MODELS`) gives its
    conversion in the cache, written by ``neuralengine download``. A DeepMind
    checkpoint folder is converted into the cache the first time (with its
    ONNX graph) and the cached file returned; ``report`` (default: stderr) is
    told which file is used and when a conversion runs. Errors are
    :class:`~neuralengine.weights.WeightsError`.
    """
    from neuralengine.paths import deepmind_model_name, downloaded_text_weights, downloaded_weights, text_model_name

    text_name = text_model_name(path)
    if text_name is not None:
        target = downloaded_text_weights(text_name)
        if not target.is_file():
            raise WeightsError(f"Chess-GPT's {text_name} model is not downloaded yet: run 'neuralengine download "
                               f"{text_name}' (it converts into {target})")
        return target
    name = deepmind_model_name(path)
    if name is not None:
        target = downloaded_weights(name)
        if not target.is_file():
            raise DeepMindError(f"DeepMind's {name} model is not downloaded yet: run 'neuralengine download {name}' "
                                f"(it converts into {target})")
        return target
    path = Path(path)
    if path.is_file() and path.suffix.lower() in NANOGPT_SUFFIXES:
        return _nanogpt_conversion(path, report or _stderr)
    if not path.is_dir():
        return path
    report = report or _stderr
    target = cached_path(path, step=step, ema=ema, heads=heads)
    if _usable(target):
        report(f"DeepMind checkpoint {path}: using the conversion cached at {target}")
        return target
    from neuralengine.deepmind.checkpoint import locate
    from neuralengine.deepmind.convert import convert_location

    # Engines started together convert once: the others wait for the lock,
    # then find the finished conversion.
    with file_lock(lock_path(target)):
        if _usable(target):
            report(f"DeepMind checkpoint {path}: using the conversion cached at {target}")
            return target
        report(f"DeepMind checkpoint {path}: converting it once into {target}")
        convert_location(locate(path, step, ema), target, heads=heads, report=report, progress=False)
    return target


#: File names of PyTorch checkpoints, taken as nanoGPT's (``ckpt.pt``, Chess-GPT's ``*_ckpt_no_optimizer.pt``).
NANOGPT_SUFFIXES = (".pt", ".pth")


def _nanogpt_conversion(path: Path, report: Reporter) -> Path:
    """A nanoGPT checkpoint converted once into ``<cache>/nanogpt/<fingerprint>/`` (with the ``meta.pkl``
    beside it, if any); later calls reuse the conversion until the files or the converter change."""
    from neuralengine.paths import cache_dir
    from neuralengine.textlm.convert import CONVERTER_VERSION, convert_nanogpt

    meta = path.with_name("meta.pkl")
    digest = hashlib.sha256(str(path.resolve()).encode())
    for item in (path, meta):
        if item.is_file():
            stat = item.stat()
            digest.update(f"|{item.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(f"|{CONVERTER_VERSION}".encode())
    target = cache_dir() / "nanogpt" / digest.hexdigest()[:24] / (path.stem + ".safetensors")
    if _usable(target):
        return target
    with file_lock(lock_path(target)):
        if not _usable(target):
            report(f"nanoGPT checkpoint {path}: converting it once into {target}")
            convert_nanogpt(path, target, meta=meta if meta.is_file() else None, report=report)
    return target


def _usable(target: Path) -> bool:
    """Whether a cached conversion exists and is whole (a damaged one is converted again)."""
    if not target.is_file():
        return False
    try:
        read_metadata(target)
    except WeightsError:
        return False
    return True
