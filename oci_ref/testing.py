"""Start servers for tests, wait until they are ready, stop them: one implementation.

This module is oci-ref's pytest plugin (entry point ``pytest11``) and the one place
where the project's tests and tools start, wait for and stop server processes.

Fixtures:

- ``oci_registry``: a fresh registry for one test (its own storage);
- ``oci_registry_session``: one registry shared by the whole test session.

Each is an :class:`OCIRegistry` running ``oci-ref serve`` in a subprocess on a free
127.0.0.1 port, with its storage in a temporary directory. Settings of
``oci-ref serve`` can be given per test with a marker, e.g.
``@pytest.mark.oci_registry(manifest_max_bytes=8388608)``; every setting of
``oci_ref.config.Config`` is accepted there. With ``lint=True`` the registry runs
the client linter: ``oci_registry.lint_report()`` returns its findings and
``oci_registry.assert_no_lint_violations()`` fails a test that broke a rule.

The building blocks, for any server (a peer registry, a daemon):

- :func:`free_port` -- a free TCP port on a loopback address;
- :class:`Process` -- :meth:`Process.spawn` a command with its output in a log file,
  :meth:`Process.wait_ready` until a probe says yes (``NotReady`` if it exits or the
  deadline passes, after stopping it), :meth:`Process.stop` it and whatever it
  started, by PID;
- :func:`http_ready` -- the usual probe: ``GET <url>`` answers 200.

Readiness is polled at short intervals against a deadline; nothing waits a fixed
time. Only processes started here are ever signalled.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from oci_ref.variations import VARIATIONS

READY_TIMEOUT = 30.0
# A port is free when we probe it but may be taken before the server binds it.
PORT_ATTEMPTS = 5


def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port on ``host`` that nothing listens on at the moment of the call."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_ready(url: str, *, status: int = 200, context: ssl.SSLContext | None = None,
               timeout: float = 1.0) -> Callable[[], bool]:
    """A readiness probe: true once ``GET url`` answers ``status``.

    Talks straight to the address in ``url`` (no proxy from the environment). For
    ``https`` without ``context`` the certificate is not verified: this only asks
    whether the server answers, the tests check TLS themselves.
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or '127.0.0.1', parts.port
    path = parts.path or '/'
    if parts.query:
        path += '?' + parts.query
    if parts.scheme == 'https' and context is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    def probe() -> bool:
        conn: http.client.HTTPConnection
        if parts.scheme == 'https':
            conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                               context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request('GET', path)
            resp = conn.getresponse()
            resp.read()
            return resp.status == status
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    return probe


