"""`python -m client ...`: the same command line as the `mnist` console script."""

import sys

from client.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m client"))
