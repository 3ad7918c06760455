"""`python -m pymon` and the `pymon` console script: the launcher."""

import sys

from pymon.launcher.main import main

if __name__ == "__main__":
    sys.exit(main())
