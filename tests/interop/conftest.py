"""Real clients against a real `oci-ref serve`.

A client that is not installed is a skip with the reason locally, and a failure
under CI=true (CI installs every client through `make clients`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Server

CLIENT_PATHS = ['/opt/oci-clients/bin']


def find_client(name: str) -> str:
    path = shutil.which(name, path=os.pathsep.join([*CLIENT_PATHS, os.environ['PATH']]))
    if path is None:
        message = f'{name} is not installed (run `make clients` as root)'
        if os.environ.get('CI') == 'true':
            pytest.fail(message + ' - CI must have every client', pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope='module')
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp('interop') / 'data')
    yield srv
    srv.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
