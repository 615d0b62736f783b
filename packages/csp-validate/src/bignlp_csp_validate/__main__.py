"""``python -m bignlp_csp_validate`` = the ``bignlp-csp-validate`` console script."""

from .cli import main

if __name__ == "__main__":  # guard: the local launcher's worker processes re-import the main module
    main()