def bytecode_cache(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a Python server: with ``PYTHONDONTWRITEBYTECODE`` set (and no
    ``PYTHONPYCACHEPREFIX``), bytecode goes to ``$XDG_CACHE_HOME/oci-ref/pycache``
    (``~/.cache/...``) instead of nowhere.

    Without it, every start of a checkout's server compiles all of oci_ref again: about
    90 ms of CPU, a third of a start (issue 17). The sources stay free of
    ``__pycache__`` as the setting asks; Python checks each cached file against its
    source's mtime and size, and replaces files atomically (workers may share it)."""
    out = dict(env)
    if not out.get('PYTHONDONTWRITEBYTECODE') or out.get('PYTHONPYCACHEPREFIX'):
        return out
    cache = out.get('XDG_CACHE_HOME') or (
        os.path.join(out['HOME'], '.cache') if out.get('HOME') else '')
    if not os.path.isabs(cache):
        return out  # nowhere of the user's own to keep it: compile, as asked
    out['PYTHONPYCACHEPREFIX'] = os.path.join(cache, 'oci-ref', 'pycache')
    del out['PYTHONDONTWRITEBYTECODE']
    return out


class NotReady(RuntimeError):
    """A process exited (``exited``) or missed its deadline before it was ready; it
    has been stopped, and the message ends with its log."""

    def __init__(self, process: Process, what: str, *, exited: bool = False):
        self.process = process
        self.exited = exited
        super().__init__(f'{process.name} {what}; its log ({process.log}) ends with:\n'
                         f'{process.log_tail()}')


class Process:
    """A child process started by :meth:`spawn`, its stdout and stderr in ``log``.

    ``pid``, ``returncode``, ``poll()`` and ``wait()`` are those of the child.
    :meth:`stop` ends it with SIGTERM (SIGKILL after ``timeout``), then ends what it
    left behind (workers, daemons it started), each checked by PID and start time
    so that a recycled PID is never signalled.
    """

    def __init__(self, popen: subprocess.Popen[bytes], log: Path, name: str, *,
                 started: float | None = None):
        self.popen = popen
        self.log = log
        self.name = name
        self.started = time.monotonic() if started is None else started

    @classmethod
    def spawn(cls, cmd: Sequence[str | os.PathLike[str]], *, log: Path,
              env: Mapping[str, str] | None = None, cwd: Path | None = None,
              new_session: bool = False, append: bool = False,
              name: str | None = None, user: str | None = None) -> Process:
        """Start ``cmd`` (stdin from /dev/null). ``env`` replaces the environment
        (default: inherited); ``new_session`` puts it in a session of its own, out
        of reach of a terminal's ^C (the caller stops it); ``append`` keeps what
        ``log`` already holds; ``user`` runs it as that user (needs root)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, 'ab' if append else 'wb') as out:
            started = time.monotonic()
            popen = subprocess.Popen(
                [str(part) for part in cmd], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=None if env is None else dict(env),
                cwd=cwd, start_new_session=new_session, user=user)
        return cls(popen, log, name or Path(str(cmd[0])).name, started=started)

    # -- the child ----------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def descendants(self) -> list[int]:
        """PIDs of every process below the child (Linux /proc; else []). Empty once
        the child has exited: its PID may then be another process's."""
        if self.poll() is not None:
            return []
        found: list[int] = []
        stack = [self.pid]
        while stack:
            pid = stack.pop()
            for child in _children(pid):
                found.append(child)
                stack.append(child)
        return found

    def listens_on(self, port: int) -> bool:
        """Whether the child or a descendant holds the socket listening on ``port``:
        a probe that answered may otherwise have reached another process that took
        the port first. True where /proc cannot tell (not Linux)."""
        if not Path('/proc/net/tcp').exists():
            return True
        if self.poll() is not None:
            return False
        inodes = _listening_inodes(port)
        for pid in (self.pid, *self.descendants()):
            with contextlib.suppress(OSError):
                for fd in os.listdir(f'/proc/{pid}/fd'):
                    with contextlib.suppress(OSError):
                        if os.readlink(f'/proc/{pid}/fd/{fd}') in inodes:
                            return True
        return False

    # -- readiness and stop --------------------------------------------------------

    def wait_ready(self, probe: Callable[[], bool], *, timeout: float = READY_TIMEOUT,
                   interval: float = 0.005) -> float:
        """Call ``probe`` every ``interval`` seconds until it returns true; return
        the seconds since :meth:`spawn`. If the process exits first or ``timeout``
        passes, stop it and raise :class:`NotReady` (with the log's tail)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.poll() is not None:
                raise NotReady(self, f'exited with status {self.returncode} before '
                                     'it was ready', exited=True)
            if probe():
                return time.monotonic() - self.started
            if time.monotonic() >= deadline:
                self.stop()
                raise NotReady(self, f'not ready after {timeout:g}s')
            # Wakes early when the process exits: no fixed sleep past that event.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(interval)

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the child (SIGSTOP/SIGCONT to freeze it, SIGKILL to crash it)."""
        self._signal(sig)

    def stop(self, timeout: float = 15.0, first: signal.Signals = signal.SIGTERM) -> int:
        """``first`` (SIGTERM; PostgreSQL's fast shutdown is SIGINT), SIGKILL after
        ``timeout``; then the same for what the child started and left alive (a
        ``make`` or shell's server, uvicorn's workers). Returns the child's exit
        status (negative: the signal that ended it)."""
        left = [(pid, _start_time(pid)) for pid in self.descendants()]
        if self.poll() is None:
            self._signal(first)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait()
        ours = [(pid, t) for pid, t in left if t is not None and _start_time(pid) == t]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid, _ in ours:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while ours and time.monotonic() < deadline:
                ours = [(p, t) for p, t in ours if _start_time(p) == t and _alive(p)]
                if ours:
                    time.sleep(0.01)  # not our children: no wait() on them
            if not ours:
                break
        return self.popen.returncode

    def _signal(self, sig: signal.Signals) -> None:
        # Only while the child is unreaped, so its PID cannot belong to another.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors='replace')[-chars:]
        except OSError:
            return ''

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f'<Process {self.name} pid={self.pid} log={self.log}>'


class OCIRegistry:
    """A running ``oci-ref serve`` on a free 127.0.0.1 port.

    ``host`` is ``127.0.0.1:<port>``, ``url`` its base URL (``https`` when
    ``tls_cert`` is set), ``root`` its storage, ``log`` its output and ``process``
    the :class:`Process`. ``settings`` are ``oci-ref serve`` settings, passed as
    flags (``manifest_max_bytes=8388608``, ``read_only=True``); ``args`` are more
    arguments as they are; ``env`` is added to the inherited environment. Use as a
    context manager, or call :meth:`stop`.
    """

    ready_path = '/healthz'  # answers 200 whatever the auth mode

    def __init__(self, root: Path | None = None, *, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 ready_timeout: float = READY_TIMEOUT, **settings: Any):
        self._tmp = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix='oci-ref-')
            root = Path(self._tmp.name) / 'data'
        self.root = Path(root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.args = [str(a) for a in args]
        self.tls = bool(settings.get('tls_cert')) or '--tls-cert' in self.args
        cmd = [sys.executable, '-m', 'oci_ref', 'serve', '--root', str(self.root)]
        for key, value in settings.items():
            flag = '--' + key.replace('_', '-')
            if isinstance(value, bool):
                cmd.append(flag if value else '--no-' + key.replace('_', '-'))
            else:
                cmd += [flag, str(value)]
        full_env = bytecode_cache({**os.environ, **(env or {})})
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port()
            self.log = self.root.parent / f'oci-ref-{self.port}.log'
            self.process = Process.spawn(
                [*cmd, '--listen', self.host, *self.args], log=self.log, env=full_env,
                cwd=cwd, name='oci-ref')
            answers = http_ready(self.url + self.ready_path)
            try:
                self.startup_seconds = self.process.wait_ready(
                    functools.partial(self._ready, answers), timeout=ready_timeout)
                return
            except NotReady as ex:
                if not (ex.exited and 'address already in use' in ex.args[0].lower()):
                    self._cleanup()
                    raise
        self._cleanup()
        raise NotReady(self.process, f'found no free port in {PORT_ATTEMPTS} attempts')

    def _ready(self, answers: Callable[[], bool]) -> bool:
        # Ours, not another process that took the port first and answers on it.
        return answers() and self.process.listens_on(self.port)

    @property
    def host(self) -> str:
        return f'127.0.0.1:{self.port}'

    @property
    def url(self) -> str:
        return f'{"https" if self.tls else "http"}://{self.host}'

    def ref(self, name: str, reference: str = 'latest') -> str:
        """An image reference for clients: ``127.0.0.1:<port>/<name>:<tag>`` (or
        ``@<digest>``)."""
        sep = '@' if ':' in reference else ':'
        return f'{self.host}/{name}{sep}{reference}'

    def lint_report(self, auth: tuple[str, str] | None = None) -> dict[str, Any]:
        """The client linter's report (``GET /lint/report``; the server runs with
        ``lint=True``): ``clients``, each with its ``rules`` (id, count, example).
        ``auth`` is (user, password) when the server has auth on."""
        import base64
        import json

        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or '127.0.0.1'
        conn: http.client.HTTPConnection
        if self.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(host, parts.port, timeout=60,
                                               context=context)
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=60)
        headers = {'Accept': 'application/json'}
        if auth:
            token = base64.b64encode(f'{auth[0]}:{auth[1]}'.encode()).decode()
            headers['Authorization'] = f'Basic {token}'
        try:
            conn.request('GET', '/lint/report', headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise AssertionError(f'GET /lint/report answered {resp.status} (start the '
                                 f'registry with lint=True): {body[:300]!r}')
        report: dict[str, Any] = json.loads(body)
        return report

    def assert_no_lint_violations(self, user_agent: str | None = None, *,
                                  ignore: Sequence[str] = (),
                                  auth: tuple[str, str] | None = None) -> None:
        """Fail, listing each rule with its example request, if a client (those
        whose User-Agent contains ``user_agent``; default: every client) broke a
        lint rule other than those in ``ignore``."""
        report = self.lint_report(auth)
        lines = []
        for client in report['clients']:
            if user_agent is not None and user_agent not in client['user_agent']:
                continue
            for rule in client['rules']:
                if rule['id'] in ignore:
                    continue
                info = report['rules'].get(rule['id'], {})
                ex = rule['example']
                lines.append(f'{client["user_agent"]!r}: {rule["id"]} x{rule["count"]} '
                             f'({info.get("level", "")} {info.get("section", "")}); '
                             f'e.g. {ex["method"]} {ex["path"]} -> {ex["status"]}: '
                             f'{ex["detail"]}')
        if lines:
            raise AssertionError('lint violations:\n' + '\n'.join(lines))

    def stop(self) -> int:
        """Stop the server (and its workers); return its exit status (0: clean)."""
        code = self.process.stop()
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> OCIRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f'<OCIRegistry {self.url} root={self.root}>'


# -- /proc ------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, ...] (field 3 on)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    """Field 22, the start time: tells a process from a later one with its PID."""
    st = _stat(pid)
    return st[19] if st else None


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != 'Z'


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f'/proc/{pid}/task'):
            with contextlib.suppress(OSError), \
                    open(f'/proc/{pid}/task/{task}/children') as f:
                found.extend(int(c) for c in f.read().split())
    return found


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                # local_address is <hex ip>:<hex port>; state 0A is LISTEN.
                if fields[1].endswith(f':{port:04X}') and fields[3] == '0A':
                    inodes.add(f'socket:[{fields[9]}]')
    return inodes


# -- pytest plugin ----------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        'markers',
        'oci_registry(**settings): oci-ref serve settings for the oci_registry fixture',
    )


@pytest.fixture
def oci_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OCIRegistry]:
    """A fresh oci-ref for this test, storing under the test's tmp_path.

    Settings come from an ``oci_registry(**settings)`` marker and from an indirect
    parameter: a dict of settings, or a variation name (``indirect=True``), so one
    test runs against each behaviour the spec allows::

        @pytest.mark.parametrize('oci_registry', VARIATION_NAMES, indirect=True)
    """
    marker = request.node.get_closest_marker('oci_registry')
    settings = dict(marker.kwargs) if marker else {}
    param = getattr(request, 'param', None)
    if isinstance(param, str):
        settings['variations'] = ','.join(
            filter(None, [settings.get('variations', ''), param]))
    elif isinstance(param, dict):
        settings.update(param)
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


# Every variation's name, for ``parametrize('oci_registry', VARIATION_NAMES, ...)``.
VARIATION_NAMES = tuple(VARIATIONS)

__all__ = ['VARIATION_NAMES', 'NotReady', 'OCIRegistry', 'Process', 'bytecode_cache',
           'free_port', 'http_ready', 'oci_registry', 'oci_registry_session']
