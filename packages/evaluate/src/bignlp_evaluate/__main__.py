"""``python -m bignlp_evaluate`` is ``bignlp-evaluate``."""

from .cli import main

if __name__ == "__main__":
    main()
