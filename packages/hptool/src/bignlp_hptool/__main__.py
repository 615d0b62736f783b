"""``python -m bignlp_hptool`` = the ``bignlp-hptool`` console script."""

from .cli import main

if __name__ == "__main__":
    main()
