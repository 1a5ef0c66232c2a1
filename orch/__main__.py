"""Entry point shared by ``python -m orch``, the zipapp and the console script."""

import sys

from orch.cli import main

if __name__ == "__main__":
    sys.exit(main())
