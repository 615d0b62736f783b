"""Fixtures shared by the dataprep tests: the local HTTP fixture server and what it serves."""

from pathlib import Path

import pytest
from dataprep_helpers import make_www, start_fixture_server, stop_fixture_server


@pytest.fixture(scope="module")
def www(tmp_path_factory) -> Path:
    return make_www(tmp_path_factory.mktemp("www"))


@pytest.fixture(scope="module")
def server(www):
    url, proc = start_fixture_server(www)
    yield url
    stop_fixture_server(proc)
