"""`python -m pymon` and the `pymon` console script."""

import sys

from pymon.launch import main

if __name__ == "__main__":
    sys.exit(main())
