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
  with tensorstore (a core dependency; orbax, when installed, is the
  fallback reader);
* :mod:`neuralengine.deepmind.download` fetches a released model by name
  (``neuralengine download 270M``) and converts it into the cache, with
  :mod:`neuralengine.deepmind.interrupt` keeping Ctrl-C clean meanwhile;
* :func:`resolve_weights` is the one route from a ``--weights`` or
  ``WeightsFile`` value (a weights file, a checkpoint folder or a released
  model's name) to a weights file.

Importing this package is cheap: tensorstore (or orbax) loads only when a
checkpoint is actually read.
"""

from __future__ import annotations

from neuralengine.deepmind.cache import resolve_weights
from neuralengine.deepmind.errors import DeepMindError

__all__ = ["DeepMindError", "resolve_weights"]
