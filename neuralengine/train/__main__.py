"""``python -m neuralengine.train`` and ``torchrun --nproc-per-node N -m neuralengine.train``."""

import sys

from neuralengine.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
