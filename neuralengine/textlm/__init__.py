"""Text models that read the game as a move transcript (the ``pgn_lm`` kind).

* :mod:`~neuralengine.textlm.transcript`: a game as Chess-GPT's transcript
  (``;1.e4 e5 2.Nf3``), the text each legal move adds, the vocabulary;
* :mod:`~neuralengine.textlm.model`: nanoGPT's GPT on NumPy, with a prefix
  KV cache, logits and the residual stream of every layer;
* :mod:`~neuralengine.textlm.player`: :class:`TextLMEngine`, the player with
  the engine's interface (:meth:`neuralengine.engine.Engine.open` opens a
  ``pgn_lm`` file as one);
* :mod:`~neuralengine.textlm.convert`: nanoGPT / Chess-GPT checkpoints into
  the weights format.

The weights format of these models is in :mod:`neuralengine.weights`
(:func:`~neuralengine.weights.save_text_weights`,
:func:`~neuralengine.weights.load_text_weights`). Importing this package
imports python-chess only.
"""

from neuralengine.textlm.transcript import (
    CHESS_GPT_VOCABULARY,
    SEPARATOR,
    START,
    TranscriptError,
    Vocabulary,
    VocabularyError,
    candidate_texts,
    game_moves,
    move_text,
    prefix,
    transcript,
)

__all__ = [
    "CHESS_GPT_VOCABULARY",
    "SEPARATOR",
    "START",
    "TranscriptError",
    "Vocabulary",
    "VocabularyError",
    "candidate_texts",
    "game_moves",
    "move_text",
    "prefix",
    "transcript",
]
