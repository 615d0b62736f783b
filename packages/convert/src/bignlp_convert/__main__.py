"""``python -m bignlp_convert`` is ``bignlp-convert``."""

from .cli import main

if __name__ == "__main__":
    main()
