"""`python -m vit_flowers`: the `vit-flowers` command, for when the script is not on PATH."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
