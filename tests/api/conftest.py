"""Fixtures of the access-control tests (tests/api/access_world.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.access_world import ACCESS_TOML, PASSWORDS
from tests.interop.auth import write_htpasswd


@pytest.fixture(scope='module')
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bcrypt entries as `htpasswd -Bbn` writes them ($2y$, cost 5), made with the
    bcrypt package; test_a_file_written_by_htpasswd_B_logs_in uses the binary."""
    return write_htpasswd(tmp_path_factory.mktemp('users') / 'htpasswd', PASSWORDS)


@pytest.fixture(scope='module')
def access_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('access') / 'access.toml'
    path.write_text(ACCESS_TOML)
    return path
