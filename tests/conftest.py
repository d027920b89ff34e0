from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from oci_ref.app import create_app
from tests.backends import BACKENDS, Backend
from tests.support import InProcess, Server

# pytester: tests/e2e/test_pytest_plugin.py runs pytest in a temporary project.
# tests.engines: PostgreSQL, S3 (moto) and haproxy fixtures for the scale-out tests.
pytest_plugins = ['pytester', 'tests.engines']

_names = itertools.count()


@pytest.fixture
def client(backend: Backend) -> Iterator[InProcess]:
    """The app in-process (falcon.testing) over a fresh storage root, once per store
    combination: every API test is a storage-behaviour test too."""
    registry = backend.registry(fsync=True)
    yield InProcess(create_app(backend.config(fsync=True), registry=registry))
    registry.close()


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each store combination in turn, over a fresh root (storage-behaviour tests)."""
    return BACKENDS[request.param].create(request, tmp_path / 'data')


@pytest.fixture(scope='session')
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `oci-ref serve` subprocess for the e2e session."""
    srv = Server(tmp_path_factory.mktemp('e2e') / 'data')
    yield srv
    srv.stop()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A unique, namespaced repository name per test (exercises slash routing)."""
    slug = re.sub(r'[^a-z0-9]+', '-', request.node.name.lower())[:48].strip('-')
    return f'org/team/t{next(_names)}-{slug}'
