"""`python -m embedpipe.cli`: the `embedpipe` command."""

import sys

from embedpipe.cli import main

if __name__ == "__main__":
    sys.exit(main())
