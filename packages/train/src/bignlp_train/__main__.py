"""``python -m bignlp_train`` is ``bignlp-train``."""

from .cli import main

if __name__ == "__main__":
    main()
