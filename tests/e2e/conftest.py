"""e2e: the conformance counts, printed at the end (tests/e2e/test_conformance.py);
the store pairs the pull-through cache's tests run on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

_LINES = pytest.StashKey[list[str]]()


@pytest.fixture
def conformance_report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record one line for the terminal summary."""
    return request.config.stash.setdefault(_LINES, []).append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    lines = config.stash.get(_LINES, [])
    if lines:
        terminalreporter.section('upstream conformance suites')
        for line in lines:
            terminalreporter.write_line(line)


# -- store pairs for the pull-through cache's e2e tests ---------------------------


@pytest.fixture(scope='module', params=[
    'sqlite+filesystem', pytest.param('postgresql+s3', marks=pytest.mark.engines)])
def store_pair(request: pytest.FixtureRequest) -> str:
    """Which stores a module's servers run on: the embedded pair, or the scale-out
    pair, where the cache's state lives in PostgreSQL and S3 (issue 14)."""
    return str(request.param)


@contextmanager
def _store_env(request: pytest.FixtureRequest, pair: str) -> Iterator[dict[str, str]]:
    """The pair as environment (for serve and fsck alike); on the scale-out pair a
    fresh database and bucket of the session's engines."""
    if pair == 'sqlite+filesystem':
        yield {}
        return
    pg = request.getfixturevalue('postgres_server')
    s3 = request.getfixturevalue('s3_server')
    s3.resume()
    if not s3.running():
        s3.restart()
    name, url = pg.create_database()
    bucket = s3.bucket()
    try:
        yield {**bucket.env, 'OCI_REF_METADATA_STORE': url, 'OCI_REF_BLOB_STORE': 's3',
               'OCI_REF_S3_BUCKET': bucket.bucket,
               'OCI_REF_S3_ENDPOINT_URL': bucket.endpoint_url,
               'OCI_REF_S3_REGION': bucket.region, 'OCI_REF_S3_PATH_STYLE': 'true'}
    finally:
        pg.drop_database(name)


@pytest.fixture(scope='module')
def module_stores(request: pytest.FixtureRequest, store_pair: str
                  ) -> Iterator[dict[str, str]]:
    """``store_pair``'s environment, one database and bucket per module."""
    with _store_env(request, store_pair) as env:
        yield env


@pytest.fixture
def stores(request: pytest.FixtureRequest, store_pair: str) -> Iterator[dict[str, str]]:
    """``store_pair``'s environment, a fresh database and bucket per test."""
    with _store_env(request, store_pair) as env:
        yield env
