"""Which player a weights file is played by.

Board models (action value, state value, behavioural cloning) are played by
:class:`neuralengine.engine.Engine`. Any other kind names its own player
here, by kind, as ``"module:Class"``; the class has the engine's public
interface and an ``open(path, backend, threads, warm_up=..., **settings)``
class method. :meth:`Engine.open` hands such files over, so the UCI server
and every command open them unchanged. The module is imported only when a
file of its kind is opened.

A weights spec that is not a file is named by its scheme: an ``http://`` or
``https://`` URL is a language model behind an OpenAI-compatible endpoint
(:data:`URL_PLAYERS`).
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

#: Model kind (``architecture.kind`` in the weights metadata) -> its player, when it is not ``Engine``.
PLAYERS: dict[str, str] = {
    "pgn_lm": "neuralengine.textlm.player:TextLMEngine",
}


#: URL scheme -> the player of a weights spec that is such a URL.
URL_PLAYERS: dict[str, str] = {
    "http": "neuralengine.textlm.http:HttpLlmPlayer",
    "https": "neuralengine.textlm.http:HttpLlmPlayer",
}


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def player_for_spec(spec: object) -> Any | None:
    """The player class of a weights spec that is a URL (``http://host:8000/v1``), or ``None`` for a file."""
    text = str(spec).strip()
    scheme, sep, _ = text.partition("://")
    target = URL_PLAYERS.get(scheme.lower()) if sep else None
    return None if target is None else _load(target)


def player_for(meta: Mapping[str, Any]) -> Any | None:
    """The player class of a weights file's metadata, or ``None`` for a board model (``Engine``)."""
    from neuralengine.weights import weights_kind

    target = PLAYERS.get(weights_kind(meta))
    return None if target is None else _load(target)
