"""``python -m bignlp_dataprep`` = the ``bignlp-dataprep`` console script."""

from .cli import main

if __name__ == "__main__":  # guard: spawned worker processes re-import the main module
    main()
