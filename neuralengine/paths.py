"""Where the shipped weights live."""

from __future__ import annotations

import os
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
