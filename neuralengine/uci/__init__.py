"""The UCI protocol on stdin/stdout.

``neuralengine`` (or ``neuralengine uci``) runs it; chess GUIs,
cutechess-cli, fastchess and lichess-bot start it directly.

Design:

* ``uci`` is answered from the standard library alone. NumPy, python-chess,
  ONNX Runtime and the weights are imported and loaded afterwards on a
  background thread (:mod:`~neuralengine.uci.loader`); ``isready`` waits for
  them, and gives up on ``quit``.
* A reader thread stamps each input line with its arrival time, and the
  main thread handles the lines in order (:mod:`~neuralengine.uci.server`):
  a ``go`` counts its time from its arrival.
* Searches run on a worker thread (:mod:`~neuralengine.uci.job`), so
  ``stop``, ``ponderhit``, ``isready`` and ``quit`` are answered while the
  engine thinks. One search runs at a time, and each ``go`` gets exactly one
  ``bestmove``. One object owns a search's deadline.
* A search waits for the weights only as long as its time allows, and plays
  a move chosen without the network otherwise (:mod:`~neuralengine.uci.fallback`);
  new weights replace the loaded ones only once they have loaded.
* Every input line is handled on its own: a bad line gets an
  ``info string`` that explains the problem, and the engine keeps its last
  valid state. Input is read as bytes (invalid UTF-8 is replaced, overlong
  lines are skipped), stdout carries protocol lines only and is flushed after
  each one (:mod:`~neuralengine.uci.output`), and debug logs go to stderr.

The modules: ``options`` (the option table, ``setoption``), ``output`` (the
writer, ``info`` lines), ``loader``, ``go`` (``go`` and its time limits),
``position``, ``fallback``, ``job``, ``server`` (the command loop) and
``command`` (the process). Nothing here imports more than the standard
library until a command needs it.
"""

from neuralengine.uci.command import main
from neuralengine.uci.fallback import NO_NETWORK
from neuralengine.uci.options import BACKEND_CHOICES, Option, make_options
from neuralengine.uci.output import Output
from neuralengine.uci.server import UciServer, serve

__all__ = ["BACKEND_CHOICES", "NO_NETWORK", "Option", "Output", "UciServer", "main", "make_options", "serve"]
