"""Real storage engines and a real load balancer for the scale-out tests (issue 14).

- ``PostgresServer``: Debian's PostgreSQL, a throw-away cluster (``initdb``) started with
  ``postgres`` on a free loopback port, as the unprivileged ``oci-ref-test`` user when
  the tests run as root (initdb refuses root). Applications connect as ``oci_ref``, a
  role that is not a superuser and owns its database, as in a real deployment.
- ``MotoServer``: moto in server mode, the real S3 HTTP API on a free loopback port.
- ``HAProxy``: haproxy round-robin (no stickiness) in front of given backends, with
  health checks on ``/healthz`` and its runtime API on a unix socket.

Each is an ``Engine`` over ``oci_ref.testing.Process``: spawned, polled until ready
within a deadline, stopped by its PID. The pytest fixtures at the bottom (a plugin loaded by
tests/conftest.py) start each engine once per session, lazily, and give every test a
fresh database or bucket. An engine that is not installed is a skip naming the install
command, and a failure under CI=true (`make test` installs them: `make engines`).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oci_ref.testing import Process, free_port, http_ready

IN_CI = os.environ.get('CI') == 'true'
INSTALL = 'run `make engines` as root (scripts/install-engines.sh)'
TEST_USER = os.environ.get('OCI_REF_TEST_USER', 'oci-ref-test')


class EngineError(RuntimeError):
    """An engine was found but could not be started; carries its output."""


def missing(message: str) -> None:
    """An engine is absent: skip locally, fail under CI=true."""
    if IN_CI:
        pytest.fail(f'{message} - CI must have every engine ({INSTALL})', pytrace=False)
    pytest.skip(f'{message}; {INSTALL}')


def require(module: str) -> None:
    """A Python package of the test extras is importable (else missing())."""
    try:
        importlib.import_module(module)
    except ImportError:
        missing(f'Python package {module} is missing (pip install -e ".[test]")')


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f'{what} not within {timeout}s')
        time.sleep(0.02)


# ------------------------------------------------------------- PostgreSQL ----
def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r'\d+', path.parent.name)) or (0,)


def postgres_bindir() -> Path | None:
    """The directory with ``initdb`` and ``postgres``: $OCI_REF_PG_BINDIR, else the
    newest /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH), else
    ``pg_config --bindir``, else wherever PATH has ``postgres``."""
    candidates: list[Path] = []
    if os.environ.get('OCI_REF_PG_BINDIR'):
        candidates.append(Path(os.environ['OCI_REF_PG_BINDIR']))
    candidates += sorted(Path('/usr/lib/postgresql').glob('*/bin'), key=_version_key,
                         reverse=True)
    pg_config = shutil.which('pg_config')
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, '--bindir'], capture_output=True, text=True,
                                 timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
    exe = shutil.which('postgres')
    if exe:
        candidates.append(Path(exe).resolve().parent)
    for d in candidates:
        if os.access(d / 'postgres', os.X_OK) and os.access(d / 'initdb', os.X_OK):
            return d
    return None


class Engine:
    """An engine process on a loopback port (an ``oci_ref.testing.Process``, its
    output in ``log``). Subclasses set ``log`` and ``url`` and call ``spawn``; one
    that does not answer ``GET ready_path`` with 200 overrides ``ready``."""

    ready_path = '/healthz'
    stop_signal = signal.SIGTERM
    proc: Process | None = None
    log: Path
    url: str

    def spawn(self, cmd: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None, user: str | None = None,
              timeout: float = 30.0) -> None:
        """Start ``cmd`` (as ``user`` when given: needs root) and wait until ready;
        a second spawn (a restart) appends to the log."""
        self.proc = Process.spawn(cmd, log=self.log, env=env, cwd=cwd, user=user,
                                  append=self.proc is not None, new_session=True)
        self.proc.wait_ready(self.ready, timeout=timeout)

    def ready(self) -> bool:
        return http_ready(self.url + self.ready_path)()

    def stop(self) -> int:
        assert self.proc is not None
        return self.proc.stop(first=self.stop_signal)


def run_as_user() -> str | None:
    """The user PostgreSQL runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        missing(f'system user {TEST_USER} (PostgreSQL refuses to run as root) is missing')
    return TEST_USER


