"""`python -m devhost.demo` (devhost/demo/main.py)."""

from devhost.demo.main import main

if __name__ == "__main__":
    raise SystemExit(main())
