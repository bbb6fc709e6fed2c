"""Where the shipped weights live."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

#: File name of the shipped model inside ``weights/``.
DEFAULT_WEIGHTS_NAME = "neuralengine.safetensors"


def default_weights() -> Path:
    """The weights the engine loads when none are named.

    In order: ``$NEURALENGINE_WEIGHTS``; ``weights/`` of a source checkout;
    ``share/neuralengine/weights`` of an installed package.
    """
    env = os.environ.get("NEURALENGINE_WEIGHTS")
    if env:
        return Path(env)
    candidates = [
        Path(__file__).resolve().parent.parent / "weights" / DEFAULT_WEIGHTS_NAME,
        Path(sys.prefix) / "share" / "neuralengine" / "weights" / DEFAULT_WEIGHTS_NAME,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]


#: Places Stockfish is installed by package managers, tried after ``PATH``
#: (Debian/Ubuntu's ``apt-get install stockfish`` puts it in ``/usr/games``).
STOCKFISH_CANDIDATES = ("/usr/games/stockfish", "/usr/local/bin/stockfish", "/opt/homebrew/bin/stockfish")


def find_stockfish() -> str | None:
    """The Stockfish executable: ``stockfish`` on ``PATH``, else a usual install place."""
    found = shutil.which("stockfish")
    if found:
        return found
    for candidate in STOCKFISH_CANDIDATES:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None
