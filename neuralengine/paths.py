"""Where things live: the shipped weights, the cache, DeepMind's and Chess-GPT's models, and Stockfish."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: File name of the shipped model inside ``weights/``.
DEFAULT_WEIGHTS_NAME = "neuralengine.safetensors"

#: Folder of the installed package that holds ``weights/`` (see pyproject.toml).
PACKAGE_WEIGHTS_DIR = "weights_data"


def _package_weights() -> Path | None:
    """The shipped weights installed as package data, if this is an installed copy."""
    from importlib.resources import files

    try:
        resource = files("neuralengine") / PACKAGE_WEIGHTS_DIR / DEFAULT_WEIGHTS_NAME
    except (ModuleNotFoundError, TypeError, OSError):
        return None
    # The engine needs a real file (ONNX Runtime opens the graph beside it by
    # name), which every install from a wheel provides.
    path = Path(str(resource))
    return path if path.is_file() else None


def default_weights() -> Path:
    """The weights the engine loads when none are named.

    In order: ``$NEURALENGINE_WEIGHTS``; the package data of an installed
    copy (``neuralengine/weights_data/``, found with :mod:`importlib.resources`
    so that ``pip install --user`` and other schemes work); ``weights/`` of a
    source checkout or an editable install.
    """
    env = os.environ.get("NEURALENGINE_WEIGHTS")
    if env:
        return Path(env)
    installed = _package_weights()
    if installed is not None:
        return installed
    return Path(__file__).resolve().parent.parent / "weights" / DEFAULT_WEIGHTS_NAME


#: Places Stockfish is installed by package managers, tried after ``PATH``
#: (Debian/Ubuntu's ``apt-get install stockfish`` puts it in ``/usr/games``).
STOCKFISH_CANDIDATES = ("/usr/games/stockfish", "/usr/local/bin/stockfish", "/opt/homebrew/bin/stockfish")


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_stockfish(explicit: str | None = None) -> str | None:
    """The Stockfish executable, or None: the one place every command looks for it.

    ``explicit`` (a ``--stockfish`` value) is a path, used if it is an
    executable file, or a name looked up on ``PATH``. Without it:
    ``stockfish`` on ``PATH``, else a usual install place
    (:data:`STOCKFISH_CANDIDATES`).
    """
    if explicit:
        if os.sep in explicit or (os.altsep and os.altsep in explicit):
            return explicit if _executable(explicit) else None
        return shutil.which(explicit)
    found = shutil.which("stockfish")
    if found:
        return found
    for candidate in STOCKFISH_CANDIDATES:
        if _executable(candidate):
            return candidate
    return None


def cache_dir() -> Path:
    """The engine's cache folder (ONNX graphs, DeepMind downloads and conversions).

    ``$NEURALENGINE_CACHE``, else ``$XDG_CACHE_HOME/neuralengine``, else
    ``~/.cache/neuralengine``.
    """
    base = os.environ.get("NEURALENGINE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "neuralengine")
    return Path(base)


#: DeepMind's released models, by the names ``neuralengine download`` and
#: ``WeightsFile`` accept, with their number of parameters (rounded for the
#: two 9M models whose counts DeepMind did not publish). The download sizes
#: its unpacking limit by them.
DEEPMIND_MODELS: dict[str, int] = {
    "9M": 8_954_240,
    "136M": 136_479_872,
    "270M": 270_730_368,
    "9M_state_value": 9_000_000,
    "9M_behavioral_cloning": 9_500_000,
}


def deepmind_model_name(value: str | os.PathLike[str]) -> str | None:
    """The released model ``value`` names (``270M``, any case), or None.

    A file or folder of that name in the current folder wins over the model.
    """
    text = os.fspath(value)
    for name in DEEPMIND_MODELS:
        if text.lower() == name.lower():
            return None if os.path.exists(text) else name
    return None


def downloaded_weights(name: str) -> Path:
    """The converted weights of a released DeepMind model in the cache
    (written by ``neuralengine download NAME``)."""
    return cache_dir() / "deepmind" / "models" / f"{name}.safetensors"


#: Chess-GPT's published nanoGPT checkpoints (the ``pgn_lm`` kind), by the
#: names ``neuralengine download`` and ``WeightsFile`` accept: the Hugging Face
#: repository and the file in it.
CHESS_GPT_MODELS: dict[str, tuple[str, str]] = {
    "chessgpt-8": ("adamkarvonen/chess_llms", "lichess_8layers_ckpt_no_optimizer.pt"),
    "chessgpt-16": ("adamkarvonen/chess_llms", "lichess_16layers_ckpt_no_optimizer.pt"),
    "chessgpt-stockfish-16": ("adamkarvonen/chess_llms", "stockfish_16layers_ckpt_no_optimizer.pt"),
}


def text_model_name(value: str | os.PathLike[str]) -> str | None:
    """The Chess-GPT model ``value`` names (any case), or None; a file or folder of that name wins."""
    text = os.fspath(value)
    for name in CHESS_GPT_MODELS:
        if text.lower() == name.lower():
            return None if os.path.exists(text) else name
    return None


def downloaded_text_weights(name: str) -> Path:
    """The converted weights of a Chess-GPT model in the cache (written by ``neuralengine download NAME``)."""
    return cache_dir() / "chessgpt" / "models" / f"{name}.safetensors"