class PostgresServer(Engine):
    """A private PostgreSQL cluster under a temporary directory, removed by ``close``.

    ``admin_url`` connects as the superuser ``postgres``; ``create_database``'s URL as
    ``oci_ref``. Both use scram-sha-256 passwords over TCP on 127.0.0.1; the unix
    socket lives in the cluster's directory, never in /run/postgresql.
    """

    stop_signal = signal.SIGINT  # fast shutdown: SIGTERM would wait for every client
    APP_ROLE = 'oci_ref'

    def __init__(self, bindir: Path, user: str | None = None):
        self.bindir = bindir
        self.user = user
        self.base = Path(tempfile.mkdtemp(prefix='oci-ref-pg-'))
        self.data = self.base / 'data'
        self.log = self.base / 'postgres.log'
        self.port = free_port()
        self.admin_password = secrets.token_hex(16)
        self.password = secrets.token_hex(16)
        self.admin_url = self._url('postgres', self.admin_password, 'postgres')
        self.url = f'postgresql://127.0.0.1:{self.port}'  # for messages: no password
        self._names = itertools.count()
        try:
            self._initdb()
            self.spawn(self._command(), cwd=self.base, user=user,
                       env={'PATH': os.environ.get('PATH', ''), 'LC_ALL': 'C',
                            'TZ': 'UTC'})
            with self.connect() as conn:
                conn.execute(f'CREATE ROLE {self.APP_ROLE} LOGIN PASSWORD '
                             f"'{self.password}'")
        except BaseException:
            self.close()
            raise

    def _url(self, user: str, password: str, db: str) -> str:
        return f'postgresql://{user}:{password}@127.0.0.1:{self.port}/{db}'

    def _initdb(self) -> None:
        pwfile = self.base / 'pwfile'
        pwfile.write_text(self.admin_password + '\n')
        if self.user:
            entry = pwd.getpwnam(self.user)
            for p in (self.base, pwfile):
                os.chown(p, entry.pw_uid, entry.pw_gid)
        # -N: no fsync (a throw-away cluster); C locale: the same on every machine.
        out = subprocess.run(
            [str(self.bindir / 'initdb'), '-D', str(self.data), '-U', 'postgres',
             f'--pwfile={pwfile}', '--auth-local=trust', '--auth-host=scram-sha-256',
             '-E', 'UTF8', '--no-locale', '-N', '--no-instructions'],
            capture_output=True, text=True, user=self.user, cwd=self.base, timeout=120)
        pwfile.unlink()
        if out.returncode != 0:
            raise EngineError(f'initdb failed ({out.returncode}): {out.stdout}{out.stderr}')

    def _command(self) -> list[str]:
        settings = {
            'listen_addresses': '127.0.0.1', 'port': str(self.port),
            'unix_socket_directories': str(self.base),
            # Durability is not under test here; speed is.
            'fsync': 'off', 'synchronous_commit': 'off', 'full_page_writes': 'off',
            # Replicas x pool size x workers, plus the tests' own connections.
            'max_connections': '300', 'shared_buffers': '64MB',
            'log_min_messages': 'warning', 'log_line_prefix': '%m [%p] %d ',
        }
        cmd = [str(self.bindir / 'postgres'), '-D', str(self.data)]
        for k, v in settings.items():
            cmd += ['-c', f'{k}={v}']
        return cmd

    def ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.admin_url, connect_timeout=2).close()
        except psycopg.OperationalError:  # refused, or "the database system is starting up"
            return False
        return True

    def connect(self) -> Any:
        """A superuser connection in autocommit mode (CREATE DATABASE needs it)."""
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)

    def create_database(self, name: str | None = None, template: str | None = None
                        ) -> tuple[str, str]:
        """A fresh database owned by ``oci_ref`` (a copy of ``template`` if given):
        (name, URL to connect as oci_ref)."""
        name = name or f'test_{next(self._names)}'
        copy = f' TEMPLATE {template}' if template else ''
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE {name} OWNER {self.APP_ROLE}{copy}')
        return name, self._url(self.APP_ROLE, self.password, name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending any session a test left open on it."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)')

    def close(self) -> None:
        if getattr(self, 'proc', None) is not None:
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


# -------------------------------------------------------------------- S3 ----
@dataclass(frozen=True)
class S3Bucket:
    """Where a test's blobs go: an S3 endpoint, region, credentials and a bucket."""

    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS_* variables for a process that should use this endpoint."""
        return {'AWS_ACCESS_KEY_ID': self.access_key_id,
                'AWS_SECRET_ACCESS_KEY': self.secret_access_key,
                'AWS_DEFAULT_REGION': self.region, 'AWS_REGION': self.region,
                'AWS_ENDPOINT_URL_S3': self.endpoint_url}

    def client_kwargs(self, **config: Any) -> dict[str, Any]:
        """Arguments for ``session.create_client('s3', ...)`` (botocore or
        aiobotocore); ``config`` goes into botocore's Config (timeouts, retries).
        Path-style addressing (a loopback endpoint has no bucket subdomains) and
        SigV4 also for presigned URLs (botocore would presign with SigV2 in
        us-east-1, which R2 and Garage refuse)."""
        from botocore.config import Config

        return {'endpoint_url': self.endpoint_url, 'region_name': self.region,
                'aws_access_key_id': self.access_key_id,
                'aws_secret_access_key': self.secret_access_key,
                'config': Config(s3={'addressing_style': 'path'}, signature_version='s3v4',
                                 **config)}


class MotoServer(Engine):
    """moto in server mode: S3 on a free loopback port, its state in memory (a
    restart loses it; ``pause``/``resume`` keep it). Large objects spill into its
    own temporary directory."""

    ready_path = '/moto-api/'
    REGION = 'us-east-1'

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix='oci-ref-moto-'))
        self.log = self.base / 'moto.log'
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.access_key_id = 'oci-ref-test'
        self.secret_access_key = secrets.token_hex(16)
        self._names = itertools.count()
        self.paused = False
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith('AWS_')}
        env.update(TMPDIR=str(self.base), PYTHONUNBUFFERED='1')
        self.spawn([sys.executable, '-m', 'moto.server', '-H', '127.0.0.1',
                    '-p', str(self.port)], env=env, cwd=self.base)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> None:
        """Stop (if running) and start again on the same port, with empty state."""
        if self.running():
            self.resume()
            self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel and never answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused and self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False

    def bucket(self, name: str | None = None) -> S3Bucket:
        """Create a fresh bucket and describe it."""
        import boto3

        b = S3Bucket(self.url, self.REGION, self.access_key_id, self.secret_access_key,
                     name or f'test-{next(self._names)}')
        boto3.client('s3', **b.client_kwargs()).create_bucket(Bucket=b.bucket)
        return b

    def close(self) -> None:
        if self.running():
            self.resume()
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


# ---------------------------------------------------------------- haproxy ----
HAPROXY_CONFIG = '''global
    maxconn 2000
    stats socket {admin} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    timeout http-request 30s
    # A check's answer may take this long: without it, the check interval (100 ms
    # in the tests) is the timeout, and a replica merely busy on a loaded machine
    # goes DOWN, both at once giving haproxy's own 503. A dead replica refuses the
    # connection: it is still marked DOWN after two checks.
    timeout check 5s
    # A request that cannot connect to its server is retried on another one.
    retries 3
    option redispatch 1

frontend registry
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    default-server check inter {inter}ms fall 2 rise 1
{servers}
'''


class HAProxy(Engine):
    """haproxy round-robin over ``backends`` (``http://127.0.0.1:PORT`` URLs), without
    stickiness: consecutive requests go to consecutive backends. Backend ``i`` is the
    server ``s{i}`` of the backend ``replicas`` in the runtime API."""

    def __init__(self, backends: Sequence[str], *, check_interval_ms: int = 100):
        exe = shutil.which('haproxy', path=os.pathsep.join(
            ['/usr/sbin', '/usr/bin', os.environ.get('PATH', '')]))
        if exe is None:
            missing('haproxy is not installed')
        assert exe is not None
        self.exe = exe
        self.base = Path(tempfile.mkdtemp(prefix='oci-ref-haproxy-'))
        self.config = self.base / 'haproxy.cfg'
        self.admin_socket = self.base / 'admin.sock'
        self.log = self.base / 'haproxy.log'
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.check_interval_ms = check_interval_ms
        self.backends: list[str] = []
        try:
            self.set_backends(backends)
        except BaseException:
            self.close()
            raise

    def set_backends(self, backends: Sequence[str]) -> None:
        """Write the configuration for ``backends`` and (re)start on the same port."""
        if not backends:
            raise ValueError('haproxy needs at least one backend')
        servers = []
        for i, url in enumerate(backends):
            m = re.fullmatch(r'http://(127\.0\.0\.1|\[::1\]):(\d+)/?', url)
            if not m:
                raise ValueError(f'not a loopback http URL: {url}')
            servers.append(f'    server s{i} {m[1].strip("[]")}:{m[2]}')
        self.config.write_text(HAPROXY_CONFIG.format(
            admin=self.admin_socket, port=self.port, inter=self.check_interval_ms,
            servers='\n'.join(servers)))
        self.backends = list(backends)
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        check = subprocess.run([self.exe, '-c', '-q', '-f', str(self.config)],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise EngineError(f'haproxy rejects its config: {check.stdout}{check.stderr}')
        # -db: stay in the foreground, so the PID we hold is haproxy's.
        self.spawn([self.exe, '-db', '-f', str(self.config)], cwd=self.base)

    def ready(self) -> bool:
        return self.admin_socket.exists() and super().ready()

    def admin(self, command: str) -> str:
        """One command on the runtime API (``show stat``, ``set server ...``)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.admin_socket))
            s.sendall(command.encode() + b'\n')
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b''.join(chunks).decode()

    def states(self) -> list[str]:
        """Each backend's status as haproxy sees it: UP, DOWN, MAINT, ..."""
        lines = self.admin('show stat').splitlines()
        header = lines[0].lstrip('# ').split(',')
        px, sv, st = header.index('pxname'), header.index('svname'), header.index('status')
        found = {}
        for line in lines[1:]:
            f = line.split(',')
            if len(f) > st and f[px] == 'replicas' and re.fullmatch(r's\d+', f[sv]):
                found[int(f[sv][1:])] = f[st].split(' ')[0]
        return [found[i] for i in range(len(self.backends))]

    def wait_state(self, index: int, status: str, timeout: float = 15.0) -> None:
        """Wait until haproxy reports backend ``index`` as ``status`` (UP, DOWN...)."""
        _wait(lambda: self.states()[index] == status, timeout,
              f'haproxy backend s{index} {status}')

    def set_state(self, index: int, state: str) -> None:
        """``ready``, ``drain`` or ``maint`` for backend ``index``, at once."""
        out = self.admin(f'set server replicas/s{index} state {state}').strip()
        if out:
            raise EngineError(f'haproxy: {out}')

    def close(self) -> None:
        if getattr(self, 'proc', None) is not None:
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------- fixtures ----
@pytest.fixture(scope='session')
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (started at first use)."""
    require('psycopg')
    bindir = postgres_bindir()
    if bindir is None:
        missing('PostgreSQL server (initdb, postgres) is not installed')
    assert bindir is not None
    server = PostgresServer(bindir, run_as_user())
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database per test: ``postgresql://oci_ref:...@127.0.0.1:P/test_N``,
    owned by the (non-superuser) role it connects as; dropped after the test."""
    name, url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(scope='session')
