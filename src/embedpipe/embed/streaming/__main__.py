"""`python -m embedpipe.embed.streaming`: the streaming job's command line (`embedpipe.embed.streaming.cli`)."""

import sys

from embedpipe.embed.streaming.cli import main

if __name__ == "__main__":
    sys.exit(main())
