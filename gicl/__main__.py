"""`python -m gicl` is the `gicl` console script."""

from gicl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