def postgres_template(postgres_server: PostgresServer) -> str:
    """A database with oci-ref's schema, migrated once per session by the store
    itself: the template of ``postgres_metadata_url``."""
    from oci_ref.storage.postgres import PostgresMetadataStore

    name, url = postgres_server.create_database('oci_ref_template')
    PostgresMetadataStore(url).close()
    return name


@pytest.fixture
def postgres_metadata_url(postgres_server: PostgresServer, postgres_template: str
                          ) -> Iterator[str]:
    """A fresh database per test with oci-ref's schema already in place (a copy of
    ``postgres_template``: the per-test cost is the copy, not the migrations)."""
    name, url = postgres_server.create_database(template=postgres_template)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(scope='session')
def s3_server() -> Iterator[MotoServer]:
    """One moto S3 server for the session (started at first use)."""
    require('moto.server')
    require('aiobotocore')
    server = MotoServer()
    yield server
    server.close()


@pytest.fixture
def s3_bucket(s3_server: MotoServer) -> S3Bucket:
    """A fresh bucket per test on the session's S3 server (restarted first if an
    earlier test stopped or paused it)."""
    s3_server.resume()
    if not s3_server.running():
        s3_server.restart()
    return s3_server.bucket()


@pytest.fixture
def load_balancer() -> Iterator[Callable[[Sequence[str]], HAProxy]]:
    """Start haproxy in front of the given backend URLs; stopped after the test."""
    started: list[HAProxy] = []

    def start(backends: Sequence[str], **kw: Any) -> HAProxy:
        lb = HAProxy(backends, **kw)
        started.append(lb)
        return lb

    yield start
    for lb in started:
        lb.close()
