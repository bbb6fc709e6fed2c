"""``neuralengine download chessgpt-8``: fetch and convert one of Chess-GPT's published checkpoints.

The names are :data:`neuralengine.paths.CHESS_GPT_MODELS`. The file comes
from ``BASE/<file>``: ``BASE`` from ``--url``, ``$NEURALENGINE_CHESSGPT_URL``
or the Hugging Face repository
(``https://huggingface.co/<repository>/resolve/main``). It is downloaded as
DeepMind's archives are (:func:`neuralengine.deepmind.download.fetch`): into
``<cache>/chessgpt/downloads/`` through a ``.part`` file that the next run
resumes with a range request, with a progress bar, one download at a time
per cache. It is then converted (:func:`neuralengine.textlm.convert.convert_nanogpt`,
with Chess-GPT's 32-character vocabulary) into
``<cache>/chessgpt/models/NAME.safetensors``, which ``WeightsFile`` and
``--weights`` then accept by NAME; the checkpoint is deleted afterwards
unless ``--keep-archive``. A checkpoint that cannot be read is removed, so
that the next run downloads it again.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Callable

from neuralengine.atomic import folder_lock
from neuralengine.deepmind.download import DownloadError, _disk_error, fetch, warn_if_insecure
from neuralengine.paths import CHESS_GPT_MODELS, cache_dir, downloaded_text_weights
from neuralengine.weights import WeightsError

#: Environment variable overriding where the checkpoints are (a mirror, or a test server).
URL_ENV = "NEURALENGINE_CHESSGPT_URL"

Reporter = Callable[[str], None]


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def model_name(text: str) -> str:
    """The Chess-GPT model ``text`` names (any case), or a :class:`DownloadError` listing them."""
    for name in CHESS_GPT_MODELS:
        if text.lower() == name.lower():
            return name
    raise DownloadError(f"unknown model {text!r}; Chess-GPT's are {', '.join(CHESS_GPT_MODELS)}")


def default_base(name: str) -> str:
    repository, _ = CHESS_GPT_MODELS[name]
    return f"https://huggingface.co/{repository}/resolve/main"


def checkpoint_url(name: str, base: str | None = None) -> str:
    base = base or os.environ.get(URL_ENV) or default_base(name)
    return base.rstrip("/") + "/" + urllib.parse.quote(CHESS_GPT_MODELS[name][1])


def downloads_dir() -> Path:
    return cache_dir() / "chessgpt" / "downloads"


def download(name: str, *, base_url: str | None = None, force: bool = False, keep_archive: bool = False,
             progress: bool = True, report: Reporter = _stderr) -> Path:
    """Download and convert one Chess-GPT checkpoint; returns its weights file."""
    name = model_name(name)
    folder = downloads_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, folder, "prepare") from None
    with folder_lock(folder, lambda: report("another neuralengine download is running; waiting for it to finish")):
        return _download(name, base_url=base_url, force=force, keep_archive=keep_archive, progress=progress,
                         report=report)


def _download(name: str, *, base_url: str | None, force: bool, keep_archive: bool, progress: bool,
              report: Reporter) -> Path:
    from neuralengine.weights import read_metadata

    target = downloaded_text_weights(name)
    if target.is_file() and not force:
        try:
            read_metadata(target)
        except WeightsError:
            pass  # damaged: fetch and convert again
        else:
            report(f"{name} is already downloaded and converted (use --force to fetch it again)")
            return target
    try:
        import torch  # noqa: F401
    except ImportError:
        raise DownloadError("converting Chess-GPT's checkpoints needs PyTorch: pip install 'neuralengine[torch]'") \
            from None
    from neuralengine.textlm.convert import ConvertError, convert_nanogpt

    url = checkpoint_url(name, base_url)
    checkpoint = downloads_dir() / CHESS_GPT_MODELS[name][1]
    if force:
        checkpoint.unlink(missing_ok=True)
    if not checkpoint.is_file():
        warn_if_insecure(url, report)
        report(f"downloading {url}")
        fetch(url, checkpoint, progress=progress, label=checkpoint.name, report=report)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_nanogpt(checkpoint, target, source=f"Chess-GPT {name} ({CHESS_GPT_MODELS[name][0]})",
                        report=report)
    except ConvertError as exc:
        checkpoint.unlink(missing_ok=True)
        raise DownloadError(f"{checkpoint.name} cannot be converted ({exc}); the file was removed: run the same "
                            "command to download it again") from None
    except OSError as exc:
        raise _disk_error(exc, target, "convert") from None
    if not keep_archive:
        checkpoint.unlink(missing_ok=True)
    return target
