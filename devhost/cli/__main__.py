"""`python -m devhost.cli` (devhost/cli/main.py)."""

import sys

from devhost.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
