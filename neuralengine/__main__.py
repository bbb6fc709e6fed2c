import sys

from neuralengine.cli import main

sys.exit(main())
