"""The error of the DeepMind checkpoint tools (its own module, so that every
module of the package can import it without importing the package)."""

from __future__ import annotations

from neuralengine.weights import WeightsError


class DeepMindError(WeightsError):
    """A DeepMind checkpoint that cannot be read or mapped; the message says why."""
