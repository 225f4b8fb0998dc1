"""`python -m devhost`: the local Functions host (devhost/host/main.py)."""

import sys

from devhost.host.main import main

if __name__ == "__main__":
    sys.exit(main())
