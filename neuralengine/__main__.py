"""``python -m neuralengine``: the same as the ``neuralengine`` command (see :mod:`neuralengine.cli`)."""

import sys

from neuralengine.cli import main

sys.exit(main())
