"""Which player a weights file is played by.

Board models (action value, state value, behavioural cloning) are played by
:class:`neuralengine.engine.Engine`. Any other kind names its own player
here, by kind, as ``"module:Class"``; the class has the engine's public
interface and an ``open(path, backend, threads, warm_up=..., **settings)``
class method. :meth:`Engine.open` hands such files over, so the UCI server
and every command open them unchanged. The module is imported only when a
file of its kind is opened.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

#: Model kind (``architecture.kind`` in the weights metadata) -> its player, when it is not ``Engine``.
PLAYERS: dict[str, str] = {
    "pgn_lm": "neuralengine.textlm.player:TextLMEngine",
}


def player_for(meta: Mapping[str, Any]) -> Any | None:
    """The player class of a weights file's metadata, or ``None`` for a board model (``Engine``)."""
    from neuralengine.weights import weights_kind

    target = PLAYERS.get(weights_kind(meta))
    if target is None:
        return None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
