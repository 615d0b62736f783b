"""Repository-wide pytest settings (package and end-to-end test directories have their own conftest files).

``slow`` marks long end-to-end cases: `make test` (and CI) leaves them out to stay well under an hour on
2 cores; `make test-all` runs them too.
"""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long end-to-end case; make test skips it, make test-all runs it")
