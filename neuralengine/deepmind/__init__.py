"""DeepMind's released searchless-chess checkpoints.

DeepMind published their trained models as orbax checkpoints
(``<name>/<step>/params`` and ``params_ema``): action-value models with
Haiku parameter names, and 9M state-value and behavioural-cloning models
with Flax-style names. This package maps both onto the weights format of
the engine:

* :func:`neuralengine.deepmind.mapping.map_tree` turns a parameter tree into
  a :class:`~neuralengine.config.ModelConfig` and our tensors, checking
  every name and shape;
* :mod:`neuralengine.deepmind.checkpoint` finds and reads the orbax folder
  (needs the ``deepmind`` extra: ``pip install 'neuralengine[deepmind]'``);
* :func:`resolve_weights` lets the engine take a checkpoint folder where it
  expects a weights file, converting it once into a cache.

Importing this package is cheap: orbax and JAX load only when a checkpoint
is actually read.
"""

from __future__ import annotations

from neuralengine.weights import WeightsError


class DeepMindError(WeightsError):
    """A DeepMind checkpoint that cannot be read or mapped; the message says why."""


from neuralengine.deepmind.cache import resolve_weights  # noqa: E402  (needs DeepMindError)

__all__ = ["DeepMindError", "resolve_weights"]
