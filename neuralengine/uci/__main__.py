"""``python -m neuralengine.uci``: the same as ``neuralengine uci``."""

import sys

from neuralengine.uci.command import main

sys.exit(main(sys.argv[1:]))
