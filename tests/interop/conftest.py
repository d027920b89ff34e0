"""Real clients against a real `oci-ref serve`.

A client that is not installed is a skip with the reason locally, and a failure
under CI=true (CI installs every client through `make clients`).

``pytest tests/interop --registry=distribution`` runs the same tests against the
control peer, CNCF distribution (`docker-registry`, started through
``/opt/oci-clients/bin/oci-local-registry``), to show where the two differ.

Each test carries one client marker (see pyproject). Its docstring's first line
names the operations it covers; that, the client marker, the registry and the
client versions (recorded by `find_client`) go into the JUnit XML that
`scripts/interop-report.py` turns into docs/interop.md.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oci_ref.testing import Process, free_port, http_ready
from tests.interop.util import ContainersTool
from tests.support import Server

# The installer's prefix first, then Debian's own directories: a stray client in
# /usr/local/bin (another docker CLI, say) must not replace the one the tests pin.
CLIENT_PATHS = ['/opt/oci-clients/bin', '/usr/sbin', '/usr/bin']
ORAS_PY = '/opt/oci-clients/py/bin/python'
CLIENT_MARKERS = ('skopeo', 'podman', 'buildah', 'oras', 'crane', 'cosign', 'containerd',
                  'docker', 'oras_py')
IN_CI = os.environ.get('CI') == 'true'

_current: list[pytest.Item] = []


def missing(message: str) -> None:
    """A client or a prerequisite is absent: skip locally, fail under CI=true."""
    if IN_CI:
        pytest.fail(message + ' - CI must have every client', pytrace=False)
    pytest.skip(message)


def find_client(name: str) -> str:
    """Path of client binary ``name``; records its version for the interop report."""
    if name == 'oras-py':
        path = ORAS_PY if os.access(ORAS_PY, os.X_OK) else None
    else:
        path = shutil.which(name, path=os.pathsep.join([*CLIENT_PATHS, os.environ['PATH']]))
    if path is None:
        missing(f'{name} is not installed (run `make clients` as root)')
    assert path is not None
    if _current:
        entry = ('binary', f'{name} {client_version(path)}')
        if entry not in _current[-1].user_properties:
            _current[-1].user_properties.append(entry)
    return path


_VERSION_ARGS = {
    'oras': ['version'], 'crane': ['version'], 'cosign': ['version'],
}


@functools.cache
def client_version(path: str) -> str:
    name = Path(path).name
    if path == ORAS_PY:
        cmd = [path, '-c', 'import importlib.metadata as m; print(m.version("oras"))']
    else:
        cmd = [path, *_VERSION_ARGS.get(name, ['--version'])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as ex:
        return f'unknown ({ex})'
    text = out.stdout + out.stderr
    if name in ('oras', 'cosign'):
        m = re.search(r'(?:GitVersion|Version):\s*v?(\S+)', text)
        if m and m[1][:1].isdigit():
            return m[1]
        # Debian builds cosign without a version ("devel"): take it from the .deb
        # that install-clients.sh unpacked the binary from.
        return _deb_version(path) or (m[1] if m else 'unknown')
    m = re.search(r'v?(\d+\.\d+(?:\.\d+)?[^\s,]*)', text)
    return m[1] if m else 'unknown'


def _deb_version(path: str) -> str | None:
    real = Path(path).resolve()
    for parent in real.parents:
        stamp = parent / '.debs'
        if stamp.is_file():
            for line in stamp.read_text().split():
                m = re.fullmatch(rf'{re.escape(real.name)}_([^_]+)_\w+\.deb', line)
                if m:
                    return m[1].replace('%3a', ':')
    return None


# --------------------------------------------------------------- options ----
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        '--registry', choices=('oci-ref', 'distribution'), default='oci-ref',
        help='registry the interop tests drive: oci-ref (default), or the control '
             'peer CNCF distribution (docker-registry via oci-local-registry)')
    parser.addoption(
        '--oci-ref-args', default='', metavar='ARGS',
        help='extra `oci-ref serve` arguments for the interop registry, e.g. '
             '"--workers 2"')
    parser.addoption(
        '--lint-reports', default=None, metavar='DIR', type=Path,
        help='run the oci-ref registries with --lint and save each test module\'s '
             'lint report as DIR/<module>-<fixture>.json (make clients-lint-report)')


@pytest.fixture(autouse=True)
def _report_properties(request: pytest.FixtureRequest) -> Iterator[None]:
    item = request.node
    clients = [m.name for m in item.iter_markers() if m.name in CLIENT_MARKERS]
    item.user_properties.append(('client', clients[0] if clients else 'other'))
    item.user_properties.append(('registry', request.config.getoption('--registry')))
    doc = (getattr(item, 'function', None).__doc__ or '').strip().splitlines()
    item.user_properties.append(('operations', doc[0].rstrip('.') if doc else item.name))
    _current.append(item)
    yield
    _current.remove(item)


# -------------------------------------------------------------- registry ----
class Distribution:
    """CNCF distribution (`docker-registry`) as the control peer, with the attributes
    of `tests.support.Server` the tests use (port, host, url, log, stop)."""

    kind = 'distribution'

    def __init__(self, root: Path):
        exe = shutil.which('oci-local-registry', path=CLIENT_PATHS[0])
        if exe is None or shutil.which('docker-registry') is None:
            missing('docker-registry / oci-local-registry not installed (make clients)')
        assert exe is not None
        self.root = root
        self.port = free_port()
        self.log = root.parent / f'distribution-{self.port}.log'
        self.process = Process.spawn([exe, str(root), self.host], log=self.log,
                                     name='distribution')
        self.process.wait_ready(http_ready(self.url + '/v2/'))

    @property
    def host(self) -> str:
        return f'127.0.0.1:{self.port}'

    @property
    def url(self) -> str:
        return f'http://{self.host}'

    def stop(self) -> int:
        return self.process.stop()


def _lint_args(request: pytest.FixtureRequest) -> list[str]:
    return ['--lint'] if request.config.getoption('--lint-reports') else []


def _save_lint_report(request: pytest.FixtureRequest, srv: Server | Distribution,
                      fixture: str) -> None:
    """With --lint-reports: the module's client markers and its registry's lint
    report, for scripts/clients-lint-report.py."""
    out = request.config.getoption('--lint-reports')
    if out is None or not isinstance(srv, Server):
        return
    marks = [m.name for m in request.module.pytestmark] \
        if isinstance(getattr(request.module, 'pytestmark', None), list) else []
    clients = [m for m in marks if m in CLIENT_MARKERS]
    out.mkdir(parents=True, exist_ok=True)
    module = request.module.__name__.rpartition('.')[2]
    (out / f'{module}-{fixture}.json').write_text(json.dumps(
        {'module': module, 'clients': clients, 'report': srv.lint_report()}, indent=1))


@pytest.fixture(scope='module')
def registry(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server | Distribution]:
    """A fresh registry per test module, on a free loopback port."""
    base = tmp_path_factory.mktemp('interop')
    srv: Server | Distribution
    if request.config.getoption('--registry') == 'distribution':
        srv = Distribution(base / 'data')
    else:
        srv = Server(base / 'data', *_lint_args(request),
                     *shlex.split(request.config.getoption('--oci-ref-args')))
    yield srv
    _save_lint_report(request, srv, 'registry')
    srv.stop()


@pytest.fixture(scope='module')
def paged_registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Server | Distribution]:
    """Like `registry`, but oci-ref answers at most 2 tags or repositories and 1
    referrer per page, so clients must follow `Link` headers. (distribution has no
    such setting: against it these tests list without pages.)"""
    base = tmp_path_factory.mktemp('interop-paged')
    srv: Server | Distribution
    if request.config.getoption('--registry') == 'distribution':
        srv = Distribution(base / 'data')
    else:
        srv = Server(base / 'data', '--page-max', '2', '--referrers-page-max', '1',
                     *_lint_args(request),
                     *shlex.split(request.config.getoption('--oci-ref-args')))
    yield srv
    _save_lint_report(request, srv, 'paged')
    srv.stop()


_names = itertools.count()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A unique repository name per test, under interop/<client>/."""
    clients = [m.name for m in request.node.iter_markers() if m.name in CLIENT_MARKERS]
    slug = re.sub(r'[^a-z0-9]+', '-', request.node.name.lower())[:40].strip('-')
    return f'interop/{(clients or ["other"])[0].replace("_", "-")}/{slug}-{next(_names)}'


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@functools.cache
def storage_driver(exe: str) -> tuple[str | None, str]:
    """(driver, error): overlay if it works here, else vfs; None and the tool's
    error when neither works (rootless without user namespaces, say)."""
    error = ''
    for driver in ('overlay', 'vfs'):
        base = Path(tempfile.mkdtemp(prefix='probe-'))
        try:
            done = subprocess.run(
                [exe, '--root', str(base / 'root'), '--runroot', str(base / 'run'),
                 '--storage-driver', driver, 'info'],
                capture_output=True, text=True, timeout=60)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        if done.returncode == 0:
            return driver, ''
        error = (done.stderr.strip().splitlines() or [''])[-1]
    return None, error


@pytest.fixture
def containers_tool(registry: Server | Distribution
                    ) -> Iterator[Callable[[str], ContainersTool]]:
    """Factory: podman or buildah with private storage for this test."""
    made: list[ContainersTool] = []

    def make(name: str) -> ContainersTool:
        exe = find_client(name)
        driver, error = storage_driver(exe)
        if driver is None:
            missing(f'{name} cannot set up its storage here: {error}')
        assert driver is not None
        # podman refuses a --runroot longer than 50 characters: keep the paths short.
        tool = ContainersTool(exe, registry, Path(tempfile.mkdtemp(prefix=f'{name}-')),
                              driver)
        made.append(tool)
        return tool

    yield make
    for tool in made:
        tool.cleanup()
        shutil.rmtree(tool.base, ignore_errors=True)
