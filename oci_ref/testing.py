"""A pytest plugin (entry point ``pytest11``): a real oci-ref for your own tests.

Fixtures:

- ``oci_registry``: a fresh registry for one test (its own storage);
- ``oci_registry_session``: one registry shared by the whole test session.

Each is an :class:`OCIRegistry` running ``oci-ref serve`` in a subprocess on a free
127.0.0.1 port, with its storage in a temporary directory. Settings of
``oci-ref serve`` can be given per test with a marker, e.g.
``@pytest.mark.oci_registry(manifest_max_bytes=8388608)``; every setting of
``oci_ref.config.Config`` is accepted there.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

READY_TIMEOUT = 20.0


class OCIRegistry:
    """A running ``oci-ref serve``: ``host`` is ``127.0.0.1:<port>``, ``url`` its
    base URL. Use as a context manager, or call :meth:`stop`."""

    def __init__(self, root: Path | None = None, **settings: Any):
        self._tmp = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix='oci-ref-')
            root = Path(self._tmp.name) / 'data'
        self.root = Path(root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.root.parent / 'oci-ref.log'
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        # A free port can be taken between our probe and the server's bind: retry.
        for _ in range(5):
            self.port = _free_port()
            if self._start():
                return
        raise RuntimeError(f'oci-ref did not start; log:\n{self._log_tail()}')

    @property
    def host(self) -> str:
        return f'127.0.0.1:{self.port}'

    @property
    def url(self) -> str:
        scheme = 'https' if self.settings.get('tls_cert') else 'http'
        return f'{scheme}://{self.host}'

    def ref(self, name: str, reference: str = 'latest') -> str:
        """An image reference for clients: ``127.0.0.1:<port>/<name>:<tag>`` (or
        ``@<digest>``)."""
        sep = '@' if ':' in reference else ':'
        return f'{self.host}/{name}{sep}{reference}'

    def _start(self) -> bool:
        cmd = [sys.executable, '-m', 'oci_ref', 'serve', '--listen', self.host,
               '--root', str(self.root)]
        for key, value in self.settings.items():
            flag = '--' + key.replace('_', '-')
            if isinstance(value, bool):
                cmd.append(flag if value else '--no-' + key.replace('_', '-'))
            else:
                cmd += [flag, str(value)]
        with open(self.log, 'ab') as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT
        # /healthz answers whatever the auth mode; readiness only, so the test
        # certificate need not be trusted here.
        context = None
        if self.url.startswith('https'):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + '/healthz', timeout=1,
                                            context=context) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors='replace')[-3000:]
        except OSError:
            return ''

    def __enter__(self) -> OCIRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f'<OCIRegistry {self.url} root={self.root}>'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        'markers',
        'oci_registry(**settings): oci-ref serve settings for the oci_registry fixture',
    )


@pytest.fixture
def oci_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OCIRegistry]:
    """A fresh oci-ref for this test, storing under the test's tmp_path."""
    marker = request.node.get_closest_marker('oci_registry')
    settings = dict(marker.kwargs) if marker else {}
    with OCIRegistry(tmp_path / 'oci-ref' / 'data', **settings) as registry:
        yield registry


@pytest.fixture(scope='session')
def oci_registry_session(tmp_path_factory: pytest.TempPathFactory
                         ) -> Iterator[OCIRegistry]:
    """One oci-ref shared by every test of the session."""
    # Settings for the shared registry: OCI_REF_* in the environment, which the
    # subprocess inherits and `oci-ref serve` reads itself.
    root = tmp_path_factory.mktemp('oci-ref') / 'data'
    with OCIRegistry(root) as registry:
        yield registry


__all__ = ['OCIRegistry', 'oci_registry', 'oci_registry_session']
