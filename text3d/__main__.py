"""``python -m text3d`` (used by ``accelerate launch -m text3d batch ...``)."""

import sys

from text3d.cli import main

if __name__ == "__main__":
    sys.exit(main())
